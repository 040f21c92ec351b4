/**
 * `GET /stats/qoe`: the quality of experience of the views that started in a range, from the QoE
 * rollups (`qoe_daily` for whole days, `qoe_hourly` at the edges) and the startup histogram beside
 * them. Every rate names its denominator.
 *
 * @module
 */
import { type Kysely, type RawBuilder, sql } from "kysely";
import type { Database } from "./schema.ts";
import { rollupRows } from "./rollup_reads.ts";
import type { TimeRange } from "./stats_queries.ts";
import { completenessOf, loadHorizons } from "./horizons.ts";
import { histogramPercentile, MAX_STARTUP_BUCKET, STARTUP_BUCKET_RATIO } from "../rules/qoe.ts";

/** The QoE aggregate columns, in the order of `QOE` in `rules/qoe.ts`. */
export const QOE_COLUMNS = [
  "views",
  "started_views",
  "ebvs",
  "short_exits",
  "vsf_business",
  "vsf_technical",
  "vpf",
  "startup_views",
  "startup_ms",
  "rebuffers",
  "rebuffer_ms",
  "playing_ms",
  "bitrate_kbps_ms",
  "bitrate_ms",
  "upscale_ms",
  "warnings",
  "seek_stall_ms",
] as const;

/** The dimensions a QoE read filters by (columns of the QoE rows). */
export interface QoeFilter {
  content_id?: string;
  region?: string;
  platform?: string;
  app_version?: string;
  cdn?: string;
}

/** Relative error of the startup percentiles: half a histogram bucket. */
export const STARTUP_PERCENTILE_ERROR = Math.sqrt(STARTUP_BUCKET_RATIO) - 1;

const rate = (count: number, of: number) => (of > 0 ? count / of : null);
const round = (v: number | null, digits = 4) =>
  v === null ? null : Math.round(v * 10 ** digits) / 10 ** digits;

function filterOf(filter: QoeFilter): RawBuilder<unknown> {
  const conditions = [sql`true`];
  for (const [column, value] of Object.entries(filter)) {
    if (value !== undefined) conditions.push(sql`${sql.ref(column)} = ${value}`);
  }
  return sql.join(conditions, sql` and `);
}

/** The QoE of the views that started in `range`, filtered by dimension. */
export async function getQoe(
  db: Kysely<Database>,
  range: TimeRange,
  filter: QoeFilter,
): Promise<Record<string, unknown>> {
  const where = filterOf(filter);
  const sums = QOE_COLUMNS.map((c) =>
    sql`coalesce(sum(${sql.ref(c)}), 0)::float8 as ${sql.ref(c)}`
  );
  const totals = await sql<Record<string, number>>`
    select ${sql.join(sums)} from ${
    rollupRows("qoe", sql.join(QOE_COLUMNS.map((c) => sql.ref(c))), range, where)
  } as r`.execute(db);
  const t = totals.rows[0] as Record<(typeof QOE_COLUMNS)[number], number>;
  const buckets = await sql<{ bucket: number; views: string | number }>`
    select bucket, sum(views) as views from ${
    rollupRows("qoe_startup", sql`bucket, views`, range, where)
  } as r group by bucket`.execute(db);
  const histogram = new Array<number>(MAX_STARTUP_BUCKET + 1).fill(0);
  for (const row of buckets.rows) histogram[row.bucket] = Number(row.views);
  const vsf = t.vsf_business + t.vsf_technical;
  const watched = t.playing_ms + t.rebuffer_ms;
  const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());
  return {
    from: iso(range.fromMs),
    to: iso(range.toMs),
    views: t.views,
    started_views: t.started_views,
    video_startup_time_ms: {
      p50: round(histogramPercentile(histogram, 0.5), 0),
      p95: round(histogramPercentile(histogram, 0.95), 0),
      mean: round(rate(t.startup_ms, t.startup_views), 0),
      views_measured: t.startup_views,
      views_not_measured: t.started_views - t.startup_views,
      relative_error: round(STARTUP_PERCENTILE_ERROR, 3),
    },
    exits_before_video_start: {
      count: t.ebvs,
      rate: round(rate(t.ebvs, t.views)),
      denominator: "views",
      exits_under_1s_not_counted: t.short_exits,
    },
    video_start_failures: {
      count: vsf,
      rate: round(rate(vsf, t.views)),
      business: t.vsf_business,
      technical: t.vsf_technical,
      technical_rate: round(rate(t.vsf_technical, t.views)),
      denominator: "views",
    },
    playback_failures: {
      count: t.vpf,
      rate: round(rate(t.vpf, t.started_views)),
      denominator: "started_views",
    },
    rebuffer_ratio: round(rate(t.rebuffer_ms, watched)),
    rebuffer_ratio_denominator: "playing_ms + rebuffer_ms",
    rebuffers: t.rebuffers,
    rebuffer_ms: t.rebuffer_ms,
    rebuffers_per_hour: round(rate(t.rebuffers, t.playing_ms / 3_600_000), 2),
    seek_stall_ms: t.seek_stall_ms,
    playing_ms: t.playing_ms,
    average_bitrate_kbps: round(rate(t.bitrate_kbps_ms, t.bitrate_ms), 0),
    upscale_share: round(rate(t.upscale_ms, t.playing_ms)),
    warnings: t.warnings,
    ...completenessOf(await loadHorizons(db), range, "mixed"),
  };
}
