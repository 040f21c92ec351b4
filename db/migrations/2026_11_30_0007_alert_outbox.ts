/**
 * The alert outbox: a flag that reaches the alert level (or re-opens at a new revision) gets a row
 * in the same flush transaction that writes it, keyed by flag id and revision, so a crash neither
 * loses nor duplicates an alert; a sender delivers the rows with retries.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Creates `alert_outbox`. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table alert_outbox (
    id bigint generated always as identity primary key,
    flag_id bigint not null references risk_flags (id) on delete cascade,
    revision integer not null,
    created_at timestamptz not null default now(),
    next_attempt_at timestamptz not null default now(),
    attempts integer not null default 0,
    delivered_at timestamptz,
    last_error text,
    unique (flag_id, revision)
  )`.execute(db);
  await sql`create index alert_outbox_due_idx on alert_outbox (next_attempt_at, id)
    where delivered_at is null`.execute(db);
}

/** Drops `alert_outbox`. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table alert_outbox`.execute(db);
}
