/**
 * `mixq quantize SRC OUT` or `mixq quantize --recipe FILE [SRC OUT]`: a 16-bit Mixtral folder → an AutoAWQ "GEMM"
 * int4 folder (AWQ or round-to-nearest). A recipe (`*.mixq.toml`, server/src/recipe/) gives every setting; flags
 * (and SRC OUT) given beside it override it. Calibration (AWQ) comes from --calib (a .jsonl of {"text"}, a folder of
 * source files, or a text file), tokenized and passed to the native quantizer as Int32Array [samples × seq-len].
 * Progress goes to stderr (one line per phase); Ctrl-C cancels and leaves nothing behind. The run itself is
 * jobs/quantizeRun.ts, shared with the editor's quantize job.
 */
import * as path from 'node:path';
import { MAX_THREADS } from '#protocol';

import { MAX_RECIPE_FILE_BYTES, readRegularFileSync } from '../files';
import { runQuantization } from '../jobs/quantizeRun';
import type { NativeQuantizeProgress } from '../native';
import { analyzeRecipe } from '../recipe/analyze';
import { fromRecipe, QUANTIZE_DEFAULTS, RecipeError, type QuantizeSettings } from '../recipe/settings';
import { parseFlags, UsageError } from './args';
import type { CliIo, Command } from './command';
import { jsonLine } from './common';

const flags = {
  recipe: { type: 'string', help: 'a *.mixq.toml recipe giving every setting; flags beside it override it', valueName: 'file' },
  calib: { type: 'string', help: 'calibration data: .jsonl of {"text"}, a folder of source files, or a text file (AWQ; default: the current folder, or the recipe\'s)', valueName: 'path' },
  samples: { type: 'int', help: 'calibration samples (default 128)', min: 1, max: 1 << 20 },
  seqLen: { type: 'int', help: 'tokens per sample (default 512)', min: 2, max: 1 << 20 },
  groupSize: { type: 'int', help: 'input rows per scale: 32, 64 or 128 (default 128)', min: 1, max: 128 },
  method: { type: 'string', help: 'awq | rtn (default awq)', valueName: 'name' },
  rounding: { type: 'string', help: 'AWQ codes: gptq (rounding with error feedback, the default) | nearest (as AutoAWQ)', valueName: 'mode' },
  propagate: { type: 'string', help: 'AWQ: next layer calibrates on this layer\'s quantized (default) | float output (as AutoAWQ)', valueName: 'mode' },
  zeroPoint: { type: 'boolean', help: 'asymmetric int4 with a zero point per group (the default)' },
  symmetric: { type: 'boolean', help: 'symmetric int4 (zero point fixed at 8)' },
  overwrite: { type: 'boolean', help: 'replace an existing OUT (removed only after the new model is complete)' },
  threads: { type: 'int', help: 'CPU worker threads (default: all)', min: 0, max: MAX_THREADS },
  seed: { type: 'int', help: 'calibration sampling seed (default 0)', min: 0, max: 2 ** 32 - 1 },
  json: { type: 'boolean', help: 'print the result as one JSON object' },
} as const;

function fmtSeconds(s: number): string {
  if (s < 0) return '?';
  return s < 90 ? `${s.toFixed(0)} s` : `${(s / 60).toFixed(1)} min`;
}

