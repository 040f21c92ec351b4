/**
 * Real server processes for fault tests: spawn `main.ts` on a free loopback port, wait until it is
 * ready, send it load, kill it (SIGKILL, SIGSTOP, SIGTERM). Everything stays on 127.0.0.1 and every
 * loop is bounded.
 *
 * @module
 */

/** A running `main.ts` child process. */
export interface ServerProcess {
  url: string;
  port: number;
  child: Deno.ChildProcess;
  /** Sends a signal to the process. */
  kill(signal: Deno.Signal): void;
  /** Waits for the process to exit and returns its stderr. */
  exited(): Promise<string>;
  /** Its stderr so far (for a failure message while it still runs). */
  logSoFar(): string;
}

/** A loopback port nothing listens on right now. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Starts the server with the given environment and waits for `/healthz` (and `/readyz`). */
export async function spawnServer(
  env: Record<string, string>,
  port = freePort(),
): Promise<ServerProcess> {
  const main = new URL("../main.ts", import.meta.url).pathname;
  const command = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-write",
      "--allow-sys",
      main,
      "--port",
      String(port),
    ],
    env: {
      LISTEN_HOST: "127.0.0.1",
      IP_HASH_SECRET: "fault-test-secret-0123456789",
      LOG_LEVEL: "info",
      ...env,
    },
    stdout: "null",
    stderr: "piped",
  });
  const child = command.spawn();
  const stderrChunks: Uint8Array[] = [];
  const stderrDone = (async () => {
    for await (const chunk of child.stderr) stderrChunks.push(chunk);
  })();
  const url = `http://127.0.0.1:${port}`;
  const server: ServerProcess = {
    url,
    port,
    child,
    kill: (signal) => {
      try {
        child.kill(signal);
      } catch (error) {
        if (!(error instanceof TypeError)) throw error; // already exited
      }
    },
    exited: async () => {
      await child.status;
      await stderrDone;
      return new TextDecoder().decode(concat(stderrChunks));
    },
    logSoFar: () => new TextDecoder().decode(concat(stderrChunks)),
  };
  const deadline = Date.now() + 60_000;
  while (true) {
    try {
      const res = await fetch(`${url}/readyz`);
      await res.body?.cancel();
      if (res.status === 200) return server;
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // connection refused while starting
    }
    if (Date.now() > deadline) {
      server.kill("SIGKILL");
      throw new Error(`Server on port ${port} did not become ready: ${await server.exited()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/** Result of {@link sendLoad}: the ids of events the server acknowledged with 202. */
export interface LoadResult {
  acknowledged: Set<string>;
  sent: Set<string>;
  statuses: Record<number, number>;
}

/**
 * Sends batches of unique events from `connections` loops until `stop` resolves or `maxBatches` is
 * reached. Network errors (the server being killed) end a loop quietly; they are expected.
 */
export async function sendLoad(options: {
  url: string | (() => string);
  makeBatch: (batchNumber: number) => Array<{ event_id: string }>;
  connections: number;
  maxBatches: number;
  stop: Promise<void>;
  /** Sends a batch again after a 503 or a failed request, as a TV retries (up to 20 times). */
  retries?: boolean;
}): Promise<LoadResult> {
  const result: LoadResult = { acknowledged: new Set(), sent: new Set(), statuses: {} };
  let isStopped = false;
  options.stop.then(() => (isStopped = true));
  let next = 0;
  const loop = async () => {
    type Retry = { batch: Array<{ event_id: string }>; left: number };
    const retries: Retry[] = [];
    while (!isStopped && next < options.maxBatches) {
      const retry = retries.pop();
      const batch = retry?.batch ?? options.makeBatch(next++);
      const left = retry?.left ?? 20;
      const again = () => {
        if (options.retries && left > 0) retries.push({ batch, left: left - 1 });
      };
      for (const e of batch) result.sent.add(e.event_id);
      const base = typeof options.url === "string" ? options.url : options.url();
      try {
        // A server cut from its queue may never answer: the client gives up, as a TV would.
        const res = await fetch(`${base}/events/batch`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(batch),
          signal: AbortSignal.timeout(10_000),
        });
        result.statuses[res.status] = (result.statuses[res.status] ?? 0) + 1;
        if (res.status === 202) {
          const body = await res.json();
          const rejected = new Set(body.rejected.map((r: { index: number }) => r.index));
          batch.forEach((e, i) => rejected.has(i) || result.acknowledged.add(e.event_id));
        } else {
          await res.body?.cancel();
          if (res.status === 503) {
            again();
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }
      } catch (error) {
        const isTimeout = error instanceof DOMException && error.name === "TimeoutError";
        if (!(error instanceof TypeError) && !isTimeout) throw error;
        again();
        result.statuses[0] = (result.statuses[0] ?? 0) + 1;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };
  await Promise.all(Array.from({ length: options.connections }, loop));
  return result;
}
