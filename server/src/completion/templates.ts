/**
 * Fill-in-the-middle prompt templates by model family, and the choice among them.
 *
 * A template is a list of segments assembled at the token level: special markers are looked up by name in the
 * vocabulary, the prefix/suffix pieces (and literals) are encoded separately without special tokens. This is how
 * FIM models are trained, and it keeps each piece's tokenization independent of its neighbours.
 *
 * Layouts (P = prefix, S = suffix):
 *   starcoder-psm  <fim_prefix>P<fim_suffix>S<fim_middle>
 *   starcoder-spm  <fim_prefix><fim_suffix>S<fim_middle>P       (the prompt grows at its end while typing)
 *   qwen           <|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>
 *                  (context from other files in front, as Qwen's repo-level sections:
 *                   <|file_sep|>path\ncode\n … <|file_sep|>current path\n<|fim_prefix|>…)
 *   codestral      BOS [SUFFIX]S[PREFIX]P
 *   codellama      BOS <PRE> P <SUF>S <MID>
 *   deepseek       BOS <｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>
 *   prefix-only    BOS P                                          (models without FIM tokens, e.g. Mixtral base)
 */
import type { FimTemplateSetting } from '#protocol';

export type FimTemplateId = Exclude<FimTemplateSetting, 'auto'>;

export type Segment =
  | { kind: 'bos' }
  | { kind: 'special'; token: string }
  | { kind: 'literal'; text: string }
  | { kind: 'prefix' }
  | { kind: 'suffix' };

export interface FimTemplate {
  id: FimTemplateId;
  segments: Segment[];
  /** Marker tokens that must be in the vocabulary for this template. */
  markers: string[];
  /** Tokens that end the middle (looked up by name; missing ones are ignored). EOS always stops. */
  stopTokens: string[];
  /** True when the suffix is not part of the prompt. */
  prefixOnly: boolean;
  /** True when the prefix is the last piece, so typing only appends tokens (best KV-cache reuse). */
  growsAtEnd: boolean;
  /**
   * A token the model was trained to read other files after (`<|file_sep|>path\ncode`): when the vocabulary has
   * it, snippets go in front of the whole prompt as such sections instead of comments inside the prefix.
   */
  fileSeparator?: string;
}

const special = (token: string): Segment => ({ kind: 'special', token });
const PREFIX: Segment = { kind: 'prefix' };
const SUFFIX: Segment = { kind: 'suffix' };
const BOS: Segment = { kind: 'bos' };

const STARCODER_MARKERS = ['<fim_prefix>', '<fim_suffix>', '<fim_middle>'];
const STARCODER_STOPS = ['<fim_prefix>', '<fim_suffix>', '<fim_middle>', '<|endoftext|>', '<file_sep>'];
const QWEN_MARKERS = ['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>'];
const DEEPSEEK_MARKERS = ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'];
const CODELLAMA_MARKERS = ['<PRE>', '<SUF>', '<MID>'];
const CODESTRAL_MARKERS = ['[SUFFIX]', '[PREFIX]'];

