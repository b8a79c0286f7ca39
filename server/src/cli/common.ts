/**
 * Flags and helpers shared by the `mixq` subcommands that load a model.
 */
import type { FlagSpecs } from './args';

/** --device / --threads / --context-length: how the engine is placed. */
export const engineFlags = {
  device: { type: 'string', help: 'cpu | cuda | cuda:N | auto (default cpu)', valueName: 'device' },
  threads: { type: 'int', help: 'CPU worker threads (default: all hardware threads)', min: 0 },
  contextLength: { type: 'int', help: 'KV cache capacity in tokens (default: min(model max, 4096))', min: 0 },
} satisfies FlagSpecs;

/** Writes one JSON object on its own line. */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value) + '\n';
}

/** Tokens per second, 0 when nothing was timed. */
export function perSecond(tokens: number, ms: number): number {
  return ms > 0 ? (tokens * 1000) / ms : 0;
}
