// Lists of IP addresses and CIDR blocks ("10.0.0.0/8", "::1", "127.0.0.1"): the
// proxy's trust_proxy and the appserver's --allow-from. One reading of them: an
// IPv4 peer of a dual-stack socket shows up as ::ffff:a.b.c.d and matches the
// IPv4 entries, on both sides.
import net, { BlockList } from 'node:net';

/** Whether `s` is an IP address or a CIDR block with a valid prefix length. */
export function validCidr(s: string): boolean {
  const [ip, bits, extra] = s.split('/');
  if (extra !== undefined) return false;
  const family = net.isIP(ip);
  if (!family) return false;
  if (bits === undefined) return true;
  if (!/^\d+$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

/** A matcher for the list; throws on an entry validCidr refuses (configs check first and say where). */
export function compileNetworks(cidrs: readonly string[]): (ip: string) => boolean {
  if (cidrs.length === 0) return () => false;
  const list = new BlockList();
  for (const cidr of cidrs) {
    if (!validCidr(cidr)) throw new Error(`'${cidr}' is not an IP address or CIDR`);
    const [addr, bits] = cidr.split('/');
    const family = net.isIPv6(addr) ? 'ipv6' : 'ipv4';
    list.addSubnet(addr, bits === undefined ? (family === 'ipv6' ? 128 : 32) : Number(bits), family);
  }
  return (ip) => {
    if (ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7))) return list.check(ip.slice(7), 'ipv4');
    const family = net.isIP(ip);
    return family !== 0 && list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
  };
}
