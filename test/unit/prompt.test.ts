import assert from 'node:assert/strict';
import { test } from 'node:test';

import type * as contextModule from '../../server/src/completion/context';
import type * as promptModule from '../../server/src/completion/prompt';
import type * as templatesModule from '../../server/src/completion/templates';
import { serverModule } from '../helpers';
import { FAKE_MARKERS, FakeModel } from './fake-model';

const { OpenFilesContextProvider } = serverModule<typeof contextModule>('completion/context');
const { budgetPrefix, budgetSuffix, buildPrompt, PREFIX_LINE_ALIGN } = serverModule<typeof promptModule>('completion/prompt');
const { chooseTemplate, TEMPLATES } = serverModule<typeof templatesModule>('completion/templates');
type FimTemplateId = templatesModule.FimTemplateId;
type ContextProvider = contextModule.ContextProvider;

const ALL_MARKERS = Object.keys(FAKE_MARKERS);
const doc = (text: string, offset = text.indexOf('|')) => ({
  uri: 'file:///a.py', languageId: 'python', text: text.replace('|', ''), offset,
});
const big = { maxPrefixTokens: 10_000, maxSuffixTokens: 10_000, snippetShare: 0 };

test('each template lays out prefix and suffix as its family expects', () => {
  const model = new FakeModel({ markers: ALL_MARKERS });
  const expected: Record<FimTemplateId, string> = {
    'starcoder-psm': '<fim_prefix>P1<fim_suffix>S2<fim_middle>',
    'starcoder-spm': '<fim_prefix><fim_suffix>S2<fim_middle>P1',
    qwen: '<|fim_prefix|>P1<|fim_suffix|>S2<|fim_middle|>',
    codestral: '<s>[SUFFIX]S2[PREFIX]P1',
    codellama: '<s><PRE> P1 <SUF>S2 <MID>',
    deepseek: '<s><｜fim▁begin｜>P1<｜fim▁hole｜>S2<｜fim▁end｜>',
    'prefix-only': '<s>P1',
  };
  for (const [id, layout] of Object.entries(expected)) {
    const p = buildPrompt(model, TEMPLATES[id as FimTemplateId], doc('P1|S2'), big);
    assert.equal(model.show(p.ids), layout, id);
  }
});

test('template detection from the vocabulary, SPM only when declared, setting overrides when possible', () => {
  const vocab = (names: string[], fimModes?: string[]) => ({ markers: new Map(names.map((n) => [n, FAKE_MARKERS[n]])), fimModes });
  assert.equal(chooseTemplate('auto', vocab(['<fim_prefix>', '<fim_suffix>', '<fim_middle>'], ['psm', 'spm'])).template.id, 'starcoder-spm');
  assert.equal(chooseTemplate('auto', vocab(['<fim_prefix>', '<fim_suffix>', '<fim_middle>'])).template.id, 'starcoder-psm');
  assert.equal(chooseTemplate('auto', vocab(['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>'])).template.id, 'qwen');
  assert.equal(chooseTemplate('auto', vocab(['[SUFFIX]', '[PREFIX]'])).template.id, 'codestral');
  assert.equal(chooseTemplate('auto', vocab(['<PRE>', '<SUF>', '<MID>'])).template.id, 'codellama');
  assert.equal(chooseTemplate('auto', vocab(['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'])).template.id, 'deepseek');
  assert.equal(chooseTemplate('auto', vocab(['<s>', '</s>'])).template.id, 'prefix-only');
  // A setting the vocabulary supports wins; one it does not falls back to detection and says why.
  const star = vocab(['<fim_prefix>', '<fim_suffix>', '<fim_middle>'], ['psm', 'spm']);
  assert.equal(chooseTemplate('starcoder-psm', star).template.id, 'starcoder-psm');
  assert.equal(chooseTemplate('prefix-only', star).template.id, 'prefix-only');
  const fallback = chooseTemplate('qwen', star);
  assert.equal(fallback.template.id, 'starcoder-spm');
  assert.match(fallback.reason, /needs <\|fim_prefix\|>/);
});

