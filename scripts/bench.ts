/**
 * `deno task bench`: ingest throughput and latency of the pipeline as ratios to a bare `Deno.serve`
 * measured in the same run on the same machine, end-to-end throughput (until flushed) of each log
 * backend, server memory, and the performance targets as ratios to ceilings measured in the same run:
 * a bare `Deno.serve` that only `JSON.parse`s the batch bodies, and PostgreSQL's own `COPY` of the
 * same events into a copy of `raw_events`. Prints Markdown tables for the README (or `--json`).
 * `deno task bench soak [--minutes 60]` instead runs the memory soak of `_bench_soak.ts`.
 * `deno task bench history [--scale F] [--days-list 7,30,395]` instead runs the read-cost-against-
 * stored-history bench of `_bench_history.ts`.
 * `deno task bench qoe [--e2e-events 300000] [--against DIR]` instead runs the QoE traffic-mix bench
 * of `_bench_qoe.ts`; `deno task bench anomaly [--days 6.5] [--titles 12]` the scripted week of the
 * anomaly detector (`_bench_anomaly.ts`).
 *
 * @module
 */
// @ts-types="@types/pg"
import pg from "pg";
import { type FreshnessResult, measureFreshness } from "./_bench_freshness.ts";
import { measureMemoryPerUser, type MemoryResult } from "./_bench_memory.ts";
import { z } from "zod";
import { type CopyCeiling, copyCeiling, hasPsql } from "./_bench_copy.ts";
import {
  BASE_ENV,
  parseCli,
  processMemory,
  type Server,
  serverArgs,
  sleep,
  StartError,
  startProcess,
  stop,
  withDatabase,
} from "./_bench_server.ts";
import { hasWrk, runWrk, type WrkResult } from "./_bench_wrk.ts";

const ARGS = z.object({
  duration: z.coerce.number().min(1).max(120).default(10),
  connections: z.coerce.number().int().min(1).max(512).default(50),
  // Long enough that the final flush (up to FLUSH_INTERVAL_MS after the last event) weighs little.
  "e2e-events": z.coerce.number().int().min(1000).max(5_000_000).default(500_000),
  "database-url": z.string().url().default("postgres://postgres@127.0.0.1:5432/test"),
  "redis-url": z.string().url().default("redis://127.0.0.1:6379"),
  // The memory target is defined at 1M users within the window: fixed costs (young generations, the
  // columns' spare room) would weigh 5x more per user at 200k.
  "memory-users": z.coerce.number().int().min(0).max(2_000_000).default(1_000_000),
  json: z.boolean().default(false),
});

type Args = z.infer<typeof ARGS>;

/** Events per batch body, in the batch rows, the JSON.parse ceiling and the end-to-end runs. */
const BATCH = 500;
/** The end-to-end goal: durable default log on PostgreSQL, as a share of the COPY ceiling. */
const E2E_COPY_GOAL = 0.4;
/** The single-event goal: `POST /events` (durable log, PostgreSQL, auth on) as a share of bare. */
const SINGLE_GOAL = 0.3;
/** Freshness goal: p99 from 202 to visible at most the flush interval plus this, at half the peak. */
const FRESHNESS_SLACK_MS = 250;
/** The server's default FLUSH_INTERVAL_MS, which the freshness run uses. */
const FLUSH_INTERVAL_MS = 1_000;
/** Memory goal: server RSS per active user (each with its own TV), in kB. */
const MEMORY_GOAL_KB = 1;
/** Viewers of the memory step's passivation run, which only checks that entities go away. */
const RECLAIM_USERS = 200_000;
/** Seconds of discarded wrk load before each measured wrk run (JIT, connection pools). */
const WRK_WARMUP_S = 1;

