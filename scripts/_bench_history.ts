/**
 * `deno task bench history [--scale F] [--days-list 7,30,395]`: read cost against stored history.
 *
 * On a fresh PostgreSQL database it sends a slice of the last day through the real pipeline
 * (`POST /events/batch`, durable postgres log), then writes older days straight into the tables
 * (server-side `INSERT ... SELECT generate_series`, see `_bench_history_build.ts`) at the platform's
 * key spread times `--scale`, growing the history to each length of `--days-list`, holding what
 * production holds: each aggregate table only for the days the server's aggregate retention keeps
 * (hourly rows 35 days, daily 400, per-TV 90: the defaults). At each length it times a retention
 * run (`pruneExpired` with those aggregate settings, with a lagging then a current checkpoint: it
 * deletes the first hours of each cutoff's day and records the horizons), then starts the
 * server and times every documented read over the last 7 and 30 days, 13 months and all time (p50
 * and p95 over `--reps` runs after a warm-up, and whether the answer said `complete: false`),
 * measures bytes at rest per event per table, and
 * captures the SQL of the slowest read from the PostgreSQL log (`log_min_duration_statement = 0` on
 * the bench's own database) to print its `EXPLAIN (ANALYZE, BUFFERS)`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.ts";
import { dayOf, listPartitions } from "../db/partitions.ts";
import { pruneExpired } from "../db/retention.ts";
import { METRICS } from "../db/timeseries.ts";
import { type AggregateRetention, loadHorizons } from "../db/horizons.ts";
import {
  APP_VERSIONS,
  buildDays,
  copyRawDays,
  createStage,
  type Derivation,
  keptFrom,
  openBuildDb,
  planDerivations,
  PLANS,
  PLATFORM,
  PLATFORMS,
  type Spread,
  spreadAt,
  type Written,
} from "./_bench_history_build.ts";
import {
  BASE_ENV,
  type Server,
  serverArgs,
  sleep,
  startProcess,
  stop,
  withDatabase,
} from "./_bench_server.ts";

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
/** "13 months" of the targets, in days. */
const MONTHS_13 = 395;

const ARGS = z.object({
  scale: z.coerce.number().min(0.0001).max(1).default(0.01),
  "days-list": z.string().regex(/^\d+(,\d+)*$/).default("7,30,395"),
  reps: z.coerce.number().int().min(3).max(200).default(20),
  /** Most seconds one read's repetitions may take (at least 3 runs are made). */
  "read-budget-s": z.coerce.number().min(1).max(600).default(15),
  /** Events of the last day sent through the pipeline (their raw rows template older days). */
  "pipeline-events": z.coerce.number().int().min(1000).max(5_000_000).default(100_000),
  "database-url": z.string().url().default("postgres://postgres@127.0.0.1:5432/test"),
  "pg-log": z.string().default("/var/log/postgresql/postgresql-15-main.log"),
  json: z.boolean().default(false),
});
type Args = z.infer<typeof ARGS>;

const benchStarted = performance.now();
const progress = (m: string) =>
  console.error(`bench history +${((performance.now() - benchStarted) / 1000).toFixed(0)} s: ${m}`);

const secret = () =>
  Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
    .join("");

/** A read: its label (route and parameters), the range it covers, and its URL path. */
interface Read {
  name: string;
  range: string;
  path: string;
}

interface Timing {
  name: string;
  range: string;
  n: number;
  p50: number;
  p95: number;
  status: string;
  /** The answer said `complete: false` (somewhere in its body): from this bucket it is whole. */
  incomplete: string | null;
}

interface Retention {
  laggingS: number;
  laggingKept: number;
  currentS: number;
  dropped: number;
  droppedRows: number;
  flagsDeleted: number;
  otherDeleted: number;
  /** Aggregate rows deleted by both runs: hourly, daily, per-TV, per-entity risk. */
  aggregates: { hourly: number; daily: number; device: number; entity: number };
  /** `aggregate_horizons` after the runs. */
  horizons: string;
}

interface TableSize {
  table: string;
  rows: number;
  bytes: number;
}

interface Phase {
  days: number;
  builtDays: number;
  buildS: number;
  written: Written;
  staged: Written;
  events: number;
  rawEvents: number;
  retention: Retention;
  vacuumS: number;
  timings: Timing[];
  sizes: TableSize[];
  slowest: {
    read: string;
    range: string;
    p95: number;
    sql: string | null;
    note: string;
    plan: string;
  };
}

const RANGES: Array<[string, number | null]> = [
  ["7 days", 7],
  ["30 days", 30],
  ["13 months", MONTHS_13],
  ["all time", null],
];

