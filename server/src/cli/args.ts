/**
 * A strict flag parser for the `mixq` subcommands: every flag is declared; unknown flags, missing values and
 * malformed numbers are errors (UsageError), never silently ignored.
 *
 *   const flags = parseFlags(argv, { model: { type: 'string', required: true }, json: { type: 'boolean' } });
 *   flags.model  // string;  flags.json  // boolean
 *
 * Syntax: `--name value`, `--name=value`, booleans as `--name`. Names are kebab-case on the command line and
 * camelCase in the result (`--max-tokens` → maxTokens).
 *
 * Also here: the device flags of the commands that run a model (`deviceFlags`) and their cross-checks
 * (`deviceOptions`: --device | --devices, --placement, --split) into the engine's load/bench options.
 */

export class UsageError extends Error {}

export type FlagType = 'string' | 'boolean' | 'int' | 'number' | 'intList' | 'numberList' | 'stringList';

export interface FlagSpec {
  type: FlagType;
  /** One line for --help. */
  help: string;
  /** Shown in --help as `--name <valueName>`. */
  valueName?: string;
  required?: boolean;
  /** Smallest accepted value for int/number. */
  min?: number;
  /** Largest accepted value for int/number. */
  max?: number;
}

export type FlagSpecs = Record<string, FlagSpec>;

type ValueOf<S extends FlagSpec> = S['type'] extends 'string'
  ? string
  : S['type'] extends 'boolean'
    ? boolean
    : S['type'] extends 'intList' | 'numberList'
      ? number[]
      : S['type'] extends 'stringList'
        ? string[]
        : number;

export type Flags<T extends FlagSpecs> = { [K in keyof T]: ValueOf<T[K]> | undefined } & { help: boolean };

const kebab = (camel: string): string => camel.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

function parseNumber(flag: string, raw: string, spec: FlagSpec): number {
  const text = raw.trim();
  const value = text === '' ? NaN : Number(text);
  if (!Number.isFinite(value)) throw new UsageError(`${flag}: "${raw}" is not a number`);
  if (spec.type === 'int' && !Number.isInteger(value)) throw new UsageError(`${flag}: "${raw}" is not an integer`);
  if (spec.min !== undefined && value < spec.min) throw new UsageError(`${flag}: ${raw} is below the minimum ${spec.min}`);
  // Ints reach the engine as 32-bit values: without a flag's own maximum, that is the maximum (named, not wrapped).
  const max = spec.max ?? (spec.type === 'int' ? 2 ** 31 - 1 : undefined);
  if (max !== undefined && value > max) throw new UsageError(`${flag}: ${raw} is above the maximum ${max}`);
  return value;
}

function parseIntList(flag: string, raw: string): number[] {
  const parts = raw.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) {
    throw new UsageError(`${flag}: "${raw}" is not a comma-separated list of non-negative integers`);
  }
  return parts.map((p) => Number(p));
}

function parseNumberList(flag: string, raw: string): number[] {
  const parts = raw.split(',').map((p) => p.trim());
  const values = parts.map((p) => (p === '' ? NaN : Number(p)));
  if (values.some((v) => !Number.isFinite(v))) throw new UsageError(`${flag}: "${raw}" is not a comma-separated list of numbers`);
  return values;
}

function parseStringList(flag: string, raw: string): string[] {
  const parts = raw.split(',').map((p) => p.trim());
  if (parts.some((p) => p === '')) throw new UsageError(`${flag}: "${raw}" has an empty entry`);
  return parts;
}

/** Parses argv against specs. `--help`/`-h` is always accepted and sets `help` (required flags are then not checked). */
export function parseFlags<T extends FlagSpecs>(argv: readonly string[], specs: T): Flags<T> {
  const byFlag = new Map<string, string>();
  for (const key of Object.keys(specs)) byFlag.set('--' + kebab(key), key);
  const out: Record<string, unknown> = { help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      out.help = true;
      continue;
    }
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    const key = byFlag.get(flag);
    if (key === undefined) throw new UsageError(`unknown flag ${flag}`);
    const spec = specs[key];
    if (key in out) throw new UsageError(`${flag} given twice`);
    if (spec.type === 'boolean') {
      if (eq >= 0) {
        const v = arg.slice(eq + 1);
        if (v !== 'true' && v !== 'false') throw new UsageError(`${flag}: expected true or false, got "${v}"`);
        out[key] = v === 'true';
      } else {
        out[key] = true;
      }
      continue;
    }
    let raw: string;
    if (eq >= 0) {
      raw = arg.slice(eq + 1);
    } else {
      // A value may start with '-' only when it is a number (e.g. --temperature -1 is caught by min instead).
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) throw new UsageError(`${flag} needs a value`);
      raw = next;
      i++;
    }
    switch (spec.type) {
      case 'string':
        if (raw === '') throw new UsageError(`${flag} needs a value`);
        out[key] = raw;
        break;
      case 'int':
      case 'number':
        out[key] = parseNumber(flag, raw, spec);
        break;
      case 'intList':
        out[key] = parseIntList(flag, raw);
        break;
      case 'numberList':
        out[key] = parseNumberList(flag, raw);
        break;
      case 'stringList':
        out[key] = parseStringList(flag, raw);
        break;
    }
  }
  if (!out.help) {
    for (const [key, spec] of Object.entries(specs)) {
      if (spec.required && !(key in out)) throw new UsageError(`--${kebab(key)} is required`);
    }
  }
  return out as Flags<T>;
}

