/**
 * Quantization jobs in the server (issue 12): `MixQ: Quantize Model…`, a recipe's "Quantize with this recipe" lens.
 * One job at a time; #protocol re-exports this file.
 *
 *   client → server  mixq/quantize              runs a job to the end (LSP cancellation or mixq/quantizeCancel stops it)
 *   server → client  mixq/quantizeProgress      layer i of N, phase, ETA (a few a second at most)
 *   client → server  mixq/quantizeCancel        cancels the running job, whichever client request started it
 *   client → server  mixq/checkQuantizeSource   is a folder a 16-bit Mixtral checkpoint? (before anything starts)
 */
import { NotificationType, RequestType, RequestType0 } from 'vscode-languageserver-protocol';

/** What to quantize, when no recipe gives it (the Quantize Model… wizard). Paths absolute. */
export interface QuantizeJobSettings {
  source: string;
  output: string;
  overwrite?: boolean;
  method?: 'awq' | 'rtn';
  groupSize?: 32 | 64 | 128;
  zeroPoint?: boolean;
  /** AWQ calibration: a .jsonl of {"text"}, a folder of source files, or a text file; default: workspaceFolder. */
  calibPath?: string;
  samples?: number;
  seqLen?: number;
  seed?: number;
  /** 'auto' | 'cpu'; this build quantizes on the CPU only ('cuda' is refused). */
  device?: 'auto' | 'cpu' | 'cuda';
}

export interface QuantizeParams {
  /** A *.mixq.toml recipe (file URI; its open editor text is used when open). Either this or settings. */
  recipeUri?: string;
  settings?: QuantizeJobSettings;
  /** Default calibration data (the workspace's own source files). */
  workspaceFolder?: string;
}

export interface QuantizeResult {
  outputDir: string;
  seconds: number;
  outputBytes: number;
  layers: number;
  method: 'awq' | 'rtn';
  groupSize: number;
  /** An existing output was replaced (overwrite). */
  replaced: boolean;
  warnings: string[];
}

export interface QuantizeProgress {
  jobId: number;
  source: string;
  output: string;
  /** 'calibration' while the calibration set is built, then the native phases ('load', 'search-moe', …, 'write', 'done'). */
  phase: string;
  layer: number;   // 0-based layer in progress
  layers: number;  // 0 until known
  fraction: number;
  elapsedS: number;
  etaS: number;    // -1 until known
}

/** client → server: runs one job to its end. Refused (InvalidRequest, message says which job runs) while one runs. */
export const QuantizeRequest = new RequestType<QuantizeParams, QuantizeResult, void>('mixq/quantize');
/** server → client: progress of the running mixq/quantize. */
export const QuantizeProgressNotification = new NotificationType<QuantizeProgress>('mixq/quantizeProgress');
/** client → server: cancel the running job; `cancelled` false when none ran. */
export const QuantizeCancelRequest = new RequestType0<{ cancelled: boolean }, void>('mixq/quantizeCancel');
/** client → server: undefined reason = a 16-bit Mixtral safetensors folder. */
export const CheckQuantizeSourceRequest = new RequestType<{ path: string }, { ok: boolean; reason?: string }, void>('mixq/checkQuantizeSource');