test('prefix-only leaves the suffix out; PSM and SPM carry the same pieces', () => {
  const model = new FakeModel();
  const d = doc('def f(x):\n    |\nprint(f(1))\n');
  const psm = buildPrompt(model, TEMPLATES['starcoder-psm'], d, big);
  const spm = buildPrompt(model, TEMPLATES['starcoder-spm'], d, big);
  assert.equal(psm.ids.length, spm.ids.length);
  assert.deepEqual([...psm.ids].sort(), [...spm.ids].sort());
  const only = buildPrompt(model, TEMPLATES['prefix-only'], d, big);
  assert.equal(model.show(only.ids), '<s>def f(x):\n    ');
  assert.equal(only.suffixTokens, 0);
});

test('SPM: typing at the cursor only changes the end of the prompt (KV cache reuse)', () => {
  const model = new FakeModel();
  const text = 'import os\n\ndef main():\n    pri|\n\nmain()\n';
  const a = buildPrompt(model, TEMPLATES['starcoder-spm'], doc(text), big);
  const b = buildPrompt(model, TEMPLATES['starcoder-spm'], doc(text.replace('pri|', 'prin|')), big);
  assert.deepEqual(b.ids.slice(0, a.ids.length), a.ids);
  assert.equal(b.ids.length, a.ids.length + 1);
  // PSM puts the suffix after the prefix: the same keystroke changes the prompt in its middle.
  const c = buildPrompt(model, TEMPLATES['starcoder-psm'], doc(text), big);
  const d2 = buildPrompt(model, TEMPLATES['starcoder-psm'], doc(text.replace('pri|', 'prin|')), big);
  let common = 0;
  while (c.ids[common] === d2.ids[common]) common++;
  assert.ok(common < c.ids.length - 5);
});

test('prefix budget keeps whole lines from an aligned start line', () => {
  const model = new FakeModel();
  const lines = Array.from({ length: 100 }, (_, i) => `line${String(i).padStart(3, '0')}`); // 7 chars + \n = 8 tokens
  const before = lines.join('\n') + '\nx';
  const r = budgetPrefix(model, before, 200);
  assert.ok(r.ids.length <= 200);
  assert.equal(r.startLine % PREFIX_LINE_ALIGN, 0);
  assert.ok(r.cut);
  assert.ok(r.text.startsWith(lines[r.startLine] + '\n'));
  assert.ok(r.text.endsWith('line099\nx'));
  // Tightest fit would start at line 76 (24 lines + "x" = 193 tokens); aligned forward: 80.
  assert.equal(r.startLine, 80);
  // Typing more on the last line keeps the same start until the budget forces the next aligned step.
  assert.equal(budgetPrefix(model, before + 'yz', 200).startLine, 80);
  // Everything fits: no cut.
  const all = budgetPrefix(model, 'a\nb\nc', 100);
  assert.deepEqual([all.startLine, all.cut, all.text], [0, false, 'a\nb\nc']);
  // One line longer than the budget: cut at the token level, the cursor end kept.
  const long = budgetPrefix(model, 'x'.repeat(50) + 'END', 10);
  assert.equal(long.ids.length, 10);
  assert.equal(model.decode(long.ids), 'xxxxxxxEND');
});

test('suffix budget keeps whole lines from the cursor, cut at the token level if one line is too long', () => {
  const model = new FakeModel();
  const r = budgetSuffix(model, ')\nline1\nline2\nline3\n', 12);
  assert.equal(r.text, ')\nline1\n');
  assert.ok(r.cut);
  assert.ok(r.ids.length <= 12);
  const all = budgetSuffix(model, 'ab\ncd', 100);
  assert.deepEqual([all.text, all.cut], ['ab\ncd', false]);
  const long = budgetSuffix(model, 'y'.repeat(40), 8);
  assert.equal(model.decode(long.ids), 'yyyyyyyy');
  assert.equal(budgetSuffix(model, 'abc', 0).ids.length, 0);
});

