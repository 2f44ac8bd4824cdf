export async function runUp(_argv: string[]): Promise<number> {
  process.stderr.write('gatewire up: not implemented yet\n');
  return 1;
}
