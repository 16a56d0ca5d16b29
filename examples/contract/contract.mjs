// The model contract, read from the bytes of model.onnx alone: no Node APIs, so the browser page
// (examples/web) and the Node consumer share it. A minimal protobuf walk over ModelProto:
//   metadata_props (field 14): StringStringEntryProto {key = 1; value = 2}
//   graph (7) -> input (11) / output (12): ValueInfoProto {name = 1; type = 2 -> tensor_type = 1 ->
//   {elem_type = 1; shape = 2 -> dim (1) -> {dim_value = 1; dim_param = 2}}}
// checkContract() throws one Error naming what breaks the contract (job/contract.py says the same).
//
// The job's gates (job/gates/), the same rules for Node and the page: loadJson() (size and depth bounded, one
// parser for every JSON document), checkClassNames() (1..1000 printable one-line unique names of 1..64
// characters, one per output column) and shown() (one safe line of hostile text for a terminal or a CI log).

const UINT8 = 2, FLOAT = 1;
const text = new TextDecoder('utf-8');

function readVarint(buf, pos) {
  let result = 0n, shift = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw new Error('truncated protobuf varint');
    const byte = buf[pos++];
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result, pos];
    shift += 7n;
  }
  throw new Error('protobuf varint longer than 10 bytes');
}

function* fields(buf) {
  let pos = 0;
  while (pos < buf.length) {
    let tag, value;
    [tag, pos] = readVarint(buf, pos);
    const field = Number(tag >> 3n), wire = Number(tag & 7n);
    if (wire === 0) { [value, pos] = readVarint(buf, pos); yield [field, value]; continue; }
    if (wire === 1) { pos += 8; continue; }
    if (wire === 5) { pos += 4; continue; }
    if (wire !== 2) throw new Error(`unsupported protobuf wire type ${wire}`);
    let len;
    [len, pos] = readVarint(buf, pos);
    const end = pos + Number(len);
    if (end > buf.length) throw new Error('truncated protobuf field');
    yield [field, buf.subarray(pos, end)];
    pos = end;
  }
}

function first(buf, wanted) {
  for (const [f, v] of fields(buf)) if (f === wanted) return v;
  return undefined;
}

function valueInfo(buf) {
  const name = text.decode(first(buf, 1) ?? new Uint8Array());
  const tensor = first(first(buf, 2) ?? new Uint8Array(), 1) ?? new Uint8Array();
  const elemType = Number(first(tensor, 1) ?? 0n);
  const dims = [];
  for (const [f, dim] of fields(first(tensor, 2) ?? new Uint8Array())) {
    if (f !== 1) continue;
    const value = first(dim, 1);
    dims.push(typeof value === 'bigint' ? Number(value) : text.decode(first(dim, 2) ?? new Uint8Array()) || null);
  }
  return { name, elemType, dims };
}

// ---------------------------------------------------------------------------------------------- the gates

export const MAX_JSON_BYTES = 16 * 1024 * 1024;
export const MAX_JSON_DEPTH = 32;
export const MAX_CLASSES = 1000;
export const MAX_CLASS_LENGTH = 64;
const MAX_CLASS_NAMES_BYTES = 256 * 1024;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

const LONE_SURROGATE = /\p{Cs}/u;

// [nesting depth, whether a string (key or value) holds a lone surrogate], without recursion.
function walk(value) {
  let deepest = 0, surrogate = typeof value === 'string' && LONE_SURROGATE.test(value);
  const stack = [[value, 1]];
  while (stack.length) {
    const [node, level] = stack.pop();
    deepest = Math.max(deepest, level);
    if (!node || typeof node !== 'object') continue;
    if (!Array.isArray(node)) surrogate ||= Object.keys(node).some((k) => LONE_SURROGATE.test(k));
    for (const child of Object.values(node)) {
      if (child && typeof child === 'object') stack.push([child, level + 1]);
      else if (typeof child === 'string') surrogate ||= LONE_SURROGATE.test(child);
    }
  }
  return [deepest, surrogate];
}

// JSON from anywhere (job.gates.json_doc.load_json): a string or bytes, at most maxBytes, nested at most
// maxDepth levels, no lone surrogate escape in a string. Throws one Error naming `what`.
export function loadJson(raw, what, { maxBytes = MAX_JSON_BYTES, maxDepth = MAX_JSON_DEPTH } = {}) {
  if (raw === undefined || raw === null) throw new Error(`${what}: no document`);
  if (raw.length > maxBytes) throw new Error(`${what}: ${raw.length} bytes is over the ${maxBytes}-byte limit for this document`);
  let value;
  try {
    value = JSON.parse(typeof raw === 'string' ? raw : strictUtf8.decode(raw));
  } catch (err) {
    if (err instanceof RangeError) throw new Error(`${what}: nested more than ${maxDepth} levels deep`);
    throw new Error(`${what}: not valid JSON (${String(err.message).slice(0, 120)})`);
  }
  const [depth, surrogate] = walk(value);
  if (depth > maxDepth) throw new Error(`${what}: nested more than ${maxDepth} levels deep`);
  if (surrogate) throw new Error(`${what}: a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text`);
  return value;
}

const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029\p{Cf}\p{Cs}]/u;
const CONTROLS = /[\x00-\x1f\x7f-\x9f\u2028\u2029\p{Cf}\p{Cs}]/gu;

