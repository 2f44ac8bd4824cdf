// `gatewire <command>`: dispatches to the subcommands, each loaded only when used
// so that `gatewire serve` never pays for Fastify and `gatewire proxy` never
// loads the app-server code.

const USAGE = `usage: gatewire <command> [options]

commands:
  up      [--config FILE]      run proxy + appserver(s) as one process tree (no config: the embedded default)
  proxy   --config FILE        run the edge proxy (--check validates the config and exits, like nginx -t)
  serve   APP_MODULE [...]     run an app server for a Fetch handler or a Node (req, res) listener
  version                      print the version

Run 'gatewire <command> --help' for the options of a command.`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return (await import('../appserver/cli.ts')).runServe(rest);
    case 'proxy':
      return (await import('../proxy/cli.ts')).runProxy(rest);
    case 'up':
      return (await import('./up.ts')).runUp(rest);
    case 'version':
    case '--version':
    case '-v': {
      const pkg = JSON.parse(process.getBuiltinModule('node:fs').readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
      process.stdout.write(`gatewire ${pkg.version}\n`);
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`gatewire: unknown command '${command}'\n\n${USAGE}\n`);
      return 2;
  }
}

const code = await main(process.argv.slice(2));
// A subcommand that runs a server returns -1: it keeps the process alive and exits on its own.
if (code >= 0) process.exitCode = code;
