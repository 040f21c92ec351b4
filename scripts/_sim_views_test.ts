import assert from "node:assert/strict";
import { EVENT_SCHEMA, readOptionalFields } from "../routes/event_schema.ts";
import {
  businessErrorMatcher,
  compareViewEvents,
  DEFAULT_BUSINESS_ERROR_CODES,
  outcomeOf,
  QOE,
  QOE_MEASURES,
  type ViewEvent,
  viewsOf,
} from "../rules/qoe.ts";
import {
  generateViews,
  type QoeExpectations,
  SIM_CDNS,
  type SimViews,
  VIEW_CASES,
  type ViewWireEvent,
} from "./_sim_views.ts";
import { generateTraffic, SPAN_MS } from "./_sim_traffic.ts";

const NOW = Date.UTC(2026, 10, 23, 12, 0, 0, 456);
const VIEWS = generateViews(300, 42, NOW);

/** The events of each view, by view id or (derived) by device. */
function byView(events: readonly ViewWireEvent[]): Map<string, ViewWireEvent[]> {
  const views = new Map<string, ViewWireEvent[]>();
  for (const e of events) {
    const key = e.view_id ?? e.device_id;
    views.set(key, [...(views.get(key) ?? []), e]);
  }
  return views;
}

const timeOf = (e: ViewWireEvent) => Date.parse(e.timestamp);

Deno.test("generateViews() gives the same views for a seed and others for another", () => {
  assert.deepEqual(generateViews(60, 7, NOW), generateViews(60, 7, NOW));
  const strip = (v: SimViews) => v.events.map(({ event_id: _, ...rest }) => JSON.stringify(rest));
  assert.notDeepEqual(strip(generateViews(60, 8, NOW)), strip(generateViews(60, 7, NOW)));
  assert.deepEqual(generateViews(0, 7, NOW).items, []);
});

Deno.test("generateViews() uses its seeded generator, never Math.random", () => {
  const original = Math.random;
  Math.random = () => {
    throw new Error("Math.random was called");
  };
  try {
    generateViews(100, 1, NOW);
  } finally {
    Math.random = original;
  }
});

Deno.test("generateViews() sends valid events within the span, each view ended", () => {
  for (const e of VIEWS.items) {
    assert.ok(EVENT_SCHEMA.safeParse(e).success, JSON.stringify(e));
    assert.deepEqual(readOptionalFields(e as unknown as Record<string, unknown>).issues, []);
    assert.ok(timeOf(e) <= NOW && timeOf(e) >= NOW - SPAN_MS, e.timestamp);
    assert.ok(SIM_CDNS.includes(e.cdn as typeof SIM_CDNS[number]));
    assert.ok(e.user_id.startsWith("qoe-") && e.device_id.startsWith("qoe-"));
    assert.equal(e.error_code === null, e.event_type !== "ERROR", e.event_id);
    assert.ok(!e.is_eu && e.has_consent, "no privacy flag");
  }
  for (const [key, events] of byView(VIEWS.events)) {
    const sorted = [...events].sort((a, b) => timeOf(a) - timeOf(b));
    const times = sorted.map(timeOf);
    assert.equal(new Set(times).size, times.length, `${key}: no two events at the same time`);
    // A view ends at STOP or a fatal error; a derived view may have a PAUSE after its STOP.
    const last = sorted.findLast((e) => e.event_type !== "PAUSE" || e.view_id !== undefined)!;
    assert.ok(
      last.event_type === "STOP" || (last.event_type === "ERROR" && last.fatal !== false),
      `${key} ends with ${last.event_type}`,
    );
    assert.equal(new Set(events.map((e) => e.cdn)).size, 1, "one CDN per view");
  }
});