// Hostile text as one safe line (job.gates.text.shown): controls, line breaks, format characters and lone
// surrogates escaped, `::` and `##[` (GitHub workflow commands) broken, at most `limit` characters.
export function shown(value, limit = 300) {
  const textValue = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
  const chars = [...textValue];
  const out = chars.slice(0, limit).join('').replace(CONTROLS, (c) => {
    const code = c.codePointAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
  return out.replaceAll('::', ':\\x3a').replaceAll('##[', '#\\x23[') + (chars.length > limit ? '...' : '');
}

function classNameProblem(name) {
  if (typeof name !== 'string') return `${shown(name, 40)} is not a string`;
  const length = [...name].length;
  if (!length || length > MAX_CLASS_LENGTH) return `'${shown(name, 40)}' is empty or longer than ${MAX_CLASS_LENGTH} characters`;
  if (CONTROL.test(name)) return `'${shown(name, 40)}' holds a control, line-break or format character`;
  if (name !== name.trim()) return `'${shown(name, 40)}' starts or ends with white space`;
  return null;
}

// A model's or a dataset's class names (job.gates.class_names.check_class_names): 1..1000 strings of 1..64
// characters, printable, one line, no surrounding white space, unique after NFC and case folding, `count` of
// them when given. Markup is allowed: every renderer shows class names as text only.
export function checkClassNames(names, what, count = null) {
  if (!Array.isArray(names) || !names.length) throw new Error(`${what}: class names must be a non-empty list`);
  if (names.length > MAX_CLASSES) throw new Error(`${what}: ${names.length} class names is over the limit of ${MAX_CLASSES}`);
  for (const name of names) {
    const problem = classNameProblem(name);
    if (problem) throw new Error(`${what}: class name ${problem}`);
  }
  const seen = new Map();
  for (const name of names) {
    const key = name.normalize('NFC').toUpperCase().toLowerCase();
    if (seen.has(key)) throw new Error(`${what}: class names '${shown(seen.get(key), 40)}' and '${shown(name, 40)}' are the same name`);
    seen.set(key, name);
  }
  if (count !== null && names.length !== count) throw new Error(`${what}: ${names.length} class names for ${count} model outputs`);
  return names;
}

// ---------------------------------------------------------------------------------------------- the model

// {metadata: {key: value}, inputs: [{name, elemType, dims}], outputs: [...]}
export function readModel(bytes) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const metadata = {}, inputs = [], outputs = [];
  for (const [field, value] of fields(buf)) {
    if (field === 14) metadata[text.decode(first(value, 1) ?? new Uint8Array())] = text.decode(first(value, 2) ?? new Uint8Array());
    if (field === 7) {
      for (const [f, v] of fields(value)) {
        if (f === 11) inputs.push(valueInfo(v));
        if (f === 12) outputs.push(valueInfo(v));
      }
    }
  }
  return { metadata, inputs, outputs };
}

export function readMetadata(bytes) {
  return readModel(bytes).metadata;
}

// The contract: one uint8 input 'image' [N, 32, 32, 3], a float output 'probabilities' [N, C], and
// metadata class_names, a JSON list of C strings. Returns {classNames, inputName, outputName, runId}.
export function checkContract(model) {
  const problems = [];
  const inputName = model.metadata.input_name || 'image';
  const outputName = model.metadata.output_name || 'probabilities';
  const input = model.inputs.find((i) => i.name === inputName);
  if (model.inputs.length !== 1 || !input) problems.push(`expected one input named '${inputName}', found [${model.inputs.map((i) => i.name)}]`);
  else if (input.elemType !== UINT8) problems.push(`input '${inputName}' must be uint8`);
  else if (input.dims.length !== 4 || input.dims.slice(1).join(',') !== '32,32,3') problems.push(`input shape must be [N, 32, 32, 3], is [${input.dims}]`);
  const output = model.outputs.find((o) => o.name === outputName);
  if (!output) problems.push(`no output named '${outputName}'`);
  else if (output.elemType !== FLOAT || output.dims.length !== 2) problems.push(`output '${outputName}' must be float32 [N, C]`);
  else if (typeof output.dims[1] !== 'number') problems.push(`output '${outputName}' must have a fixed number of columns C`);
  const width = output?.dims?.length === 2 && typeof output.dims[1] === 'number' ? output.dims[1] : null;
  const what = "metadata_props 'class_names'";
  let classNames = null;
  try {
    if (!('class_names' in model.metadata)) throw new Error(`${what}: missing`);
    classNames = checkClassNames(loadJson(model.metadata.class_names, what, { maxBytes: MAX_CLASS_NAMES_BYTES }), what, width);
  } catch (err) {
    problems.push(err.message);
    classNames = null;
  }
  if (problems.length) throw new Error(`does not follow the model contract: ${problems.map((p) => shown(p, 500)).join('; ')}`);
  return { classNames, inputName, outputName, runId: model.metadata.run_id || null };
}

// Store names are hostile: a run id from latest.json must be one visible folder name.
export function confinedRunId(runId) {
  if (typeof runId !== 'string' || !/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(runId)) {
    const err = new Error(`latest.json names an unsafe run id ${JSON.stringify(runId)?.slice(0, 80)}`);
    err.name = 'UnsafeName'; // a data error (exit 3): the store's content is wrong, not the model
    throw err;
  }
  return runId;
}
