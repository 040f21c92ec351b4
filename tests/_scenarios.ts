/**
 * Scenarios run against every database backend (PGlite and PostgreSQL): the same events in, the same
 * numbers out. Each takes a way to start a harness, so backends differ only in config.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Config } from "../config.ts";
import type { Harness } from "./_harness.ts";
import { makeWireEvent, type WireEvent } from "./fixtures.ts";

/** One item of `/compliance/events`, as much as the scenarios read of it. */
interface FlagItem {
  id: number;
  level: string;
  entity_type: string;
  event_id: string;
  user_id: string;
  evidence: {
    observed: Record<string, number>;
    thresholds: Record<string, number>;
    window: { start: string; end: string };
    event_ids: string[];
  };
}

/** Starts a harness on the backend under test. */
export type Start = (overrides?: Partial<Config>) => Promise<Harness>;

/** One hour in ms: the bucket of every aggregate. */
const HOUR = 3_600_000;

/** Event time base: recent (inside the future-skew limit) and aligned to a 5-minute window. */
export function recentBase(nowMs = Date.now()): number {
  return Math.floor(nowMs / 300_000) * 300_000 - 300_000;
}

/** The known event set of {@link exactAggregates}, with timestamps relative to `t0`. */
export function knownEvents(t0: number): { events: WireEvent[]; late: WireEvent } {
  const u1 = {
    user_id: "u1",
    device_id: "d1",
    content_id: "c1",
    region: "DE",
    ip_address: "10.0.0.1",
  };
  const u2 = {
    user_id: "u2",
    device_id: "d2",
    content_id: "c1",
    region: "US-CA",
    is_eu: false,
    ip_address: "10.0.0.2",
    extra_metadata: { platform: "webos" },
  };
  const u3 = { user_id: "u3", device_id: "d3", content_id: "c2", region: "FR", has_consent: false };
  const events = [
    makeWireEvent({ ...u1, event_id: "a1", event_type: "PLAY", atMs: t0 }),
    makeWireEvent({ ...u2, event_id: "b1", event_type: "PLAY", atMs: t0 + 10_000 }),
    makeWireEvent({
      ...u2,
      event_id: "b2",
      event_type: "ERROR",
      error_code: "DRM",
      atMs: t0 + 20_000,
    }),
    makeWireEvent({ ...u3, event_id: "c1", event_type: "PLAY", atMs: t0 + 30_000 }),
    makeWireEvent({ ...u1, event_id: "a2", event_type: "PAUSE", atMs: t0 + 60_000 }),
    makeWireEvent({ ...u1, event_id: "a3", event_type: "play", atMs: t0 + 90_000 }),
    makeWireEvent({ ...u1, event_id: "a4", event_type: "STOP", atMs: t0 + 150_000 }),
  ];
  // Two hours behind the watermark: late. EU without consent, so still a privacy flag.
  const late = makeWireEvent({
    user_id: "u4",
    event_id: "late1",
    has_consent: false,
    atMs: t0 + 150_000 - 2 * 3_600_000,
  });
  return { events, late };
}

