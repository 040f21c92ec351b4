/**
 * The anomaly series end to end: events sent through the pipeline are counted once in the window
 * cube and its hourly copy (a retry is not), a late event in the window it arrived in, and the
 * detector judges the window.
 */
import assert from "node:assert/strict";
import { sql } from "kysely";
import { testPipelineOnEveryDatabase } from "./_harness.ts";
import { makeWireEvent } from "./fixtures.ts";
import { recentBase } from "./_scenarios.ts";
import { AnomalyDetector } from "../actors/anomaly_detector.ts";
import { createLogger } from "../logger.ts";

const W = 300_000;

testPipelineOnEveryDatabase(
  "anomaly",
  "events land once in the anomaly cubes, a late one in the window it arrived in",
  {},
  async (h) => {
    const t0 = recentBase();
    const tv = (user: string, platform: string, app_version: string) => ({
      user_id: user,
      device_id: `tv-${user}`,
      extra_metadata: { platform, app_version },
      subscription_plan: "premium",
    });
    const events = [
      makeWireEvent({ event_id: "a1", ...tv("u1", "tizen", "7.1"), atMs: t0 + 1_000 }),
      makeWireEvent({
        event_id: "a2",
        ...tv("u1", "tizen", "7.1"),
        event_type: "ERROR",
        error_code: "DRM_FAIL",
        atMs: t0 + 2_000,
      }),
      makeWireEvent({
        event_id: "a3",
        ...tv("u2", "tizen", "7.1"),
        has_consent: false,
        content_id: "content-2",
        atMs: t0 + 3_000,
      }),
      makeWireEvent({
        event_id: "a4",
        ...tv("u3", "webos", "6.9"),
        region: "US-NY",
        atMs: t0 + 4_000,
      }),
    ];
    await h.send(events);
    await h.send([events[0]]); // a TV's retry: a duplicate, not counted again
    const sentAt = Date.now();
    // Three hours behind the watermark: late, so counted when it arrived.
    await h.send([
      makeWireEvent({ event_id: "late", ...tv("u4", "roku", "6.8"), atMs: t0 - 3 * 3_600_000 }),
    ]);
    await h.flush();
    const cube = await sql<Record<string, unknown>>`
      select extract(epoch from window_start) * 1000 as ms, platform, region, app_version,
        subscription_plan, events, errors, eu_events, eu_consented, viewers
      from anomaly_cube order by platform`.execute(h.pipeline.db);
    const rows = cube.rows.map((r) => ({
      ...r,
      ms: Number(r.ms),
      events: Number(r.events),
      errors: Number(r.errors),
      eu_events: Number(r.eu_events),
      eu_consented: Number(r.eu_consented),
      viewers: Number(r.viewers),
    }));
    const [roku, tizen, webos] = rows;
    assert.equal(rows.length, 3);
    assert.deepEqual(tizen, {
      ms: t0,
      platform: "tizen",
      region: "DE",
      app_version: "7.1",
      subscription_plan: "premium",
      events: 3,
      errors: 1,
      eu_events: 3,
      eu_consented: 2,
      viewers: 2,
    });
    assert.equal(webos.ms, t0);
    assert.deepEqual([webos.events, webos.eu_events, webos.viewers], [1, 0, 1]);
    assert.equal(roku.events, 1);
    assert.ok(roku.ms >= Math.floor(sentAt / W) * W, "the late event counts where it arrived");
    const titles = await sql<{ content_id: string; events: string; errors: string }>`
      select content_id, sum(events) as events, sum(errors) as errors from anomaly_titles_hourly
      group by content_id order by content_id`.execute(h.pipeline.db);
    assert.deepEqual(
      titles.rows.map((r) => [r.content_id, Number(r.events), Number(r.errors)]),
      [["content-1", 4, 1], ["content-2", 1, 0]],
    );
    // A view on cdn-x: its outcome is counted in the window it happened in.
    const view = (id: string, type: string, ms: number) =>
      makeWireEvent({
        event_id: id,
        ...tv("u5", "tizen", "7.1"),
        content_id: "content-3",
        event_type: type,
        atMs: t0 + ms,
        cdn: "cdn-x",
        view_id: "v1",
      });
    await h.send([
      view("v-req", "PLAY_REQUEST", 10_000),
      view("v-ff", "FIRST_FRAME", 12_000),
      view("v-rs", "REBUFFER_START", 20_000),
      view("v-re", "REBUFFER_END", 23_000),
      view("v-stop", "STOP", 60_000),
    ]);
    await h.flush();
    const qoe = await sql<Record<string, string | number>>`
      select extract(epoch from window_start) * 1000 as ms, content_id, cdn, subscription_plan,
        views, vsf_technical, rebuffer_ms, watched_ms, startup_views, slow_startups
      from anomaly_qoe where content_id = 'content-3'`.execute(h.pipeline.db);
    assert.deepEqual(
      qoe.rows.map((r) =>
        Object.fromEntries(
          Object.entries(r).map((
            [k, v],
          ) => [k, typeof v === "string" && /^[0-9.]+$/.test(v) ? Number(v) : v]),
        )
      ),
      [{
        ms: t0,
        content_id: "content-3",
        cdn: "cdn-x",
        subscription_plan: "premium",
        views: 1,
        vsf_technical: 0,
        rebuffer_ms: 3_000,
        // Playing from the first frame to the stop, less the stall, plus the stall.
        watched_ms: 48_000,
        startup_views: 1,
        slow_startups: 0,
      }],
    );
    // The detector judges the window (no history: nothing opens) and records its progress.
    assert.equal(await h.pipeline.anomalies.stepTo(t0 + W), 1);
    const detector = await sql<{ ms: number | string }>`
      select extract(epoch from judged_until) * 1000 as ms from anomaly_detector`
      .execute(h.pipeline.db);
    assert.equal(Number(detector.rows[0].ms), t0 + W);
    assert.deepEqual(await h.json("/compliance/incidents"), { incidents: [] });
  },
);

