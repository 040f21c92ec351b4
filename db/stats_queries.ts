/**
 * Analytics reads over the rollups: summary, one title, one region (time series are in
 * `timeseries.ts`). Every read takes an optional range of whole hours (`fromMs` inclusive, `toMs`
 * exclusive) and reads its whole days from daily rows and its edge hours from hourly rows; without a
 * range it answers all-time from the daily rows, including the undated "before upgrade" bucket of
 * the hourly migration.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import { rollupRows } from "./rollup_reads.ts";
import { completenessOf, loadHorizons } from "./horizons.ts";
import type { Database } from "./schema.ts";
import { estimateViewers } from "./hll.ts";
import { PLAYBACK_TYPES } from "../rules/mod.ts";

type Db = Kysely<Database>;

/** A range of event time in whole buckets; either bound may be open. */
export interface TimeRange {
  fromMs?: number;
  toMs?: number;
}

/** Entries beyond this in `errors_by_code` and `device_mix` are summed into `other`. */
export const TOP_N = 10;

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const rate = (errors: number, events: number): number => (events === 0 ? 0 : errors / events);
const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/** Estimated distinct viewers of a scope (`""` all, `c:<id>`, `r:<region>`) over the range. */
async function uniqueViewers(db: Db, scope: string, range: TimeRange): Promise<number> {
  const { rows } = await sql<{ registers: number[] }>`select registers from ${
    rollupRows("viewer_sketches", sql`registers`, range, sql`scope = ${scope}`)
  } as r`.execute(db);
  return estimateViewers(rows.map((r) => r.registers));
}

/** Pipeline-wide totals for `/stats/summary`. */
export async function getSummary(db: Db, range: TimeRange = {}) {
  const { rows: types } = await sql<{ event_type: string; events: unknown; late: unknown }>`
    select event_type, sum(events) as events, sum(late_events) as late
    from ${rollupRows("event_types", sql`event_type, events, late_events`, range)} as r
    group by event_type`.execute(db);
  const { rows: [facts] } = await sql<{ watch: unknown }>`
    select sum(watch_time_ms) as watch from ${rollupRows("totals", sql`watch_time_ms`, range)} as r`
    .execute(db);
  const duplicates = await db.selectFrom("stat_counters").select("value")
    .where("name", "=", "duplicate_events").executeTakeFirst();
  const eventsByType: Record<string, number> = Object.fromEntries(
    PLAYBACK_TYPES.map((t) => [t, 0]),
  );
  let lateEvents = 0;
  for (const row of types) {
    eventsByType[row.event_type] = num(row.events);
    lateEvents += num(row.late);
  }
  const total = Object.values(eventsByType).reduce((a, b) => a + b, 0);
  return {
    from: iso(range.fromMs),
    to: iso(range.toMs),
    ...completenessOf(await loadHorizons(db), range, "mixed"),
    total_events: total,
    events_by_type: eventsByType,
    plays: eventsByType.PLAY,
    watch_time_ms: num(facts?.watch),
    errors: eventsByType.ERROR,
    error_rate: rate(eventsByType.ERROR, total),
    unique_viewers: await uniqueViewers(db, "", range),
    late_events: lateEvents,
    /** All-time: a duplicate is about arrival, not about event time. */
    duplicate_events: num(duplicates?.value),
  };
}

/** Additive counts of one group of fact rows, normalised to numbers. */
interface GroupCounts {
  key: string;
  events: number;
  plays: number;
  errors: number;
  watchTimeMs: number;
}

const COUNT_SUMS = sql`sum(events) as events, sum(plays) as plays, sum(errors) as errors,
  sum(watch_time_ms) as watch`;

