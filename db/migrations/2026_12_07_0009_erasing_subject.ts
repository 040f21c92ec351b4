/**
 * A deletion names its user by pseudonym from the moment it is filed; the id itself is kept apart,
 * in `erasing_user_id`, only while the erasure runs (it is needed to find the user's rows, also after
 * a restart) and cleared when the erasure completes.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Adds `privacy_requests.erasing_user_id`. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table privacy_requests add column erasing_user_id text`.execute(db);
}

/** Drops the column. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table privacy_requests drop column erasing_user_id`.execute(db);
}
