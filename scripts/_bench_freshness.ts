/**
 * Freshness of the reads: how long after its 202 an event shows up in `/stats/*`, under background
 * load. Against a running server, paced batches of the benchmark's events (`_bench_events.ts`) keep
 * `eventsPerS` flowing from a few concurrent loops while a probe (one event with a title no other
 * event uses, under a platform only this run's probes use) is sent every `probeEveryMs`. One poll
 * loop asks `GET /stats/timeseries?platform=<probe platform>&group_by=content_id`, which lists the
 * probes already counted; a probe's latency is the arrival of the first poll answer that lists it
 * minus the arrival of its 202 (so it includes up to one poll interval plus one read). If the series
 * route is refused, each outstanding probe is polled at `GET /stats/content/{id}` instead.
 *
 * Usage (alone): deno run -A scripts/_bench_freshness.ts [--url http://127.0.0.1:8000] [--token T]
 *   [--events-per-s 5000] [--seconds 10] [--flush-interval-ms 1000] [--database-url URL] [--json]
 * Without `--url` it starts its own server (embedded PGlite in a temp dir, or a fresh database on the
 * PostgreSQL server of `--database-url`) and stops it afterwards.
 *
 * @module
 */
import { z } from "zod";
import { benchEvent } from "./_bench_events.ts";
import { parseCli, sleep, withDatabase, withServer } from "./_bench_server.ts";

/** Options of {@link measureFreshness}. */
export interface FreshnessOptions {
  /** Background load, in events per second (0: probes only). */
  eventsPerS: number;
  /** How long probes are sent, in seconds (load runs a little longer: warm-up and draining). */
  seconds: number;
  /** Bearer token for ingest and reads (needs a role that may do both, such as admin). */
  token?: string;
  /** The server's FLUSH_INTERVAL_MS, when known: echoed, and the goal is checked against it. */
  flushIntervalMs?: number;
  /** Time between probes, in ms (default 150). */
  probeEveryMs?: number;
  /** Pause between polls, in ms (default 25). */
  pollEveryMs?: number;
  /** Most background batches in flight at once (default 8). */
  connections?: number;
  /** Load before the first probe, in ms (default 2 s or two flush intervals, the larger). */
  warmupMs?: number;
  /** A probe not visible after this long is counted as lost (default 30 s). */
  probeTimeoutMs?: number;
  /** How to poll (default "timeseries", which falls back to "per-title" when refused). */
  pollMode?: "timeseries" | "per-title";
}

/** What {@link measureFreshness} measured; latencies in ms from the 202 to the first read showing it. */
export interface FreshnessResult {
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  /** Probes that became visible (the percentiles are over these). */
  probes: number;
  /** Probes not visible within `probeTimeoutMs`, or never acknowledged. */
  lost: number;
  /** Probes answered 503 at least once (retried until 202). */
  probeRetries: number;
  targetEventsPerS: number;
  /** Background events acknowledged per second while probes were sent. */
  achievedEventsPerS: number;
  batchSize: number;
  /** Background batches answered 503 (backpressure; not retried, so pacing holds). */
  refusedBatches: number;
  /** Background batches skipped because every connection was busy for over a second. */
  skippedBatches: number;
  pollMode: "timeseries" | "per-title";
  pollRequests: number;
  /** Time one poll took (the resolution of the latencies, which include up to one poll). */
  pollP50Ms: number;
  pollP99Ms: number;
  flushIntervalMs?: number;
  /** FLUSH_INTERVAL_MS + 250 ms, when the flush interval is known. */
  goalMs?: number;
  /** Whether p99 is within the goal (and no probe was lost), when the flush interval is known. */
  meetsGoal?: boolean;
}

const HOUR_MS = 3_600_000;
const SEQ_DIGITS = 7;
const SEQ_MAX = 10 ** SEQ_DIGITS - 1;
interface Probe {
  contentId: string;
  ackedAt: number;
}

