/**
 * Audit trail: one row per access to compliance and privacy data or to the audit trail itself, and
 * per refused request. Identical refusals within one UTC minute share a row whose `count` grows: the
 * writer fills `fold_key` (a digest of minute, source, path, status and actor) only for refusals and
 * upserts on its unique index, so a flood of bad tokens costs one row per minute, not one per request.
 *
 * Frozen: never edit a migration that has shipped; add a new one.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Creates `audit_log` with its fold key and the indexes for newest-first keyset reads. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table audit_log (
    id bigint generated always as identity primary key,
    at timestamptz not null,
    request_id text not null,
    actor_name text not null,
    actor_role text not null,
    method text not null,
    path text not null,
    query text not null default '',
    status int not null,
    subject_user_id text,
    source text not null,
    count int not null default 1,
    fold_key text
  )`.execute(db);
  // NULLs never conflict, so only refusals (which carry a key) fold.
  await sql`create unique index audit_log_fold_idx on audit_log (fold_key)`.execute(db);
  await sql`create index audit_log_at_idx on audit_log (at, id)`.execute(db);
  await sql`create index audit_log_actor_idx on audit_log (actor_name, at, id)`.execute(db);
}

/** Drops the audit trail. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table audit_log`.execute(db);
}
