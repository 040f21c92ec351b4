/**
 * `deno task bench qoe`: what Quality-of-Experience traffic costs end to end, on PostgreSQL with the
 * default durable log (QUEUE=postgres). Each run is a fresh database and a fresh server, sent a
 * warm-up of a tenth as many events, then `--e2e-events` events in batches of 500, timed from the
 * generator's first request until `/stats/summary` counts them all (as `deno task bench` times its
 * end-to-end rows). Runs alternate, A B A B, so both sides share whatever else the machine does:
 *
 * - A, plain: the bench's events (`benchEvent`: PLAY, PAUSE, 2% ERROR on 5,000 viewers, a TV each).
 * - B, QoE mix: the same volume on the same viewers and TVs, where `--qoe-share` (30%) of the events
 *   are views with a `view_id` and a `cdn`: PLAY_REQUEST, FIRST_FRAME (bitrate, rendition and player
 *   height), REBUFFER_START, REBUFFER_END, RENDITION_CHANGE, STOP, mixed into the plain events.
 *
 * It prints events/s, the server's peak RSS and `raw_events` bytes at rest per event (tables and
 * indexes of every partition over its rows) of each run, and the ratio B/A of each pair (goal: at
 * least 0.85).
 *
 * `--against DIR` instead compares another checkout's server (DIR, e.g. a worktree of an older
 * commit) with this one's on plain traffic: for each of `--queues` (postgres,redis), base then head,
 * `--runs` times, and the ratio head/base of each pair.
 *
 * Usage: deno task bench qoe [--e2e-events 300000] [--runs 2] [--connections 50]
 *   [--qoe-share 0.3] [--against DIR] [--queues postgres,redis] [--database-url URL]
 *   [--redis-url URL] [--json]
 *
 * @module
 */
// @ts-types="@types/pg"
import pg from "pg";
import { parseArgs } from "node:util";
import { z } from "zod";
import { BENCH_USERS, benchEvent } from "./_bench_events.ts";
import {
  BASE_ENV,
  processMemory,
  type Server,
  sleep,
  startProcess,
  stop,
  withDatabase,
} from "./_bench_server.ts";

const CLI = z.object({
  "e2e-events": z.coerce.number().int().min(1000).max(5_000_000).default(300_000),
  runs: z.coerce.number().int().min(1).max(10).default(2),
  connections: z.coerce.number().int().min(1).max(512).default(50),
  "qoe-share": z.coerce.number().min(0).max(1).default(0.3),
  against: z.string().min(1).optional(),
  queues: z.string().regex(/^(postgres|redis|memory)(,(postgres|redis|memory))*$/).default(
    "postgres,redis",
  ),
  "database-url": z.string().url().default("postgres://postgres@127.0.0.1:5432/test"),
  "redis-url": z.string().url().default("redis://127.0.0.1:6379"),
  json: z.boolean().default(false),
});

type Cli = z.infer<typeof CLI>;

/** Events per batch body, as in `deno task bench`. */
const BATCH = 500;
/** The goal: the QoE mix at most 15% below plain traffic. */
const QOE_GOAL = 0.85;
/** The field table's goal: plain traffic within 5% of the commit before it. */
const FIELDS_GOAL = 0.95;
/** The storage goal, bytes at rest per `raw_events` row. */
const RAW_BYTES_GOAL = 300;
/** How long the summary's count may stand still before a flush wait gives up. */
const STALL_MS = 60_000;

const here = new URL(".", import.meta.url).pathname;
const root = new URL("..", import.meta.url).pathname;
const started = performance.now();

function progress(message: string): void {
  console.error(`bench qoe +${((performance.now() - started) / 1000).toFixed(0)} s: ${message}`);
}

// ---------------------------------------------------------------------------------------------
// The traffic

