import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { type Harness, testPipelineOnEveryDatabase } from "../tests/_harness.ts";
import { makeWireEvent, type WireEvent } from "../tests/fixtures.ts";
import type { Database } from "./schema.ts";
import { splitRange } from "./rollups.ts";
import { getContentStats, getRegionStats, getSummary, type TimeRange } from "./stats_queries.ts";
import { getComplianceRegions } from "./queries.ts";
import { getTimeseries } from "./timeseries.ts";

const HOUR = 3_600_000;
const DAY = 86_400_000;

Deno.test("splitRange() reads whole UTC days from daily rows and only the edges from hourly rows", () => {
  const d = Date.UTC(2026, 11, 1);
  assert.deepEqual(splitRange(d + 5 * HOUR, d + 2 * DAY + 3 * HOUR), {
    days: { fromMs: d + DAY, toMs: d + 2 * DAY },
    hours: [{ fromMs: d + 5 * HOUR, toMs: d + DAY }, {
      fromMs: d + 2 * DAY,
      toMs: d + 2 * DAY + 3 * HOUR,
    }],
  });
  assert.deepEqual(splitRange(d, d + 3 * DAY), {
    days: { fromMs: d, toMs: d + 3 * DAY },
    hours: [],
  });
  assert.deepEqual(splitRange(d + HOUR, d + 5 * HOUR), {
    days: null,
    hours: [{ fromMs: d + HOUR, toMs: d + 5 * HOUR }],
  });
  assert.deepEqual(splitRange(undefined, undefined), {
    days: { fromMs: -Infinity, toMs: Infinity },
    hours: [],
  });
});

/** A deterministic pseudo-random sequence (no randomness in tests). */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Events over three and a half days up to now, late ones included, on a few titles and regions. */
function history(now: number): WireEvent[] {
  const random = prng(7);
  const start = Math.floor(now / HOUR) * HOUR - 84 * HOUR;
  const events: WireEvent[] = [];
  for (let i = 0; i < 1_200; i++) {
    const atMs = start + Math.floor(random() * (now - start - 60_000));
    const kind = random();
    events.push(makeWireEvent({
      event_id: `h-${i}`,
      user_id: `viewer-${Math.floor(random() * 60)}`,
      device_id: `tv-${Math.floor(random() * 60)}`,
      content_id: `title-${Math.floor(random() * 7)}`,
      region: ["DE", "FR", "US-CA", "JP"][Math.floor(random() * 4)],
      event_type: kind < 0.5 ? "PLAY" : kind < 0.8 ? "PAUSE" : kind < 0.95 ? "STOP" : "ERROR",
      error_code: kind >= 0.95 ? ["E1", "E2"][Math.floor(random() * 2)] : null,
      has_consent: random() > 0.1,
      extra_metadata: { platform: ["tizen", "webos", "roku"][Math.floor(random() * 3)] },
      atMs,
    }));
  }
  return events;
}

/** Sums straight from the hourly tables, as the reads did before the rollups. */
async function fromHourly(db: Kysely<Database>, range: TimeRange) {
  const where = sql`${
    range.fromMs === undefined
      ? sql`true`
      : sql`hour >= ${new Date(range.fromMs).toISOString()}::timestamptz`
  } and ${
    range.toMs === undefined
      ? sql`true`
      : sql`hour < ${new Date(range.toMs).toISOString()}::timestamptz`
  }`;
  const facts =
    (await sql<Record<string, unknown>>`select sum(events) as events, sum(plays) as plays,
    sum(errors) as errors, sum(watch_time_ms) as watch from event_facts_hourly where ${where}`
      .execute(db)).rows[0];
  const title =
    (await sql<Record<string, unknown>>`select sum(events) as events, sum(plays) as plays
    from event_facts_hourly where ${where} and content_id = 'title-3'`.execute(db)).rows[0];
  const region =
    (await sql<Record<string, unknown>>`select sum(events) as events, sum(errors) as errors
    from event_facts_hourly where ${where} and region = 'DE'`.execute(db)).rows[0];
  const codes = (await sql<Record<string, unknown>>`select sum(errors) as errors
    from error_codes_hourly where ${where} and region = 'DE'`.execute(db)).rows[0];
  const flagged = (await sql<Record<string, unknown>>`select sum(flagged_events) as n
    from flagged_events_hourly where ${where}`.execute(db)).rows[0];
  const n = (v: unknown) => Number(v ?? 0);
  return {
    events: n(facts.events),
    plays: n(facts.plays),
    errors: n(facts.errors),
    watch: n(facts.watch),
    titleEvents: n(title.events),
    titlePlays: n(title.plays),
    regionEvents: n(region.events),
    regionErrors: n(region.errors),
    regionCodes: n(codes.errors),
    flagged: n(flagged.n),
  };
}

