/**
 * The quality-of-experience metrics of `GET /stats/timeseries`: per bucket, the QoE of the views
 * that started in it, read from `qoe_hourly` (1h buckets) or `qoe_daily` (1d) and the startup
 * histograms beside them (`qoe_startup_hourly`, `qoe_startup_daily`). Each point is computed as
 * `GET /stats/qoe` computes it over that bucket (same numerators, denominators and rounding), so the
 * two agree bucket by bucket. A grouped series ranks its groups by views over the range.
 *
 * @module
 */
import { type Kysely, type RawBuilder, sql } from "kysely";
import type { Database } from "./schema.ts";
import { histogramPercentile, MAX_STARTUP_BUCKET } from "../rules/qoe.ts";

/** The QoE metrics a series can show. */
export const QOE_METRICS = [
  "views",
  "startup_p50",
  "startup_p95",
  "ebvs_rate",
  "vsf_rate",
  "vpf_rate",
  "rebuffer_ratio",
  "avg_bitrate_kbps",
] as const;
/** One of {@link QOE_METRICS}. */
export type QoeMetric = typeof QOE_METRICS[number];

/** The dimensions of the QoE rows a series can be grouped by (`cdn` exists only there). */
export const QOE_GROUP_BYS = [
  "region",
  "content_id",
  "platform",
  "app_version",
  "subscription_plan",
  "cdn",
] as const;
/** One of {@link QOE_GROUP_BYS}. */
export type QoeGroupBy = typeof QOE_GROUP_BYS[number];

/** Whether `metric` is one of {@link QOE_METRICS}. */
export function isQoeMetric(metric: string): metric is QoeMetric {
  return (QOE_METRICS as ReadonlyArray<string>).includes(metric);
}

/** Whether `dimension` is one of {@link QOE_GROUP_BYS}. */
export function isQoeGroupBy(dimension: string): dimension is QoeGroupBy {
  return (QOE_GROUP_BYS as ReadonlyArray<string>).includes(dimension);
}

/** A validated QoE series read; `fromMs` and `toMs` are aligned to the bucket. */
export interface QoeSeriesQuery {
  metric: QoeMetric;
  bucket: "1h" | "1d";
  fromMs: number;
  toMs: number;
  contentId?: string;
  region?: string;
  platform?: string;
  groupBy?: QoeGroupBy;
  /** Most series returned when grouping: those with the most views over the range. */
  limit: number;
}

/** One point of one group (key null when not grouped); null where the denominator is zero. */
export interface QoePoint {
  key: string | null;
  t: number;
  value: number | null;
}

/** The points of a QoE series, and its group keys by views over the range, largest first. */
export interface QoeSeriesRows {
  points: QoePoint[];
  /** Grouped: the `limit` keys with the most views, in that order; not grouped: `[null]`. */
  keys: Array<string | null>;
}

type Db = Kysely<Database>;
type QoeColumn =
  | "views"
  | "started_views"
  | "ebvs"
  | "vsf_business"
  | "vsf_technical"
  | "vpf"
  | "rebuffer_ms"
  | "playing_ms"
  | "bitrate_kbps_ms"
  | "bitrate_ms";

/** A per-bucket ratio: the sum of `of` over the sum of `per` (no `per`: the sum itself). */
interface Ratio {
  of: QoeColumn[];
  per: QoeColumn[] | null;
  /** Decimal digits kept, as `/stats/qoe` keeps them. */
  digits: number;
}

/** The additive QoE metrics as ratios of the QoE columns (see `getQoe`). */
const RATIOS: Record<Exclude<QoeMetric, "startup_p50" | "startup_p95">, Ratio> = {
  views: { of: ["views"], per: null, digits: 0 },
  ebvs_rate: { of: ["ebvs"], per: ["views"], digits: 4 },
  vsf_rate: { of: ["vsf_business", "vsf_technical"], per: ["views"], digits: 4 },
  vpf_rate: { of: ["vpf"], per: ["started_views"], digits: 4 },
  rebuffer_ratio: { of: ["rebuffer_ms"], per: ["playing_ms", "rebuffer_ms"], digits: 4 },
  avg_bitrate_kbps: { of: ["bitrate_kbps_ms"], per: ["bitrate_ms"], digits: 0 },
};

/** The startup percentiles: the share of views at or under the value. */
const PERCENTILES = { startup_p50: 0.5, startup_p95: 0.95 } as const;

/** The value of a bucket without views: 0 for `views`, null (a zero denominator) for the rest. */
export function emptyQoeValue(metric: QoeMetric): number | null {
  return metric === "views" ? 0 : null;
}

/** Reads the points of a QoE series, grouped groups limited to the `limit` with the most views. */
export async function qoeSeriesRows(db: Db, q: QoeSeriesQuery): Promise<QoeSeriesRows> {
  const keys = q.groupBy === undefined ? [null] : await topQoeKeys(db, q, q.groupBy);
  if (keys.length === 0) return { points: [], keys };
  const points = q.metric === "startup_p50" || q.metric === "startup_p95"
    ? await percentilePoints(db, q, keys, PERCENTILES[q.metric])
    : await ratioPoints(db, q, keys, RATIOS[q.metric]);
  return { points, keys };
}

