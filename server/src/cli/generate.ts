/**
 * `mixq generate`: runs the model on a prompt and streams the completion to stdout (or prints one JSON object).
 */
import * as fs from 'node:fs';

import { Engine } from '../engine';
import { MAX_JSON_FILE_BYTES, readRegularFileSync } from '../files';
import type { NativeGenerateRequest } from '../native';
import { deviceOptions, parseFlags, UsageError } from './args';
import type { CliIo, Command } from './command';
import { describePlacement, engineFlags, jsonLine, perSecond } from './common';

const flags = {
  model: { type: 'string', help: 'model folder (config.json, *.safetensors, tokenizer.json)', valueName: 'dir', required: true },
  prompt: { type: 'string', help: 'prompt text (the tokenizer adds BOS)', valueName: 'text' },
  promptFile: { type: 'string', help: 'read the prompt text from a file (- for stdin)', valueName: 'file' },
  ids: { type: 'intList', help: 'prompt as token ids, used as given (no BOS added)', valueName: '1,2,3' },
  suffix: { type: 'string', help: 'text after the cursor: build a fill-in-the-middle prompt (no BOS)', valueName: 'text' },
  fim: { type: 'string', help: 'FIM layout with --suffix: spm | psm (default: spm when the model knows it, else psm)', valueName: 'layout' },
  maxTokens: { type: 'int', help: 'tokens to generate at most (default 64)', min: 0, max: 1 << 20 },
  greedy: { type: 'boolean', help: 'always take the most likely token (the default without sampling flags)' },
  temperature: { type: 'number', help: 'sample with this temperature (> 0)', min: 1e-6 },
  topK: { type: 'int', help: 'sample among the k most likely tokens (0 = off)', min: 0, max: 1 << 20 },
  topP: { type: 'number', help: 'nucleus sampling mass in (0, 1] (1 = off)', min: 1e-6, max: 1 },
  seed: { type: 'int', help: 'sampling seed (default 0)', min: 0, max: Number.MAX_SAFE_INTEGER },
  stopIds: { type: 'intList', help: 'stop on any of these token ids (EOS always stops)', valueName: '2,13' },
  ignoreEos: { type: 'boolean', help: 'do not stop on EOS' },
  json: { type: 'boolean', help: 'print one JSON object (ids, text, counts, timings) instead of streaming text' },
  stats: { type: 'boolean', help: 'after the streamed text, print token counts and speeds to stderr' },
  ...engineFlags,
} as const;

