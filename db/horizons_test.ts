import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { testOnEveryDatabase } from "../tests/_harness.ts";
import { completenessOf, loadHorizons, pruneAggregates } from "./horizons.ts";
import type { Database } from "./schema.ts";
import { getContentStats, getSummary } from "./stats_queries.ts";
import { getTimeseries } from "./timeseries.ts";

const HOUR = 3_600_000;
const DAY = 86_400_000;
const NOW = Date.UTC(2027, 5, 15, 12, 0, 0);
const RETENTION = { hourlyRetentionDays: 35, dailyRetentionDays: 400, entityRetentionDays: 90 };

/** One event's worth of rows in every level that a flush would write, at `atMs`. */
async function seed(db: Kysely<Database>, atMs: number, title: string): Promise<void> {
  const hour = new Date(Math.floor(atMs / HOUR) * HOUR).toISOString();
  const day = new Date(Math.floor(atMs / DAY) * DAY).toISOString();
  const counts = sql`1, 1, 0, 1000`;
  await sql`insert into event_facts_hourly values (${hour}, ${title}, 'DE', 'tizen', '1', 'basic', ${counts})`
    .execute(db);
  await sql`insert into event_facts_daily values (${day}, ${title}, 'DE', 'tizen', '1', 'basic', ${counts})`
    .execute(db);
  await sql`insert into event_types_hourly values (${hour}, 'PLAY', 1, 0) on conflict (hour, event_type) do update set events = event_types_hourly.events + 1`
    .execute(db);
  await sql`insert into event_types_daily values (${day}, 'PLAY', 1, 0) on conflict (day, event_type) do update set events = event_types_daily.events + 1`
    .execute(db);
  for (const [table, time] of [["totals_hourly", hour], ["totals_daily", day]]) {
    await sql`insert into ${sql.table(table)} values (${time}, ${counts})`.execute(db);
  }
  await sql`insert into content_region_hourly values (${hour}, ${title}, 'DE', ${counts})`.execute(
    db,
  );
  await sql`insert into content_region_daily values (${day}, ${title}, 'DE', ${counts})`.execute(
    db,
  );
  await sql`insert into device_facts_hourly values (${"tv-" + title}, ${hour}, ${counts})`.execute(
    db,
  );
  await sql`insert into device_facts_daily values (${"tv-" + title}, ${day}, ${counts})`.execute(
    db,
  );
}

testOnEveryDatabase(
  "retention",
  "aggregates past their retention go, reads say what they no longer hold, never a silent zero",
  async (db) => {
    await seed(db, NOW - 2 * DAY, "recent");
    await seed(db, NOW - 50 * DAY, "last-seen-50-days-ago");
    await seed(db, NOW - 100 * DAY, "last-seen-100-days-ago");
    await seed(db, NOW - 500 * DAY, "last-seen-500-days-ago");
    // The all-time watch time of before the hourly upgrade (its epoch bucket) stays.
    await sql`insert into event_facts_daily values ('epoch', 'legacy', 'DE', 'unknown', 'unknown',
      'unknown', 0, 0, 0, 7000)`.execute(db);
    await sql`insert into totals_daily values ('epoch', 0, 0, 0, 7000)`.execute(db);
    await sql`insert into entity_risk (entity_type, entity_id, level, level_rank, flag_count,
      updated_at) values ('user', 'old', 'HIGH', 3, 1, ${new Date(NOW - 100 * DAY).toISOString()}),
      ('user', 'new', 'HIGH', 3, 1, ${new Date(NOW - DAY).toISOString()})`.execute(db);
    assert.deepEqual(await loadHorizons(db), {});
    assert.equal((await getSummary(db)).complete, true, "nothing deleted yet: all-time is whole");

    const counts = await pruneAggregates(db, NOW, RETENTION);
    // Hourly rows older than 35 days (3 events x 4 hourly tables), daily ones older than 400 days
    // (4 tables), TV rows older than 90 days (2 events x hourly + daily), one entity row.
    assert.deepEqual(counts, {
      hourly_rows: 12,
      daily_rows: 4,
      device_rows: 4,
      entity_risk: 1,
      anomaly_rows: 0,
    });
    const horizons = await loadHorizons(db);
    assert.equal(horizons.hourly, Math.floor((NOW - 35 * DAY) / HOUR) * HOUR);
    assert.equal(horizons.daily, Math.floor((NOW - 400 * DAY) / DAY) * DAY);

    // All-time: what is kept, including the pre-upgrade bucket, and that it is not everything.
    const allTime = await getSummary(db);
    assert.equal(allTime.total_events, 3);
    assert.equal(allTime.watch_time_ms, 3 * 1000 + 7000, "the pre-upgrade bucket is kept");
    assert.deepEqual([allTime.complete, allTime.first_bucket_held], [
      false,
      new Date(horizons.daily!).toISOString(),
    ]);
    // The last 30 days are whole; a range starting mid-day 60 days ago reads whole days from the
    // daily rows but its first hours are gone.
    const recent = await getSummary(db, { fromMs: NOW - 30 * DAY - 12 * HOUR, toMs: NOW });
    assert.deepEqual([recent.total_events, recent.complete], [1, true]);
    const back = await getSummary(db, { fromMs: NOW - 60 * DAY - 6 * HOUR, toMs: NOW });
    assert.equal(back.total_events, 2, "the title of 50 days ago counts from its daily row");
    assert.deepEqual([back.complete, back.first_bucket_held], [
      false,
      new Date(NOW - 60 * DAY + 12 * HOUR).toISOString(),
    ]);
    // A title unseen for 50 days is still known (its daily rows are kept): not a 404.
    assert.notEqual(await getContentStats(db, "last-seen-50-days-ago"), null);
    assert.equal(await getContentStats(db, "last-seen-500-days-ago"), null);
    // Hourly series reaching past the hourly horizon say so.
    const dayStart = Math.floor(NOW / DAY) * DAY;
    const series = await getTimeseries(db, {
      metric: "events",
      bucket: "1h",
      fromMs: dayStart - 40 * DAY,
      toMs: dayStart,
      limit: 10,
    });
    assert.deepEqual([series.complete, series.first_bucket_held], [
      false,
      new Date(horizons.hourly!).toISOString(),
    ]);
    assert.deepEqual(
      completenessOf(horizons, { fromMs: dayStart - 10 * DAY, toMs: dayStart }, "hourly"),
      { complete: true, first_bucket_held: null },
    );
  },
);

