/**
 * The one place server/client state becomes the status bar item's text, tooltip and click action.
 * No vscode import: unit-tested in Node.
 */
import type { ModelSummary, ServerStatus } from '#protocol';

export type ClientPhase = 'starting' | 'running' | 'restarting' | 'crashed' | 'stopped';

export interface StatusView {
  phase: ClientPhase;
  server: ServerStatus | undefined;
  enabled: boolean;
  /** Why the client is crashed/stopped. */
  detail?: string;
}

export interface RenderedStatus {
  text: string;
  tooltip: string;
  command: string;
  warning: boolean;
}

function fmtMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function fmtBytes(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

const MODE_NAMES = { single: 'one device', layer: 'layer split', expert: 'expert parallel' } as const;

/** The devices in use, short: "cpu", "cuda:0+cuda:1 layer". */
function devicesText(m: ModelSummary | undefined): string {
  if (!m) return '';
  const devices = m.devices && m.devices.length > 0 ? m.devices : [m.device];
  const mode = m.placement && m.placement.mode !== 'single' ? ` ${m.placement.mode}` : '';
  return devices.join('+') + mode;
}

/** The tooltip's line: each device with the weight bytes it holds, and the placement mode. */
function devicesLine(m: ModelSummary | undefined): string {
  if (!m?.placement) return '';
  const p = m.placement;
  return `Devices: ${p.devices.map((d) => `${d.name} (${fmtBytes(d.weightBytes)})`).join(', ')} · ${MODE_NAMES[p.mode] ?? p.mode}`;
}

export function renderStatus(view: StatusView): RenderedStatus {
  const s = view.server;
  const menu = 'mixq.showMenu';
  if (view.phase === 'crashed' || view.phase === 'stopped') {
    return { text: '$(error) MixQ: server stopped', tooltip: view.detail ?? 'The MixQ language server is not running. Click for options.', command: menu, warning: true };
  }
  if (view.phase === 'starting' || view.phase === 'restarting' || !s) {
    return { text: `$(loading~spin) MixQ: ${view.phase === 'restarting' ? 'restarting' : 'starting'}`, tooltip: 'Starting the MixQ language server', command: menu, warning: false };
  }
  switch (s.state) {
    case 'noModel':
      return { text: '$(circle-slash) MixQ: no model', tooltip: `${s.message ?? 'No model configured.'}\nClick to select a model folder.`, command: 'mixq.selectModel', warning: true };
    case 'loading':
      return { text: '$(loading~spin) MixQ: loading model', tooltip: s.message ?? 'Loading the model', command: menu, warning: false };
    case 'error':
      return { text: '$(error) MixQ: model failed to load', tooltip: `${s.message ?? 'The model failed to load.'}\nCompletions are off. Click for options.`, command: menu, warning: true };
    case 'ready':
      break;
  }
  const m = s.model;
  const parts = [m?.name ?? 'model', devicesText(m)];
  if (s.backendError && view.enabled) {
    // The remote server failed the last request; the next one tries again (and clears this once it works).
    return {
      text: `$(warning) MixQ: ${m?.device === 'remote' ? 'remote server' : 'backend'} unavailable`,
      tooltip: `${s.backendError}\nMixQ retries with the next completion. Click for options.`,
      command: menu,
      warning: true,
    };
  }
  if (!view.enabled) parts.push('off');
  else if (s.activeGenerations > 0) parts.push('generating');
  else if (s.last) {
    parts.push(fmtMs(s.last.totalMs));
    if (!s.last.fromCache && s.last.tokensPerSec > 0) parts.push(`${s.last.tokensPerSec.toFixed(0)} tok/s`);
  } else parts.push('ready');
  const icon = view.enabled ? '$(sparkle)' : '$(circle-slash)';
  const lines = [
    `Model: ${m?.path ?? '?'}`,
    m?.description ?? '',
    devicesLine(m),
    `Template: ${m?.template ?? '?'} · context ${m?.contextLength ?? '?'} tokens`,
    `Completions: ${view.enabled ? 'on' : 'off'}`,
  ];
  if (s.last) {
    const l = s.last;
    lines.push(
      `Last: ${fmtMs(l.totalMs)} (wait ${fmtMs(l.waitMs)}, prompt ${fmtMs(l.prefillMs)}, generate ${fmtMs(l.decodeMs)})${l.fromCache ? ' from cache' : ''}`,
      `Prompt ${l.promptTokens} tokens, ${l.evaluatedPromptTokens} evaluated (${l.reusedTokens} reused); ${l.generatedTokens} generated at ${l.tokensPerSec.toFixed(1)} tok/s; stop: ${l.stop}`,
    );
  }
  lines.push(`Server memory: ${(s.rssBytes / 2 ** 20).toFixed(0)} MiB`, 'Click for the MixQ menu.');
  return { text: `${icon} MixQ: ${parts.filter(Boolean).join(' · ')}`, tooltip: lines.filter(Boolean).join('\n'), command: menu, warning: false };
}
