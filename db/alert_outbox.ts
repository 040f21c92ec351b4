/**
 * Queries of the alert outbox: enqueueing in the flush transaction, claiming due rows (several
 * senders never take the same row: `for update skip locked` plus a lease), and recording outcomes.
 *
 * @module
 */
import { type Kysely, sql, type Transaction } from "kysely";
import type { Database } from "./schema.ts";

/** Puts the flags among `flagKeys` at or above `minRank` in the outbox at their current revision. */
export async function enqueueAlerts(
  trx: Transaction<Database>,
  flagKeys: string[],
  minRank: number,
): Promise<void> {
  if (flagKeys.length === 0) return;
  await sql`insert into alert_outbox (flag_id, revision)
    select id, revision from risk_flags
    where flag_key = any(${flagKeys}::text[]) and level_rank >= ${minRank}
    order by id
    on conflict (flag_id, revision) do nothing`.execute(trx);
}

/** A claimed alert with the flag as it is now. */
export interface DueAlert {
  outboxId: string;
  attempts: number;
  flag: {
    id: string;
    revision: number;
    rule: string;
    rule_version: number;
    level: string;
    status: string;
    entity_type: string;
    entity_id: string;
    user_id: string;
    region: string;
    occurred_at: string;
    reason: string;
    evidence: unknown;
    flagged_events: number;
  };
}

/** Takes up to `limit` due alerts for `leaseMs` (another sender skips them meanwhile). */
export async function claimDueAlerts(
  db: Kysely<Database>,
  nowMs: number,
  limit: number,
  leaseMs: number,
): Promise<DueAlert[]> {
  const now = new Date(nowMs).toISOString();
  const result = await sql<Record<string, unknown>>`
    with due as (
      select id from alert_outbox
      where delivered_at is null and next_attempt_at <= ${now}::timestamptz
      order by next_attempt_at, id limit ${limit} for update skip locked)
    update alert_outbox o set next_attempt_at = ${new Date(nowMs + leaseMs).toISOString()}
    from due where o.id = due.id
    returning o.id as outbox_id, o.attempts, o.flag_id, o.revision`.execute(db);
  if (result.rows.length === 0) return [];
  const flags = await db.selectFrom("risk_flags").selectAll()
    .where("id", "in", result.rows.map((r) => String(r.flag_id)) as never[]).execute();
  const byId = new Map(flags.map((f) => [String(f.id), f]));
  return result.rows.flatMap((r) => {
    const f = byId.get(String(r.flag_id));
    if (f === undefined) return [];
    return [{
      outboxId: String(r.outbox_id),
      attempts: Number(r.attempts),
      flag: {
        id: String(f.id),
        revision: Number(r.revision),
        rule: f.rule,
        rule_version: f.rule_version,
        level: f.level,
        status: f.status,
        entity_type: f.entity_type,
        entity_id: f.entity_id,
        user_id: f.user_id,
        region: f.region,
        occurred_at: new Date(f.occurred_at).toISOString(),
        reason: f.reason,
        evidence: typeof f.evidence === "string" ? JSON.parse(f.evidence) : f.evidence,
        flagged_events: Number(f.flagged_events),
      },
    }];
  });
}

/** Marks an alert delivered. */
export async function markDelivered(db: Kysely<Database>, outboxId: string, nowMs: number) {
  await db.updateTable("alert_outbox").set({
    delivered_at: new Date(nowMs).toISOString(),
    last_error: null,
  }).where("id", "=", outboxId as never).execute();
}

/** Records a failed attempt and when to try again. */
export async function markFailed(
  db: Kysely<Database>,
  outboxId: string,
  error: string,
  retryAtMs: number,
) {
  await db.updateTable("alert_outbox").set((eb) => ({
    attempts: eb("attempts", "+", 1),
    last_error: error.slice(0, 500),
    next_attempt_at: new Date(retryAtMs).toISOString(),
  })).where("id", "=", outboxId as never).execute();
}

/** Alerts not delivered yet, for `/metrics`. */
export async function pendingAlertCount(db: Kysely<Database>): Promise<number> {
  const row = await db.selectFrom("alert_outbox").select((eb) => eb.fn.countAll().as("n"))
    .where("delivered_at", "is", null).executeTakeFirst();
  return Number(row?.n ?? 0);
}
