/**
 * `GET /stats/timeseries`: one metric per hour or day over a range, optionally filtered and grouped
 * by a dimension. Additive metrics sum the hourly facts, so a series over a range adds up to the
 * summary of that range; `error_rate` is the sum of errors over the sum of events per bucket;
 * `unique_viewers` merges the hourly sketches of each bucket.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";
import { estimateViewers } from "./hll.ts";

type Db = Kysely<Database>;

/** Metrics a series can show. */
export const METRICS = [
  "events",
  "plays",
  "errors",
  "error_rate",
  "watch_time_ms",
  "unique_viewers",
] as const;
/** One of {@link METRICS}. */
export type Metric = typeof METRICS[number];

/** Bucket lengths a series can use, in ms. */
export const BUCKETS = { "1h": 3_600_000, "1d": 86_400_000 } as const;
/** One of the keys of {@link BUCKETS}. */
export type Bucket = keyof typeof BUCKETS;

/** Dimensions a series can be grouped by. */
export const GROUP_BYS = [
  "region",
  "content_id",
  "platform",
  "app_version",
  "error_code",
  "subscription_plan",
] as const;
/** One of {@link GROUP_BYS}. */
export type GroupBy = typeof GROUP_BYS[number];

/** A validated time-series request; `fromMs` and `toMs` are aligned to the bucket. */
export interface SeriesQuery {
  metric: Metric;
  bucket: Bucket;
  fromMs: number;
  toMs: number;
  contentId?: string;
  region?: string;
  deviceId?: string;
  platform?: string;
  groupBy?: GroupBy;
  /** Most series returned when grouping: the largest by total. */
  limit: number;
}

/** A request the data cannot answer as asked (combination of metric, filter and grouping). */
export class SeriesQueryError extends Error {
  override name = "SeriesQueryError";
}

/** The answer: one series per group (key null when not grouped), one point per bucket. */
export interface SeriesResult {
  metric: Metric;
  bucket: Bucket;
  from: string;
  to: string;
  series: Array<{ key: string | null; points: Array<{ t: string; value: number }> }>;
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));

/** Answers a time-series query; throws {@link SeriesQueryError} for unsupported combinations. */
export async function getTimeseries(db: Db, q: SeriesQuery): Promise<SeriesResult> {
  const rows = q.metric === "unique_viewers" ? await viewerRows(db, q) : await additiveRows(db, q);
  const bucketMs = BUCKETS[q.bucket];
  const starts: number[] = [];
  for (let t = q.fromMs; t < q.toMs; t += bucketMs) starts.push(t);
  const byKey = new Map<string | null, Map<number, number>>();
  for (const row of rows) {
    let points = byKey.get(row.key);
    if (points === undefined) byKey.set(row.key, points = new Map());
    points.set(row.t, row.value);
  }
  if (q.groupBy === undefined && !byKey.has(null)) byKey.set(null, new Map());
  const totals = (points: Map<number, number>) => [...points.values()].reduce((a, b) => a + b, 0);
  const series = [...byKey.entries()]
    .sort(([ka, a], [kb, b]) => totals(b) - totals(a) || String(ka).localeCompare(String(kb)))
    .slice(0, q.limit)
    .map(([key, points]) => ({
      key,
      points: starts.map((t) => ({ t: new Date(t).toISOString(), value: points.get(t) ?? 0 })),
    }));
  return {
    metric: q.metric,
    bucket: q.bucket,
    from: new Date(q.fromMs).toISOString(),
    to: new Date(q.toMs).toISOString(),
    series,
  };
}

interface Row {
  key: string | null;
  t: number;
  value: number;
}

function bucketExpr(bucket: Bucket) {
  return bucket === "1h"
    ? sql`hour`
    : sql`(date_trunc('day', hour at time zone 'UTC') at time zone 'UTC')`;
}

