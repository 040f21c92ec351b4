/**
 * Initial schema. Frozen: never edit a migration that has shipped; add a new one.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

const COUNTS = sql.raw(`
  events bigint not null default 0,
  plays bigint not null default 0,
  errors bigint not null default 0,
  watch_time_ms bigint not null default 0`);

/** Creates every table of the first release. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table raw_events (
    event_id text primary key,
    position bigint not null,
    user_id text not null,
    device_id text not null,
    content_id text not null,
    event_type text not null,
    occurred_at timestamptz not null,
    received_at timestamptz not null,
    region text not null,
    is_eu boolean not null,
    has_consent boolean not null,
    ip_hash text not null,
    ip_prefix text not null,
    error_code text,
    do_not_track boolean not null,
    is_late boolean not null,
    extra_metadata jsonb not null
  )`.execute(db);
  await sql`create index raw_events_user_idx on raw_events (user_id, occurred_at)`.execute(db);
  await sql`create table stat_counters (name text primary key, value bigint not null default 0)`
    .execute(db);
  await sql`create table content_stats (content_id text primary key, ${COUNTS})`.execute(db);
  await sql`create table content_region_stats (
    content_id text not null, region text not null, ${COUNTS}, primary key (content_id, region)
  )`.execute(db);
  await sql`create table region_stats (region text primary key, is_eu boolean not null, ${COUNTS})`
    .execute(db);
  await sql`create table region_error_codes (
    region text not null, error_code text not null, errors bigint not null default 0,
    primary key (region, error_code)
  )`.execute(db);
  await sql`create table region_platforms (
    region text not null, platform text not null, events bigint not null default 0,
    primary key (region, platform)
  )`.execute(db);
  await sql`create table device_stats (device_id text primary key, ${COUNTS})`.execute(db);
  await sql`create table risk_flags (
    id bigint generated always as identity primary key,
    flag_key text not null unique,
    rule text not null,
    rule_version integer not null,
    level text not null,
    level_rank smallint not null,
    entity_type text not null,
    entity_id text not null,
    event_id text not null,
    user_id text not null,
    region text not null,
    is_eu boolean not null,
    occurred_at timestamptz not null,
    reason text not null,
    evidence jsonb not null,
    flagged_events bigint not null,
    raised_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
  )`.execute(db);
  await sql`create index risk_flags_rule_idx on risk_flags (rule, id)`.execute(db);
  await sql`create index risk_flags_region_idx on risk_flags (region, id)`.execute(db);
  await sql`create table entity_risk (
    entity_type text not null,
    entity_id text not null,
    level text not null,
    level_rank smallint not null,
    flag_count bigint not null,
    updated_at timestamptz not null default now(),
    primary key (entity_type, entity_id)
  )`.execute(db);
  await sql`create table privacy_requests (
    user_id text not null,
    request_type text not null,
    source text not null,
    requested_at timestamptz not null,
    primary key (user_id, request_type)
  )`.execute(db);
  await sql`create table shard_checkpoints (
    family text not null,
    shard integer not null,
    position bigint not null,
    epoch bigint not null default 0,
    updated_at timestamptz not null default now(),
    primary key (family, shard)
  )`.execute(db);
}

/** Drops everything `up` created. */
export async function down(db: Kysely<unknown>): Promise<void> {
  for (
    const table of [
      "shard_checkpoints",
      "privacy_requests",
      "entity_risk",
      "risk_flags",
      "device_stats",
      "region_platforms",
      "region_error_codes",
      "region_stats",
      "content_region_stats",
      "content_stats",
      "stat_counters",
      "raw_events",
    ]
  ) {
    await sql`drop table if exists ${sql.table(table)}`.execute(db);
  }
}
