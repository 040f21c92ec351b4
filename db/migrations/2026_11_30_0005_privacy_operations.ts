/**
 * Privacy requests become records with an id, a status, a deadline and a result; erased users are
 * remembered only as keyed hashes, erased event ids only as hashes (so a retried erased event is a
 * duplicate), and the key for those hashes is created once per database unless configured.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Turns privacy requests into records and adds the erasure tables. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table privacy_requests add column id bigint generated always as identity`
    .execute(db);
  await sql`alter table privacy_requests add column status text not null default 'completed'`
    .execute(db);
  await sql`alter table privacy_requests alter column status set default 'received'`.execute(db);
  await sql`alter table privacy_requests add column jurisdiction text`.execute(db);
  await sql`alter table privacy_requests add column due_at timestamptz`.execute(db);
  await sql`alter table privacy_requests add column completed_at timestamptz`.execute(db);
  await sql`alter table privacy_requests add column result jsonb`.execute(db);
  await sql`update privacy_requests set completed_at = requested_at`.execute(db);
  // Access requests repeat (each is answered on its own); the others are one per user and type.
  await sql`alter table privacy_requests drop constraint privacy_requests_pkey`.execute(db);
  await sql`alter table privacy_requests add primary key (id)`.execute(db);
  await sql`create unique index privacy_requests_user_type_idx
    on privacy_requests (user_id, request_type) where request_type <> 'access'`.execute(db);
  await sql`create index privacy_requests_status_idx on privacy_requests (status, due_at)`
    .execute(db);
  await sql`create table erased_subjects (
    subject_hash text primary key,
    pseudonym text not null,
    erased_at timestamptz not null
  )`.execute(db);
  await sql`create table erased_events (
    event_hash text primary key,
    erased_at timestamptz not null
  )`.execute(db);
  await sql`create table app_secrets (name text primary key, value text not null)`.execute(db);
  await sql`create index risk_flags_user_idx on risk_flags (user_id)`.execute(db);
}

/** Reverts to one request per user and type. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index risk_flags_user_idx`.execute(db);
  await sql`drop table app_secrets`.execute(db);
  await sql`drop table erased_events`.execute(db);
  await sql`drop table erased_subjects`.execute(db);
  await sql`drop index privacy_requests_status_idx`.execute(db);
  await sql`drop index privacy_requests_user_type_idx`.execute(db);
  await sql`alter table privacy_requests drop constraint privacy_requests_pkey`.execute(db);
  await sql`delete from privacy_requests where request_type = 'access'`.execute(db);
  await sql`alter table privacy_requests add primary key (user_id, request_type)`.execute(db);
  for (const column of ["result", "completed_at", "due_at", "jurisdiction", "status", "id"]) {
    await sql`alter table privacy_requests drop column ${sql.ref(column)}`.execute(db);
  }
}
