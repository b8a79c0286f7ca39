/**
 * Recipe files (`*.mixq.toml`) over the real language server, no model loaded: the published diagnostics (unknown
 * key with did-you-mean, wrong type, invalid group size, value below the minimum, missing and non-Mixtral source,
 * existing output, syntax error), key / value / table completion, hover and the CodeLens, all at exact positions.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';

import {
  CodeLensRequest,
  CompletionRequest,
  HoverRequest,
  PublishDiagnosticsNotification,
  type CompletionItem,
  type CompletionList,
  type Diagnostic,
  type MarkupContent,
  type PublishDiagnosticsParams,
  type Range,
  type TextEdit,
} from 'vscode-languageserver-protocol/node';

import { tinyModelDir } from '../helpers';
import { TestServer } from './lsp-client';

const r = (l0: number, c0: number, l1: number, c1: number): Range => ({ start: { line: l0, character: c0 }, end: { line: l1, character: c1 } });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mixq-recipe-'));
const src = JSON.stringify(tinyModelDir);

describe('recipe language features over JSON-RPC', () => {
  let server: TestServer;
  const published = new Map<string, Diagnostic[]>();
  const waitDiagnostics = async (uri: string): Promise<Diagnostic[]> => {
    for (let i = 0; i < 500 && !published.has(uri); i++) await new Promise((res) => setTimeout(res, 10));
    const d = published.get(uri);
    assert.ok(d, `no diagnostics published for ${uri}`);
    return d;
  };
  const openRecipe = async (name: string, text: string): Promise<string> => {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, text);
    const uri = pathToFileURL(file).toString();
    published.delete(uri);
    await server.open(uri, text, 'mixq-recipe');
    return uri;
  };
  const complete = async (uri: string, line: number, character: number): Promise<CompletionItem[]> => {
    const a = (await server.conn.sendRequest(CompletionRequest.type, { textDocument: { uri }, position: { line, character } })) as CompletionItem[] | CompletionList | null;
    return a === null ? [] : Array.isArray(a) ? a : a.items;
  };
  const brief = (d: Diagnostic[]): [Range, number | undefined, string][] => d.map((x) => [x.range, x.severity, x.message as string]);

  before(async () => {
    server = await TestServer.start({ modelPath: '' });
    server.conn.onNotification(PublishDiagnosticsNotification.method, (p: PublishDiagnosticsParams) => {
      published.set(p.uri, p.diagnostics);
    });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('diagnostics: unknown key (did you mean), misplaced key, wrong type, group size, minimum — exact ranges', async () => {
    const text = [
      `source = ${src}`,          // 0
      'output = "out-a"',         // 1
      'devise = "cpu"',           // 2
      '[quant]',                  // 3
      'method = "awq"',           // 4
      'group_size = 96',          // 5
      'zero_point = "yes"  # no', // 6
      'grup-size = 64',           // 7
      'samples = 8',              // 8
      '[calibration]',            // 9
      'samples = 0',              // 10
      '[quantize]',               // 11
      '',
    ].join('\n');
    const uri = await openRecipe('broken.mixq.toml', text);
    assert.deepEqual(brief(await waitDiagnostics(uri)), [
      [r(2, 0, 2, 6), 1, 'unknown key "devise" at the top level; did you mean "device"?'],
      [r(5, 13, 5, 15), 1, 'quant.group_size: 96 is not a valid group size (32, 64 or 128)'],
      [r(6, 13, 6, 18), 1, 'quant.zero_point: expected true or false, got a string'],
      [r(7, 0, 7, 9), 1, 'unknown key "grup-size" in [quant]; did you mean "group_size"?'],
      [r(8, 0, 8, 7), 1, 'unknown key "samples" in [quant]: it belongs in [calibration]'],
      [r(10, 10, 10, 11), 1, 'calibration.samples: 0 is below the minimum 1'],
      [r(11, 1, 11, 9), 1, 'unknown table [quantize]; did you mean [quant]?'],
    ]);
    const lenses = await server.conn.sendRequest(CodeLensRequest.type, { textDocument: { uri } });
    assert.deepEqual(lenses, [{ range: r(0, 0, 0, 0), command: { title: 'Quantize with this recipe (fix 7 errors first)', command: 'mixq.quantizeWithRecipe', arguments: [uri] } }]);
  });

  test('diagnostics: missing source, non-Mixtral source, existing output, missing keys, a syntax error', async () => {
    const llama = path.join(tmp, 'llama');
    fs.mkdirSync(llama);
    fs.writeFileSync(path.join(llama, 'config.json'), '{"model_type": "llama"}');
    fs.mkdirSync(path.join(tmp, 'taken'));
    fs.writeFileSync(path.join(tmp, 'taken', 'config.json'), '{}');

    const missing = await openRecipe('missing.mixq.toml', 'source = "no-such-model"\noutput = "out-b"\n');
    assert.deepEqual(brief(await waitDiagnostics(missing)), [[r(0, 9, 0, 24), 1, `source: ${path.join(tmp, 'no-such-model')} not found`]]);

    const notMixtral = await openRecipe('llama.mixq.toml', 'source = "llama"  # a dense Llama\noutput = "taken"\n');
    assert.deepEqual(brief(await waitDiagnostics(notMixtral)), [
      [r(0, 9, 0, 16), 1, `source: ${llama} is not a Mixtral or Qwen3-MoE checkpoint (model_type "llama"; MixQ quantizes "mixtral" and "qwen3_moe")`],
      [r(1, 9, 1, 16), 1, `output: ${path.join(tmp, 'taken')} already exists; set overwrite = true to replace it (after the new model is complete)`],
    ]);

    const overwrite = await openRecipe('overwrite.mixq.toml', `source = ${src}\noutput = "taken"\noverwrite = true\n`);
    assert.deepEqual(brief(await waitDiagnostics(overwrite)), [
      [r(1, 9, 1, 16), 2, `output: ${path.join(tmp, 'taken')} exists and will be replaced when the job completes (overwrite = true)`],
    ]);

    const empty = await openRecipe('empty.mixq.toml', '[quant]\nmethod = "rtn"\n');
    assert.deepEqual(brief(await waitDiagnostics(empty)), [
      [r(0, 0, 0, 0), 1, 'missing required key "source" (the 16-bit Mixtral folder to quantize)'],
      [r(0, 0, 0, 0), 1, 'missing required key "output" (the folder to write)'],
    ]);

    const syntax = await openRecipe('syntax.mixq.toml', `source = ${src}\noutput = "out-c"\n[quant]\nmethod = awq\n`);
    const d = await waitDiagnostics(syntax);
    assert.equal(d.length, 1);
    assert.deepEqual(d[0].range.start, { line: 3, character: 9 });
    assert.match(d[0].message as string, /^TOML syntax error: /);

    const ok = await openRecipe('ok.mixq.toml', `source = ${src}\noutput = "out-d"\n[quant]\nmethod = "rtn"\nrounding = "nearest"\n`);
    assert.deepEqual(brief(await waitDiagnostics(ok)), [[r(4, 0, 4, 8), 2, 'quant.rounding applies to method "awq" only; ignored with "rtn"']]);
    const lenses = await server.conn.sendRequest(CodeLensRequest.type, { textDocument: { uri: ok } });
    assert.equal(lenses?.[0].command?.title, 'Quantize with this recipe');
  });

  test('completion: keys of the line\'s table not yet set, enum values after =, tables after [', async () => {
    const text = [
      `source = ${src}`,  // 0
      'output = "out-e"', // 1
      '',                 // 2
      '[quant]',          // 3
      'method = "r',      // 4
      'gr',               // 5
      'zero_point = ',    // 6
      '[ca',              // 7
      '',
    ].join('\n');
    const uri = await openRecipe('complete.mixq.toml', text);

    const top = await complete(uri, 2, 0);
    assert.deepEqual(top.map((i) => i.label), ['overwrite', 'modules_to_not_convert', 'device', '[calibration]']);
    assert.deepEqual(top[0].textEdit, { range: r(2, 0, 2, 0), newText: 'overwrite = ' });

    const keys = await complete(uri, 5, 2);
    assert.deepEqual(keys.map((i) => i.label), ['bits', 'group_size', 'rounding', 'propagate', '[calibration]']);
    const groupSize = keys.find((i) => i.label === 'group_size')!;
    assert.deepEqual(groupSize.textEdit, { range: r(5, 0, 5, 2), newText: 'group_size = ' });
    assert.equal(groupSize.detail, 'Input rows sharing one scale (and zero point): 32, 64 or 128.');

    const methods = await complete(uri, 4, 11);
    assert.deepEqual(methods.map((i) => [i.label, (i.textEdit as TextEdit).range]), [['"awq"', r(4, 9, 4, 11)], ['"rtn"', r(4, 9, 4, 11)]]);
    assert.equal(methods[0].detail, 'default');

    const bools = await complete(uri, 6, 13);
    assert.deepEqual(bools.map((i) => [i.label, (i.textEdit as TextEdit).range]), [['true', r(6, 13, 6, 13)], ['false', r(6, 13, 6, 13)]]);

    const tables = await complete(uri, 7, 3);
    assert.deepEqual(tables.map((i) => [i.label, (i.textEdit as TextEdit).range]), [['calibration', r(7, 1, 7, 3)], ['quant', r(7, 1, 7, 3)]]);

    // Other documents get nothing from the recipe provider.
    await server.open('file:///work/x.py', 'import os\n', 'python');
    assert.deepEqual(await complete('file:///work/x.py', 0, 3), []);
  });

  test('hover: documentation of a key (on its name or value) and of a table, with its range', async () => {
    const uri = await openRecipe('hover.mixq.toml', `source = ${src}\noutput = "out-f"\n[quant]\n  group_size = 64   # smaller groups\n`);
    const onKey = await server.conn.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 3, character: 5 } });
    assert.deepEqual(onKey?.range, r(3, 2, 3, 12));
    const md = (onKey?.contents as MarkupContent).value;
    assert.match(md, /^\*\*quant\.group_size\*\* — integer\n/);
    assert.match(md, /Values: `32`, `64`, `128`/);
    assert.match(md, /Default: `128`/);

    const onValue = await server.conn.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 3, character: 16 } });
    assert.deepEqual(onValue?.range, r(3, 15, 3, 17));

    const onTable = await server.conn.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 2, character: 3 } });
    assert.deepEqual(onTable?.range, r(2, 1, 2, 6));
    assert.match((onTable?.contents as MarkupContent).value, /^\*\*\[quant\]\*\*/);

    const onComment = await server.conn.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 3, character: 25 } });
    assert.equal(onComment, null);
    // Every key has documentation.
    const keys = ['source', 'output', 'overwrite', 'modules_to_not_convert', 'device'];
    const all = await openRecipe('all.mixq.toml', keys.map((k) => `${k} = 1`).join('\n') + '\n');
    for (let line = 0; line < keys.length; line++) {
      const h = await server.conn.sendRequest(HoverRequest.type, { textDocument: { uri: all }, position: { line, character: 1 } });
      assert.match((h?.contents as MarkupContent).value, new RegExp(`^\\*\\*${keys[line]}\\*\\*`));
    }
  });
});
