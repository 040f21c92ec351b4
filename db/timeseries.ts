/**
 * `GET /stats/timeseries`: one metric per hour or day over a range, optionally filtered and grouped
 * by a dimension. Each series reads the narrowest rollup that holds its filters and grouping, hourly
 * rows for 1h buckets and daily rows for 1d, so a series over a range adds up to the summary of that
 * range; `error_rate` is the sum of errors over the sum of events per bucket; `unique_viewers`
 * merges the sketches of each bucket. A grouped series first ranks its groups over the range, then
 * reads the points of the `limit` largest only. The QoE metrics (`views`, `startup_p50`, ...) read
 * the QoE rows instead, and may be grouped by `cdn` (see `qoe_timeseries.ts`).
 *
 * @module
 */
import { type Kysely, type RawBuilder, sql } from "kysely";
import type { RollupBase } from "./rollup_reads.ts";
import { type Completeness, completenessOf, loadHorizons } from "./horizons.ts";
import type { Database } from "./schema.ts";
import { estimateViewers } from "./hll.ts";
import {
  emptyQoeValue,
  isQoeGroupBy,
  isQoeMetric,
  QOE_GROUP_BYS,
  QOE_METRICS,
  type QoeMetric,
  type QoeSeriesQuery,
  qoeSeriesRows,
} from "./qoe_timeseries.ts";

type Db = Kysely<Database>;

/** Metrics a series can show. */
export const METRICS = [
  "events",
  "plays",
  "errors",
  "error_rate",
  "watch_time_ms",
  "unique_viewers",
  ...QOE_METRICS,
] as const;
/** One of {@link METRICS}. */
export type Metric = typeof METRICS[number];
/** The metrics that are not QoE metrics: their points are never null. */
export type CountMetric = Exclude<Metric, QoeMetric>;

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
  "cdn",
] as const;
/** One of {@link GROUP_BYS}; `cdn` with the QoE metrics only. */
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

/**
 * The answer: one series per group (key null when not grouped), one point per bucket; a QoE metric
 * whose denominator is zero in a bucket is null there (`V`: number for a {@link CountMetric}).
 */
export interface SeriesResult<V extends number | null = number | null> extends Completeness {
  metric: Metric;
  bucket: Bucket;
  from: string;
  to: string;
  series: Array<{ key: string | null; points: Array<{ t: string; value: V }> }>;
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));

/** Answers a time-series query; throws {@link SeriesQueryError} for unsupported combinations. */
export function getTimeseries(
  db: Db,
  q: SeriesQuery & { metric: CountMetric },
): Promise<SeriesResult<number>>;
/** Answers a time-series query; throws {@link SeriesQueryError} for unsupported combinations. */
export function getTimeseries(db: Db, q: SeriesQuery): Promise<SeriesResult>;
export async function getTimeseries(db: Db, q: SeriesQuery): Promise<SeriesResult> {
  const { rows, keys, empty } = await seriesRows(db, q);
  const bucketMs = BUCKETS[q.bucket];
  const starts: number[] = [];
  for (let t = q.fromMs; t < q.toMs; t += bucketMs) starts.push(t);
  const byKey = new Map<string | null, Map<number, number | null>>();
  for (const row of rows) {
    let points = byKey.get(row.key);
    if (points === undefined) byKey.set(row.key, points = new Map());
    points.set(row.t, row.value);
  }
  const series = (keys ?? largestKeys(byKey, q)).map((key) => {
    const points = byKey.get(key);
    return {
      key,
      points: starts.map((t) => ({ t: new Date(t).toISOString(), value: points?.get(t) ?? empty })),
    };
  });
  const level = q.deviceId !== undefined ? "device" : q.bucket === "1h" ? "hourly" : "daily";
  return {
    metric: q.metric,
    bucket: q.bucket,
    from: new Date(q.fromMs).toISOString(),
    to: new Date(q.toMs).toISOString(),
    ...completenessOf(await loadHorizons(db), q, level),
    series,
  };
}

interface Row {
  key: string | null;
  t: number;
  value: number | null;
}

/** The points of a query, its keys when ranked apart (else by total), and its empty bucket. */
interface SeriesRows {
  rows: Row[];
  /** The series in order; null: the keys of `rows`, largest total first. */
  keys: Array<string | null> | null;
  /** The value of a bucket without rows. */
  empty: number | null;
}