Deno.test("generateViews() exercises every case on every CDN", () => {
  for (const cdn of SIM_CDNS) {
    const x = VIEWS.qoe[cdn];
    for (const c of VIEW_CASES) assert.ok(x.views_by_case[c] > 0, `${cdn}: ${c}`);
    assert.ok(x.views_measured > 10 && x.views_not_measured > 0);
    assert.ok(x.startup_p95_ms! > x.startup_p50_ms!);
    for (
      const measure of [
        "exits_before_video_start",
        "exits_under_1s_not_counted",
        "vsf_business",
        "vsf_technical",
        "playback_failures",
        "rebuffers",
        "seek_stall_ms",
        "warnings",
      ] as const
    ) assert.ok(x[measure] > 0, `${cdn}: ${measure}`);
    assert.ok(x.upscale_share! > 0 && x.upscale_share! < 1);
  }
  const events = VIEWS.events;
  const has = (test: (e: ViewWireEvent) => boolean) => events.some(test);
  assert.ok(has((e) => e.event_type === "ERROR" && e.fatal === false), "warnings");
  assert.ok(has((e) => e.event_type === "ERROR" && e.fatal === true), "explicitly fatal");
  assert.ok(has((e) => e.event_type === "ERROR" && e.fatal === undefined), "fatal by default");
  assert.ok(has((e) => e.error_code === "GEO_BLOCKED"), "a business code");
  assert.ok(has((e) => e.event_type === "HEARTBEAT" && e.bitrate_kbps !== undefined));
  assert.ok(has((e) => e.event_type === "HEARTBEAT" && e.bitrate_kbps === undefined));
  assert.ok(has((e) => e.rendition_height !== undefined && e.rendition_height < e.player_height!));
  assert.ok(has((e) => e.view_id === undefined), "derived views");
  // A pre-roll: an ad break between a view's request and its first frame.
  const views = [...byView(events).values()].map((v) =>
    [...v].sort((a, b) => timeOf(a) - timeOf(b))
  );
  const typesOf = (v: ViewWireEvent[]) => v.map((e) => e.event_type).join(",");
  assert.ok(
    views.some((v) => /PLAY_REQUEST,AD_BREAK_START,AD_BREAK_END,FIRST_FRAME/.test(typesOf(v))),
  );
  assert.ok(views.some((v) => /SEEK,REBUFFER_START/.test(typesOf(v))));
});

Deno.test("generateViews() sends some views out of order and retries some events", () => {
  const sent = byView(VIEWS.items.filter((e, i) => VIEWS.items.indexOf(e) === i));
  const outOfOrder = [...sent.values()].filter((v) =>
    v.some((e, i) => i > 0 && timeOf(e) < timeOf(v[i - 1]))
  );
  assert.ok(outOfOrder.length >= 100, `${outOfOrder.length} views out of order`);
  const firstAt = new Map<string, number>();
  let duplicates = 0;
  VIEWS.items.forEach((e, i) => {
    const first = firstAt.get(e.event_id);
    if (first === undefined) return void firstAt.set(e.event_id, i);
    duplicates++;
    assert.deepEqual(e, VIEWS.items[first], "a retry repeats the body");
    assert.ok(i - first <= 25, "a retry comes soon after the original");
  });
  assert.equal(duplicates, VIEWS.duplicates);
  assert.ok(duplicates >= 50);
  assert.equal(VIEWS.events.length, firstAt.size);
});

/** The event as `rules/qoe.ts` sees it (as the server's view tracker builds it). */
function viewEventOf(e: ViewWireEvent): ViewEvent {
  return {
    eventId: e.event_id,
    atMs: timeOf(e),
    type: e.event_type,
    contentId: e.content_id,
    viewId: e.view_id ?? null,
    fatal: e.fatal ?? true,
    errorCode: e.error_code,
    bitrateKbps: e.bitrate_kbps ?? null,
    renditionHeight: e.rendition_height ?? null,
    playerHeight: e.player_height ?? null,
    dims: {
      contentId: e.content_id,
      region: e.region,
      platform: e.extra_metadata.platform,
      appVersion: e.extra_metadata.app_version,
      plan: "unknown",
      cdn: e.cdn,
    },
  };
}

/**
 * The reference model's sums for one CDN: a cross-check of the expectations written by
 * construction (if they disagree, one of the two is wrong; the server test then says which).
 */
