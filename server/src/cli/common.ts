/**
 * Flags and helpers shared by the `mixq` subcommands that load a model.
 */
import type { NativePlacement } from '../native';
import { MAX_THREADS } from '#protocol';
import { deviceFlags, type FlagSpecs } from './args';

/** --device / --devices / --placement / --split / --threads / --context-length: how the engine is placed. */
export const engineFlags = {
  ...deviceFlags,
  threads: { type: 'int', help: 'CPU worker threads (default: all hardware threads)', min: 0, max: MAX_THREADS },
  contextLength: { type: 'int', help: 'KV cache capacity in tokens (default: min(model max, 4096))', min: 0, max: 1 << 20 },
} satisfies FlagSpecs;

/** Writes one JSON object on its own line. */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value) + '\n';
}

/** Tokens per second, 0 when nothing was timed. */
export function perSecond(tokens: number, ms: number): number {
  return ms > 0 ? (tokens * 1000) / ms : 0;
}

/** One line naming the devices in use and the placement mode, e.g. "devices cpu:0, cpu:1 (layer split)". */
export function describePlacement(placement: NativePlacement): string {
  const names = placement.devices.map((d) => d.name).join(', ');
  const mode = placement.mode === 'single' ? 'one device' : placement.mode === 'layer' ? 'layer split' : 'expert parallel';
  return `devices ${names} (${mode})`;
}