/** Every documented read with a range, over each range; the unranged ones once. */
function readsOf(toMs: number, s: Spread): Read[] {
  const reads: Read[] = [];
  const title = "title-00000";
  const region = s.regions[0];
  for (const [range, days] of RANGES) {
    const q = days === null
      ? ""
      : `from=${new Date(toMs - days * DAY_MS).toISOString()}&to=${new Date(toMs).toISOString()}`;
    const add = (name: string, path: string, extra = "") => {
      const query = [q, extra].filter((x) => x !== "").join("&");
      reads.push({ name, range, path: query === "" ? path : `${path}?${query}` });
    };
    add("GET /stats/summary", "/stats/summary");
    add(`GET /stats/content/{id} (top title)`, `/stats/content/${title}`);
    add(`GET /stats/region/{region} (${region})`, `/stats/region/${region}`);
    add("GET /compliance/summary", "/compliance/summary");
    add("GET /compliance/regions", "/compliance/regions");
    add("GET /compliance/consent/summary", "/compliance/consent/summary");
    add("GET /compliance/events?limit=50", "/compliance/events", "limit=50");
    add("GET /audit?limit=50", "/audit", "limit=50");
    if (days === null) continue;
    for (const bucket of ["1h", "1d"]) {
      if (bucket === "1h" && days * 24 > 1500) continue;
      const ts = (label: string, extra: string) =>
        add(
          `GET /stats/timeseries ${bucket} ${label}`,
          "/stats/timeseries",
          `bucket=${bucket}&${extra}`,
        );
      for (const m of METRICS) ts(`metric=${m}`, `metric=${m}`);
      for (const g of ["region", "content_id", "platform", "app_version", "subscription_plan"]) {
        ts(`events group_by=${g}`, `metric=events&group_by=${g}`);
      }
      ts("errors group_by=error_code", "metric=errors&group_by=error_code");
      ts("unique_viewers group_by=region", "metric=unique_viewers&group_by=region");
      ts("unique_viewers group_by=content_id", "metric=unique_viewers&group_by=content_id");
      ts("events content_id=top title", `metric=events&content_id=${title}`);
      ts(`events region=${region}`, `metric=events&region=${region}`);
      ts("events platform=tizen", "metric=events&platform=tizen");
      ts("events device_id=tv-1", "metric=events&device_id=tv-1");
      ts("unique_viewers content_id=top title", `metric=unique_viewers&content_id=${title}`);
    }
  }
  reads.push({
    name: "GET /compliance/risk?limit=50",
    range: "no range",
    path: "/compliance/risk?limit=50",
  });
  reads.push({
    name: "GET /privacy/requests?limit=50",
    range: "no range",
    path: "/privacy/requests?limit=50",
  });
  return reads;
}

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];

