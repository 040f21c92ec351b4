import assert from "node:assert/strict";
import { startHarness } from "./_harness.ts";
import { test } from "./_permissions.ts";

/**
 * A client shaped like the third-party Python TV simulator that found the counting bugs: one event
 * per POST, lower-case types, login/logout, no error_code except on errors, events stamped up to an
 * hour before they are sent, the regions it uses (UK and EU included), and `subscription_plan` from
 * older app versions. Every 202 must be counted, and every title it sent must have stats.
 */
function tvClientEvents(count: number, nowMs: number): Array<Record<string, unknown>> {
  let seed = 7;
  const random = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const regions = ["US", "EU", "CA", "UK", "DE", "FR", "JP", "KR"] as const;
  const types = ["play", "pause", "seek", "stop", "error", "login", "logout"] as const;
  return Array.from({ length: count }, (_, i) => {
    const type = pick(types);
    const region = pick(regions);
    const event: Record<string, unknown> = {
      event_id: `py-${i}`,
      user_id: `py-user-${Math.floor(random() * 40)}`,
      device_id: `py-tv-${Math.floor(random() * 60)}`,
      content_id: `py-title-${Math.floor(random() * 12)}`,
      event_type: type,
      timestamp: new Date(nowMs - Math.floor(random() * 3_600_000)).toISOString(),
      region,
      is_eu: region === "EU" || region === "DE" || region === "FR",
      has_consent: random() < 0.8,
      ip_address: `198.51.100.${Math.floor(random() * 250)}`,
      extra_metadata: { app_version: pick(["1.0.3", "2.1.0"]) },
    };
    if (type === "error") event.error_code = pick(["E_DRM", "E_NET"]);
    if (random() < 0.3) event.subscription_plan = pick(["basic", "premium"]);
    return event;
  });
}

test("[tv-client] every event a real TV client sends one at a time is accepted and counted", async () => {
  // The default durable log, with the default allowed lateness: what a newcomer starts.
  const h = await startHarness({ queue: "postgres", allowedLatenessMs: 7_200_000 });
  try {
    const events = tvClientEvents(400, Date.now());
    for (const event of events) {
      const res = await h.post("/events", event);
      const body = await res.text();
      assert.equal(res.status, 202, `${event.event_id}: ${body}`);
    }
    // A TV retries some of them: counted once.
    for (const event of events.slice(0, 20)) {
      const res = await h.post("/events", event);
      assert.equal(res.status, 202);
      await res.body?.cancel();
    }
    await h.flush();
    const summary = await h.json<{
      total_events: number;
      events_by_type: Record<string, number>;
      duplicate_events: number;
    }>("/stats/summary");
    assert.equal(summary.total_events, events.length);
    assert.equal(summary.duplicate_events, 20);
    const logins = events.filter((e) => e.event_type === "login").length;
    assert.ok(logins > 0);
    assert.equal(summary.events_by_type.LOGIN, logins);
    for (const title of new Set(events.map((e) => e.content_id as string))) {
      const stats = await h.json<{ events: number }>(`/stats/content/${title}`);
      assert.equal(stats.events, events.filter((e) => e.content_id === title).length, title);
    }
    // UK is stored as GB; EU is a region of its own, judged as GDPR.
    const gb = await h.json<{ events: number; is_eu: boolean }>("/stats/region/GB");
    assert.equal(gb.events, events.filter((e) => e.region === "UK").length);
    assert.equal(gb.is_eu, true);
    const eu = await h.json<{ is_eu: boolean }>("/stats/region/EU");
    assert.equal(eu.is_eu, true);
  } finally {
    await h.pipeline.stop();
  }
});
