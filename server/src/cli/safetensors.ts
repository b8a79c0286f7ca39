/**
 * Reads one tensor from a .safetensors file (used by `mixq ppl` for the `ids` token stream).
 *
 *   const t = readSafetensorsTensor(file, 'ids');   // { name, dtype, shape, data: Int32Array | Float32Array | … }
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets":
 * [begin, end]}, "__metadata__"?: {...}}, then the data region; offsets are relative to the data region.
 * Every inconsistency is an error naming the file and, where there is one, the tensor.
 */
import { MiB, readRegularFileBytesSync } from '../files';

export class SafetensorsError extends Error {}

/** A token stream of ~250 M ids; this reader loads the whole file. */
const MAX_TENSOR_FILE_BYTES = 1024 * MiB;

const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

export type TensorData = Int32Array | Float32Array | Uint8Array | Int8Array | Int16Array | Uint16Array | Uint32Array | Float64Array | BigInt64Array | BigUint64Array;

export interface SafetensorsTensor {
  name: string;
  dtype: string;
  shape: number[];
  /** Elements in row-major order (F16/BF16 as raw Uint16Array bits). */
  data: TensorData;
}

/** Largest header accepted (the format's reference implementation uses 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

function makeArray(dtype: string, bytes: Uint8Array): TensorData {
  // Copy into a fresh, aligned buffer: the tensor may start at any byte offset in the file.
  const buf = new Uint8Array(bytes).buffer;
  switch (dtype) {
    case 'I32': return new Int32Array(buf);
    case 'U32': return new Uint32Array(buf);
    case 'F32': return new Float32Array(buf);
    case 'F64': return new Float64Array(buf);
    case 'I64': return new BigInt64Array(buf);
    case 'U64': return new BigUint64Array(buf);
    case 'I16': return new Int16Array(buf);
    case 'U16': case 'F16': case 'BF16': return new Uint16Array(buf);
    case 'I8': return new Int8Array(buf);
    default: return new Uint8Array(buf);
  }
}

/** Reads tensor `name` of `file`; `expectDtype` (e.g. 'I32') makes any other dtype an error. */
export function readSafetensorsTensor(file: string, name: string, expectDtype?: string): SafetensorsTensor {
  let content: Buffer;
  try {
    // Regular files only (a FIFO would block, /dev/zero never ends), within a cap.
    content = readRegularFileBytesSync(file, MAX_TENSOR_FILE_BYTES, 'a safetensors file');
  } catch (e) {
    throw new SafetensorsError((e as Error).message);
  }
  if (content.length < 8) throw new SafetensorsError(`${file}: truncated (${content.length} bytes, no header length)`);
  const headerLen = content.readBigUInt64LE(0);
  if (headerLen > BigInt(content.length - 8)) {
    throw new SafetensorsError(`${file}: header length ${headerLen} exceeds the file (${content.length} bytes)`);
  }
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(`${file}: header length ${headerLen} is implausibly large`);
  const n = Number(headerLen);
  let header: unknown;
  try {
    header = JSON.parse(content.subarray(8, 8 + n).toString('utf8'));
  } catch (e) {
    throw new SafetensorsError(`${file}: header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new SafetensorsError(`${file}: header is not a JSON object`);
  }
  const entries = header as Record<string, unknown>;
  const entry = entries[name] as Record<string, unknown> | undefined;
  if (name === '__metadata__' || entry === undefined) {
    const names = Object.keys(entries).filter((k) => k !== '__metadata__');
    throw new SafetensorsError(`${file}: no tensor "${name}" (tensors: ${names.slice(0, 10).join(', ') || 'none'})`);
  }
  const where = `${file}: tensor "${name}"`;
  if (typeof entry !== 'object' || entry === null) throw new SafetensorsError(`${where}: entry is not an object`);
  const dtype = entry.dtype;
  if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
    throw new SafetensorsError(`${where}: unknown dtype ${JSON.stringify(dtype)}`);
  }
  if (expectDtype !== undefined && dtype !== expectDtype) {
    throw new SafetensorsError(`${where}: dtype ${dtype}, expected ${expectDtype}`);
  }
  const shape = entry.shape;
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || (d as number) < 0)) {
    throw new SafetensorsError(`${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  const offsets = entry.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    offsets.some((o) => !Number.isSafeInteger(o) || (o as number) < 0) ||
    (offsets[0] as number) > (offsets[1] as number)
  ) {
    throw new SafetensorsError(`${where}: data_offsets ${JSON.stringify(offsets)} are not [begin, end] with begin <= end`);
  }
  const [begin, end] = offsets as [number, number];
  const dataBytes = content.length - 8 - n;
  if (end > dataBytes) {
    throw new SafetensorsError(`${where}: data_offsets [${begin}, ${end}] go beyond the file's data region (${dataBytes} bytes; truncated file?)`);
  }
  const numel = (shape as number[]).reduce((a, b) => a * b, 1);
  const expectBytes = numel * DTYPE_BYTES[dtype];
  if (end - begin !== expectBytes) {
    throw new SafetensorsError(`${where}: shape ${JSON.stringify(shape)} × ${dtype} needs ${expectBytes} bytes, data_offsets span ${end - begin}`);
  }
  const start = 8 + n + begin;
  return { name, dtype, shape: shape as number[], data: makeArray(dtype, content.subarray(start, start + expectBytes)) };
}
