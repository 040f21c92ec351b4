/**
 * Quality of experience: the event's optional QoE fields as `raw_events` columns (null when not
 * sent: a plain event's row does not grow), QoE aggregates by the hour and day a view started and
 * its title, region, platform, app version, plan and CDN, a startup-time histogram beside them, and
 * what each TV's views were counted as, so a restart or a hand-over carries on with them.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

const DIMS = `content_id text not null, region text not null, platform text not null,
  app_version text not null, subscription_plan text not null, cdn text not null`;
const DIM_KEY = "content_id, region, platform, app_version, subscription_plan, cdn";
const MEASURES = [
  "views",
  "started_views",
  "ebvs",
  "short_exits",
  "vsf_business",
  "vsf_technical",
  "vpf",
  "startup_views",
  "startup_ms",
  "rebuffers",
  "rebuffer_ms",
  "playing_ms",
  "bitrate_kbps_ms",
  "bitrate_ms",
  "upscale_ms",
  "warnings",
  "seek_stall_ms",
];

/** Adds the columns and tables. */
export async function up(db: Kysely<unknown>): Promise<void> {
  // Nullable columns without a default: a catalog change, no rewrite of the partitions.
  await sql`alter table raw_events add column view_id text, add column playhead_ms integer,
    add column bitrate_kbps integer, add column rendition_height integer,
    add column player_height integer, add column fatal boolean, add column cdn text`.execute(db);
  const measures = MEASURES.map((m) => `${m} bigint not null default 0`).join(", ");
  for (const [unit, period] of [["hourly", "hour"], ["daily", "day"]]) {
    await sql.raw(`create table qoe_${unit} (${period} timestamptz not null, ${DIMS}, ${measures},
      primary key (${period}, ${DIM_KEY}))`).execute(db);
    await sql.raw(`create table qoe_startup_${unit} (${period} timestamptz not null, ${DIMS},
      bucket smallint not null, views bigint not null default 0,
      primary key (${period}, ${DIM_KEY}, bucket))`).execute(db);
  }
  // One row per view a TV's held events make: a flush rewrites only the views that changed.
  await sql`create table open_views (
    user_shard integer not null,
    user_id text not null,
    device_id text not null,
    view_key text not null,
    outcome jsonb not null,
    updated_at timestamptz not null default now(),
    primary key (user_shard, user_id, device_id, view_key))`.execute(db);
  await sql`create index open_views_user_idx on open_views (user_id)`.execute(db);
}

/** Drops them. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table open_views`.execute(db);
  for (const unit of ["hourly", "daily"]) {
    await sql.raw(`drop table qoe_${unit}`).execute(db);
    await sql.raw(`drop table qoe_startup_${unit}`).execute(db);
  }
  await sql`alter table raw_events drop column view_id, drop column playhead_ms,
    drop column bitrate_kbps, drop column rendition_height, drop column player_height,
    drop column fatal, drop column cdn`.execute(db);
}
