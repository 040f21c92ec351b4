/**
 * Incidents of the anomaly detector and maintenance windows: what the detector opens, updates and
 * recovers, and what people read and change. Every change that alerts bumps the incident's
 * revision, adds a history row and an outbox row (`incident-<id>:<revision>` is the idempotency key
 * a receiver dedupes on) in one transaction. `state` (active, recovered) is the detector's; `status`
 * (open, acknowledged, muted, resolved) is a person's.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";
import { type Level, LEVEL_RANK } from "../rules/types.ts";

/** Review statuses a person sets. */
export const INCIDENT_STATUSES = ["open", "acknowledged", "muted", "resolved"] as const;
export type IncidentStatus = typeof INCIDENT_STATUSES[number];

/** One contribution of a drill-down, as stored. */
export interface DrillDownEntry {
  dimensions: Record<string, string>;
  expected: number;
  observed: number;
  share: number;
  text: string;
}

/** A key moved by the same fault, attached to an incident. */
export interface RelatedKey {
  series: string;
  key: string;
  opened_at: string;
  expected: number;
  observed: number;
}

/** Affected viewers by plan and the monthly revenue of those subscribers (exposure, not loss). */
export interface Exposure {
  currency: string;
  viewers_by_plan: Record<string, number>;
  monthly_revenue: number;
  unpriced_plans: string[];
}

/** What the detector knows of an incident in one window. */
export interface IncidentReading {
  series: string;
  key: string;
  kind: string;
  level: Level;
  windowStartMs: number;
  baseline: string;
  expected: number;
  observed: number;
  band: [number, number];
  z: number;
  viewers: number;
  drillDown: DrillDownEntry[];
  exposure: Exposure | null;
}

/** An incident as the API shows it. */
export interface Incident {
  id: string;
  series: string;
  key: string;
  kind: string;
  state: "active" | "recovered";
  status: IncidentStatus;
  level: Level;
  started_at: string;
  opened_at: string;
  last_window: string;
  recovered_at: string | null;
  baseline: string;
  expected: number;
  observed: number;
  band: [number, number];
  z: number;
  windows: number;
  viewers: number;
  drill_down: DrillDownEntry[];
  related: RelatedKey[];
  exposure: Exposure | null;
  muted_until: string | null;
  reason: string | null;
  revision: number;
  updated_at: string;
}

type Db = Kysely<Database>;
const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Which revisions go to the outbox: those of incidents at or above `minRank` (`ALERT_MIN_LEVEL`);
 * null when no webhook is configured (nothing is queued, so adding one later sends no backlog).
 */
export interface AlertPolicy {
  minRank: number | null;
}

/** Queue every alert (tests, and a webhook that wants LOW too). */
export const ALERT_ALL: AlertPolicy = { minRank: 0 };

/** Opens an incident (revision 1, history, outbox); resolves to its id. */
export async function openIncident(
  db: Db,
  reading: IncidentReading,
  startedAtMs: number,
  policy: AlertPolicy = ALERT_ALL,
): Promise<string> {
  return await db.transaction().execute(async (trx) => {
    const result = await sql<{ id: string }>`
      insert into incidents (series, key, kind, level, started_at, opened_at, last_window,
        baseline, expected, observed, band_low, band_high, z, viewers, drill_down, exposure,
        alerted_at)
      values (${reading.series}, ${reading.key}, ${reading.kind}, ${reading.level},
        ${iso(startedAtMs)}::timestamptz, ${iso(reading.windowStartMs)}::timestamptz,
        ${iso(reading.windowStartMs)}::timestamptz, ${reading.baseline}, ${reading.expected},
        ${reading.observed}, ${reading.band[0]}, ${reading.band[1]}, ${reading.z},
        ${reading.viewers}, ${JSON.stringify(reading.drillDown)}::jsonb,
        ${reading.exposure === null ? null : JSON.stringify(reading.exposure)}::jsonb,
        ${iso(reading.windowStartMs)}::timestamptz)
      returning id`.execute(trx);
    const id = String(result.rows[0].id);
    const change = { event: "opened", level: reading.level };
    await record(trx, id, 1, "detector", change, queued(policy, reading.level, "opened"));
    return id;
  });
}

