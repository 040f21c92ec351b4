/**
 * Server memory per viewer. Starts its own server, warms it up, reads its RSS (`/proc/<pid>/status`
 * VmRSS; workers are threads of that one process), then sends `users` distinct viewers, each on its
 * own TV with one or two events at the current time (batches of 500 over several connections), waits
 * until `/stats/summary` counts them all and reads RSS again: `kbPerUser` is the growth over `users`.
 * Each reading is the lowest RSS over a quiet `settleMs` (an idle server gives back hundreds of MB
 * some seconds after work: V8's memory reducer collects the garbage a load left in the workers'
 * heaps after some 30-40 s of quiet; with embedded PGlite its WASM heap is part of the process too).
 * RSS at the moment the last viewer is counted is reported too: a server under constant load holds
 * something between the two.
 * The workers' entity counts (`/readyz`) are read alongside.
 *
 * Then, since the workers passivate idle state (`MAX_IDLE_MS`, once no window still needs it:
 * `SHARING_WINDOW_MS` for users, `MAX_SEGMENT_MS` for open plays, `QUALITY_WINDOW_MS` plus
 * `ALLOWED_LATENESS_MS` for titles and TVs), a second server with those set to their minimums gets
 * the same viewers, and a trickle of events keeps the watermark moving (it only advances with event
 * time) until the entity count falls back: `reclaimedAfterMs` is how long after the last viewer was
 * counted that took. RSS is read too, but V8 seldom returns freed heap to the OS, so the entity count
 * is the measure of reclamation; `/metrics` heap gauges cover the main thread's isolate only.
 *
 * Usage (alone): deno run -A scripts/_bench_memory.ts [--users 200000] [--events-per-user 2]
 *   [--database-url URL] [--skip-reclaim] [--settle-ms 60000] [--env KEY=VALUE ...] [--token T]
 *   [--json]
 * With `--database-url` the servers use a fresh database on that PostgreSQL server (created and
 * dropped here); without it, embedded PGlite in a temp dir.
 *
 * @module
 */
import { z } from "zod";
import { parseCli, processMemory, sleep, withDatabase, withServer } from "./_bench_server.ts";

/** Options of {@link measureMemoryPerUser}. */
export interface MemoryOptions {
  /** Distinct viewers (each with its own TV) sent after the warm-up. */
  users: number;
  /** Server environment on top of quiet loopback defaults (DATABASE_URL, QUEUE, ...). Without
   * DATABASE_URL or DATA_DIR, a temp DATA_DIR is made and removed. */
  env: Record<string, string>;
  /** Events per viewer: 1 (PLAY) or 2 (PLAY then PAUSE); default 2. */
  eventsPerUser?: 1 | 2;
  /** Events of the warm-up, from 500 viewers (default 5000). */
  warmupEvents?: number;
  /**
   * Quiet time before each reading, in ms (default 60 s): RSS is the lowest seen in it, sampled every
   * 500 ms, since an idle server drops RSS by hundreds of MB some 30-40 s after work (V8's memory
   * reducer), which would otherwise land in one reading and not the other.
   */
  settleMs?: number;
  /** Concurrent connections sending batches (default 8). */
  connections?: number;
  /** Bearer token for ingest and reads, when the env turns auth on. */
  token?: string;
  /** Run the passivation measurement (default true). */
  reclaim?: boolean;
  /**
   * Viewers of the passivation run (default `users`): it checks that entities go away, which a
   * smaller run shows as well, in less time.
   */
  reclaimUsers?: number;
  /** Overrides of the short idle settings of the passivation run. */
  reclaimEnv?: Record<string, string>;
  /** How long to wait for the entity count to fall back (default: the windows plus 60 s). */
  reclaimTimeoutMs?: number;
}

/** Memory of one server at one moment. */
export interface MemorySample {
  rssMb: number;
  /** Sum of the workers' live entities (users, titles, TVs) from `/readyz`. */
  entities: number;
  /** Main-thread V8 heap in use, from `/metrics` (null when not readable). */
  heapUsedMb: number | null;
  /**
   * The workers' V8 heaps in use, summed, as of their last status (`/readyz`): live state plus
   * garbage not yet collected, so an upper bound of what the entities hold.
   */
  workerHeapUsedMb: number;
}

