export async function runProxy(_argv: string[]): Promise<number> {
  process.stderr.write('gatewire proxy: not implemented yet\n');
  return 1;
}