/** Every daily and narrow rollup row equals the sum of the hourly rows it covers. */
async function assertRollupsMatchHourly(db: Kysely<Database>): Promise<void> {
  const day = sql.raw("(date_trunc('day', hour at time zone 'UTC') at time zone 'UTC')");
  const checks: Array<[string, ReturnType<typeof sql>]> = [
    [
      "event_facts_daily",
      sql`select ${day} as t, content_id, region, platform, app_version,
      subscription_plan, sum(events) e, sum(plays) p, sum(errors) r, sum(watch_time_ms) w
      from event_facts_hourly group by 1, 2, 3, 4, 5, 6 except select day, content_id, region,
      platform, app_version, subscription_plan, events, plays, errors, watch_time_ms
      from event_facts_daily`,
    ],
    [
      "totals_daily",
      sql`select ${day} as t, sum(events) e, sum(watch_time_ms) w
      from event_facts_hourly group by 1 except select day, events, watch_time_ms from totals_daily`,
    ],
    [
      "totals_hourly",
      sql`select hour, sum(events) e, sum(watch_time_ms) w from event_facts_hourly
      group by 1 except select hour, events, watch_time_ms from totals_hourly`,
    ],
    [
      "content_region_daily",
      sql`select ${day} as t, content_id, region, sum(events) e
      from event_facts_hourly group by 1, 2, 3 except select day, content_id, region, events
      from content_region_daily`,
    ],
    [
      "audience_hourly",
      sql`select hour, region, platform, sum(events) e from event_facts_hourly
      group by 1, 2, 3 except select hour, region, platform, sum(events) from audience_hourly
      group by 1, 2, 3`,
    ],
    [
      "dimension_hourly",
      sql`select hour, 'platform' as d, platform, sum(events) e, sum(errors) r
      from event_facts_hourly group by 1, 2, 3 except select hour, dimension, value, events, errors
      from dimension_hourly where dimension = 'platform'`,
    ],
    [
      "dimension_daily",
      sql`select ${day} as t, 'region' as d, region, sum(events) e
      from event_facts_hourly group by 1, 2, 3 except select day, dimension, value, events
      from dimension_daily where dimension = 'region'`,
    ],
    [
      "event_types_daily",
      sql`select ${day} as t, event_type, sum(events) e, sum(late_events) l
      from event_types_hourly group by 1, 2 except select day, event_type, events, late_events
      from event_types_daily`,
    ],
    [
      "region_error_codes_daily",
      sql`select ${day} as t, region, error_code, sum(errors) e
      from error_codes_hourly group by 1, 2, 3 except select day, region, error_code, errors
      from region_error_codes_daily`,
    ],
    [
      "device_facts_daily",
      sql`select device_id, ${day} as t, sum(events) e from device_facts_hourly
      group by 1, 2 except select device_id, day, events from device_facts_daily`,
    ],
    [
      "flagged_events_daily",
      sql`select ${day} as t, rule, region, sum(flagged_events) n
      from flagged_events_hourly group by 1, 2, 3 except select day, rule, region, flagged_events
      from flagged_events_daily`,
    ],
  ];
  for (const [table, query] of checks) {
    const { rows } = await query.execute(db);
    assert.deepEqual(rows, [], `${table} differs from the sum of its hourly rows`);
  }
}

