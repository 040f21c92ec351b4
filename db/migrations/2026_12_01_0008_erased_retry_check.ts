/**
 * A check that COPY's group runs after its rows, in the same statement list: an event that was
 * erased and is now sent again must stay deleted, so the whole group is refused (SQLSTATE `OT001`)
 * and goes to the exact insert path, which counts such retries as duplicates.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Creates `refuse_erased_retries(first_position, last_position)`. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create function refuse_erased_retries(first_position bigint, last_position bigint)
    returns void language plpgsql as $$
    begin
      if exists (select 1 from erased_events) and exists (
        select 1 from raw_events r join erased_events e on e.event_hash = md5(r.event_id)
        where r.position between first_position and last_position
      ) then
        raise exception 'an erased event was sent again' using errcode = 'OT001';
      end if;
    end $$`.execute(db);
}

/** Drops the function. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function refuse_erased_retries(bigint, bigint)`.execute(db);
}