/** Measures read freshness against a running server; see the module documentation. */
export async function measureFreshness(
  serverUrl: string,
  opts: FreshnessOptions,
): Promise<FreshnessResult> {
  const base = serverUrl.replace(/\/+$/, "");
  const probeEveryMs = opts.probeEveryMs ?? 150;
  const pollEveryMs = opts.pollEveryMs ?? 25;
  const connections = Math.max(1, opts.connections ?? 8);
  const warmupMs = opts.warmupMs ?? Math.max(2_000, 2 * (opts.flushIntervalMs ?? 1_000));
  const probeTimeoutMs = opts.probeTimeoutMs ?? 30_000;
  const run = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
  const prefix = `f${run}`;
  const platform = `probe${run}`;
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;

  const health = await fetch(`${base}/healthz`).catch((error: unknown) => {
    throw new Error(`Cannot measure freshness: ${base} does not answer (${error})`);
  });
  await health.body?.cancel();

  // Background load, open loop: batch k is due at k * batchSize / eventsPerS; at most `connections`
  // are in flight. When the server is slower than the schedule, due batches wait for a free
  // connection; more than a second behind, the schedule skips ahead (counted) instead of bursting.
  const batchSize = opts.eventsPerS >= 5_000 ? 500 : 100;
  const intervalMs = (batchSize * 1000) / Math.max(opts.eventsPerS, 1e-9);
  let isLoading = opts.eventsPerS > 0;
  let sent = 0;
  let acked = 0;
  let refusedBatches = 0;
  let skippedBatches = 0;
  const sendBatch = async () => {
    const first = sent;
    sent += batchSize;
    const timestamp = new Date().toISOString();
    const events = Array.from(
      { length: batchSize },
      (_, i) => JSON.stringify(benchEvent(first + i, timestamp)),
    );
    try {
      const res = await fetch(`${base}/events/batch`, {
        method: "POST",
        headers,
        body: `[${events.join(",")}]`,
      });
      await res.body?.cancel();
      if (res.status === 202) acked += batchSize;
      else if (res.status === 503) refusedBatches++;
      else throw new Error(`Background batch answered ${res.status}`);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
      refusedBatches++;
    }
  };
  const dispatch = async () => {
    const active = new Set<Promise<void>>();
    let next = performance.now();
    while (isLoading) {
      const wait = next - performance.now();
      if (wait > 0) await sleep(Math.min(wait, 100));
      if (!isLoading) break;
      if (performance.now() < next) continue;
      while (active.size >= connections && isLoading) await Promise.race(active);
      if (!isLoading) break;
      const behindMs = performance.now() - next;
      if (behindMs > 1_000) {
        const skipped = Math.floor(behindMs / intervalMs);
        skippedBatches += skipped;
        next += skipped * intervalMs;
      }
      next += intervalMs;
      const request: Promise<void> = sendBatch().catch(fail).finally(() => active.delete(request));
      active.add(request);
    }
    await Promise.all(active);
  };
  // The first error of any loop ends the run and is rethrown at the end (a rejected promise left
  // unawaited would end the process instead).
  let failure: { error: unknown } | null = null;
  const fail = (error: unknown) => {
    failure ??= { error };
    isLoading = false;
  };
  const loaders = opts.eventsPerS > 0 ? [dispatch().catch(fail)] : [];

  const outstanding = new Map<string, Probe>();
  const latencies: number[] = [];
  let lost = 0;
  let probeRetries = 0;
  let pollRequests = 0;
  const pollDurations: number[] = [];
  let pollMode: FreshnessResult["pollMode"] = opts.pollMode ?? "timeseries";
  let isProbing = true;

  const sendProbe = async (seq: number) => {
    // Descending ids: the series lists equal totals by id, so the newest probes come first.
    const contentId = `${prefix}-p${String(SEQ_MAX - seq).padStart(SEQ_DIGITS, "0")}`;
    const body = JSON.stringify({
      event_id: `${prefix}-probe-${seq}`,
      user_id: `${prefix}-probe-user`,
      device_id: `${prefix}-probe-tv`,
      content_id: contentId,
      event_type: "PLAY",
      timestamp: new Date().toISOString(),
      region: "US-CA",
      is_eu: false,
      has_consent: true,
      ip_address: "10.255.0.1",
      error_code: null,
      extra_metadata: { platform, app_version: "5.2.0" },
    });
    const deadline = performance.now() + probeTimeoutMs;
    let isRetried = false;
    while (performance.now() < deadline) {
      const res = await fetch(`${base}/events`, { method: "POST", headers, body });
      const ackedAt = performance.now();
      const text = await res.text();
      if (res.status === 202) {
        outstanding.set(contentId, { contentId, ackedAt });
        return;
      }
      if (res.status !== 503) {
        throw new Error(`Probe answered ${res.status}: ${text.slice(0, 300)}`);
      }
      if (!isRetried) probeRetries++;
      isRetried = true;
      await sleep(20);
    }
    lost++;
  };

  const seen = (contentId: string, at: number) => {
    const probe = outstanding.get(contentId);
    if (probe === undefined) return;
    outstanding.delete(contentId);
    latencies.push(Math.max(0, at - probe.ackedAt));
  };

  const pollSeries = async (): Promise<boolean> => {
    const hour = Math.floor(Date.now() / HOUR_MS) * HOUR_MS;
    const query = new URLSearchParams({
      metric: "events",
      bucket: "1h",
      from: new Date(hour - HOUR_MS).toISOString(),
      to: new Date(hour + 2 * HOUR_MS).toISOString(),
      platform,
      group_by: "content_id",
      limit: "50",
    });
    pollRequests++;
    const sentAt = performance.now();
    const res = await fetch(`${base}/stats/timeseries?${query}`, { headers });
    const at = performance.now();
    pollDurations.push(at - sentAt);
    if (res.status !== 200) {
      const text = await res.text();
      // 400 or 404: a server without this query; anything else is a real failure.
      if (res.status === 400 || res.status === 404) return false;
      throw new Error(`GET /stats/timeseries answered ${res.status}: ${text.slice(0, 300)}`);
    }
    const answer = await res.json() as {
      series: Array<{ key: string | null; points: Array<{ value: number }> }>;
    };
    for (const s of answer.series) {
      if (s.key !== null && s.points.some((p) => p.value > 0)) seen(s.key, at);
    }
    return true;
  };

  const pollTitles = async () => {
    await Promise.all([...outstanding.keys()].map(async (contentId) => {
      pollRequests++;
      const sentAt = performance.now();
      const res = await fetch(`${base}/stats/content/${encodeURIComponent(contentId)}`, {
        headers,
      });
      const at = performance.now();
      pollDurations.push(at - sentAt);
      if (res.status === 200) {
        const stats = await res.json() as { events: number };
        if (stats.events > 0) seen(contentId, at);
      } else {
        await res.body?.cancel();
        if (res.status !== 404) throw new Error(`GET /stats/content answered ${res.status}`);
      }
    }));
  };

  const poller = (async () => {
    while ((isProbing || outstanding.size > 0) && failure === null) {
      if (outstanding.size > 0) {
        if (pollMode === "timeseries" && !(await pollSeries())) pollMode = "per-title";
        if (pollMode === "per-title") await pollTitles();
        const now = performance.now();
        for (const [contentId, probe] of outstanding) {
          if (now - probe.ackedAt > probeTimeoutMs) {
            outstanding.delete(contentId);
            lost++;
          }
        }
      }
      await sleep(pollEveryMs);
    }
  })().catch(fail);

  let probeStarted = performance.now();
  let probeEnded = probeStarted;
  let ackedAtStart = 0;
  let ackedAtEnd = 0;
  try {
    await sleep(warmupMs);
    probeStarted = performance.now();
    ackedAtStart = acked;
    const pending: Promise<void>[] = [];
    for (
      let seq = 0;
      performance.now() - probeStarted < opts.seconds * 1000 && failure === null;
      seq++
    ) {
      pending.push(sendProbe(seq).catch(fail));
      const nextAt = probeStarted + (seq + 1) * probeEveryMs;
      await sleep(Math.max(0, nextAt - performance.now()));
    }
    await Promise.all(pending);
    probeEnded = performance.now();
    ackedAtEnd = acked;
  } finally {
    isProbing = false;
    await poller;
    isLoading = false;
    await Promise.all(loaders);
  }
  if (failure !== null) {
    const { error } = failure;
    throw new Error(
      `Cannot measure freshness against ${base}: ${(error as Error).message ?? error}`,
      {
        cause: error,
      },
    );
  }
  const probeSeconds = (probeEnded - probeStarted) / 1000;
  const at = percentiles(latencies);
  const pollAt = percentiles(pollDurations);
  const round = (ms: number) => Math.round(ms * 10) / 10;
  const result: FreshnessResult = {
    p50_ms: round(at(0.5)),
    p90_ms: round(at(0.9)),
    p99_ms: round(at(0.99)),
    max_ms: round(at(1)),
    probes: latencies.length,
    lost,
    probeRetries,
    targetEventsPerS: opts.eventsPerS,
    achievedEventsPerS: probeSeconds > 0
      ? Math.round((ackedAtEnd - ackedAtStart) / probeSeconds)
      : 0,
    batchSize,
    refusedBatches,
    skippedBatches,
    pollMode,
    pollRequests,
    pollP50Ms: round(pollAt(0.5)),
    pollP99Ms: round(pollAt(0.99)),
  };
  if (opts.flushIntervalMs !== undefined) {
    result.flushIntervalMs = opts.flushIntervalMs;
    result.goalMs = opts.flushIntervalMs + 250;
    result.meetsGoal = lost === 0 && latencies.length > 0 && result.p99_ms <= result.goalMs;
  }
  return result;
}

