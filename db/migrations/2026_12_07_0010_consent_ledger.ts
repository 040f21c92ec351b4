/**
 * The consent ledger: the decoded consent signal stored with each raw event (never the string),
 * one ledger row per change of a user's consent state (with the CMP, policy version and a hash of
 * the string as proof), and hourly counts of events that carried a signal, per region.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Adds `raw_events.consent`, `consent_ledger` and `consent_facts_hourly`. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table raw_events add column consent jsonb`.execute(db);
  await sql`create table consent_ledger (
    user_id text not null,
    occurred_at timestamptz not null,
    event_id text not null,
    received_at timestamptz not null,
    region text not null,
    state integer not null,
    source text not null,
    purposes smallint not null,
    vendor_consent boolean,
    has_consent boolean not null,
    is_decoded boolean not null,
    opt_out_sale_share boolean not null,
    cmp_id integer,
    cmp_version integer,
    policy_version integer,
    string_hash text,
    seen_until timestamptz,
    is_carried boolean not null default false,
    primary key (user_id, occurred_at, event_id)
  )`.execute(db);
  await sql`create index consent_ledger_occurred_at on consent_ledger (occurred_at)`.execute(db);
  await sql`create table consent_facts_hourly (
    hour timestamptz not null,
    region text not null,
    events bigint not null,
    signal_events bigint not null,
    primary key (hour, region)
  )`.execute(db);
}

/** Drops them. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table consent_facts_hourly`.execute(db);
  await sql`drop table consent_ledger`.execute(db);
  await sql`alter table raw_events drop column consent`.execute(db);
}
