/**
 * Calibration data for `mixq quantize` (./quantize, its only user): documents → token ids [samples × seqLen],
 * seeded and reproducible.
 *
 *   const docs = readCalibrationDocuments(path);   // a .jsonl of {"text"}, a folder of source files, or a text file
 *   const set = buildCalibration(tokenizer, docs, { samples: 128, seqLen: 512, seed: 0 });
 *   set.ids  // Int32Array(samples × seqLen) for the native quantize()
 *
 * Sampling: the documents are shuffled with a seeded PRNG (mulberry32), each is encoded with the tokenizer's
 * post-processor (BOS first, as prompts are) and appended to one stream, until the stream holds 8 × samples ×
 * seqLen tokens or the documents run out (a large folder is not tokenized whole). The samples are seqLen-token
 * windows spread evenly over that stream, so every document read contributes (source files are long: cutting
 * the stream's first samples × seqLen tokens would calibrate on a handful of files). Same inputs + same seed →
 * the same ids. A stream shorter than samples × seqLen gives overlapping windows and a warning.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { MiB, readRegularFileSync } from '../files';
import type { MixqTokenizer } from '../tokenizer';

export class CalibrationError extends Error {}

export interface CalibrationOptions {
  samples: number;
  seqLen: number;
  seed: number;
}

export interface CalibrationSet {
  ids: Int32Array;        // [samples × seqLen]
  samples: number;
  seqLen: number;
  documents: number;      // documents read
  documentsUsed: number;  // documents tokenized into the stream the samples are drawn from
  warnings: string[];
}

/** Source and text files a folder contributes (a user's own code is the natural calibration set). */
const SOURCE_EXTENSIONS = new Set([
  '.py', '.js', '.jsx', '.mjs', '.cjs', '.ts', '.tsx', '.mts', '.cts', '.java', '.kt', '.scala', '.go', '.rs', '.c',
  '.h', '.cc', '.cpp', '.hpp', '.cxx', '.cs', '.rb', '.php', '.swift', '.m', '.sh', '.bash', '.lua', '.r', '.jl',
  '.sql', '.html', '.css', '.scss', '.vue', '.svelte', '.md', '.txt', '.json', '.yaml', '.yml', '.toml', '.cmake',
]);
const SKIPPED_DIRS = new Set(['node_modules', '.git', 'build', 'dist', 'out', '__pycache__', '.venv', 'venv', 'target']);
const MAX_FILE_BYTES = 1 << 20;
/** A single calibration file (.jsonl or text): V8 strings stop at ~512 MiB anyway. */
const MAX_CALIBRATION_BYTES = 256 * MiB;

function walk(dir: string, files: string[]): void {
  const entries = fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (!SKIPPED_DIRS.has(e.name) && !e.name.startsWith('build-')) walk(p, files);
    } else if (e.isFile() && SOURCE_EXTENSIONS.has(path.extname(e.name).toLowerCase())) {
      if (fs.statSync(p).size <= MAX_FILE_BYTES) files.push(p);
    }
  }
}

/** Reads calibration documents: `.jsonl` (one {"text": ...} object a line), a folder (its source files, sorted), or a text file. */
export function readCalibrationDocuments(p: string): string[] {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(p);
  } catch {
    throw new CalibrationError(`${p}: calibration data not found`);
  }
  if (stat.isDirectory()) {
    const files: string[] = [];
    walk(p, files);
    const docs = files.map((f) => fs.readFileSync(f, 'utf8')).filter((t) => t.trim().length > 0 && !t.includes('\u0000'));
    if (docs.length === 0) throw new CalibrationError(`${p}: no source or text files found`);
    return docs;
  }
  let text: string;
  try {
    // A FIFO or a device given as --calib would block or never end: regular files only, within a cap.
    text = readRegularFileSync(p, MAX_CALIBRATION_BYTES, 'calibration data');
  } catch (e) {
    throw new CalibrationError((e as Error).message);
  }
  if (p.endsWith('.jsonl')) {
    const docs: string[] = [];
    text.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (e) {
        throw new CalibrationError(`${p}:${i + 1}: invalid JSON (${(e as Error).message})`);
      }
      const t = (value as { text?: unknown } | null)?.text;
      if (typeof t !== 'string') throw new CalibrationError(`${p}:${i + 1}: expected an object with a string "text"`);
      if (t.length > 0) docs.push(t);
    });
    if (docs.length === 0) throw new CalibrationError(`${p}: no documents`);
    return docs;
  }
  if (text.trim().length === 0) throw new CalibrationError(`${p}: empty file`);
  return [text];
}

/** mulberry32: a small seeded 32-bit PRNG, uniform in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function buildCalibration(tokenizer: MixqTokenizer, documents: readonly string[], opts: CalibrationOptions): CalibrationSet {
  if (!Number.isInteger(opts.samples) || opts.samples < 1) throw new CalibrationError('samples must be a positive integer');
  if (!Number.isInteger(opts.seqLen) || opts.seqLen < 2) throw new CalibrationError('seqLen must be an integer ≥ 2');
  const order = documents.map((_, i) => i);
  const random = mulberry32(opts.seed);
  for (let i = order.length - 1; i > 0; i--) {  // Fisher–Yates
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const want = opts.samples * opts.seqLen;
  const budget = 8 * want;
  const pieces: number[][] = [];
  let total = 0;
  for (const i of order) {
    if (total >= budget) break;
    const enc = tokenizer.encode(documents[i]);
    pieces.push(enc);
    total += enc.length;
  }
  if (total < opts.seqLen) {
    throw new CalibrationError(`the calibration documents hold ${total} tokens, fewer than one sample of ${opts.seqLen}`);
  }
  const stream = new Int32Array(total);
  let at = 0;
  for (const p of pieces) {
    stream.set(p, at);
    at += p.length;
  }
  const warnings: string[] = [];
  if (total < want) {
    warnings.push(`calibration data holds ${total} tokens, fewer than ${opts.samples} × ${opts.seqLen}: the samples overlap`);
  }
  const ids = new Int32Array(want);
  const span = total - opts.seqLen;  // last valid window start
  for (let k = 0; k < opts.samples; k++) {
    const start = opts.samples === 1 ? 0 : Math.floor((k * span) / (opts.samples - 1));
    ids.set(stream.subarray(start, start + opts.seqLen), k * opts.seqLen);
  }
  const samples = opts.samples;
  const used = pieces.length;
  return { ids, samples, seqLen: opts.seqLen, documents: documents.length, documentsUsed: used, warnings };
}