async function timeRead(server: Server, token: string, read: Read, args: Args): Promise<Timing> {
  const get = async () => {
    const started = performance.now();
    const res = await fetch(`${server.url}${read.path}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const body = await res.text();
    return { ms: performance.now() - started, status: res.status, body };
  };
  const first = await get();
  const ms: number[] = [];
  const deadline = performance.now() + args["read-budget-s"] * 1000;
  while (ms.length < args.reps && (ms.length < 3 || performance.now() < deadline)) {
    ms.push((await get()).ms);
  }
  ms.sort((a, b) => a - b);
  let incomplete: string | null = null;
  if (first.status === 200) {
    const seek = (x: unknown): void => {
      if (incomplete !== null || x === null || typeof x !== "object") return;
      const o = x as Record<string, unknown>;
      if (o.complete === false) {
        incomplete = typeof o.first_bucket_held === "string" ? o.first_bucket_held : "?";
        return;
      }
      for (const v of Object.values(o)) seek(v);
    };
    try {
      seek(JSON.parse(first.body));
    } catch {
      // Not JSON: nothing to say.
    }
  }
  return {
    incomplete,
    name: read.name,
    range: read.range,
    n: ms.length,
    p50: quantile(ms, 0.5),
    p95: quantile(ms, 0.95),
    status: first.status === 200 ? "200" : `${first.status}: ${first.body.slice(0, 120)}`,
  };
}

/** The pipeline slice: events of the viewers of the spread, stamped evenly over `[fromMs, toMs)`. */
async function sendPipelineSlice(
  server: Server,
  token: string,
  s: Spread,
  count: number,
  fromMs: number,
  toMs: number,
): Promise<number> {
  const BATCH = 500;
  const types = ["PLAY", "PAUSE", "SEEK", "STOP", "PLAY", "PAUSE", "PLAY", "STOP"];
  let next = 0;
  let accepted = 0;
  const body = (first: number) => {
    const events = [];
    for (let n = first; n < Math.min(count, first + BATCH); n++) {
      const user = (n * 7919) % s.viewers;
      // Titles by a Zipf-like draw: low ranks far more often.
      const title = Math.min(s.titles - 1, Math.floor(s.titles ** ((n * 0.618) % 1)) - 1);
      const isError = n % 50 === 0;
      const region = s.regions[user % s.regions.length];
      events.push({
        event_id: crypto.randomUUID(),
        user_id: `user-${user}`,
        device_id: `tv-${user}`,
        content_id: `title-${String(Math.max(0, title)).padStart(5, "0")}`,
        event_type: isError ? "ERROR" : types[n % types.length],
        timestamp: new Date(fromMs + Math.floor(((toMs - fromMs) * n) / count)).toISOString(),
        region,
        is_eu: ["DE", "FR", "IT", "ES", "NL", "SE", "PL"].includes(region),
        has_consent: user % 20 !== 0,
        ip_address: `10.${(user >> 16) & 255}.${(user >> 8) & 255}.${user & 255}`,
        error_code: isError ? "NETWORK_TIMEOUT" : null,
        subscription_plan: PLANS[user % 3],
        extra_metadata: {
          platform: PLATFORMS[(user >> 2) % 6],
          app_version: APP_VERSIONS[(user >> 4) % 10],
        },
      });
    }
    return JSON.stringify(events);
  };
  const loop = async () => {
    while (next < count) {
      const first = next;
      next += BATCH;
      for (let attempt = 0;; attempt++) {
        const res = await fetch(`${server.url}/events/batch`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: body(first),
        });
        const text = await res.text();
        if (res.status === 202) {
          accepted += (JSON.parse(text).accepted as number | undefined) ??
            Math.min(BATCH, count - first);
          break;
        }
        if (res.status !== 503 || attempt > 50) {
          throw new Error(`Cannot send the pipeline slice: ${res.status} ${text.slice(0, 300)}`);
        }
        await sleep(200);
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, loop));
  return accepted;
}

async function waitCounted(server: Server, token: string, events: number): Promise<number> {
  let last = -1, changedAt = Date.now();
  for (;;) {
    const res = await fetch(`${server.url}/stats/summary`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const total: number = (await res.json()).total_events;
    if (total >= events) return total;
    if (total !== last) changedAt = Date.now();
    last = total;
    if (Date.now() - changedAt > 60_000) {
      throw new Error(`Cannot finish the pipeline slice: ${total} of ${events} events counted`);
    }
    await sleep(250);
  }
}

const RETENTION = {
  rawEventsRetentionDays: 30,
  flagsRetentionDays: 365,
  privacyRequestRetentionDays: 730,
  consentRetentionDays: 1825,
  isLogPositional: true,
  // The server's defaults (HOURLY_, DAILY_, ENTITY_RETENTION_DAYS).
  aggregates: {
    hourlyRetentionDays: 35,
    dailyRetentionDays: 400,
    entityRetentionDays: 90,
  } satisfies AggregateRetention,
};

/** One retention run with every checkpoint lagging below the expired days, then one current. */
async function measureRetention(
  db: Kysely<Database>,
  nowMs: number,
  expiredRows: number,
): Promise<Retention> {
  const saved = await sql<{ family: string; shard: number; position: string }>`
    select family, shard, position::text from shard_checkpoints`.execute(db);
  const lag = -9_000_000_000_000_000;
  if (saved.rows.length === 0) {
    await sql`insert into shard_checkpoints (family, shard, position) values
      ('bench-lag', 0, ${lag})`.execute(db);
  } else await sql`update shard_checkpoints set position = ${lag}`.execute(db);
  const before = (await listPartitions(db)).length;
  let started = performance.now();
  const lagging = (await pruneExpired(db, nowMs, { ...RETENTION, flagsRetentionDays: 36_500 }))
    .aggregates;
  const laggingS = (performance.now() - started) / 1000;
  const laggingKept = before - (await listPartitions(db)).length;
  await sql`delete from shard_checkpoints where family = 'bench-lag'`.execute(db);
  for (const r of saved.rows) {
    await sql`update shard_checkpoints set position = ${r.position}::bigint
      where family = ${r.family} and shard = ${r.shard}`.execute(db);
  }
  started = performance.now();
  const counts = await pruneExpired(db, nowMs, RETENTION);
  const agg = (k: "hourly_rows" | "daily_rows" | "device_rows" | "entity_risk") =>
    (lagging?.[k] ?? 0) + (counts.aggregates?.[k] ?? 0);
  const horizons = Object.entries(await loadHorizons(db))
    .map(([level, ms]) => `${level} ${new Date(ms!).toISOString().slice(0, 16)}Z`).join(", ");
  return {
    aggregates: {
      hourly: agg("hourly_rows"),
      daily: agg("daily_rows"),
      device: agg("device_rows"),
      entity: agg("entity_risk"),
    },
    horizons: horizons === "" ? "none" : horizons,
    laggingS,
    laggingKept: before - laggingKept,
    currentS: (performance.now() - started) / 1000,
    dropped: counts.raw_event_days,
    droppedRows: counts.raw_event_days > 0 ? expiredRows : 0,
    flagsDeleted: counts.risk_flags,
    otherDeleted: counts.privacy_requests + counts.consent_ledger + counts.raw_events,
  };
}

/** Size at rest of every table (a partitioned one summed over its partitions), largest first. */
async function tableSizes(db: Kysely<Database>): Promise<TableSize[]> {
  const r = await sql<{ table: string; rows: string; bytes: string }>`
    select c.relname as table,
      case when c.relkind = 'r' then greatest(c.reltuples, 0)::bigint else
        (select coalesce(sum(greatest(p.reltuples, 0)), 0)::bigint from pg_partition_tree(c.oid) t
          join pg_class p on p.oid = t.relid where t.isleaf) end::text as rows,
      case when c.relkind = 'r' then pg_total_relation_size(c.oid) else
        (select coalesce(sum(pg_total_relation_size(t.relid)), 0) from pg_partition_tree(c.oid) t
          where t.isleaf) end::text as bytes
    from pg_class c join pg_namespace n on n.oid = c.relnamespace and n.nspname = 'public'
    where c.relkind in ('r', 'p') and not c.relispartition
    `.execute(db);
  return r.rows.map((x) => ({ table: x.table, rows: Number(x.rows), bytes: Number(x.bytes) }))
    .sort((a, b) => b.bytes - a.bytes);
}

/** The SQL the server ran for a read, from the PostgreSQL log: the longest `execute` after `offset`. */
async function capturedSql(
  logPath: string,
  offset: number,
  dbName: string,
): Promise<{ sql: string; ms: number; totalMs: number; statements: number } | null> {
  let text: string;
  try {
    const file = await Deno.open(logPath);
    await file.seek(offset, Deno.SeekMode.Start);
    const chunks: Uint8Array[] = [];
    for await (const chunk of file.readable) chunks.push(chunk);
    text = new TextDecoder().decode(
      chunks.reduce((a, c) => {
        const out = new Uint8Array(a.length + c.length);
        out.set(a);
        out.set(c, a.length);
        return out;
      }, new Uint8Array(0)),
    );
  } catch {
    return null;
  }
  const head = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)? \S+ \[(\d+)\] (\S*)@(\S*) (\w+):\s+/;
  const entries: Array<{ pid: string; db: string; kind: string; body: string }> = [];
  for (const line of text.split("\n")) {
    const m = head.exec(line);
    if (m !== null) {
      entries.push({ pid: m[2], db: m[4], kind: m[5], body: line.slice(m[0].length) });
    } else if (entries.length > 0) entries[entries.length - 1].body += "\n" + line;
  }
  let best: { ms: number; sql: string } | null = null;
  let totalMs = 0;
  let statements = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    if (e.db !== dbName || e.kind !== "LOG") continue;
    const m = /^duration: ([\d.]+) ms\s+(?:execute [^:]*|statement): ([\s\S]*)$/.exec(e.body);
    if (m === null || /bench-marker/.test(m[2])) continue;
    totalMs += Number(m[1]);
    statements++;
    let query = m[2].trim();
    const detail = entries.slice(i + 1, i + 3).find((d) => d.pid === e.pid && d.kind === "DETAIL");
    if (detail !== undefined) {
      const params = new Map<string, string>();
      for (const p of detail.body.matchAll(/\$(\d+) = ('(?:[^']|'')*'|NULL)/g)) {
        params.set(p[1], p[2]);
      }
      query = query.replace(/\$(\d+)/g, (all, n) => params.get(n) ?? all);
    }
    if (best === null || Number(m[1]) > best.ms) best = { ms: Number(m[1]), sql: query };
  }
  return best === null ? null : { ...best, totalMs, statements };
}

async function explain(db: Kysely<Database>, query: string): Promise<string> {
  try {
    const r = await sql<{ "QUERY PLAN": string }>`explain (analyze, buffers) ${sql.raw(query)}`
      .execute(db);
    return r.rows.map((x) => x["QUERY PLAN"]).join("\n");
  } catch (error) {
    return `EXPLAIN failed: ${(error as Error).message}`;
  }
}

async function run(args: Args): Promise<{ spread: Spread; phases: Phase[]; notes: string[] }> {
  const spread = spreadAt(args.scale);
  const daysList = [...new Set(args["days-list"].split(",").map(Number))].sort((a, b) => a - b);
  if (daysList[0] < 2) throw new Error("Cannot build less than 2 days of history: --days-list");
  const ingest = secret();
  const admin = secret();
  const notes: string[] = [];
  return await withDatabase(args["database-url"], "history", async (databaseUrl) => {
    const dbName = new URL(databaseUrl).pathname.slice(1);
    const build = openBuildDb(databaseUrl);
    const { db, pool } = build;
    try {
      // Every statement of this database is logged, so the slowest read's SQL can be found.
      await pool.query(`alter database ${dbName} set log_min_duration_statement = 0`);
      const env = {
        ...BASE_ENV,
        DATABASE_URL: databaseUrl,
        QUEUE: "postgres",
        API_TOKENS: `ingest:bench-ingest:${ingest},admin:bench:${admin}`,
        INGEST_TOKENS: "",
        READ_TOKENS: "",
        RAW_EVENTS_RETENTION_DAYS: "30",
        MAX_EVENT_AGE_MS: String(7 * DAY_MS),
      };
      const nowMs = Date.now();
      const today = dayOf(nowMs);
      const yesterday = today - DAY_MS;
      // The last day through the pipeline: yesterday 00:00 UTC until now.
      progress(
        `pipeline: ${args["pipeline-events"]} events over ${
          ((nowMs - yesterday) / HOUR_MS).toFixed(1)
        } h of event time`,
      );
      let server = await startProcess(serverArgs(), env);
      let pipelineEvents: number;
      try {
        const accepted = await sendPipelineSlice(
          server,
          ingest,
          spread,
          args["pipeline-events"],
          yesterday,
          nowMs - 60_000,
        );
        pipelineEvents = await waitCounted(server, admin, accepted);
      } finally {
        await stop(server);
      }
      progress(`pipeline: ${pipelineEvents} events counted`);
      const derivations: Derivation[] = await planDerivations(pool);
      for (const d of derivations) notes.push(`${d.table}: ${d.why}`);
      const notDerived = derivations.filter((d) => d.sql === null);
      if (notDerived.length > 0) {
        progress(
          `WARNING: cannot derive ${
            notDerived.map((d) => `${d.table} (${d.why})`).join("; ")
          }: left with the pipeline slice's rows only`,
        );
      }
      // What production holds at `nowMs`: each pruned table is written only for the days it keeps.
      const kept = keptFrom(nowMs, RETENTION.aggregates);
      await createStage(build);
      const templateRows = Number(
        (await pool.query(
          `select count(*) from raw_events where occurred_at >= $1 and
          occurred_at < $2 and position > 0`,
          [
            new Date(yesterday).toISOString(),
            new Date(today).toISOString(),
          ],
        )).rows[0].count,
      );
      const phases: Phase[] = [];
      const written: Written = {};
      const staged: Written = {};
      let builtFrom = yesterday;
      for (const days of daysList) {
        const fromDay = today - (days - 1) * DAY_MS;
        const started = performance.now();
        const builtDays = (builtFrom - fromDay) / DAY_MS;
        if (fromDay < builtFrom) {
          progress(`history ${days} days: writing ${builtDays} days`);
          await buildDays(
            build,
            spread,
            derivations,
            kept,
            fromDay,
            builtFrom,
            nowMs,
            written,
            staged,
            progress,
          );
          const rawDays: number[] = [];
          for (let d = Math.max(fromDay, today - 29 * DAY_MS); d < builtFrom; d += DAY_MS) {
            rawDays.push(d);
          }
          written.raw_events = (written.raw_events ?? 0) +
            await copyRawDays(build, yesterday, rawDays);
          builtFrom = fromDay;
        }
        const buildS = (performance.now() - started) / 1000;
        // Three days past retention, for the retention run to drop.
        const expiredDays = [33, 32, 31].map((n) => today - n * DAY_MS);
        const expiredRows = await copyRawDays(build, yesterday, expiredDays);
        progress(`history ${days} days: retention`);
        const retention = await measureRetention(db, nowMs, expiredRows);
        progress(`history ${days} days: vacuum analyze`);
        let t = performance.now();
        await pool.query("vacuum (analyze)");
        const vacuumS = (performance.now() - t) / 1000;
        const totals = await pool.query(
          // Daily rows: kept 400 days, where hourly rows go after 35.
          `select (select coalesce(sum(events), 0) from event_types_daily)::text as events,
            (select count(*) from raw_events)::text as raw`,
        );
        progress(`history ${days} days: reads`);
        server = await startProcess(serverArgs(), env);
        const timings: Timing[] = [];
        let slowest: Phase["slowest"];
        try {
          const reads = readsOf(today + DAY_MS, spread);
          t = performance.now();
          for (const read of reads) timings.push(await timeRead(server, admin, read, args));
          progress(
            `history ${days} days: ${reads.length} reads in ${
              ((performance.now() - t) / 1000).toFixed(0)
            } s`,
          );
          const worst = timings.filter((x) => x.status === "200")
            .reduce((a, b) => (b.p95 > a.p95 ? b : a));
          const read = reads.find((r) => r.name === worst.name && r.range === worst.range)!;
          // Once more, between two markers in the log, to find its SQL.
          await sleep(500);
          let offset = 0;
          try {
            offset = (await Deno.stat(args["pg-log"])).size;
          } catch {
            offset = 0;
          }
          await pool.query("select 'bench-marker-start'");
          await fetch(`${server.url}${read.path}`, {
            headers: { authorization: `Bearer ${admin}` },
          }).then((r) => r.text());
          await pool.query("select 'bench-marker-end'");
          await sleep(500);
          const captured = await capturedSql(args["pg-log"], offset, dbName);
          slowest = {
            read: worst.name,
            range: worst.range,
            p95: worst.p95,
            sql: captured?.sql ?? null,
            note: captured === null
              ? ""
              : `${captured.ms.toFixed(1)} ms of the ${
                captured.totalMs.toFixed(1)
              } ms its ${captured.statements} statements took in PostgreSQL (the rest of the read ` +
                "is the server's own work and HTTP)",
            plan: captured === null
              ? `not captured: cannot read ${args["pg-log"]}`
              : await explain(db, captured.sql),
          };
        } finally {
          await stop(server);
        }
        phases.push({
          days,
          builtDays,
          buildS,
          written: { ...written },
          staged: { ...staged },
          events: Number(totals.rows[0].events),
          rawEvents: Number(totals.rows[0].raw),
          retention,
          vacuumS,
          timings,
          sizes: await tableSizes(db),
          slowest,
        });
      }
      notes.push(
        `pipeline slice: ${pipelineEvents} events; raw rows per older day: ${templateRows}`,
        `held as production holds them (aggregate retention ${
          JSON.stringify(RETENTION.aggregates)
        }): pruned tables are written only for their retained days and the day their cutoff ` +
          `falls in; rows generated only to derive daily rollups from (unlogged staging, emptied ` +
          `each day): ${
            Object.entries(staged).map(([t, n]) => `${t} ${n.toLocaleString("en-US")}`).join(
              ", ",
            ) ||
            "none"
          }`,
      );
      await pool.query("drop schema if exists bench_stage cascade");
      return { spread, phases, notes };
    } finally {
      await pool.query(`alter database ${dbName} reset log_min_duration_statement`)
        .catch(() => undefined);
      await db.destroy();
    }
  });
}

