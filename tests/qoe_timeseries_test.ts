/**
 * QoE metrics of `/stats/timeseries` end to end: views in two hours of one day sent through the
 * pipeline, read back per hour, per CDN, per day and filtered, as computed by hand; the
 * combinations the QoE rows cannot answer are refused with the reason.
 */
import assert from "node:assert/strict";
import { type Harness, testPipelineOnEveryDatabase } from "./_harness.ts";
import type { WireEvent } from "./fixtures.ts";
import { viewEventMaker } from "./_qoe_events.ts";
import { ROUTE_DOCS } from "../routes/openapi.ts";

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** Relative error of a startup percentile: half a 10% histogram bucket (see `docs/qoe.md`). */
const STARTUP_ERROR = 0.049;

/** One event of a view on TV `tv` (its view id), `ms` after `t0`. */
const ev = viewEventMaker("qt", (tv) => ({ view_id: tv }));

/**
 * Eight views of day `day` (a UTC midnight):
 *
 * Hour 10: tv-1 (cdn-a) starts in 1 s, plays 60 s at 4000 kbps; tv-2 (cdn-a) exits after 5 s
 * (EBVS); tv-3 (cdn-b) starts in 3 s, plays 10 s, stalls 4 s, plays 16 s at 2000 kbps; tv-4 (cdn-b,
 * webos, FR) fails to start (technical VSF).
 *
 * Hour 14: tv-5 (cdn-a) starts in 2 s, plays 30 s at 3000 kbps, then fails (VPF); tv-6 (cdn-a,
 * title-r) starts in 1.5 s, plays 20 s at 3000 kbps; tv-7 (cdn-a) starts 10 s before 15:00, in
 * 0.5 s, and plays 30 s at 3000 kbps into hour 15: counted in hour 14; tv-8 (cdn-a) leaves within
 * 1 s: a view, not started, and not an exit before video start.
 */
function views(day: number): WireEvent[] {
  const h10 = day + 10 * HOUR + 5 * 60_000;
  const h14 = day + 14 * HOUR + 5 * 60_000;
  const h15 = day + 15 * HOUR - 10_000;
  const elsewhere = { cdn: "cdn-b", region: "FR", extra_metadata: { platform: "webos" } };
  return [
    ev(h10, "tv-1", 0, "PLAY_REQUEST"),
    ev(h10, "tv-1", 1_000, "FIRST_FRAME", { bitrate_kbps: 4_000 }),
    ev(h10, "tv-1", 61_000, "STOP"),
    ev(h10, "tv-2", 0, "PLAY_REQUEST"),
    ev(h10, "tv-2", 5_000, "STOP"),
    ev(h10, "tv-3", 0, "PLAY_REQUEST", { cdn: "cdn-b" }),
    ev(h10, "tv-3", 3_000, "FIRST_FRAME", { cdn: "cdn-b", bitrate_kbps: 2_000 }),
    ev(h10, "tv-3", 13_000, "REBUFFER_START", { cdn: "cdn-b" }),
    ev(h10, "tv-3", 17_000, "REBUFFER_END", { cdn: "cdn-b" }),
    ev(h10, "tv-3", 33_000, "STOP", { cdn: "cdn-b" }),
    ev(h10, "tv-4", 0, "PLAY_REQUEST", elsewhere),
    ev(h10, "tv-4", 2_000, "ERROR", { ...elsewhere, error_code: "DRM_LICENSE_FAILED" }),
    ev(h14, "tv-5", 0, "PLAY_REQUEST"),
    ev(h14, "tv-5", 2_000, "FIRST_FRAME", { bitrate_kbps: 3_000 }),
    ev(h14, "tv-5", 32_000, "ERROR", { error_code: "NETWORK_LOST" }),
    ev(h14, "tv-6", 0, "PLAY_REQUEST", { content_id: "title-r" }),
    ev(h14, "tv-6", 1_500, "FIRST_FRAME", { content_id: "title-r", bitrate_kbps: 3_000 }),
    ev(h14, "tv-6", 21_500, "STOP", { content_id: "title-r" }),
    ev(h15, "tv-7", 0, "PLAY_REQUEST"),
    ev(h15, "tv-7", 500, "FIRST_FRAME", { bitrate_kbps: 3_000 }),
    ev(h15, "tv-7", 30_500, "STOP"),
    ev(h14, "tv-8", 60_000, "PLAY_REQUEST"),
    ev(h14, "tv-8", 60_500, "STOP"),
  ];
}

interface Series {
  metric: string;
  series: Array<{ key: string | null; points: Array<{ t: string; value: number | null }> }>;
}

/** The series of a query, checked against the documented 200 schema. */
async function series(h: Harness, query: string): Promise<Series> {
  const body = await h.json<Series>(`/stats/timeseries?${query}`);
  const route = ROUTE_DOCS.find((r) => r.method === "get" && r.path === "/stats/timeseries");
  const parsed = route?.responses[200]?.schema?.safeParse(body);
  assert.ok(parsed?.success, `${query}: not the documented body: ${JSON.stringify(body)}`);
  return body;
}

