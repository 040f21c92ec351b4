/**
 * `raw_events` becomes a table partitioned by event time, one partition per UTC day, so retention
 * drops whole days instead of deleting rows. Every unique index of a partitioned table must hold the
 * partition key: the primary key becomes (occurred_at, event_id), so a retry (which repeats its
 * event, timestamp included) is still a duplicate; the position index is no longer unique (the
 * log's single writer holds an advisory lock instead). Daily partitions are created at run time,
 * ahead of need and on demand (`db/partitions.ts`); there is no default partition.
 * The primary key is (occurred_at, event_id): event time first fills the index pages. The two
 * metadata keys nearly every event has, `platform` and `app_version`, get columns of their own,
 * and `extra_metadata` holds only the rest, null when there is none (a JSON object costs about 40
 * bytes a row for two short strings).
 *
 * The table as it was, with its rows, becomes the partition `raw_events_legacy`, bounded by the UTC
 * day after its newest row (or after now): its indexes are rebuilt to match (the new primary key
 * is the only one built over the rows), and attaching it scans it once to check the bound. An empty
 * table is dropped instead.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

const DAY_MS = 86_400_000;

/** Partitions `raw_events` by UTC day of `occurred_at`; old rows stay in `raw_events_legacy`. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table raw_events rename to raw_events_legacy`.execute(db);
  await sql`alter table raw_events_legacy rename constraint raw_events_pkey
    to raw_events_legacy_pkey`.execute(db);
  await sql`alter index raw_events_user_idx rename to raw_events_legacy_user_idx`.execute(db);
  // Retention drops partitions now: the event-time index served only row-by-row deletes.
  await sql`drop index raw_events_occurred_idx`.execute(db);
  await sql`drop index raw_events_position_idx`.execute(db);
  // Columns ordered by alignment (8-byte values first, then text, then booleans), so a row carries
  // no padding between them: part of the per-event budget (see docs/delivery.md).
  await sql`create table raw_events (
    position bigint not null default nextval('raw_events_position_seq'),
    occurred_at timestamptz not null,
    received_at timestamptz not null,
    event_id text not null,
    user_id text not null,
    device_id text not null,
    content_id text not null,
    event_type text not null,
    region text not null,
    ip_hash text not null,
    ip_prefix text not null,
    error_code text,
    subscription_plan text,
    platform text,
    app_version text,
    extra_metadata jsonb,
    consent jsonb,
    is_eu boolean not null,
    has_consent boolean not null,
    do_not_track boolean not null,
    is_late boolean not null,
    client_is_eu boolean
  ) partition by range (occurred_at)`.execute(db);
  // Event time first: rows arrive mostly in time order, so the index fills its pages (an id first,
  // random as UUIDs are, left them two thirds full).
  await sql`alter table raw_events add constraint raw_events_pkey
    primary key (occurred_at, event_id)`.execute(db);
  await sql`create index raw_events_position_idx on raw_events (position)`.execute(db);
  // Only erasure and access exports look a user up: a hash index holds no key, a third the size.
  await sql`create index raw_events_user_idx on raw_events using hash (user_id)`.execute(db);

  const newest = await sql<{ newest: Date | string | null; n: number | string }>`
    select max(occurred_at) as newest, count(*) as n from raw_events_legacy`.execute(db);
  const { newest: newestAt, n } = newest.rows[0];
  if (Number(n) === 0) {
    await sql`drop table raw_events_legacy`.execute(db);
    return;
  }
  const newestMs = Math.max(new Date(newestAt!).getTime(), Date.now());
  const bound = new Date((Math.floor(newestMs / DAY_MS) + 1) * DAY_MS).toISOString();
  // Its rows keep platform and app version inside extra_metadata: the new columns stay null there.
  await sql`alter table raw_events_legacy add column platform text, add column app_version text,
    alter column extra_metadata drop not null`.execute(db);
  // Indexes that match the parent's, so attaching adopts them instead of building more.
  await sql`alter table raw_events_legacy drop constraint raw_events_legacy_pkey`.execute(db);
  await sql`alter table raw_events_legacy add constraint raw_events_legacy_pkey
    primary key (occurred_at, event_id)`.execute(db);
  await sql`create index raw_events_legacy_position_idx on raw_events_legacy (position)`
    .execute(db);
  await sql`drop index raw_events_legacy_user_idx`.execute(db);
  await sql`alter table raw_events attach partition raw_events_legacy
    for values from (minvalue) to (${sql.lit(bound)})`.execute(db);
}

/** Not supported: the rows would have to be copied back into one table. */
export function down(): Promise<void> {
  return Promise.reject(
    new Error("Cannot undo partitioning raw_events: restore a backup taken before the upgrade"),
  );
}
