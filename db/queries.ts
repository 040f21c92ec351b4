/**
 * Read queries behind the HTTP API, and the few writes the routes make directly. Every function takes
 * `db` first and returns plain JSON-ready values with counters normalised to numbers.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";
import type { OptOut, OptOutType } from "../rules/mod.ts";

type Db = Kysely<Database>;

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const rate = (errors: number, events: number): number => (events === 0 ? 0 : errors / events);

/** Pipeline-wide totals for `/stats/summary`. */
export interface Summary {
  total_events: number;
  events_by_type: Record<string, number>;
  plays: number;
  watch_time_ms: number;
  errors: number;
  error_rate: number;
  late_events: number;
  duplicate_events: number;
}

/** Reads the named counters into the summary shape. */
export async function getSummary(db: Db): Promise<Summary> {
  const rows = await db.selectFrom("stat_counters").select(["name", "value"]).execute();
  const counters = new Map(rows.map((r) => [r.name, num(r.value)]));
  const eventsByType: Record<string, number> = { PLAY: 0, PAUSE: 0, SEEK: 0, STOP: 0, ERROR: 0 };
  for (const [name, value] of counters) {
    if (name.startsWith("events:")) eventsByType[name.slice("events:".length)] = value;
  }
  const total = Object.values(eventsByType).reduce((a, b) => a + b, 0);
  return {
    total_events: total,
    events_by_type: eventsByType,
    plays: eventsByType.PLAY,
    watch_time_ms: counters.get("watch_time_ms") ?? 0,
    errors: eventsByType.ERROR,
    error_rate: rate(eventsByType.ERROR, total),
    late_events: counters.get("late_events") ?? 0,
    duplicate_events: counters.get("duplicate_events") ?? 0,
  };
}

/** Stats of one title for `/stats/content/{id}`, or null when it was never seen. */
export async function getContentStats(db: Db, contentId: string) {
  const row = await db.selectFrom("content_stats").selectAll().where("content_id", "=", contentId)
    .executeTakeFirst();
  if (row === undefined) return null;
  const regions = await db.selectFrom("content_region_stats").select(["region", "plays", "events"])
    .where("content_id", "=", contentId).orderBy("plays", "desc").orderBy("region").limit(10)
    .execute();
  const events = num(row.events);
  const errors = num(row.errors);
  return {
    content_id: contentId,
    plays: num(row.plays),
    watch_time_ms: num(row.watch_time_ms),
    events,
    errors,
    error_rate: rate(errors, events),
    top_regions: regions.map((r) => ({
      region: r.region,
      plays: num(r.plays),
      events: num(r.events),
    })),
  };
}

/** Stats of one region for `/stats/region/{region}`, or null when it was never seen. */
export async function getRegionStats(db: Db, region: string) {
  const row = await db.selectFrom("region_stats").selectAll().where("region", "=", region)
    .executeTakeFirst();
  if (row === undefined) return null;
  const codes = await db.selectFrom("region_error_codes").select(["error_code", "errors"])
    .where("region", "=", region).orderBy("errors", "desc").orderBy("error_code").execute();
  const platforms = await db.selectFrom("region_platforms").select(["platform", "events"])
    .where("region", "=", region).orderBy("events", "desc").orderBy("platform").execute();
  const events = num(row.events);
  const errors = num(row.errors);
  const platformTotal = platforms.reduce((sum, p) => sum + num(p.events), 0);
  return {
    region,
    is_eu: row.is_eu,
    plays: num(row.plays),
    watch_time_ms: num(row.watch_time_ms),
    events,
    errors,
    error_rate: rate(errors, events),
    errors_by_code: Object.fromEntries(codes.map((c) => [c.error_code, num(c.errors)])),
    device_mix: platforms.map((p) => ({
      platform: p.platform,
      events: num(p.events),
      share: rate(num(p.events), platformTotal),
    })),
  };
}

/** Flag counts for `/compliance/summary`. */
export async function getComplianceSummary(db: Db) {
  const byRule = await db.selectFrom("risk_flags")
    .select([
      "rule",
      (eb) => eb.fn.countAll().as("flags"),
      (eb) => eb.fn.sum("flagged_events").as("events"),
    ])
    .groupBy("rule").execute();
  const byLevel = await db.selectFrom("risk_flags")
    .select(["level", (eb) => eb.fn.countAll().as("flags")]).groupBy("level").execute();
  const rules = ["privacy", "retention", "account_sharing", "content_quality"];
  const flagged: Record<string, number> = Object.fromEntries(rules.map((r) => [r, 0]));
  const flags: Record<string, number> = Object.fromEntries(rules.map((r) => [r, 0]));
  for (const row of byRule) {
    flagged[row.rule] = num(row.events);
    flags[row.rule] = num(row.flags);
  }
  const levels: Record<string, number> = { HIGH: 0, MEDIUM: 0, LOW: 0 };
  for (const row of byLevel) levels[row.level] = num(row.flags);
  return { flagged_events_by_rule: flagged, flags_by_rule: flags, flags_by_level: levels };
}

