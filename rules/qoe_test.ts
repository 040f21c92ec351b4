import assert from "node:assert/strict";
import {
  bucketValue,
  businessErrorMatcher,
  compareViewEvents,
  histogramPercentile,
  outcomeOf,
  QOE,
  startupBucket,
  type ViewDims,
  type ViewEvent,
  viewsOf,
} from "./qoe.ts";

const DIMS: ViewDims = {
  contentId: "title-1",
  region: "DE",
  platform: "tizen",
  appVersion: "7.1",
  plan: "premium",
  cdn: "cdn-a",
};
const T0 = Date.UTC(2026, 11, 7, 10);
const IDLE = 30 * 60_000;
const isBusiness = businessErrorMatcher(["GEO*", "NOT_ENTITLED"]);
let n = 0;

/** An event `ms` after T0; fields as in the wire format's QoE additions. */
function ev(ms: number, type: string, more: Partial<ViewEvent> = {}): ViewEvent {
  return {
    eventId: `e${++n}`,
    atMs: T0 + ms,
    type,
    contentId: "title-1",
    viewId: null,
    fatal: true,
    errorCode: null,
    bitrateKbps: null,
    renditionHeight: null,
    playerHeight: null,
    dims: DIMS,
    ...more,
  };
}

/** The outcome of one device's events as a single view (asserts there is exactly one). */
function only(events: ViewEvent[], watermarkMs = T0) {
  const views = viewsOf("tv-1", [...events].sort(compareViewEvents), IDLE, watermarkMs);
  assert.equal(views.length, 1, `expected one view, got ${views.map((v) => v.key)}`);
  return outcomeOf(views[0], isBusiness);
}

Deno.test("QoE: startup is FIRST_FRAME - PLAY_REQUEST minus the pre-roll ad between them", () => {
  const o = only([
    ev(0, "PLAY_REQUEST"),
    ev(400, "AD_BREAK_START"),
    ev(15_400, "AD_BREAK_END"),
    ev(16_600, "FIRST_FRAME", { bitrateKbps: 4_000 }),
    ev(76_600, "STOP"),
  ]);
  assert.equal(o.counts[QOE.startedViews], 1);
  assert.equal(o.counts[QOE.startupViews], 1);
  assert.equal(o.counts[QOE.startupMs], 1_600);
  assert.equal(o.startupBucket, startupBucket(1_600));
  assert.equal(o.counts[QOE.playingMs], 60_000);
  assert.equal(o.counts[QOE.bitrateKbpsMs] / o.counts[QOE.bitrateMs], 4_000);
});

Deno.test("QoE: a client without FIRST_FRAME starts at PLAY, and has no measured startup", () => {
  const o = only([ev(0, "PLAY"), ev(10_000, "PAUSE"), ev(70_000, "PLAY"), ev(80_000, "STOP")]);
  assert.equal(o.counts[QOE.startedViews], 1);
  assert.equal(o.counts[QOE.startupViews], 0);
  assert.equal(o.startupBucket, -1);
  assert.equal(o.counts[QOE.playingMs], 20_000, "the pause is not playing time");
});

Deno.test("QoE: an exit before the first frame is EBVS from 1 s on, and not below", () => {
  const long = only([ev(0, "PLAY_REQUEST"), ev(4_000, "STOP")]);
  assert.equal(long.counts[QOE.ebvs], 1);
  assert.equal(long.counts[QOE.startedViews], 0);
  const short = only([ev(0, "PLAY_REQUEST"), ev(600, "STOP")]);
  assert.equal(short.counts[QOE.ebvs], 0);
  assert.equal(short.counts[QOE.shortExits], 1);
});

Deno.test("QoE: a view still open is not an exit yet; idle past VIEW_IDLE_MS ends it", () => {
  const events = [ev(0, "PLAY_REQUEST"), ev(5_000, "HEARTBEAT")];
  assert.equal(only(events, T0 + 60_000).counts[QOE.ebvs], 0);
  assert.equal(only(events, T0 + 5_000 + IDLE + 1).counts[QOE.ebvs], 1);
});

Deno.test("QoE: fatal errors before the start are VSF (business or technical), after it VPF", () => {
  const technical = only([ev(0, "PLAY_REQUEST"), ev(3_000, "ERROR", { errorCode: "DRM_FAIL" })]);
  assert.equal(technical.counts[QOE.vsfTechnical], 1);
  assert.equal(technical.counts[QOE.ebvs], 0);
  const business = only([ev(0, "PLAY_REQUEST"), ev(900, "ERROR", { errorCode: "geo_blocked" })]);
  assert.equal(business.counts[QOE.vsfBusiness], 1);
  assert.equal(business.counts[QOE.vsfTechnical], 0);
  const vpf = only([
    ev(0, "PLAY_REQUEST"),
    ev(1_000, "FIRST_FRAME"),
    ev(9_000, "ERROR", { errorCode: "NET_LOST" }),
  ]);
  assert.equal(vpf.counts[QOE.vpf], 1);
  assert.equal(vpf.counts[QOE.startedViews], 1);
  assert.equal(vpf.counts[QOE.playingMs], 8_000);
});

