/**
 * The shape of one `mixq` subcommand. Each lives in its own file under server/src/cli/ and is listed once in
 * the table of server/src/cli.ts.
 */
import type { FlagSpecs } from './args';

/** Where a command writes (the real process streams, or buffers in tests). */
export interface CliIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

export interface Command {
  name: string;
  /** One line for `mixq --help`. */
  summary: string;
  /** Usage line(s) after `mixq NAME`. */
  usage: string;
  flags: FlagSpecs;
  /** Runs with the arguments after the command name; resolves to the exit code. Throws UsageError for bad usage. */
  run(argv: readonly string[], io: CliIo): Promise<number>;
}