/**
 * Records one more window of an active incident: the latest reading, the deepest impact. An
 * alert (new revision) goes out when the level changes, otherwise at most once an hour; none while
 * a person muted it (until `muted_until`) or resolved it.
 */
export async function updateIncident(
  db: Db,
  id: string,
  reading: IncidentReading,
  policy: AlertPolicy = ALERT_ALL,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const current = await sql<{
      level: string;
      revision: number;
      alerted_at: Date | string;
      viewers: string | number;
      is_quiet: boolean;
    }>`select level, revision, alerted_at, viewers,
        (status = 'resolved' or (status = 'muted' and
          muted_until > ${iso(reading.windowStartMs)}::timestamptz)) as is_quiet
      from incidents where id = ${id} and state = 'active' for update`.execute(trx);
    if (current.rows.length === 0) return;
    const row = current.rows[0];
    const isDeeper = reading.viewers > Number(row.viewers);
    const levelChanged = row.level !== reading.level;
    const isHourly = reading.windowStartMs - new Date(row.alerted_at).getTime() >= 3_600_000;
    const alerts = (levelChanged || isHourly) && !row.is_quiet;
    const revision = alerts ? row.revision + 1 : row.revision;
    await sql`update incidents set
      level = ${reading.level}, last_window = ${iso(reading.windowStartMs)}::timestamptz,
      expected = ${reading.expected}, observed = ${reading.observed},
      band_low = ${reading.band[0]}, band_high = ${reading.band[1]}, z = ${reading.z},
      windows = windows + 1,
      viewers = greatest(viewers, ${reading.viewers}),
      exposure = case when ${isDeeper} then ${
      reading.exposure === null ? null : JSON.stringify(reading.exposure)
    }::jsonb else exposure end,
      revision = ${revision},
      alerted_at = case when ${alerts} then ${iso(reading.windowStartMs)}::timestamptz
        else alerted_at end,
      updated_at = now()
      where id = ${id}`.execute(trx);
    if (alerts) {
      const event = levelChanged ? "level" : "update";
      const change = { event, level: reading.level };
      await record(trx, id, revision, "detector", change, queued(policy, reading.level, event));
    }
  });
}

/**
 * Marks an incident recovered at `atMs` (the end of its last calm window). The recovery alerts
 * unless a person resolved the incident or muted it past `atMs`.
 */
export async function recoverIncident(
  db: Db,
  id: string,
  atMs: number,
  policy: AlertPolicy = ALERT_ALL,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const result = await sql<{ revision: number; level: Level; is_quiet: boolean }>`
      update incidents set state = 'recovered', recovered_at = ${iso(atMs)}::timestamptz,
        revision = revision + 1, updated_at = now()
      where id = ${id} and state = 'active'
      returning revision, level, (status = 'resolved' or
        (status = 'muted' and muted_until > ${iso(atMs)}::timestamptz)) as is_quiet`.execute(trx);
    if (result.rows.length === 0) return;
    const row = result.rows[0];
    const reason = row.is_quiet ? null : queued(policy, row.level, "recovered");
    await record(trx, id, row.revision, "detector", { event: "recovered" }, reason);
  });
}

/** The outbox reason of an alert, or null when the policy does not queue it. */
function queued(policy: AlertPolicy, level: Level, reason: string): string | null {
  return policy.minRank !== null && LEVEL_RANK[level] >= policy.minRank ? reason : null;
}

/** Attaches a key moved by the same fault (no alert: the incident's own alerts cover it). */
export async function attachRelated(db: Db, id: string, related: RelatedKey): Promise<void> {
  await sql`update incidents set related = related || ${JSON.stringify([related])}::jsonb,
    updated_at = now() where id = ${id}`.execute(db);
}