interface Target {
  target: string;
  measured: string;
  goal: string;
  met: boolean | null;
  note: string;
}

function targetsOf(phases: Phase[]): Target[] {
  const longest = phases[phases.length - 1];
  const first = phases[0];
  const out: Target[] = [];
  const misses = (range: string, goal: number) => {
    const over = longest.timings.filter((t) => t.range === range);
    const worst = over.reduce((a, b) => (b.p95 > a.p95 ? b : a));
    const failed = over.filter((t) => t.p95 > goal || t.status !== "200");
    out.push({
      target: `every documented read over ${range}: p95 (at ${longest.days} days stored)`,
      measured: `worst ${worst.p95.toFixed(1)} ms (${worst.name})`,
      goal: `<= ${goal} ms`,
      met: failed.length === 0,
      note: failed.length === 0
        ? ""
        : `${failed.length} of ${over.length} miss: ${
          failed.sort((a, b) => b.p95 - a.p95).map((f) => `${f.name} ${f.p95.toFixed(0)} ms`)
            .join("; ")
        }`,
    });
  };
  misses("30 days", 50);
  if (longest.days >= MONTHS_13) misses("13 months", 150);
  misses("all time", 150);
  if (phases.length > 1) {
    const ratios = first.timings.filter((t) => t.range === "7 days").map((t) => {
      const later = longest.timings.find((x) => x.name === t.name && x.range === t.range)!;
      return { name: t.name, ratio: later.p95 / t.p95, from: t.p95, to: later.p95 };
    }).sort((a, b) => b.ratio - a.ratio);
    const failed = ratios.filter((r) => r.ratio > 1.5);
    const real = failed.filter((r) => r.to - r.from >= 5);
    out.push({
      target:
        `p95 of each read of the last 7 days: ${longest.days} days stored / ${first.days} days stored`,
      measured: `worst ${ratios[0].ratio.toFixed(2)}x (${ratios[0].name})`,
      goal: "<= 1.5x",
      met: failed.length === 0,
      note:
        `${failed.length} of ${ratios.length} reads above 1.5x, ${real.length} of them by 5 ms ` +
        `or more (the others are within this shared machine's noise): ${
          real.map((f) => `${f.name} ${f.from.toFixed(1)} -> ${f.to.toFixed(1)} ms`).join("; ")
        }`,
    });
  }
  const raw = longest.sizes.find((s) => s.table === "raw_events");
  const perEvent = raw === undefined || longest.rawEvents === 0
    ? null
    : raw.bytes / longest.rawEvents;
  out.push({
    target: "raw_events bytes at rest per event (tables and indexes of every partition)",
    measured: perEvent === null ? "not measured" : `${perEvent.toFixed(0)} B`,
    goal: "<= 300 B",
    met: perEvent === null ? null : perEvent <= 300,
    note: `${longest.rawEvents.toLocaleString("en-US")} rows`,
  });
  return out;
}

