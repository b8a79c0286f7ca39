/**
 * Worker threads of the language server and the CLI: work that parses or tokenizes large inputs (tokenizer.json,
 * calibration data) runs on one, so the event loop keeps answering. One entry script (./worker) serves every task.
 *
 *   const worker = startWorker({ task: 'calibration', ... });   // the owner unrefs it once it only waits for calls
 *
 * Each thread's heap is capped (MAX_WORKER_HEAP_MB): a hostile input that would grow without bound ends that
 * thread with ERR_WORKER_OUT_OF_MEMORY, which its owner reports, instead of the whole process.
 */
import * as path from 'node:path';
import { Worker, type MessagePort, type TransferListItem } from 'node:worker_threads';

/** The compiled entry: next to this module both in out/server/ (tsc) and in dist/ (the bundle's worker.js). */
export const WORKER_SCRIPT = path.join(__dirname, 'worker.js');

/** A 256 MiB tokenizer.json (the file cap) needs about 8 times its size while parsed and built. */
export const MAX_WORKER_HEAP_MB = 4096;

export interface TokenizerTask {
  task: 'tokenizer';
  modelDir: string;
  /** The synchronous call channel (./tokenizerThread). */
  port: MessagePort;
  /** Int32Array(1) over a SharedArrayBuffer: set to 1 and notified once a reply is posted on `port`. */
  signal: Int32Array;
}

export interface CalibrationTask {
  task: 'calibration';
  modelDir: string;
  calibPath: string;
  samples: number;
  seqLen: number;
  seed: number;
}

export type WorkerTask = TokenizerTask | CalibrationTask;

export function startWorker(task: WorkerTask, transferList: TransferListItem[] = []): Worker {
  const worker = new Worker(WORKER_SCRIPT, { workerData: task, transferList, resourceLimits: { maxOldGenerationSizeMb: MAX_WORKER_HEAP_MB } });
  return worker;
}

/** A message of a thread that ended abnormally (an exception, out of memory), for errors naming what it did. */
export function threadFailure(e: unknown): string {
  const code = (e as { code?: string }).code;
  if (code === 'ERR_WORKER_OUT_OF_MEMORY') return `ran out of memory (more than ${MAX_WORKER_HEAP_MB} MB)`;
  return (e as Error).message ?? String(e);
}
