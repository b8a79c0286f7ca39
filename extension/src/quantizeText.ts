/**
 * The words of the quantize commands (./quantize), apart from VS Code so unit tests can read them: the starter
 * recipe, progress lines, the default output folder.
 */
import type { QuantizeProgress } from '#protocol';

/** A commented starter recipe (MixQ: New Quantization Recipe); every key of server/src/recipe/schema.ts. */
export function starterRecipe(source = 'models/my-mixtral', output = 'models/my-mixtral-awq'): string {
  return `# MixQ quantization recipe. Run it with the "Quantize with this recipe" lens above, or from a terminal:
#   mixq quantize --recipe <this file>        (flags given beside it override it)
# Paths are relative to this file's folder. Hover a key for its documentation.

source = ${JSON.stringify(source)}   # 16-bit Mixtral folder (config.json, tokenizer.json, *.safetensors)
output = ${JSON.stringify(output)}   # a new folder: written beside it as OUTPUT.tmp-XXXXXX, renamed when complete
overwrite = false   # true: replace an existing output (removed only after the new one is complete)
device = "auto"     # auto | cpu | cuda (this build quantizes on the CPU)

[calibration]       # AWQ only
# path = "data/calibration.jsonl"   # .jsonl of {"text"}, a folder of source files or a text file (default: the workspace)
samples = 128       # sequences
seq_len = 512       # tokens per sequence
seed = 0

[quant]
method = "awq"            # awq | rtn (round to nearest: no calibration, seconds)
bits = 4                  # int4 only
group_size = 128          # 32 | 64 | 128
zero_point = true         # false: symmetric
rounding = "gptq"         # gptq (error feedback) | nearest (as AutoAWQ)
propagate = "quantized"   # quantized | float (as AutoAWQ)
`;
}

export function formatSeconds(s: number): string {
  if (s < 0) return '?';
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** "layer 2 of 4 · search-moe · ETA 3 min" (the notification's message). */
export function progressMessage(p: QuantizeProgress): string {
  if (p.phase === 'calibration') return 'building the calibration set…';
  if (p.phase === 'done') return 'done';
  const eta = p.etaS >= 0 ? ` · ETA ${formatSeconds(p.etaS)}` : '';
  return `layer ${p.layer + 1} of ${p.layers} · ${p.phase}${eta}`;
}

/** The output folder the wizard proposes: SOURCE-awq-int4-g128 beside the source. */
export function defaultOutputFor(source: string, method: string, groupSize: number): string {
  return `${source.replace(/[\\/]+$/, '')}-${method}-int4-g${groupSize}`;
}