/** The flag table of a subcommand's --help. */
export function formatFlags(specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([key, spec]) => {
    const value = spec.type === 'boolean' ? '' : ` <${spec.valueName ?? (spec.type === 'string' ? 'value' : 'n')}>`;
    return [`  --${kebab(key)}${value}`, spec.help + (spec.required ? ' (required)' : '')];
  });
  const width = Math.max(...rows.map((r) => r[0].length)) + 2;
  return rows.map(([left, right]) => left.padEnd(width) + right).join('\n');
}

/** Where a command's model runs: --device, or --devices with --placement and --split (generate, ppl, bench). */
export const deviceFlags = {
  device: { type: 'string', help: 'cpu | cuda | cuda:N | auto (default cpu)', valueName: 'device' },
  devices: { type: 'stringList', help: 'spread the model over these devices: cpu:0,cpu:1 (virtual CPU devices) | cuda:0,cuda:1', valueName: 'd0,d1,…' },
  placement: { type: 'string', help: 'over --devices: layer (contiguous layers per device, the default) | expert (each layer\'s experts spread)', valueName: 'layer|expert' },
  split: { type: 'numberList', help: 'layer proportions per device (> 0, one per --devices entry; default: from free memory)', valueName: 'p0,p1,…' },
} satisfies FlagSpecs;

/** The load/bench options the device flags give (NativeLoadOptions / NativeBenchOptions fields). */
export interface DeviceOptions {
  device?: string;
  devices?: string[];
  placement?: 'layer' | 'expert';
  split?: number[];
}

const DEVICE = /^(cpu|cuda|auto|cuda:\d+)$/;
const PLACED_DEVICE = /^(cpu|cuda):\d+$/;

/** Checks the device flags together; every error names the flag. */
export function deviceOptions(f: { device?: string; devices?: string[]; placement?: string; split?: number[] }): DeviceOptions {
  if (f.device !== undefined && !DEVICE.test(f.device)) throw new UsageError(`--device: "${f.device}" is not cpu, cuda, cuda:N or auto`);
  if (f.device !== undefined && f.devices !== undefined) throw new UsageError('give one of --device, --devices (--devices names every device)');
  if (f.devices !== undefined) {
    for (const d of f.devices) {
      if (!PLACED_DEVICE.test(d)) throw new UsageError(`--devices: "${d}" is not a device like cpu:0 or cuda:1`);
    }
    const twice = f.devices.find((d, i) => f.devices!.indexOf(d) !== i);
    if (twice !== undefined) throw new UsageError(`--devices: ${twice} is named twice`);
  }
  if (f.placement !== undefined && f.placement !== 'layer' && f.placement !== 'expert') {
    throw new UsageError(`--placement: "${f.placement}" is not layer or expert`);
  }
  if (f.split !== undefined) {
    if (f.devices === undefined) throw new UsageError('--split needs --devices (one proportion per device)');
    if (f.placement === 'expert') throw new UsageError('--split applies to --placement layer only');
    const bad = f.split.find((v) => !(v > 0));
    if (bad !== undefined) throw new UsageError(`--split: ${bad} is not a proportion > 0`);
    if (f.split.length !== f.devices.length) {
      throw new UsageError(`--split: ${f.split.length} proportion(s) for ${f.devices.length} device(s) of --devices`);
    }
  }
  const out: DeviceOptions = {};
  if (f.device !== undefined) out.device = f.device;
  if (f.devices !== undefined) out.devices = f.devices;
  if (f.placement !== undefined) out.placement = f.placement;
  if (f.split !== undefined) out.split = f.split;
  return out;
}
