/**
 * An AWQ run's calibration set, built on a worker thread (../threads): loading the source's tokenizer and tokenizing
 * up to 8 × samples × seqLen tokens of documents takes seconds to minutes, during which the language server's event
 * loop must keep answering. cancel() terminates the thread (V8 stops it between two bytecodes: well within a second).
 *
 *   const c = calibrateOffThread({ modelDir, calibPath, samples, seqLen, seed });
 *   c.cancel();
 *   await c.promise;   // ../cli/calibration's CalibrationSet; rejects with CalibrationError (naming the file) or,
 *                      // after cancel(), CalibrationCancelled
 *
 * calibrationTask is the thread's side (run by ../worker).
 */
import { parentPort } from 'node:worker_threads';

import { buildCalibration, CalibrationError, readCalibrationDocuments, type CalibrationSet } from '../cli/calibration';
import { startWorker, threadFailure, type CalibrationTask } from '../threads';
import { MixqTokenizer } from '../tokenizer';

export class CalibrationCancelled extends Error {}

type CalibrationMessage = { type: 'done'; set: CalibrationSet } | { type: 'error'; message: string };

export interface OffThreadCalibration {
  readonly promise: Promise<CalibrationSet>;
  cancel(): void;
}

export function calibrateOffThread(options: Omit<CalibrationTask, 'task'>): OffThreadCalibration {
  const worker = startWorker({ task: 'calibration', ...options });
  let settle: ((error: Error | undefined, set?: CalibrationSet) => void) | undefined;
  const promise = new Promise<CalibrationSet>((resolve, reject) => {
    settle = (error, set) => {
      settle = undefined;
      void worker.terminate();
      if (error) reject(error);
      else resolve(set!);
    };
  });
  worker.once('message', (m: CalibrationMessage) => (m.type === 'done' ? settle?.(undefined, m.set) : settle?.(new CalibrationError(m.message))));
  worker.once('error', (e) => settle?.(new CalibrationError(`calibration ${threadFailure(e)}`)));
  worker.once('exit', (code) => settle?.(new CalibrationError(`the calibration thread ended (exit code ${code}) without a result`)));
  return { promise, cancel: () => settle?.(new CalibrationCancelled('calibration cancelled')) };
}

/** The thread's side: tokenizer, documents, the set (its ids transferred, not copied). */
export function calibrationTask(task: CalibrationTask): void {
  let reply: CalibrationMessage;
  try {
    const tokenizer = MixqTokenizer.load(task.modelDir);
    const set = buildCalibration(tokenizer, readCalibrationDocuments(task.calibPath), { samples: task.samples, seqLen: task.seqLen, seed: task.seed });
    reply = { type: 'done', set };
  } catch (e) {
    reply = { type: 'error', message: (e as Error).message };
  }
  parentPort!.postMessage(reply, reply.type === 'done' ? [reply.set.ids.buffer as ArrayBuffer] : []);
}
