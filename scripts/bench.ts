/**
 * `deno task bench`: ingest throughput and latency of the pipeline as ratios to a bare `Deno.serve`
 * measured in the same run on the same machine, end-to-end throughput (until flushed) of each log
 * backend, and server memory. Prints a Markdown table for the README.
 *
 * @module
 */
import { parseArgs } from "node:util";
// @ts-types="@types/pg"
import pg from "pg";
import { z } from "zod";

const ARGS = z.object({
  duration: z.coerce.number().min(1).max(120).default(10),
  connections: z.coerce.number().int().min(1).max(512).default(50),
  "e2e-events": z.coerce.number().int().min(1000).max(5_000_000).default(200_000),
  "database-url": z.string().url().default("postgres://postgres@127.0.0.1:5432/test"),
  "redis-url": z.string().url().default("redis://127.0.0.1:6379"),
  json: z.boolean().default(false),
});

type Args = z.infer<typeof ARGS>;

interface LoadResult {
  requests: number;
  accepted_events: number;
  seconds: number;
  statuses: Record<string, number>;
  p50_ms: number;
  p99_ms: number;
}

interface Row {
  scenario: string;
  reqPerS: number | null;
  eventsPerS: number;
  ratio: string;
  p50: number | null;
  p99: number | null;
  rssMb: number | null;
  note: string;
}

const here = new URL(".", import.meta.url).pathname;
const root = new URL("..", import.meta.url).pathname;

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

interface Server {
  url: string;
  child: Deno.ChildProcess;
}

async function startProcess(args: string[], env: Record<string, string>): Promise<Server> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [...args.map((a) => a.replace("{port}", String(port)))],
    env,
    cwd: root,
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/healthz`, { method: "GET" });
      await res.body?.cancel();
      if (res.status < 500) return { url, child };
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  child.kill("SIGKILL");
  throw new Error(`Cannot benchmark: "${args.join(" ")}" did not start within 60 s`);
}

async function stop(server: Server): Promise<void> {
  try {
    server.child.kill("SIGTERM");
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
  }
  await server.child.status;
}

async function load(
  url: string,
  path: string,
  perRequest: number,
  connections: number,
  seconds: number,
  maxEvents: number,
): Promise<LoadResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      `${here}_bench_load.ts`,
      url,
      path,
      String(perRequest),
      String(connections),
      String(seconds),
      String(maxEvents),
      `b${crypto.randomUUID().slice(0, 8)}`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`Load generator failed against ${url}${path}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** Peak RSS of a process in MB (VmHWM; read with `cat`, since Deno guards /proc behind --allow-all). */
function rssMb(pid: number): number | null {
  const out = new Deno.Command("cat", {
    args: [`/proc/${pid}/status`],
    stdout: "piped",
    stderr: "null",
  })
    .outputSync();
  if (!out.success) return null;
  const hwm = /VmHWM:\s+(\d+) kB/.exec(new TextDecoder().decode(out.stdout));
  return hwm === null ? null : Math.round(Number(hwm[1]) / 1024);
}

