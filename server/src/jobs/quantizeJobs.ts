/**
 * The server's quantization job: one at a time (a second mixq/quantize is refused with the running job's name),
 * progress as mixq/quantizeProgress, cancelled by the LSP request's cancellation or mixq/quantizeCancel.
 *
 * The native quantizer runs on the addon's worker threads, so this process's event loop keeps answering
 * (completions, status) during a job; the CPU is shared, so completions are slower meanwhile, not paused.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { QuantizeJobSettings, QuantizeParams, QuantizeProgress, QuantizeResult } from '#protocol';
import { MAX_RECIPE_FILE_BYTES, readRegularFileSync } from '../files';
import { analyzeRecipe } from '../recipe/analyze';
import { fromRecipe, QUANTIZE_DEFAULTS, RecipeError, type QuantizeSettings } from '../recipe/settings';
import { QuantizeError, runQuantization, type QuantizeRun } from './quantizeRun';

export class JobRefused extends Error {}

/** Settings of a job request: the recipe (open text first), else the wizard's settings over the defaults. */
export function jobSettings(params: QuantizeParams, openText: (uri: string) => string | undefined): QuantizeSettings {
  const workspace = params.workspaceFolder;
  if (params.recipeUri) {
    const file = params.recipeUri.startsWith('file:') ? fileURLToPath(params.recipeUri) : params.recipeUri;
    let text = openText(params.recipeUri);
    try {
      text ??= readRegularFileSync(file, MAX_RECIPE_FILE_BYTES, 'a recipe');
    } catch (e) {
      throw new QuantizeError((e as Error).message);
    }
    try {
      return fromRecipe(analyzeRecipe(text, file), file, workspace);
    } catch (e) {
      if (e instanceof RecipeError) throw new QuantizeError(`the recipe has errors:\n${e.message}`);
      throw e;
    }
  }
  const s: QuantizeJobSettings | undefined = params.settings;
  if (!s?.source || !s.output) throw new QuantizeError('a quantize job needs a recipe or settings with source and output');
  if (s.device === 'cuda') throw new QuantizeError('device "cuda": this build quantizes on the CPU only');
  return {
    ...QUANTIZE_DEFAULTS,
    source: path.resolve(s.source),
    output: path.resolve(s.output),
    overwrite: s.overwrite ?? QUANTIZE_DEFAULTS.overwrite,
    method: s.method ?? QUANTIZE_DEFAULTS.method,
    groupSize: s.groupSize ?? QUANTIZE_DEFAULTS.groupSize,
    zeroPoint: s.zeroPoint ?? QUANTIZE_DEFAULTS.zeroPoint,
    calibPath: path.resolve(s.calibPath ?? workspace ?? path.dirname(s.source)),
    samples: s.samples ?? QUANTIZE_DEFAULTS.samples,
    seqLen: s.seqLen ?? QUANTIZE_DEFAULTS.seqLen,
    seed: s.seed ?? QUANTIZE_DEFAULTS.seed,
  };
}

export class QuantizeJobHost {
  private running: { run: QuantizeRun; progress: QuantizeProgress } | undefined;
  private nextId = 1;

  constructor(
    private readonly sendProgress: (p: QuantizeProgress) => void,
    private readonly log: (msg: string) => void,
    /** A job ended (done, failed or cancelled): recipe diagnostics about existing outputs may have changed. */
    private readonly ended: () => void = () => undefined,
  ) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Runs a job to its end; `onCancel` registers the request's cancellation. Throws JobRefused while one runs. */
  async run(settings: QuantizeSettings, onCancel: (listener: () => void) => void): Promise<QuantizeResult> {
    if (this.running) {
      const p = this.running.progress;
      const where = p.layers > 0 ? `layer ${p.layer + 1} of ${p.layers}, ${p.phase}` : p.phase;
      throw new JobRefused(`A quantization job is already running (${p.source} → ${p.output}, ${where}); cancel it or wait for it to finish`);
    }
    const jobId = this.nextId++;
    const progress: QuantizeProgress = { jobId, source: settings.source, output: settings.output, phase: 'calibration', layer: 0, layers: 0, fraction: 0, elapsedS: 0, etaS: -1 };
    let lastSent = 0;
    let lastPhase = '';
    const run = runQuantization(settings, {
      onProgress: (p) => {
        Object.assign(progress, { phase: p.phase, layer: Math.min(p.layer, Math.max(0, p.layers - 1)), layers: p.layers, fraction: p.fraction, elapsedS: p.elapsedS, etaS: p.etaS });
        const now = Date.now();
        // Phase changes always, else at most 4 a second.
        if (p.phase !== lastPhase || now - lastSent >= 250) {
          lastSent = now;
          lastPhase = p.phase;
          this.sendProgress({ ...progress });
        }
      },
    });
    this.running = { run, progress };
    this.sendProgress({ ...progress });
    onCancel(() => this.cancel());
    this.log(`quantize job ${jobId}: ${settings.source} → ${settings.output} (${settings.method}, g${settings.groupSize})`);
    try {
      const r = await run.promise;
      this.log(`quantize job ${jobId}: wrote ${r.outputDir} in ${r.seconds.toFixed(1)} s`);
      return {
        outputDir: r.outputDir, seconds: r.seconds, outputBytes: r.outputBytes, layers: r.layers, method: settings.method, groupSize: settings.groupSize,
        replaced: r.replaced, warnings: r.warnings,
      };
    } catch (e) {
      this.log(`quantize job ${jobId}: ${(e as Error).message}`);
      throw e;
    } finally {
      this.running = undefined;
      this.ended();
    }
  }

  /** Cancels the running job (its request then fails with `cancelled`); false when none runs. */
  cancel(): boolean {
    if (!this.running) return false;
    this.running.run.cancel();
    return true;
  }
}
