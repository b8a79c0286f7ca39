/**
 * The server's side of the profiling panel (issue 13): keeps the user's on/off choice across model reloads, numbers
 * the epochs (a reload or a reset starts over), measures the copy-bandwidth ceilings, and runs the standard benchmark
 * (`mixq/profileModel`) through the engine's one scheduler. Reading the profile never waits for the engine: the
 * engine copies its counters under a short lock.
 */
import type { ProfileCeilings, ProfileData, ProfileModelParams, ProfileModelResult, ProfileProgress } from '#protocol';
import { emptyProfile } from '#protocol';

import type { CompletionModel } from './completion/model';
import type { NativeProfile } from './native';

/** Size of the host memcpy probe: large enough to leave the caches, small enough for an editor (2 buffers). */
export const CEILING_PROBE_MIB = 256;

/** The profile as the protocol carries it (the native shape plus ceilings, model and epoch). */
export function profileData(native: NativeProfile, ceilings: ProfileCeilings, model: string | undefined, epoch: string): ProfileData {
  return { enabled: native.enabled, devices: native.devices, steps: native.steps, ceilings, model, epoch };
}

/** The physical device a (virtual or logical) device runs on, as the copy probes name it: 'cpu' or 'cuda:N'. */
export function physicalDevice(device: string): string {
  if (device.startsWith('cpu')) return 'cpu';
  return device.replace(/\/\d+$/, '');
}

/**
 * Per-device ceilings from the copy rates measured per physical device (`measured`: 'cpu' → the host memcpy,
 * 'cuda:N' → a copy within that GPU's memory): every virtual CPU device gets the host's, every logical GPU device
 * its GPU's. A device whose rate was not measured gets none (its GB/s column shows no ceiling).
 */
export function deviceCeilings(devices: readonly string[], measured: Record<string, number>, method: string | undefined): ProfileCeilings {
  const copyGBps: Record<string, number> = {};
  for (const d of devices) {
    const gbps = measured[physicalDevice(d)];
    if (gbps !== undefined) copyGBps[d] = gbps;
  }
  return method ? { copyGBps, method } : { copyGBps };
}

export interface RunControl {
  onProgress(p: ProfileProgress): void;
  /** Registers the cancel of the run (the request's cancellation token). */
  onCancel(listener: () => void): void;
}

export class ProfileHost {
  private wanted = false;
  private epochSeq = 0;
  private model: CompletionModel | undefined;
  private measured: Record<string, number> | undefined;
  private method: string | undefined;
  private measuring: Promise<void> | undefined;

  constructor(private readonly log: (msg: string) => void = () => undefined) {}

  private get epoch(): string {
    return `${process.pid}.${this.epochSeq}`;
  }

  /** The loaded model changed (or went away): a new epoch; the user's choice applies to the new one. */
  attach(model: CompletionModel | undefined): void {
    if (model === this.model) return;
    this.model = model;
    this.epochSeq++;
    if (this.wanted) model?.profiling?.setProfiling(true);
  }

  get enabled(): boolean {
    return this.wanted;
  }

  current(): ProfileData {
    const model = this.model;
    const p = model?.profiling;
    if (!model || !p) return emptyProfile(this.epoch, this.wanted);
    return profileData(p.profile(), deviceCeilings(model.info.devices, this.measured ?? {}, this.method), model.info.description, this.epoch);
  }

  /** Switches timing on or off; switching on measures the ceilings once (in the background). */
  enable(on: boolean): ProfileData {
    this.wanted = on;
    this.model?.profiling?.setProfiling(on);
    if (on && this.measured === undefined) void this.measureCeilings();
    return this.current();
  }

  reset(): ProfileData {
    this.model?.profiling?.resetProfile();
    this.epochSeq++;
    return this.current();
  }

