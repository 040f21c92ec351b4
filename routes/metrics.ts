/**
 * `GET /metrics` in the Prometheus text format, and the middleware timing every request. The main
 * thread owns the one registry: workers report flushes in their status messages (the region hands them
 * to {@link PipelineMetrics.observer}), and worker gauges are read from `region.health()` at scrape time.
 *
 * @module
 */
import process from "node:process";
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import client from "prom-client";
import type { Appender, LogReadiness } from "../actors/log/log.ts";

type ClusterReadiness = NonNullable<LogReadiness["cluster"]>;
import type { FlushReport } from "../actors/protocol.ts";
import type { Region, RegionHealth, RegionObserver } from "../actors/region.ts";
import {
  type AuthConfig,
  digestOf,
  isAuthEnabled,
  isEqualConstantTime,
  requireRole,
} from "./auth.ts";

/** How one ingested event ended; exactly one per event (a late duplicate is a duplicate). */
export type IngestResult = "accepted" | "rejected" | "duplicate" | "late";

const HTTP_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const FLUSH_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const INGEST_ROUTES = new Set(["/events", "/events/batch"]);

/** The pipeline's Prometheus registry and every metric in it; one per pipeline, no global state. */
export class PipelineMetrics {
  readonly registry: client.Registry = new client.Registry();
  #ingest;
  #http;
  #flushDuration;
  #flushRows;
  #flushFailures;
  #flags;
  #pending;
  #entities;
  #heap;
  #inFlight;
  #failing;
  #lag;