/** A known event set gives exact totals, per-content, per-region and compliance numbers. */
export async function exactAggregates(start: Start): Promise<void> {
  const h = await start();
  try {
    const { events, late } = knownEvents(recentBase());
    await h.send(events);
    await h.send([events[4]]); // a TV retry of "a2": counted once
    await h.send([late]);
    await h.flush();

    // The late event counts like any other, in its own hour; late_events says how many were late.
    assert.deepEqual(await h.json("/stats/summary"), {
      from: null,
      to: null,
      complete: true,
      first_bucket_held: null,
      total_events: 8,
      events_by_type: { PLAY: 5, PAUSE: 1, SEEK: 0, STOP: 1, ERROR: 1 },
      plays: 5,
      watch_time_ms: 130_000,
      errors: 1,
      error_rate: 1 / 8,
      unique_viewers: 4,
      late_events: 1,
      duplicate_events: 1,
    });
    const lateHour = new Date(Math.floor(Date.parse(late.timestamp) / HOUR) * HOUR);
    const lateOnly = await h.json(
      `/stats/summary?from=${lateHour.toISOString()}&to=${
        new Date(lateHour.getTime() + HOUR).toISOString()
      }`,
    );
    assert.equal(lateOnly.total_events, 1);
    assert.equal(lateOnly.late_events, 1);
    assert.equal(lateOnly.unique_viewers, 1);
    const endHour = Math.floor((Date.parse(events[6].timestamp)) / HOUR) * HOUR + HOUR;
    const series = await h.json(
      `/stats/timeseries?metric=events&bucket=1h&from=${lateHour.toISOString()}&to=${
        new Date(endHour).toISOString()
      }`,
    );
    const points = (series as { series: Array<{ points: Array<{ value: number }> }> }).series[0]
      .points;
    assert.equal(points.reduce((sum, p) => sum + p.value, 0), 8);
    const c1 = await h.json("/stats/content/c1");
    assert.equal(c1.plays, 3);
    assert.equal(c1.events, 6);
    assert.equal(c1.errors, 1);
    assert.equal(c1.error_rate, 1 / 6);
    assert.equal(c1.watch_time_ms, 130_000);
    assert.deepEqual(c1.top_regions, [
      { region: "DE", plays: 2, events: 4 },
      { region: "US-CA", plays: 1, events: 2 },
    ]);
    const usCa = await h.json("/stats/region/us-ca");
    assert.equal(usCa.events, 2);
    assert.equal(usCa.errors, 1);
    assert.equal(usCa.error_rate, 0.5);
    assert.deepEqual(usCa.errors_by_code, { DRM: 1 });
    assert.deepEqual(usCa.device_mix, [{ platform: "webos", events: 2, share: 1 }]);
    assert.equal((await h.get("/stats/content/nope")).status, 404);
    assert.equal((await h.get("/stats/region/ZZ")).status, 404);

    const compliance = await h.json("/compliance/summary");
    assert.deepEqual(compliance.flagged_events_by_rule, {
      privacy: 2,
      retention: 0,
      account_sharing: 0,
      content_quality: 0,
      qoe: 0,
    });
    assert.deepEqual(compliance.flags_by_level, { HIGH: 2, MEDIUM: 0, LOW: 0 });
  } finally {
    await h.pipeline.stop();
  }
}

