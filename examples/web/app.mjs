// The browser consumer of model.onnx: onnxruntime-web (WASM, CPU), the contract read from the model's own bytes by
// the reader the Node consumer shares (../contract/contract.mjs: no Node APIs), images of any size made RGB by the one
// preprocessing rule and resized to 32x32 (bilinear, like the Python predictor), the top classes shown as bars.
// ?model=URL&image=URL runs once and writes {"top": [{"class", "p"}], "probabilities", "run_id", "resized"} into
// #result (what the browser test reads).
// A model comes from any URL (?model=, CORS): its class names pass the job's class-name rules (checkContract) and
// every text it or the URL brings is set as textContent, never as HTML.
import { checkContract, readModel, shown } from '../contract/contract.mjs';
import { verifyWithPastedKey } from '../contract/signature.mjs';

/* global ort */
ort.env.wasm.wasmPaths = new URL('node_modules/onnxruntime-web/dist/', window.location.href).href; // absolute URL
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server does not give

const $ = (id) => document.getElementById(id);
let model = null;
let signature = { checked: false }; // the loaded run's signature check (checkSignature)

async function loadModel(bytes) {
  const contract = checkContract(readModel(bytes));
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  model = { session, ...contract };
  $('status').textContent = `Model ${shown(contract.runId || '', 128)}: ${contract.classNames.length} classes. Pick an image.`;
}

// The image gate, as job.gates.images applies it: the format is read from the file's first bytes (never its name or
// type) and must be one of these; anything else (SVG, PDF, PostScript, ...) is refused before the browser decodes it.
const MAX_PIXELS = 50_000_000;
const BACKGROUND = '#ffffff'; // transparency is composited over opaque white
const MAGIC = [
  ['PNG', [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]], ['JPEG', [0xff, 0xd8, 0xff]],
  ['GIF', [0x47, 0x49, 0x46, 0x38, 0x37, 0x61]], ['GIF', [0x47, 0x49, 0x46, 0x38, 0x39, 0x61]], ['BMP', [0x42, 0x4d]],
];

async function sniffImage(blob) {
  const head = new Uint8Array(await blob.slice(0, 16).arrayBuffer());
  const starts = (magic, at = 0) => magic.every((b, i) => head[at + i] === b);
  if (starts([0x52, 0x49, 0x46, 0x46]) && starts([0x57, 0x45, 0x42, 0x50], 8)) return 'WEBP';
  const found = MAGIC.find(([, magic]) => starts(magic));
  if (!found) throw new Error('not an image in an accepted format (refused unopened; accepted: PNG, JPEG, GIF, BMP, WebP)');
  return found[0];
}

// RGB uint8 [32, 32, 3] by the one preprocessing rule (docs/model-contract.md), as the Python predictor and the
// Node consumer apply it: EXIF orientation applied (imageOrientation 'from-image', the browsers' default), no
// colour conversion, transparency composited over opaque white; then, only when it is not 32x32, resized.
async function pixels(blob) {
  await sniffImage(blob);
  const bitmap = await createImageBitmap(blob, {
    imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none',
  });
  if (bitmap.width * bitmap.height > MAX_PIXELS) {
    throw new Error(`${bitmap.width}x${bitmap.height} pixels exceeds limit of ${MAX_PIXELS} pixels`);
  }
  const flat = new OffscreenCanvas(bitmap.width, bitmap.height);
  const flatCtx = flat.getContext('2d', { colorSpace: 'srgb' });
  flatCtx.fillStyle = BACKGROUND;
  flatCtx.fillRect(0, 0, bitmap.width, bitmap.height);
  flatCtx.drawImage(bitmap, 0, 0);
  const resized = bitmap.width !== 32 || bitmap.height !== 32;
  const scaled = resized
    ? await createImageBitmap(flat, { resizeWidth: 32, resizeHeight: 32, resizeQuality: 'medium' })
    : flat;
  const canvas = $('preview');
  const ctx = canvas.getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
  ctx.clearRect(0, 0, 32, 32);
  ctx.drawImage(scaled, 0, 0);
  const rgba = ctx.getImageData(0, 0, 32, 32).data;
  const rgb = new Uint8Array(32 * 32 * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) rgb.set([rgba[i], rgba[i + 1], rgba[i + 2]], j);
  return { rgb, resized: resized ? `${bitmap.width}x${bitmap.height}` : null };
}