/** The steps of one view: type, offset from the view's request in ms, and its QoE fields. */
const VIEW_STEPS = [
  { type: "PLAY_REQUEST", atMs: 0 },
  {
    type: "FIRST_FRAME",
    atMs: 900,
    fields: { bitrate_kbps: 4_500, rendition_height: 1080, player_height: 1080 },
  },
  { type: "REBUFFER_START", atMs: 20_000 },
  { type: "REBUFFER_END", atMs: 21_200 },
  {
    type: "RENDITION_CHANGE",
    atMs: 30_000,
    fields: { bitrate_kbps: 2_500, rendition_height: 720 },
  },
  { type: "STOP", atMs: 50_000 },
] as const;
/** Event time between the starts of a TV's consecutive views. */
const VIEW_SPACING_MS = 60_000;
const CDNS = ["bench-cdn-a", "bench-cdn-b", "bench-cdn-c"];

/** Whether the `n`-th event of a mix with QoE share `share` is a QoE event (spread over TVs). */
function isQoe(n: number, share: number): boolean {
  const round = Math.floor(n / BENCH_USERS);
  const user = n % BENCH_USERS;
  // Per TV, a share of its rounds; per round, a share of the TVs.
  return ((round * 7919 + user * 104729) % 1000) < share * 1000;
}

/**
 * The `n`-th event of the mix: `benchEvent(n)` or, for a QoE share of them, the next step of a view
 * on the same viewer's TV (`step` counts each TV's QoE events so far). Views of one generator run
 * start `VIEW_SPACING_MS` apart from `firstViewMs`; `tag` keeps view ids unique across runs.
 */
export function mixEvent(
  n: number,
  nowIso: string,
  share: number,
  tag: string,
  firstViewMs: number,
  step: Uint32Array,
): object {
  const plain = benchEvent(n, nowIso);
  if (share <= 0 || !isQoe(n, share)) return plain;
  const user = n % BENCH_USERS;
  const k = step[user]++;
  const view = Math.floor(k / VIEW_STEPS.length);
  const s = VIEW_STEPS[k % VIEW_STEPS.length];
  return {
    ...plain,
    content_id: `bench-title-${(user * 7 + view) % 200}`,
    event_type: s.type,
    timestamp: new Date(firstViewMs + view * VIEW_SPACING_MS + s.atMs).toISOString(),
    error_code: null,
    view_id: `${tag}-${user}-${view}`,
    cdn: CDNS[(user + view) % CDNS.length],
    ...("fields" in s ? s.fields : {}),
  };
}

interface LoadResult {
  requests: number;
  accepted_events: number;
  seconds: number;
  started_at_ms: number;
  statuses: Record<string, number>;
}

/**
 * The load generator (this file run as `generate <url> <connections> <maxEvents> <share> <tag>`):
 * builds every body first, then posts them over `connections` keep-alive loops, as
 * `_bench_load.ts` does for a known number of events.
 */