export const TEMPLATES: Record<FimTemplateId, FimTemplate> = {
  'starcoder-psm': {
    id: 'starcoder-psm',
    segments: [special('<fim_prefix>'), PREFIX, special('<fim_suffix>'), SUFFIX, special('<fim_middle>')],
    markers: STARCODER_MARKERS,
    stopTokens: STARCODER_STOPS,
    prefixOnly: false,
    growsAtEnd: false,
  },
  'starcoder-spm': {
    id: 'starcoder-spm',
    segments: [special('<fim_prefix>'), special('<fim_suffix>'), SUFFIX, special('<fim_middle>'), PREFIX],
    markers: STARCODER_MARKERS,
    stopTokens: STARCODER_STOPS,
    prefixOnly: false,
    growsAtEnd: true,
  },
  qwen: {
    id: 'qwen',
    segments: [special('<|fim_prefix|>'), PREFIX, special('<|fim_suffix|>'), SUFFIX, special('<|fim_middle|>')],
    markers: QWEN_MARKERS,
    stopTokens: [...QWEN_MARKERS, '<|endoftext|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>', '<|im_start|>', '<|im_end|>'],
    prefixOnly: false,
    growsAtEnd: false,
    fileSeparator: '<|file_sep|>',
  },
  codestral: {
    id: 'codestral',
    segments: [BOS, special('[SUFFIX]'), SUFFIX, special('[PREFIX]'), PREFIX],
    markers: CODESTRAL_MARKERS,
    stopTokens: [...CODESTRAL_MARKERS, '[MIDDLE]'],
    prefixOnly: false,
    growsAtEnd: true,
  },
  codellama: {
    id: 'codellama',
    segments: [BOS, special('<PRE>'), { kind: 'literal', text: ' ' }, PREFIX, { kind: 'literal', text: ' ' },
      special('<SUF>'), SUFFIX, { kind: 'literal', text: ' ' }, special('<MID>')],
    markers: CODELLAMA_MARKERS,
    stopTokens: [...CODELLAMA_MARKERS, '<EOT>'],
    prefixOnly: false,
    growsAtEnd: false,
  },
  deepseek: {
    id: 'deepseek',
    segments: [BOS, special('<｜fim▁begin｜>'), PREFIX, special('<｜fim▁hole｜>'), SUFFIX, special('<｜fim▁end｜>')],
    markers: DEEPSEEK_MARKERS,
    stopTokens: [...DEEPSEEK_MARKERS, '<|EOT|>', '<｜end▁of▁sentence｜>'],
    prefixOnly: false,
    growsAtEnd: false,
  },
  'prefix-only': {
    id: 'prefix-only',
    segments: [BOS, PREFIX],
    markers: [],
    stopTokens: [],
    prefixOnly: true,
    growsAtEnd: true,
  },
};

/** Every marker/stop name any template looks up: the vocabulary is scanned for these once per model. */
export const KNOWN_MARKER_NAMES: ReadonlySet<string> = new Set(
  Object.values(TEMPLATES).flatMap((t) => [...t.markers, ...t.stopTokens]),
);

export interface VocabularyInfo {
  /** Id of each known marker name present in the vocabulary. */
  markers: ReadonlyMap<string, number>;
  /** FIM layouts the model declares (tokenizer_config.json `fim.modes`), if any. */
  fimModes?: readonly string[];
}

export interface TemplateChoice {
  template: FimTemplate;
  /** Why: "setting", "tokenizer: <fim_prefix>…", or the reason a requested template could not be used. */
  reason: string;
}

function hasAll(vocab: VocabularyInfo, names: string[]): boolean {
  return names.every((n) => vocab.markers.has(n));
}

/**
 * Picks the template: the setting when it names one whose markers the vocabulary has, else detection from the
 * markers present. For StarCoder-style markers SPM is preferred when the model declares it (its prompt grows at the
 * end, so the KV cache is reused while typing), else PSM, the layout every StarCoder-style model knows.
 */
export function chooseTemplate(setting: FimTemplateSetting, vocab: VocabularyInfo): TemplateChoice {
  if (setting !== 'auto') {
    const wanted = TEMPLATES[setting];
    if (hasAll(vocab, wanted.markers)) return { template: wanted, reason: 'setting' };
    const detected = chooseTemplate('auto', vocab);
    return {
      template: detected.template,
      reason: `setting ${setting} needs ${wanted.markers.join(' ')}, not in the vocabulary; ${detected.reason}`,
    };
  }
  if (hasAll(vocab, DEEPSEEK_MARKERS)) return { template: TEMPLATES.deepseek, reason: 'tokenizer: DeepSeek FIM tokens' };
  if (hasAll(vocab, QWEN_MARKERS)) return { template: TEMPLATES.qwen, reason: 'tokenizer: Qwen-coder FIM tokens' };
  if (hasAll(vocab, CODESTRAL_MARKERS)) return { template: TEMPLATES.codestral, reason: 'tokenizer: Codestral FIM tokens' };
  if (hasAll(vocab, CODELLAMA_MARKERS)) return { template: TEMPLATES.codellama, reason: 'tokenizer: CodeLlama FIM tokens' };
  if (hasAll(vocab, STARCODER_MARKERS)) {
    const spm = vocab.fimModes?.includes('spm') ?? false;
    return {
      template: spm ? TEMPLATES['starcoder-spm'] : TEMPLATES['starcoder-psm'],
      reason: spm ? 'tokenizer: StarCoder FIM tokens, SPM declared' : 'tokenizer: StarCoder FIM tokens',
    };
  }
  return { template: TEMPLATES['prefix-only'], reason: 'tokenizer: no FIM tokens' };
}
