/**
 * Read queries behind the HTTP API, and the few writes the routes make directly. Every function takes
 * `db` first and returns plain JSON-ready values with counters normalised to numbers.
 *
 * @module
 */
import { type Kysely, type Selectable, sql } from "kysely";
import type { Database } from "./schema.ts";
import { type OptOut, type OptOutType, RULE_IDS } from "../rules/mod.ts";
import type { TimeRange } from "./stats_queries.ts";
import { rollupRows } from "./rollup_reads.ts";
import { completenessOf, loadHorizons } from "./horizons.ts";

type Db = Kysely<Database>;

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const isoOf = (ms: number): string => new Date(ms).toISOString();

/**
 * Flag counts for `/compliance/summary` over an optional range of event-time hours: flagged events
 * from the hourly counts (whatever a flag's own granularity), flags by the time they occurred.
 */
export async function getComplianceSummary(db: Db, range: TimeRange = {}) {
  const flagged = sql<{ rule: string; events: unknown }>`
    select rule, sum(flagged_events) as events
    from ${rollupRows("flagged_events", sql`rule, flagged_events`, range)} as r group by rule`;
  let flagRows = db.selectFrom("risk_flags")
    .select(["rule", "level", "status", (eb) => eb.fn.countAll().as("flags")])
    .groupBy(["rule", "level", "status"]);
  if (range.fromMs !== undefined) {
    flagRows = flagRows.where("occurred_at", ">=", isoOf(range.fromMs));
  }
  if (range.toMs !== undefined) flagRows = flagRows.where("occurred_at", "<", isoOf(range.toMs));
  const flaggedByRule: Record<string, number> = Object.fromEntries(RULE_IDS.map((r) => [r, 0]));
  const flags: Record<string, number> = Object.fromEntries(RULE_IDS.map((r) => [r, 0]));
  const levels: Record<string, number> = { HIGH: 0, MEDIUM: 0, LOW: 0 };
  for (const row of (await flagged.execute(db)).rows) flaggedByRule[row.rule] = num(row.events);
  const statuses: Record<string, number> = Object.fromEntries(FLAG_STATUSES.map((s) => [s, 0]));
  for (const row of await flagRows.execute()) {
    flags[row.rule] = (flags[row.rule] ?? 0) + num(row.flags);
    levels[row.level] = (levels[row.level] ?? 0) + num(row.flags);
    statuses[row.status] = (statuses[row.status] ?? 0) + num(row.flags);
  }
  return {
    from: range.fromMs === undefined ? null : isoOf(range.fromMs),
    to: range.toMs === undefined ? null : isoOf(range.toMs),
    ...completenessOf(await loadHorizons(db), range, "mixed"),
    flagged_events_by_rule: flaggedByRule,
    flags_by_rule: flags,
    flags_by_level: levels,
    flags_by_status: statuses,
  };
}

/** Review statuses of a flag: `open` until a person decides (GDPR Art. 22). */
export const FLAG_STATUSES = [
  "open",
  "acknowledged",
  "escalated",
  "dismissed",
  "resolved",
] as const;

/** A review status of a flag. */
export type FlagStatus = (typeof FLAG_STATUSES)[number];

/** Filters and keyset cursor of `/compliance/events`. */
export interface FlagQuery {
  rule?: string;
  level?: string;
  region?: string;
  status?: FlagStatus;
  userId?: string;
  entityId?: string;
  /** Event time (`occurred_at`) of the flag, `from` inclusive, `to` exclusive. */
  range?: TimeRange;
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
  if (q.status !== undefined) query = query.where("status", "=", q.status);
  if (q.userId !== undefined) query = query.where("user_id", "=", q.userId);
  if (q.entityId !== undefined) query = query.where("entity_id", "=", q.entityId);
  if (q.range?.fromMs !== undefined) {
    query = query.where("occurred_at", ">=", isoOf(q.range.fromMs));
  }
  if (q.range?.toMs !== undefined) query = query.where("occurred_at", "<", isoOf(q.range.toMs));
  if (q.beforeId !== undefined) query = query.where("id", "<", q.beforeId);
  const rows = await query.execute();
  const page = rows.slice(0, q.limit);
  return {
    items: page.map(flagItem),
    next_cursor: rows.length > q.limit ? String(num(page[page.length - 1].id)) : null,
  };
}

const jsonOf = (v: unknown): unknown => (typeof v === "string" ? JSON.parse(v) : v);

function flagItem(r: Selectable<Database["risk_flags"]>) {
  return {
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
    evidence: jsonOf(r.evidence),
    status: r.status,
    assignee: r.assignee,
    revision: num(r.revision),
  };
}