/** Sends `events` in batches of 100 and waits until the summary counts them all (flushed). */
async function endToEnd(server: Server, args: Args): Promise<{ eventsPerS: number; note: string }> {
  const started = performance.now();
  const result = await load(
    server.url,
    "/events/batch",
    100,
    args.connections,
    600,
    args["e2e-events"],
  );
  const deadline = Date.now() + 300_000;
  while (Date.now() < deadline) {
    const summary = await (await fetch(`${server.url}/stats/summary`)).json();
    if (summary.total_events >= result.accepted_events) {
      const seconds = (performance.now() - started) / 1000;
      const refused = result.statuses["503"] ?? 0;
      return {
        eventsPerS: result.accepted_events / seconds,
        note: `${result.accepted_events} events flushed in ${seconds.toFixed(1)} s` +
          (refused > 0 ? `, ${refused} batches answered 503 and retried` : ""),
      };
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("Cannot finish end-to-end run: events were not flushed within 300 s");
}

async function withDatabase<T>(serverUrl: string, fn: (url: string) => Promise<T>): Promise<T> {
  const name = `ott_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
    const url = new URL(serverUrl);
    url.pathname = `/${name}`;
    return await fn(url.toString());
  } finally {
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
}

async function isReachable(check: () => Promise<unknown>): Promise<boolean> {
  try {
    await check();
    return true;
  } catch (error) {
    if (error instanceof Error) return false;
    throw error;
  }
}

function serverArgs(): string[] {
  return [
    "run",
    "--allow-net",
    "--allow-env",
    "--allow-read",
    "--allow-write",
    "--allow-sys",
    `${root}main.ts`,
    "--port",
    "{port}",
  ];
}

async function run(args: Args): Promise<Row[]> {
  const rows: Row[] = [];
  const baseEnv = {
    LOG_LEVEL: "warn",
    LISTEN_HOST: "127.0.0.1",
    IP_HASH_SECRET: "bench-secret-0123456789abcdef",
  };
  const dataDir = await Deno.makeTempDir({ prefix: "ott-bench-" });
  const baseline = await startProcess([
    "run",
    "--allow-net=127.0.0.1",
    `${here}_bench_baseline.ts`,
    "{port}",
  ], {});
  // The default log is durable (postgres); the ingest rows measure the memory queue, which the
  // README compares with earlier runs, and the end-to-end rows measure each log.
  const pipeline = await startProcess(serverArgs(), {
    ...baseEnv,
    QUEUE: "memory",
    DATA_DIR: dataDir,
  });
  try {
    const d = args.duration;
    const c = args.connections;
    const bareSingle = await load(baseline.url, "/events", 1, c, d, Infinity);
    const ourSingle = await load(pipeline.url, "/events", 1, c, d, Infinity);
    const bareBatch = await load(baseline.url, "/events/batch", 100, c, d, Infinity);
    const ourBatch = await load(pipeline.url, "/events/batch", 100, c, d, Infinity);
    const rate = (r: LoadResult) => r.requests / r.seconds;
    const events = (r: LoadResult) => r.accepted_events / r.seconds;
    const bareRss = rssMb(baseline.child.pid);
    rows.push(
      row(
        "bare Deno.serve, single event",
        rate(bareSingle),
        rate(bareSingle),
        "1.00",
        bareSingle,
        bareRss,
      ),
      row(
        "POST /events (memory queue, PGlite)",
        rate(ourSingle),
        events(ourSingle),
        (rate(ourSingle) / rate(bareSingle)).toFixed(2),
        ourSingle,
        rssMb(pipeline.child.pid),
      ),
      row(
        "bare Deno.serve, 100-event body",
        rate(bareBatch),
        rate(bareBatch) * 100,
        "1.00",
        bareBatch,
        bareRss,
      ),
      row(
        "POST /events/batch x100 (memory queue, PGlite)",
        rate(ourBatch),
        events(ourBatch),
        (rate(ourBatch) / rate(bareBatch)).toFixed(2),
        ourBatch,
        rssMb(pipeline.child.pid),
      ),
    );
    const bareBatchEvents = rate(bareBatch) * 100;
    const e2e = async (label: string, server: Server) => {
      const result = await endToEnd(server, args);
      return { label, ...result, rss: rssMb(server.child.pid) };
    };
    await stop(pipeline);
    const freshDir = await Deno.makeTempDir({ prefix: "ott-bench-e2e-" });
    const results = [];
    const memory = await startProcess(serverArgs(), {
      ...baseEnv,
      QUEUE: "memory",
      DATA_DIR: freshDir,
    });
    results.push(await e2e("end-to-end, QUEUE=memory, PGlite", memory));
    await stop(memory);
    // The default start: durable log on embedded PGlite.
    const defaultDir = await Deno.makeTempDir({ prefix: "ott-bench-e2e-" });
    const durable = await startProcess(serverArgs(), { ...baseEnv, DATA_DIR: defaultDir });
    results.push(await e2e("end-to-end, QUEUE=postgres (default), PGlite", durable));
    await stop(durable);
    await Deno.remove(defaultDir, { recursive: true });
    const hasPostgres = await isReachable(async () => {
      const client = new pg.Client({ connectionString: args["database-url"] });
      await client.connect();
      await client.end();
    });
    if (hasPostgres) {
      for (const queue of ["memory", "postgres", "redis"]) {
        await withDatabase(args["database-url"], async (databaseUrl) => {
          const env: Record<string, string> = {
            ...baseEnv,
            DATABASE_URL: databaseUrl,
            QUEUE: queue,
          };
          if (queue === "redis") {
            env.REDIS_URL = args["redis-url"];
            env.REDIS_KEY_PREFIX = `ott-bench-${crypto.randomUUID().slice(0, 8)}:`;
          }
          let server: Server;
          try {
            server = await startProcess(serverArgs(), env);
          } catch (error) {
            results.push({
              label: `end-to-end, QUEUE=${queue}, PostgreSQL`,
              eventsPerS: 0,
              note: `skipped: ${(error as Error).message}`,
              rss: null,
            });
            return;
          }
          try {
            results.push(await e2e(`end-to-end, QUEUE=${queue}, PostgreSQL`, server));
          } finally {
            await stop(server);
          }
        });
      }
    }
    const memoryRate = results[0].eventsPerS;
    for (const r of results) {
      rows.push({
        scenario: r.label,
        reqPerS: null,
        eventsPerS: r.eventsPerS,
        ratio: `${(r.eventsPerS / bareBatchEvents).toFixed(2)} (x${
          (r.eventsPerS / memoryRate).toFixed(2)
        } of memory/PGlite)`,
        p50: null,
        p99: null,
        rssMb: r.rss,
        note: r.note,
      });
    }
    await Deno.remove(freshDir, { recursive: true });
  } finally {
    await stop(baseline);
    await stop(pipeline).catch(() => undefined);
    await Deno.remove(dataDir, { recursive: true });
  }
  return rows;
}

function row(
  scenario: string,
  reqPerS: number,
  eventsPerS: number,
  ratio: string,
  result: LoadResult,
  rss: number | null,
): Row {
  const refused = result.statuses["503"] ?? 0;
  return {
    scenario,
    reqPerS,
    eventsPerS,
    ratio,
    p50: result.p50_ms,
    p99: result.p99_ms,
    rssMb: rss,
    note: refused > 0 ? `${refused} answered 503 (backpressure)` : "",
  };
}

function machine(): string {
  const out = new Deno.Command("cat", { args: ["/proc/cpuinfo"], stdout: "piped", stderr: "null" })
    .outputSync();
  const cpu = /model name\s*:\s*(.+)/.exec(new TextDecoder().decode(out.stdout))?.[1] ??
    "unknown CPU";
  return `${navigator.hardwareConcurrency} cores (${cpu}), Deno ${Deno.version.deno}, ` +
    new Date().toISOString().slice(0, 10);
}

function markdown(rows: Row[], args: Args): string {
  const f = (n: number | null, digits = 0) =>
    n === null ? "" : n.toLocaleString("en-US", { maximumFractionDigits: digits });
  const lines = [
    `Machine: ${machine()}. Load: ${args.connections} connections, ${args.duration} s per scenario, ` +
    `generator in its own process on the same cores. End-to-end: ${args["e2e-events"]} events in ` +
    `batches of 100, timed until \`/stats/summary\` counts them all.`,
    "",
    "| scenario | req/s | events/s | ratio to bare Deno.serve | p50 ms | p99 ms | server peak RSS MB | note |",
    "|---|---|---|---|---|---|---|---|",
    ...rows.map((r) =>
      `| ${r.scenario} | ${f(r.reqPerS)} | ${f(r.eventsPerS)} | ${r.ratio} | ${f(r.p50, 1)} | ${
        f(r.p99, 1)
      } | ${f(r.rssMb)} | ${r.note} |`
    ),
  ];
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      duration: { type: "string" },
      connections: { type: "string" },
      "e2e-events": { type: "string" },
      "database-url": { type: "string" },
      "redis-url": { type: "string" },
      json: { type: "boolean" },
    },
  });
  const parsed = ARGS.safeParse(values);
  if (!parsed.success) {
    console.error(parsed.error.issues.map((i) => `--${i.path.join(".")}: ${i.message}`).join("\n"));
    Deno.exit(2);
  }
  const rows = await run(parsed.data);
  console.log(parsed.data.json ? JSON.stringify(rows, null, 2) : markdown(rows, parsed.data));
}