/** Reads the points of a query: QoE metrics from the QoE rows, the others from the rollups. */
async function seriesRows(db: Db, q: SeriesQuery): Promise<SeriesRows> {
  const metric = q.metric;
  if (isQoeMetric(metric)) {
    const { points, keys } = await qoeSeriesRows(db, qoeQueryOf(q, metric));
    return { rows: points, keys, empty: emptyQoeValue(metric) };
  }
  if (q.groupBy === "cdn") {
    throw new SeriesQueryError(
      `Cannot group "${metric}" by cdn: the CDN is a dimension of the QoE rows only, so group_by=cdn ` +
        `takes a QoE metric (${QOE_METRICS.join(", ")})`,
    );
  }
  const rows = metric === "unique_viewers" ? await viewerRows(db, q) : await additiveRows(db, q);
  return { rows, keys: null, empty: 0 };
}

/** A query of a QoE metric as the QoE read takes it; refuses what the QoE rows cannot answer. */
function qoeQueryOf(q: SeriesQuery, metric: QoeMetric): QoeSeriesQuery {
  if (q.deviceId !== undefined) {
    throw new SeriesQueryError(
      `Cannot filter "${metric}" by device_id: the QoE metrics are counted by title, region, ` +
        "platform, app version, plan and CDN, not by TV",
    );
  }
  const groupBy = q.groupBy;
  if (groupBy !== undefined && !isQoeGroupBy(groupBy)) {
    throw new SeriesQueryError(
      `Cannot group "${metric}" by ${groupBy}: the QoE metrics group by ` +
        QOE_GROUP_BYS.join(", "),
    );
  }
  return {
    metric,
    bucket: q.bucket,
    fromMs: q.fromMs,
    toMs: q.toMs,
    contentId: q.contentId,
    region: q.region,
    platform: q.platform,
    groupBy,
    limit: q.limit,
  };
}

/** The keys of the series, largest total first (ties by key), the `limit` first. */
function largestKeys(
  byKey: Map<string | null, Map<number, number | null>>,
  q: SeriesQuery,
): Array<string | null> {
  if (q.groupBy === undefined && !byKey.has(null)) byKey.set(null, new Map());
  const totals = new Map(
    [...byKey].map((
      [key, points],
    ) => [key, [...points.values()].reduce<number>((a, b) => a + (b ?? 0), 0)]),
  );
  return [...byKey.keys()]
    .sort((ka, kb) => totals.get(kb)! - totals.get(ka)! || String(ka).localeCompare(String(kb)))
    .slice(0, q.limit);
}

/** The time column and table of a rollup base at a bucket: hourly rows for 1h, daily for 1d. */
function tableOf(base: RollupBase, bucket: Bucket) {
  return bucket === "1h"
    ? { table: sql.table(`${base}_hourly`), time: sql.ref("hour") }
    : { table: sql.table(`${base}_daily`), time: sql.ref("day") };
}

/** Where a series reads: a rollup, and how its dimensions are named there. */
interface Source {
  base: RollupBase;
  /** The column (or expression) of a dimension in the rollup. */
  column(dimension: string): RawBuilder<unknown>;
  /** Conditions the rollup itself needs (the dimension of a single-dimension rollup). */
  extra: RawBuilder<unknown>[];
}

const AUDIENCE_DIMENSIONS = ["region", "platform", "app_version", "subscription_plan"];

/** A rollup whose columns are named as the dimensions are. */
const plain = (base: RollupBase): Source => ({
  base,
  column: (dimension) => sql.ref(dimension),
  extra: [],
});

/**
 * The narrowest rollup that holds a query's filters and grouping: a series reads rows bounded by
 * its keys times its buckets, whatever the history. One audience dimension alone (filtered or
 * grouped) reads the single-dimension rollup.
 */
function sourceOf(q: SeriesQuery): Source {
  if (q.deviceId !== undefined) {
    if (q.groupBy !== undefined || (q.contentId ?? q.region ?? q.platform) !== undefined) {
      throw new SeriesQueryError(
        "Cannot combine device_id with group_by or other filters: device_id only filters " +
          "additive metrics on its own",
      );
    }
    return plain("device_facts");
  }
  if (q.groupBy === "error_code") {
    if (q.metric !== "errors") {
      throw new SeriesQueryError(
        `Cannot group "${q.metric}" by error_code: only "errors" has codes`,
      );
    }
    return plain(
      q.contentId !== undefined || q.platform !== undefined ? "error_codes" : "region_error_codes",
    );
  }
  const needsTitle = q.contentId !== undefined || q.groupBy === "content_id";
  const audience = new Set<string>();
  if (q.region !== undefined) audience.add("region");
  if (q.platform !== undefined) audience.add("platform");
  if (q.groupBy !== undefined && AUDIENCE_DIMENSIONS.includes(q.groupBy)) audience.add(q.groupBy);
  const needsAudience = audience.has("platform") || audience.has("app_version") ||
    audience.has("subscription_plan");
  if (needsTitle && needsAudience) return plain("event_facts");
  if (needsTitle) return plain("content_region");
  if (audience.size === 0) return plain("totals");
  if (audience.size > 1) return plain("audience");
  const [dimension] = audience;
  return {
    base: "dimension",
    column: (d) => (d === dimension ? sql.ref("value") : sql.ref(d)),
    extra: [sql`dimension = ${dimension}`],
  };
}

