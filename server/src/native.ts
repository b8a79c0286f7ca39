// The native addon's surface, typed once (native/addon/addon.cc implements it).
// Every call that runs the model is asynchronous (an N-API AsyncWorker): nothing here blocks the event loop.

export type StopReason = 'eos' | 'stop_id' | 'max_tokens' | 'cancelled' | 'context_full' | 'callback';

/** How a model is spread over several devices: contiguous layers per device, or each layer's experts. */
export type NativePlacementMode = 'layer' | 'expert';

export interface NativeLoadOptions {
  device?: string;        // 'cpu' | 'cuda' | 'cuda:N' | 'auto'
  gpus?: number[];        // cuda:N for each N (devices overrides it)
  devices?: string[];     // e.g. ['cpu:0', 'cpu:1'] (virtual CPU devices) or ['cuda:0', 'cuda:1']; overrides device
  placement?: NativePlacementMode; // with several devices; default 'layer'
  split?: number[];       // layer-split proportions, one per device; empty/absent = from free memory
  threads?: number;       // 0 = all hardware threads
  contextLength?: number; // KV capacity; 0 = model default
}

/** Where every part of the model lives (the placement planner's report). */
export interface NativePlacement {
  mode: 'single' | 'layer' | 'expert';
  devices: { name: string; weightBytes: number; arenaBytes: number }[];
  embed: string;          // device of the embedding table
  lmHead: string;         // device of the final norm + lm_head
  layers: string[];       // [layer] device of the decoder layer's attention
  experts: string[][];    // [layer][expert] device
}

export interface NativeModelInfo {
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  numExperts: number;
  topK: number;
  vocabSize: number;
  bosTokenId: number;
  eosTokenId: number;
  contextLength: number;
  maxPositionEmbeddings: number;
  slidingWindow: number;  // 0 = none
  weightBytes: number;
  quantization: string;   // 'none' or e.g. 'awq int4 g128'
  device: string;
  threads: number;
  description: string;
  devices: string[];      // the devices in use, in placement order
  placement: NativePlacement;
}

export interface NativeGenerateRequest {
  prompt: number[];       // token ids (BOS already applied by the caller's tokenizer rules)
  maxTokens: number;
  greedy?: boolean;       // default true
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  stopIds?: number[];
  ignoreEos?: boolean;
}

export interface NativeGenerateResult {
  tokens: number[];
  stopReason: StopReason;
  promptTokens: number;
  reusedTokens: number;
  evaluatedTokens: number;
  prefillMs: number;
  decodeMs: number;
}

export interface NativeGeneration {
  readonly result: Promise<NativeGenerateResult>;
  // Stops the generation before its next token; result resolves with stopReason 'cancelled'.
  cancel(): void;
}

export interface NativePerplexityResult {
  ppl: number;
  tokens: number;    // predicted tokens counted
  nll: number;       // mean negative log-likelihood
  ms: number;
}

export interface NativeBenchResult {
  prefillTokensPerSec: number;
  decodeTokensPerSec: number;
  prefillTokens: number;
  decodeTokens: number;
  decodeMsPerLayer: number;
  weightBytesPerToken: number;   // bytes streamed per decoded token
  memcpyGBps: number;            // host memcpy, measured in the same run
  deviceCopyGBps?: Record<string, number>;  // per GPU of the run ("cuda:0"): a copy within its memory, same run
  decodeStepMode?: string;       // "graph" (decode steps replayed from a recording) or "ops"
  bandwidthRatio: number;        // (weightBytesPerToken * decode tok/s) / the copy ceiling (the GPUs' when they hold the weights)
  peakRssBytes: number;
  description: string;
  decodeHeadMs: number;          // embedding + final norm + lm_head per decoded token
  decodeLayerMs: number[];       // per decoder layer, mean ms per decoded token
  weightGBps: number;            // weightBytesPerToken * decode tok/s, GB/s
  loadMs: number;
  threads: number;
  cpuFeatures: string[];
  profile?: NativeProfile;       // with NativeBenchOptions.profile: the timed prefill + decode only
}

/** One op's totals on one device (native/src/core/profiler.h KernelStats). */
export interface NativeKernelStats {
  name: string;
  calls: number;
  totalUs: number;
  bytes: number;          // read + written, summed; 0 = unknown
}

/** One op run, µs on the engine's process-wide steady clock (ProfileEvent). */
export interface NativeProfileEvent {
  name: string;
  stream: number;
  startUs: number;
  durUs: number;
}

export interface NativeDeviceProfile {
  device: string;         // 'cpu:0'
  kind: string;           // 'cpu' | 'cuda'
  backend: string;        // the backend's description
  kernels: NativeKernelStats[];
  events: NativeProfileEvent[];   // the ring buffer, oldest first
  droppedEvents: number;
}

/** Model::profile(): per device, plus the forward passes ('prefill' | 'decode') on the same clock. */
export interface NativeProfile {
  enabled: boolean;
  devices: NativeDeviceProfile[];
  steps: NativeProfileEvent[];
}