async function generate(argv: string[]): Promise<void> {
  const [url, connectionsArg, maxEventsArg, shareArg, tag] = argv;
  if (!/^http:\/\/(127\.0\.0\.1|localhost)[:/]/.test(url)) {
    throw new Error(`Refusing to load "${url}": the benchmark only targets loopback addresses`);
  }
  const connections = Number(connectionsArg);
  const maxEvents = Number(maxEventsArg);
  const share = Number(shareArg);
  const nowMs = Date.now();
  const nowIso = new Date(nowMs).toISOString();
  // Every view of this run in the past, the last ending about now.
  const views = Math.ceil((maxEvents * share) / BENCH_USERS / VIEW_STEPS.length) + 2;
  const firstViewMs = nowMs - views * VIEW_SPACING_MS;
  const step = new Uint32Array(BENCH_USERS);
  const encoder = new TextEncoder();
  const bodies: Uint8Array<ArrayBuffer>[] = [];
  for (let first = 0; first < maxEvents; first += BATCH) {
    const batch = [];
    for (let n = first; n < Math.min(maxEvents, first + BATCH); n++) {
      batch.push(JSON.stringify(mixEvent(n, nowIso, share, tag, firstViewMs, step)));
    }
    bodies.push(encoder.encode(`[${batch.join(",")}]`));
  }
  const statuses: Record<number, number> = {};
  let next = 0;
  let acceptedEvents = 0;
  const t0 = performance.now();
  const startedAtMs = Date.now();
  const loop = async () => {
    while (next < bodies.length) {
      const i = next++;
      try {
        const res = await fetch(`${url}/events/batch`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: bodies[i],
        });
        await res.arrayBuffer();
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status === 202) acceptedEvents += Math.min(BATCH, maxEvents - i * BATCH);
        else if (res.status === 503) await sleep(20);
      } catch (error) {
        if (!(error instanceof TypeError)) throw error;
        statuses[0] = (statuses[0] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  const result: LoadResult = {
    requests: bodies.length,
    accepted_events: acceptedEvents,
    seconds: (performance.now() - t0) / 1000,
    started_at_ms: startedAtMs,
    statuses,
  };
  console.log(JSON.stringify(result));
}

async function load(
  url: string,
  connections: number,
  events: number,
  share: number,
): Promise<LoadResult> {
  const tag = crypto.randomUUID().slice(0, 8);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "--allow-env",
      "--allow-read",
      `${here}_bench_qoe.ts`,
      "generate",
      url,
      String(connections),
      String(events),
      String(share),
      tag,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`The QoE load generator failed against ${url}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

// ---------------------------------------------------------------------------------------------
// One end-to-end run

/** Waits until `/stats/summary` counts `events`; null when it stood still for {@link STALL_MS}. */
async function waitCounted(server: Server, events: number): Promise<number | null> {
  const deadline = Date.now() + 300_000;
  let total = -1;
  let changedAt = Date.now();
  while (Date.now() < deadline && Date.now() - changedAt < STALL_MS) {
    const res = await fetch(`${server.url}/stats/summary`);
    if (!res.ok) throw new Error(`Cannot read /stats/summary: ${res.status} ${await res.text()}`);
    const now: number = (await res.json()).total_events;
    if (now >= events) return now;
    if (now !== total) changedAt = Date.now();
    total = now;
    await sleep(100);
  }
  return null;
}

/** One run's figures. */
export interface QoeRun {
  label: string;
  eventsPerS: number;
  seconds: number;
  events: number;
  /**
   * Server CPU time (every thread, user and system) per 1,000 events from the measured load's start
   * until counted: the pipeline's own cost, less sensitive than events/s to what else runs.
   */
  cpuMsPer1k: number | null;
  /** Server peak RSS (VmHWM) and RSS at the end, MB. */
  peakRssMb: number | null;
  rssMb: number | null;
  /** `raw_events` rows and bytes at rest (tables, TOAST and indexes of every partition). */
  rawRows: number;
  rawBytes: number;
  note: string;
}

/** Arguments that run `<checkout>/main.ts` with that checkout's own config and modules. */
function serverArgsAt(checkout: string): string[] {
  const dir = checkout.endsWith("/") ? checkout : `${checkout}/`;
  return [
    "run",
    "--config",
    `${dir}deno.json`,
    "--allow-net",
    "--allow-env",
    "--allow-read",
    "--allow-write",
    "--allow-sys",
    `${dir}main.ts`,
    "--port",
    "{port}",
  ];
}

async function rawSize(databaseUrl: string): Promise<{ rows: number; bytes: number }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const r = await client.query<{ rows: string; bytes: string }>(
      `select (select count(*) from raw_events)::text as rows,
        (select coalesce(sum(pg_total_relation_size(t.relid)), 0) from pg_partition_tree('raw_events') t
          where t.isleaf)::text as bytes`,
    );
    return { rows: Number(r.rows[0].rows), bytes: Number(r.rows[0].bytes) };
  } finally {
    await client.end();
  }
}

/** CPU seconds (user and system, every thread) a process has used so far, or null once gone. */
async function cpuSeconds(pid: number): Promise<number | null> {
  const out = await new Deno.Command("cat", {
    args: [`/proc/${pid}/stat`],
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) return null;
  const text = new TextDecoder().decode(out.stdout);
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** USER_HZ, 100 on Linux. */
const CLOCK_TICKS = 100;

/** A fresh database and server (`checkout`'s), a counted warm-up, then the measured events. */
async function e2eRun(
  args: Cli,
  label: string,
  checkout: string,
  queue: string,
  share: number,
): Promise<QoeRun> {
  progress(label);
  return await withDatabase(args["database-url"], "qoe", async (databaseUrl) => {
    const env: Record<string, string> = {
      ...BASE_ENV,
      DATABASE_URL: databaseUrl,
      QUEUE: queue,
      API_TOKENS: "",
      INGEST_TOKENS: "",
      READ_TOKENS: "",
      DATA_DIR: "",
    };
    if (queue === "redis") {
      env.REDIS_URL = args["redis-url"];
      env.REDIS_KEY_PREFIX = `ott-bench-qoe-${crypto.randomUUID().slice(0, 8)}:`;
    }
    const server = await startProcess(serverArgsAt(checkout), env);
    try {
      const events = args["e2e-events"];
      const warmupEvents = Math.max(BATCH, Math.round(events / 10 / BATCH) * BATCH);
      const warmup = await load(server.url, args.connections, warmupEvents, share);
      if (await waitCounted(server, warmup.accepted_events) === null) {
        throw new Error(`Cannot finish the warm-up of ${label}`);
      }
      const cpuBefore = await cpuSeconds(server.child.pid);
      const result = await load(server.url, args.connections, events, share);
      const counted = await waitCounted(server, warmup.accepted_events + result.accepted_events);
      const cpuAfter = await cpuSeconds(server.child.pid);
      if (counted === null) {
        throw new Error(`Cannot finish ${label}: the count stood still for ${STALL_MS / 1000} s`);
      }
      const seconds = (Date.now() - result.started_at_ms) / 1000;
      const memory = await processMemory(server.child.pid);
      // Let the last flush's rows settle into their pages before measuring them.
      await sleep(1_000);
      const raw = await rawSize(databaseUrl);
      const refused = (warmup.statuses["503"] ?? 0) + (result.statuses["503"] ?? 0);
      return {
        label,
        eventsPerS: result.accepted_events / seconds,
        seconds,
        events: result.accepted_events,
        cpuMsPer1k: cpuBefore === null || cpuAfter === null
          ? null
          : ((cpuAfter - cpuBefore) * 1e6) / result.accepted_events,
        peakRssMb: memory === null ? null : Math.round(memory.hwmKb / 1024),
        rssMb: memory === null ? null : Math.round(memory.rssKb / 1024),
        rawRows: raw.rows,
        rawBytes: raw.bytes,
        note: `${result.accepted_events} events flushed in ${seconds.toFixed(1)} s after ` +
          `${warmup.accepted_events} warm-up events` +
          (refused > 0 ? `, ${refused} batches answered 503 and were not resent` : ""),
      };
    } finally {
      await stop(server);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The report

const f = (n: number | null, digits = 0) =>
  n === null ? "" : n.toLocaleString("en-US", { maximumFractionDigits: digits });

function table(runs: QoeRun[]): string[] {
  return [
    "| run | events/s | s | server CPU ms / 1k events | server peak RSS MB | RSS at end MB | " +
    "raw_events B/event | note |",
    "|---|---|---|---|---|---|---|---|",
    ...runs.map((r) =>
      `| ${r.label} | ${f(r.eventsPerS)} | ${r.seconds.toFixed(1)} | ${f(r.cpuMsPer1k, 1)} | ${
        f(r.peakRssMb)
      } | ${f(r.rssMb)} | ${f(r.rawBytes / Math.max(1, r.rawRows))} | ${r.note} |`
    ),
  ];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** The median over pairs of b's events/s over a's (each pair measured back to back). */
const pairRatio = (a: QoeRun[], b: QoeRun[]) =>
  median(a.map((x, i) => b[i].eventsPerS / x.eventsPerS));

/**
 * Events/s of b over a for each pair, their median with the verdict against `goal`, and the
 * ratio of server CPU per event (a over b: below 1 when b costs more).
 */
function ratios(a: QoeRun[], b: QoeRun[], what: string, goal: number): string {
  const each = a.map((x, i) => b[i].eventsPerS / x.eventsPerS);
  const m = pairRatio(a, b);
  const cpu = a.map((x, i) =>
    x.cpuMsPer1k === null || b[i].cpuMsPer1k === null ? null : x.cpuMsPer1k / b[i].cpuMsPer1k
  ).filter((r): r is number => r !== null);
  return `${what}: events/s ${each.map((r) => r.toFixed(2)).join(", ")} (median ${
    m.toFixed(3)
  }; goal >= ${goal}: ${m >= goal ? "met" : "not met"})` +
    (cpu.length === 0
      ? ""
      : `; server CPU per event, inverted: ${cpu.map((r) => r.toFixed(2)).join(", ")} (median ${
        median(cpu).toFixed(2)
      })`);
}

function rawLine(label: string, runs: QoeRun[]): string {
  const rows = runs.reduce((s, r) => s + r.rawRows, 0);
  const bytes = runs.reduce((s, r) => s + r.rawBytes, 0);
  const per = bytes / Math.max(1, rows);
  return `raw_events at rest, ${label}: ${per.toFixed(0)} B/event over ${rows} rows (goal <= ` +
    `${RAW_BYTES_GOAL}: ${per <= RAW_BYTES_GOAL ? "met" : "not met"})`;
}

/** `deno task bench qoe ...`; true when every goal measured was met. */
export async function qoeMain(argv: string[]): Promise<boolean> {
  const options: Record<string, { type: "string" | "boolean" }> = { json: { type: "boolean" } };
  for (const name of Object.keys(CLI.shape)) options[name] ??= { type: "string" };
  const parsed = CLI.safeParse(parseArgs({ args: argv, options }).values);
  if (!parsed.success) {
    console.error(parsed.error.issues.map((i) => `--${i.path.join(".")}: ${i.message}`).join("\n"));
    Deno.exit(2);
  }
  const args = parsed.data;
  const lines: string[] = [];
  const all: QoeRun[] = [];
  let ok = true;
  if (args.against === undefined) {
    const plain: QoeRun[] = [];
    const mix: QoeRun[] = [];
    for (let i = 1; i <= args.runs; i++) {
      plain.push(await e2eRun(args, `plain #${i}`, root, "postgres", 0));
      mix.push(
        await e2eRun(
          args,
          `${Math.round(args["qoe-share"] * 100)}% QoE #${i}`,
          root,
          "postgres",
          args["qoe-share"],
        ),
      );
      all.push(plain[i - 1], mix[i - 1]);
    }
    ok = pairRatio(plain, mix) >= QOE_GOAL;
    lines.push(
      `End to end, QUEUE=postgres (default), PostgreSQL, ${args["e2e-events"]} events per run ` +
        `(batches of ${BATCH}, ${args.connections} connections), runs interleaved:`,
      "",
      ...table(all),
      "",
      ratios(plain, mix, "QoE mix / plain, each pair", QOE_GOAL),
      rawLine("plain", plain),
      rawLine("QoE mix", mix),
    );
  } else {
    for (const queue of args.queues.split(",")) {
      const base: QoeRun[] = [];
      const head: QoeRun[] = [];
      for (let i = 1; i <= args.runs; i++) {
        base.push(await e2eRun(args, `base, QUEUE=${queue} #${i}`, args.against, queue, 0));
        head.push(await e2eRun(args, `head, QUEUE=${queue} #${i}`, root, queue, 0));
        all.push(base[i - 1], head[i - 1]);
      }
      ok &&= pairRatio(base, head) >= FIELDS_GOAL;
      lines.push(
        ratios(base, head, `QUEUE=${queue}, plain traffic, head / base, each pair`, FIELDS_GOAL),
        rawLine(`base, QUEUE=${queue}`, base),
        rawLine(`head, QUEUE=${queue}`, head),
      );
    }
    lines.unshift(
      `End to end on PostgreSQL, plain traffic, base ${args.against} vs head ${root}, ` +
        `${args["e2e-events"]} events per run, runs interleaved:`,
      "",
      ...table(all),
      "",
    );
  }
  progress("done");
  console.log(
    args.json ? JSON.stringify({ settings: args, runs: all }, null, 2) : lines.join("\n"),
  );
  return ok;
}

if (import.meta.main && Deno.args[0] === "generate") {
  await generate(Deno.args.slice(1));
} else if (import.meta.main) {
  Deno.exit(await qoeMain(Deno.args) ? 0 : 1);
}
