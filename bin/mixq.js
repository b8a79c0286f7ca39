#!/usr/bin/env node
// The mixq command-line tool: compiled from server/src/cli.ts by `npm run build`.
require('../out/server/cli.js').main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`mixq: ${err && err.message ? err.message : err}\n`); process.exitCode = 1; },
);
