// The model contract, read from the bytes of model.onnx alone: no Node APIs, so the browser page
// (examples/web) and the Node consumer share it. A minimal protobuf walk over ModelProto:
//   metadata_props (field 14): StringStringEntryProto {key = 1; value = 2}
//   graph (7) -> input (11) / output (12): ValueInfoProto {name = 1; type = 2 -> tensor_type = 1 ->
//   {elem_type = 1; shape = 2 -> dim (1) -> {dim_value = 1; dim_param = 2}}}
// checkContract() throws one Error naming what breaks the contract (job/contract.py says the same).

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
  let classNames = null;
  try {
    classNames = JSON.parse(model.metadata.class_names);
    if (!Array.isArray(classNames) || !classNames.length || !classNames.every((c) => typeof c === 'string')) throw new Error();
  } catch {
    problems.push("metadata_props has no valid 'class_names' JSON list");
    classNames = null;
  }
  const width = output?.dims?.[1];
  if (classNames && typeof width === 'number' && width !== classNames.length) {
    problems.push(`class_names lists ${classNames.length} classes but the output has ${width} columns`);
  }
  if (problems.length) throw new Error(`does not follow the model contract: ${problems.join('; ')}`);
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
