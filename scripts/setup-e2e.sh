#!/usr/bin/env bash
# Installs what the real-editor test (npm run test:e2e) needs, offline-friendly (npm registry + Debian packages only):
#   - Debian packages: chromium (the browser playwright-core drives), ripgrep, libkrb5-dev (code-server's kerberos
#     module builds from source);
#   - code-server 4.100.3 (VS Code 1.100.3; later versions need Node 22) into .cache/code-server, outside the repo's
#     node_modules. @vscode/ripgrep's postinstall would download rg from GitHub: its cache is pre-filled with Debian's
#     /usr/bin/rg instead.
# Idempotent: a second run finds everything and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
CODE_SERVER_VERSION=4.100.3
PREFIX="$PWD/.cache/code-server"

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v rg >/dev/null || missing+=(ripgrep)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== setup-e2e: apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

bin="$PREFIX/node_modules/.bin/code-server"
if [ -x "$bin" ] && [ -f "$PREFIX/.installed-$CODE_SERVER_VERSION" ]; then
  echo "== setup-e2e: code-server $CODE_SERVER_VERSION already in $PREFIX"
  exit 0
fi

# @vscode/ripgrep looks for this asset in its cache before downloading (lib/download.js).
tmp="${TMPDIR:-/tmp}"
rgcache="$tmp/vscode-ripgrep-cache-1.15.11"
asset="$rgcache/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"
if [ ! -f "$asset" ]; then
  mkdir -p "$rgcache"
  stage=$(mktemp -d)
  cp "$(command -v rg)" "$stage/rg"
  tar -czf "$asset" -C "$stage" rg
  rm -rf "$stage"
fi

echo "== setup-e2e: installing code-server $CODE_SERVER_VERSION into $PREFIX"
mkdir -p "$PREFIX/home"
# npm 11 runs dependency install scripts only for packages approved in package.json `allowScripts`. code-server's
# postinstall installs VS Code's own dependencies with a nested npm in lib/vscode, whose native modules (node-pty,
# spdlog, kerberos, ...) must build too: install without scripts, approve those in lib/vscode/package.json, then run
# the install scripts.
echo '{ "name": "mixq-e2e-code-server", "private": true, "allowScripts": { "code-server": true, "argon2": true } }' > "$PREFIX/package.json"
# unsafe-perm: code-server's postinstall refuses root otherwise; yes: node-pty's postinstall runs `npx node-gyp`.
export npm_config_unsafe_perm=true npm_config_yes=true
(cd "$PREFIX" && npm install --no-audit --no-fund --ignore-scripts "code-server@$CODE_SERVER_VERSION")
node -e '
  const fs = require("fs");
  const f = process.argv[1];
  const pkg = JSON.parse(fs.readFileSync(f, "utf8"));
  pkg.allowScripts = Object.fromEntries(["@parcel/watcher", "@vscode/deviceid", "@vscode/ripgrep", "@vscode/spdlog",
    "kerberos", "native-watchdog", "node-pty"].map((n) => [n, true]));
  fs.writeFileSync(f, JSON.stringify(pkg, null, 2));
' "$PREFIX/node_modules/code-server/lib/vscode/package.json"
(cd "$PREFIX" && npm rebuild --foreground-scripts argon2 code-server)
HOME="$PREFIX/home" "$bin" --version | head -1
touch "$PREFIX/.installed-$CODE_SERVER_VERSION"