/** Filters and keyset cursor of `/compliance/events`. */
export interface FlagQuery {
  rule?: string;
  level?: string;
  region?: string;
  limit: number;
  /** Return flags with an id below this one (the previous page's `next_cursor`). */
  beforeId?: number;
}

/** Flags newest first, one page at a time, with the cursor of the next page (or null). */
export async function listFlags(db: Db, q: FlagQuery) {
  let query = db.selectFrom("risk_flags").selectAll().orderBy("id", "desc").limit(q.limit + 1);
  if (q.rule !== undefined) query = query.where("rule", "=", q.rule);
  if (q.level !== undefined) query = query.where("level", "=", q.level);
  if (q.region !== undefined) query = query.where("region", "=", q.region);
  if (q.beforeId !== undefined) query = query.where("id", "<", q.beforeId);
  const rows = await query.execute();
  const page = rows.slice(0, q.limit);
  return {
    items: page.map((r) => ({
      id: num(r.id),
      rule: r.rule,
      rule_version: r.rule_version,
      level: r.level,
      entity_type: r.entity_type,
      entity_id: r.entity_id,
      event_id: r.event_id,
      user_id: r.user_id,
      region: r.region,
      is_eu: r.is_eu,
      occurred_at: new Date(r.occurred_at).toISOString(),
      raised_at: new Date(r.raised_at).toISOString(),
      flagged_events: num(r.flagged_events),
      reason: r.reason,
      evidence: typeof r.evidence === "string" ? JSON.parse(r.evidence) : r.evidence,
    })),
    next_cursor: rows.length > q.limit ? String(num(page[page.length - 1].id)) : null,
  };
}

/** Flagged events per region and rule, with EU / non-EU and US-CA / rest groups. */
export async function getComplianceRegions(db: Db) {
  const rows = await db.selectFrom("risk_flags")
    .select(["region", "is_eu", "rule", (eb) => eb.fn.sum("flagged_events").as("events")])
    .groupBy(["region", "is_eu", "rule"]).orderBy("region").orderBy("rule").execute();
  const empty = () => ({ privacy: 0, retention: 0, account_sharing: 0, content_quality: 0 });
  type Counts = ReturnType<typeof empty>;
  const regions = new Map<string, { region: string; is_eu: boolean; flagged_events: Counts }>();
  const groups = { eu: empty(), non_eu: empty(), us_ca: empty(), non_us_ca: empty() };
  for (const row of rows) {
    const rule = row.rule as keyof Counts;
    const n = num(row.events);
    let entry = regions.get(row.region);
    if (entry === undefined) {
      entry = { region: row.region, is_eu: row.is_eu, flagged_events: empty() };
      regions.set(row.region, entry);
    }
    entry.flagged_events[rule] += n;
    groups[row.is_eu ? "eu" : "non_eu"][rule] += n;
    groups[row.region === "US-CA" ? "us_ca" : "non_us_ca"][rule] += n;
  }
  return { regions: [...regions.values()], groups };
}

/** Records a privacy request; returns false if the same request was already on record. */
export async function insertPrivacyRequest(
  db: Db,
  userId: string,
  type: OptOutType,
  requestedAtMs: number,
): Promise<boolean> {
  const result = await db.insertInto("privacy_requests").values({
    user_id: userId,
    request_type: type,
    source: "api",
    requested_at: new Date(requestedAtMs).toISOString(),
  }).onConflict((oc) => oc.columns(["user_id", "request_type"]).doNothing()).executeTakeFirst();
  return num(result.numInsertedOrUpdatedRows) > 0;
}

/** Every opt-out on record, the earliest request per user. */
export async function loadOptOuts(db: Db): Promise<Array<[string, OptOut]>> {
  const rows = await db.selectFrom("privacy_requests").selectAll().orderBy("requested_at")
    .execute();
  const byUser = new Map<string, OptOut>();
  for (const r of rows) {
    if (byUser.has(r.user_id)) continue;
    byUser.set(r.user_id, {
      type: r.request_type as OptOutType,
      sinceMs: new Date(r.requested_at).getTime(),
      source: r.source === "event" ? "event" : "api",
    });
  }
  return [...byUser.entries()];
}

/** One past the highest log position stored or checkpointed (where a memory log starts). */
export async function nextLogPosition(db: Db): Promise<number> {
  const result = await sql<{ max: string | number | null }>`select greatest(
    (select max(position) from shard_checkpoints), (select max(position) from raw_events)) as max`
    .execute(db);
  return num(result.rows[0]?.max) + 1;
}

/** Throws unless the database answers a trivial query. */
export async function pingDatabase(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
}
