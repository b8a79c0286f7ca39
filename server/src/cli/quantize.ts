/**
 * `mixq quantize SRC OUT`: a 16-bit Mixtral folder → an AutoAWQ "GEMM" int4 folder (AWQ or round-to-nearest).
 * Calibration (AWQ) comes from --calib (a .jsonl of {"text"}, a folder of source files, or a text file),
 * tokenized here and passed to the native quantizer as Int32Array [samples × seq-len]. Progress goes to
 * stderr (one line per phase); Ctrl-C cancels and leaves nothing behind.
 */
import * as path from 'node:path';
import { MAX_THREADS } from '#protocol';

import { Engine } from '../engine';
import type { NativeQuantizeProgress } from '../native';
import { MixqTokenizer } from '../tokenizer';
import { parseFlags, UsageError } from './args';
import { buildCalibration, readCalibrationDocuments } from './calibration';
import type { CliIo, Command } from './command';
import { jsonLine } from './common';

const flags = {
  calib: { type: 'string', help: 'calibration data: .jsonl of {"text"}, a folder of source files, or a text file (AWQ; default: the current folder)', valueName: 'path' },
  samples: { type: 'int', help: 'calibration samples (default 128)', min: 1, max: 1 << 20 },
  seqLen: { type: 'int', help: 'tokens per sample (default 512)', min: 2, max: 1 << 20 },
  groupSize: { type: 'int', help: 'input rows per scale: 32, 64 or 128 (default 128)', min: 1, max: 128 },
  method: { type: 'string', help: 'awq | rtn (default awq)', valueName: 'name' },
  rounding: { type: 'string', help: 'AWQ codes: gptq (rounding with error feedback, the default) | nearest (as AutoAWQ)', valueName: 'mode' },
  propagate: { type: 'string', help: 'AWQ: next layer calibrates on this layer\'s quantized (default) | float output (as AutoAWQ)', valueName: 'mode' },
  zeroPoint: { type: 'boolean', help: 'asymmetric int4 with a zero point per group (the default)' },
  symmetric: { type: 'boolean', help: 'symmetric int4 (zero point fixed at 8)' },
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
  summary: 'quantize a 16-bit model folder to AWQ int4 (AutoAWQ GEMM format)',
  usage: 'SRC OUT [--calib PATH] [--samples 128] [--seq-len 512] [--group-size 128] [--method awq|rtn] [--rounding gptq|nearest] [--propagate quantized|float] [--zero-point|--symmetric] [--threads N] [--seed S] [--json]',
  flags,
  async run(argv: readonly string[], io: CliIo): Promise<number> {
    const { positional, rest } = splitPositional(argv);
    const f = parseFlags(rest, flags);
    if (positional.length !== 2) throw new UsageError(`expected SRC and OUT folders, got ${positional.length} positional argument(s)`);
    const [source, output] = positional;
    const method = f.method ?? 'awq';
    if (method !== 'awq' && method !== 'rtn') throw new UsageError(`--method: "${method}" is not awq or rtn`);
    const groupSize = f.groupSize ?? 128;
    if (groupSize !== 32 && groupSize !== 64 && groupSize !== 128) throw new UsageError(`--group-size: ${groupSize} is not 32, 64 or 128`);
    if (f.zeroPoint && f.symmetric) throw new UsageError('give at most one of --zero-point, --symmetric');
    if (method === 'rtn' && f.calib !== undefined) throw new UsageError('--calib applies to --method awq only');
    const rounding = f.rounding ?? 'gptq';
    if (rounding !== 'gptq' && rounding !== 'nearest') throw new UsageError(`--rounding: "${rounding}" is not gptq or nearest`);
    const propagate = f.propagate ?? 'quantized';
    if (propagate !== 'quantized' && propagate !== 'float') throw new UsageError(`--propagate: "${propagate}" is not quantized or float`);
    if (method === 'rtn' && (f.rounding !== undefined || f.propagate !== undefined)) {
      throw new UsageError('--rounding and --propagate apply to --method awq only');
    }

    let calibIds: Int32Array | undefined;
    let samples = 0;
    let seqLen = 0;
    const warnings: string[] = [];
    if (method === 'awq') {
      const calibPath = f.calib ?? process.cwd();
      const tokenizer = MixqTokenizer.load(source);
      const docs = readCalibrationDocuments(calibPath);
      const set = buildCalibration(tokenizer, docs, { samples: f.samples ?? 128, seqLen: f.seqLen ?? 512, seed: f.seed ?? 0 });
      calibIds = set.ids;
      samples = set.samples;
      seqLen = set.seqLen;
      warnings.push(...set.warnings);
      if (!f.json) {
        io.stderr.write(`calibration: ${samples} × ${seqLen} tokens from ${set.documentsUsed} of ${set.documents} documents (${path.resolve(calibPath)})\n`);
      }
    }
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
    const job = Engine.quantize(
      {
        source, output, method, groupSize: groupSize as 32 | 64 | 128, zeroPoint: !f.symmetric, calibIds, samples, seqLen, threads: f.threads,
        ...(method === 'awq' ? { rounding, propagate } : {}),
      },
      onProgress,
    );
    // Ctrl-C, `kill` (SIGTERM) and a closed terminal (SIGHUP) all cancel: the quantizer stops between tensors and
    // removes OUT.tmp-XXXXXX, and the command exits 130. A second signal while cancelling is ignored (the default
    // action would kill the process and leave the temporary folder behind).
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
      const r = await job.promise;
      warnings.push(...r.warnings);
      if (f.json) {
        io.stdout.write(jsonLine({ ...r, method, groupSize, zeroPoint: !f.symmetric, samples, seqLen, warnings, ...(method === 'awq' ? { rounding, propagate } : {}) }));
      } else {
        for (const w of r.warnings) io.stderr.write(`warning: ${w}\n`);
        io.stdout.write(
          `wrote ${r.outputDir} (${(r.outputBytes / 1e6).toFixed(1)} MB, ${method} int4 g${groupSize}) in ${r.seconds.toFixed(1)} s, ` +
            `peak RSS ${(r.peakRssBytes / 1e6).toFixed(0)} MB\n`,
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
