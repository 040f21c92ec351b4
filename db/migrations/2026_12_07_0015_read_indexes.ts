/**
 * Indexes the documented reads were missing, found by checking their plans with sequential scans
 * disabled (`db/plans_test.ts`): flags by event time (the ranged compliance reads and retention).
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Creates the indexes. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create index risk_flags_occurred_idx on risk_flags (occurred_at, id)`.execute(db);
}

/** Drops them. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop index risk_flags_occurred_idx`.execute(db);
}