test('snippets from other open files go before the prefix, as comments, within their share of the budget', () => {
  const model = new FakeModel();
  const other = { uri: 'file:///util.py', languageId: 'python', getText: () => 'def parse_config(path):\n    return load_yaml(path)\n' };
  const js = { uri: 'file:///x.js', languageId: 'javascript', getText: () => 'function parse_config(path) { return load_yaml(path) }' };
  const provider = new OpenFilesContextProvider({ all: () => [other, js] }, (u) => u.replace('file:///', ''));
  const d = doc('cfg = parse_config(path)\ndata = load_yaml(|');
  const p = buildPrompt(model, TEMPLATES['starcoder-spm'], d, { maxPrefixTokens: 400, maxSuffixTokens: 100, snippetShare: 0.5 }, [provider]);
  const shown = model.show(p.ids);
  assert.ok(p.snippetTokens > 0);
  assert.ok(p.snippetTokens <= 200);
  assert.ok(shown.includes('<fim_middle># Path: util.py\n# def parse_config(path):\n#     return load_yaml(path)\n\ncfg = parse_config'), shown);
  assert.ok(!shown.includes('function'), 'other languages are not used');
  // Too small a share: the snippet is dropped rather than cut.
  const tight = buildPrompt(model, TEMPLATES['starcoder-spm'], d, { maxPrefixTokens: 100, maxSuffixTokens: 100, snippetShare: 0.2 }, [provider]);
  assert.equal(tight.snippetTokens, 0);
  // Unrelated code scores under the threshold.
  const unrelated: ContextProvider = new OpenFilesContextProvider({ all: () => [{ uri: 'file:///z.py', languageId: 'python', getText: () => 'class Vector:\n    pass\n' }] });
  assert.equal(unrelated.snippets(d, 1000).length, 0);
});

test('qwen: snippets become <|file_sep|> sections in front of the whole prompt, then the current file header', () => {
  const qwenMarkers = ['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>', '<|endoftext|>'];
  const other = { uri: 'file:///w/util.py', languageId: 'python', getText: () => 'def parse_config(path):\n    return load_yaml(path)\n' };
  const provider = new OpenFilesContextProvider({ all: () => [other] }, (u) => u.replace('file:///w/', ''));
  const d = { ...doc('cfg = parse_config(path)\ndata = load_yaml(|)\n'), uri: 'file:///w/src/main%20app.py' };
  const budget = { maxPrefixTokens: 400, maxSuffixTokens: 100, snippetShare: 0.5 };
  const withSep = new FakeModel({ markers: [...qwenMarkers, '<|file_sep|>'] });
  const p = buildPrompt(withSep, TEMPLATES.qwen, d, budget, [provider]);
  assert.equal(
    withSep.show(p.ids),
    '<|file_sep|>util.py\ndef parse_config(path):\n    return load_yaml(path)\n<|file_sep|>main app.py\n' +
      '<|fim_prefix|>cfg = parse_config(path)\ndata = load_yaml(<|fim_suffix|>)\n<|fim_middle|>',
  );
  assert.equal(p.snippetTokens, p.ids.indexOf(FAKE_MARKERS['<|fim_prefix|>']));
  // Without the token in the vocabulary: comments inside the prefix, as for other families.
  const noSep = new FakeModel({ markers: qwenMarkers });
  const c = noSep.show(buildPrompt(noSep, TEMPLATES.qwen, d, budget, [provider]).ids);
  assert.ok(c.startsWith('<|fim_prefix|># Path: util.py\n# def parse_config(path):'), c);
  // No snippets: no sections, not even the current file's header.
  const none = buildPrompt(withSep, TEMPLATES.qwen, d, { ...budget, snippetShare: 0 }, [provider]);
  assert.ok(withSep.show(none.ids).startsWith('<|fim_prefix|>cfg'));
});

test('recently closed documents keep serving as context, newest first, bounded', () => {
  const { RecentDocuments, combinedSources } = serverModule<typeof contextModule>('completion/context');
  const recent = new RecentDocuments(2);
  const mk = (uri: string, text: string) => ({ uri, languageId: 'python', getText: () => text });
  recent.remember(mk('file:///a.py', 'A'));
  recent.remember(mk('file:///b.py', 'B'));
  recent.remember(mk('file:///c.py', 'C'));
  assert.deepEqual(recent.all().map((d) => d.getText()), ['C', 'B']);
  recent.forget('file:///c.py'); // reopened
  assert.deepEqual(recent.all().map((d) => d.uri), ['file:///b.py']);
  const open = { all: () => [mk('file:///o.py', 'def parse_config(path):\n    return load_yaml(path)\n')] };
  const provider = new OpenFilesContextProvider(combinedSources(open, recent));
  recent.remember(mk('file:///closed.py', 'def load_yaml(path):\n    return parse_config(path)\n'));
  const labels = provider.snippets(doc('cfg = parse_config(path)\ndata = load_yaml(|'), 1000).map((s) => s.label).sort();
  assert.deepEqual(labels, ['file:///closed.py', 'file:///o.py']);
});
