// The browser consumer of model.onnx: onnxruntime-web (WASM, CPU), the contract read from the model's own bytes by
// the reader the Node consumer shares (../contract/contract.mjs: no Node APIs), images of any size resized to 32x32
// (bilinear, like the Python predictor), the top classes shown as bars. ?model=URL&image=URL runs once and writes
// {"top": [{"class", "p"}], "probabilities", "run_id", "resized"} into #result (what the browser test reads).
import { checkContract, readModel } from '../contract/contract.mjs';

/* global ort */
ort.env.wasm.wasmPaths = new URL('node_modules/onnxruntime-web/dist/', window.location.href).href; // absolute URL
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server does not give

const $ = (id) => document.getElementById(id);
let model = null;

async function loadModel(bytes) {
  const contract = checkContract(readModel(bytes));
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  model = { session, ...contract };
  $('status').textContent = `Model ${contract.runId || ''}: ${contract.classNames.length} classes. Pick an image.`;
}

// RGB uint8 [32, 32, 3] of any image: decoded without colour conversion, resized only when it is not 32x32.
async function pixels(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const resized = bitmap.width !== 32 || bitmap.height !== 32;
  const scaled = resized
    ? await createImageBitmap(bitmap, { resizeWidth: 32, resizeHeight: 32, resizeQuality: 'medium' })
    : bitmap;
  const canvas = $('preview');
  const ctx = canvas.getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
  ctx.clearRect(0, 0, 32, 32);
  ctx.drawImage(scaled, 0, 0);
  const rgba = ctx.getImageData(0, 0, 32, 32).data;
  const rgb = new Uint8Array(32 * 32 * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) rgb.set([rgba[i], rgba[i + 1], rgba[i + 2]], j);
  return { rgb, resized: resized ? `${bitmap.width}x${bitmap.height}` : null };
}

async function classify(blob) {
  const { rgb, resized } = await pixels(blob);
  const input = new ort.Tensor('uint8', rgb, [1, 32, 32, 3]);
  const output = (await model.session.run({ [model.inputName]: input }))[model.outputName];
  const probs = Array.from(output.data);
  const top = probs.map((p, c) => ({ class: model.classNames[c], p })).sort((a, b) => b.p - a.p);
  $('bars').innerHTML = top.slice(0, 5).map(({ class: name, p }) =>
    `<div class="bar"><span class="name">${name}</span><span class="fill" style="width:${Math.round(300 * p)}px"></span>` +
    `<span>${(100 * p).toFixed(1)}%</span></div>`).join('');
  const result = {
    top: top.slice(0, 3), run_id: model.runId, resized,
    probabilities: Object.fromEntries(model.classNames.map((c, k) => [c, probs[k]])),
  };
  $('result').textContent = JSON.stringify(result);
  return result;
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function fail(err) {
  $('status').textContent = `error: ${err.message}`;
  $('result').textContent = JSON.stringify({ error: err.message });
}

async function main() {
  const params = new URLSearchParams(window.location.search);
  $('model-file').addEventListener('change', async (e) => loadModel(new Uint8Array(await e.target.files[0].arrayBuffer())).catch(fail));
  $('image-file').addEventListener('change', (e) => classify(e.target.files[0]).catch(fail));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer.files.length) classify(e.dataTransfer.files[0]).catch(fail);
  });
  if (params.get('model')) {
    await loadModel(await fetchBytes(params.get('model')));
    if (params.get('image')) await classify(new Blob([await fetchBytes(params.get('image'))]));
  } else {
    $('status').textContent = 'Pick a model.onnx (a run folder holds one), then an image.';
  }
}

main().catch(fail);
