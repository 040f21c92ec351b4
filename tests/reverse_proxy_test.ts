import assert from "node:assert/strict";
import { test } from "./_permissions.ts";
import { recentBase } from "./_scenarios.ts";
import { freePort, spawnServer } from "./_server_process.ts";
import { makeWireEvent } from "./fixtures.ts";

const NGINX = "/usr/sbin/nginx";
const HEADER_TIMEOUT_S = 2;
const CONN_LIMIT = 20;
const DRIPPERS = 30;

const hasNginx = (() => {
  try {
    return Deno.statSync(NGINX).isFile;
  } catch {
    return false; // absent, or no permission to look: the test is ignored either way
  }
})();

/** Resolves after `ms`, or at once when `signal` aborts; never leaves a timer behind. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/** Replaces the one occurrence of `from` in `text`, so a change to the shipped file fails loudly. */
function replaceOnce(text: string, from: string, to: string): string {
  const at = text.indexOf(from);
  if (at < 0 || text.indexOf(from, at + 1) >= 0) {
    throw new Error(`docs/nginx.conf should contain "${from}" exactly once`);
  }
  return text.slice(0, at) + to + text.slice(at + from.length);
}

/** The shipped config with test ports, paths in `dir`, a short header timeout and a low limit. */
async function testConfig(dir: string, listenPort: number, appPort: number): Promise<string> {
  const shipped = await Deno.readTextFile(new URL("../docs/nginx.conf", import.meta.url));
  const edits: Array<[string, string]> = [
    ["user www-data;\n", ""],
    ["pid /run/nginx.pid;", `pid ${dir}/nginx.pid;`],
    ["error_log /var/log/nginx/error.log warn;", `error_log ${dir}/error.log info;`],
    ["access_log /var/log/nginx/access.log;", `access_log ${dir}/access.log;`],
    [
      "http {\n",
      "http {\n" +
      ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .map((kind) => `    ${kind}_temp_path ${dir}/${kind};\n`).join(""),
    ],
    ["server 127.0.0.1:8000;", `server 127.0.0.1:${appPort};`],
    ["listen 80;", `listen 127.0.0.1:${listenPort};`],
    ["client_header_timeout 10s;", `client_header_timeout ${HEADER_TIMEOUT_S}s;`],
    ["limit_conn per_source 100;", `limit_conn per_source ${CONN_LIMIT};`],
  ];
  return edits.reduce((text, [from, to]) => replaceOnce(text, from, to), shipped);
}

/** A raw connection that sends a request head and then one more line every second until closed. */
interface Dripper {
  /** Resolves when the peer has closed the connection (or `stop` was called). */
  ended: Promise<void>;
  /** Milliseconds from connect until the peer closed it; null while it is open. */
  closedAfterMs(): number | null;
  stop(): Promise<void>;
}

/** Opens a connection to `port`, sends `head`, then writes `line(n)` every second. */
async function drip(port: number, head: string, line: (n: number) => string): Promise<Dripper> {
  const encoder = new TextEncoder();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const startedMs = Date.now();
  const stopping = new AbortController();
  let closedMs: number | null = null;
  await conn.write(encoder.encode(head));
  const reading = (async () => {
    const buf = new Uint8Array(4096);
    try {
      while ((await conn.read(buf)) !== null) {
        // nginx may answer 408 before closing; only the close matters here.
      }
    } catch (error) {
      if (stopping.signal.aborted) return; // our own close interrupted the read
      if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
    }
    closedMs = Date.now() - startedMs;
  })();
  const writing = (async () => {
    for (let n = 0; closedMs === null && !stopping.signal.aborted; n++) {
      await sleep(1_000, stopping.signal);
      if (closedMs !== null || stopping.signal.aborted) return;
      try {
        await conn.write(encoder.encode(line(n)));
      } catch {
        return; // the peer closed it: the reader records when
      }
    }
  })();
  return {
    ended: reading,
    closedAfterMs: () => closedMs,
    stop: async () => {
      stopping.abort();
      conn.close();
      await Promise.all([reading, writing]);
    },
  };
}

