// model.sig, the OpenSSF model-signing format, read the same way by the Node.js consumer and the page (no Node APIs
// here: the signature check itself is the caller's, node:crypto in Node, WebCrypto in the page).
//
// model.sig is a Sigstore bundle: {mediaType, verificationMaterial: {publicKey: {hint} | x509CertificateChain},
// dsseEnvelope: {payload (base64 in-toto statement), payloadType, signatures: [{sig (base64 DER ECDSA)}]}}.
// The signature is over the DSSE pre-authentication encoding of the payload; the statement's predicate lists
// every signed file with its sha256. A run is accepted only when the signature verifies with the trusted key and
// the signed files are exactly the manifest's (every file but manifest.json and model.sig) with the same digests.

export const SIGNATURE = 'model.sig';
export const UNSIGNED = ['manifest.json', SIGNATURE];
export const MAX_SIGNATURE_BYTES = 1024 * 1024;
const BUNDLE_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const PREDICATE_TYPE = 'https://model_signing/signature/v1.0';

export class SignatureError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SignatureError';
  }
}

function fromBase64(text, what) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new SignatureError(`${what} is not base64`);
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

// The parts of model.sig's bytes that a verifier needs; SignatureError for anything that is not a bundle.
export function parseBundle(bytes) {
  if (bytes.length > MAX_SIGNATURE_BYTES) throw new SignatureError(`${SIGNATURE} is over ${MAX_SIGNATURE_BYTES} bytes`);
  let doc;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new SignatureError(`${SIGNATURE} is not valid JSON`);
  }
  const material = doc?.verificationMaterial;
  const envelope = doc?.dsseEnvelope;
  if (doc?.mediaType !== BUNDLE_TYPE || typeof material !== 'object' || typeof envelope !== 'object' || !envelope) {
    throw new SignatureError(`${SIGNATURE} is not a model-signing bundle`);
  }
  if (envelope.payloadType !== PAYLOAD_TYPE || !Array.isArray(envelope.signatures) || envelope.signatures.length !== 1) {
    throw new SignatureError(`${SIGNATURE}: the envelope is not one signature over an in-toto statement`);
  }
  const chain = material?.x509CertificateChain?.certificates;
  return {
    payload: fromBase64(envelope.payload, 'the payload'),
    signature: fromBase64(envelope.signatures[0]?.sig, 'the signature'),
    hint: typeof material?.publicKey?.hint === 'string' ? material.publicKey.hint : null,
    chain: Array.isArray(chain) ? chain.map((c, i) => fromBase64(c?.rawBytes, `certificate ${i}`)) : null,
  };
}

// DSSE v1 pre-authentication encoding: "DSSEv1 <len(type)> <type> <len(payload)> <payload>".
export function pae(payload) {
  const head = new TextEncoder().encode(`DSSEv1 ${PAYLOAD_TYPE.length} ${PAYLOAD_TYPE} ${payload.length} `);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

// The signed statement's {path: sha256}; call it only after the signature over `payload` verified.
export function signedFiles(payload) {
  let statement;
  try {
    statement = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    throw new SignatureError(`${SIGNATURE}: the signed payload is not JSON`);
  }
  if (statement?._type !== 'https://in-toto.io/Statement/v1' || statement?.predicateType !== PREDICATE_TYPE) {
    throw new SignatureError(`${SIGNATURE}: the signed payload is not a model-signing statement`);
  }
  const serialization = statement.predicate?.serialization ?? {};
  const ignored = Array.isArray(serialization.ignore_paths) ? serialization.ignore_paths : [];
  if (serialization.method !== 'files' || serialization.hash_type !== 'sha256' ||
      ignored.some((p) => !UNSIGNED.includes(p))) {
    throw new SignatureError(`${SIGNATURE} was not made by this job's signer`);
  }
  const files = new Map();
  for (const r of statement.predicate?.resources ?? []) {
    if (typeof r?.name !== 'string' || r.algorithm !== 'sha256' || !/^[0-9a-f]{64}$/.test(r.digest ?? '')) {
      throw new SignatureError(`${SIGNATURE}: a signed resource is malformed`);
    }
    files.set(r.name, r.digest);
  }
  return files;
}

// The signed files must be exactly the manifest's files (but the two unsigned ones), with the same sha256.
export function compareWithManifest(signed, manifest) {
  const listed = new Map();
  for (const f of Array.isArray(manifest?.files) ? manifest.files : []) {
    if (typeof f?.path === 'string' && !UNSIGNED.includes(f.path)) listed.set(f.path, f.sha256);
  }
  const differ = [...new Set([...signed.keys(), ...listed.keys()])].filter((p) => !signed.has(p) || !listed.has(p));
  if (differ.length) throw new SignatureError(`${SIGNATURE} covers another set of files (${differ.slice(0, 5).join(', ')})`);
  for (const [path, digest] of listed) {
    if (signed.get(path) !== digest) throw new SignatureError(`${path} is not the file that was signed (sha256)`);
  }
}

// ECDSA signatures in model.sig are DER; WebCrypto verifies the raw r||s form.
export function derToRaw(der, size) {
  const read = (pos) => {
    if (der[pos] !== 0x02) throw new SignatureError(`${SIGNATURE}: the signature is not DER ECDSA`);
    const len = der[pos + 1];
    let value = der.subarray(pos + 2, pos + 2 + len);
    while (value.length > size && value[0] === 0) value = value.subarray(1);
    if (value.length > size) throw new SignatureError(`${SIGNATURE}: the signature is not DER ECDSA`);
    const out = new Uint8Array(size);
    out.set(value, size - value.length);
    return [out, pos + 2 + len];
  };
  if (der[0] !== 0x30) throw new SignatureError(`${SIGNATURE}: the signature is not DER ECDSA`);
  const start = der[1] & 0x80 ? 2 + (der[1] & 0x7f) : 2;
  const [r, next] = read(start);
  const [s] = read(next);
  const raw = new Uint8Array(2 * size);
  raw.set(r);
  raw.set(s, size);
  return raw;
}

const CURVES = [['P-256', 'SHA-256', 32], ['P-384', 'SHA-384', 48], ['P-521', 'SHA-512', 66]];

// The page's check (WebCrypto): model.sig's bytes, a pasted PEM public key, the run's parsed manifest ->
// {signedFiles} or SignatureError. `subtle` is crypto.subtle.
export async function verifyWithPastedKey(sigBytes, pem, manifest, subtle = globalThis.crypto.subtle) {
  const bundle = parseBundle(sigBytes);
  const body = pem.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, '').replace(/\s+/g, '');
  const spki = fromBase64(body, 'the public key');
  let ok = false;
  let imported = false;
  for (const [namedCurve, hash, size] of CURVES) {
    let key;
    try {
      key = await subtle.importKey('spki', spki, { name: 'ECDSA', namedCurve }, false, ['verify']);
    } catch {
      continue;
    }
    imported = true;
    ok = await subtle.verify({ name: 'ECDSA', hash }, key, derToRaw(bundle.signature, size), pae(bundle.payload));
    break;
  }
  if (!imported) throw new SignatureError('the pasted key is not an EC public key (P-256, P-384 or P-521)');
  if (!ok) throw new SignatureError(`${SIGNATURE} is not signed by the pasted key`);
  const files = signedFiles(bundle.payload);
  compareWithManifest(files, manifest);
  return files;
}
