/**
 * `mixq bench`: prefill and decode tokens/s, per-layer decode time, peak memory, and the machine's memcpy
 * bandwidth measured in the same run — on a model folder or on random weights of a named shape.
 */
import { Engine } from '../engine';
import { MAX_THREADS } from '#protocol';
import { deviceFlags, deviceOptions, parseFlags, UsageError } from './args';
import type { CliIo, Command } from './command';
import { jsonLine } from './common';

const flags = {
  model: { type: 'string', help: 'model folder to benchmark', valueName: 'dir' },
  synthetic: { type: 'string', help: 'random weights of a named shape: mixtral-8x7b | qwen3-coder-30b-a3b | tiny', valueName: 'name' },
  layers: { type: 'int', help: 'decoder layers for --synthetic (default: 2 for mixtral-8x7b, 48 for qwen3-coder-30b-a3b, 4 for tiny)', min: 1, max: 1024 },
  weights: { type: 'string', help: 'weights for --synthetic: bf16 (default) | awq (attention and experts int4 g128)', valueName: 'bf16|awq' },
  prefillTokens: { type: 'int', help: 'prompt length for the prefill measurement', min: 1, max: 1 << 20 },
  decodeTokens: { type: 'int', help: 'tokens decoded for the decode measurement', min: 1, max: 1 << 20 },
  threads: { type: 'int', help: 'CPU worker threads (default: all)', min: 0, max: MAX_THREADS },
  ...deviceFlags,
  json: { type: 'boolean', help: 'print the result as one JSON object' },
} as const;

export const benchCommand: Command = {
  name: 'bench',
  summary: 'prefill/decode speed, per-layer time, memory bandwidth ratio',
  usage: '(--model DIR | --synthetic mixtral-8x7b|qwen3-coder-30b-a3b|tiny [--layers N] [--weights bf16|awq]) [--prefill-tokens N] [--decode-tokens N] [--device cpu|cuda|auto | --devices cpu:0,cpu:1 [--placement layer|expert] [--split 1,1]] [--json]',
  flags,
  async run(argv: readonly string[], io: CliIo): Promise<number> {
    const f = parseFlags(argv, flags);
    if ((f.model === undefined) === (f.synthetic === undefined)) throw new UsageError('give exactly one of --model, --synthetic');
    if (f.layers !== undefined && f.synthetic === undefined) throw new UsageError('--layers applies to --synthetic only');
    if (f.weights !== undefined && f.synthetic === undefined) throw new UsageError('--weights applies to --synthetic only');
    if (f.weights !== undefined && f.weights !== 'bf16' && f.weights !== 'awq') {
      throw new UsageError(`--weights: "${f.weights}" is not bf16 or awq`);
    }
    const devices = deviceOptions(f);
    const r = await Engine.bench({
      model: f.model,
      synthetic: f.synthetic,
      layers: f.layers,
      weights: f.weights,
      prefillTokens: f.prefillTokens,
      decodeTokens: f.decodeTokens,
      threads: f.threads,
      ...devices,
    });
    if (f.json) {
      io.stdout.write(jsonLine(r));
      return 0;
    }
    const gb = (b: number): string => (b / 1e9).toFixed(3);
    io.stdout.write(
      [
        r.description,
        `prefill  ${r.prefillTokensPerSec.toFixed(1)} tokens/s (${r.prefillTokens} tokens)`,
        `decode   ${r.decodeTokensPerSec.toFixed(2)} tokens/s (${r.decodeTokens} tokens), ${r.decodeMsPerLayer.toFixed(3)} ms per layer`,
        `weights  ${gb(r.weightBytesPerToken)} GB streamed per decoded token`,
        `memcpy   ${r.memcpyGBps.toFixed(1)} GB/s; decode streams ${(r.bandwidthRatio * 100).toFixed(1)}% of that`,
        `peak RSS ${gb(r.peakRssBytes)} GB`,
      ].join('\n') + '\n',
    );
    return 0;
  },
};
