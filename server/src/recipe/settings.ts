/**
 * What a quantization job does, resolved: absolute paths and every default filled in. A recipe (fromRecipe), the
 * CLI's flags and the editor's `MixQ: Quantize Model…` all end here, and jobs/quantizeRun.ts runs it, so the same
 * settings give the same bytes whichever way they were given.
 */
import * as path from 'node:path';

import type { RecipeAnalysis } from './analyze';

export interface QuantizeSettings {
  source: string;                 // absolute
  output: string;                 // absolute
  overwrite: boolean;
  method: 'awq' | 'rtn';
  groupSize: 32 | 64 | 128;
  zeroPoint: boolean;
  rounding: 'gptq' | 'nearest';   // AWQ only
  propagate: 'quantized' | 'float'; // AWQ only
  calibPath: string;              // absolute (AWQ only)
  samples: number;
  seqLen: number;
  seed: number;
  threads?: number;               // 0 / undefined = all hardware threads
}

export const QUANTIZE_DEFAULTS = {
  overwrite: false, method: 'awq', groupSize: 128, zeroPoint: true, rounding: 'gptq', propagate: 'quantized', samples: 128, seqLen: 512, seed: 0,
} as const;

export class RecipeError extends Error {}

/**
 * A recipe's settings; throws RecipeError listing its errors (`FILE:LINE:COL: message`) when it has any.
 * `defaultCalibration`: calibration data when the recipe names none (the workspace; the CLI: the recipe's folder).
 */
export function fromRecipe(
  analysis: RecipeAnalysis, recipePath: string, defaultCalibration?: string, overrides: Partial<QuantizeSettings> = {},
): QuantizeSettings {
  const errors = analysis.diagnostics.filter((d) => d.severity === 'error');
  if (errors.length > 0 || !analysis.values) {
    throw new RecipeError(errors.map((d) => `${recipePath}:${d.range.start.line + 1}:${d.range.start.character + 1}: ${d.message}`).join('\n') || `${recipePath}: invalid recipe`);
  }
  const v = analysis.values;
  const dir = path.dirname(path.resolve(recipePath));
  const quant = (v.quant ?? {}) as Record<string, unknown>;
  const calibration = (v.calibration ?? {}) as Record<string, unknown>;
  const num = (x: unknown, d: number): number => (x === undefined ? d : Number(x));
  for (const key of ['source', 'output'] as const) {
    if (typeof v[key] !== 'string' && overrides[key] === undefined) throw new RecipeError(`${recipePath}: missing required key "${key}"`);
  }
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, x]) => x !== undefined)) as Partial<QuantizeSettings>;
  return {
    source: path.resolve(dir, (v.source as string | undefined) ?? '.'),
    output: path.resolve(dir, (v.output as string | undefined) ?? '.'),
    overwrite: (v.overwrite as boolean | undefined) ?? QUANTIZE_DEFAULTS.overwrite,
    method: (quant.method as QuantizeSettings['method'] | undefined) ?? QUANTIZE_DEFAULTS.method,
    groupSize: num(quant.group_size, QUANTIZE_DEFAULTS.groupSize) as QuantizeSettings['groupSize'],
    zeroPoint: (quant.zero_point as boolean | undefined) ?? QUANTIZE_DEFAULTS.zeroPoint,
    rounding: (quant.rounding as QuantizeSettings['rounding'] | undefined) ?? QUANTIZE_DEFAULTS.rounding,
    propagate: (quant.propagate as QuantizeSettings['propagate'] | undefined) ?? QUANTIZE_DEFAULTS.propagate,
    calibPath: typeof calibration.path === 'string' ? path.resolve(dir, calibration.path) : path.resolve(defaultCalibration ?? dir),
    samples: num(calibration.samples, QUANTIZE_DEFAULTS.samples),
    seqLen: num(calibration.seq_len, QUANTIZE_DEFAULTS.seqLen),
    seed: num(calibration.seed, QUANTIZE_DEFAULTS.seed),
    ...defined,
  };
}
