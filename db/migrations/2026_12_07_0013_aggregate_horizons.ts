/**
 * Where each level of aggregates now begins: retention of hourly and daily rows records the first
 * bucket it still holds, so a read of a range that reaches further back says it is incomplete
 * instead of answering a silent zero. Also indexes `entity_risk` by its last update, for its own
 * retention.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Creates `aggregate_horizons`. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table aggregate_horizons (
    level text primary key,
    first_held timestamptz not null
  )`.execute(db);
  await sql`create index entity_risk_updated_idx on entity_risk (updated_at)`.execute(db);
}

/** Drops it. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index entity_risk_updated_idx`.execute(db);
  await sql`drop table aggregate_horizons`.execute(db);
}
