/**
 * `mixq ppl`: perplexity of the model on a held-out token stream, as the fixtures README defines it:
 * window w = ids[seq·w : seq·w + seq], each predicting its own next tokens (seq − 1 per window), no overlap.
 */
import { Engine } from '../engine';
import { deviceOptions, parseFlags, UsageError } from './args';
import type { CliIo, Command } from './command';
import { describePlacement, engineFlags, jsonLine } from './common';
import { readSafetensorsTensor } from './safetensors';

const flags = {
  model: { type: 'string', help: 'model folder', valueName: 'dir', required: true },
  ids: { type: 'string', help: 'a .safetensors file holding the token stream (int32)', valueName: 'file', required: true },
  tensor: { type: 'string', help: 'name of the token tensor in that file (default "ids")', valueName: 'name' },
  windows: { type: 'int', help: 'number of windows (default 120)', min: 1, max: 1 << 20 },
  seq: { type: 'int', help: 'tokens per window (default 512)', min: 2, max: 1 << 20 },
  json: { type: 'boolean', help: 'print {"ppl", "tokens", ...} as JSON' },
  ...engineFlags,
} as const;

export const pplCommand: Command = {
  name: 'ppl',
  summary: 'perplexity on a held-out token stream',
  usage: '--model DIR --ids FILE.safetensors [--windows 120] [--seq 512] [--device cpu|cuda|auto | --devices cpu:0,cpu:1 [--placement layer|expert] [--split 1,1]] [--json]',
  flags,
  async run(argv: readonly string[], io: CliIo): Promise<number> {
    const f = parseFlags(argv, flags);
    const devices = deviceOptions(f);
    const windows = f.windows ?? 120;
    const seq = f.seq ?? 512;
    const tensor = readSafetensorsTensor(f.ids!, f.tensor ?? 'ids', 'I32');
    const ids = tensor.data as Int32Array;
    if (ids.length < windows * seq) {
      throw new UsageError(`${f.ids}: ${ids.length} tokens, fewer than --windows ${windows} × --seq ${seq} = ${windows * seq}`);
    }
    const engine = await Engine.load(f.model!, { ...devices, threads: f.threads, contextLength: f.contextLength ?? seq, tokenizer: false });
    try {
      const bad = ids.subarray(0, windows * seq).find((id) => id < 0 || id >= engine.info.vocabSize);
      if (bad !== undefined) throw new UsageError(`${f.ids}: token id ${bad} is outside the vocabulary (${engine.info.vocabSize})`);
      const r = await engine.perplexity(ids.subarray(0, windows * seq), windows, seq);
      if (f.json) {
        // JSON numbers are the doubles themselves (shortest round-trip form): no rounding on this path.
        io.stdout.write(jsonLine({
          ppl: r.ppl, tokens: r.tokens, nll: r.nll, windows, seq, ms: r.ms, model: engine.modelDir, device: engine.info.device,
          devices: engine.info.devices, placement: engine.info.placement,
        }));
      } else {
        io.stdout.write(
          `perplexity ${r.ppl.toFixed(4)} (mean NLL ${r.nll.toFixed(5)}) over ${r.tokens} predicted tokens, ` +
            `${windows} windows × ${seq}, ${(r.ms / 1000).toFixed(1)} s; ${describePlacement(engine.info.placement)}\n`,
        );
      }
      return 0;
    } finally {
      await engine.dispose();
    }
  },
};
