/**
 * The keys of a quantization recipe (`*.mixq.toml`), declared once: the parser's checks, the language server's
 * completion and hover, the starter recipe and `mixq quantize --recipe` all read this table.
 *
 *   source = "models/my-mixtral"          # 16-bit Mixtral folder (required)
 *   output = "models/my-mixtral-awq"      # written as OUTPUT.tmp-XXXXXX, renamed when complete (required)
 *   [calibration]  path, samples, seq_len, seed
 *   [quant]        method, bits, group_size, zero_point, rounding, propagate
 *
 * Paths are relative to the recipe's folder.
 */

export type RecipeValueType = 'string' | 'path' | 'integer' | 'boolean' | 'stringArray';

export interface RecipeKey {
  /** '' for top-level keys, else the table name. */
  section: '' | 'calibration' | 'quant';
  name: string;
  type: RecipeValueType;
  /** Allowed values (strings or integers), in the order completion offers them. */
  values?: readonly (string | number)[];
  /** Smallest accepted integer. */
  min?: number;
  required?: boolean;
  /** The value used when the key is absent (undefined: none, e.g. calibration.path = the workspace). */
  default?: string | number | boolean | readonly string[];
  /** Markdown shown on hover; the first sentence is completion's detail. */
  doc: string;
}

export const RECIPE_KEYS: readonly RecipeKey[] = [
  { section: '', name: 'source', type: 'path', required: true, doc: 'The 16-bit (bf16/fp16) Mixtral model folder to quantize: `config.json` with `model_type = "mixtral"`, `tokenizer.json` and `*.safetensors`. Relative to the recipe\'s folder.' },
  { section: '', name: 'output', type: 'path', required: true, doc: 'The folder to write the int4 model to (AutoAWQ GEMM format). It is written as `OUTPUT.tmp-XXXXXX` beside it and renamed when complete, so a cancelled or failed job leaves nothing. Relative to the recipe\'s folder.' },
  { section: '', name: 'overwrite', type: 'boolean', default: false, doc: 'Replace `output` when it already exists. The old folder is removed only after the new one is complete. Default `false`: an existing output is an error.' },
  { section: '', name: 'modules_to_not_convert', type: 'stringArray', default: ['gate'], values: ['gate'], doc: 'Modules kept in 16 bits. The MoE router (`gate`) is always kept (AutoAWQ\'s Mixtral layout); no other module can be kept yet.' },
  { section: '', name: 'device', type: 'string', values: ['auto', 'cpu', 'cuda'], default: 'auto', doc: 'Where the quantizer runs: `auto`, `cpu` or `cuda`. This build quantizes on the CPU only (`auto` = `cpu`).' },
  { section: 'calibration', name: 'path', type: 'path', doc: 'AWQ calibration data: a `.jsonl` file of `{"text": ...}` objects, a folder of source files, or a text file. Default: the workspace (the recipe\'s folder from the CLI). Relative to the recipe\'s folder.' },
  { section: 'calibration', name: 'samples', type: 'integer', min: 1, default: 128, doc: 'Calibration samples (sequences) drawn from the data. Default `128`. Fewer samples use less memory and time.' },
  { section: 'calibration', name: 'seq_len', type: 'integer', min: 2, default: 512, doc: 'Tokens per calibration sample. Default `512`.' },
  { section: 'calibration', name: 'seed', type: 'integer', min: 0, default: 0, doc: 'Seed of the calibration sampling: the same data and seed give the same samples. Default `0`.' },
  { section: 'quant', name: 'method', type: 'string', values: ['awq', 'rtn'], default: 'awq', doc: 'Quantization method: `awq` (activation-aware scales searched on the calibration data) or `rtn` (round to nearest, no calibration; seconds instead of hours). Default `awq`.' },
  { section: 'quant', name: 'bits', type: 'integer', values: [4], default: 4, doc: 'Bits per weight. Only `4` (AutoAWQ GEMM int4).' },
  { section: 'quant', name: 'group_size', type: 'integer', values: [32, 64, 128], default: 128, doc: 'Input rows sharing one scale (and zero point): `32`, `64` or `128`. Default `128`; smaller groups are more accurate and larger.' },
  { section: 'quant', name: 'zero_point', type: 'boolean', default: true, doc: 'Asymmetric int4 with a zero point per group (`true`, the default) or symmetric int4 (`false`, zero point fixed at 8).' },
  { section: 'quant', name: 'rounding', type: 'string', values: ['gptq', 'nearest'], default: 'gptq', doc: 'AWQ only. How codes are chosen: `gptq` (rounding with error feedback on the calibration inputs, the default) or `nearest` (as AutoAWQ). Same format either way.' },
  { section: 'quant', name: 'propagate', type: 'string', values: ['quantized', 'float'], default: 'quantized', doc: 'AWQ only. The next layer calibrates on this layer\'s `quantized` output (the default) or on the `float` layer\'s output (as AutoAWQ).' },
];

export const RECIPE_SECTIONS: readonly { name: 'calibration' | 'quant'; doc: string }[] = [
  { name: 'calibration', doc: 'Calibration data for AWQ: `path`, `samples`, `seq_len`, `seed`. Ignored by `method = "rtn"`.' },
  { name: 'quant', doc: 'How weights are quantized: `method`, `bits`, `group_size`, `zero_point`, `rounding`, `propagate`.' },
];

export function findKey(section: string, name: string): RecipeKey | undefined {
  return RECIPE_KEYS.find((k) => k.section === section && k.name === name);
}

export function keysOf(section: string): RecipeKey[] {
  return RECIPE_KEYS.filter((k) => k.section === section);
}

/** Hover markdown for a key: its dotted name, type, allowed values, default, doc. */
export function keyMarkdown(k: RecipeKey): string {
  const dotted = k.section ? `${k.section}.${k.name}` : k.name;
  const type = k.type === 'stringArray' ? 'array of strings' : k.type === 'path' ? 'string (path)' : k.type;
  const lines = [`**${dotted}** — ${type}${k.required ? ', required' : ''}`, '', k.doc];
  if (k.values && k.type !== 'stringArray') lines.push('', `Values: ${k.values.map((v) => `\`${JSON.stringify(v)}\``).join(', ')}`);
  if (k.default !== undefined) lines.push('', `Default: \`${JSON.stringify(k.default)}\``);
  return lines.join('\n');
}

/** Levenshtein distance (small strings: key names). */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}

/** The closest known name within a distance of max(2, a third of its length), or one it extends (`quantize` → `quant`). */
export function didYouMean(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const lower = name.toLowerCase();
  const extended = candidates.find((c) => c.length >= 4 && lower.startsWith(c));
  if (extended) return extended;
  for (const c of candidates) {
    const d = editDistance(lower, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}
