/**
 * `mixq profile`: the standard benchmark (prefill N random tokens, decode M) with every op timed on every device, the
 * copy-bandwidth ceiling measured in the same run. Prints a table per device, or the issue-9 JSON (--json); writes a
 * Chrome trace of the ring buffers (--trace, opens in Perfetto) and the table as CSV (--csv).
 */
import * as fs from 'node:fs';

import { chromeTrace, profileCsv, profileJson, profileRows, type ProfileData } from '#protocol';

import { Engine } from '../engine';
import { deviceCeilings, profileData } from '../profiling';
import { deviceFlags, deviceOptions, parseFlags } from './args';
import type { CliIo, Command } from './command';
import { jsonLine } from './common';

/** The copy probe of the CLI: the benchmark's default buffer (1 GiB, two of them). */
const MEMCPY_MIB = 1024;

const flags = {
  model: { type: 'string', help: 'model folder to profile', valueName: 'dir', required: true },
  prefill: { type: 'int', help: 'prompt tokens of the prefill (default 128)', min: 1 },
  decode: { type: 'int', help: 'tokens decoded after it (default 64)', min: 1 },
  threads: { type: 'int', help: 'CPU worker threads (default: all)', min: 0 },
  ...deviceFlags,
  json: { type: 'boolean', help: 'print {"devices":[{name, kind, kernels:[{name, calls, total_ms, mean_us}]}], "ceilings":{…}}' },
  trace: { type: 'string', help: 'write the recent events as Chrome Trace Event JSON (Perfetto, chrome://tracing)', valueName: 'file.json' },
  csv: { type: 'string', help: 'write the table as CSV', valueName: 'file.csv' },
} as const;

function formatTable(data: ProfileData): string {
  const rows = profileRows(data);
  const lines: string[] = [];
  for (const d of data.devices) {
    const own = rows.filter((r) => r.device === d.device);
    const ceiling = data.ceilings.copyGBps[d.device];
    lines.push(`${d.device}  ${d.backend}${ceiling ? `  (copy ${ceiling.toFixed(1)} GB/s)` : ''}`);
    lines.push(`  ${'kernel'.padEnd(14)}${'calls'.padStart(8)}${'total ms'.padStart(11)}${'mean µs'.padStart(11)}${'share'.padStart(8)}${'GB/s'.padStart(9)}`);
    for (const r of own) {
      lines.push(
        `  ${r.kernel.padEnd(14)}${String(r.calls).padStart(8)}${r.totalMs.toFixed(3).padStart(11)}${r.meanUs.toFixed(1).padStart(11)}` +
          `${(r.share * 100).toFixed(1).padStart(7)}%${(r.gbps === null ? '–' : r.gbps.toFixed(2)).padStart(9)}`,
      );
    }
  }
  return lines.join('\n') + '\n';
}

export const profileCommand: Command = {
  name: 'profile',
  summary: 'per-device op timings of a prefill + decode run, with the copy-bandwidth ceiling; Chrome trace and CSV export',
  usage: '--model DIR [--prefill N] [--decode M] [--device cpu|cuda|auto | --devices cpu:0,cpu:1 [--placement layer|expert] [--split 1,1]] [--json] [--trace FILE.json] [--csv FILE.csv]',
  flags,
  async run(argv: readonly string[], io: CliIo): Promise<number> {
    const f = parseFlags(argv, flags);
    const r = await Engine.bench({
      model: f.model,
      prefillTokens: f.prefill ?? 128,
      decodeTokens: f.decode ?? 64,
      threads: f.threads,
      ...deviceOptions(f),
      profile: true,
      memcpyMib: MEMCPY_MIB,
    });
    if (!r.profile) throw new Error('this addon does not profile (rebuild it: npm run build:native)');
    const devices = r.profile.devices.map((d) => d.device);
    const ceilings = deviceCeilings(devices, { cpu: r.memcpyGBps, ...(r.deviceCopyGBps ?? {}) },
      `copy of ${MEMCPY_MIB} MiB, read + write, best of 5: host memcpy for CPU devices, within GPU memory for GPUs`);
    const data = profileData(r.profile, ceilings, r.description, 'cli');
    if (f.trace) fs.writeFileSync(f.trace, JSON.stringify(chromeTrace(data)) + '\n');
    if (f.csv) fs.writeFileSync(f.csv, profileCsv(profileRows(data)));
    if (f.json) {
      io.stdout.write(jsonLine({
        ...profileJson(data),
        run: {
          model: r.description,
          prefill_tokens: r.prefillTokens,
          decode_tokens: r.decodeTokens,
          prefill_tokens_per_sec: r.prefillTokensPerSec,
          decode_tokens_per_sec: r.decodeTokensPerSec,
        },
      }));
      return 0;
    }
    io.stdout.write(
      `${r.description}\nprefill ${r.prefillTokens} tokens at ${r.prefillTokensPerSec.toFixed(1)} tokens/s, ` +
        `decode ${r.decodeTokens} at ${r.decodeTokensPerSec.toFixed(2)} tokens/s (profiling on)\n\n${formatTable(data)}`,
    );
    return 0;
  },
};
