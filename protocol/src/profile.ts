/**
 * The profiling data of issue 13 as both sides see it, and the views derived from it in one place: the table rows
 * (share of the device's time, achieved GB/s against the device's copy bandwidth), the CSV of that table, the Chrome
 * Trace Event export (Perfetto, chrome://tracing), the issue-9 JSON of `mixq profile --json`, and the window of the
 * most recent decode step for the timeline. Pure functions of plain data: the server, the CLI, the client and the
 * webview import them (#protocol re-exports this file).
 */

/** One op's totals on one device since the last reset. */
export interface ProfileKernel {
  name: string;
  calls: number;
  totalUs: number;
  /** Memory read + written by those calls, bytes; 0 = unknown. */
  bytes: number;
}

/** One op run: µs on the engine's process-wide clock (all devices share it). */
export interface ProfileEvent {
  name: string;
  /** The device's stream (the CPU has one, 0). */
  stream: number;
  startUs: number;
  durUs: number;
}

export interface ProfileDevice {
  /** 'cpu:0', 'cuda:1', … */
  device: string;
  kind: string;
  /** The backend's description, e.g. "cpu:0 (AVX-512, 2 threads)". */
  backend: string;
  kernels: ProfileKernel[];
  /** The ring buffer of recent events, oldest first. */
  events: ProfileEvent[];
  /** Events the ring dropped (overwritten) since the last reset. */
  droppedEvents: number;
}

/** Ceilings measured on this machine: read + write GB/s (1e9 bytes/s) of a large copy on each device. */
export interface ProfileCeilings {
  copyGBps: Record<string, number>;
  /** How it was measured, e.g. "host memcpy 256 MiB, 2 threads". */
  method?: string;
}

export interface ProfileData {
  /** Whether the engine records now. */
  enabled: boolean;
  devices: ProfileDevice[];
  /** The model's forward passes ('prefill': a batch of tokens, 'decode': one) on the same clock as the ops. */
  steps: ProfileEvent[];
  ceilings: ProfileCeilings;
  /** The model's description; absent when no model is loaded. */
  model?: string;
  /** Changes whenever the data starts over (server restart, model reload, reset): views drop what they hold. */
  epoch: string;
}

export function emptyProfile(epoch: string, enabled = false): ProfileData {
  return { enabled, devices: [], steps: [], ceilings: { copyGBps: {} }, epoch };
}

/** One row of the profiler's table. */
export interface ProfileRow {
  device: string;
  kernel: string;
  calls: number;
  totalMs: number;
  meanUs: number;
  /** Fraction of the device's profiled time, 0..1. */
  share: number;
  /** Achieved GB/s (bytes ÷ time) where the bytes are known, else null. */
  gbps: number | null;
  /** The device's measured copy bandwidth, GB/s, or null when not measured. */
  ceilingGBps: number | null;
}

export type ProfileColumn = 'device' | 'kernel' | 'calls' | 'totalMs' | 'meanUs' | 'share' | 'gbps';

/** The table rows of every device, each device's rows by total time (largest first). */
export function profileRows(data: ProfileData): ProfileRow[] {
  const rows: ProfileRow[] = [];
  for (const d of data.devices) {
    const deviceUs = d.kernels.reduce((s, k) => s + k.totalUs, 0);
    const ceiling = data.ceilings.copyGBps[d.device];
    const own = d.kernels.map((k): ProfileRow => ({
      device: d.device,
      kernel: k.name,
      calls: k.calls,
      totalMs: k.totalUs / 1000,
      meanUs: k.calls > 0 ? k.totalUs / k.calls : 0,
      share: deviceUs > 0 ? k.totalUs / deviceUs : 0,
      gbps: k.bytes > 0 && k.totalUs > 0 ? k.bytes / (k.totalUs * 1000) : null,
      ceilingGBps: ceiling !== undefined && ceiling > 0 ? ceiling : null,
    }));
    rows.push(...own.sort((a, b) => b.totalMs - a.totalMs || a.kernel.localeCompare(b.kernel)));
  }
  return rows;
}

/** Rows sorted by one column (ties: device, then kernel name); unknown GB/s sort last either way. */
export function sortRows(rows: readonly ProfileRow[], column: ProfileColumn, descending: boolean): ProfileRow[] {
  const sign = descending ? -1 : 1;
  const tie = (a: ProfileRow, b: ProfileRow): number => a.device.localeCompare(b.device) || a.kernel.localeCompare(b.kernel);
  return [...rows].sort((a, b) => {
    const x = a[column];
    const y = b[column];
    if (x === null || y === null) return x === y ? tie(a, b) : x === null ? 1 : -1;
    const c = typeof x === 'string' ? x.localeCompare(y as string) : (x as number) - (y as number);
    return c !== 0 ? sign * c : tie(a, b);
  });
}