/** The passivation run. */
export interface ReclaimResult {
  /** The short settings it ran with. */
  settings: Record<string, string>;
  before: MemorySample;
  /** Once every viewer was counted. */
  loaded: MemorySample;
  /** When the entity count fell back, or at the timeout. */
  after: MemorySample;
  /**
   * Time from every viewer counted by `/stats/summary` to the entity count back within 1% of what
   * the viewers added above the warm-up level (warm-up entities are passivated too); null: never.
   */
  reclaimedAfterMs: number | null;
  /** Time from every viewer counted to the last sample. */
  waitedMs: number;
}

/** What {@link measureMemoryPerUser} measured. */
export interface MemoryResult {
  users: number;
  eventsPerUser: number;
  /** After the warm-up, before the viewers (lowest RSS over the settle time). */
  rssBeforeMb: number;
  /** Highest RSS of the process so far (VmHWM, startup included), read at the end. */
  rssPeakMb: number;
  /** Once every viewer was counted (lowest RSS over the settle time that follows). */
  rssAfterMb: number;
  /** When the last viewer was counted, before any quiet time. */
  rssCountedMb: number;
  /** Growth per viewer up to that moment, in kB. */
  kbPerUserCounted: number;
  kbPerUser: number;
  entitiesBefore: number;
  entitiesAfter: number;
  entitiesPerUser: number;
  heapUsedBeforeMb: number | null;
  heapUsedAfterMb: number | null;
  workerHeapBeforeMb: number;
  workerHeapAfterMb: number;
  /** Growth of the workers' heaps over `users`, in kB (an upper bound: garbage included). */
  workerHeapKbPerUser: number;
  /** Seconds from the first viewer sent to the last one counted. */
  loadSeconds: number;
  /** Batches answered 503 (backpressure) and sent again. */
  retriedBatches: number;
  /** From the passivation run, when it ran: see {@link ReclaimResult}. */
  reclaimedAfterMs?: number | null;
  reclaim?: ReclaimResult;
}

const BATCH_EVENTS = 500;
const WARMUP_USERS = 500;
/** Minimums the config accepts: passivation as soon as the windows allow. */
const RECLAIM_ENV: Readonly<Record<string, string>> = {
  MAX_IDLE_MS: "1000",
  SHARING_WINDOW_MS: "60000",
  MAX_SEGMENT_MS: "1000",
  QUALITY_WINDOW_MS: "10000",
  ALLOWED_LATENESS_MS: "1000",
};

const mb = (kb: number) => Math.round(kb / 102.4) / 10;

function viewerEvent(
  prefix: string,
  user: number,
  n: number,
  type: string,
  timestamp: string,
): string {
  return JSON.stringify({
    event_id: `${prefix}-${user}-${n}`,
    user_id: `${prefix}-user-${user}`,
    device_id: `${prefix}-tv-${user}`,
    content_id: `${prefix}-title-${user % 500}`,
    event_type: type,
    timestamp,
    region: user % 3 === 0 ? "DE" : user % 3 === 1 ? "US-CA" : "JP",
    is_eu: user % 3 === 0,
    has_consent: true,
    ip_address: `10.${(user >> 16) & 255}.${(user >> 8) & 255}.${user & 255}`,
    error_code: null,
    extra_metadata: { platform: "tizen", app_version: "5.2.0" },
  });
}

class Client {
  retriedBatches = 0;
  constructor(readonly url: string, readonly pid: number, readonly token?: string) {}

