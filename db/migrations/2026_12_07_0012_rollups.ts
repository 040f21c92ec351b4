/**
 * Rollups, so that a read costs what its answer costs and not what the history costs: a daily twin
 * of every hourly aggregate table, and narrow tables for the reads that need few dimensions
 * (pipeline totals, titles by region, the audience without titles, error codes by region), hourly
 * and daily. Every one takes the same additive deltas in the same flush as the hourly rows, so each
 * daily row is the sum of its day's hourly rows. Filled here from the hourly rows already stored.
 * Also indexes the hourly tables by hour where their key does not start with it, for retention.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

const COUNTS = `events bigint not null default 0, plays bigint not null default 0,
  errors bigint not null default 0, watch_time_ms bigint not null default 0`;
const DIMS = `content_id text not null, region text not null, platform text not null,
  app_version text not null, subscription_plan text not null`;
const DIM_NAMES = "content_id, region, platform, app_version, subscription_plan";
const AUDIENCE = "region, platform, app_version, subscription_plan";
const SUMS = "sum(events), sum(plays), sum(errors), sum(watch_time_ms)";
const DAY = "(date_trunc('day', hour at time zone 'UTC') at time zone 'UTC')";

/** Creates the rollup tables and fills them from the hourly rows. */
export async function up(db: Kysely<unknown>): Promise<void> {
  const run = (text: string) => sql.raw(text).execute(db);
  await run(`create table event_facts_daily (day timestamptz not null, ${DIMS}, ${COUNTS},
    primary key (day, ${DIM_NAMES}))`);
  await run(`create index event_facts_daily_content_idx on event_facts_daily (content_id, day)`);
  await run(`create table event_types_daily (day timestamptz not null, event_type text not null,
    events bigint not null default 0, late_events bigint not null default 0,
    primary key (day, event_type))`);
  await run(`create table error_codes_daily (day timestamptz not null, ${DIMS},
    error_code text not null, errors bigint not null default 0,
    primary key (day, ${DIM_NAMES}, error_code))`);
  await run(`create table device_facts_daily (device_id text not null, day timestamptz not null,
    ${COUNTS}, primary key (device_id, day))`);
  await run(`create index device_facts_daily_day_idx on device_facts_daily (day)`);
  await run(`create index device_facts_hourly_hour_idx on device_facts_hourly (hour)`);
  await run(`create table viewer_sketches_daily (scope text not null, day timestamptz not null,
    registers int[] not null, primary key (scope, day))`);
  await run(`create index viewer_sketches_daily_day_idx on viewer_sketches_daily (day)`);
  await run(`create index viewer_sketches_hourly_hour_idx on viewer_sketches_hourly (hour)`);
  await run(`create table flagged_events_daily (day timestamptz not null, rule text not null,
    region text not null, flagged_events bigint not null default 0,
    primary key (day, rule, region))`);
  await run(`create table consent_facts_daily (day timestamptz not null, region text not null,
    events bigint not null, signal_events bigint not null, primary key (day, region))`);
  for (const [unit, period] of [["hourly", "hour"], ["daily", "day"]]) {
    await run(`create table totals_${unit} (${period} timestamptz primary key, ${COUNTS})`);
    await run(`create table content_region_${unit} (${period} timestamptz not null,
      content_id text not null, region text not null, ${COUNTS},
      primary key (content_id, ${period}, region))`);
    await run(`create index content_region_${unit}_${period}_idx
      on content_region_${unit} (${period})`);
    await run(`create table audience_${unit} (${period} timestamptz not null,
      region text not null, platform text not null, app_version text not null,
      subscription_plan text not null, ${COUNTS}, primary key (${period}, ${AUDIENCE}))`);
    await run(`create index audience_${unit}_region_idx on audience_${unit} (region, ${period})`);
    await run(`create table region_error_codes_${unit} (${period} timestamptz not null,
      region text not null, error_code text not null, errors bigint not null default 0,
      primary key (region, ${period}, error_code))`);
    await run(`create index region_error_codes_${unit}_${period}_idx
      on region_error_codes_${unit} (${period})`);
  }

  await run(`insert into event_facts_daily select ${DAY}, ${DIM_NAMES}, ${SUMS}
    from event_facts_hourly group by 1, 2, 3, 4, 5, 6`);
  await run(`insert into event_types_daily select ${DAY}, event_type, sum(events),
    sum(late_events) from event_types_hourly group by 1, 2`);
  await run(`insert into error_codes_daily select ${DAY}, ${DIM_NAMES}, error_code, sum(errors)
    from error_codes_hourly group by 1, 2, 3, 4, 5, 6, 7`);
  await run(`insert into device_facts_daily select device_id, ${DAY}, ${SUMS}
    from device_facts_hourly group by 1, 2`);
  await run(`insert into viewer_sketches_daily
    select scope, day, coalesce(array_agg(m order by m), '{}') from (
      select scope, ${DAY} as day, max(v) as m
      from viewer_sketches_hourly, unnest(registers) as v group by 1, 2, v >> 8
    ) merged group by 1, 2`);
  await run(`insert into flagged_events_daily select ${DAY}, rule, region, sum(flagged_events)
    from flagged_events_hourly group by 1, 2, 3`);
  await run(`insert into consent_facts_daily select ${DAY}, region, sum(events),
    sum(signal_events) from consent_facts_hourly group by 1, 2`);
  for (const [unit, period] of [["hourly", "hour"], ["daily", "day"]]) {
    const time = period === "hour" ? "hour" : DAY;
    await run(`insert into totals_${unit} select ${time}, ${SUMS}
      from event_facts_hourly group by 1`);
    await run(`insert into content_region_${unit} select ${time}, content_id, region, ${SUMS}
      from event_facts_hourly group by 1, 2, 3`);
    await run(`insert into audience_${unit} select ${time}, ${AUDIENCE}, ${SUMS}
      from event_facts_hourly group by 1, 2, 3, 4, 5`);
    await run(`insert into region_error_codes_${unit} select ${time}, region, error_code,
      sum(errors) from error_codes_hourly group by 1, 2, 3`);
  }
}

/** Drops the rollups (the hourly tables keep everything they held). */
export async function down(db: Kysely<unknown>): Promise<void> {
  for (
    const table of [
      "event_facts_daily",
      "event_types_daily",
      "error_codes_daily",
      "device_facts_daily",
      "viewer_sketches_daily",
      "flagged_events_daily",
      "consent_facts_daily",
      "totals_hourly",
      "totals_daily",
      "content_region_hourly",
      "content_region_daily",
      "audience_hourly",
      "audience_daily",
      "region_error_codes_hourly",
      "region_error_codes_daily",
    ]
  ) {
    await sql`drop table ${sql.table(table)}`.execute(db);
  }
  await sql`drop index device_facts_hourly_hour_idx`.execute(db);
  await sql`drop index viewer_sketches_hourly_hour_idx`.execute(db);
}
