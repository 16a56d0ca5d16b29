// A second, independent consumer of model.onnx: Node.js + onnxruntime-node, no Python, no TensorFlow.
//
//   node classify.mjs MODEL.onnx IMAGE.png [IMAGE.png ...]
//
// Prints one JSON object per image: {"input", "top": [{"class", "probability"}], "probabilities"}.
// Class names come from the model file itself (metadata_props["class_names"], see the model contract).
// Images must be 32x32 PNGs (RGB or RGBA; alpha is dropped). Exit code 3 if any image was unreadable.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import pngjs from 'pngjs';

const { PNG } = pngjs;

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

function loadPng(path) {
  const png = PNG.sync.read(readFileSync(path));
  if (png.width !== 32 || png.height !== 32) throw new Error(`is ${png.width}x${png.height}, expected 32x32`);
  const rgb = new Uint8Array(32 * 32 * 3);
  for (let i = 0; i < 32 * 32; i++) {
    rgb[i * 3] = png.data[i * 4];
    rgb[i * 3 + 1] = png.data[i * 4 + 1];
    rgb[i * 3 + 2] = png.data[i * 4 + 2];
  }
  return rgb;
}

async function main([modelPath, ...images]) {
  if (!modelPath || images.length === 0) {
    console.error('usage: node classify.mjs MODEL.onnx IMAGE.png [IMAGE.png ...]');
    return 2;
  }
  const modelBytes = readFileSync(modelPath);
  const meta = readMetadata(modelBytes);
  if (!meta.class_names) {
    console.error(`error: ${modelPath} has no class_names metadata (not a model of this contract)`);
    return 4;
  }
  const classNames = JSON.parse(meta.class_names);
  const session = await ort.InferenceSession.create(modelBytes);
  const inputName = meta.input_name || 'image';
  const outputName = meta.output_name || 'probabilities';

  const good = [];
  let bad = 0;
  for (const path of images) {
    try {
      good.push([path, loadPng(path)]);
    } catch (err) {
      bad += 1;
      console.error(`error: ${path}: ${err.message}`);
    }
  }
  if (good.length) {
    const batch = new Uint8Array(good.length * 32 * 32 * 3);
    good.forEach(([, rgb], i) => batch.set(rgb, i * rgb.length));
    const input = new ort.Tensor('uint8', batch, [good.length, 32, 32, 3]);
    const output = (await session.run({ [inputName]: input }))[outputName];
    const n = classNames.length;
    good.forEach(([path], i) => {
      const probs = Array.from(output.data.slice(i * n, (i + 1) * n));
      const top = probs.map((p, c) => [p, c]).sort((a, b) => b[0] - a[0]).slice(0, 3)
        .map(([p, c]) => ({ class: classNames[c], probability: p }));
      console.log(JSON.stringify({ input: path, top, probabilities: probs }));
    });
  }
  return bad ? 3 : 0;
}

process.exitCode = await main(process.argv.slice(2));