async function record(
  trx: Db,
  id: string,
  revision: number,
  actor: string,
  change: Record<string, unknown>,
  /** The outbox row's reason; null: no alert for this revision. */
  reason: string | null,
): Promise<void> {
  await sql`insert into incident_history (incident_id, revision, actor, change)
    values (${id}, ${revision}, ${actor}, ${JSON.stringify(change)}::jsonb)`.execute(trx);
  if (reason === null) return;
  await sql`insert into incident_outbox (incident_id, revision, reason)
    values (${id}, ${revision}, ${reason}) on conflict do nothing`.execute(trx);
}

/** Active incidents by `series + "\0" + key` (the detector's memory after a restart). */
export async function activeIncidents(db: Db): Promise<Map<string, string>> {
  const result = await sql<{ id: string; series: string; key: string }>`
    select id, series, key from incidents where state = 'active'`.execute(db);
  return new Map(result.rows.map((r) => [r.series + "\u0000" + r.key, String(r.id)]));
}

/** The columns {@link toIncident} reads. */
export const COLUMNS = sql`id, series, key, kind, state, status, level, started_at, opened_at,
  last_window, recovered_at, baseline, expected, observed, band_low, band_high, z, windows,
  viewers, drill_down, related, exposure, muted_until, reason, revision, updated_at`;

/** An incident row (the columns of `COLUMNS`) as the API shows it. */
export function toIncident(r: Record<string, unknown>): Incident {
  const at = (v: unknown) => v === null ? null : new Date(v as string).toISOString();
  return {
    id: String(r.id),
    series: r.series as string,
    key: r.key as string,
    kind: r.kind as string,
    state: r.state as Incident["state"],
    status: r.status as IncidentStatus,
    level: r.level as Level,
    started_at: at(r.started_at)!,
    opened_at: at(r.opened_at)!,
    last_window: at(r.last_window)!,
    recovered_at: at(r.recovered_at),
    baseline: r.baseline as string,
    expected: Number(r.expected),
    observed: Number(r.observed),
    band: [Number(r.band_low), Number(r.band_high)],
    z: Number(r.z),
    windows: Number(r.windows),
    viewers: Number(r.viewers),
    drill_down: r.drill_down as DrillDownEntry[],
    related: r.related as RelatedKey[],
    exposure: (r.exposure ?? null) as Exposure | null,
    muted_until: at(r.muted_until),
    reason: (r.reason ?? null) as string | null,
    revision: Number(r.revision),
    updated_at: at(r.updated_at)!,
  };
}

/** Filters of {@link listIncidents}. */
export interface IncidentFilter {
  state?: "active" | "recovered";
  status?: IncidentStatus;
  series?: string;
  fromMs?: number;
  toMs?: number;
  limit: number;
}

/** Incidents newest first (by start), filtered. */
export async function listIncidents(db: Db, f: IncidentFilter): Promise<Incident[]> {
  const result = await sql<Record<string, unknown>>`select ${COLUMNS} from incidents
    where (${f.state ?? null}::text is null or state = ${f.state ?? null})
      and (${f.status ?? null}::text is null or status = ${f.status ?? null})
      and (${f.series ?? null}::text is null or series = ${f.series ?? null})
      and (${f.fromMs === undefined ? null : iso(f.fromMs)}::timestamptz is null
        or coalesce(recovered_at, 'infinity') >= ${f.fromMs === undefined ? null : iso(f.fromMs)})
      and (${f.toMs === undefined ? null : iso(f.toMs)}::timestamptz is null
        or started_at < ${f.toMs === undefined ? null : iso(f.toMs)})
    order by started_at desc, id desc limit ${f.limit}`.execute(db);
  return result.rows.map(toIncident);
}

/** One incident with its history, or null. */
export async function getIncident(
  db: Db,
  id: string,
): Promise<(Incident & { history: unknown[] }) | null> {
  if (!/^[0-9]{1,18}$/.test(id)) return null;
  const result = await sql<Record<string, unknown>>`select ${COLUMNS} from incidents
    where id = ${id}`.execute(db);
  if (result.rows.length === 0) return null;
  const history = await sql<Record<string, unknown>>`
    select revision, at, actor, change from incident_history where incident_id = ${id}
    order by revision`.execute(db);
  return {
    ...toIncident(result.rows[0]),
    history: history.rows.map((h) => ({
      revision: Number(h.revision),
      at: new Date(h.at as string).toISOString(),
      actor: h.actor,
      change: h.change,
    })),
  };
}