  /** `startedAtMs` is when the process started (epoch ms), for uptime and start time. */
  constructor(startedAtMs: number = Date.now() - performance.now()) {
    const registers = [this.registry];
    this.#ingest = new client.Counter({
      name: "ingest_events_total",
      help: "Events sent to ingest, by outcome (exclusive: a late duplicate counts as duplicate).",
      labelNames: ["result"] as const,
      registers,
    });
    for (const result of ["accepted", "rejected", "duplicate", "late"] as const) {
      this.#ingest.inc({ result }, 0);
    }
    this.#http = new client.Histogram({
      name: "http_request_duration_seconds",
      help: "Time to answer an HTTP request, by route pattern, method and status.",
      labelNames: ["route", "method", "status"] as const,
      buckets: HTTP_BUCKETS_S,
      registers,
    });
    this.#flushDuration = new client.Histogram({
      name: "flush_duration_seconds",
      help: "Duration of worker flush attempts that had something to write (failed ones too).",
      buckets: FLUSH_BUCKETS_S,
      registers,
    });
    this.#flushRows = new client.Counter({
      name: "flush_rows_total",
      help: "Rows committed by worker flushes, by table (raw_events is 0 with a durable log).",
      labelNames: ["table"] as const,
      registers,
    });
    for (const table of ["raw_events", "flags"]) this.#flushRows.inc({ table }, 0);
    this.#flushFailures = new client.Counter({
      name: "flush_failures_total",
      help: "Worker flush attempts that rolled back or were fenced.",
      registers,
    });
    this.#flags = new client.Counter({
      name: "flags_raised_total",
      help: "Flag rows committed by flushes, by rule and level (an escalation counts again).",
      labelNames: ["rule", "level"] as const,
      registers,
    });
    const gauge = (name: string, help: string) =>
      new client.Gauge({ name, help, labelNames: ["worker"] as const, registers });
    this.#pending = gauge("worker_pending_events", "Events applied by a worker, not yet flushed.");
    this.#inFlight = gauge("worker_batches_in_flight", "Batches posted to a worker, not acked.");
    this.#failing = gauge("worker_flush_failing", "1 while a worker's last flush failed.");
    this.#entities = gauge("worker_entities", "Users, titles and TVs a worker holds in memory.");
    this.#heap = gauge(
      "worker_heap_used_bytes",
      "A worker's V8 heap in use (live state and uncollected garbage), as of its last status.",
    );
    this.#lag = new client.Gauge({
      name: "log_lag_events",
      help: "Events accepted into the log but not yet applied by a worker (buffered or in flight).",
      registers,
    });
    registerProcessMetrics(registers, startedAtMs);
    this.#alerts = new client.Counter({
      name: "alerts_total",
      help: "Alert webhook delivery attempts, by outcome (a failed one is retried with backoff).",
      labelNames: ["outcome"] as const,
      registers,
    });
    for (const outcome of ["delivered", "failed"]) this.#alerts.inc({ outcome }, 0);
    this.#appendGroups = new client.Counter({
      name: "log_append_groups_total",
      help: "Postgres-log append transactions, by path: copy, or insert (PGlite, or a group " +
        "holding a possible retry).",
      labelNames: ["path"] as const,
      registers,
    });
  }

  #alerts;
  #appendGroups;
  #erasureRetries = new client.Counter({
    name: "privacy_erasure_retries_total",
    help: "Deletion erasures that could not finish and were scheduled to run again.",
    registers: [this.registry],
  });

  #reusedIds = new client.Counter({
    name: "log_reused_event_ids_total",
    help: "Events stored although their event_id was seen recently with another timestamp: an " +
      "event is its id with its timestamp, so a TV that reuses ids is counted (see docs/delivery.md).",
    registers: [this.registry],
  });

  /** Counts one deletion erasure scheduled to run again. */
  countErasureRetry(): void {
    this.#erasureRetries.inc();
  }

  /** Counts one postgres-log append transaction by the path it took. */
  countAppendPath(path: "copy" | "insert"): void {
    this.#appendGroups.inc({ path });
  }

  /** Counts one alert delivery attempt. */
  countAlert(outcome: "delivered" | "failed"): void {
    this.#alerts.inc({ outcome });
  }

  /**
   * Gauges read from the database at scrape time: privacy requests by status, overdue ones, and
   * undelivered alerts.
   */
  watchDatabase(read: {
    requestsByStatus(): Promise<Record<string, number>>;
    overdueRequests(): Promise<number>;
    pendingAlerts(): Promise<number>;
  }): void {
    const registers = [this.registry];
    new client.Gauge({
      name: "privacy_requests",
      help: "Privacy requests on record, by status.",
      labelNames: ["status"] as const,
      registers,
      async collect() {
        const counts = await read.requestsByStatus();
        for (const status of ["received", "in_progress", "completed", "failed"]) {
          this.set({ status }, counts[status] ?? 0);
        }
      },
    });
    new client.Gauge({
      name: "privacy_requests_overdue",
      help: "Open privacy requests past their due date.",
      registers,
      async collect() {
        this.set(await read.overdueRequests());
      },
    });
    new client.Gauge({
      name: "alert_outbox_pending",
      help: "Alerts written to the outbox and not delivered yet.",
      registers,
      async collect() {
        this.set(await read.pendingAlerts());
      },
    });
  }

  /** Cluster gauges, read from the log's readiness at scrape time (a cluster node only). */
  watchCluster(read: () => LogReadiness["cluster"]): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, pick: (c: ClusterReadiness) => number) =>
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          const cluster = read();
          if (cluster !== undefined) this.set(pick(cluster));
        },
      });
    gauge(
      "cluster_shard_lag_events",
      "Entries waiting in the streams of the shards this node holds (above their checkpoints).",
      (c) => c.lagEvents,
    );
    gauge(
      "cluster_stalled_shards",
      "Shards this node holds whose checkpoint has not moved while entries wait, or not adopted.",
      (c) => c.stalledShards,
    );
    gauge(
      "cluster_stepped_down",
      "1 while this node has left the cluster because it cannot reach PostgreSQL.",
      (c) => c.isSteppedDown ? 1 : 0,
    );
  }

  /** Counts `count` events with one outcome. */
  countIngest(result: IngestResult, count: number): void {
    if (count > 0) this.#ingest.inc({ result }, count);
  }

  /**
   * Counts one postgres-log append from what it committed: rows not newly stored (`stored[i]` 0:
   * duplicates of stored events or repeats within the append) are duplicates; the others are late
   * or accepted.
   */
  countAppended(
    rows: ReadonlyArray<{ isLate: boolean }>,
    stored: Uint8Array,
    reusedIds = 0,
  ): void {
    if (reusedIds > 0) this.#reusedIds.inc(reusedIds);
    let duplicates = 0;
    let late = 0;
    for (let i = 0; i < rows.length; i++) {
      if (stored[i] === 0) duplicates++;
      else if (rows[i].isLate) late++;
    }
    this.countIngest("duplicate", duplicates);
    this.countIngest("late", late);
    this.countIngest("accepted", rows.length - duplicates - late);
  }

  /** Observes one answered request; `route` is a pattern such as `/events/:id`, never a raw path. */
  observeRequest(route: string, method: string, status: number, seconds: number): void {
    this.#http.observe({ route, method, status: String(status) }, seconds);
  }

  /** What the region reports: memory-log routing and worker flushes. */
  readonly observer: RegionObserver = {
    onRouted: (eventCount, lateCount) => {
      this.countIngest("late", lateCount);
      this.countIngest("accepted", eventCount - lateCount);
    },
    onFlushReport: (_workerIndex, report) => this.#observeFlushes(report),
  };

  /** Sets the worker gauges from the region's health (called at scrape time). */
  observeHealth(health: RegionHealth): void {
    this.#pending.reset();
    this.#inFlight.reset();
    this.#failing.reset();
    this.#entities.reset();
    this.#heap.reset();
    let lag = 0;
    for (const w of health.workers) {
      const worker = String(w.index);
      this.#pending.set({ worker }, w.pendingEvents);
      this.#inFlight.set({ worker }, w.inFlight);
      this.#failing.set({ worker }, w.isFlushFailing ? 1 : 0);
      this.#entities.set({ worker }, w.entities);
      this.#heap.set({ worker }, w.heapUsedBytes);
      lag += w.unappliedEvents;
    }
    this.#lag.set(lag);
  }

  #observeFlushes(report: FlushReport): void {
    for (const ms of report.durationsMs) this.#flushDuration.observe(ms / 1000);
    if (report.failures > 0) this.#flushFailures.inc(report.failures);
    if (report.rows.rawEvents > 0) {
      this.#flushRows.inc({ table: "raw_events" }, report.rows.rawEvents);
    }
    if (report.rows.flags > 0) this.#flushRows.inc({ table: "flags" }, report.rows.flags);
    for (const [key, count] of Object.entries(report.flags)) {
      const [rule, level] = key.split(" ");
      this.#flags.inc({ rule, level }, count);
    }
  }
}

