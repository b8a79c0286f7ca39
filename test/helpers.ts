// Paths, fixture loading and the `mixq` runner shared by the Node tests (compiled to out/test/, run by `node --test out/test/`).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The repository root (tests run from out/test/). */
export const repoRoot = path.resolve(__dirname, '..', '..');
/**
 * A compiled server module (out/server/NAME.js). Tests import the server's types from its sources
 * (`import type * as m from '../server/src/NAME'`) and its values through this, because the compiled tests
 * live in out/test/ next to out/server/, not next to server/src/.
 */
export function serverModule<T>(name: string): T {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path.join(repoRoot, 'out', 'server', name)) as T;
}

/** The bundled fixture model. */
export const tinyModelDir = path.join(repoRoot, 'models', 'mixq-tiny-code');
/** The bundled Qwen3-MoE fixture model (byte-level BPE, no BOS, Qwen FIM tokens). */
export const qwenModelDir = path.join(repoRoot, 'models', 'mixq-tiny-qwen3moe');
/** The mixq CLI entry point. */
export const cliPath = path.join(repoRoot, 'bin', 'mixq.js');

/** What one `mixq` process left: its exit status and output. */
export interface MixqRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the repo's `mixq ARGS…` to completion (30 minutes at most). */
export function runMixq(...args: string[]): MixqRun {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 1_800_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The last stdout line of a run that exited 0, parsed as JSON (`--json` output). */
export function lastJsonLine(r: MixqRun): Record<string, unknown> {
  assert.equal(r.code, 0, `exit ${r.code}; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** <repo>/../shared/fixtures, or undefined when absent (then reference tests are skipped). */
export const sharedFixtures: string | undefined = (() => {
  const dir = path.resolve(repoRoot, '..', 'shared', 'fixtures');
  return fs.existsSync(path.join(dir, 'mixq-tiny-code', 'reference', 'reference.json')) ? dir : undefined;
})();

/** node:test `skip` option for tests that need ../shared/fixtures. */
export const needsFixtures: string | false = sharedFixtures ? false : 'skipped: ../shared/fixtures not found';

export interface ReferencePrompt {
  name: string;
  input_ids: number[];
  text: string;
  suffix: string | null;
  argmax: number[];
  next_token_logprob: number[];
  greedy_32: number[];
  greedy_text: string;
}

export interface Reference {
  model: string;
  prompts: ReferencePrompt[];
  tokenizer_cases: { text: string; ids: number[] }[];
}

/** reference.json of a fixture model (call only when sharedFixtures is set). */
export function loadReference(fixture: 'mixq-tiny-code' | 'mixq-tiny-qwen3moe' = 'mixq-tiny-code'): Reference {
  if (!sharedFixtures) throw new Error('../shared/fixtures not found');
  const file = path.join(sharedFixtures, fixture, 'reference', 'reference.json');
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Reference;
}

/** reference-figures.json entry of the fixture model. */
export function loadReferenceFigures(fixture: 'mixq-tiny-code' | 'mixq-tiny-qwen3moe' = 'mixq-tiny-code'): Record<string, number | string> {
  if (!sharedFixtures) throw new Error('../shared/fixtures not found');
  const all = JSON.parse(fs.readFileSync(path.join(sharedFixtures, 'reference-figures.json'), 'utf8')) as Record<
    string,
    Record<string, number | string>
  >;
  return all[fixture];
}

/**
 * A copy of the fixture model (symlinks) whose tokenizer.json is large and slow to build but tokenizes the same:
 * `merges` extra BPE merges of private-use characters (never in the tests' text, their results not in the
 * vocabulary) and an unused top-level field of short strings up to about `totalMB` MB. Returns the folder and the
 * file's size in bytes.
 */
export function largeTokenizerModel(parent: string, merges: number, totalMB: number): { dir: string; bytes: number } {
  const dir = fs.mkdtempSync(path.join(parent, 'large-tokenizer-'));
  for (const f of fs.readdirSync(tinyModelDir)) {
    if (f !== 'tokenizer.json') fs.symlinkSync(path.join(tinyModelDir, f), path.join(dir, f));
  }
  const tok = JSON.parse(fs.readFileSync(path.join(tinyModelDir, 'tokenizer.json'), 'utf8')) as { model: { merges: string[][] } };
  const pua = (i: number): string => String.fromCharCode(0xe000 + (i % 6400));
  for (let i = 0; i < merges; i++) tok.model.merges.push([pua(i), pua(Math.floor(i / 6400))]);
  const text = JSON.stringify(tok);
  const fill = Math.max(0, Math.floor((totalMB * 1e6 - Buffer.byteLength(text)) / 12));
  const padding = `,"mixq_test_padding":[${Array.from({ length: fill }, (_, i) => `"${(i % 1e9).toString(36).padStart(9, '0')}"`).join(',')}]}`;
  const file = path.join(dir, 'tokenizer.json');
  fs.writeFileSync(file, text.slice(0, -1) + padding);
  return { dir, bytes: fs.statSync(file).size };
}