async function equivalence(h: Harness): Promise<void> {
  const now = Date.now();
  const events = history(now);
  // In arrival order unlike event order, in several batches, the late ones included.
  await h.send(events.filter((_, i) => i % 3 !== 0));
  await h.send(events.filter((_, i) => i % 3 === 0).toReversed());
  await h.flush();
  const db = h.pipeline.db;
  await assertRollupsMatchHourly(db);

  const random = prng(11);
  const firstHour = Math.floor(now / HOUR) * HOUR - 90 * HOUR;
  const ranges: TimeRange[] = [{}, { fromMs: firstHour }, { toMs: firstHour + 50 * HOUR }];
  for (let i = 0; i < 12; i++) {
    const fromMs = firstHour + Math.floor(random() * 96) * HOUR;
    ranges.push({ fromMs, toMs: fromMs + (1 + Math.floor(random() * 80)) * HOUR });
  }
  for (const range of ranges) {
    const label = JSON.stringify(range);
    const expected = await fromHourly(db, range);
    const summary = await getSummary(db, range);
    assert.equal(summary.total_events, expected.events, `summary events ${label}`);
    assert.equal(summary.plays, expected.plays, `summary plays ${label}`);
    assert.equal(summary.errors, expected.errors, `summary errors ${label}`);
    assert.equal(summary.watch_time_ms, expected.watch, `summary watch ${label}`);
    const title = await getContentStats(db, "title-3", range);
    assert.deepEqual(
      [title?.events, title?.plays],
      [expected.titleEvents, expected.titlePlays],
      label,
    );
    const region = await getRegionStats(db, "DE", true, range);
    assert.deepEqual([region?.events, region?.errors], [
      expected.regionEvents,
      expected.regionErrors,
    ], label);
    const codes = Object.values(region?.errors_by_code ?? {}).reduce((a, b) => a + b, 0);
    assert.equal(codes, expected.regionCodes, `error codes ${label}`);
    const compliance = await getComplianceRegions(db, () => true, range);
    const flagged = compliance.regions.reduce(
      (sum, r) => sum + Object.values(r.flagged_events).reduce((a, b) => a + b, 0),
      0,
    );
    assert.equal(flagged, expected.flagged, `flagged events ${label}`);
  }
  // Series: hourly points add up to the same totals as the day's points and the summary.
  const dayStart = Math.floor(now / DAY) * DAY - 3 * DAY;
  const series = (
    bucket: "1h" | "1d",
    metric: "events" | "plays",
    groupBy: "region" | "content_id",
    limit: number,
  ) =>
    getTimeseries(db, {
      metric,
      bucket,
      fromMs: dayStart,
      toMs: dayStart + 4 * DAY,
      groupBy,
      limit,
    });
  const byPlatform = await getTimeseries(db, {
    metric: "errors",
    bucket: "1h",
    fromMs: dayStart,
    toMs: dayStart + 4 * DAY,
    groupBy: "platform",
    limit: 50,
  });
  const byHour = await series("1h", "events", "region", 50);
  const byDay = await series("1d", "events", "region", 50);
  const total = (r: typeof byHour) =>
    r.series.reduce((sum, s) => sum + s.points.reduce((a, p) => a + p.value, 0), 0);
  const expected = await fromHourly(db, { fromMs: dayStart, toMs: dayStart + 4 * DAY });
  assert.equal(total(byHour), expected.events);
  assert.equal(total(byPlatform), expected.errors);
  assert.equal(total(byDay), expected.events);
  const top = await series("1d", "plays", "content_id", 2);
  assert.equal(top.series.length, 2, "only the two titles with the most plays");

  // An erasure moves the user's TVs' rows under the pseudonym, hourly and daily alike.
  const deletion =
    await (await h.post("/privacy/requests", { user_id: "viewer-1", type: "deletion" }))
      .json();
  assert.equal(deletion.type, "deletion");
  await h.pipeline.eraser.idle();
  await assertRollupsMatchHourly(db);
}

testPipelineOnEveryDatabase(
  "rollups",
  "reads from daily and hourly rollups equal the sums of the hourly rows over any range",
  { queue: "postgres" },
  equivalence,
);
