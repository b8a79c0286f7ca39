/**
 * The profiler webview's page: a strict Content-Security-Policy (nothing by default; the one script only by nonce and
 * only from the extension's own dist/webview/ folder; styles from there too, nothing remote, no inline script or
 * style attribute), a mount point, and the bundled script (extension/webview/profiler.ts → dist/webview/profiler.js).
 * Kept free of the vscode module so that a unit test checks the policy.
 */
import { randomBytes } from 'node:crypto';

export interface ProfilerPageOptions {
  /** webview.cspSource: the origin the webview serves the extension's local resources from. */
  cspSource: string;
  /** A fresh random value per page load. */
  nonce: string;
  /** webview.asWebviewUri of dist/webview/profiler.js and dist/webview/profiler.css. */
  scriptUri: string;
  styleUri: string;
}

/** 128 random bits, base64 (a CSP nonce must be unguessable and fresh for every page). */
export function makeNonce(): string {
  return randomBytes(16).toString('base64');
}

/**
 * default-src 'none'; scripts only with the nonce (not even from cspSource without it); styles from the extension's
 * files or with the nonce (the components' constructed stylesheets and CSSOM style changes are not inline markup);
 * canvas charts need no img/font source beyond the extension's own.
 */
export function profilerCsp(cspSource: string, nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'nonce-${nonce}'`,
    `style-src ${cspSource} 'nonce-${nonce}'`,
    `font-src ${cspSource}`,
    `img-src ${cspSource} data:`,
    "base-uri 'none'",
    "form-action 'none'",
  ].join('; ');
}

const escapeAttr = (s: string): string => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function profilerHtml(o: ProfilerPageOptions): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${escapeAttr(profilerCsp(o.cspSource, o.nonce))}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${escapeAttr(o.styleUri)}" nonce="${escapeAttr(o.nonce)}">
<title>MixQ Profiler</title>
</head>
<body>
<main id="app" aria-live="polite"><p class="note">Loading the profiler…</p></main>
<script nonce="${escapeAttr(o.nonce)}" src="${escapeAttr(o.scriptUri)}"></script>
</body>
</html>
`;
}