  /** Measures the copy bandwidth of the host and of each GPU the model uses (joins a measurement in flight). */
  measureCeilings(): Promise<void> {
    const model = this.model;
    const p = model?.profiling;
    if (!model || !p) return Promise.resolve();
    if (this.measuring) return this.measuring;
    const physical = [...new Set(['cpu', ...model.info.devices.map(physicalDevice)])];
    this.measuring = (async () => {
      const measured: Record<string, number> = {};
      for (const d of physical) measured[d] = await p.copyBandwidth(CEILING_PROBE_MIB, d === 'cpu' ? undefined : d);
      this.measured = measured;
      this.method = `copy of ${CEILING_PROBE_MIB} MiB, read + write, best of 5: host memcpy for CPU devices, within GPU memory for GPUs`;
      this.log(`profiler: copy bandwidth ${Object.entries(measured).map(([d, g]) => `${d} ${g.toFixed(1)} GB/s`).join(', ')}`);
    })()
      .catch((e: unknown) => this.log(`profiler: copy bandwidth not measured: ${(e as Error).message}`))
      .finally(() => {
        this.measuring = undefined;
      });
    return this.measuring;
  }

  /**
   * The standard benchmark on the loaded model: timing on, reset, `prefillTokens` random prompt ids then
   * `decodeTokens` generated (EOS ignored), queued behind running completions; then the ceilings, measured anew.
   * Timing goes back off afterwards unless the user had it on.
   */
  async runBenchmark(params: ProfileModelParams, control: RunControl): Promise<ProfileModelResult> {
    const model = this.model;
    const p = model?.profiling;
    if (!model || !p) throw new Error('no model loaded (or this model cannot be profiled)');
    const { prefillTokens, decodeTokens } = params;
    if (!Number.isInteger(prefillTokens) || prefillTokens < 1 || !Number.isInteger(decodeTokens) || decodeTokens < 1) {
      throw new Error('prefillTokens and decodeTokens must be integers >= 1');
    }
    if (prefillTokens + decodeTokens > model.info.contextLength) {
      throw new Error(`prefill ${prefillTokens} + decode ${decodeTokens} tokens exceed the context length ${model.info.contextLength}`);
    }
    // Random ids from a fixed seed: the same prompt every run, unrelated to the KV cache of the completions.
    let seed = 0x2545f491;
    const prompt = Array.from({ length: prefillTokens }, () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % p.vocabSize;
    });
    control.onProgress({ phase: 'queued', done: 0, total: decodeTokens });
    let done = 0;
    let started = false;
    const gen = model.generate(
      { prompt, maxTokens: decodeTokens, greedy: true, ignoreEos: true },
      {
        onStart: () => {
          // Switched on and reset only once the earlier completions are done: the profile is this run's alone.
          started = true;
          p.setProfiling(true);
          p.resetProfile();
          this.epochSeq++;
          control.onProgress({ phase: 'prefill', done: 0, total: decodeTokens });
        },
        onToken: () => control.onProgress({ phase: 'decode', done: ++done, total: decodeTokens }),
      },
    );
    control.onCancel(() => gen.cancel());
    let r;
    try {
      r = await gen.result;
    } finally {
      if (started && !this.wanted) p.setProfiling(false);
    }
    // Read before the probe: the copy must not be timed as an op, and nothing else runs meanwhile.
    const native = p.profile();
    const cancelled = r.stopReason === 'cancelled';
    if (!cancelled) {
      control.onProgress({ phase: 'ceilings', done, total: decodeTokens });
      this.measured = undefined;
      await this.measureCeilings();
    }
    control.onProgress({ phase: 'done', done, total: decodeTokens });
    return {
      profile: profileData(native, deviceCeilings(model.info.devices, this.measured ?? {}, this.method), model.info.description, this.epoch),
      prefillTokens: r.promptTokens - r.reusedTokens,
      decodeTokens: r.tokens.length,
      prefillMs: r.prefillMs,
      decodeMs: r.decodeMs,
      cancelled,
    };
  }
}
