// The profiler webview (bundled by scripts/bundle.mjs into dist/webview/profiler.js; runs in the webview, no Node).
// Per device: a sortable table (@vscode-elements/elements), a bar chart of time per kernel (uPlot), and a timeline of
// the most recent decode step (a canvas: one track per device and stream). Colours come from the VS Code theme's CSS
// variables and are re-read when the theme changes. All text goes in through textContent (no markup from data).
import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-table/index.js';
import '@vscode-elements/elements/dist/vscode-table-header/index.js';
import '@vscode-elements/elements/dist/vscode-table-header-cell/index.js';
import '@vscode-elements/elements/dist/vscode-table-body/index.js';
import '@vscode-elements/elements/dist/vscode-table-row/index.js';
import '@vscode-elements/elements/dist/vscode-table-cell/index.js';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './profiler.css';

import {
  lastStepTimeline,
  profileRows,
  sortRows,
  type ProfileColumn,
  type ProfileData,
  type ProfileRow,
  type StepTimeline,
} from '../../protocol/src/profile';
import type { FromWebview, ToWebview } from '../src/profilerMessages';

interface VsCodeApi {
  postMessage(m: FromWebview): void;
  getState(): Partial<ViewState> | undefined;
  setState(s: ViewState): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

interface ViewState {
  sort: ProfileColumn;
  descending: boolean;
  paused: boolean;
}

const vscode = acquireVsCodeApi();
const state: ViewState = { sort: 'totalMs', descending: true, paused: false, ...vscode.getState() };
let data: ProfileData | undefined;
let note = '';
let status: { text: string; level: 'info' | 'warning' } | undefined;
const charts = new Map<string, { plot: uPlot; names: string }>();

const COLUMNS: { key: ProfileColumn; label: string; numeric: boolean }[] = [
  { key: 'kernel', label: 'Kernel', numeric: false },
  { key: 'device', label: 'Device', numeric: false },
  { key: 'calls', label: 'Calls', numeric: true },
  { key: 'totalMs', label: 'Total ms', numeric: true },
  { key: 'meanUs', label: 'Mean µs', numeric: true },
  { key: 'share', label: 'Share', numeric: true },
  { key: 'gbps', label: 'GB/s (of copy)', numeric: true },
];

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K];
function el(tag: string, className?: string, text?: string): HTMLElement;
function el(tag: string, className?: string, text?: string): HTMLElement {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function themeColor(name: string, fallback: string): string {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

const palette = (): string[] =>
  ['blue', 'green', 'orange', 'purple', 'yellow', 'red'].map((c, i) =>
    themeColor(`--vscode-charts-${c}`, ['#3794ff', '#89d185', '#d18616', '#b180d7', '#cca700', '#f14c4c'][i]),
  );

function colorOf(name: string, colors: string[]): string {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return colors[h % colors.length];
}

function send(m: FromWebview): void {
  vscode.postMessage(m);
}

function saveState(): void {
  vscode.setState(state);
}

function cellText(r: ProfileRow, key: ProfileColumn): string {
  switch (key) {
    case 'kernel':
      return r.kernel;
    case 'device':
      return r.device;
    case 'calls':
      return String(r.calls);
    case 'totalMs':
      return r.totalMs.toFixed(3);
    case 'meanUs':
      return r.meanUs.toFixed(1);
    case 'share':
      return `${(r.share * 100).toFixed(1)}%`;
    case 'gbps':
      if (r.gbps === null) return '–';
      return r.ceilingGBps ? `${r.gbps.toFixed(2)} (${((r.gbps / r.ceilingGBps) * 100).toFixed(0)}%)` : r.gbps.toFixed(2);
  }
}

function renderToolbar(root: HTMLElement): void {
  const bar = el('div', 'toolbar');
  const button = (label: string, onClick: () => void, secondary = true): HTMLElement => {
    const b = el('vscode-button', undefined, label);
    if (secondary) b.setAttribute('secondary', '');
    b.addEventListener('click', onClick);
    bar.append(b);
    return b;
  };
  button(state.paused ? 'Resume' : 'Pause', () => {
    state.paused = !state.paused;
    saveState();
    send({ type: 'pause', paused: state.paused });
    render();
  }, false);
  button('Reset', () => send({ type: 'reset' }));
  button('Profile Model…', () => send({ type: 'profileModel' }));
  button('Export Trace (JSON)', () => send({ type: 'export', format: 'trace' }));
  button('Export CSV', () => send({ type: 'export', format: 'csv' }));
  root.append(bar);
  const line = el('p', 'note', `${state.paused ? 'Paused · ' : ''}${note}`);
  line.id = 'note';
  root.append(line);
  if (status) root.append(el('p', status.level === 'warning' ? 'status warning' : 'status', status.text));
}

function renderTable(rows: ProfileRow[]): HTMLElement {
  const table = el('vscode-table');
  table.setAttribute('zebra', '');
  table.setAttribute('bordered-columns', '');
  table.setAttribute('resizable', '');
  (table as unknown as { columns: string[] }).columns = ['22%', '12%', '10%', '13%', '13%', '10%', '20%'];
  const header = el('vscode-table-header');
  header.setAttribute('slot', 'header');
  for (const c of COLUMNS) {
    const arrow = state.sort === c.key ? (state.descending ? ' ▼' : ' ▲') : '';
    const cell = el('vscode-table-header-cell', c.numeric ? 'num sortable' : 'sortable', c.label + arrow);
    cell.title = `Sort by ${c.label}`;
    cell.tabIndex = 0;
    const sort = (): void => {
      state.descending = state.sort === c.key ? !state.descending : c.numeric;
      state.sort = c.key;
      saveState();
      render();
    };
    cell.addEventListener('click', sort);
    cell.addEventListener('keydown', (e) => (e.key === 'Enter' || e.key === ' ') && sort());
    header.append(cell);
  }
  const body = el('vscode-table-body');
  body.setAttribute('slot', 'body');
  for (const r of sortRows(rows, state.sort, state.descending)) {
    const row = el('vscode-table-row');
    for (const c of COLUMNS) row.append(el('vscode-table-cell', c.numeric ? 'num' : undefined, cellText(r, c.key)));
    body.append(row);
  }
  table.append(header, body);
  return table;
}

/** Time per kernel (ms), one bar each, largest first. */
function renderBars(container: HTMLElement, device: string, rows: ProfileRow[]): void {
  const byTime = [...rows].sort((a, b) => b.totalMs - a.totalMs);
  const names = byTime.map((r) => r.kernel);
  const xs = names.map((_, i) => i);
  const ys = byTime.map((r) => r.totalMs);
  const fg = themeColor('--vscode-foreground', '#cccccc');
  const grid = themeColor('--vscode-editorWidget-border', '#454545');
  const fill = themeColor('--vscode-charts-blue', '#3794ff');
  const width = Math.max(320, container.clientWidth || 600);
  const opts: uPlot.Options = {
    width,
    height: 220,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false, range: [-0.6, Math.max(0.6, names.length - 0.4)] }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [
      { stroke: fg, grid: { show: false }, ticks: { stroke: grid }, splits: () => xs, values: (_u, splits) => splits.map((i) => names[i] ?? ''), rotate: names.length > 6 ? -30 : 0, size: names.length > 6 ? 70 : 40 },
      { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, label: 'ms', labelSize: 20 },
    ],
    series: [{}, { label: 'total ms', fill, stroke: fill, paths: uPlot.paths.bars!({ size: [0.6, 80] }), points: { show: false } }],
  };
  const key = `${device}|${document.body.className}|${width}`;
  const old = charts.get(device);
  if (old && old.names === `${key}|${names.join(',')}` && old.plot.root.isConnected) {
    old.plot.setData([xs, ys]);
    return;
  }
  old?.plot.destroy();
  const plot = new uPlot(opts, [xs, ys], container);
  charts.set(device, { plot, names: `${key}|${names.join(',')}` });
}

/** The most recent decode step: one track per device and stream, each op a box at its time. */
function renderTimeline(container: HTMLElement, t: StepTimeline): void {
  const colors = palette();
  const fg = themeColor('--vscode-foreground', '#cccccc');
  const bg = themeColor('--vscode-editor-background', '#1e1e1e');
  const labelW = 110;
  const trackH = 26;
  const width = Math.max(400, container.clientWidth || 800);
  const height = t.tracks.length * trackH + 24;
  const canvas = el('canvas', 'timeline');
  const dpr = window.devicePixelRatio || 1;
  canvas.width = width * dpr;
  canvas.height = height * dpr;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  canvas.setAttribute('role', 'img');
  const g = canvas.getContext('2d')!;
  g.scale(dpr, dpr);
  g.fillStyle = bg;
  g.fillRect(0, 0, width, height);
  g.font = `${themeColor('--vscode-font-size', '12px')} ${themeColor('--vscode-font-family', 'sans-serif')}`;
  g.textBaseline = 'middle';
  const x0 = t.step.startUs;
  const span = Math.max(1, t.step.durUs);
  const scale = (width - labelW - 8) / span;
  const described: string[] = [];
  t.tracks.forEach((track, i) => {
    const y = i * trackH + 2;
    g.fillStyle = fg;
    g.fillText(`${track.device} s${track.stream}`, 4, y + trackH / 2);
    for (const e of track.events) {
      const x = labelW + (e.startUs - x0) * scale;
      const w = Math.max(1, e.durUs * scale);
      g.fillStyle = colorOf(e.name, colors);
      g.fillRect(x, y + 3, w, trackH - 8);
      if (w > g.measureText(e.name).width + 6) {
        g.fillStyle = bg;
        g.fillText(e.name, x + 3, y + trackH / 2);
      }
    }
    described.push(`${track.device} stream ${track.stream}: ${track.events.length} ops`);
  });
  g.fillStyle = fg;
  g.fillText('0', labelW, height - 10);
  const end = `${(span / 1000).toFixed(3)} ms`;
  g.fillText(end, width - g.measureText(end).width - 4, height - 10);
  canvas.setAttribute('aria-label', `Timeline of the last decode step, ${end}: ${described.join('; ')}`);
  container.append(canvas);
  const legend = el('div', 'legend');
  for (const name of [...new Set(t.tracks.flatMap((tr) => tr.events.map((e) => e.name)))].sort()) {
    const item = el('span', 'legend-item');
    const swatch = el('span', 'swatch');
    swatch.style.backgroundColor = colorOf(name, colors);
    item.append(swatch, document.createTextNode(name));
    legend.append(item);
  }
  container.append(legend);
}

function render(): void {
  const root = document.getElementById('app')!;
  root.replaceChildren();
  renderToolbar(root);
  if (!data || data.devices.length === 0) {
    root.append(el('p', 'empty', data?.model ? 'No op has run since profiling started: type in an editor to get completions, or run Profile Model.' : 'No model loaded.'));
    return;
  }
  const rows = profileRows(data);
  const ceilings = Object.entries(data.ceilings.copyGBps).map(([d, g]) => `${d} ${g.toFixed(1)} GB/s`);
  root.append(el('p', 'note', ceilings.length ? `Copy bandwidth (ceiling): ${ceilings.join(', ')}${data.ceilings.method ? ` — ${data.ceilings.method}` : ''}` : 'Copy bandwidth: measuring…'));
  for (const d of data.devices) {
    const own = rows.filter((r) => r.device === d.device);
    const section = el('section', 'device');
    const totalMs = own.reduce((s, r) => s + r.totalMs, 0);
    section.append(el('h2', undefined, `${d.device} — ${d.backend}`));
    section.append(el('p', 'note', `${totalMs.toFixed(2)} ms in ${own.reduce((s, r) => s + r.calls, 0)} ops${d.droppedEvents ? ` · ring dropped ${d.droppedEvents} older events` : ''}`));
    section.append(renderTable(own));
    const bars = el('div', 'bars');
    section.append(el('h3', undefined, 'Time per kernel'), bars);
    root.append(section);
    renderBars(bars, d.device, own);
  }
  const timeline = lastStepTimeline(data, 'decode');
  const section = el('section', 'timeline-section');
  section.append(el('h2', undefined, 'Most recent decode step'));
  root.append(section);
  if (timeline) {
    section.append(el('p', 'note', `${(timeline.step.durUs / 1000).toFixed(3)} ms`));
    renderTimeline(section, timeline);
  } else {
    section.append(el('p', 'empty', 'No decode step recorded yet.'));
  }
}

window.addEventListener('message', (event: MessageEvent<ToWebview>) => {
  const m = event.data;
  if (m.type === 'profile') {
    if (data && data.epoch !== m.data.epoch) {
      for (const c of charts.values()) c.plot.destroy();
      charts.clear();
    }
    data = m.data;
    note = m.note;
    status = undefined;
  } else if (m.type === 'status') {
    status = { text: m.text, level: m.level };
  } else if (m.type === 'paused') {
    state.paused = m.paused;
    saveState();
  }
  render();
});

// The theme changed (body class vscode-light / vscode-dark / vscode-high-contrast): redraw with its colours.
new MutationObserver(() => {
  for (const c of charts.values()) c.plot.destroy();
  charts.clear();
  render();
}).observe(document.body, { attributes: true, attributeFilter: ['class'] });
window.addEventListener('resize', () => render());

render();
send({ type: 'ready' });
if (state.paused) send({ type: 'pause', paused: true });