testPipelineOnEveryDatabase(
  "anomaly",
  "the detector runs on the watermark under a lease: one node judges, another waits",
  {},
  async (h) => {
    const t0 = recentBase() - 6 * W; // so that three windows later is still the past
    await h.send([
      makeWireEvent({ event_id: "l1", atMs: t0 + 1_000 }),
      makeWireEvent({ event_id: "l2", atMs: t0 + W + 1_000 }),
    ]);
    await h.flush();
    // The watermark is t0 + W + 1 s: with 2 minutes' grace no window has ended long enough yet.
    const first = await h.pipeline.anomalies.runOnce();
    const lease = await sql<{ owner: string; judged_until: unknown }>`
      select owner, judged_until from anomaly_detector`.execute(h.pipeline.db);
    assert.equal(lease.rows[0].owner, h.config.redis.nodeId);
    assert.ok(first >= 0);
    // Another node sees the lease held and judges nothing.
    const other = new AnomalyDetector({
      db: h.pipeline.db,
      windowMs: W,
      ...h.config.anomaly,
      watermarkMs: () => t0 + 10 * W,
      owner: "another-node",
      alerts: { minRank: null },
      logger: createLogger("error"),
    });
    assert.equal(await other.runOnce(), 0);
    // The owner, with the watermark well past: it judges every window up to it.
    await h.send([makeWireEvent({ event_id: "l3", atMs: t0 + 3 * W + 200_000 })]);
    await h.flush();
    const judged = await h.pipeline.anomalies.runOnce();
    assert.ok(judged >= 1, `judged ${judged}`);
    const after = await sql<{ ms: number | string }>`
      select extract(epoch from judged_until) * 1000 as ms from anomaly_detector`
      .execute(h.pipeline.db);
    assert.ok(Number(after.rows[0].ms) >= t0 + 2 * W);
  },
);

testPipelineOnEveryDatabase(
  "anomaly",
  "an account-sharing flag counts once in the cube row of the event that raised it",
  {},
  async (h) => {
    const t0 = recentBase();
    const regions = ["DE", "FR", "ES", "IT", "NL"];
    // A user seen from 3 regions within the sharing window is flagged; later events of the same
    // period update that flag (and escalate it at 5 regions) without counting a new one.
    await h.send(regions.map((region, i) =>
      makeWireEvent({
        event_id: `s${i}`,
        user_id: "sharer",
        device_id: `tv-${region}`,
        region,
        extra_metadata: { platform: "roku", app_version: "6.9" },
        atMs: t0 + i * 1_000,
      })
    ));
    await h.flush();
    const rows = await sql<{ region: string; sharing_flags: string | number }>`
      select region, sum(sharing_flags) as sharing_flags from anomaly_cube group by region
      having sum(sharing_flags) > 0`.execute(h.pipeline.db);
    assert.deepEqual(
      rows.rows.map((r) => [r.region, Number(r.sharing_flags)]),
      [["ES", 1]],
      "the third region's event raised it",
    );
  },
);
