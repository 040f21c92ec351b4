/**
 * A loopback TCP proxy that a test can cut and restore, to make a database "unavailable" without
 * touching the real server other tests use.
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

  /** Accepts and forwards connections again. */
  restore(): void {
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

  /** Closes every connection and refuses new ones, like a database that went away. */
  async cut(): Promise<void> {
    this.#listener?.close();
    this.#listener = null;
    await this.#accepting;
    for (const conn of this.#connections) closeQuietly(conn);
    this.#connections.clear();
  }

  async #forward(client: Deno.Conn): Promise<void> {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: this.#targetPort });
    } catch (error) {
      closeQuietly(client);
      throw error;
    }
    this.#connections.add(client);
    this.#connections.add(server);
    await Promise.allSettled([
      client.readable.pipeTo(server.writable),
      server.readable.pipeTo(client.writable),
    ]);
    this.#connections.delete(client);
    this.#connections.delete(server);
    closeQuietly(client);
    closeQuietly(server);
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
