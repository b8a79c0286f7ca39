#!/usr/bin/env node
// Bundles the VS Code client (dist/extension.js) and the language server (dist/server.js + its worker-thread entry
// dist/worker.js) with esbuild, and copies
// the native addon next to the server (server/src/native.ts loadAddon() finds it as <dist>/mixq.node).
// The protocol project (protocol/src, imported as `#protocol`: package.json "imports") is bundled from its sources
// (the `mixq-source` condition), so bundling needs no tsc build first.
// Checks that the client bundle pulls in nothing server-only: nothing from server/, no vscode-languageserver.
// The profiler webview (extension/webview/profiler.ts with @vscode-elements/elements and uPlot) is bundled for the
// browser into dist/webview/profiler.js + profiler.css: the only files its Content-Security-Policy lets it load.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const production = !process.argv.includes('--dev');

fs.mkdirSync(dist, { recursive: true });
const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: production ? false : 'linked',
  minify: production,
  logLevel: 'warning',
  metafile: true,
  conditions: ['mixq-source'],
  // native.ts require()s the addon by a computed path at run time; nothing to bundle there.
  logOverride: { 'unsupported-require-call': 'silent' },
};

const client = await esbuild.build({
  ...common,
  entryPoints: [path.join(root, 'extension', 'src', 'extension.ts')],
  outfile: path.join(dist, 'extension.js'),
  external: ['vscode'],
});
const server = await esbuild.build({
  ...common,
  entryPoints: [path.join(root, 'server', 'src', 'server.ts')],
  outfile: path.join(dist, 'server.js'),
});
// The server's worker threads (tokenizer, calibration) start dist/worker.js: server/src/threads.ts finds it next to
// the bundle, as it finds out/server/worker.js next to the compiled server.
await esbuild.build({
  ...common,
  entryPoints: [path.join(root, 'server', 'src', 'worker.ts')],
  outfile: path.join(dist, 'worker.js'),
});

// The webview: one IIFE script and one stylesheet (uPlot's CSS + ours), nothing loaded at run time.
const webview = await esbuild.build({
  bundle: true,
  platform: 'browser',
  format: 'iife',
  target: 'chrome120',
  sourcemap: production ? false : 'inline',
  minify: production,
  logLevel: 'warning',
  metafile: true,
  legalComments: 'linked',
  entryPoints: { profiler: path.join(root, 'extension', 'webview', 'profiler.ts') },
  outdir: path.join(dist, 'webview'),
  conditions: ['mixq-source'],
});
const webviewNode = Object.keys(webview.metafile.inputs).filter((f) => f.startsWith('server/') || f.includes('vscode-languageserver'));
if (webviewNode.length > 0) {
  console.error(`bundle: the webview bundle pulls in server or LSP modules:\n  ${webviewNode.join('\n  ')}`);
  process.exit(1);
}

const serverOnly = Object.keys(client.metafile.inputs).filter(
  (f) => f.startsWith('server/') || f.includes('node_modules/vscode-languageserver/'),
);
if (!Object.keys(client.metafile.inputs).includes('protocol/src/protocol.ts')) {
  console.error('bundle: the client bundle does not contain protocol/src/protocol.ts (the #protocol import resolved elsewhere)');
  process.exit(1);
}
if (serverOnly.length > 0) {
  console.error(`bundle: the client bundle pulls in server-only modules:\n  ${serverOnly.join('\n  ')}`);
  process.exit(1);
}

const addon = path.join(root, 'build', 'Release', 'mixq.node');
const addonOut = path.join(dist, 'mixq.node');
if (fs.existsSync(addon)) {
  fs.copyFileSync(addon, addonOut);
} else {
  fs.rmSync(addonOut, { force: true });
  console.warn(`bundle: ${path.relative(root, addon)} not built (npm run build:native); dist/ has no native addon`);
}

const size = (f) => `${(fs.statSync(f).size / 1024).toFixed(0)} KiB`;
console.log(`bundle: dist/extension.js ${size(path.join(dist, 'extension.js'))}, dist/server.js ${size(path.join(dist, 'server.js'))}` +
  `, dist/worker.js ${size(path.join(dist, 'worker.js'))}` +
  `, dist/webview/profiler.js ${size(path.join(dist, 'webview', 'profiler.js'))}` +
  `${fs.existsSync(addonOut) ? `, dist/mixq.node ${size(addonOut)}` : ''} (${Object.keys(server.metafile.inputs).length} server inputs)`);