function referenceSums(events: readonly ViewWireEvent[], cdn: string) {
  const isBusiness = businessErrorMatcher(DEFAULT_BUSINESS_ERROR_CODES);
  const sums = new Array<number>(QOE_MEASURES).fill(0);
  const byDevice = new Map<string, ViewEvent[]>();
  for (const e of events) {
    if (e.cdn !== cdn || (e.event_type === "HEARTBEAT" && e.bitrate_kbps === undefined)) continue;
    byDevice.set(e.device_id, [...(byDevice.get(e.device_id) ?? []), viewEventOf(e)]);
  }
  for (const [device, list] of byDevice) {
    for (const view of viewsOf(device, list.sort(compareViewEvents), 1_800_000, NOW)) {
      assert.ok(view.isEnded, `${view.key} is ended`);
      const outcome = outcomeOf(view, isBusiness);
      outcome.counts.forEach((n, i) => sums[i] += n);
    }
  }
  return sums;
}

Deno.test("generateViews() expectations agree with the reference model in rules/qoe.ts", () => {
  for (const cdn of SIM_CDNS) {
    const x: QoeExpectations = VIEWS.qoe[cdn];
    const s = referenceSums(VIEWS.events, cdn);
    const round = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits;
    assert.deepEqual({
      views: x.views,
      started_views: x.started_views,
      views_measured: x.views_measured,
      startup_mean_ms: x.startup_mean_ms,
      exits_before_video_start: x.exits_before_video_start,
      exits_under_1s_not_counted: x.exits_under_1s_not_counted,
      vsf_business: x.vsf_business,
      vsf_technical: x.vsf_technical,
      playback_failures: x.playback_failures,
      rebuffers: x.rebuffers,
      rebuffer_ms: x.rebuffer_ms,
      seek_stall_ms: x.seek_stall_ms,
      playing_ms: x.playing_ms,
      average_bitrate_kbps: x.average_bitrate_kbps,
      upscale_share: x.upscale_share,
      warnings: x.warnings,
    }, {
      views: s[QOE.views],
      started_views: s[QOE.startedViews],
      views_measured: s[QOE.startupViews],
      startup_mean_ms: round(s[QOE.startupMs] / s[QOE.startupViews], 0),
      exits_before_video_start: s[QOE.ebvs],
      exits_under_1s_not_counted: s[QOE.shortExits],
      vsf_business: s[QOE.vsfBusiness],
      vsf_technical: s[QOE.vsfTechnical],
      playback_failures: s[QOE.vpf],
      rebuffers: s[QOE.rebuffers],
      rebuffer_ms: s[QOE.rebufferMs],
      seek_stall_ms: s[QOE.seekStallMs],
      playing_ms: s[QOE.playingMs],
      average_bitrate_kbps: round(s[QOE.bitrateKbpsMs] / s[QOE.bitrateMs], 0),
      upscale_share: round(s[QOE.upscaleMs] / s[QOE.playingMs], 4),
      warnings: s[QOE.warnings],
    }, cdn);
  }
});

Deno.test("generateTraffic() sends about 10% of its events as QoE views, counted exactly", () => {
  const t = generateTraffic(20_000, 42, NOW);
  const qoe = (t.phase1 as ViewWireEvent[]).filter((e) => e.user_id?.startsWith("qoe-"));
  const unique = new Set(qoe.map((e) => e.event_id));
  assert.ok(unique.size > 1_500 && unique.size < 2_500, `${unique.size} QoE events`);
  assert.equal(t.expectations.unique_events, 20_000);
  assert.deepEqual(Object.keys(t.expectations.qoe), [...SIM_CDNS]);
  const views = SIM_CDNS.reduce((n, cdn) => n + t.expectations.qoe[cdn].views, 0);
  assert.equal(views, 400);
  // They come before the do-not-track tail of phase 1.
  assert.ok(
    t.phase1.slice(t.dntFrom).every((e) => !(e as ViewWireEvent).user_id?.startsWith("qoe-")),
  );
});
