// The lazy Request and Response (fetch-request.ts, fetch-response.ts) answer the
// common members themselves and build undici's real object only when the app
// needs more. This wires every other member of the native prototype to that
// materialized object, once at load. (undici's own functions brand-check their
// arguments by private fields: undici-globals.ts hands them the materialized
// object.)

interface Materializable {
  materialize(): object;
}

export function delegateToMaterialized(light: { prototype: object }, native: { prototype: object }): void {
  const proto = light.prototype as Record<PropertyKey, unknown>;
  for (const name of Object.getOwnPropertyNames(native.prototype)) {
    if (name === 'constructor' || Object.hasOwn(proto, name)) continue;
    const d = Object.getOwnPropertyDescriptor(native.prototype, name)!;
    if (typeof d.value === 'function') {
      Object.defineProperty(proto, name, {
        value(this: Materializable, ...args: unknown[]) {
          const real = this.materialize() as unknown as Record<string, (...a: unknown[]) => unknown>;
          return real[name](...args);
        },
        writable: true,
        configurable: true,
      });
    } else if (d.get) {
      Object.defineProperty(proto, name, {
        get(this: Materializable) {
          return (this.materialize() as unknown as Record<string, unknown>)[name];
        },
        configurable: true,
      });
    }
  }
  Object.setPrototypeOf(light.prototype, native.prototype);
}
