/**
 * `mixq complete`: one inline completion through the editor's pipeline — the same FIM prompt (template, token
 * budgets), the engine's greedy streamed generation stopped as soon as post-processing has decided, and the same
 * post-processing (block end, repetition and bracket filters, indentation) — printed with the suggestion in place.
 *
 * The document comes from --file (or --text) with the cursor at the first CURSOR_MARKER, or at its end without one.
 */
import * as path from 'node:path';

import { EngineCompletionModel } from '../completion/model';
import { CompletionService, type ServiceSettings } from '../completion/service';
import { Engine } from '../engine';
import { MAX_JSON_FILE_BYTES, readRegularFileSync } from '../files';
import { defaultServerSettings, type FimTemplateSetting } from '#protocol';
import { parseFlags, UsageError } from './args';
import type { CliIo, Command } from './command';
import { engineFlags, jsonLine } from './common';

export const CURSOR_MARKER = '<cursor>';

const LANGUAGE_BY_EXT: Record<string, string> = {
  '.py': 'python', '.js': 'javascript', '.ts': 'typescript', '.rs': 'rust', '.go': 'go', '.c': 'c', '.cpp': 'cpp',
  '.java': 'java', '.rb': 'ruby', '.sh': 'shellscript',
};

const flags = {
  model: { type: 'string', help: 'model folder (config.json, *.safetensors, tokenizer.json)', valueName: 'dir', required: true },
  file: { type: 'string', help: `the document; the cursor is at its first ${CURSOR_MARKER} (else at its end)`, valueName: 'file' },
  text: { type: 'string', help: `the document as text instead of --file (cursor as for --file)`, valueName: 'text' },
  language: { type: 'string', help: 'language id (default: from the file extension, else python)', valueName: 'id' },
  maxTokens: { type: 'int', help: `tokens to generate at most (default ${defaultServerSettings.maxTokens}; post-processing usually stops earlier)`, min: 1, max: 1024 },
  fimTemplate: { type: 'string', help: 'FIM layout as the mixq.fimTemplate setting (default auto)', valueName: 'name' },
  json: { type: 'boolean', help: 'print one JSON object (suggestion, timing, template) instead of the document' },
  ...engineFlags,
} as const;

export const completeCommand: Command = {
  name: 'complete',
  summary: 'one inline completion at a cursor, built, generated and post-processed exactly as in the editor',
  usage: `--model DIR (--file F | --text T) [--language ID] [--max-tokens N] [--json]   (cursor: ${CURSOR_MARKER} in the text)`,
  flags,
  async run(argv: readonly string[], io: CliIo): Promise<number> {
    const f = parseFlags(argv, flags);
    if ((f.file === undefined) === (f.text === undefined)) throw new UsageError('give exactly one of --file, --text');
    let source: string;
    if (f.file !== undefined) {
      try {
        source = readRegularFileSync(f.file, MAX_JSON_FILE_BYTES, 'a source file');
      } catch (e) {
        throw new Error(`cannot read the document: ${(e as Error).message}`);
      }
    } else {
      source = f.text!;
    }
    const marker = source.indexOf(CURSOR_MARKER);
    const offset = marker >= 0 ? marker : source.length;
    const text = marker >= 0 ? source.slice(0, marker) + source.slice(marker + CURSOR_MARKER.length) : source;
    const languageId = f.language ?? (f.file ? LANGUAGE_BY_EXT[path.extname(f.file)] : undefined) ?? 'python';

    const engine = await Engine.load(f.model!, { device: f.device, threads: f.threads, contextLength: f.contextLength });
    const model = new EngineCompletionModel(engine);
    const settings: ServiceSettings = {
      ...defaultServerSettings,
      maxTokens: f.maxTokens ?? defaultServerSettings.maxTokens,
      fimTemplate: (f.fimTemplate ?? 'auto') as FimTemplateSetting,
      debounceMs: 0,
      timeCapMs: 60_000, // a command-line run waits for the model, the editor shows what it has by 3 s
      contextFromOpenFiles: false,
      prefetch: false,
    };
    const service = new CompletionService(model, settings);
    try {
      const uri = f.file ? `file://${path.resolve(f.file)}` : 'untitled:text';
      const outcome = await service.complete({ uri, languageId, text, offset, version: 1, invoked: true, currentVersion: () => 1 });
      if (outcome.kind === 'cancelled') throw new Error(`the completion was cancelled (${outcome.reason})`);
      if (outcome.kind === 'error') throw new Error(outcome.message);
      const suggestion = outcome.kind === 'suggestion' ? outcome.text : '';
      const t = outcome.timing;
      if (f.json) {
        io.stdout.write(jsonLine({
          suggestion, dropped: outcome.kind === 'empty' ? outcome.reason : undefined, template: service.template.id,
          language: languageId, prompt_tokens: t.promptTokens, generated_tokens: t.generatedTokens, stop: t.stop,
          total_ms: t.totalMs, model: engine.modelDir, device: engine.info.device,
        }));
        return 0;
      }
      const colour = (process.stdout as { isTTY?: boolean }).isTTY && io.stdout === process.stdout;
      const ghost = colour ? `\x1b[2;3m${suggestion}\x1b[0m` : `${suggestion}`;
      const shown = text.slice(0, offset) + (colour ? ghost : `⟦${suggestion}⟧`) + text.slice(offset);
      io.stdout.write(shown.endsWith('\n') ? shown : shown + '\n');
      io.stderr.write(
        `[${path.basename(engine.modelDir)} on ${engine.info.device}, ${service.template.id} prompt of ${t.promptTokens} tokens; ` +
          `${t.generatedTokens} generated, stop: ${t.stop}; ${Math.round(t.totalMs)} ms` +
          (suggestion ? `; the suggestion is ${colour ? 'dimmed' : 'between ⟦ ⟧'}` : `; no suggestion (${outcome.kind === 'empty' ? outcome.reason : ''})`) + ']\n',
      );
      return 0;
    } finally {
      await service.shutdown();
      await engine.dispose();
    }
  },
};
