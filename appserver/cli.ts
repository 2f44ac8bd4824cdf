export async function runServe(_argv: string[]): Promise<number> {
  process.stderr.write('gatewire serve: not implemented yet\n');
  return 1;
}