  get headers(): Record<string, string> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    return headers;
  }

  async getJson(path: string): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`${this.url}${path}`, { headers: this.headers });
    const text = await res.text();
    try {
      return { status: res.status, body: JSON.parse(text) };
    } catch {
      return { status: res.status, body: text };
    }
  }

  /** Posts one batch, again after 503 (backpressure); throws on anything but 202. */
  async post(events: string[]): Promise<void> {
    const body = `[${events.join(",")}]`;
    for (let attempt = 0;; attempt++) {
      const res = await fetch(`${this.url}/events/batch`, {
        method: "POST",
        headers: this.headers,
        body,
      });
      if (res.status === 202) {
        const answer = await res.json() as { accepted: number; rejected?: unknown[] };
        if (answer.accepted !== events.length) {
          throw new Error(`Batch partly refused: ${JSON.stringify(answer).slice(0, 500)}`);
        }
        return;
      }
      const text = await res.text();
      if (res.status !== 503 || attempt > 600) {
        throw new Error(`POST /events/batch answered ${res.status}: ${text.slice(0, 500)}`);
      }
      this.retriedBatches++;
      await sleep(100);
    }
  }

  async totalEvents(): Promise<number> {
    const { status, body } = await this.getJson("/stats/summary");
    if (status !== 200) {
      throw new Error(`GET /stats/summary answered ${status}: ${JSON.stringify(body)}`);
    }
    return (body as { total_events: number }).total_events;
  }

  /** Waits until the summary counts at least `total` events. */
  async waitCounted(total: number, timeoutMs = 600_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await this.totalEvents() >= total) return;
      await sleep(200);
    }
    throw new Error(`Events not counted within ${timeoutMs / 1000} s (expected ${total})`);
  }

  async entities(): Promise<number> {
    return (await this.workers()).entities;
  }

  /** The workers' entities and V8 heap in use (MB), summed, from `/readyz`. */
  async workers(): Promise<{ entities: number; heapUsedMb: number }> {
    const { body } = await this.getJson("/readyz");
    const workers = (body as { workers?: Array<{ entities: number; heap_used_mb: number }> })
      .workers;
    if (!Array.isArray(workers)) throw new Error(`GET /readyz has no workers: ${body}`);
    return {
      entities: workers.reduce((sum, w) => sum + w.entities, 0),
      heapUsedMb: Math.round(workers.reduce((sum, w) => sum + w.heap_used_mb, 0) * 10) / 10,
    };
  }

  async heapUsedMb(): Promise<number | null> {
    const res = await fetch(`${this.url}/metrics`, { headers: this.headers });
    const text = await res.text();
    if (res.status !== 200) return null;
    const match = /^process_heap_used_bytes (\S+)$/m.exec(text);
    return match === null ? null : Math.round(Number(match[1]) / 104_857.6) / 10;
  }

  async sample(): Promise<MemorySample> {
    const memory = await processMemory(this.pid);
    if (memory === null) throw new Error(`Server process ${this.pid} is gone`);
    const workers = await this.workers();
    return {
      rssMb: mb(memory.rssKb),
      entities: workers.entities,
      heapUsedMb: await this.heapUsedMb(),
      workerHeapUsedMb: workers.heapUsedMb,
    };
  }
}

