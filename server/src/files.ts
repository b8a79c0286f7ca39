/**
 * Reading the files a model folder names (tokenizer.json, tokenizer_config.json, config.json, prompt files, recipes): only regular files
 * (symlinks followed) within a size cap. A FIFO would block the reader forever (and with it the language server's
 * event loop) and /dev/zero never ends; both are refused with a message naming the file and what it is. Opening
 * uses O_NONBLOCK, so even opening a FIFO does not wait for a writer. Mirrors native/src/core/file.h.
 */
import * as fs from 'node:fs';

export const MiB = 1 << 20;
/** tokenizer.json: the largest published ones are ~35 MiB. */
export const MAX_TOKENIZER_FILE_BYTES = 256 * MiB;
/** tokenizer_config.json, config.json and other small JSON files. */
export const MAX_JSON_FILE_BYTES = 64 * MiB;
/** A quantization recipe (*.mixq.toml): a page of settings. */
export const MAX_RECIPE_FILE_BYTES = 1 * MiB;

export class FileError extends Error {}

function kind(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

function sizeText(bytes: number): string {
  return bytes >= MiB && bytes % MiB === 0 ? `${bytes / MiB} MiB` : `${bytes} bytes`;
}

function check(file: string, st: fs.Stats, maxBytes: number, what: string): void {
  if (!st.isFile()) throw new FileError(`${file}: is ${kind(st)}, not a regular file (${what} must be a regular file)`);
  if (st.size > maxBytes) throw new FileError(`${file}: ${sizeText(st.size)} exceeds the ${sizeText(maxBytes)} limit for ${what}`);
}

const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0);

function openError(file: string, e: unknown): FileError {
  return new FileError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
}

/** Reads stop at the size fstat gave plus one byte: a file that grows while read is an error, never unbounded. */
function grew(file: string): FileError {
  return new FileError(`${file}: changed while being read`);
}

/** The bytes of a regular file of at most maxBytes; throws FileError naming the file. */
export function readRegularFileBytesSync(file: string, maxBytes: number, what: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_FLAGS);
  } catch (e) {
    throw openError(file, e);
  }
  try {
    const st = fs.fstatSync(fd);
    check(file, st, maxBytes, what);
    const buf = Buffer.allocUnsafe(st.size + 1);
    let got = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, got, buf.length - got, null);
      if (n === 0) break;
      got += n;
      if (got === buf.length) throw grew(file);
    }
    return buf.subarray(0, got);
  } finally {
    fs.closeSync(fd);
  }
}

/** The text of a regular file of at most maxBytes; throws FileError naming the file. */
export function readRegularFileSync(file: string, maxBytes: number, what: string): string {
  return readRegularFileBytesSync(file, maxBytes, what).toString('utf8');
}