// Text from a model or a URL is never markup: every element is built here and every string set as textContent
// (a class name `<img src=x onerror=...>` is shown as those characters).
function element(tag, className, textValue) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (textValue !== undefined) node.textContent = textValue;
  return node;
}

function bar(name, p) {
  const fill = element('span', 'fill');
  fill.style.width = `${Math.round(300 * p)}px`;
  const row = element('div', 'bar');
  row.append(element('span', 'name', name), fill, element('span', '', `${(100 * p).toFixed(1)}%`));
  return row;
}

async function classify(blob) {
  const { rgb, resized } = await pixels(blob);
  const input = new ort.Tensor('uint8', rgb, [1, 32, 32, 3]);
  const output = (await model.session.run({ [model.inputName]: input }))[model.outputName];
  const probs = Array.from(output.data);
  const top = probs.map((p, c) => ({ class: model.classNames[c], p })).sort((a, b) => b.p - a.p);
  $('bars').replaceChildren(...top.slice(0, 5).map(({ class: name, p }) => bar(name, p)));
  const result = {
    top: top.slice(0, 3), run_id: model.runId, resized, signature,
    probabilities: Object.fromEntries(model.classNames.map((c, k) => [c, probs[k]])),
  };
  $('result').textContent = JSON.stringify(result);
  return result;
}

// The signature of the loaded run against the pasted key: model.sig verified with WebCrypto over the DSSE envelope,
// its digests compared with manifest.json's, and model.onnx's sha256 with the manifest. Shown in #signature and
// returned for #result: {checked, verified, reason}.
let runFiles = null; // {model, manifest, sig}: bytes of the run's files, when the page has them
async function checkSignature() {
  const pem = $('public-key').value.trim();
  const show = (text, state) => {
    $('signature').textContent = text;
    $('signature').dataset.state = state;
  };
  if (!pem) {
    show('No public key pasted: the signature is not checked.', 'unchecked');
    return { checked: false };
  }
  try {
    if (!runFiles?.manifest || !runFiles?.sig) throw new Error('the run has no manifest.json and model.sig beside model.onnx (unsigned)');
    const manifest = JSON.parse(new TextDecoder().decode(runFiles.manifest));
    const entry = (manifest?.files ?? []).find((f) => f?.path === 'model.onnx');
    const digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', runFiles.model))]
      .map((b) => b.toString(16).padStart(2, '0')).join('');
    if (!entry || entry.sha256 !== digest) throw new Error('model.onnx does not match the run\'s manifest');
    await verifyWithPastedKey(runFiles.sig, pem, manifest);
    show('Signed by the pasted key: model.sig verifies, and every signed digest is the manifest\'s.', 'verified');
    return { checked: true, verified: true };
  } catch (err) {
    show(`NOT signed by the pasted key: ${shown(err.message, 300)}`, 'refused');
    return { checked: true, verified: false, reason: err.message };
  }
}

async function fetchOptional(url) {
  const response = await fetch(url);
  return response.ok ? new Uint8Array(await response.arrayBuffer()) : null;
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

function fail(err) {
  $('status').textContent = `error: ${shown(err.message, 1000)}`;
  $('result').textContent = JSON.stringify({ error: err.message });
}

async function main() {
  const params = new URLSearchParams(window.location.search);
  $('model-file').addEventListener('change', async (e) => {
    const picked = Object.fromEntries(await Promise.all([...e.target.files].map(
      async (f) => [f.name, new Uint8Array(await f.arrayBuffer())])));
    const onnx = Object.keys(picked).find((n) => n.endsWith('.onnx'));
    runFiles = { model: picked[onnx], manifest: picked['manifest.json'], sig: picked['model.sig'] };
    await loadModel(picked[onnx]).catch(fail);
    signature = await checkSignature();
  });
  $('public-key').addEventListener('input', async () => { if (runFiles) signature = await checkSignature(); });
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
    const modelUrl = new URL(params.get('model'), window.location.href);
    const bytes = await fetchBytes(modelUrl.href);
    runFiles = {
      model: bytes,
      manifest: await fetchOptional(new URL('manifest.json', modelUrl).href),
      sig: await fetchOptional(new URL('model.sig', modelUrl).href),
    };
    if (params.get('key')) $('public-key').value = new TextDecoder().decode(await fetchBytes(params.get('key')));
    await loadModel(bytes);
    signature = await checkSignature();
    if (params.get('image')) await classify(new Blob([await fetchBytes(params.get('image'))]));
  } else {
    $('status').textContent = 'Pick a model.onnx (a run folder holds one), then an image.';
  }
}

main().catch(fail);