/** Sends `users` viewers in batches over `connections` loops; returns when all got 202. */
async function sendViewers(
  client: Client,
  prefix: string,
  users: number,
  eventsPerUser: number,
  connections: number,
): Promise<void> {
  const usersPerBatch = Math.floor(BATCH_EVENTS / eventsPerUser);
  let nextUser = 0;
  const loop = async () => {
    while (nextUser < users) {
      const first = nextUser;
      const last = Math.min(users, first + usersPerBatch);
      nextUser = last;
      const timestamp = new Date().toISOString();
      const events: string[] = [];
      for (let user = first; user < last; user++) {
        events.push(viewerEvent(prefix, user, 0, "PLAY", timestamp));
        if (eventsPerUser === 2) events.push(viewerEvent(prefix, user, 1, "PAUSE", timestamp));
      }
      await client.post(events);
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
}

interface Phase {
  before: MemorySample;
  loaded: MemorySample;
  hwmMb: number;
  loadSeconds: number;
  /** `performance.now()` when the summary counted every viewer. */
  countedAt: number;
  /** RSS when the summary counted every viewer. */
  rssCountedMb: number;
}

/** Warm-up, baseline sample, the viewers, and the sample once they are all counted. */
async function loadViewers(client: Client, opts: MemoryOptions, prefix: string): Promise<Phase> {
  const eventsPerUser = opts.eventsPerUser ?? 2;
  const connections = opts.connections ?? 8;
  const flushMs = Number(opts.env.FLUSH_INTERVAL_MS ?? 1000);
  const warmupEvents = opts.warmupEvents ?? 5_000;
  const start = await client.totalEvents();
  await sendViewers(client, `${prefix}w`, WARMUP_USERS, 1, 2);
  for (let sent = WARMUP_USERS; sent < warmupEvents; sent += BATCH_EVENTS) {
    const timestamp = new Date().toISOString();
    await client.post(
      Array.from(
        { length: Math.min(BATCH_EVENTS, warmupEvents - sent) },
        (_, i) => viewerEvent(`${prefix}w`, (sent + i) % WARMUP_USERS, sent + i, "PLAY", timestamp),
      ),
    );
  }
  const afterWarmup = start + Math.max(warmupEvents, WARMUP_USERS);
  await client.waitCounted(afterWarmup);
  const settleMs = Math.max(opts.settleMs ?? 60_000, 2 * flushMs + 500);
  const before = await settle(client, settleMs);
  const started = performance.now();
  await sendViewers(client, `${prefix}v`, opts.users, eventsPerUser, connections);
  await client.waitCounted(afterWarmup + opts.users * eventsPerUser);
  const countedAt = performance.now();
  const loadSeconds = (countedAt - started) / 1000;
  const counted = await processMemory(client.pid);
  if (counted === null) throw new Error(`Server process ${client.pid} is gone`);
  const loaded = await settle(client, settleMs);
  const memory = await processMemory(client.pid);
  const hwmMb = memory === null ? loaded.rssMb : mb(memory.hwmKb);
  return { before, loaded, hwmMb, loadSeconds, countedAt, rssCountedMb: mb(counted.rssKb) };
}

/** Waits `ms`, then samples with the lowest RSS seen meanwhile (every 500 ms). */
async function settle(client: Client, ms: number): Promise<MemorySample> {
  const until = performance.now() + ms;
  let lowestKb = Infinity;
  while (performance.now() < until) {
    const memory = await processMemory(client.pid);
    if (memory === null) throw new Error(`Server process ${client.pid} is gone`);
    lowestKb = Math.min(lowestKb, memory.rssKb);
    await sleep(Math.min(500, Math.max(0, until - performance.now())));
  }
  const sample = await client.sample();
  return lowestKb < sample.rssMb * 1024 ? { ...sample, rssMb: mb(lowestKb) } : sample;
}

/** How the memory runs start their servers. */
const SERVER_OPTIONS = { tempPrefix: "ott-bench-mem-", purpose: "measure memory" };

/** Measures server memory per viewer and whether passivation gives it back; see the module doc. */
export async function measureMemoryPerUser(opts: MemoryOptions): Promise<MemoryResult> {
  if (!Number.isInteger(opts.users) || opts.users < 1) {
    throw new Error(`Cannot measure memory: users must be a positive integer, got ${opts.users}`);
  }
  const eventsPerUser = opts.eventsPerUser ?? 2;
  const run = crypto.randomUUID().slice(0, 8);
  const main = await withServer(opts.env, async (server) => {
    const client = new Client(server.url, server.child.pid, opts.token);
    const phase = await loadViewers(client, opts, `m${run}`);
    return { phase, retriedBatches: client.retriedBatches };
  }, SERVER_OPTIONS);
  const { before, loaded } = main.phase;
  const result: MemoryResult = {
    users: opts.users,
    eventsPerUser,
    rssBeforeMb: before.rssMb,
    rssPeakMb: main.phase.hwmMb,
    rssAfterMb: loaded.rssMb,
    rssCountedMb: main.phase.rssCountedMb,
    kbPerUserCounted: Math.round(
      ((main.phase.rssCountedMb - before.rssMb) * 1024 / opts.users) * 100,
    ) / 100,
    kbPerUser: Math.round(((loaded.rssMb - before.rssMb) * 1024 / opts.users) * 100) / 100,
    entitiesBefore: before.entities,
    entitiesAfter: loaded.entities,
    entitiesPerUser: Math.round(((loaded.entities - before.entities) / opts.users) * 100) / 100,
    heapUsedBeforeMb: before.heapUsedMb,
    heapUsedAfterMb: loaded.heapUsedMb,
    workerHeapBeforeMb: before.workerHeapUsedMb,
    workerHeapAfterMb: loaded.workerHeapUsedMb,
    workerHeapKbPerUser: Math.round(
      ((loaded.workerHeapUsedMb - before.workerHeapUsedMb) * 1024 / opts.users) * 100,
    ) / 100,
    loadSeconds: Math.round(main.phase.loadSeconds * 10) / 10,
    retriedBatches: main.retriedBatches,
  };
  if (opts.reclaim === false) return result;

  const settings = { ...RECLAIM_ENV, ...opts.reclaimEnv };
  const env = { ...opts.env, ...settings };
  // A caller's DATA_DIR belongs to the first server's data; the second gets a fresh temp dir.
  if (opts.env.DATABASE_URL === undefined) delete env.DATA_DIR;
  result.reclaim = await withServer(env, async (server) => {
    const client = new Client(server.url, server.child.pid, opts.token);
    // Entity counts need no quiet time; the windows run from the moment the viewers are counted.
    const users = opts.reclaimUsers ?? opts.users;
    const phase = await loadViewers(client, { ...opts, users, env, settleMs: 0 }, `r${run}`);
    const windowsMs = Number(env.SHARING_WINDOW_MS) +
      Math.max(Number(env.MAX_SEGMENT_MS), Number(env.QUALITY_WINDOW_MS)) +
      Number(env.ALLOWED_LATENESS_MS) + Number(env.MAX_IDLE_MS);
    const timeoutMs = opts.reclaimTimeoutMs ?? windowsMs + 60_000;
    const added = phase.loaded.entities - phase.before.entities;
    // "Back" means within 1% of the entities the viewers added, above the warm-up level.
    const target = phase.before.entities + Math.max(10, Math.floor(added * 0.01));
    const started = phase.countedAt;
    let reclaimedAfterMs: number | null = null;
    let tick = 0;
    while (performance.now() - started < timeoutMs) {
      // The watermark only moves with event time: one current event keeps it at the clock.
      await client.post([viewerEvent(`r${run}c`, 0, tick++, "PLAY", new Date().toISOString())]);
      if (await client.entities() <= target) {
        reclaimedAfterMs = Math.round(performance.now() - started);
        break;
      }
      await sleep(500);
    }
    // Give the heap a moment after the eviction before the last reading.
    await sleep(2_000);
    const after = await client.sample();
    const waitedMs = Math.round(performance.now() - started);
    return {
      settings,
      before: phase.before,
      loaded: phase.loaded,
      after,
      reclaimedAfterMs,
      waitedMs,
    };
  }, SERVER_OPTIONS);
  result.reclaimedAfterMs = result.reclaim.reclaimedAfterMs;
  return result;
}

const CLI = z.object({
  users: z.coerce.number().int().min(1).max(10_000_000).default(200_000),
  "events-per-user": z.enum(["1", "2"]).default("2"),
  "database-url": z.string().url().optional(),
  "skip-reclaim": z.boolean().default(false),
  "settle-ms": z.coerce.number().int().min(0).max(600_000).optional(),
  token: z.string().min(1).optional(),
  env: z.array(z.string().regex(/^[A-Z_][A-Z0-9_]*=/, "must be KEY=VALUE")).default([]),
  json: z.boolean().default(false),
});

function report(r: MemoryResult): string {
  const lines = [
    `${r.users} viewers x ${r.eventsPerUser} events in ${r.loadSeconds} s ` +
    `(${r.retriedBatches} batches retried after 503)`,
    `RSS before ${r.rssBeforeMb} MB, ${r.rssCountedMb} MB when counted ` +
    `(${r.kbPerUserCounted} kB per viewer), after ${r.rssAfterMb} MB, peak ${r.rssPeakMb} MB: ` +
    `${r.kbPerUser} kB per viewer`,
    `entities ${r.entitiesBefore} -> ${r.entitiesAfter} (${r.entitiesPerUser} per viewer); ` +
    `main-thread heap ${r.heapUsedBeforeMb} -> ${r.heapUsedAfterMb} MB; worker heaps ` +
    `${r.workerHeapBeforeMb} -> ${r.workerHeapAfterMb} MB (${r.workerHeapKbPerUser} kB per viewer, ` +
    `uncollected garbage included)`,
  ];
  const c = r.reclaim;
  if (c !== undefined) {
    lines.push(
      `passivation (${Object.entries(c.settings).map(([k, v]) => `${k}=${v}`).join(" ")}): ` +
        `entities ${c.before.entities} -> ${c.loaded.entities} -> ${c.after.entities}, ` +
        `RSS ${c.before.rssMb} -> ${c.loaded.rssMb} -> ${c.after.rssMb} MB, ` +
        (c.reclaimedAfterMs === null
          ? `not back within ${c.waitedMs} ms`
          : `back after ${c.reclaimedAfterMs} ms`),
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const args = parseCli(CLI);
  const env = Object.fromEntries(args.env.map((kv) => {
    const at = kv.indexOf("=");
    return [kv.slice(0, at), kv.slice(at + 1)];
  }));
  const measure = (extra: Record<string, string>) =>
    measureMemoryPerUser({
      users: args.users,
      env: { ...env, ...extra },
      eventsPerUser: args["events-per-user"] === "1" ? 1 : 2,
      reclaim: !args["skip-reclaim"],
      settleMs: args["settle-ms"],
      token: args.token,
    });
  const result = args["database-url"] === undefined
    ? await measure({})
    : await withDatabase(args["database-url"], "mem", (url) => measure({ DATABASE_URL: url }));
  console.log(args.json ? JSON.stringify(result, null, 2) : report(result));
}

if (import.meta.main) await main();