/** The reads of the longest history over the targets' ranges that miss their goal, slowest first. */
function missTable(phases: Phase[]): string[] {
  const longest = phases[phases.length - 1];
  const goals: Record<string, number> = { "30 days": 50, "13 months": 150, "all time": 150 };
  const missed = longest.timings.filter((t) =>
    goals[t.range] !== undefined && (t.p95 > goals[t.range] || t.status !== "200")
  ).sort((a, b) => b.p95 - a.p95);
  const incomplete = longest.timings.filter((t) => t.incomplete !== null).length;
  return [
    `Reads that miss their target at ${longest.days} days stored (${missed.length} of ${
      longest.timings.filter((t) => goals[t.range] !== undefined).length
    }; ${incomplete} of ${longest.timings.length} reads answered \`complete: false\`):`,
    "",
    "| read | range | p50 ms | p95 ms | goal ms | complete |",
    "|---|---|---|---|---|---|",
    ...missed.map((t) =>
      `| ${t.name} | ${t.range} | ${t.p50.toFixed(1)} | ${t.p95.toFixed(1)} | ${goals[t.range]} | ${
        t.incomplete === null ? "yes" : `no (whole from ${t.incomplete.slice(0, 16)})`
      }${t.status === "200" ? "" : ` ${t.status}`} |`
    ),
    "",
  ];
}