async function additiveRows(db: Db, q: SeriesQuery): Promise<Row[]> {
  const conditions = [
    sql`hour >= ${new Date(q.fromMs).toISOString()}::timestamptz`,
    sql`hour < ${new Date(q.toMs).toISOString()}::timestamptz`,
  ];
  let table: string;
  if (q.deviceId !== undefined) {
    if (q.groupBy !== undefined || (q.contentId ?? q.region ?? q.platform) !== undefined) {
      throw new SeriesQueryError(
        "Cannot combine device_id with group_by or other filters: device_id only filters " +
          "additive metrics on its own",
      );
    }
    table = "device_facts_hourly";
    conditions.push(sql`device_id = ${q.deviceId}`);
  } else if (q.groupBy === "error_code") {
    if (q.metric !== "errors") {
      throw new SeriesQueryError(
        `Cannot group "${q.metric}" by error_code: only "errors" has codes`,
      );
    }
    table = "error_codes_hourly";
  } else table = "event_facts_hourly";
  if (q.contentId !== undefined) conditions.push(sql`content_id = ${q.contentId}`);
  if (q.region !== undefined) conditions.push(sql`region = ${q.region}`);
  if (q.platform !== undefined) conditions.push(sql`platform = ${q.platform}`);
  const key = q.groupBy === undefined ? sql`null::text` : sql.ref(q.groupBy);
  const value = table === "error_codes_hourly"
    ? sql`sum(errors)`
    : q.metric === "error_rate"
    ? sql`case when sum(events) = 0 then 0 else sum(errors)::float8 / sum(events) end`
    : sql`sum(${sql.ref(q.metric)})`;
  const result = await sql<{ key: string | null; t: Date | string; value: string | number }>`
    select ${key} as key, ${bucketExpr(q.bucket)} as t, ${value} as value
    from ${sql.table(table)} where ${sql.join(conditions, sql` and `)}
    group by 1, 2`.execute(db);
  return result.rows.map((r) => ({ key: r.key, t: new Date(r.t).getTime(), value: num(r.value) }));
}

async function viewerRows(db: Db, q: SeriesQuery): Promise<Row[]> {
  if (q.deviceId !== undefined || q.platform !== undefined) {
    throw new SeriesQueryError("Cannot count unique_viewers by device_id or platform");
  }
  if (q.contentId !== undefined && q.region !== undefined) {
    throw new SeriesQueryError("Cannot count unique_viewers for a content_id and a region at once");
  }
  if (q.groupBy !== undefined && q.groupBy !== "region" && q.groupBy !== "content_id") {
    throw new SeriesQueryError(`Cannot group unique_viewers by ${q.groupBy}`);
  }
  if (q.groupBy !== undefined && (q.contentId ?? q.region) !== undefined) {
    throw new SeriesQueryError("Cannot group unique_viewers and filter it at once");
  }
  const scope = q.groupBy === "region"
    ? sql`scope like 'r:%'`
    : q.groupBy === "content_id"
    ? sql`scope like 'c:%'`
    : sql`scope = ${
      q.contentId !== undefined ? `c:${q.contentId}` : q.region !== undefined ? `r:${q.region}` : ""
    }`;
  const result = await sql<{ scope: string; t: Date | string; registers: number[] }>`
    select scope, ${bucketExpr(q.bucket)} as t, registers from viewer_sketches_hourly
    where ${scope} and hour >= ${new Date(q.fromMs).toISOString()}::timestamptz
      and hour < ${new Date(q.toMs).toISOString()}::timestamptz`.execute(db);
  const groups = new Map<string, { key: string | null; t: number; sketches: number[][] }>();
  for (const r of result.rows) {
    const key = q.groupBy === undefined ? null : r.scope.slice(2);
    const t = new Date(r.t).getTime();
    const id = `${key}\u0000${t}`;
    let group = groups.get(id);
    if (group === undefined) groups.set(id, group = { key, t, sketches: [] });
    group.sketches.push(r.registers.map(Number));
  }
  return [...groups.values()].map((g) => ({
    key: g.key,
    t: g.t,
    value: estimateViewers(g.sketches),
  }));
}
