// A second, independent consumer of model.onnx: Node.js + onnxruntime-node + sharp, no Python, no TensorFlow.
//
//   node classify.mjs MODEL IMAGE [IMAGE ...]
//
// MODEL is a model.onnx, a run folder holding one, or a store root (its latest.json names the run).
// IMAGE is a JPEG or PNG of any size and mode: converted to RGB (alpha dropped) and, when not 32x32, resized
// to 32x32 with a bilinear (triangle) filter, as the Python predictor does; 32x32 images are used as they are.
// Prints one JSON object per image: {"input", "run_id", "top": [{"class", "probability"}], "probabilities":
// {class: probability}, "note"}. Class names come from the model file itself (metadata_props["class_names"]).
// Exit codes (the job's): 0 all predicted, 2 usage, 3 some images unreadable, 8 the model is unusable.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';

const USAGE = 'usage: node classify.mjs MODEL IMAGE [IMAGE ...]\n' +
  '  MODEL  model.onnx, a run folder, or a store root (follows latest.json)\n' +
  '  IMAGE  JPEG or PNG files of any size (resized to 32x32, bilinear)';

// Minimal protobuf reader: enough to walk ModelProto's top level and read metadata_props (field 14).
function readVarint(buf, pos) {
  let result = 0n, shift = 0n;
  for (;;) {
    const byte = buf[pos++];
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result, pos];
    shift += 7n;
  }
}

function* fields(buf) {
  let pos = 0;
  while (pos < buf.length) {
    let tag;
    [tag, pos] = readVarint(buf, pos);
    const field = Number(tag >> 3n), wire = Number(tag & 7n);
    if (wire === 0) { [, pos] = readVarint(buf, pos); continue; }
    if (wire === 1) { pos += 8; continue; }
    if (wire === 5) { pos += 4; continue; }
    if (wire !== 2) throw new Error(`unsupported protobuf wire type ${wire}`);
    let len;
    [len, pos] = readVarint(buf, pos);
    const end = pos + Number(len);
    yield [field, buf.subarray(pos, end)];
    pos = end;
  }
}

export function readMetadata(modelBytes) {
  const meta = {};
  for (const [field, value] of fields(modelBytes)) {
    if (field !== 14) continue; // ModelProto.metadata_props: StringStringEntryProto {key = 1; value = 2}
    let key = '', val = '';
    for (const [f, v] of fields(value)) {
      if (f === 1) key = Buffer.from(v).toString('utf8');
      if (f === 2) val = Buffer.from(v).toString('utf8');
    }
    meta[key] = val;
  }
  return meta;
}

export function resolveModel(spec) {
  if (!existsSync(spec)) throw new Error(`model ${spec} not found`);
  if (!statSync(spec).isDirectory()) return spec;
  if (existsSync(join(spec, 'model.onnx'))) return join(spec, 'model.onnx');
  if (existsSync(join(spec, 'latest.json'))) {
    const { run_id: run } = JSON.parse(readFileSync(join(spec, 'latest.json'), 'utf8'));
    if (run && existsSync(join(spec, run, 'model.onnx'))) return join(spec, run, 'model.onnx');
  }
  throw new Error(`${spec} holds no model.onnx and no latest.json naming a run`);
}

export async function loadImage(path) {
  const image = sharp(readFileSync(path), { failOn: 'error', limitInputPixels: 50_000_000 });
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
  let session, classNames, meta;
  try {
    const modelBytes = readFileSync(resolveModel(modelSpec));
    meta = readMetadata(modelBytes);
    if (!meta.class_names) throw new Error(`${modelSpec} has no class_names metadata (not a model of this contract)`);
    classNames = JSON.parse(meta.class_names);
    session = await ort.InferenceSession.create(modelBytes);
  } catch (err) {
    console.error(`error: model error: ${err.message.split('\n')[0]}`);
    return 8;
  }
  const good = [];
  let bad = 0;
  for (const path of images) {
    try {
      good.push([path, ...(await loadImage(path))]);
    } catch (err) {
      bad += 1;
      console.error(`error: data error: ${path}: ${err.message.split('\n')[0]}`);
    }
  }
  if (good.length) {
    const batch = new Uint8Array(good.length * 32 * 32 * 3);
    good.forEach(([, rgb], i) => batch.set(rgb, i * rgb.length));
    const input = new ort.Tensor('uint8', batch, [good.length, 32, 32, 3]);
    const output = (await session.run({ [meta.input_name || 'image']: input }))[meta.output_name || 'probabilities'];
    const n = classNames.length;
    good.forEach(([path, , note], i) => {
      const probs = Array.from(output.data.slice(i * n, (i + 1) * n));
      const top = probs.map((p, c) => [p, c]).sort((a, b) => b[0] - a[0]).slice(0, 3)
        .map(([p, c]) => ({ class: classNames[c], probability: p }));
      const named = Object.fromEntries(classNames.map((c, k) => [c, probs[k]]));
      console.log(JSON.stringify({ input: path, run_id: meta.run_id || null, top, probabilities: named, note }));
    });
  }
  return bad ? 3 : 0;
}

process.exitCode = await main(process.argv.slice(2));
