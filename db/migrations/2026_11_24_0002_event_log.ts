/**
 * Makes `raw_events` usable as the durable log: positions from a sequence, unique and indexed, so
 * shards can replay "everything after my checkpoint" in log order. Frozen once shipped.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Adds the position sequence and index. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create sequence raw_events_position_seq as bigint`.execute(db);
  await sql`select setval('raw_events_position_seq', greatest(
    (select coalesce(max(position), 0) from raw_events),
    (select coalesce(max(position), 0) from shard_checkpoints), 1))`.execute(db);
  await sql`alter table raw_events alter column position
    set default nextval('raw_events_position_seq')`.execute(db);
  await sql`create unique index raw_events_position_idx on raw_events (position)`.execute(db);
}

/** Removes the sequence and index. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index if exists raw_events_position_idx`.execute(db);
  await sql`alter table raw_events alter column position drop default`.execute(db);
  await sql`drop sequence if exists raw_events_position_seq`.execute(db);
}
