/**
 * Runs one quantization from resolved settings (recipe/settings.ts): the one path under `mixq quantize` and the
 * server's quantize job, so a recipe and the same flags write the same bytes.
 *
 *   const run = runQuantization(settings, { onProgress });
 *   run.cancel();          // any time: the promise rejects with QuantizeError { cancelled: true }
 *   await run.promise;     // { ...native result, calibration }
 *
 * Nothing is lost:
 *  1. the source is checked to be a 16-bit Mixtral folder, and an existing non-empty output is refused unless
 *     settings.overwrite, before any work;
 *  2. the native quantizer writes OUT.tmp-XXXXXX and renames it to OUT when complete (it removes it on failure);
 *  3. with overwrite over an existing OUT, the native output goes to OUT.mixq-new-XXXXXX; only when that is complete
 *     is OUT moved aside, the new folder renamed to OUT and the old one deleted (moved back if the rename fails);
 *  4. parent folders this run created are removed again when it fails or is cancelled.
 *
 * The AWQ calibration set is tokenized on a worker thread (./calibrationThread), the quantizer runs on the addon's
 * threads: the caller's event loop is never blocked, and cancel() takes effect within a second in either phase.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { CalibrationSet } from '../cli/calibration';
import { Engine } from '../engine';
import type { NativeQuantizeProgress, NativeQuantizeResult } from '../native';
import { checkMixtralSource } from '../recipe/source';
import type { QuantizeSettings } from '../recipe/settings';
import { CalibrationCancelled, calibrateOffThread } from './calibrationThread';

export class QuantizeError extends Error {
  constructor(message: string, readonly cancelled = false) {
    super(message);
  }
}

export interface CalibrationInfo {
  samples: number;
  seqLen: number;
  documents: number;
  documentsUsed: number;
  path: string;
}

export interface QuantizeRunResult extends NativeQuantizeResult {
  calibration: CalibrationInfo | undefined;
  replaced: boolean;  // an existing output was replaced (overwrite)
}

export interface QuantizeRunHooks {
  onProgress?: (p: NativeQuantizeProgress) => void;
  /** After the calibration set is built (AWQ), before the native run starts. */
  onCalibration?: (info: CalibrationInfo, warnings: string[]) => void;
}

export interface QuantizeRun {
  readonly promise: Promise<QuantizeRunResult>;
  cancel(): void;
}

const isNonEmptyDir = (p: string): boolean => fs.existsSync(p) && fs.statSync(p).isDirectory() && fs.readdirSync(p).length > 0;

/** Checks that need no work: the source, the output. Throws QuantizeError with the reason. */
export function preflight(s: QuantizeSettings): void {
  const reason = checkMixtralSource(s.source);
  if (reason) throw new QuantizeError(`source: ${reason}`);
  if (path.resolve(s.source) === path.resolve(s.output)) throw new QuantizeError('output: the same folder as source');
  if (fs.existsSync(s.output) && !fs.statSync(s.output).isDirectory()) throw new QuantizeError(`output: ${s.output} exists and is a file`);
  if (isNonEmptyDir(s.output) && !s.overwrite) {
    throw new QuantizeError(`output: ${s.output} already exists; set overwrite = true in the recipe (or pass --overwrite) to replace it`);
  }
}

/** Creates `dir`'s missing ancestors; returns the topmost one created (to remove on failure), if any. */
function createParents(dir: string): string | undefined {
  let top: string | undefined;
  let p = path.dirname(dir);
  while (!fs.existsSync(p)) {
    top = p;
    const up = path.dirname(p);
    if (up === p) break;
    p = up;
  }
  if (top) fs.mkdirSync(path.dirname(dir), { recursive: true });
  return top;
}

export function runQuantization(s: QuantizeSettings, hooks: QuantizeRunHooks = {}): QuantizeRun {
  let cancelled = false;
  let stopCurrent: (() => void) | undefined;  // the running phase: the calibration thread, then the native job
  const cancel = (): void => {
    cancelled = true;
    stopCurrent?.();
  };
  const promise = (async (): Promise<QuantizeRunResult> => {
    preflight(s);
    const replacing = isNonEmptyDir(s.output);
    const createdParent = createParents(s.output);
    const nativeOutput = replacing ? `${s.output}.mixq-new-${crypto.randomBytes(4).toString('hex')}` : s.output;
    try {
      let calibIds: Int32Array | undefined;
      let calibration: CalibrationInfo | undefined;
      if (s.method === 'awq') {
        // Tokenized on a worker thread: the event loop keeps answering, and cancel() ends the thread at once.
        const calibrating = calibrateOffThread({ modelDir: s.source, calibPath: s.calibPath, samples: s.samples, seqLen: s.seqLen, seed: s.seed });
        stopCurrent = () => calibrating.cancel();
        if (cancelled) calibrating.cancel();
        let set: CalibrationSet;
        try {
          set = await calibrating.promise;
        } catch (e) {
          if (e instanceof CalibrationCancelled) throw new QuantizeError('quantization cancelled', true);
          throw e;
        }
        calibIds = set.ids;
        calibration = { samples: set.samples, seqLen: set.seqLen, documents: set.documents, documentsUsed: set.documentsUsed, path: s.calibPath };
        hooks.onCalibration?.(calibration, set.warnings);
      }
      if (cancelled) throw new QuantizeError('quantization cancelled', true);
      const job = Engine.quantize(
        {
          source: s.source, output: nativeOutput, method: s.method, groupSize: s.groupSize, zeroPoint: s.zeroPoint, threads: s.threads,
          calibIds, samples: calibration?.samples ?? 0, seqLen: calibration?.seqLen ?? 0,
          ...(s.method === 'awq' ? { rounding: s.rounding, propagate: s.propagate } : {}),
        },
        hooks.onProgress,
      );
      stopCurrent = () => job.cancel();
      if (cancelled) job.cancel();
      let result: NativeQuantizeResult;
      try {
        result = await job.promise;
      } catch (e) {
        if ((e as { cancelled?: boolean }).cancelled) throw new QuantizeError('quantization cancelled', true);
        throw new QuantizeError((e as Error).message);
      }
      if (replacing) {
        const aside = `${s.output}.mixq-old-${crypto.randomBytes(4).toString('hex')}`;
        fs.renameSync(s.output, aside);
        try {
          fs.renameSync(nativeOutput, s.output);
        } catch (e) {
          fs.renameSync(aside, s.output);
          throw e;
        }
        fs.rmSync(aside, { recursive: true, force: true });
        result = { ...result, outputDir: s.output };
      }
      return { ...result, calibration, replaced: replacing };
    } catch (e) {
      if (replacing) fs.rmSync(nativeOutput, { recursive: true, force: true });
      if (createdParent) removeEmptyTree(createdParent);
      throw e;
    }
  })();
  return { promise, cancel };
}

/** Removes `dir` if it holds nothing but empty folders (the parents this run created). */
function removeEmptyTree(dir: string): void {
  const isEmptyTree = (p: string): boolean => fs.readdirSync(p, { withFileTypes: true }).every((e) => e.isDirectory() && isEmptyTree(path.join(p, e.name)));
  try {
    if (isEmptyTree(dir)) fs.rmSync(dir, { recursive: true });
  } catch {
    // already gone
  }
}
