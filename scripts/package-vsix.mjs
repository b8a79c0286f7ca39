#!/usr/bin/env node
// Packages the bundled extension (see scripts/bundle.mjs) into a platform-specific .vsix for linux-x64:
// artifacts/mixq-<version>-linux-x64.vsix. Fails when the native addon is missing (the .vsix would not work), and
// checks the package's file list: the bundles, the addon, the manifest — nothing from test/, no model weights.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
for (const f of ['dist/extension.js', 'dist/server.js', 'dist/worker.js', 'dist/mixq.node', 'dist/webview/profiler.js', 'dist/webview/profiler.css']) {
  if (!fs.existsSync(path.join(root, f))) {
    console.error(`package: ${f} is missing — run \`npm run build:native\` and \`npm run bundle\` first`);
    process.exit(1);
  }
}
const outDir = path.join(root, 'artifacts');
fs.mkdirSync(outDir, { recursive: true });
const out = path.join(outDir, `${pkg.name}-${pkg.version}-linux-x64.vsix`);
const vsce = path.join(root, 'node_modules', '@vscode', 'vsce', 'vsce');
const args = ['package', '--target', 'linux-x64', '--no-dependencies', '--allow-missing-repository', '--skip-license', '-o', out];
execFileSync(process.execPath, [vsce, ...args], { cwd: root, stdio: 'inherit' });

const listing = execFileSync(process.execPath, [vsce, 'ls', '--no-dependencies'], { cwd: root, encoding: 'utf8' })
  .split('\n').map((l) => l.trim()).filter(Boolean);
const forbidden = listing.filter((f) => f.startsWith('test/') || f.startsWith('models/') || f.endsWith('.safetensors') || f.startsWith('node_modules/'));
if (forbidden.length > 0) {
  console.error(`package: the .vsix must not carry:\n  ${forbidden.join('\n  ')}`);
  process.exit(1);
}
console.log(`package: ${path.relative(root, out)} (${(fs.statSync(out).size / 2 ** 20).toFixed(1)} MiB): ${listing.join(', ')}`);
