/**
 * A loopback TCP proxy that a test can cut, black-hole and restore, to make a database or Redis
 * "unavailable" to one process without touching the real server other tests use.
 *
 * - `cut()`: closes every connection and refuses new ones (a server that went away).
 * - `retarget(port)`: closes every connection and forwards new ones elsewhere (a moved address).
 * - `blackhole()`: keeps connections open and accepts new ones, but nothing gets through in either
 *   direction (a network partition: clients without a timeout wait forever); `restore()` then
 *   delivers what was held, in order, as TCP's retransmission would.
 *
 * @module
 */

/** A proxy from a local port to a target port. */
export class TcpProxy {
  readonly port: number;
  #targetPort: number;
  #listener: Deno.Listener | null = null;
  #connections = new Set<Deno.Conn>();
  #accepting: Promise<void> | null = null;
  #isBlackholed = false;
  /** Resolved when a black hole ends; every held transfer waits for it. */
  #healed: Promise<void> = Promise.resolve();
  #heal: () => void = () => {};

  constructor(targetPort: number, port: number) {
    this.#targetPort = targetPort;
    this.port = port;
  }

  /** Starts forwarding on a free loopback port. */
  static start(targetPort: number): TcpProxy {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const proxy = new TcpProxy(targetPort, port);
    proxy.restore();
    return proxy;
  }

  /** Accepts and forwards connections again; ends a black hole (held bytes go through). */
  restore(): void {
    if (this.#isBlackholed) {
      this.#isBlackholed = false;
      this.#heal();
    }
    if (this.#listener !== null) return;
    const listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#listener = listener;
    this.#accepting = (async () => {
      try {
        for await (const conn of listener) void this.#forward(conn);
      } catch (error) {
        if (!(error instanceof Deno.errors.BadResource)) throw error;
      }
    })();
  }

  /** Closes every connection and refuses new ones, like a server that went away. */
  async cut(): Promise<void> {
    this.#listener?.close();
    this.#listener = null;
    await this.#accepting;
    for (const conn of this.#connections) closeQuietly(conn);
    this.#connections.clear();
  }

  /** Lets nothing through, silently: connections stay open, bytes wait, new ones hang. */
  blackhole(): void {
    if (this.#isBlackholed) return;
    this.#isBlackholed = true;
    this.#healed = new Promise((resolve) => (this.#heal = resolve));
  }

  /**
   * Sends new connections to another port and closes the current ones, as a virtual IP moved to a
   * promoted replica would: clients reconnect to the same address and reach the new target.
   */
  retarget(targetPort: number): void {
    this.#targetPort = targetPort;
    for (const conn of this.#connections) closeQuietly(conn);
    this.#connections.clear();
  }

  /** Closes every connection and stops listening for good. */
  async close(): Promise<void> {
    this.restore();
    await this.cut();
  }

  async #forward(client: Deno.Conn): Promise<void> {
    this.#connections.add(client);
    if (this.#isBlackholed) await this.#healed;
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: this.#targetPort });
    } catch {
      // The target is down (killed in the test): the client sees its connection close.
      this.#connections.delete(client);
      closeQuietly(client);
      return;
    }
    this.#connections.add(server);
    await Promise.allSettled([this.#pump(client, server), this.#pump(server, client)]);
    this.#connections.delete(client);
    this.#connections.delete(server);
    closeQuietly(client);
    closeQuietly(server);
  }

  /** Copies bytes from one side to the other, holding them while the proxy is a black hole. */
  async #pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        if (this.#isBlackholed) await this.#healed;
        let written = 0;
        while (written < n) written += await to.write(buffer.subarray(written, n));
      }
    } finally {
      // One direction ended: end the other too, so the pair closes.
      closeQuietly(to);
    }
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch (error) {
    // Already closed by the other direction of the pipe: nothing to do.
    if (!(error instanceof Deno.errors.BadResource)) throw error;
  }
}