export interface NativeEngine {
  info(): NativeModelInfo;
  // Op timing on every device of the model: off by default; costs nothing measurable while off.
  setProfiling(enabled: boolean): void;
  // A copy of the statistics and ring buffers (quick; safe while a generation runs).
  profile(): NativeProfile;
  resetProfile(): void;
  // One generation at a time per engine: a second call while one runs rejects with an Error.
  generate(req: NativeGenerateRequest, onToken?: (token: number) => void): NativeGeneration;
  // ids: the held-out stream; windows of `seq` tokens, each predicting its own next tokens.
  perplexity(ids: Int32Array, windows: number, seq: number): Promise<NativePerplexityResult>;
  // Token ids currently held in the KV cache.
  cachedTokens(): number[];
  reset(): void;
  dispose(): void;
}

export interface NativeBenchOptions {
  model?: string;               // a model folder
  synthetic?: string;           // 'mixtral-8x7b' | 'qwen3-coder-30b-a3b' | 'tiny'
  layers?: number;              // layers for synthetic
  weights?: 'bf16' | 'awq';     // weights for synthetic (default bf16; awq: attention and experts int4 g128)
  prefillTokens?: number;
  decodeTokens?: number;
  threads?: number;
  device?: string;
  devices?: string[];           // as NativeLoadOptions
  placement?: NativePlacementMode;
  split?: number[];
  profile?: boolean;            // time every op of the measured prefill + decode (result.profile)
  memcpyMib?: number;           // buffer of the copy-bandwidth probe (default 1024)
}

/** Options of quantize() (native/addon/addon_quantize.cc → native/src/quant/quantize.h). */
export interface NativeQuantizeOptions {
  source: string;           // 16-bit Mixtral folder
  output: string;           // must not exist (or be empty); written as OUTPUT.tmp-XXXXXX, renamed when complete
  method?: 'awq' | 'rtn';   // default 'awq'
  groupSize?: 32 | 64 | 128; // default 128
  zeroPoint?: boolean;      // default true; false = symmetric
  calibIds?: Int32Array;    // [samples × seqLen] token ids (AWQ)
  samples?: number;
  seqLen?: number;
  clipTokens?: number;      // clip search token budget (default 512)
  // AWQ only. 'gptq' (default): codes by rounding with error feedback on the calibration inputs (same format,
  // same scales and zeros); 'nearest': round to nearest, as AutoAWQ.
  rounding?: 'gptq' | 'nearest';
  // AWQ only. 'quantized' (default): layer l+1 calibrates on layer l's quantized output; 'float': on the float
  // layer's output, as AutoAWQ.
  propagate?: 'quantized' | 'float';
  threads?: number;         // 0 = all hardware threads
}

export interface NativeQuantizeProgress {
  layer: number;            // 0-based layer in progress (layers when done)
  layers: number;
  phase: string;            // 'load' | 'forward' | 'search-attn' | 'search-moe' | 'search-experts' | 'clip' | 'pack' | 'propagate' | 'write' | 'done'
  fraction: number;         // of the whole run, 0..1
  elapsedS: number;
  etaS: number;             // -1 until the first layer is done
}

export interface NativeQuantizeResult {
  outputDir: string;
  seconds: number;
  peakRssBytes: number;
  layers: number;
  calibTokens: number;
  /** (layer, expert) pairs that received no calibration tokens and used the documented fallback (AWQ). */
  expertsWithoutTokens: number;
  outputBytes: number;
  layerSeconds: number[];
  warnings: string[];       // e.g. an expert with no calibration tokens
  bestAlpha: number[];      // per layer: attn, moe, expert 0..E-1 (-1: not searched)
}

export interface NativeQuantization {
  /** Rejects with an Error whose `cancelled` property is true after cancel(); nothing is left on disk. */
  readonly promise: Promise<NativeQuantizeResult>;
  cancel(): void;
}

export interface NativeAddon {
  version: string;
  cudaCompiled: boolean;
  devices(): string[];          // ['cpu:0', 'cuda:0', ...]
  cpuFeatures(): string[];      // ['avx2', 'fma', 'avx512f', ...]
  loadModel(dir: string, opts?: NativeLoadOptions): Promise<NativeEngine>;
  bench(opts: NativeBenchOptions): Promise<NativeBenchResult>;
  /** Read + write GB/s of a multi-threaded host memcpy over `mib` MiB (best of 5), on a worker thread. */
  /** The copy ceiling of `device` (default the host: memcpy; a GPU: a copy within its memory), GB/s read + write. */
  measureCopyBandwidth(opts: { mib: number; threads?: number; device?: string }): Promise<number>;
  /** Quantizes a 16-bit model folder to AutoAWQ GEMM int4 (AWQ or round-to-nearest). */
  quantize(opts: NativeQuantizeOptions, onProgress?: (p: NativeQuantizeProgress) => void): NativeQuantization;
}

// Loads build/Release/mixq.node (cmake-js output) relative to the package root.
export function loadAddon(): NativeAddon {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const path = require('node:path') as typeof import('node:path');
  const candidates = [
    process.env.MIXQ_ADDON,
    path.join(__dirname, '..', '..', 'build', 'Release', 'mixq.node'),
    path.join(__dirname, '..', 'build', 'Release', 'mixq.node'),
    path.join(__dirname, 'mixq.node'),
  ].filter((p): p is string => !!p);
  const errors: string[] = [];
  for (const p of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(p) as NativeAddon;
    } catch (e) {
      errors.push(`${p}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(`MixQ native addon not found or failed to load (run npm install):\n  ${errors.join('\n  ')}`);
}