/** Posts one valid event to `url` and returns the status and the `server` header. */
async function postEvent(url: string, eventId: string): Promise<[number, string | null]> {
  const res = await fetch(`${url}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(makeWireEvent({ event_id: eventId, atMs: recentBase() })),
  });
  await res.body?.cancel();
  return [res.status, res.headers.get("server")];
}

/** Waits until something accepts connections on `port`, or fails after `ms`. */
async function waitForPort(port: number, ms: number, nginx: Deno.ChildProcess): Promise<void> {
  const deadline = Date.now() + ms;
  let exited = false;
  nginx.status.then(() => (exited = true));
  while (true) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionRefused)) throw error;
    }
    if (exited || Date.now() > deadline) throw new Error(`Nginx did not listen on port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Stops `child` with SIGTERM (nginx's fast shutdown) and waits for it to exit. */
async function stopProcess(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch (error) {
    if (!(error instanceof TypeError)) throw error; // already exited
  }
  await child.status;
}

test({
  name:
    "[proxy] the shipped nginx.conf closes slow-header connections and caps connections per source",
  ignore: !hasNginx,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "ott-proxy-" });
    const server = await spawnServer({ DATA_DIR: `${dir}/data`, QUEUE: "memory", WORKERS: "1" });
    const drippers: Dripper[] = [];
    const slowBodies: Dripper[] = [];
    let nginx: Deno.ChildProcess | null = null;
    try {
      const port = freePort();
      const configPath = `${dir}/nginx.conf`;
      await Deno.writeTextFile(configPath, await testConfig(dir, port, server.port));
      nginx = new Deno.Command(NGINX, {
        args: [
          "-p",
          `${dir}/`,
          "-e",
          `${dir}/error.log`,
          "-c",
          configPath,
          "-g",
          "daemon off; master_process off;",
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      await waitForPort(port, 5_000, nginx);
      const url = `http://127.0.0.1:${port}`;

      // (a) A normal event passes through to the app.
      assert.deepEqual(await postEvent(url, "proxy-a"), [202, "nginx"]);

      // (b) Headers that never end: one more header line every second.
      const head = "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
      for (let i = 0; i < DRIPPERS; i++) {
        drippers.push(await drip(port, head, (n) => `X-Drip-${n}: ${"a".repeat(20)}\r\n`));
      }

      // Unfinished headers are not counted by limit_conn (nginx counts a connection once its
      // header is read), so a normal request still passes with 30 of them open.
      assert.equal((await postEvent(url, "proxy-b"))[0], 202);

      // (c) Requests whose header is complete but whose body trickles in are counted: after
      // CONN_LIMIT of them, the next request from the same address gets 503.
      const slowHead = `${head}Content-Length: 1000\r\n\r\n{`;
      for (let i = 0; i < CONN_LIMIT; i++) {
        slowBodies.push(await drip(port, slowHead, () => " "));
      }
      await new Promise((resolve) => setTimeout(resolve, 200)); // nginx reads the last head
      assert.equal((await postEvent(url, "proxy-c"))[0], 503);
      assert.ok(
        drippers.every((d) => d.closedAfterMs() === null),
        "the 503 came after a dripping one closed",
      );
      for (const d of slowBodies.splice(0)) await d.stop();

      const marginMs = 2_000;
      const deadline = new AbortController();
      await Promise.race([
        Promise.all(drippers.map((d) => d.ended)),
        sleep(HEADER_TIMEOUT_S * 1_000 + marginMs, deadline.signal),
      ]);
      deadline.abort();
      const stillOpen = drippers.filter((d) => d.closedAfterMs() === null).length;
      assert.equal(
        stillOpen,
        0,
        `${stillOpen} of ${DRIPPERS} dripping connections still open after ` +
          `${HEADER_TIMEOUT_S * 1_000 + marginMs} ms`,
      );
      const closedMs = drippers.map((d) => d.closedAfterMs()!).sort((x, y) => x - y);
      console.log(
        `[proxy] ${DRIPPERS} dripping connections closed after ${closedMs[0]}-` +
          `${closedMs[closedMs.length - 1]} ms (client_header_timeout ${HEADER_TIMEOUT_S}s)`,
      );
      assert.ok(
        closedMs[closedMs.length - 1] <= HEADER_TIMEOUT_S * 1_000 + marginMs,
        `dripping connections lived ${closedMs.join(", ")} ms`,
      );
      // Not an instant refusal: they were open for about the header timeout.
      assert.ok(
        closedMs[0] >= HEADER_TIMEOUT_S * 1_000 - 500,
        `closed too early: ${closedMs[0]} ms`,
      );

      // The slow bodies are gone: the limit is free again (once nginx has seen them close).
      let status = 0;
      for (let i = 0; i < 20 && status !== 202; i++) {
        if (i > 0) await new Promise((resolve) => setTimeout(resolve, 100));
        status = (await postEvent(url, `proxy-d${i}`))[0];
      }
      assert.equal(status, 202);

      // nginx's own log names the causes: the header timeout, and the per-source limit.
      const log = await Deno.readTextFile(`${dir}/error.log`);
      const timedOut = log.match(/client timed out .* while reading client request headers/g);
      assert.equal(timedOut?.length, DRIPPERS, log);
      assert.match(log, /limiting connections by zone "per_source"/);
    } finally {
      for (const d of [...drippers, ...slowBodies]) await d.stop();
      if (nginx !== null) await stopProcess(nginx);
      server.kill("SIGTERM");
      await server.exited();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
