/**
 * Queries of the incident outbox (rows `record()` in `incidents.ts` writes with each alerting
 * revision): claiming due rows (several senders never take the same row: `for update skip locked`
 * plus a lease), and recording outcomes. A row is keyed by incident id and revision.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";
import { type Incident, toIncident } from "./incidents.ts";

/** A claimed incident alert with the incident as it is now (the revision is the outbox row's). */
export interface DueIncidentAlert {
  incidentId: string;
  revision: number;
  /** Why this revision alerts: `opened`, `level`, `update` or `recovered`. */
  reason: string;
  attempts: number;
  /** The incident as the API shows it, its band as two numbers. */
  incident: Omit<Incident, "baseline" | "band" | "muted_until" | "reason" | "updated_at"> & {
    band_low: number;
    band_high: number;
  };
}

/** Takes up to `limit` due incident alerts for `leaseMs` (another sender skips them meanwhile). */
export async function claimDueIncidentAlerts(
  db: Kysely<Database>,
  nowMs: number,
  limit: number,
  leaseMs: number,
): Promise<DueIncidentAlert[]> {
  const now = new Date(nowMs).toISOString();
  const result = await sql<Record<string, unknown>>`
    with due as (
      select incident_id, revision from incident_outbox
      where delivered_at is null and next_attempt_at <= ${now}::timestamptz
      order by next_attempt_at, incident_id, revision limit ${limit} for update skip locked),
    claimed as (
      update incident_outbox o set next_attempt_at = ${
    new Date(nowMs + leaseMs).toISOString()
  }::timestamptz
      from due where o.incident_id = due.incident_id and o.revision = due.revision
      returning o.incident_id, o.revision, o.reason, o.attempts)
    select c.revision as outbox_revision, c.reason as outbox_reason, c.attempts, i.*
    from claimed c join incidents i on i.id = c.incident_id
    order by c.incident_id, c.revision`.execute(db);
  return result.rows.map(toDueIncidentAlert);
}

function toDueIncidentAlert(r: Record<string, unknown>): DueIncidentAlert {
  // The incident as it is now, at the outbox row's revision, its band as two numbers.
  const { baseline: _b, band, muted_until: _m, reason: _r, updated_at: _u, ...incident } =
    toIncident(r);
  const revision = Number(r.outbox_revision);
  return {
    incidentId: incident.id,
    revision,
    reason: r.outbox_reason as string,
    attempts: Number(r.attempts),
    incident: { ...incident, revision, band_low: band[0], band_high: band[1] },
  };
}

/** Marks an incident alert delivered. */
export async function markIncidentAlertDelivered(
  db: Kysely<Database>,
  incidentId: string,
  revision: number,
  nowMs: number,
): Promise<void> {
  await sql`update incident_outbox set delivered_at = ${new Date(nowMs).toISOString()}::timestamptz,
    last_error = null where incident_id = ${incidentId} and revision = ${revision}`.execute(db);
}

/** Records a failed attempt of an incident alert and when to try again. */
export async function markIncidentAlertFailed(
  db: Kysely<Database>,
  incidentId: string,
  revision: number,
  error: string,
  retryAtMs: number,
): Promise<void> {
  await sql`update incident_outbox set attempts = attempts + 1, last_error = ${error.slice(0, 500)},
    next_attempt_at = ${new Date(retryAtMs).toISOString()}::timestamptz
    where incident_id = ${incidentId} and revision = ${revision}`.execute(db);
}

/** Incident alerts not delivered yet, for `/metrics`. */
export async function pendingIncidentAlertCount(db: Kysely<Database>): Promise<number> {
  const result = await sql<{ n: string | number }>`
    select count(*) as n from incident_outbox where delivered_at is null`.execute(db);
  return Number(result.rows[0]?.n ?? 0);
}