/** One flag as `/compliance/events` lists it, with its review history oldest first; null if unknown. */
export async function getFlag(db: Db, id: number) {
  const flag = await db.selectFrom("risk_flags").selectAll().where("id", "=", id)
    .executeTakeFirst();
  if (flag === undefined) return null;
  const history = await db.selectFrom("flag_history").selectAll().where("flag_id", "=", id)
    .orderBy("id").execute();
  return {
    ...flagItem(flag),
    history: history.map((h) => ({
      id: num(h.id),
      at: new Date(h.at).toISOString(),
      actor_name: h.actor_name,
      actor_role: h.actor_role,
      from_status: h.from_status,
      to_status: h.to_status,
      reason: h.reason,
      assignee: h.assignee,
      level: h.level,
      evidence: jsonOf(h.evidence),
    })),
  };
}

/** A person's decision on a flag; `assignee` undefined keeps the current one, null clears it. */
export interface FlagReview {
  status: FlagStatus;
  reason?: string;
  assignee?: string | null;
  /** The revision the reviewer saw: refused when the evidence has changed since. */
  revision?: number;
  actor: { name: string; role: string };
}

/**
 * Records a review decision and its history row in one transaction (the flag row locked, so the
 * pipeline cannot escalate it in between): `not_found` for an unknown id, `stale` with the current
 * revision when the reviewer saw an older one.
 */
export async function reviewFlag(
  db: Db,
  id: number,
  review: FlagReview,
): Promise<"reviewed" | "not_found" | { stale: number }> {
  return await db.transaction().execute(async (trx) => {
    const flag = await trx.selectFrom("risk_flags")
      .select(["status", "assignee", "level", "revision"]).where("id", "=", id).forUpdate()
      .executeTakeFirst();
    if (flag === undefined) return "not_found";
    if (review.revision !== undefined && review.revision !== num(flag.revision)) {
      return { stale: num(flag.revision) };
    }
    const assignee = review.assignee === undefined ? flag.assignee : review.assignee;
    await trx.updateTable("risk_flags").set({ status: review.status, assignee })
      .where("id", "=", id).execute();
    await trx.insertInto("flag_history").values({
      flag_id: id,
      actor_name: review.actor.name,
      actor_role: review.actor.role,
      from_status: flag.status,
      to_status: review.status,
      reason: review.reason ?? null,
      assignee,
      evidence: null,
      level: flag.level,
    }).execute();
    return "reviewed";
  });
}

/**
 * Flagged events per region and rule over an optional range of event-time hours, with EU / non-EU
 * (decided by `isEu`, the server's GDPR list) and US-CA / rest groups.
 */
export async function getComplianceRegions(
  db: Db,
  isEu: (region: string) => boolean,
  range: TimeRange = {},
) {
  const { rows } = await sql<{ region: string; rule: string; events: unknown }>`
    select region, rule, sum(flagged_events) as events
    from ${rollupRows("flagged_events", sql`region, rule, flagged_events`, range)} as r
    group by region, rule order by region, rule`.execute(db);
  type Counts = Record<string, number>;
  const empty = (): Counts => Object.fromEntries(RULE_IDS.map((rule) => [rule, 0]));
  const regions = new Map<string, { region: string; is_eu: boolean; flagged_events: Counts }>();
  const groups = { eu: empty(), non_eu: empty(), us_ca: empty(), non_us_ca: empty() };
  for (const row of rows) {
    const rule = row.rule;
    const n = num(row.events);
    let entry = regions.get(row.region);
    if (entry === undefined) {
      entry = { region: row.region, is_eu: isEu(row.region), flagged_events: empty() };
      regions.set(row.region, entry);
    }
    // A rule retired from the registry still has stored rows: count them under its id.
    for (const counts of [entry.flagged_events, groups[entry.is_eu ? "eu" : "non_eu"]]) {
      counts[rule] = (counts[rule] ?? 0) + n;
    }
    const byState = groups[row.region === "US-CA" ? "us_ca" : "non_us_ca"];
    byState[rule] = (byState[rule] ?? 0) + n;
  }
  return {
    from: range.fromMs === undefined ? null : isoOf(range.fromMs),
    to: range.toMs === undefined ? null : isoOf(range.toMs),
    ...completenessOf(await loadHorizons(db), range, "mixed"),
    regions: [...regions.values()],
    groups,
  };
}

/** Every opt-out on record, the earliest request per user. */
export async function loadOptOuts(db: Db): Promise<Array<[string, OptOut]>> {
  // Access and sale/sharing opt-outs are answered or recorded; they do not make events violations.
  const rows = await db.selectFrom("privacy_requests").selectAll()
    .where("request_type", "in", ["do_not_track", "deletion"]).orderBy("requested_at").execute();
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