/** Nearest-rank percentile of unsorted samples (NaN when there are none). */
function percentiles(samples: number[]): (q: number) => number {
  const sorted = [...samples].sort((a, b) => a - b);
  return (q) =>
    sorted.length === 0
      ? NaN
      : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const CLI = z.object({
  url: z.string().url().optional(),
  token: z.string().min(1).optional(),
  "events-per-s": z.coerce.number().min(0).max(1_000_000).default(5_000),
  seconds: z.coerce.number().min(1).max(600).default(10),
  "flush-interval-ms": z.coerce.number().int().min(10).max(600_000).optional(),
  "database-url": z.string().url().optional(),
  json: z.boolean().default(false),
});

async function main(): Promise<void> {
  const args = parseCli(CLI);
  const measure = (url: string, flushIntervalMs?: number) =>
    measureFreshness(url, {
      eventsPerS: args["events-per-s"],
      seconds: args.seconds,
      token: args.token,
      flushIntervalMs,
    });
  let result: FreshnessResult;
  if (args.url !== undefined) {
    result = await measure(args.url, args["flush-interval-ms"]);
  } else {
    const flushIntervalMs = args["flush-interval-ms"] ?? 1_000;
    const onServer = (env: Record<string, string>) =>
      withServer(
        { FLUSH_INTERVAL_MS: String(flushIntervalMs), ...env },
        (server) => measure(server.url, flushIntervalMs),
        { tempPrefix: "ott-bench-fresh-" },
      );
    result = args["database-url"] === undefined ? await onServer({}) : await withDatabase(
      args["database-url"],
      "fresh",
      (databaseUrl) => onServer({ DATABASE_URL: databaseUrl }),
    );
  }
  if (args.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(
      `freshness at ${result.achievedEventsPerS} events/s (target ${result.targetEventsPerS}): ` +
        `p50 ${result.p50_ms} ms, p90 ${result.p90_ms} ms, p99 ${result.p99_ms} ms, ` +
        `max ${result.max_ms} ms over ${result.probes} probes (${result.lost} lost, ` +
        `${result.refusedBatches} background batches answered 503, ${result.skippedBatches} ` +
        `skipped; ${result.pollMode} polls took p50 ${result.pollP50Ms} ms, p99 ` +
        `${result.pollP99Ms} ms)` +
        (result.goalMs === undefined
          ? ""
          : `; goal p99 <= ${result.goalMs} ms: ${result.meetsGoal ? "met" : "NOT met"}`),
    );
  }
}

if (import.meta.main) await main();