function machine(): string {
  const out = new Deno.Command("cat", { args: ["/proc/cpuinfo"], stdout: "piped", stderr: "null" })
    .outputSync();
  const cpu = /model name\s*:\s*(.+)/.exec(new TextDecoder().decode(out.stdout))?.[1] ??
    "unknown CPU";
  const load = new Deno.Command("cat", { args: ["/proc/loadavg"], stdout: "piped" }).outputSync();
  return `${navigator.hardwareConcurrency} cores (${cpu}), Deno ${Deno.version.deno}, ` +
    `${new Date().toISOString().slice(0, 10)}, load average at the end ${
      new TextDecoder().decode(load.stdout).split(" ").slice(0, 3).join(" ")
    } (other loads share this machine)`;
}

function markdown(
  r: { spread: Spread; phases: Phase[]; notes: string[] },
  args: Args,
): string {
  const { spread: s, phases } = r;
  const f = (n: number, d = 0) => n.toLocaleString("en-US", { maximumFractionDigits: d });
  const lines: string[] = [];
  lines.push(
    `Machine: ${machine()}. PostgreSQL 15 with its default settings (shared_buffers 128 MB), shared.`,
    "",
    `Scale factor ${args.scale} of the platform's key spread and volume (the platform: ` +
      `${
        f(PLATFORM.titles)
      } titles, ${PLATFORM.regions} regions, ${PLATFORM.platforms} platforms, ` +
      `${PLATFORM.appVersions} app versions, ${PLATFORM.plans} plans, ${
        f(PLATFORM.viewers)
      } viewers, ` +
      `${f(PLATFORM.eventsPerDay)} events/day, estimated ${
        f(PLATFORM.factKeysPerHour)
      } fact keys and ` +
      `${f(PLATFORM.devicesPerHour)} active TVs per hour). Here: ${f(s.titles)} titles, ` +
      `${s.regions.length} regions, all platforms, versions and plans, ${
        f(s.viewers)
      } viewers; per ` +
      `hour ${f(s.factRowsPerHour)} fact keys, ${f(s.devicesPerHour)} TVs, ${f(s.eventsPerHour)} ` +
      `events counted; per day ${f(s.flagsPerDay)} flags, ${f(s.consentRowsPerDay)} consent ` +
      `changes, ${f(s.privacyRequestsPerDay)} privacy requests, ${
        f(s.auditRowsPerDay)
      } audit rows. ` +
      (args.scale >= 0.1
        ? "Keys per hour and per day are at least a tenth of the platform's."
        : `Keys per hour and per day are ${args.scale} of the platform's, below the tenth the ` +
          "spec asks for: this machine cannot write 13 months at a tenth within the run's time."),
    "",
    "The last day (yesterday 00:00 UTC until now) went through the real pipeline " +
      "(POST /events/batch, QUEUE=postgres). Older days were written straight into the tables " +
      "with server-side INSERT ... SELECT generate_series (the bench's stand-in for COPY, allowed " +
      "for the bench): generated hourly rows, every daily or narrow rollup derived from them in " +
      "SQL, each table only for the days the server's retention keeps (hourly 35, daily 400, " +
      "per-TV 90; the retention run then deletes the first hours of each cutoff's day and " +
      "records the horizons), and raw events only for the last 30 days (the pipeline's own rows of yesterday, copied " +
      "with new ids). Every table is VACUUM ANALYZEd before the reads (as autovacuum would). " +
      `Each read: one warm-up, then ${args.reps} runs (fewer when they pass ` +
      `${args["read-budget-s"]} s, at least 3), timed by the client over HTTP with an admin token.`,
    "",
    ...r.notes.map((n) => `- ${n}`),
    "",
    "| stored history | days written | rows written (cumulative) | write s | vacuum analyze s | events counted | raw events |",
    "|---|---|---|---|---|---|---|",
    ...phases.map((p) =>
      `| ${p.days} days | ${p.builtDays} | ${
        f(Object.values(p.written).reduce((a, b) => a + b, 0))
      } | ${f(p.buildS)} | ${f(p.vacuumS)} | ${f(p.events)} | ${f(p.rawEvents)} |`
    ),
    "",
    `Reads, p50 / p95 ms, by stored history:`,
    "",
    `| read | range | ${phases.map((p) => `${p.days} days stored`).join(" | ")} |`,
    `|---|---|${phases.map(() => "---").join("|")}|`,
  );
  for (const t of phases[0].timings) {
    const cells = phases.map((p) => {
      const x = p.timings.find((y) => y.name === t.name && y.range === t.range)!;
      return `${x.p50.toFixed(1)} / ${x.p95.toFixed(1)}${x.n < args.reps ? ` (n=${x.n})` : ""}${
        x.status === "200" ? "" : ` ${x.status}`
      }${x.incomplete === null ? "" : ` **incomplete** (whole from ${x.incomplete.slice(0, 16)})`}`;
    });
    lines.push(`| ${t.name} | ${t.range} | ${cells.join(" | ")} |`);
  }
  const tables = [...new Set(phases.flatMap((p) => p.sizes.map((x) => x.table)))];
  lines.push(
    "",
    "Bytes at rest (table, TOAST and indexes; partitions summed) per event counted (raw_events: " +
      "per raw row), by stored history:",
    "",
    `| table | ${phases.map((p) => `${p.days} days: rows | MB | B/event`).join(" | ")} |`,
    `|---|${phases.map(() => "---|---|---").join("|")}|`,
  );
  for (const table of tables) {
    const cells = phases.map((p) => {
      const x = p.sizes.find((y) => y.table === table);
      if (x === undefined) return " | | ";
      const per = x.bytes / (table === "raw_events" ? Math.max(1, p.rawEvents) : p.events);
      return `${f(x.rows)} | ${(x.bytes / 1e6).toFixed(1)} | ${
        per >= 1 ? per.toFixed(0) : per.toFixed(3)
      }`;
    });
    if (phases.every((p) => (p.sizes.find((y) => y.table === table)?.bytes ?? 0) < 64_000)) {
      continue;
    }
    lines.push(`| ${table} | ${cells.join(" | ")} |`);
  }
  lines.push(
    "",
    "(Tables under 64 kB at every length are left out. Aggregate B/event counts the scaled " +
      "events of the whole stored history (from the daily rows); rows per event are the " +
      "platform's, so B/event is the platform's too. Tables held fewer days than the history " +
      "(hourly: 35, per-TV: 90) spread their bytes over every stored event.)",
    "",
    "Retention (pruneExpired on the database, 3 raw-event days past the 30-day retention each time):",
    "",
    "| stored history | lagging checkpoint: s, partitions kept | current checkpoint: s | partitions dropped | raw rows dropped | rows/s | flags deleted | other rows deleted | aggregate rows deleted: hourly, daily, per-TV, entity | horizons after |",
    "|---|---|---|---|---|---|---|---|---|---|",
    ...phases.map((p) => {
      const x = p.retention;
      return `| ${p.days} days | ${x.laggingS.toFixed(2)}, ${x.laggingKept} | ${
        x.currentS.toFixed(2)
      } | ${x.dropped} | ${f(x.droppedRows)} | ${
        x.currentS > 0 ? f(x.droppedRows / x.currentS) : ""
      } | ${f(x.flagsDeleted)} | ${f(x.otherDeleted)} | ${f(x.aggregates.hourly)}, ${
        f(x.aggregates.daily)
      }, ${f(x.aggregates.device)}, ${f(x.aggregates.entity)} | ${x.horizons} |`;
    }),
    "",
    ...missTable(phases),
    "| target | measured | goal | met | note |",
    "|---|---|---|---|---|",
    ...targetsOf(phases).map((t) =>
      `| ${t.target} | ${t.measured} | ${t.goal} | ${
        t.met === null ? "-" : t.met ? "yes" : "no"
      } | ${t.note} |`
    ),
  );
  for (const p of phases) {
    lines.push(
      "",
      `Slowest read at ${p.days} days stored: ${p.slowest.read} over ${p.slowest.range}, p95 ${
        p.slowest.p95.toFixed(1)
      } ms. Its slowest statement${p.slowest.sql === null ? "" : ` (${p.slowest.note}):`}`,
      "",
      ...(p.slowest.sql === null ? [] : ["```sql", p.slowest.sql, "```", ""]),
      "```",
      p.slowest.plan,
      "```",
    );
  }
  return lines.join("\n");
}

/** Runs the history bench with `argv` (after `history`); true when it finished. */
export async function historyMain(argv: string[]): Promise<boolean> {
  const args = parseCliFrom(argv);
  const result = await run(args);
  progress("done");
  console.log(
    args.json
      ? JSON.stringify({ machine: machine(), settings: args, ...result }, null, 2)
      : markdown(result, args),
  );
  return true;
}

/** The options of {@link ARGS} from `argv` (`--name value`, `--json`); exits 2 when invalid. */
function parseCliFrom(argv: string[]): Args {
  const options = Object.fromEntries(
    Object.keys(ARGS.shape).map((k) => [k, { type: k === "json" ? "boolean" : "string" }] as const),
  );
  const { values } = parseArgs({ args: argv, options });
  const parsed = ARGS.safeParse(values);
  if (!parsed.success) {
    console.error(parsed.error.issues.map((i) => `--${i.path.join(".")}: ${i.message}`).join("\n"));
    Deno.exit(2);
  }
  return parsed.data;
}

if (import.meta.main) {
  Deno.exit(await historyMain(Deno.args) ? 0 : 1);
}
