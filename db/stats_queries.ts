/**
 * Analytics reads over the hourly buckets: summary, one title, one region, and time series. Every
 * read takes an optional range of whole hours (`fromMs` inclusive, `toMs` exclusive); without one it
 * answers all-time, including the undated "before upgrade" bucket of the hourly migration.
 *
 * @module
 */
import type { Kysely } from "kysely";
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

// deno-lint-ignore no-explicit-any
function inRange<QB extends { where: (...args: any[]) => QB }>(qb: QB, range: TimeRange): QB {
  let q = qb;
  if (range.fromMs !== undefined) q = q.where("hour", ">=", new Date(range.fromMs).toISOString());
  if (range.toMs !== undefined) q = q.where("hour", "<", new Date(range.toMs).toISOString());
  return q;
}

/** Estimated distinct viewers of a scope (`""` all, `c:<id>`, `r:<region>`) over the range. */
async function uniqueViewers(db: Db, scope: string, range: TimeRange): Promise<number> {
  const rows = await inRange(
    db.selectFrom("viewer_sketches_hourly").select("registers").where("scope", "=", scope),
    range,
  ).execute();
  return estimateViewers(rows.map((r) => r.registers));
}

/** Pipeline-wide totals for `/stats/summary`. */
export async function getSummary(db: Db, range: TimeRange = {}) {
  const types = await inRange(
    db.selectFrom("event_types_hourly").select([
      "event_type",
      (eb) => eb.fn.sum("events").as("events"),
      (eb) => eb.fn.sum("late_events").as("late"),
    ]).groupBy("event_type"),
    range,
  ).execute();
  const facts = await inRange(
    db.selectFrom("event_facts_hourly").select((eb) => eb.fn.sum("watch_time_ms").as("watch")),
    range,
  ).executeTakeFirst();
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

/** Fact rows where `column = value` in the range, summed per `groupBy`. */
async function factsBy(
  db: Db,
  column: "content_id" | "region",
  value: string,
  groupBy: "region" | "platform",
  range: TimeRange,
): Promise<GroupCounts[]> {
  const rows = await inRange(
    db.selectFrom("event_facts_hourly").select([
      `${groupBy} as key`,
      (eb) => eb.fn.sum("events").as("events"),
      (eb) => eb.fn.sum("plays").as("plays"),
      (eb) => eb.fn.sum("errors").as("errors"),
      (eb) => eb.fn.sum("watch_time_ms").as("watch"),
    ]).where(column, "=", value).groupBy(groupBy),
    range,
  ).execute();
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

/** Stats of one title for `/stats/content/{id}`; null only when the title was never seen. */
export async function getContentStats(db: Db, contentId: string, range: TimeRange = {}) {
  const known = await db.selectFrom("event_facts_hourly").select("content_id")
    .where("content_id", "=", contentId).limit(1).executeTakeFirst();
  if (known === undefined) return null;
  const regions = await factsBy(db, "content_id", contentId, "region", range);
  const top = regions.filter((r) => r.events > 0)
    .map((r) => ({ region: r.key, plays: r.plays, events: r.events }))
    .sort((a, b) => b.plays - a.plays || b.events - a.events || (a.region < b.region ? -1 : 1))
    .slice(0, TOP_N);
  return {
    content_id: contentId,
    from: iso(range.fromMs),
    to: iso(range.toMs),
    ...totalsOf(regions),
    unique_viewers: await uniqueViewers(db, `c:${contentId}`, range),
    top_regions: top,
  };
}

/** Stats of one region for `/stats/region/{region}`; null only when the region was never seen. */
export async function getRegionStats(
  db: Db,
  region: string,
  isEu: boolean,
  range: TimeRange = {},
) {
  const known = await db.selectFrom("event_facts_hourly").select("region")
    .where("region", "=", region).limit(1).executeTakeFirst();
  if (known === undefined) return null;
  const platforms = await factsBy(db, "region", region, "platform", range);
  const codes = await inRange(
    db.selectFrom("error_codes_hourly").select([
      "error_code",
      (eb) => eb.fn.sum("errors").as("errors"),
    ]).where("region", "=", region).groupBy("error_code"),
    range,
  ).execute();
  const totals = totalsOf(platforms);
  const mix = topWithOther(
    platforms.filter((p) => p.events > 0).map((p) => [p.key, p.events] as const),
  );
  return {
    region,
    is_eu: isEu,
    from: iso(range.fromMs),
    to: iso(range.toMs),
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