/** The filters of a query as conditions on its rollup, time range included. */
function conditionsOf(
  q: SeriesQuery,
  time: RawBuilder<unknown>,
  source: Source,
): RawBuilder<unknown>[] {
  const conditions = [
    ...source.extra,
    sql`${time} >= ${new Date(q.fromMs).toISOString()}::timestamptz`,
    sql`${time} < ${new Date(q.toMs).toISOString()}::timestamptz`,
  ];
  if (q.deviceId !== undefined) conditions.push(sql`device_id = ${q.deviceId}`);
  if (q.contentId !== undefined) {
    conditions.push(sql`${source.column("content_id")} = ${q.contentId}`);
  }
  if (q.region !== undefined) conditions.push(sql`${source.column("region")} = ${q.region}`);
  if (q.platform !== undefined) conditions.push(sql`${source.column("platform")} = ${q.platform}`);
  return conditions;
}

/**
 * The `limit` groups of a grouped query with the largest total of the metric over the range
 * (`error_rate` and `unique_viewers`: the most errors, the most events), read from the same
 * rollup, so only their points are read afterwards.
 */
async function topKeys(
  db: Db,
  q: SeriesQuery,
  source: Source,
  rankColumn: string,
): Promise<string[]> {
  const { table, time } = tableOf(source.base, q.bucket);
  const key = source.column(q.groupBy!);
  const { rows } = await sql<{ key: string }>`
    select ${key} as key from ${table}
    where ${sql.join(conditionsOf(q, time, source), sql` and `)}
    group by 1 order by sum(${sql.ref(rankColumn)}) desc, 1 limit ${q.limit}`.execute(db);
  return rows.map((r) => r.key);
}

async function additiveRows(db: Db, q: SeriesQuery): Promise<Row[]> {
  const source = sourceOf(q);
  const { table, time } = tableOf(source.base, q.bucket);
  const conditions = conditionsOf(q, time, source);
  const isCodes = source.base === "error_codes" || source.base === "region_error_codes";
  if (q.groupBy !== undefined) {
    const rank = isCodes || q.metric === "error_rate" ? "errors" : q.metric;
    const keys = await topKeys(db, q, source, rank);
    conditions.push(sql`${source.column(q.groupBy)} = any(${keys}::text[])`);
  }
  const key = q.groupBy === undefined ? sql`null::text` : source.column(q.groupBy);
  const value = isCodes
    ? sql`sum(errors)`
    : q.metric === "error_rate"
    ? sql`case when sum(events) = 0 then 0 else sum(errors)::float8 / sum(events) end`
    : sql`sum(${sql.ref(q.metric)})`;
  const result = await sql<{ key: string | null; t: Date | string; value: string | number }>`
    select ${key} as key, ${time} as t, ${value} as value
    from ${table} where ${sql.join(conditions, sql` and `)}
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
  let scopes: string[];
  if (q.groupBy !== undefined) {
    // Sketches are read only for the groups with the most events (estimating every title's would
    // read a sketch per title and bucket).
    const source = q.groupBy === "content_id" ? plain("content_region") : {
      base: "dimension" as const,
      column: () => sql.ref("value"),
      extra: [sql`dimension = 'region'`],
    };
    const prefix = q.groupBy === "content_id" ? "c:" : "r:";
    scopes = (await topKeys(db, q, source, "events")).map((key) => prefix + key);
  } else {
    scopes = [
      q.contentId !== undefined
        ? `c:${q.contentId}`
        : q.region !== undefined
        ? `r:${q.region}`
        : "",
    ];
  }
  const { table, time } = tableOf("viewer_sketches", q.bucket);
  const result = await sql<{ scope: string; t: Date | string; registers: number[] }>`
    select scope, ${time} as t, registers from ${table}
    where scope = any(${scopes}::text[])
      and ${time} >= ${new Date(q.fromMs).toISOString()}::timestamptz
      and ${time} < ${new Date(q.toMs).toISOString()}::timestamptz`.execute(db);
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
