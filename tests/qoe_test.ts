/**
 * Quality of experience end to end: views with every outcome sent through the pipeline, read back
 * from `/stats/qoe` as computed by hand; the same events in other arrival orders, and across a
 * restart, give the same answer.
 */
import assert from "node:assert/strict";
import { startHarness, testPipelineOnEveryDatabase } from "./_harness.ts";
import type { Harness } from "./_harness.ts";
import type { WireEvent } from "./fixtures.ts";
import { viewEventMaker } from "./_qoe_events.ts";
import { recentBase } from "./_scenarios.ts";
import { test } from "./_permissions.ts";

/** One event of a view on TV `tv`, `ms` after `t0`. */
const ev = viewEventMaker("q");

/** Seven views, one of each kind (see the expected answer below). */
function views(t0: number): WireEvent[] {
  return [
    // a: startup 2 s after a 10 s pre-roll, a warning, a 2 s stall, 58 s playing at 4000 kbps.
    ev(t0, "tv-a", 0, "PLAY_REQUEST", { view_id: "a" }),
    ev(t0, "tv-a", 500, "AD_BREAK_START", { view_id: "a" }),
    ev(t0, "tv-a", 10_500, "AD_BREAK_END", { view_id: "a" }),
    ev(t0, "tv-a", 12_000, "FIRST_FRAME", {
      view_id: "a",
      bitrate_kbps: 4_000,
      rendition_height: 1080,
      player_height: 1080,
    }),
    ev(t0, "tv-a", 20_000, "ERROR", { view_id: "a", fatal: false, error_code: "SUBTITLE_LOST" }),
    ev(t0, "tv-a", 42_000, "REBUFFER_START", { view_id: "a" }),
    ev(t0, "tv-a", 44_000, "REBUFFER_END", { view_id: "a" }),
    ev(t0, "tv-a", 72_000, "STOP", { view_id: "a" }),
    // b: an exit before video start after 5 s.
    ev(t0, "tv-b", 0, "PLAY_REQUEST", { view_id: "b" }),
    ev(t0, "tv-b", 5_000, "STOP", { view_id: "b" }),
    // c: a business start failure; d: a technical one.
    ev(t0, "tv-c", 0, "PLAY_REQUEST", { view_id: "c" }),
    ev(t0, "tv-c", 1_000, "ERROR", { view_id: "c", error_code: "GEO_BLOCKED" }),
    ev(t0, "tv-d", 0, "PLAY_REQUEST", { view_id: "d" }),
    ev(t0, "tv-d", 2_000, "ERROR", { view_id: "d", error_code: "DRM_LICENSE_FAILED" }),
    // e: startup 1 s, 30 s upscaled at 2000 kbps, then a playback failure.
    ev(t0, "tv-e", 0, "PLAY_REQUEST", { view_id: "e" }),
    ev(t0, "tv-e", 1_000, "FIRST_FRAME", {
      view_id: "e",
      bitrate_kbps: 2_000,
      rendition_height: 720,
      player_height: 1080,
    }),
    ev(t0, "tv-e", 31_000, "ERROR", { view_id: "e", error_code: "NETWORK_LOST" }),
    // f: an old client (no view_id, no QoE types): a derived view, 20 s playing, no startup.
    ev(t0, "tv-f", 0, "PLAY", { cdn: null }),
    ev(t0, "tv-f", 10_000, "PAUSE", { cdn: null }),
    ev(t0, "tv-f", 20_000, "PLAY", { cdn: null }),
    ev(t0, "tv-f", 30_000, "STOP", { cdn: null }),
    // g: gone within 1 s: not an exit before video start.
    ev(t0, "tv-g", 0, "PLAY_REQUEST", { view_id: "g" }),
    ev(t0, "tv-g", 500, "STOP", { view_id: "g" }),
  ];
}