/**
 * Process metrics read from Deno itself. prom-client's default collector reads `/proc/self/*`,
 * which Deno 2 refuses without `--allow-all`, so under the server's permissions it reports a
 * resident memory of 0; `Deno.memoryUsage()` and `process.cpuUsage()` need no permission.
 */
function registerProcessMetrics(registers: client.Registry[], startedAtMs: number): void {
  const memory = (name: string, help: string, read: (m: Deno.MemoryUsage) => number) =>
    new client.Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read(Deno.memoryUsage()));
      },
    });
  memory("process_resident_memory_bytes", "Resident memory size in bytes.", (m) => m.rss);
  memory("process_heap_used_bytes", "V8 heap in use, in bytes.", (m) => m.heapUsed);
  memory("process_heap_total_bytes", "V8 heap reserved, in bytes.", (m) => m.heapTotal);
  memory("process_external_memory_bytes", "Memory of V8-bound C++ objects.", (m) => m.external);
  new client.Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch, in seconds.",
    registers,
  }).set(startedAtMs / 1000);
  new client.Gauge({
    name: "process_uptime_seconds",
    help: "Seconds since the process started.",
    registers,
    collect() {
      this.set((Date.now() - startedAtMs) / 1000);
    },
  });
  const cpu = (
    name: string,
    help: string,
    read: (u: ReturnType<typeof process.cpuUsage>) => number,
  ) => {
    let reported = 0;
    new client.Counter({
      name,
      help,
      registers,
      collect() {
        const seconds = read(process.cpuUsage()) / 1e6;
        if (seconds > reported) this.inc(seconds - reported);
        reported = Math.max(reported, seconds);
      },
    });
  };
  cpu("process_cpu_user_seconds_total", "User CPU time, in seconds.", (u) => u.user);
  cpu("process_cpu_system_seconds_total", "System CPU time, in seconds.", (u) => u.system);
  cpu(
    "process_cpu_seconds_total",
    "User and system CPU time, in seconds.",
    (u) => u.user + u.system,
  );
}