interface LoadResult {
  requests: number;
  accepted_events: number;
  seconds: number;
  /** Epoch ms of the generator's first request (after its own start-up). */
  started_at_ms: number;
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

/** One performance target: a ratio measured in this run against its goal (null: reported only). */
interface Target {
  target: string;
  ratio: number | null;
  goal: number | null;
  /** The goal is an upper bound (freshness, memory) instead of a lower one. */
  isAtMost?: boolean;
  /** Printed after the numbers; "x" (a ratio) unless given. */
  unit?: string;
  met: boolean | null;
  note: string;
}

const here = new URL(".", import.meta.url).pathname;
const benchStarted = performance.now();

/** A progress line on stderr (stdout carries only the report). */
function progress(message: string): void {
  console.error(`bench +${((performance.now() - benchStarted) / 1000).toFixed(0)} s: ${message}`);
}

async function load(
  url: string,
  path: string,
  perRequest: number,
  connections: number,
  seconds: number,
  maxEvents: number,
): Promise<LoadResult> {
  progress(`load ${url}${path}, ${perRequest} event(s) per request`);
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
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`Load generator failed against ${url}${path}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** Peak RSS of a process in MB (VmHWM), or null once it is gone. */
async function rssMb(pid: number): Promise<number | null> {
  const memory = await processMemory(pid);
  return memory === null ? null : Math.round(memory.hwmKb / 1024);
}

/** How long the summary's count may stand still before a flush wait gives up. */
const STALL_MS = 60_000;

/**
 * Waits until `/stats/summary` counts at least `events`; returns the count, or null when `timeoutMs`
 * passed or the count stood still for {@link STALL_MS} (a broken pipeline fails fast).
 */
async function waitCounted(
  server: Server,
  events: number,
  timeoutMs: number,
  token?: string,
): Promise<number | null> {
  const deadline = Date.now() + timeoutMs;
  const headers: Record<string, string> = token === undefined
    ? {}
    : { authorization: `Bearer ${token}` };
  let total = -1;
  let changedAt = Date.now();
  while (Date.now() < deadline && Date.now() - changedAt < STALL_MS) {
    const res = await fetch(`${server.url}/stats/summary`, { headers });
    if (!res.ok) {
      throw new Error(`Cannot read /stats/summary: ${res.status} ${await res.text()}`);
    }
    const now: number = (await res.json()).total_events;
    if (now >= events) return now;
    if (now !== total) changedAt = Date.now();
    total = now;
    await sleep(100);
  }
  return null;
}

/**
 * Sends `events` in batches of {@link BATCH} and waits until the summary counts them all (flushed),
 * after a warm-up of a tenth as many events, also counted, so the server's code is compiled (its
 * first seconds run interpreted code) and the time measured is the pipeline's, not start-up's. The
 * clock starts at the generator's first request, not at its process start.
 */
async function endToEnd(server: Server, args: Args): Promise<{ eventsPerS: number; note: string }> {
  const warmupEvents = Math.max(BATCH, Math.round(args["e2e-events"] / 10 / BATCH) * BATCH);
  const warmup = await load(
    server.url,
    "/events/batch",
    BATCH,
    args.connections,
    600,
    warmupEvents,
  );
  if (await waitCounted(server, warmup.accepted_events, 300_000) === null) {
    throw new Error(`Cannot finish the end-to-end warm-up: ${warmup.accepted_events} not flushed`);
  }
  const result = await load(
    server.url,
    "/events/batch",
    BATCH,
    args.connections,
    600,
    args["e2e-events"],
  );
  const counted = await waitCounted(
    server,
    warmup.accepted_events + result.accepted_events,
    300_000,
  );
  if (counted === null) {
    throw new Error(
      `Cannot finish end-to-end run: ${result.accepted_events} accepted events were not flushed ` +
        `within 300 s (or the count stood still for ${STALL_MS / 1000} s)`,
    );
  }
  const seconds = (Date.now() - result.started_at_ms) / 1000;
  const refused = (warmup.statuses["503"] ?? 0) + (result.statuses["503"] ?? 0);
  const other = Object.entries(result.statuses)
    .filter(([status]) => status !== "202" && status !== "503")
    .map(([status, n]) => `${n} answered ${status === "0" ? "network error" : status}`);
  return {
    eventsPerS: result.accepted_events / seconds,
    note: `${result.accepted_events} events flushed in ${seconds.toFixed(1)} s after ` +
      `${warmup.accepted_events} warm-up events` +
      (refused > 0 ? `, ${refused} batches answered 503 and were not resent` : "") +
      (other.length > 0 ? `, ${other.join(", ")}` : ""),
  };
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

/** 32 random hex characters, for bearer tokens. */
const randomSecret = () =>
  Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
    .join("");

/** wrk once for warm-up (discarded), then measured. */
async function wrkRun(
  url: string,
  args: Args,
  token: string,
  dir: string,
): Promise<WrkResult> {
  const options = { url, connections: args.connections, token, dir };
  progress(`wrk ${url}`);
  await runWrk({ ...options, seconds: WRK_WARMUP_S });
  return await runWrk({ ...options, seconds: args.duration });
}

function wrkNote(r: WrkResult, extra = ""): string {
  return `wrk: ${r.requests} requests, non-2xx ${r.non2xx}, socket errors ${r.socketErrors}` +
    extra;
}

const ratio = (a: number, b: number) => (b > 0 ? a / b : 0);

/** An error as a one-line table note (a start failure's stderr was passed through above). */
const errorNote = (error: Error) =>
  error instanceof StartError ? `${error.summary} (see its stderr above)` : error.message;

async function run(args: Args): Promise<{ rows: Row[]; targets: Target[] }> {
  const rows: Row[] = [];
  // Blank values count as unset in the server's config, so a caller's own DATABASE_URL, QUEUE or
  // tokens cannot leak into a scenario that does not set them.
  const baseEnv = {
    ...BASE_ENV,
    DATABASE_URL: "",
    QUEUE: "",
    API_TOKENS: "",
    INGEST_TOKENS: "",
    READ_TOKENS: "",
  };
  const hasPostgres = await isReachable(async () => {
    const client = new pg.Client({ connectionString: args["database-url"] });
    await client.connect();
    await client.end();
  });
  const wrkAvailable = await hasWrk();
  const psqlAvailable = await hasPsql();
  const dataDir = await Deno.makeTempDir({ prefix: "ott-bench-" });
  const baseline = await startProcess([
    "run",
    "--allow-net=127.0.0.1",
    `${here}_bench_baseline.ts`,
    "{port}",
  ], {});
  // The default log is durable (postgres); the ingest rows measure the memory queue, which the
  // README compares with earlier runs, and the end-to-end rows measure each log.
  let pipeline: Server | null = null;
  let parseEvents = 0;
  let wrkBare: WrkResult | null = null;
  let wrkOurs: WrkResult | null = null;
  let wrkNoteText = "";
  let copy: CopyCeiling | null = null;
  let copySkipped = "";
  try {
    pipeline = await startProcess(serverArgs(), {
      ...baseEnv,
      QUEUE: "memory",
      DATA_DIR: dataDir,
    });
    const d = args.duration;
    const c = args.connections;
    const bareSingle = await load(baseline.url, "/events", 1, c, d, Infinity);
    const ourSingle = await load(pipeline.url, "/events", 1, c, d, Infinity);
    const bareBatch = await load(baseline.url, "/events/batch", BATCH, c, d, Infinity);
    const ourBatch = await load(pipeline.url, "/events/batch", BATCH, c, d, Infinity);
    const rate = (r: LoadResult) => r.requests / r.seconds;
    const events = (r: LoadResult) => r.accepted_events / r.seconds;
    const bareRss = await rssMb(baseline.child.pid);
    const bareBatchEvents = rate(bareBatch) * BATCH;
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
        ratio(rate(ourSingle), rate(bareSingle)).toFixed(2),
        ourSingle,
        await rssMb(pipeline.child.pid),
      ),
      row(
        `bare Deno.serve, ${BATCH}-event body`,
        rate(bareBatch),
        bareBatchEvents,
        "1.00",
        bareBatch,
        bareRss,
      ),
      row(
        `POST /events/batch x${BATCH} (memory queue, PGlite)`,
        rate(ourBatch),
        events(ourBatch),
        ratio(rate(ourBatch), rate(bareBatch)).toFixed(2),
        ourBatch,
        await rssMb(pipeline.child.pid),
      ),
    );
    await stop(pipeline);

    // JSON.parse ceiling: the same bodies, parsed and answered, nothing else.
    const parser = await startProcess([
      "run",
      "--allow-net=127.0.0.1",
      `${here}_bench_parse.ts`,
      "{port}",
    ], {});
    try {
      const parsed = await load(parser.url, "/events/batch", BATCH, c, d, Infinity);
      parseEvents = events(parsed);
      rows.push(
        row(
          `ceiling: bare Deno.serve + JSON.parse, ${BATCH}-event body`,
          rate(parsed),
          parseEvents,
          ratio(rate(parsed), rate(bareBatch)).toFixed(2),
          parsed,
          await rssMb(parser.child.pid),
        ),
      );
    } finally {
      await stop(parser);
    }

    // Single events with wrk: bare, then the pipeline as deployed (durable log, PostgreSQL, auth).
    if (!wrkAvailable) {
      wrkNoteText = "skipped: wrk is not installed";
    } else if (!hasPostgres) {
      wrkNoteText = `skipped: PostgreSQL at ${args["database-url"]} is not reachable`;
    } else {
      const wrkDir = await Deno.makeTempDir({ prefix: "ott-bench-wrk-" });
      try {
        const ingestToken = randomSecret();
        const readerToken = randomSecret();
        const bare = await wrkRun(`${baseline.url}/events`, args, ingestToken, wrkDir);
        wrkBare = bare;
        rows.push(
          wrkRow(
            "wrk: bare Deno.serve, single event",
            bare,
            "1.00",
            await rssMb(baseline.child.pid),
            "",
          ),
        );
        await withDatabase(args["database-url"], "bench", async (databaseUrl) => {
          const server = await startProcess(serverArgs(), {
            ...baseEnv,
            DATABASE_URL: databaseUrl,
            QUEUE: "postgres",
            API_TOKENS: `ingest:bench:${ingestToken},analyst:bench-reader:${readerToken}`,
          });
          try {
            const ours = await wrkRun(`${server.url}/events`, args, ingestToken, wrkDir);
            // Every 2xx of the measured run must reach the summary (the warm-up's events too).
            const answered = ours.requests - ours.non2xx;
            const counted = await waitCounted(server, answered, 120_000, readerToken);
            wrkOurs = ours;
            rows.push(
              wrkRow(
                "wrk: POST /events (durable log, PostgreSQL, auth on)",
                ours,
                ratio(ours.requestsPerS, bare.requestsPerS).toFixed(2),
                await rssMb(server.child.pid),
                counted === null
                  ? `, /stats/summary did not count ${answered} events in time`
                  : `, /stats/summary counts ${counted} (warm-up included)`,
              ),
            );
          } finally {
            await stop(server);
          }
        });
      } catch (error) {
        if (!(error instanceof Error)) throw error;
        wrkNoteText = `failed: ${errorNote(error)}`;
      } finally {
        await Deno.remove(wrkDir, { recursive: true });
      }
    }
    await stop(baseline);

    /** One end-to-end scenario in its own server; a failure becomes the row's note. */
    const e2e = async (label: string, env: Record<string, string>) => {
      progress(label);
      let server: Server;
      try {
        server = await startProcess(serverArgs(), env);
      } catch (error) {
        if (!(error instanceof Error)) throw error;
        return { label, eventsPerS: 0, note: `skipped: ${errorNote(error)}`, rss: null };
      }
      try {
        const result = await endToEnd(server, args);
        return { label, ...result, rss: await rssMb(server.child.pid) };
      } catch (error) {
        if (!(error instanceof Error)) throw error;
        return { label, eventsPerS: 0, note: `failed: ${error.message}`, rss: null };
      } finally {
        await stop(server);
      }
    };
    const results = [];
    for (const queue of ["memory", "postgres"]) {
      const dir = await Deno.makeTempDir({ prefix: "ott-bench-e2e-" });
      try {
        results.push(
          await e2e(
            `end-to-end, QUEUE=${queue}${queue === "postgres" ? " (default)" : ""}, PGlite`,
            { ...baseEnv, QUEUE: queue, DATA_DIR: dir },
          ),
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
    if (hasPostgres) {
      if (psqlAvailable) {
        progress("COPY ceiling");
        try {
          copy = await withDatabase(
            args["database-url"],
            "bench",
            (databaseUrl) => copyCeiling(databaseUrl, args["e2e-events"], BASE_ENV.IP_HASH_SECRET),
          );
        } catch (error) {
          if (!(error instanceof Error)) throw error;
          copySkipped = `failed: ${error.message}`;
        }
      } else {
        copySkipped = "skipped: psql is not installed";
      }
      for (const queue of ["memory", "postgres", "redis"]) {
        await withDatabase(args["database-url"], "bench", async (databaseUrl) => {
          const env: Record<string, string> = {
            ...baseEnv,
            DATABASE_URL: databaseUrl,
            QUEUE: queue,
          };
          if (queue === "redis") {
            env.REDIS_URL = args["redis-url"];
            env.REDIS_KEY_PREFIX = `ott-bench-${crypto.randomUUID().slice(0, 8)}:`;
          }
          const label = `end-to-end, QUEUE=${queue}${
            queue === "postgres" ? " (default)" : ""
          }, PostgreSQL`;
          results.push(await e2e(label, env));
        });
      }
    } else {
      copySkipped = `skipped: PostgreSQL at ${args["database-url"]} is not reachable`;
    }
    const memoryRate = results[0].eventsPerS;
    for (const r of results) {
      rows.push({
        scenario: r.label,
        reqPerS: null,
        eventsPerS: r.eventsPerS,
        ratio: `${ratio(r.eventsPerS, bareBatchEvents).toFixed(2)} (x${
          ratio(r.eventsPerS, memoryRate).toFixed(2)
        } of memory/PGlite)`,
        p50: null,
        p99: null,
        rssMb: r.rss,
        note: r.note,
      });
    }
    if (copy !== null) {
      rows.push({
        scenario: "ceiling: COPY into a raw_events twin (2 parallel psql \\copy), PostgreSQL",
        reqPerS: null,
        eventsPerS: copy.rowsPerS,
        ratio: "",
        p50: null,
        p99: null,
        rssMb: null,
        note: `${copy.rows} rows (${(copy.bytes / 1e6).toFixed(0)} MB CSV) in ${
          copy.seconds.toFixed(1)
        } s`,
      });
    }
    const durablePg = results.find((r) =>
      r.label.startsWith("end-to-end, QUEUE=postgres") &&
      r.label.endsWith("PostgreSQL") && r.eventsPerS > 0
    );
    let freshness: FreshnessResult | null = null;
    let freshnessNote = "skipped: no durable PostgreSQL end-to-end run to take half of";
    if (durablePg !== undefined) {
      progress("freshness at half the durable PostgreSQL peak");
      try {
        freshness = await withDatabase(args["database-url"], "bench", async (databaseUrl) => {
          const server = await startProcess(serverArgs(), {
            ...baseEnv,
            DATABASE_URL: databaseUrl,
          });
          try {
            return await measureFreshness(server.url, {
              eventsPerS: durablePg.eventsPerS / 2,
              seconds: Math.max(10, args.duration),
              flushIntervalMs: FLUSH_INTERVAL_MS,
            });
          } finally {
            await stop(server);
          }
        });
        freshnessNote = `${freshness.probes} probes (${freshness.lost} lost) at ` +
          `${Math.round(freshness.achievedEventsPerS)} events/s; p50 ${
            Math.round(freshness.p50_ms)
          } ms, p99 ${Math.round(freshness.p99_ms)} ms, goal ${
            FLUSH_INTERVAL_MS + FRESHNESS_SLACK_MS
          } ms`;
      } catch (error) {
        if (!(error instanceof Error)) throw error;
        freshnessNote = `failed: ${errorNote(error)}`;
      }
    }
    let memory: MemoryResult | null = null;
    let memoryNote = hasPostgres ? "skipped: --memory-users 0" : copySkipped;
    if (hasPostgres && args["memory-users"] > 0) {
      progress(`memory with ${args["memory-users"]} users`);
      try {
        memory = await withDatabase(
          args["database-url"],
          "bench",
          (databaseUrl) =>
            measureMemoryPerUser({
              users: args["memory-users"],
              reclaimUsers: Math.min(args["memory-users"], RECLAIM_USERS),
              env: { ...baseEnv, DATABASE_URL: databaseUrl },
            }),
        );
        memoryNote =
          `${memory.users} users with a TV each (durable log, PostgreSQL): RSS ${
            Math.round(memory.rssBeforeMb)
          } MB before, ${Math.round(memory.rssCountedMb)} MB when all were counted (${
            memory.kbPerUserCounted.toFixed(2)
          } kB per user), ${Math.round(memory.rssAfterMb)} MB once quiet (lowest over 60 s), ${
            memory.entitiesPerUser.toFixed(1)
          } entities per user, worker heaps ${memory.workerHeapKbPerUser} kB per user ` +
          `(garbage included); ` + (memory.reclaimedAfterMs === undefined
            ? "reclaim not measured"
            : memory.reclaimedAfterMs === null
            ? "entities not reclaimed within the wait"
            : `entities back to the warm-up level ${
              (memory.reclaimedAfterMs / 1000).toFixed(0)
            } s after the last user (a run of its own with ${
              Math.min(args["memory-users"], RECLAIM_USERS)
            } users, short windows)`);
      } catch (error) {
        if (!(error instanceof Error)) throw error;
        memoryNote = `failed: ${error.message}`;
      }
    }
    return {
      rows,
      targets: targets({
        durablePg: durablePg?.eventsPerS ?? null,
        copy: copy?.rowsPerS ?? null,
        copySkipped,
        parseEvents,
        wrkBare,
        wrkOurs,
        wrkSkipped: wrkNoteText,
        freshness,
        freshnessNote,
        memory,
        memoryNote,
      }),
    };
  } finally {
    await stop(baseline);
    if (pipeline !== null) await stop(pipeline);
    await Deno.remove(dataDir, { recursive: true });
  }
}

function targets(m: {
  durablePg: number | null;
  copy: number | null;
  copySkipped: string;
  parseEvents: number;
  wrkBare: WrkResult | null;
  wrkOurs: WrkResult | null;
  wrkSkipped: string;
  freshness: FreshnessResult | null;
  freshnessNote: string;
  memory: MemoryResult | null;
  memoryNote: string;
}): Target[] {
  const target = (
    name: string,
    value: number | null,
    goal: number | null,
    why: string,
    valid = true,
  ): Target => ({
    target: name,
    ratio: value,
    goal,
    met: value === null || goal === null ? null : valid && value >= goal,
    note: value === null ? why : valid ? "" : why,
  });
  const atMost = (
    name: string,
    value: number | null,
    goal: number,
    note: string,
    unit = "x",
  ): Target => ({
    target: name,
    ratio: value,
    goal,
    isAtMost: true,
    unit,
    met: value === null ? null : value <= goal,
    note,
  });
  const noDurable = m.durablePg === null ? "skipped: no durable PostgreSQL end-to-end run" : "";
  const out = [
    target(
      "end to end, durable default log on PostgreSQL / COPY ceiling",
      m.durablePg === null || m.copy === null ? null : m.durablePg / m.copy,
      E2E_COPY_GOAL,
      noDurable || m.copySkipped,
    ),
    target(
      "end to end, durable default log on PostgreSQL / JSON.parse ceiling",
      m.durablePg === null || m.parseEvents <= 0 ? null : m.durablePg / m.parseEvents,
      null,
      noDurable || "skipped: no JSON.parse ceiling",
    ),
  ];
  if (m.wrkBare === null || m.wrkOurs === null) {
    out.push(
      target("single event, POST /events / bare Deno.serve (wrk)", null, SINGLE_GOAL, m.wrkSkipped),
    );
  } else {
    const ours: WrkResult = m.wrkOurs;
    const failed = ours.non2xx + ours.socketErrors;
    out.push(
      target(
        "single event, POST /events / bare Deno.serve (wrk)",
        ratio(ours.requestsPerS, m.wrkBare.requestsPerS),
        SINGLE_GOAL,
        `not valid: ${ours.non2xx} non-2xx and ${ours.socketErrors} socket errors of ` +
          `${ours.requests} requests`,
        failed <= ours.requests * 0.001,
      ),
    );
  }
  const goalMs = FLUSH_INTERVAL_MS + FRESHNESS_SLACK_MS;
  out.push(
    atMost(
      "freshness: p99 from 202 to visible / (FLUSH_INTERVAL_MS + 250 ms), at half the peak",
      m.freshness === null ? null : m.freshness.p99_ms / goalMs,
      1,
      m.freshnessNote,
    ),
    atMost(
      "memory: server RSS per active user with its own TV",
      m.memory === null ? null : m.memory.kbPerUser,
      MEMORY_GOAL_KB,
      m.memoryNote,
      " kB",
    ),
  );
  return out;
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
  const other = Object.entries(result.statuses)
    .filter(([status]) => status !== "202" && status !== "503")
    .map(([status, n]) => `${n} answered ${status === "0" ? "network error" : status}`);
  return {
    scenario,
    reqPerS,
    eventsPerS,
    ratio,
    p50: result.p50_ms,
    p99: result.p99_ms,
    rssMb: rss,
    note: [...(refused > 0 ? [`${refused} answered 503 (backpressure)`] : []), ...other].join(", "),
  };
}

function wrkRow(
  scenario: string,
  result: WrkResult,
  ratio: string,
  rss: number | null,
  extra: string,
): Row {
  return {
    scenario,
    reqPerS: result.requestsPerS,
    eventsPerS: result.requestsPerS,
    ratio,
    p50: result.p50Ms,
    p99: result.p99Ms,
    rssMb: rss,
    note: wrkNote(result, extra),
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

function markdown(rows: Row[], goals: Target[], args: Args): string {
  const f = (n: number | null, digits = 0) =>
    n === null ? "" : n.toLocaleString("en-US", { maximumFractionDigits: digits });
  const lines = [
    `Machine: ${machine()}. Load: ${args.connections} connections, ${args.duration} s per scenario, ` +
    `generator in its own process on the same cores (Deno \`fetch\` loops; the wrk rows use ` +
    `\`wrk -t2\` after a ${WRK_WARMUP_S} s warm-up). End-to-end: ${args["e2e-events"]} events in ` +
    `batches of ${BATCH} after a warm-up of a tenth as many, timed from the generator's first ` +
    `request until \`/stats/summary\` counts them all. Ceilings: the same ` +
    `${BATCH}-event bodies only \`JSON.parse\`d by a bare \`Deno.serve\`; the same events' ` +
    "`raw_events` rows loaded by two parallel `psql \\copy` into a fresh, migrated database.",
    "",
    "| scenario | req/s | events/s | ratio to bare Deno.serve | p50 ms | p99 ms | server peak RSS MB | note |",
    "|---|---|---|---|---|---|---|---|",
    ...rows.map((r) =>
      `| ${r.scenario} | ${f(r.reqPerS)} | ${f(r.eventsPerS)} | ${r.ratio} | ${f(r.p50, 1)} | ${
        f(r.p99, 1)
      } | ${f(r.rssMb)} | ${r.note} |`
    ),
    "",
    "| target | measured | goal | met | note |",
    "|---|---|---|---|---|",
    ...goals.map((t) =>
      `| ${t.target} | ${
        t.ratio === null ? "not measured" : `${t.ratio.toFixed(2)}${t.unit ?? "x"}`
      } | ${
        t.goal === null
          ? "(reported)"
          : `${t.isAtMost ? "<=" : ">="} ${t.goal.toFixed(1)}${t.unit ?? "x"}`
      } | ${t.met === null ? "-" : t.met ? "yes" : "no"} | ${t.note} |`
    ),
  ];
  return lines.join("\n");
}

if (import.meta.main && Deno.args[0] === "soak") {
  // `deno task bench soak [--minutes 60] [--rate 5000] ...`: see scripts/_bench_soak.ts.
  const { soakMain } = await import("./_bench_soak.ts");
  Deno.exit(await soakMain(Deno.args.slice(1)) ? 0 : 1);
} else if (import.meta.main && Deno.args[0] === "history") {
  // `deno task bench history [--scale F] [--days-list 7,30,395]`: see scripts/_bench_history.ts.
  const { historyMain } = await import("./_bench_history.ts");
  Deno.exit(await historyMain(Deno.args.slice(1)) ? 0 : 1);
} else if (import.meta.main && Deno.args[0] === "anomaly") {
  // `deno task bench anomaly [--days 6.5] [--titles 12]`: see scripts/_bench_anomaly.ts.
  const { anomalyMain } = await import("./_bench_anomaly.ts");
  Deno.exit(await anomalyMain(Deno.args.slice(1)) ? 0 : 1);
} else if (import.meta.main && Deno.args[0] === "qoe") {
  // `deno task bench qoe [--e2e-events 300000] [--against DIR]`: see scripts/_bench_qoe.ts.
  const { qoeMain } = await import("./_bench_qoe.ts");
  Deno.exit(await qoeMain(Deno.args.slice(1)) ? 0 : 1);
} else if (import.meta.main) {
  const args = parseCli(ARGS);
  const { rows, targets } = await run(args);
  progress("done");
  console.log(
    args.json
      ? JSON.stringify({ machine: machine(), settings: args, rows, targets }, null, 2)
      : markdown(rows, targets, args),
  );
}
