/**
 * Single-dimension rollups: counts per region, platform, app version and plan alone, hourly and
 * daily, keyed (dimension, time, value). A series grouped or filtered by one of them reads a row
 * per value and bucket, where the audience rollup holds every combination of the four. Filled here
 * from the fact rows already stored.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

const COUNTS = `events bigint not null default 0, plays bigint not null default 0,
  errors bigint not null default 0, watch_time_ms bigint not null default 0`;
const SUMS = "sum(events), sum(plays), sum(errors), sum(watch_time_ms)";
const DIMENSIONS = ["region", "platform", "app_version", "subscription_plan"];

/** Creates `dimension_hourly` and `dimension_daily` and fills them. */
export async function up(db: Kysely<unknown>): Promise<void> {
  for (
    const [unit, period, source] of [
      ["hourly", "hour", "event_facts_hourly"],
      ["daily", "day", "event_facts_daily"],
    ]
  ) {
    await sql.raw(`create table dimension_${unit} (dimension text not null, value text not null,
      ${period} timestamptz not null, ${COUNTS}, primary key (dimension, ${period}, value))`)
      .execute(db);
    await sql.raw(`create index dimension_${unit}_${period}_idx on dimension_${unit} (${period})`)
      .execute(db);
    for (const dimension of DIMENSIONS) {
      await sql.raw(`insert into dimension_${unit}
        select '${dimension}', ${dimension}, ${period}, ${SUMS} from ${source}
        group by 2, 3`).execute(db);
    }
  }
}

/** Drops them. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table dimension_hourly`.execute(db);
  await sql`drop table dimension_daily`.execute(db);
}
