/**
 * Flag review (GDPR Art. 22: a person decides): each risk flag gets a review status, an assignee and
 * a revision that counts its evidence snapshots, and every review decision or escalation appends a
 * row to `flag_history` with who made it and the evidence it replaced.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Adds the review columns and the history table. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table risk_flags add column status text not null default 'open'
    check (status in ('open', 'acknowledged', 'escalated', 'dismissed', 'resolved'))`.execute(db);
  await sql`alter table risk_flags add column assignee text`.execute(db);
  await sql`alter table risk_flags add column revision integer not null default 1`.execute(db);
  await sql`create index risk_flags_status_idx on risk_flags (status, id)`.execute(db);
  await sql`create table flag_history (
    id bigint generated always as identity primary key,
    flag_id bigint not null references risk_flags (id) on delete cascade,
    at timestamptz not null default now(),
    actor_name text not null,
    actor_role text not null,
    from_status text not null,
    to_status text not null,
    reason text,
    assignee text,
    evidence jsonb,
    level text
  )`.execute(db);
  await sql`create index flag_history_flag_idx on flag_history (flag_id, id)`.execute(db);
}

/** Drops the history table and the review columns. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table flag_history`.execute(db);
  await sql`drop index risk_flags_status_idx`.execute(db);
  for (const column of ["revision", "assignee", "status"]) {
    await sql`alter table risk_flags drop column ${sql.ref(column)}`.execute(db);
  }
}