/** The table and time column of a QoE base at a bucket: hourly rows for 1h, daily for 1d. */
function tableOf(base: "qoe" | "qoe_startup", bucket: "1h" | "1d") {
  return bucket === "1h"
    ? { table: sql.table(`${base}_hourly`), time: sql.ref("hour") }
    : { table: sql.table(`${base}_daily`), time: sql.ref("day") };
}

/** The range and filters of a query as conditions on a QoE table (`time` its time column). */
function conditionsOf(q: QoeSeriesQuery, time: RawBuilder<unknown>): RawBuilder<unknown>[] {
  const conditions = [
    sql`${time} >= ${new Date(q.fromMs).toISOString()}::timestamptz`,
    sql`${time} < ${new Date(q.toMs).toISOString()}::timestamptz`,
  ];
  if (q.contentId !== undefined) conditions.push(sql`content_id = ${q.contentId}`);
  if (q.region !== undefined) conditions.push(sql`region = ${q.region}`);
  if (q.platform !== undefined) conditions.push(sql`platform = ${q.platform}`);
  return conditions;
}

/** The table, time column and conditions of a query on `base`, restricted to `keys` when grouped. */
function scopeOf(
  q: QoeSeriesQuery,
  base: "qoe" | "qoe_startup",
  keys: Array<string | null>,
): { table: RawBuilder<unknown>; time: RawBuilder<unknown>; where: RawBuilder<unknown> } {
  const { table, time } = tableOf(base, q.bucket);
  const conditions = conditionsOf(q, time);
  if (q.groupBy !== undefined) {
    conditions.push(sql`${sql.ref(q.groupBy)} = any(${keys}::text[])`);
  }
  return { table, time, where: sql.join(conditions, sql` and `) };
}

/** The group key of a query as a SQL expression: the dimension, or null when not grouped. */
const keyOf = (
  q: QoeSeriesQuery,
) => (q.groupBy === undefined ? sql`null::text` : sql.ref(q.groupBy));

/**
 * The `limit` groups with the most views over the range (whatever the metric: a rate's own total
 * would favour small groups), ties by key.
 */
async function topQoeKeys(db: Db, q: QoeSeriesQuery, groupBy: QoeGroupBy): Promise<string[]> {
  const { table, time } = tableOf("qoe", q.bucket);
  const { rows } = await sql<{ key: string }>`
    select ${sql.ref(groupBy)} as key from ${table}
    where ${sql.join(conditionsOf(q, time), sql` and `)}
    group by 1 having sum(views) > 0
    order by sum(views) desc, 1 limit ${q.limit}`.execute(db);
  return rows.map((r) => r.key);
}

/** The sum of some QoE columns as a float, for a ratio's part. */
const sumOf = (columns: QoeColumn[]) =>
  sql`coalesce(sum(${sql.join(columns.map((c) => sql.ref(c)), sql` + `)}), 0)::float8`;

/** `count / of` rounded to `digits` decimals, or null when `of` is zero (as `/stats/qoe`). */
function ratioValue(count: number, of: number | null, digits: number): number | null {
  if (of === null) return count;
  if (!(of > 0)) return null;
  return roundTo(count / of, digits);
}

const roundTo = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits;

/** The points of an additive QoE metric: per group (of `keys`) and bucket, a ratio of sums. */
async function ratioPoints(
  db: Db,
  q: QoeSeriesQuery,
  keys: Array<string | null>,
  ratio: Ratio,
): Promise<QoePoint[]> {
  const { table, time, where } = scopeOf(q, "qoe", keys);
  const per = ratio.per === null ? sql`null::float8` : sumOf(ratio.per);
  const { rows } = await sql<
    { key: string | null; t: Date | string; of: number; per: number | null }
  >`
    select ${keyOf(q)} as key, ${time} as t, ${sumOf(ratio.of)} as of, ${per} as per
    from ${table} where ${where} group by 1, 2`.execute(db);
  return rows.map((r) => ({
    key: r.key,
    t: new Date(r.t).getTime(),
    value: ratioValue(Number(r.of), r.per === null ? null : Number(r.per), ratio.digits),
  }));
}

/**
 * The points of a startup percentile: per group and bucket, the percentile of the merged startup
 * histogram (nearest rank, within half a histogram bucket), in whole ms; null without a measured
 * startup.
 */
async function percentilePoints(
  db: Db,
  q: QoeSeriesQuery,
  keys: Array<string | null>,
  p: number,
): Promise<QoePoint[]> {
  const { table, time, where } = scopeOf(q, "qoe_startup", keys);
  const { rows } = await sql<{ key: string | null; t: Date | string; bucket: number; n: string }>`
    select ${keyOf(q)} as key, ${time} as t, bucket, sum(views) as n
    from ${table} where ${where} group by 1, 2, 3`.execute(db);
  const histograms = new Map<string, { key: string | null; t: number; counts: number[] }>();
  for (const r of rows) {
    const t = new Date(r.t).getTime();
    const id = `${r.key}\u0000${t}`;
    let h = histograms.get(id);
    if (h === undefined) {
      histograms.set(id, h = { key: r.key, t, counts: new Array(MAX_STARTUP_BUCKET + 1).fill(0) });
    }
    h.counts[Number(r.bucket)] += Number(r.n);
  }
  return [...histograms.values()].map(({ key, t, counts }) => {
    const value = histogramPercentile(counts, p);
    return { key, t, value: value === null ? null : Math.round(value) };
  });
}