testOnEveryDatabase(
  "retention",
  "anomaly windows go after 2 days, hourly copies after the baseline weeks and one more, recovered incidents with the daily rows",
  async (db) => {
    const row = (table: string, column: string, atMs: number) =>
      sql`insert into ${sql.table(table)} (${sql.ref(column)}, platform, region, app_version,
        subscription_plan, events) values (${new Date(atMs).toISOString()}::timestamptz, 'tizen',
        'DE', '7.1', 'basic', 10)`.execute(db);
    await row("anomaly_cube", "window_start", NOW - DAY);
    await row("anomaly_cube", "window_start", NOW - 3 * DAY);
    await row("anomaly_cube_hourly", "hour", NOW - 4 * 7 * DAY);
    await row("anomaly_cube_hourly", "hour", NOW - 6 * 7 * DAY);
    const incident = (recoveredMs: number | null) =>
      sql`insert into incidents (series, key, kind, level, started_at, opened_at, last_window,
        baseline, expected, observed, band_low, band_high, z, state, recovered_at)
      values ('volume:platform', ${`k${recoveredMs}`}, 'count', 'LOW', ${
        new Date(NOW - 500 * DAY).toISOString()
      }::timestamptz, ${new Date(NOW - 500 * DAY).toISOString()}::timestamptz, ${
        new Date(NOW - 500 * DAY).toISOString()
      }::timestamptz, 'history', 1, 0, 0, 2, -5, ${recoveredMs === null ? "active" : "recovered"},
        ${recoveredMs === null ? null : new Date(recoveredMs).toISOString()}::timestamptz)`
        .execute(db);
    await incident(NOW - 450 * DAY);
    await incident(NOW - 10 * DAY);
    await incident(null);
    const counts = await pruneAggregates(db, NOW, { ...RETENTION, anomaly: { baselineWeeks: 4 } });
    assert.equal(counts.anomaly_rows, 3);
    const incidents = await sql<{ n: string | number }>`select count(*) as n from incidents`
      .execute(db);
    assert.equal(Number(incidents.rows[0].n), 2, "the recent and the active incident stay");
    const left = await sql<{ n: string | number }>`select (select count(*) from anomaly_cube) +
      (select count(*) from anomaly_cube_hourly) as n`.execute(db);
    assert.equal(Number(left.rows[0].n), 2, "the recent window and the 4-week-old hour stay");
  },
);