export const quantizeCommand: Command = {
  name: 'quantize',
  summary: 'quantize a 16-bit model folder to AWQ int4 (AutoAWQ GEMM format), from flags or a *.mixq.toml recipe',
  usage: 'SRC OUT | --recipe FILE [SRC OUT] [--calib PATH] [--samples 128] [--seq-len 512] [--group-size 128] [--method awq|rtn] [--rounding gptq|nearest] [--propagate quantized|float] [--zero-point|--symmetric] [--overwrite] [--threads N] [--seed S] [--json]',
  flags,
  async run(argv: readonly string[], io: CliIo): Promise<number> {
    const { positional, rest } = splitPositional(argv);
    const f = parseFlags(rest, flags);
    if (f.recipe === undefined && positional.length !== 2) throw new UsageError(`expected SRC and OUT folders, got ${positional.length} positional argument(s)`);
    if (f.recipe !== undefined && positional.length !== 0 && positional.length !== 2) {
      throw new UsageError(`with --recipe, give SRC and OUT both or neither (they override the recipe's), got ${positional.length} positional argument(s)`);
    }
    if (f.method !== undefined && f.method !== 'awq' && f.method !== 'rtn') throw new UsageError(`--method: "${f.method}" is not awq or rtn`);
    if (f.groupSize !== undefined && f.groupSize !== 32 && f.groupSize !== 64 && f.groupSize !== 128) throw new UsageError(`--group-size: ${f.groupSize} is not 32, 64 or 128`);
    if (f.zeroPoint && f.symmetric) throw new UsageError('give at most one of --zero-point, --symmetric');
    if (f.rounding !== undefined && f.rounding !== 'gptq' && f.rounding !== 'nearest') throw new UsageError(`--rounding: "${f.rounding}" is not gptq or nearest`);
    if (f.propagate !== undefined && f.propagate !== 'quantized' && f.propagate !== 'float') throw new UsageError(`--propagate: "${f.propagate}" is not quantized or float`);

    // Flags over the recipe (or over the defaults); undefined = not given.
    const overrides: Partial<QuantizeSettings> = {
      source: positional[0] !== undefined ? path.resolve(positional[0]) : undefined,
      output: positional[1] !== undefined ? path.resolve(positional[1]) : undefined,
      overwrite: f.overwrite,
      method: f.method as QuantizeSettings['method'] | undefined,
      groupSize: f.groupSize as QuantizeSettings['groupSize'] | undefined,
      zeroPoint: f.symmetric ? false : f.zeroPoint,
      rounding: f.rounding as QuantizeSettings['rounding'] | undefined,
      propagate: f.propagate as QuantizeSettings['propagate'] | undefined,
      calibPath: f.calib !== undefined ? path.resolve(f.calib) : undefined,
      samples: f.samples,
      seqLen: f.seqLen,
      seed: f.seed,
      threads: f.threads,
    };
    let settings: QuantizeSettings;
    const warnings: string[] = [];
    if (f.recipe !== undefined) {
      let text: string;
      try {
        text = readRegularFileSync(f.recipe, MAX_RECIPE_FILE_BYTES, 'a recipe');
      } catch (e) {
        throw new UsageError(`--recipe: ${(e as Error).message}`);
      }
      const analysis = analyzeRecipe(text, path.resolve(f.recipe), { checkFiles: false });
      for (const d of analysis.diagnostics.filter((x) => x.severity === 'warning')) {
        warnings.push(`${f.recipe}:${d.range.start.line + 1}:${d.range.start.character + 1}: ${d.message}`);
      }
      try {
        settings = fromRecipe(analysis, f.recipe, undefined, overrides);
      } catch (e) {
        if (e instanceof RecipeError) throw new UsageError(`invalid recipe:\n${e.message}`);
        throw e;
      }
    } else {
      if (overrides.method === 'rtn' && f.calib !== undefined) throw new UsageError('--calib applies to --method awq only');
      if (overrides.method === 'rtn' && (f.rounding !== undefined || f.propagate !== undefined)) {
        throw new UsageError('--rounding and --propagate apply to --method awq only');
      }
      const given = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as unknown as QuantizeSettings;
      settings = { ...QUANTIZE_DEFAULTS, ...given, calibPath: given.calibPath ?? process.cwd() };
    }
    const { method, groupSize, zeroPoint, rounding, propagate } = settings;
    for (const w of warnings) io.stderr.write(`warning: ${w}\n`);

    let lastLine = '';
    const onProgress = (p: NativeQuantizeProgress): void => {
      if (f.json) return;
      const line = p.phase === 'done'
        ? `done in ${fmtSeconds(p.elapsedS)}`
        : `layer ${p.layer + 1}/${p.layers} ${p.phase} — ${(p.fraction * 100).toFixed(0)}%, ${fmtSeconds(p.elapsedS)} elapsed, ETA ${fmtSeconds(p.etaS)}`;
      if (line !== lastLine) io.stderr.write(line + '\n');
      lastLine = line;
    };
    const job = runQuantization(settings, {
      onProgress,
      onCalibration: (c, calibWarnings) => {
        if (!f.json) io.stderr.write(`calibration: ${c.samples} × ${c.seqLen} tokens from ${c.documentsUsed} of ${c.documents} documents (${c.path})\n`);
        for (const w of calibWarnings) io.stderr.write(`warning: ${w}\n`);
        warnings.push(...calibWarnings);
      },
    });
    // Ctrl-C, `kill` (SIGTERM) and a closed terminal (SIGHUP) all cancel: the quantizer stops between tensors and
    // removes its temporary folder, and the command exits 130. A second signal while cancelling is ignored (the
    // default action would kill the process and leave the temporary folder behind).
    let signalled: NodeJS.Signals | undefined;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (signalled) return;
      signalled = signal;
      io.stderr.write(`${signal}: cancelling…\n`);
      job.cancel();
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const sig of signals) process.on(sig, onSignal);
    try {
      const r = await job.promise;  // a QuantizeError (bad source, existing output, cancelled) exits 1 with its message
      warnings.push(...r.warnings);
      const samples = r.calibration?.samples ?? 0;
      const seqLen = r.calibration?.seqLen ?? 0;
      if (f.json) {
        const { calibration: _calibration, replaced: _replaced, ...native } = r;
        io.stdout.write(jsonLine({ ...native, method, groupSize, zeroPoint, samples, seqLen, warnings, ...(method === 'awq' ? { rounding, propagate } : {}) }));
      } else {
        for (const w of r.warnings) io.stderr.write(`warning: ${w}\n`);
        io.stdout.write(
          `wrote ${r.outputDir}${r.replaced ? ' (replacing the old one)' : ''} (${(r.outputBytes / 1e6).toFixed(1)} MB, ${method} int4 g${groupSize}) in ${r.seconds.toFixed(1)} s, ` +
            `peak RSS ${(r.peakRssBytes / 1e6).toFixed(0)} MB` +
            (method === 'awq' ? `; ${r.expertsWithoutTokens} (layer, expert) pairs got no calibration tokens and used the fallback` : '') +
            '\n',
        );
      }
      return 0;
    } catch (e) {
      if (signalled && (e as { cancelled?: boolean }).cancelled) {
        io.stderr.write(`quantization cancelled by ${signalled}; nothing was written\n`);
        return 130;
      }
      throw e;
    } finally {
      for (const sig of signals) process.removeListener(sig, onSignal);
    }
  },
};

/** SRC and OUT apart from the flags: a `--name` takes the next argument as its value unless it is boolean or `--name=value`. */
function splitPositional(argv: readonly string[]): { positional: string[]; rest: string[] } {
  const positional: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    rest.push(a);
    const name = a.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const spec = (flags as Record<string, { type: string }>)[name];
    if (!a.includes('=') && spec && spec.type !== 'boolean' && i + 1 < argv.length) rest.push(argv[++i]);
  }
  return { positional, rest };
}
