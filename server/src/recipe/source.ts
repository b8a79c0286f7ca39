/**
 * Is a folder a 16-bit Mixtral or Qwen3-MoE checkpoint the quantizer can read? Checked before a job starts (recipe
 * diagnostics, `MixQ: Quantize Model…`, the CLI), so a wrong folder fails with a reason, not mid-run.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { MAX_JSON_FILE_BYTES, readRegularFileSync } from '../files';

/** Model types the quantizer reads (native/src/quant/quantize.h). */
const QUANTIZABLE_TYPES = ['mixtral', 'qwen3_moe'];

/** undefined when `dir` is a 16-bit Mixtral / Qwen3-MoE safetensors folder, else why not (one sentence, names the path). */
export function checkMixtralSource(dir: string): string | undefined {
  if (!fs.existsSync(dir)) return `${dir} not found`;
  if (!fs.statSync(dir).isDirectory()) return `${dir} is a file, not a model folder`;
  const configPath = path.join(dir, 'config.json');
  if (!fs.existsSync(configPath)) return `${dir} has no config.json: not a model folder`;
  let text: string;
  try {
    // Checked while the user types a recipe: a FIFO or /dev/zero named as config.json must not block the server.
    text = readRegularFileSync(configPath, MAX_JSON_FILE_BYTES, 'config.json');
  } catch (e) {
    return (e as Error).message;
  }
  let config: { model_type?: unknown; architectures?: unknown; quantization_config?: unknown } | null;
  try {
    config = JSON.parse(text) as typeof config;
  } catch (e) {
    return `${configPath} is not valid JSON (${(e as Error).message})`;
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) return `${configPath} is not a JSON object`;
  if (typeof config.model_type !== 'string' || !QUANTIZABLE_TYPES.includes(config.model_type)) {
    return `${dir} is not a Mixtral or Qwen3-MoE checkpoint (model_type ${JSON.stringify(config.model_type ?? null)}; MixQ quantizes "mixtral" and "qwen3_moe")`;
  }
  if (config.quantization_config) return `${dir} is already quantized (config.json has quantization_config): give the 16-bit model`;
  const files = fs.readdirSync(dir);
  if (!files.some((f) => f.endsWith('.safetensors'))) return `${dir} has no *.safetensors weights`;
  if (!files.includes('tokenizer.json')) return `${dir} has no tokenizer.json`;
  return undefined;
}
