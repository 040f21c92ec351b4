/**
 * The `qoe` rule's windows: per window of view start time, title, CDN and region, the counts the
 * rule judges (additive deltas, as every QoE row) and up to ten troubled views for evidence. A row
 * whose `revision` is ahead of `checked_revision` changed since the rule last judged it.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Adds the table. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table qoe_windows (
    window_start timestamptz not null,
    content_id text not null,
    cdn text not null,
    region text not null,
    views bigint not null default 0,
    vsf_technical bigint not null default 0,
    rebuffer_ms bigint not null default 0,
    playing_ms bigint not null default 0,
    startup_views bigint not null default 0,
    slow_startups bigint not null default 0,
    very_slow_startups bigint not null default 0,
    view_refs text[] not null default '{}',
    revision bigint not null default 1,
    checked_revision bigint not null default 0,
    primary key (window_start, content_id, cdn, region))`.execute(db);
  await sql`create index qoe_windows_unchecked_idx on qoe_windows (window_start)
    where revision > checked_revision`.execute(db);
}

/** Drops it. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table qoe_windows`.execute(db);
}
