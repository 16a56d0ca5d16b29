// A second, independent consumer of model.onnx: Node.js + onnxruntime-node + sharp, no Python, no TensorFlow.
//
//   node classify.mjs [--public-key PEM | --trust-certificate CHAIN] MODEL IMAGE [IMAGE ...]
//
// MODEL is a model.onnx, a run folder holding one, or a store root (its latest.json names the run).
// IMAGE is a PNG, JPEG, GIF, WebP or TIFF (by its bytes) of any size and mode, made RGB by the one preprocessing
// rule the Python predictor and the page apply (loadImage below) and, when not 32x32, resized to 32x32 with a
// bilinear (triangle) filter; 32x32 images are used as they are.
// Prints one JSON object per image: {"input", "run_id", "top": [{"class", "probability"}], "probabilities":
// {class: probability}, "note"}. Class names come from the model file itself (metadata_props["class_names"],
// checked by the job's class-name rules in ../contract/contract.mjs); every error line passes its text gate, shown().
// Exit codes (the job's): 0 all predicted, 2 usage, 3 some images unreadable or the store's model does not match its
// manifest, 8 the model is unusable (missing, not a regular file, over 512 MiB, breaks the contract).
// With --public-key (an EC public key, PEM), --trust-certificate (your CA's certificates, PEM) or JOB_TRUSTED_KEY, the
// run must carry a model.sig that verifies with it (crypto.verify over the DSSE envelope) and whose signed digests are
// exactly the manifest's: an unsigned run, another signer, an expired or foreign certificate, or any change exits 3.
import { closeSync, constants, existsSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { createHash, createPublicKey, verify as cryptoVerify, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { MAX_JSON_BYTES as MAX_DOC_BYTES, checkContract, confinedRunId, loadJson, readModel, shown } from '../contract/contract.mjs';

import {
  MAX_SIGNATURE_BYTES, SIGNATURE, SignatureError, compareWithManifest, pae, parseBundle, signedFiles,
} from '../contract/signature.mjs';

export { readMetadata } from '../contract/contract.mjs';

const USAGE = 'usage: node classify.mjs [--public-key PEM | --trust-certificate CHAIN] MODEL IMAGE [IMAGE ...]\n' +
  '  MODEL  model.onnx, a run folder, or a store root (follows latest.json)\n' +
  '  IMAGE  PNG, JPEG, GIF, WebP or TIFF files of any size (resized to 32x32, bilinear)';
const MAX_MODEL_BYTES = 512 * 1024 * 1024;
const MAX_JSON_BYTES = 64 * 1024 * 1024;

class ModelError extends Error {}
class DataError extends Error {}
class ConfigError extends Error {}

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

// A store's JSON document (latest.json, manifest.json) through the JSON gate: bounded in size and depth.
function readJson(path) {
  const bytes = readBounded(path, MAX_DOC_BYTES, DataError);
  try {
    return loadJson(bytes, path);
  } catch (err) {
    throw new DataError(err.message);
  }
}

// What the user trusts: --public-key PEM, --trust-certificate CHAIN, or JOB_TRUSTED_KEY (either, by its header).
export function loadTrust(publicKey, certificate) {
  if (publicKey && certificate) throw new ConfigError('give --public-key or --trust-certificate, not both');
  const fromEnv = process.env.JOB_TRUSTED_KEY;
  if (!publicKey && !certificate && fromEnv) {
    const head = readBounded(fromEnv, 256 * 1024, ConfigError).toString('utf8');
    [publicKey, certificate] = head.includes('BEGIN CERTIFICATE') ? [null, fromEnv] : [fromEnv, null];
  }
  try {
    if (certificate) {
      const pem = readBounded(certificate, 256 * 1024, ConfigError).toString('utf8');
      const blocks = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
      if (!blocks.length) throw new ConfigError(`--trust-certificate ${shown(certificate)} holds no PEM certificate`);
      return { kind: 'certificate', certs: blocks.map((c) => new X509Certificate(c)) };
    }
    if (publicKey) {
      const key = createPublicKey(readBounded(publicKey, 256 * 1024, ConfigError));
      if (key.asymmetricKeyType !== 'ec') throw new ConfigError(`--public-key ${shown(publicKey)} is not an EC public key`);
      return { kind: 'key', key };
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`${shown(publicKey || certificate)} does not load (${oneLine(err)})`);
  }
  return null;
}

const HASHES = { prime256v1: 'sha256', secp384r1: 'sha384', secp521r1: 'sha512' };

function validNow(cert) {
  const now = Date.now();
  if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) {
    throw new SignatureError(`the certificate ${cert.subject.replace(/\n/g, ', ')} is not valid now`);
  }
}

// The signing certificate's key, once its chain ends in a trusted certificate and every link is valid now.
function certifiedKey(chain, trusted) {
  const certs = chain.map((der) => new X509Certificate(Buffer.from(der)));
  const isTrusted = (c) => trusted.some((t) => t.fingerprint256 === c.fingerprint256);
  for (let i = 0; i < certs.length; i += 1) {
    const cert = certs[i];
    validNow(cert);
    if (isTrusted(cert)) return certs[0].publicKey;
    const issuer = [certs[i + 1], ...trusted].find((c) => c && cert.checkIssued(c) && cert.verify(c.publicKey));
    if (!issuer) break;
    if (isTrusted(issuer)) {
      validNow(issuer);
      return certs[0].publicKey;
    }
  }
  throw new SignatureError('the signing certificate does not chain to a trusted certificate');
}

// The signed files that name their run, and where (job.storage.signing.RUN_ID_FILES): a signature binds the run id.
const RUN_ID_FILES = [
  ['provenance.json', ['predicate', 'buildDefinition', 'externalParameters', 'config', 'run_id']],
  ['metrics.json', ['run_id']],
  ['config.json', ['run_id']],
];

// Another run signed by the same key, moved into this folder with a re-computed manifest, verifies: the signed
// provenance.json / metrics.json / config.json must name the run being read (`runId`: latest.json's run id for a
// store, the manifest's run_id for a run folder). Each is read once, hashed against its signed digest, parsed.
function checkRunId(runDir, signed, runId) {
  let named = 0;
  for (const [name, keys] of RUN_ID_FILES) {
    if (!signed.has(name)) continue;
    const bytes = readBounded(join(runDir, name), MAX_DOC_BYTES, DataError);
    if (createHash('sha256').update(bytes).digest('hex') !== signed.get(name)) {
      throw new SignatureError(`${name} is not the file that was signed (sha256)`);
    }
    let value;
    try {
      value = loadJson(bytes, name);
    } catch (err) {
      throw new DataError(err.message);
    }
    for (const key of keys) value = value && typeof value === 'object' && !Array.isArray(value) ? value[key] : undefined;
    if (typeof runId !== 'string' || value !== runId) {
      throw new SignatureError(`the signed ${name} names run ${shown(String(value), 120)}, not ${shown(String(runId), 120)}`);
    }
    named += 1;
  }
  if (!named) throw new SignatureError(`${SIGNATURE} covers no file naming the run (${RUN_ID_FILES.map((f) => f[0]).join(', ')})`);
}

// model.sig of a run against `trust` and its parsed manifest: SignatureError or DataError when anything differs.
export function verifySignature(runDir, manifest, trust, runId = manifest?.run_id) {
  const entry = Array.isArray(manifest?.files) ? manifest.files.find((f) => f?.path === SIGNATURE) : null;
  if (!entry) throw new SignatureError(`${runDir} is not signed (no ${SIGNATURE}) and a trusted key was given`);
  const bytes = readBounded(join(runDir, SIGNATURE), MAX_SIGNATURE_BYTES, DataError);
  if (createHash('sha256').update(bytes).digest('hex') !== entry.sha256) {
    throw new SignatureError(`${runDir}/${SIGNATURE} does not match the run's manifest (sha256)`);
  }
  const bundle = parseBundle(bytes);
  if ((trust.kind === 'key') === Boolean(bundle.chain)) {
    throw new SignatureError(`${SIGNATURE} is signed with ${bundle.chain ? 'a certificate' : 'a bare key'}, not what was trusted`);
  }
  let key;
  try {
    key = trust.kind === 'key' ? trust.key : certifiedKey(bundle.chain, trust.certs);
  } catch (err) {
    if (err instanceof SignatureError) throw err;
    throw new SignatureError(`${SIGNATURE}: the certificate chain does not load (${oneLine(err)})`);
  }
  const hash = HASHES[key.asymmetricKeyDetails?.namedCurve];
  let ok = false;
  try {
    ok = Boolean(hash) && cryptoVerify(hash, pae(bundle.payload), key, bundle.signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new SignatureError(`${SIGNATURE} does not verify with the trusted key`);
  const signed = signedFiles(bundle.payload);
  compareWithManifest(signed, manifest);
  checkRunId(runDir, signed, runId);
}

// A run folder's model.onnx, checked against the run's manifest.json (sha256): what loads is what was published.
// With a trusted key, model.sig is checked first: the manifest's digests must be the signed ones.
function verifiedModel(runDir, trust = null, runId = undefined) {
  if (trust && !existsSync(join(runDir, 'manifest.json'))) {
    throw new SignatureError(`${runDir} has no manifest.json and no ${SIGNATURE}; a trusted key needs a signed run`);
  }
  const manifest = existsSync(join(runDir, 'manifest.json')) ? readJson(join(runDir, 'manifest.json')) : null;
  if (trust) verifySignature(runDir, manifest, trust, runId ?? manifest?.run_id);
  const bytes = readBounded(join(runDir, 'model.onnx'), MAX_MODEL_BYTES);
  if (!manifest) return bytes; // a folder holding a bare model.onnx
  const entry = Array.isArray(manifest?.files) ? manifest.files.find((f) => f?.path === 'model.onnx') : null;
  if (!entry) throw new DataError(`${runDir}/manifest.json does not list model.onnx`);
  if (createHash('sha256').update(bytes).digest('hex') !== entry.sha256) {
    throw new DataError(`${runDir}/model.onnx does not match the run's manifest (sha256); refusing to load it`);
  }
  return bytes;
}

// The model's bytes: a model.onnx as given, a run folder's (verified), or a store root's latest run (verified).
export function resolveModel(spec, trust = null) {
  if (!existsSync(spec)) throw new ModelError(`model ${spec} not found`);
  if (!statSync(spec).isDirectory()) {
    if (trust) throw new SignatureError(`${spec} is a bare model file: a trusted key needs a signed run folder or store`);
    return readBounded(spec, MAX_MODEL_BYTES);
  }
  if (existsSync(join(spec, 'model.onnx'))) return verifiedModel(spec, trust);
  if (existsSync(join(spec, 'latest.json'))) {
    const pointer = readJson(join(spec, 'latest.json'));
    const runId = confinedRunId(pointer?.run_id);
    return verifiedModel(join(spec, runId), trust, runId);
  }
  throw new ModelError(`${spec} holds no model.onnx and no latest.json naming a run`);
}

// The image gate, as job.gates.images applies it: the format is read from the file's first bytes (never its name)
// and must be one this consumer accepts; sharp is then held to that format. PostScript, PDF, SVG and the rest are
// refused unopened.
const MAX_IMAGE_BYTES = 64 * 1024 * 1024;
const MAX_PIXELS = 50_000_000;
const MAGIC = [
  ['png', [[0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]]],
  ['jpeg', [[0xff, 0xd8, 0xff]]],
  ['gif', [[0x47, 0x49, 0x46, 0x38, 0x37, 0x61], [0x47, 0x49, 0x46, 0x38, 0x39, 0x61]]],
  ['tiff', [[0x49, 0x49, 0x2a, 0x00], [0x4d, 0x4d, 0x00, 0x2a]]],
];

export function sniffImage(bytes) {
  const starts = (magic, at = 0) => magic.every((b, i) => bytes[at + i] === b);
  if (starts([0x52, 0x49, 0x46, 0x46]) && starts([0x57, 0x45, 0x42, 0x50], 8)) return 'webp';
  const found = MAGIC.find(([, magics]) => magics.some((m) => starts(m)));
  return found ? found[0] : null;
}

// RGB uint8 [32, 32, 3] by the one preprocessing rule (docs/model-contract.md), the same as the Python predictor
// and the page: EXIF orientation applied; 16-bit samples keep their high byte; transparency composited over opaque
// white; then, when not 32x32, resized to 32x32 with a bilinear (triangle) filter.
export async function loadImage(path) {
  const bytes = readBounded(path, MAX_IMAGE_BYTES, DataError);
  const format = sniffImage(bytes);
  if (!format) {
    throw new DataError('not an image in an accepted format (refused unopened; accepted: PNG, JPEG, GIF, WebP, TIFF)');
  }
  const options = { failOn: 'error', limitInputPixels: MAX_PIXELS, autoOrient: true };
  const meta = await sharp(bytes, options).metadata();
  if (meta.format !== format) throw new DataError(`starts like ${format.toUpperCase()} but reads as ${meta.format}`);
  const width = meta.autoOrient?.width ?? meta.width;
  const height = meta.autoOrient?.height ?? meta.height;
  const rgba = await sharp(bytes, options).toColourspace('srgb').ensureAlpha().raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (rgba.info.channels !== 4) throw new Error(`decoded to ${rgba.info.channels} channels`);
  const rgb = flatten(rgba.data);
  if (width === 32 && height === 32) return [new Uint8Array(rgb), null];
  const raw = { width: rgba.info.width, height: rgba.info.height, channels: 3 };
  const { data, info } = await sharp(rgb, { raw }).resize(32, 32, { fit: 'fill', kernel: 'linear' })
    .raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== 32 * 32 * 3) throw new Error(`decoded to ${info.channels} channels`);
  return [new Uint8Array(data), `resized from ${width}x${height} to 32x32 (bilinear)`];
}

// RGBA -> RGB over opaque white, with the predictor's integer rounding: round(c * a / 255) + (255 - a).
function flatten(rgba) {
  const rgb = Buffer.alloc((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    const a = rgba[i + 3];
    for (let k = 0; k < 3; k += 1) rgb[j + k] = Math.floor((rgba[i + k] * a + 127) / 255) + 255 - a;
  }
  return rgb;
}

async function main(args) {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  const options = { '--public-key': null, '--trust-certificate': null };
  const rest = [];
  for (let i = 0; i < args.length; i += 1) {
    if (args[i] in options) options[args[i]] = args[(i += 1)] ?? '';
    else rest.push(args[i]);
  }
  const [modelSpec, ...images] = rest;
  if (!modelSpec || images.length === 0 || Object.values(options).includes('')) {
    console.error(`error: config error: ${USAGE.split('\n')[0]}`);
    return 2;
  }
  let trust;
  try {
    trust = loadTrust(options['--public-key'], options['--trust-certificate']);
  } catch (err) {
    console.error(`error: config error: ${oneLine(err)}`);
    return 2;
  }
  let session, contract;
  try {
    const modelBytes = resolveModel(modelSpec, trust);
    contract = checkContract(readModel(modelBytes));
    session = await ort.InferenceSession.create(modelBytes);
  } catch (err) {
    const refused = err instanceof DataError || err.name === 'UnsafeName' || err.name === 'SignatureError';
    const kind = refused ? ['data', 3] : ['model', 8];
    console.error(`error: ${kind[0]} error: ${shown(modelSpec)}: ${oneLine(err)}`);
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
      console.error(`error: data error: ${shown(path)}: ${oneLine(err)}`);
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
      console.error(`error: model error: ${shown(modelSpec)}: ONNX Runtime failed (${oneLine(err)})`);
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

// Every message names hostile things (paths, class names, store content): one safe line through the text gate.
function oneLine(err) {
  return shown(String(err?.message ?? err), 1000);
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  console.error(`error: internal error: ${oneLine(err)}`);
  process.exitCode = 1;
}