/**
 * Middleware timing every request under its route pattern, and counting events rejected at ingest
 * (read from the answer: 422 on `POST /events`, the `rejected` list of `POST /events/batch`).
 */
export function httpMetrics(metrics: PipelineMetrics): MiddlewareHandler {
  return async (c, next) => {
    const startedMs = performance.now();
    try {
      await next();
    } finally {
      const route = routePath(c);
      metrics.observeRequest(
        route,
        c.req.method,
        c.res.status,
        (performance.now() - startedMs) / 1000,
      );
      if (c.req.method === "POST" && INGEST_ROUTES.has(route)) {
        await countRejected(c, route, metrics);
      }
    }
  };
}

async function countRejected(c: Context, route: string, metrics: PipelineMetrics): Promise<void> {
  const status = c.res.status;
  if (route === "/events") {
    if (status === 422) metrics.countIngest("rejected", 1);
    return;
  }
  if (status !== 202 && status !== 422) return;
  const body: unknown = await c.res.clone().json();
  const rejected = (body as { rejected?: unknown }).rejected;
  if (Array.isArray(rejected)) metrics.countIngest("rejected", rejected.length);
}

/**
 * Counts every acknowledged event as accepted: for the redis log, which decides lateness and
 * recognises retries inside its append and does not tell which.
 */
export function countAcknowledged(log: Appender, metrics: PipelineMetrics): Appender {
  return {
    kind: log.kind,
    refusal: () => log.refusal(),
    append: async (events) => {
      await log.append(events);
      metrics.countIngest("accepted", events.length);
    },
  };
}

/** `GET /metrics`: mount under `/metrics` behind {@link requireMetricsAccess}. */
export function metricsRoutes(metrics: PipelineMetrics, region: Region): Hono {
  const app = new Hono();
  app.get("/", async (c) => {
    metrics.observeHealth(region.health());
    const text = await metrics.registry.metrics();
    return c.body(text, 200, { "content-type": metrics.registry.contentType });
  });
  return app;
}

/**
 * Guards `/metrics`: open while no token at all is configured; otherwise the `METRICS_TOKEN` or an
 * admin token (runs after `authenticate`). A `METRICS_TOKEN` alone (other auth off) still protects
 * metrics: setting it says they are private.
 */
export function requireMetricsAccess(auth: AuthConfig, metricsToken?: string): MiddlewareHandler {
  const byRole = requireRole(["admin"]);
  const digest = metricsToken === undefined ? undefined : digestOf(metricsToken);
  const isAuthOn = isAuthEnabled(auth);
  return async (c, next) => {
    if (digest === undefined) return isAuthOn ? await byRole(c, next) : await next();
    const match = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "");
    if (match !== null && isEqualConstantTime(digestOf(match[1]), digest)) return await next();
    if (isAuthOn) return await byRole(c, next);
    c.header("WWW-Authenticate", 'Bearer realm="ott-pipeline"');
    return c.json({
      error: "Missing or unknown bearer token: send the METRICS_TOKEN",
      issues: [],
    }, 401);
  };
}
