// The request target as the proxy treats it: passed upstream byte for byte, never
// normalised (NGINX's proxy_pass/uwsgi_pass without a URI do the same), with one
// refusal NGINX also makes: a path whose dot segments climb above the root.

/**
 * Whether dot segments take the path above "/" (NGINX answers 400). Counted the way the most
 * lenient app would resolve it: `/`, `\`, `%2f` and `%5c` separate segments, `%2e` is a dot,
 * empty segments do not count (merged slashes). One pass, no allocation.
 */
export function climbsAboveRoot(path: string): boolean {
  const len = path.length;
  let depth = 0;
  let dots = 0;
  let other = false;
  let empty = true;
  for (let i = 1; i <= len; i++) {
    let c = i < len ? path.charCodeAt(i) : 47;
    let sep = c === 47 || c === 92;
    if (c === 37 /* % */ && i + 2 < len) {
      const h = path.charCodeAt(i + 1);
      const l = path.charCodeAt(i + 2) | 0x20;
      if (h === 50 && (l === 101 || l === 102)) {
        // %2e (dot) or %2f (slash)
        i += 2;
        if (l === 101) c = 46;
        else sep = true;
      } else if (h === 53 && l === 99) {
        // %5c (backslash)
        i += 2;
        sep = true;
      }
    }
    if (sep) {
      if (!empty) {
        if (!other && dots === 2) {
          if (--depth < 0) return true;
        } else if (other || dots !== 1) depth++;
      }
      dots = 0;
      other = false;
      empty = true;
      continue;
    }
    empty = false;
    if (c === 46) dots++;
    else other = true;
  }
  return false;
}