export const generateCommand: Command = {
  name: 'generate',
  summary: 'complete a prompt with the model',
  usage: '--model DIR (--prompt TEXT | --prompt-file F | --ids 1,2,3) [--suffix TEXT [--fim spm|psm]] [--max-tokens N] [--greedy | --temperature T [--top-k K] [--top-p P] [--seed S]] [--device cpu|cuda|auto | --devices cpu:0,cpu:1 [--placement layer|expert] [--split 1,1]] [--json]',
  flags,
  async run(argv: readonly string[], io: CliIo): Promise<number> {
    const f = parseFlags(argv, flags);
    const sources = [f.prompt, f.promptFile, f.ids].filter((s) => s !== undefined).length;
    if (sources !== 1) throw new UsageError('give exactly one of --prompt, --prompt-file, --ids');
    if (f.suffix !== undefined && f.ids !== undefined) throw new UsageError('--suffix needs --prompt or --prompt-file (text), not --ids');
    if (f.fim !== undefined && f.suffix === undefined) throw new UsageError('--fim applies with --suffix only');
    if (f.fim !== undefined && f.fim !== 'spm' && f.fim !== 'psm') throw new UsageError(`--fim: "${f.fim}" is not spm or psm`);
    const sampling = f.temperature !== undefined || f.topK !== undefined || f.topP !== undefined || f.seed !== undefined;
    if (f.greedy && sampling) throw new UsageError('--greedy cannot be combined with --temperature, --top-k, --top-p or --seed');
    const devices = deviceOptions(f);

    let promptText: string | undefined = f.prompt;
    if (f.promptFile !== undefined) {
      try {
        promptText = f.promptFile === '-' ? fs.readFileSync(0, 'utf8') : readRegularFileSync(f.promptFile, MAX_JSON_FILE_BYTES, 'a prompt file'); // fd 0: stdin
      } catch (e) {
        throw new Error(`${f.promptFile}: cannot read the prompt file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    }

    const engine = await Engine.load(f.model!, { ...devices, threads: f.threads, contextLength: f.contextLength });
    try {
      let prompt: number[];
      if (promptText !== undefined && f.suffix !== undefined) {
        const fim = engine.tokenizer!.fim;
        if (!fim) throw new Error(`${engine.modelDir}: the tokenizer has no FIM tokens, so --suffix cannot be used`);
        const layout = (f.fim ?? (fim.modes.includes('spm') ? 'spm' : 'psm')) as 'spm' | 'psm';
        if (!fim.modes.includes(layout)) throw new UsageError(`--fim: the model was trained on ${fim.modes.join(', ')}, not ${layout}`);
        prompt = engine.tokenizer!.fimPrompt(promptText, f.suffix, layout);
      } else if (promptText !== undefined) {
        prompt = engine.tokenizer!.encode(promptText);
      } else {
        prompt = f.ids!;
        const bad = prompt.find((id) => id >= engine.info.vocabSize);
        if (bad !== undefined) throw new UsageError(`--ids: ${bad} is not a token id of this model (vocabulary ${engine.info.vocabSize})`);
      }
      if (prompt.length === 0) throw new UsageError('the prompt is empty');

      const request: NativeGenerateRequest = {
        prompt,
        maxTokens: f.maxTokens ?? 64,
        greedy: !sampling,
        temperature: f.temperature,
        topK: f.topK,
        topP: f.topP,
        seed: f.seed,
        stopIds: f.stopIds,
        ignoreEos: f.ignoreEos,
      };
      // stdout carries the completion only; where the model runs goes to stderr.
      if (!f.json) io.stderr.write(`[${describePlacement(engine.info.placement)}]\n`);
      const generation = engine.generate(request, f.json ? {} : { onText: (chunk) => io.stdout.write(chunk) });
      // Ctrl-C stops the generation at the next token; what was produced is still printed.
      const onSigint = (): void => generation.cancel();
      process.once('SIGINT', onSigint);
      const r = await generation.result.finally(() => process.removeListener('SIGINT', onSigint));
      if (f.json) {
        io.stdout.write(
          jsonLine({
            generated_ids: r.tokens,
            text: r.text,
            stop_reason: r.stopReason,
            prompt_tokens: r.promptTokens,
            reused_tokens: r.reusedTokens,
            evaluated_tokens: r.evaluatedTokens,
            prefill_ms: r.prefillMs,
            decode_ms: r.decodeMs,
            prefill_tokens_per_s: perSecond(r.promptTokens - r.reusedTokens, r.prefillMs),
            decode_tokens_per_s: perSecond(Math.max(0, r.tokens.length - 1), r.decodeMs),
            model: engine.modelDir,
            device: engine.info.device,
            devices: engine.info.devices,
            placement: engine.info.placement,
            threads: engine.info.threads,
          }),
        );
      } else {
        io.stdout.write('\n');
        if (f.stats) {
          io.stderr.write(
            `[${r.promptTokens} prompt tokens (${r.reusedTokens} reused), ${r.tokens.length} generated, stop: ${r.stopReason}; ` +
              `prefill ${perSecond(r.promptTokens - r.reusedTokens, r.prefillMs).toFixed(1)} tokens/s, ` +
              `decode ${perSecond(Math.max(0, r.tokens.length - 1), r.decodeMs).toFixed(1)} tokens/s; ${engine.info.description}]\n`,
          );
        }
      }
      return r.stopReason === 'cancelled' ? 130 : 0; // 130: stopped by SIGINT, as shells report it
    } finally {
      await engine.dispose();
    }
  },
};