/** Rows of a narrow rollup where `column = value` in the range, summed per `groupBy`. */
async function countsBy(
  db: Db,
  base: "content_region" | "audience",
  column: "content_id" | "region",
  value: string,
  groupBy: "region" | "platform",
  range: TimeRange,
): Promise<GroupCounts[]> {
  const { rows } = await sql<
    { key: string; events: unknown; plays: unknown; errors: unknown; watch: unknown }
  >`
    select ${sql.ref(groupBy)} as key, ${COUNT_SUMS}
    from ${
    rollupRows(
      base,
      sql`${sql.ref(groupBy)}, events, plays, errors, watch_time_ms`,
      range,
      sql`${sql.ref(column)} = ${value}`,
    )
  } as r group by 1`.execute(db);
  return rows.map((r) => ({
    key: String(r.key),
    events: num(r.events),
    plays: num(r.plays),
    errors: num(r.errors),
    watchTimeMs: num(r.watch),
  }));
}

/** The totals of several groups, in the response's field names. */
function totalsOf(groups: GroupCounts[]) {
  let events = 0, plays = 0, errors = 0, watchTimeMs = 0;
  for (const g of groups) {
    events += g.events;
    plays += g.plays;
    errors += g.errors;
    watchTimeMs += g.watchTimeMs;
  }
  return {
    plays,
    watch_time_ms: watchTimeMs,
    events,
    errors,
    error_rate: rate(errors, events),
  };
}

/**
 * Stats of one title for `/stats/content/{id}`; null only when the title is not held at all (never
 * seen, or not seen for longer than the daily rows are kept).
 */
export async function getContentStats(db: Db, contentId: string, range: TimeRange = {}) {
  const known = await db.selectFrom("content_region_daily").select("content_id")
    .where("content_id", "=", contentId).limit(1).executeTakeFirst();
  if (known === undefined) return null;
  const regions = await countsBy(db, "content_region", "content_id", contentId, "region", range);
  const top = regions.filter((r) => r.events > 0)
    .map((r) => ({ region: r.key, plays: r.plays, events: r.events }))
    .sort((a, b) => b.plays - a.plays || b.events - a.events || (a.region < b.region ? -1 : 1))
    .slice(0, TOP_N);
  return {
    content_id: contentId,
    from: iso(range.fromMs),
    to: iso(range.toMs),
    ...completenessOf(await loadHorizons(db), range, "mixed"),
    ...totalsOf(regions),
    unique_viewers: await uniqueViewers(db, `c:${contentId}`, range),
    top_regions: top,
  };
}

/** Stats of one region for `/stats/region/{region}`; null only when the region is not held at all. */
export async function getRegionStats(
  db: Db,
  region: string,
  isEu: boolean,
  range: TimeRange = {},
) {
  const known = await db.selectFrom("audience_daily").select("region")
    .where("region", "=", region).limit(1).executeTakeFirst();
  if (known === undefined) return null;
  const platforms = await countsBy(db, "audience", "region", region, "platform", range);
  const { rows: codes } = await sql<{ error_code: string; errors: unknown }>`
    select error_code, sum(errors) as errors
    from ${
    rollupRows("region_error_codes", sql`error_code, errors`, range, sql`region = ${region}`)
  } as r group by error_code`.execute(db);
  const totals = totalsOf(platforms);
  const mix = topWithOther(
    platforms.filter((p) => p.events > 0).map((p) => [p.key, p.events] as const),
  );
  return {
    region,
    is_eu: isEu,
    from: iso(range.fromMs),
    to: iso(range.toMs),
    ...completenessOf(await loadHorizons(db), range, "mixed"),
    ...totals,
    unique_viewers: await uniqueViewers(db, `r:${region}`, range),
    errors_by_code: Object.fromEntries(
      topWithOther(codes.map((c) => [c.error_code, num(c.errors)] as const)),
    ),
    device_mix: mix.map(([platform, n]) => ({
      platform,
      events: n,
      share: rate(n, totals.events),
    })),
  };
}

/** The largest {@link TOP_N} entries, then one `other` entry with the sum of the rest. */
function topWithOther(entries: ReadonlyArray<readonly [string, number]>): Array<[string, number]> {
  const ordered = [...entries].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const top: Array<[string, number]> = ordered.slice(0, TOP_N).map(([k, n]) => [k, n]);
  const rest = ordered.slice(TOP_N).reduce((sum, [, n]) => sum + n, 0);
  if (rest > 0) top.push(["other", rest]);
  return top;
}