function csvField(value: string | number | null): string {
  if (value === null) return '';
  const s = String(value);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The table as CSV (RFC 4180, header first; empty GB/s where the bytes are unknown). */
export function profileCsv(rows: readonly ProfileRow[]): string {
  const header = ['device', 'kernel', 'calls', 'total_ms', 'mean_us', 'share', 'gb_per_s', 'copy_gb_per_s'];
  const lines = rows.map((r) =>
    [
      r.device,
      r.kernel,
      r.calls,
      +r.totalMs.toFixed(6),
      +r.meanUs.toFixed(3),
      +r.share.toFixed(6),
      r.gbps === null ? null : +r.gbps.toFixed(3),
      r.ceilingGBps === null ? null : +r.ceilingGBps.toFixed(3),
    ].map(csvField).join(','),
  );
  return [header.join(','), ...lines].join('\r\n') + '\r\n';
}

/** A Chrome Trace Event ("JSON Object Format"): complete events and the metadata naming processes and threads. */
export interface TraceEvent {
  name: string;
  ph: 'X' | 'M';
  pid: number;
  tid: number;
  ts?: number;
  dur?: number;
  cat?: string;
  args?: Record<string, string | number>;
}

export interface ChromeTrace {
  traceEvents: TraceEvent[];
  displayTimeUnit: 'ms';
  otherData: Record<string, string>;
}

/**
 * The ring buffers as a Chrome trace: one pid per device (1, 2, … in device order) named after it, one tid per stream,
 * and one more process for the forward passes; complete events (ph "X", ts/dur in µs from the first event) ordered
 * by ts. Opens in Perfetto (ui.perfetto.dev) and chrome://tracing.
 */
export function chromeTrace(data: ProfileData): ChromeTrace {
  const all = [...data.steps, ...data.devices.flatMap((d) => d.events)];
  const t0 = all.length > 0 ? Math.min(...all.map((e) => e.startUs)) : 0;
  const meta: TraceEvent[] = [];
  const spans: TraceEvent[] = [];
  const round = (us: number): number => Math.round(us * 1000) / 1000;
  data.devices.forEach((d, i) => {
    const pid = i + 1;
    meta.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name: `${d.device} ${d.backend}`.trim() } });
    meta.push({ name: 'process_sort_index', ph: 'M', pid, tid: 0, args: { sort_index: pid } });
    for (const stream of [...new Set(d.events.map((e) => e.stream))].sort((a, b) => a - b)) {
      meta.push({ name: 'thread_name', ph: 'M', pid, tid: stream, args: { name: `stream ${stream}` } });
    }
    for (const e of d.events) {
      spans.push({ name: e.name, cat: d.kind, ph: 'X', pid, tid: e.stream, ts: round(e.startUs - t0), dur: round(e.durUs) });
    }
  });
  if (data.steps.length > 0) {
    const pid = data.devices.length + 1;
    meta.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name: 'forward passes' } });
    meta.push({ name: 'process_sort_index', ph: 'M', pid, tid: 0, args: { sort_index: 0 } });
    meta.push({ name: 'thread_name', ph: 'M', pid, tid: 0, args: { name: 'eval' } });
    for (const e of data.steps) spans.push({ name: e.name, cat: 'step', ph: 'X', pid, tid: 0, ts: round(e.startUs - t0), dur: round(e.durUs) });
  }
  spans.sort((a, b) => a.ts! - b.ts! || a.pid - b.pid || b.dur! - a.dur!);
  const otherData: Record<string, string> = { generator: 'mixq profiler' };
  if (data.model) otherData.model = data.model;
  return { traceEvents: [...meta, ...spans], displayTimeUnit: 'ms', otherData };
}

/** `mixq profile --json` (the issue-9 shape, with bytes and GB/s where known). */
export interface ProfileJson {
  devices: {
    name: string;
    kind: string;
    backend: string;
    total_ms: number;
    kernels: { name: string; calls: number; total_ms: number; mean_us: number; bytes?: number; gbps?: number }[];
  }[];
  ceilings: { copy_gbps: Record<string, number>; method?: string };
}

export function profileJson(data: ProfileData): ProfileJson {
  const rows = profileRows(data);
  return {
    devices: data.devices.map((d) => ({
      name: d.device,
      kind: d.kind,
      backend: d.backend,
      total_ms: d.kernels.reduce((s, k) => s + k.totalUs, 0) / 1000,
      kernels: rows.filter((r) => r.device === d.device).map((r) => {
        const bytes = d.kernels.find((k) => k.name === r.kernel)?.bytes ?? 0;
        return {
          name: r.kernel,
          calls: r.calls,
          total_ms: r.totalMs,
          mean_us: r.meanUs,
          ...(bytes > 0 ? { bytes } : {}),
          ...(r.gbps !== null ? { gbps: r.gbps } : {}),
        };
      }),
    })),
    ceilings: { copy_gbps: { ...data.ceilings.copyGBps }, ...(data.ceilings.method ? { method: data.ceilings.method } : {}) },
  };
}

/** The most recent step named `stepName` and every device's events inside it (one track per device and stream). */
export interface StepTimeline {
  step: ProfileEvent;
  tracks: { device: string; stream: number; events: ProfileEvent[] }[];
}

export function lastStepTimeline(data: ProfileData, stepName = 'decode'): StepTimeline | undefined {
  let step: ProfileEvent | undefined;
  for (const s of data.steps) if (s.name === stepName && (!step || s.startUs > step.startUs)) step = s;
  if (!step) return undefined;
  const end = step.startUs + step.durUs;
  const tracks: StepTimeline['tracks'] = [];
  for (const d of data.devices) {
    const inside = d.events.filter((e) => e.startUs >= step.startUs && e.startUs < end);
    for (const stream of [...new Set(inside.map((e) => e.stream))].sort((a, b) => a - b)) {
      tracks.push({ device: d.device, stream, events: inside.filter((e) => e.stream === stream) });
    }
  }
  return { step, tracks };
}