/** The values of each series, by key. */
function valuesOf(s: Series): Record<string, Array<number | null>> {
  return Object.fromEntries(s.series.map((x) => [String(x.key), x.points.map((p) => p.value)]));
}

/** `from` and `to` of the hours 10 to 16 (exclusive) of `day`. */
const hours = (day: number) =>
  `bucket=1h&from=${new Date(day + 10 * HOUR).toISOString()}&to=${
    new Date(day + 16 * HOUR).toISOString()
  }`;

/** Asserts `actual` is within the startup percentile error of `exact` ms. */
function assertStartup(actual: number | null, exact: number, what: string): void {
  assert.ok(
    actual !== null && Math.abs(actual - exact) <= exact * STARTUP_ERROR,
    `${what}: ${actual}, expected ${exact} within ${STARTUP_ERROR * 100}%`,
  );
}

/** A UTC day wholly in the past and within the event age limit: yesterday. */
const yesterday = () => Math.floor((Date.now() - DAY) / DAY) * DAY;

// Two-day lateness: the views of yesterday count however far the watermark has moved.
const LATE_OK = { allowedLatenessMs: 2 * DAY };

testPipelineOnEveryDatabase(
  "qoe",
  "QoE series per hour: views and rates of each hour as computed by hand",
  LATE_OK,
  async (h) => {
    const day = yesterday();
    await h.send(views(day));
    await h.flush();
    const range = hours(day);
    const one = async (metric: string) => valuesOf(await series(h, `metric=${metric}&${range}`));
    // Hours 10, 11, 12, 13, 14, 15: views in 10 and 14 only (tv-7 in 14, where it started).
    assert.deepEqual(await one("views"), { null: [4, 0, 0, 0, 4, 0] });
    assert.deepEqual(await one("ebvs_rate"), { null: [0.25, null, null, null, 0, null] });
    assert.deepEqual(await one("vsf_rate"), { null: [0.25, null, null, null, 0, null] });
    // tv-1 and tv-3 started in hour 10, none failed; tv-5 of the 3 started in 14 (not of its 4
    // views) failed.
    assert.deepEqual(await one("vpf_rate"), { null: [0, null, null, null, 0.3333, null] });
    // 4 s stalled of 60 + 26 + 4 s; none in 14.
    assert.deepEqual(await one("rebuffer_ratio"), { null: [0.0444, null, null, null, 0, null] });
    // (4000 x 60 s + 2000 x 26 s) / 86 s = 3395.3; 3000 throughout 14.
    assert.deepEqual(await one("avg_bitrate_kbps"), {
      null: [3_395, null, null, null, 3_000, null],
    });
    // Startups: 1000 and 3000 ms in hour 10; 2000, 1500 and 500 ms in 14 (nearest rank).
    const p50 = (await one("startup_p50")).null;
    assertStartup(p50[0], 1_000, "p50 of hour 10");
    assertStartup(p50[4], 1_500, "p50 of hour 14");
    assert.deepEqual([p50[1], p50[2], p50[3], p50[5]], [null, null, null, null]);
    const p95 = (await one("startup_p95")).null;
    assertStartup(p95[0], 3_000, "p95 of hour 10");
    assertStartup(p95[4], 2_000, "p95 of hour 14");
    // Each hour agrees with /stats/qoe over that hour.
    const qoe = await h.json<{ views: number; exits_before_video_start: { rate: number } }>(
      `/stats/qoe?from=${new Date(day + 10 * HOUR).toISOString()}&to=${
        new Date(day + 11 * HOUR).toISOString()
      }`,
    );
    assert.equal(qoe.views, 4);
    assert.equal(qoe.exits_before_video_start.rate, 0.25);
  },
);

