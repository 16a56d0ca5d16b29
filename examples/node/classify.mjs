// A second, independent consumer of model.onnx: Node.js + onnxruntime-node + sharp, no Python, no TensorFlow.
//
//   node classify.mjs MODEL IMAGE [IMAGE ...]
//
// MODEL is a model.onnx, a run folder holding one, or a store root (its latest.json names the run).
// IMAGE is a JPEG or PNG of any size and mode: converted to RGB (alpha dropped) and, when not 32x32, resized
// to 32x32 with a bilinear (triangle) filter, as the Python predictor does; 32x32 images are used as they are.
// Prints one JSON object per image: {"input", "run_id", "top": [{"class", "probability"}], "probabilities":
// {class: probability}, "note"}. Class names come from the model file itself (metadata_props["class_names"]).
// Exit codes (the job's): 0 all predicted, 2 usage, 3 some images unreadable or the store's model does not match its
// manifest, 8 the model is unusable (missing, not a regular file, over 512 MiB, breaks the contract).
import { closeSync, constants, existsSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { checkContract, confinedRunId, readModel } from '../contract/contract.mjs';

export { readMetadata } from '../contract/contract.mjs';

const USAGE = 'usage: node classify.mjs MODEL IMAGE [IMAGE ...]\n' +
  '  MODEL  model.onnx, a run folder, or a store root (follows latest.json)\n' +
  '  IMAGE  JPEG or PNG files of any size (resized to 32x32, bilinear)';
const MAX_MODEL_BYTES = 512 * 1024 * 1024;
const MAX_JSON_BYTES = 64 * 1024 * 1024;

class ModelError extends Error {}
class DataError extends Error {}

// A regular file only (a symlink, FIFO or device is refused without blocking), at most `limit` bytes.
export function readBounded(path, limit, Kind = ModelError) {
  let fd;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (err.code === 'ENOENT') throw new Kind(`${path} not found`);
    if (err.code === 'ELOOP') throw new Kind(`${path} is a symbolic link; refusing to follow it`);
    throw new Kind(`${path} cannot be read (${err.code})`);
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw new Kind(`${path} is not a regular file`);
    if (info.size > limit) throw new Kind(`${path} is ${info.size} bytes, over the ${limit}-byte limit`);
    const buf = Buffer.alloc(info.size);
    let off = 0;
    while (off < info.size) {
      const n = readSync(fd, buf, off, info.size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

function readJson(path) {
  try {
    return JSON.parse(readBounded(path, MAX_JSON_BYTES, DataError).toString('utf8'));
  } catch (err) {
    if (err instanceof DataError) throw err;
    throw new DataError(`${path} is not valid JSON`);
  }
}

// A run folder's model.onnx, checked against the run's manifest.json (sha256): what loads is what was published.
function verifiedModel(runDir) {
  const bytes = readBounded(join(runDir, 'model.onnx'), MAX_MODEL_BYTES);
  if (!existsSync(join(runDir, 'manifest.json'))) return bytes; // a folder holding a bare model.onnx
  const manifest = readJson(join(runDir, 'manifest.json'));
  const entry = Array.isArray(manifest?.files) ? manifest.files.find((f) => f?.path === 'model.onnx') : null;
  if (!entry) throw new DataError(`${runDir}/manifest.json does not list model.onnx`);
  if (createHash('sha256').update(bytes).digest('hex') !== entry.sha256) {
    throw new DataError(`${runDir}/model.onnx does not match the run's manifest (sha256); refusing to load it`);
  }
  return bytes;
}

// The model's bytes: a model.onnx as given, a run folder's (verified), or a store root's latest run (verified).
export function resolveModel(spec) {
  if (!existsSync(spec)) throw new ModelError(`model ${spec} not found`);
  if (!statSync(spec).isDirectory()) return readBounded(spec, MAX_MODEL_BYTES);
  if (existsSync(join(spec, 'model.onnx'))) return verifiedModel(spec);
  if (existsSync(join(spec, 'latest.json'))) {
    const pointer = readJson(join(spec, 'latest.json'));
    return verifiedModel(join(spec, confinedRunId(pointer?.run_id)));
  }
  throw new ModelError(`${spec} holds no model.onnx and no latest.json naming a run`);
}

export async function loadImage(path) {
  const image = sharp(readBounded(path, MAX_JSON_BYTES, DataError), { failOn: 'error', limitInputPixels: 50_000_000 });
  const { width, height } = await image.metadata();
  let pipeline = image.removeAlpha().toColourspace('srgb');
  let note = null;
  if (width !== 32 || height !== 32) {
    pipeline = pipeline.resize(32, 32, { fit: 'fill', kernel: 'linear' });
    note = `resized from ${width}x${height} to 32x32 (bilinear)`;
  }
  const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== 32 * 32 * 3) throw new Error(`decoded to ${info.channels} channels`);
  return [new Uint8Array(data), note];
}

async function main(args) {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  const [modelSpec, ...images] = args;
  if (!modelSpec || images.length === 0) {
    console.error(`error: config error: ${USAGE.split('\n')[0]}`);
    return 2;
  }
  let session, contract;
  try {
    const modelBytes = resolveModel(modelSpec);
    contract = checkContract(readModel(modelBytes));
    session = await ort.InferenceSession.create(modelBytes);
  } catch (err) {
    const kind = err instanceof DataError || err.name === 'UnsafeName' ? ['data', 3] : ['model', 8];
    console.error(`error: ${kind[0]} error: ${modelSpec}: ${oneLine(err)}`);
    return kind[1];
  }
  const { classNames, inputName, outputName, runId } = contract;
  const good = [];
  let bad = 0;
  for (const path of images) {
    try {
      good.push([path, ...(await loadImage(path))]);
    } catch (err) {
      bad += 1;
      console.error(`error: data error: ${path}: ${oneLine(err)}`);
    }
  }
  if (good.length) {
    const batch = new Uint8Array(good.length * 32 * 32 * 3);
    good.forEach(([, rgb], i) => batch.set(rgb, i * rgb.length));
    const input = new ort.Tensor('uint8', batch, [good.length, 32, 32, 3]);
    let output;
    try {
      output = (await session.run({ [inputName]: input }))[outputName];
    } catch (err) {
      console.error(`error: model error: ${modelSpec}: ONNX Runtime failed (${oneLine(err)})`);
      return 8;
    }
    const n = classNames.length;
    good.forEach(([path, , note], i) => {
      const probs = Array.from(output.data.slice(i * n, (i + 1) * n));
      const top = probs.map((p, c) => [p, c]).sort((a, b) => b[0] - a[0]).slice(0, 3)
        .map(([p, c]) => ({ class: classNames[c], probability: p }));
      const named = Object.fromEntries(classNames.map((c, k) => [c, probs[k]]));
      console.log(JSON.stringify({ input: path, run_id: runId, top, probabilities: named, note }));
    });
  }
  return bad ? 3 : 0;
}

function oneLine(err) {
  return String(err?.message ?? err).split('\n')[0].slice(0, 300);
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  console.error(`error: internal error: ${oneLine(err)}`);
  process.exitCode = 1;
}