/** Every rule fires on traffic shaped to trigger it, with evidence a reviewer can follow. */
export async function everyRuleFires(start: Start): Promise<void> {
  const h = await start();
  try {
    const t0 = recentBase();
    const events: WireEvent[] = [];
    // account sharing: 3 regions within the hour (MEDIUM), then 5 (HIGH), same period.
    ["DE", "FR", "US-NY", "BR", "JP"].forEach((region, i) => {
      events.push(makeWireEvent({
        event_id: `s${i}`,
        user_id: "sharer",
        region,
        is_eu: region === "DE" || region === "FR",
        ip_address: `192.0.2.${i + 1}`,
        atMs: t0 + i * 1000,
      }));
    });
    // content quality: 5 errors in 20 events of one title and device, one window (the device flag),
    // then errors of the title on 2 more TVs: errors from 3 devices (the content flag).
    for (let i = 0; i < 20; i++) {
      const isError = i < 5;
      events.push(makeWireEvent({
        event_id: `q${i}`,
        user_id: `viewer${i}`,
        content_id: "broken-title",
        device_id: "broken-tv",
        event_type: isError ? "ERROR" : "PLAY",
        error_code: isError ? "MANIFEST_404" : null,
        atMs: t0 + 10_000 + i,
      }));
    }
    for (const [i, device] of ["tv-2", "tv-3"].entries()) {
      events.push(makeWireEvent({
        event_id: `q${20 + i}`,
        user_id: `viewer${20 + i}`,
        content_id: "broken-title",
        device_id: device,
        event_type: "ERROR",
        error_code: "MANIFEST_404",
        atMs: t0 + 10_020 + i,
      }));
    }
    // retention via an event: the DNT event records the request, the next one is flagged.
    events.push(
      makeWireEvent({ event_id: "r1", user_id: "dnt-tv", do_not_track: true, atMs: t0 + 20_000 }),
    );
    events.push(makeWireEvent({ event_id: "r2", user_id: "dnt-tv", atMs: t0 + 21_000 }));
    await h.send(events);

    // retention via the API: events that happened after the request are flagged, not those before,
    // even when they arrive after it (a TV that was offline).
    await h.send([makeWireEvent({ event_id: "p0", user_id: "leaver", atMs: t0 + 30_000 })]);
    const res = await h.post("/privacy/requests", { user_id: "leaver", type: "deletion" });
    assert.equal(res.status, 202);
    const afterMs = Date.now() + 1_000;
    const first = await res.json();
    const again = await h.post("/privacy/requests", { user_id: "leaver", type: "deletion" });
    assert.equal(again.status, 202);
    const repeat = await again.json();
    assert.equal(repeat.id, first.id);
    assert.equal(repeat.is_repeat, true);
    await h.send([
      makeWireEvent({ event_id: "p-offline", user_id: "leaver", atMs: t0 + 31_000 }),
      makeWireEvent({ event_id: "p1", user_id: "leaver", atMs: afterMs }),
      makeWireEvent({ event_id: "p2", user_id: "leaver", atMs: afterMs + 1_000 }),
    ]);
    await h.flush();

    const summary = await h.json("/compliance/summary");
    assert.deepEqual(summary.flagged_events_by_rule, {
      privacy: 0,
      retention: 3,
      account_sharing: 3,
      content_quality: 2,
      // The qoe rule flags windows of views, never events; no view here.
      qoe: 0,
    });
    assert.deepEqual(summary.flags_by_rule, {
      privacy: 0,
      retention: 3,
      account_sharing: 1,
      content_quality: 2,
      qoe: 0,
    });

    const sharing = await h.json<{ items: FlagItem[] }>(
      "/compliance/events?rule=account_sharing",
    );
    assert.equal(sharing.items.length, 1);
    const flag = sharing.items[0];
    assert.equal(flag.level, "HIGH");
    assert.equal(flag.user_id, "sharer");
    assert.equal(flag.evidence.observed.distinct_regions, 5);
    assert.equal(flag.evidence.thresholds.max_regions, 2);
    assert.ok(flag.evidence.window.start < flag.evidence.window.end);
    assert.ok(flag.evidence.event_ids.includes("s4"));

    const quality = await h.json<{ items: FlagItem[] }>(
      "/compliance/events?rule=content_quality",
    );
    assert.deepEqual(quality.items.map((f) => f.entity_type).sort(), ["content", "device"]);
    const device = quality.items.find((f) => f.entity_type === "device");
    const content = quality.items.find((f) => f.entity_type === "content");
    assert.equal(device?.evidence.observed.error_rate, 0.25);
    assert.equal(device?.user_id, "viewer19");
    assert.equal(content?.evidence.observed.error_rate, 7 / 22);
    assert.equal(content?.evidence.observed.error_devices, 3);
    assert.equal(content?.event_id, "q21");
    assert.equal(content?.user_id, "", "a title's flag names no viewer");

    const retention = await h.json<{ items: FlagItem[] }>(
      "/compliance/events?rule=retention",
    );
    assert.deepEqual(retention.items.map((f) => f.event_id).sort(), ["p1", "p2", "r2"]);

    const risk = await h.json<{ groups: Record<string, Record<string, number>> }>(
      "/compliance/regions",
    );
    assert.equal(risk.groups.eu.retention + risk.groups.non_eu.retention, 3);
  } finally {
    await h.pipeline.stop();
  }
}

/** Keyset pagination walks every flag exactly once, newest first. */
export async function paginatesFlags(start: Start): Promise<void> {
  const h = await start();
  try {
    const t0 = recentBase();
    await h.send(
      Array.from(
        { length: 7 },
        (_, i) =>
          makeWireEvent({ event_id: `x${i}`, user_id: `eu${i}`, has_consent: false, atMs: t0 + i }),
      ),
    );
    await h.flush();
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { items: Array<{ event_id: string; id: number }>; next_cursor: string | null } =
        await h.json(`/compliance/events?rule=privacy&limit=3${cursor ? `&cursor=${cursor}` : ""}`);
      seen.push(...page.items.map((f) => f.event_id));
      cursor = page.next_cursor;
      pages++;
    } while (cursor !== null && pages < 10);
    assert.equal(pages, 3);
    assert.equal(new Set(seen).size, 7);
    assert.equal((await h.get("/compliance/events?level=CRITICAL")).status, 400);
    assert.equal((await h.get("/compliance/events?cursor=abc")).status, 400);
  } finally {
    await h.pipeline.stop();
  }
}
