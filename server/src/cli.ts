/**
 * The `mixq` command-line tool (bin/mixq.js calls main). Subcommands live in server/src/cli/, one file each,
 * and are listed once in `commands` below: adding one is a new file plus one line here.
 *
 * Exit codes: 0 success, 1 runtime error (bad model, bad file), 2 usage error (unknown flag, missing value).
 * Errors go to stderr as "mixq <command>: <message>".
 */
import { formatFlags, UsageError } from './cli/args';
import { benchCommand } from './cli/bench';
import type { CliIo, Command } from './cli/command';
import { completeCommand } from './cli/complete';
import { generateCommand } from './cli/generate';
import { pplCommand } from './cli/ppl';
import { profileCommand } from './cli/profile';
import { quantizeCommand } from './cli/quantize';
import { serveCommand } from './cli/serve';

export const commands: readonly Command[] = [
  completeCommand,
  generateCommand,
  pplCommand,
  benchCommand,
  profileCommand,
  quantizeCommand,
  serveCommand,
];

function topHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    'usage: mixq <command> [flags]',
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    "Run 'mixq <command> --help' for the flags of a command.",
    '',
  ].join('\n');
}

function commandHelp(c: Command): string {
  const withHelp = { ...c.flags, help: { type: 'boolean' as const, help: 'show this help' } };
  return `usage: mixq ${c.name} ${c.usage}\n\n${c.summary}\n\nflags:\n${formatFlags(withHelp)}\n`;
}

/** Runs the CLI with argv (without node and the script); resolves to the exit code. */
export async function main(argv: readonly string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    (name === undefined ? io.stderr : io.stdout).write(topHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    io.stdout.write(`${(require('../../package.json') as { version: string }).version}\n`);
    return 0;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    io.stderr.write(`mixq: unknown command "${name}"\n\n${topHelp()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(commandHelp(command));
    return 0;
  }
  try {
    return await command.run(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`mixq ${command.name}: ${e.message}\n(usage: mixq ${command.name} ${command.usage})\n`);
      return 2;
    }
    io.stderr.write(`mixq ${command.name}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