Deno.test("QoE: a warning (fatal: false) counts as a warning and fails nothing", () => {
  const o = only([
    ev(0, "PLAY_REQUEST"),
    ev(500, "ERROR", { errorCode: "SUBTITLE_MISSING", fatal: false }),
    ev(1_000, "FIRST_FRAME"),
    ev(2_000, "STOP"),
  ]);
  assert.equal(o.counts[QOE.warnings], 1);
  assert.equal(o.counts[QOE.vsfTechnical] + o.counts[QOE.vsfBusiness] + o.counts[QOE.vpf], 0);
  assert.equal(o.counts[QOE.startedViews], 1);
});

Deno.test("QoE: stalls are rebuffering, except one that starts within 1 s of a seek", () => {
  const o = only([
    ev(0, "PLAY_REQUEST"),
    ev(1_000, "FIRST_FRAME"),
    ev(11_000, "REBUFFER_START"),
    ev(13_000, "REBUFFER_END"),
    ev(20_000, "SEEK"),
    ev(20_400, "REBUFFER_START"),
    ev(23_400, "REBUFFER_END"),
    ev(33_400, "STOP"),
  ]);
  assert.equal(o.counts[QOE.rebuffers], 1);
  assert.equal(o.counts[QOE.rebufferMs], 2_000);
  assert.equal(o.counts[QOE.seekStallMs], 3_000);
  assert.equal(o.counts[QOE.playingMs], 10_000 + 7_000 + 400 + 10_000);
});

Deno.test("QoE: bitrate is weighted by playing time; upscaling is rendition below the player", () => {
  const o = only([
    ev(0, "PLAY_REQUEST"),
    ev(1_000, "FIRST_FRAME", { bitrateKbps: 2_000, renditionHeight: 720, playerHeight: 1080 }),
    ev(31_000, "RENDITION_CHANGE", { bitrateKbps: 8_000, renditionHeight: 1080 }),
    ev(41_000, "STOP"),
  ]);
  assert.equal(o.counts[QOE.bitrateKbpsMs] / o.counts[QOE.bitrateMs], 3_500);
  assert.equal(o.counts[QOE.upscaleMs], 30_000);
});

Deno.test("QoE: derived views end at STOP, another title on the TV, or idle; view_id wins", () => {
  const other = { contentId: "title-2", dims: { ...DIMS, contentId: "title-2" } };
  const events = [
    ev(0, "PLAY"),
    ev(5_000, "STOP"),
    ev(6_000, "PAUSE"), // outside any view
    ev(10_000, "PLAY"),
    ev(20_000, "PLAY", other), // another title: the previous view ends
    ev(20_000 + IDLE + 1, "PLAY", other), // idle: a new view
    ev(50, "PLAY_REQUEST", { viewId: "v-9" }),
    ev(90_000, "STOP", { viewId: "v-9" }),
  ].sort(compareViewEvents);
  const views = viewsOf("tv-1", events, IDLE, T0);
  assert.deepEqual(views.map((v) => [v.key, v.events.length, v.isEnded]), [
    [`d:tv-1:title-1:${T0}`, 2, true],
    ["v:v-9", 2, true],
    [`d:tv-1:title-1:${T0 + 10_000}`, 1, true],
    [`d:tv-1:title-2:${T0 + 20_000}`, 1, true],
    [`d:tv-1:title-2:${T0 + 20_000 + IDLE + 1}`, 1, false],
  ]);
});

Deno.test("QoE: the outcome does not depend on the order events arrived in", () => {
  const events = [
    ev(0, "PLAY_REQUEST"),
    ev(2_000, "FIRST_FRAME", { bitrateKbps: 3_000 }),
    ev(9_000, "REBUFFER_START"),
    ev(9_500, "REBUFFER_END"),
    ev(30_000, "STOP"),
  ];
  const expected = only(events);
  for (const order of [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3]]) {
    assert.deepEqual(only(order.map((i) => events[i])), expected);
  }
});

Deno.test("QoE: startup percentiles from the histogram are within 5% of the exact value", () => {
  const values = Array.from({ length: 1_000 }, (_, i) => 200 + i * 13.7);
  const counts = new Array<number>(121).fill(0);
  for (const v of values) counts[startupBucket(v)]++;
  for (const p of [0.5, 0.95]) {
    const exact = values[Math.ceil(p * values.length) - 1];
    const estimate = histogramPercentile(counts, p)!;
    assert.ok(Math.abs(estimate - exact) / exact <= 0.05, `p${p * 100}: ${estimate} vs ${exact}`);
  }
  assert.equal(histogramPercentile(new Array(121).fill(0), 0.5), null);
  assert.equal(bucketValue(0), 0);
});