/** What every test expects from {@link views}, computed by hand. */
function assertExpected(q: Record<string, unknown>): void {
  // deno-lint-ignore no-explicit-any
  const s = q as Record<string, any>;
  assert.equal(s.views, 7);
  assert.equal(s.started_views, 3, "a, e and f");
  assert.equal(s.video_startup_time_ms.views_measured, 2);
  assert.equal(s.video_startup_time_ms.views_not_measured, 1, "f has no FIRST_FRAME");
  assert.equal(s.video_startup_time_ms.mean, 1_500);
  assert.ok(
    Math.abs(s.video_startup_time_ms.p50 - 1_000) <= 49,
    `p50 ${s.video_startup_time_ms.p50}`,
  );
  assert.ok(
    Math.abs(s.video_startup_time_ms.p95 - 2_000) <= 98,
    `p95 ${s.video_startup_time_ms.p95}`,
  );
  assert.deepEqual(s.exits_before_video_start, {
    count: 1,
    rate: 0.1429,
    denominator: "views",
    exits_under_1s_not_counted: 1,
  });
  assert.equal(s.video_start_failures.business, 1);
  assert.equal(s.video_start_failures.technical, 1);
  assert.equal(s.video_start_failures.rate, 0.2857);
  assert.deepEqual(s.playback_failures, { count: 1, rate: 0.3333, denominator: "started_views" });
  assert.equal(s.playing_ms, 58_000 + 30_000 + 20_000);
  assert.equal(s.rebuffers, 1);
  assert.equal(s.rebuffer_ms, 2_000);
  assert.equal(s.rebuffer_ratio, 0.0182);
  assert.equal(s.average_bitrate_kbps, 3_318, "(4000 x 58 s + 2000 x 30 s) / 88 s");
  assert.equal(s.upscale_share, 0.2778, "30 s of 108 s");
  assert.equal(s.warnings, 1);
}

testPipelineOnEveryDatabase(
  "qoe",
  "views of every kind read back as computed by hand",
  {},
  async (h) => {
    const t0 = recentBase();
    await h.send(views(t0));
    await h.flush();
    assertExpected(await h.json("/stats/qoe"));
    // Filters: the derived view has no CDN; a title no view played has no views.
    assert.equal((await h.json("/stats/qoe?cdn=cdn-a")).views, 6);
    assert.equal((await h.json("/stats/qoe?content_id=other")).views, 0);
    const bad = await h.get("/stats/qoe?platform=" + "x".repeat(40));
    assert.equal(bad.status, 400);
  },
);

/** Sends the events in `order`, flushing after each part, then reads the QoE. */
async function sendInParts(h: Harness, parts: WireEvent[][]): Promise<Record<string, unknown>> {
  for (const part of parts) {
    await h.send(part);
    await h.flush();
  }
  return await h.json("/stats/qoe");
}

testPipelineOnEveryDatabase(
  "qoe",
  "the same views in other arrival orders give the same QoE (late events recount their view)",
  {},
  async (h) => {
    const all = views(recentBase());
    // The end of every view first (an exit before start is counted, then retracted by the late
    // FIRST_FRAME), then the rest, newest first.
    const ends = all.filter((e) => ["STOP", "ERROR"].includes(e.event_type));
    const rest = all.filter((e) => !ends.includes(e)).reverse();
    assertExpected(await sendInParts(h, [ends, rest.slice(0, 5), rest.slice(5)]));
  },
);

test("[qoe] open views survive a restart: the QoE after it equals one run's (QUEUE=postgres)", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-qoe-" });
  try {
    const all = views(recentBase());
    // Half of every view before the restart, the rest after.
    const first = all.filter((_, i) => i % 2 === 0);
    const second = all.filter((_, i) => i % 2 === 1);
    const before = await startHarness({ dataDir, queue: "postgres" });
    await sendInParts(before, [first]);
    await before.pipeline.stop();
    const after = await startHarness({ dataDir, queue: "postgres" });
    try {
      assertExpected(await sendInParts(after, [second]));
    } finally {
      await after.pipeline.stop();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