testPipelineOnEveryDatabase(
  "qoe",
  "QoE series grouped by CDN, title and region, filtered, and per day",
  LATE_OK,
  async (h) => {
    const day = yesterday();
    await h.send(views(day));
    await h.flush();
    const range = hours(day);
    const grouped = async (query: string) => {
      const s = await series(h, `${query}&${range}`);
      return { keys: s.series.map((x) => x.key), values: valuesOf(s) };
    };

    // One series per CDN, the most views first (cdn-a: 6, cdn-b: 2).
    assert.deepEqual(await grouped("metric=views&group_by=cdn"), {
      keys: ["cdn-a", "cdn-b"],
      values: { "cdn-a": [2, 0, 0, 0, 4, 0], "cdn-b": [2, 0, 0, 0, 0, 0] },
    });
    assert.deepEqual((await grouped("metric=ebvs_rate&group_by=cdn")).values, {
      "cdn-a": [0.5, null, null, null, 0, null],
      "cdn-b": [0, null, null, null, null, null],
    });
    // cdn-b: 4 s stalled of 26 + 4 s; 2000 kbps against cdn-a's 4000.
    assert.deepEqual((await grouped("metric=rebuffer_ratio&group_by=cdn")).values, {
      "cdn-a": [0, null, null, null, 0, null],
      "cdn-b": [0.1333, null, null, null, null, null],
    });
    assert.deepEqual((await grouped("metric=avg_bitrate_kbps&group_by=cdn")).values, {
      "cdn-a": [4_000, null, null, null, 3_000, null],
      "cdn-b": [2_000, null, null, null, null, null],
    });
    // Groups of a rate are ranked by views: cdn-a (6 views, no VSF) before cdn-b (1 VSF of 2).
    assert.deepEqual(await grouped("metric=vsf_rate&group_by=cdn&limit=1"), {
      keys: ["cdn-a"],
      values: { "cdn-a": [0, null, null, null, 0, null] },
    });
    assert.deepEqual((await grouped("metric=vsf_rate&group_by=region")).values, {
      DE: [0, null, null, null, 0, null],
      FR: [1, null, null, null, null, null],
    });
    assert.deepEqual((await grouped("metric=views&group_by=content_id")).values, {
      "title-q": [4, 0, 0, 0, 3, 0],
      "title-r": [0, 0, 0, 0, 1, 0],
    });

    // Filters: tv-4 alone is webos and FR; tv-6 alone is title-r.
    assert.deepEqual((await grouped("metric=vsf_rate&platform=TIZEN")).values, {
      null: [0, null, null, null, 0, null],
    });
    assert.deepEqual((await grouped("metric=vsf_rate&region=FR")).values, {
      null: [1, null, null, null, null, null],
    });
    assert.deepEqual((await grouped("metric=views&content_id=title-r")).values, {
      null: [0, 0, 0, 0, 1, 0],
    });
    assert.deepEqual((await grouped("metric=ebvs_rate&content_id=nothing")).values, {
      null: [null, null, null, null, null, null],
    });

    // The day: its views are the sum of its hours, its rates pool them (not the mean of hours).
    const dayRange = `bucket=1d&from=${new Date(day).toISOString()}&to=${
      new Date(day + DAY).toISOString()
    }`;
    const daily = async (metric: string) =>
      (await series(h, `metric=${metric}&${dayRange}`)).series[0].points.map((p) => p.value);
    assert.deepEqual(await daily("views"), [4 + 4]);
    assert.deepEqual(await daily("ebvs_rate"), [0.125], "1 of 8");
    assert.deepEqual(await daily("vsf_rate"), [0.125], "1 of 8");
    assert.deepEqual(await daily("vpf_rate"), [0.2], "1 of 5 started");
    assert.deepEqual(await daily("rebuffer_ratio"), [0.0235], "4 s of 166 + 4 s");
    assert.deepEqual(await daily("avg_bitrate_kbps"), [3_205], "532,000 kbps s / 166 s");
    assertStartup((await daily("startup_p50"))[0], 1_500, "p50 of the day");
    assertStartup((await daily("startup_p95"))[0], 3_000, "p95 of the day");
    const byCdn = await series(h, `metric=views&group_by=cdn&${dayRange}`);
    assert.deepEqual(valuesOf(byCdn), { "cdn-a": [6], "cdn-b": [2] });
  },
);

/** Asserts a query answers 400 with an error (or issue) that mentions every one of `words`. */
async function assertRefused(h: Harness, query: string, words: string[]): Promise<void> {
  const res = await h.get(`/stats/timeseries?${query}`);
  const body: { error: string; issues: Array<{ message: string }> } = await res.json();
  assert.equal(res.status, 400, `${query}: ${JSON.stringify(body)}`);
  const reason = [body.error, ...body.issues.map((i) => i.message)].join("; ");
  for (const word of words) {
    assert.ok(reason.includes(word), `${query}: "${reason}" lacks "${word}"`);
  }
}

testPipelineOnEveryDatabase(
  "qoe",
  "QoE series refuse device_id and error_code, and cdn is for QoE metrics only",
  {},
  async (h) => {
    const range = hours(yesterday());
    await assertRefused(h, `metric=plays&group_by=cdn&${range}`, ["cdn", "QoE", "plays"]);
    await assertRefused(h, `metric=unique_viewers&group_by=cdn&${range}`, ["cdn", "QoE"]);
    await assertRefused(h, `metric=views&device_id=tv-1&${range}`, ["device_id", "views"]);
    await assertRefused(h, `metric=ebvs_rate&group_by=error_code&${range}`, ["error_code"]);
    await assertRefused(h, `metric=vsf&${range}`, ["metric", "vsf_rate"]);
    // The other metrics still read as before.
    const plays = await series(h, `metric=plays&group_by=region&${range}`);
    assert.deepEqual(plays.series, []);
  },
);