/** A person's change of an incident's status. */
export interface IncidentReview {
  status: IncidentStatus;
  /** Required to resolve; kept for the others. */
  reason?: string;
  /** Muting only: until when (after it, the incident alerts again). */
  mutedUntilMs?: number;
  actor: string;
}

/** Applies a review; resolves to the incident after it, or null when there is none. */
export async function reviewIncident(
  db: Db,
  id: string,
  review: IncidentReview,
): Promise<Incident | null> {
  if (!/^[0-9]{1,18}$/.test(id)) return null;
  return await db.transaction().execute(async (trx) => {
    const result = await sql<Record<string, unknown>>`update incidents set
      status = ${review.status}, reason = coalesce(${review.reason ?? null}, reason),
      muted_until = ${
      review.mutedUntilMs === undefined ? null : iso(review.mutedUntilMs)
    }::timestamptz,
      revision = revision + 1, updated_at = now()
      where id = ${id} returning ${COLUMNS}`.execute(trx);
    if (result.rows.length === 0) return null;
    const incident = toIncident(result.rows[0]);
    await sql`insert into incident_history (incident_id, revision, actor, change)
      values (${id}, ${incident.revision}, ${review.actor}, ${
      JSON.stringify({
        event: "review",
        status: review.status,
        reason: review.reason ?? null,
        muted_until: incident.muted_until,
      })
    }::jsonb)`.execute(trx);
    return incident;
  });
}

/** A maintenance window: incidents do not open in it, and its hours stay out of baselines. */
export interface MaintenanceWindow {
  id: string;
  starts_at: string;
  ends_at: string;
  /** Null: every series. */
  series: string | null;
  /** Null: every key of the series. */
  key: string | null;
  reason: string;
  created_by: string;
}

/** Records a maintenance window. */
export async function createMaintenance(
  db: Db,
  w: { startsAtMs: number; endsAtMs: number; series?: string; key?: string; reason: string },
  actor: string,
): Promise<MaintenanceWindow> {
  const result = await sql<Record<string, unknown>>`insert into maintenance_windows
      (starts_at, ends_at, series, key, reason, created_by)
    values (${iso(w.startsAtMs)}::timestamptz, ${iso(w.endsAtMs)}::timestamptz,
      ${w.series ?? null}, ${w.key ?? null}, ${w.reason}, ${actor})
    returning id, starts_at, ends_at, series, key, reason, created_by`.execute(db);
  return toMaintenance(result.rows[0]);
}

/** Maintenance windows overlapping [fromMs, toMs), oldest first. */
export async function maintenanceBetween(
  db: Db,
  fromMs: number,
  toMs: number,
): Promise<MaintenanceWindow[]> {
  const result = await sql<Record<string, unknown>>`
    select id, starts_at, ends_at, series, key, reason, created_by from maintenance_windows
    where starts_at < ${iso(toMs)}::timestamptz and ends_at > ${iso(fromMs)}::timestamptz
    order by starts_at, id`.execute(db);
  return result.rows.map(toMaintenance);
}

function toMaintenance(r: Record<string, unknown>): MaintenanceWindow {
  return {
    id: String(r.id),
    starts_at: new Date(r.starts_at as string).toISOString(),
    ends_at: new Date(r.ends_at as string).toISOString(),
    series: (r.series ?? null) as string | null,
    key: (r.key ?? null) as string | null,
    reason: r.reason as string,
    created_by: r.created_by as string,
  };
}

/** Whether a maintenance window covers a series key over [fromMs, toMs). */
export function isUnderMaintenance(
  windows: readonly MaintenanceWindow[],
  series: string,
  key: string,
  fromMs: number,
  toMs: number,
): boolean {
  return windows.some((m) =>
    (m.series === null || m.series === series) && (m.key === null || m.key === key) &&
    new Date(m.starts_at).getTime() < toMs && new Date(m.ends_at).getTime() > fromMs
  );
}
