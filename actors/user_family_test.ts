import assert from "node:assert/strict";
import { KEY_SEP } from "../db/flush_batch.ts";
import type { TelemetryEvent } from "../rules/mod.ts";
import { makeEvent, T0, testConfig } from "../tests/fixtures.ts";
import { emptyBatch } from "./pending.ts";
import { shardOf } from "./shard_of.ts";
import { UserFamily, type UserFamilyOptions } from "./user_family.ts";

const SHARDS = 8;
const MINUTE = 60_000;
const HOUR = 3_600_000;
const NOW = 1_000;

/** A user family with test defaults; a rule error fails the test. */
function family(overrides: Partial<UserFamilyOptions> = {}): UserFamily {
  return new UserFamily({
    shardCount: SHARDS,
    dedupeIdsPerShard: 1000,
    maxSegmentMs: 4 * HOUR,
    thresholds: testConfig().thresholds,
    onRuleError: (rule, event, error) => {
      throw new Error(`Rule "${rule}" failed on "${event.eventId}"`, { cause: error });
    },
    ...overrides,
  });
}

let seq = 0;
/** An event with a fresh id and log position; consenting EU viewer unless overridden. */
function ev(overrides: Partial<TelemetryEvent> = {}): TelemetryEvent {
  seq++;
  return makeEvent({ eventId: `e-${seq}`, position: seq, ...overrides });
}

function flagsOf(batch: ReturnType<typeof emptyBatch>, rule: string) {
  return [...batch.flags.values()].filter((f) => f.rule === rule);
}

Deno.test("UserFamily.apply() counts PLAY→PAUSE→PLAY→STOP as the sum of the playing segments", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "PAUSE", atMs: T0 + 60_000 }), NOW, batch);
  users.apply(ev({ type: "PLAY", atMs: T0 + 90_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 150_000 }), NOW, batch);
  assert.equal(batch.counters.get("watch_time_ms"), 120_000);
  assert.deepEqual(batch.contents.get("content-1"), {
    events: 4,
    plays: 2,
    errors: 0,
    watchTimeMs: 120_000,
  });
  assert.equal(batch.devices.get("device-1")?.watchTimeMs, 120_000);
  assert.equal(batch.regions.get("DE")?.watchTimeMs, 120_000);
});

Deno.test("UserFamily.apply() keeps separate segments per device of one user", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", deviceId: "tv", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "PLAY", deviceId: "phone", atMs: T0 + 10_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", deviceId: "tv", atMs: T0 + 30_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", deviceId: "phone", atMs: T0 + 70_000 }), NOW, batch);
  assert.equal(batch.devices.get("tv")?.watchTimeMs, 30_000);
  assert.equal(batch.devices.get("phone")?.watchTimeMs, 60_000);
  assert.equal(batch.counters.get("watch_time_ms"), 90_000);
});

Deno.test("UserFamily.apply() caps a segment longer than maxSegmentMs", () => {
  const users = family({ maxSegmentMs: HOUR });
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 3 * HOUR }), NOW, batch);
  assert.equal(batch.counters.get("watch_time_ms"), HOUR);
  assert.equal(batch.contents.get("content-1")?.watchTimeMs, HOUR);
});

Deno.test("UserFamily.apply() does not end a segment on SEEK", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "SEEK", atMs: T0 + 20_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 50_000 }), NOW, batch);
  assert.equal(batch.counters.get("watch_time_ms"), 50_000);
  assert.equal(batch.counters.get("events:SEEK"), 1);
});

Deno.test("UserFamily.apply() ends a segment on ERROR", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "ERROR", errorCode: "E1", atMs: T0 + 5_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 60_000 }), NOW, batch);
  assert.equal(batch.counters.get("watch_time_ms"), 5_000);
});

Deno.test("UserFamily.apply() counts an out-of-order PAUSE before its PLAY as zero, not negative", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 + 60_000 }), NOW, batch);
  users.apply(ev({ type: "PAUSE", atMs: T0 }), NOW, batch);
  assert.equal(batch.contents.get("content-1")?.watchTimeMs, 0);
  assert.equal(batch.devices.get("device-1")?.watchTimeMs, 0);
  assert.equal(batch.counters.get("watch_time_ms") ?? 0, 0);
  assert.equal(batch.contents.get("content-1")?.events, 2);
});

Deno.test("UserFamily.apply() counts a repeated event id once and counts the duplicate", () => {
  const users = family();
  const batch = emptyBatch();
  const event = ev({ type: "PLAY", isEu: true, hasConsent: false });
  users.apply(event, NOW, batch);
  users.apply({ ...event }, NOW, batch);
  assert.equal(batch.counters.get("duplicate_events"), 1);
  assert.equal(batch.counters.get("events:PLAY"), 1);
  assert.equal(batch.contents.get("content-1")?.events, 1);
  assert.equal(batch.rawEvents.length, 1);
  assert.equal(flagsOf(batch, "privacy")[0].flaggedEventCount, 1);
});

Deno.test("UserFamily.apply() still recognises a duplicate in a later batch", () => {
  const users = family();
  const event = ev();
  users.apply(event, NOW, emptyBatch());
  const later = emptyBatch();
  users.apply({ ...event }, NOW, later);
  assert.equal(later.counters.get("duplicate_events"), 1);
  assert.equal(later.rawEvents.length, 0);
  assert.equal(later.contents.size, 0);
});

Deno.test("UserFamily.apply() counts a late event outside the aggregates but still flags privacy", () => {
  const users = family();
  const batch = emptyBatch();
  const late = ev({ type: "PLAY", isLate: true, isEu: true, hasConsent: false, region: "FR" });
  users.apply(late, NOW, batch);
  assert.equal(batch.counters.get("late_events"), 1);
  assert.equal(batch.counters.get("events:PLAY"), undefined);
  assert.equal(batch.contents.size, 0);
  assert.equal(batch.regions.size, 0);
  assert.equal(batch.devices.size, 0);
  assert.equal(batch.regionPlatforms.size, 0);
  assert.deepEqual(batch.rawEvents.map((r) => [r.eventId, r.isLate]), [[late.eventId, true]]);
  const privacy = flagsOf(batch, "privacy");
  assert.equal(privacy.length, 1);
  assert.equal(privacy[0].flagKey, `privacy:${late.eventId}`);
  assert.equal(privacy[0].region, "FR");
});

Deno.test("UserFamily.apply() records a do-not-track event as an opt-out without flagging it", () => {
  const users = family();
  const batch = emptyBatch();
  const dnt = ev({ doNotTrack: true, atMs: T0 + 5_000 });
  users.apply(dnt, NOW, batch);
  assert.deepEqual(batch.optOuts, [
    { userId: "user-1", type: "do_not_track", sinceMs: T0 + 5_000 },
  ]);
  assert.equal(batch.flags.size, 0);

  const next = ev({ atMs: T0 + 10_000 });
  users.apply(next, NOW, batch);
  const retention = flagsOf(batch, "retention");
  assert.equal(retention.length, 1);
  assert.equal(retention[0].flagKey, `retention:${next.eventId}`);
  assert.equal(retention[0].evidence.observed["request_source"], "event");
  assert.equal(batch.optOuts.length, 1);
});

Deno.test("UserFamily.apply() does not flag other users after one user's do-not-track", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ userId: "user-1", doNotTrack: true }), NOW, batch);
  users.apply(ev({ userId: "user-2" }), NOW, batch);
  assert.equal(flagsOf(batch, "retention").length, 0);
});

Deno.test("UserFamily.recordOptOut() makes the user's next event flagged by retention", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ eventId: "before" }), NOW, batch);
  users.recordOptOut("user-1", { type: "deletion", sinceMs: T0, source: "api" });
  users.apply(ev({ eventId: "after" }), NOW, batch);
  const retention = flagsOf(batch, "retention");
  assert.deepEqual(retention.map((f) => f.eventId), ["after"]);
  assert.equal(retention[0].level, "HIGH");
  assert.equal(retention[0].evidence.observed["request_type"], "deletion");
});

Deno.test("UserFamily.apply() flags a do-not-track event of a user already opted out via the API", () => {
  const users = family();
  const batch = emptyBatch();
  users.recordOptOut("user-1", { type: "deletion", sinceMs: T0, source: "api" });
  const dnt = ev({ doNotTrack: true });
  users.apply(dnt, NOW, batch);
  assert.deepEqual(flagsOf(batch, "retention").map((f) => f.eventId), [dnt.eventId]);
  assert.deepEqual(batch.optOuts, []);
});

Deno.test("UserFamily.apply() raises one MEDIUM sharing flag per period for 3 regions", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ eventId: "de", region: "DE", atMs: T0 }), NOW, batch);
  users.apply(ev({ eventId: "fr", region: "FR", atMs: T0 + MINUTE }), NOW, batch);
  assert.equal(flagsOf(batch, "account_sharing").length, 0);
  users.apply(ev({ eventId: "it", region: "IT", atMs: T0 + 2 * MINUTE }), NOW, batch);
  users.apply(ev({ eventId: "it2", region: "IT", atMs: T0 + 3 * MINUTE }), NOW, batch);
  const sharing = flagsOf(batch, "account_sharing");
  assert.equal(sharing.length, 1);
  assert.equal(sharing[0].flagKey, `account_sharing:user-1:${T0}`);
  assert.equal(sharing[0].level, "MEDIUM");
  assert.equal(sharing[0].flaggedEventCount, 2);
  assert.equal(sharing[0].eventId, "it");
  assert.deepEqual(sharing[0].evidence.observed, {
    regions: ["DE", "FR", "IT"],
    distinct_regions: 3,
    distinct_ips: 1,
  });
  assert.deepEqual(sharing[0].evidence.event_ids, ["de", "fr", "it"]);
});

Deno.test("UserFamily.apply() starts a new sharing flag in the next period", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ region: "DE", atMs: T0 }), NOW, batch);
  users.apply(ev({ region: "FR", atMs: T0 + MINUTE }), NOW, batch);
  users.apply(ev({ region: "IT", atMs: T0 + 2 * MINUTE }), NOW, batch);
  // DE has left the window of the ES event; FR, IT and ES remain: 3 regions in the next hour.
  users.apply(ev({ region: "ES", atMs: T0 + HOUR + 1_000 }), NOW, batch);
  const keys = flagsOf(batch, "account_sharing").map((f) => f.flagKey).sort();
  assert.deepEqual(keys, [`account_sharing:user-1:${T0}`, `account_sharing:user-1:${T0 + HOUR}`]);
});

Deno.test("UserFamily.apply() escalates the period's sharing flag to HIGH past 4 regions", () => {
  const users = family();
  const batch = emptyBatch();
  for (const [i, region] of ["DE", "FR", "IT", "ES", "PL"].entries()) {
    users.apply(ev({ eventId: region, region, atMs: T0 + i * MINUTE }), NOW, batch);
  }
  const sharing = flagsOf(batch, "account_sharing");
  assert.equal(sharing.length, 1);
  assert.equal(sharing[0].level, "HIGH");
  assert.equal(sharing[0].eventId, "PL");
  assert.equal(sharing[0].flaggedEventCount, 3);
  assert.equal(sharing[0].evidence.observed["distinct_regions"], 5);
  assert.equal(batch.risks.get("user:user-1")?.level, "HIGH");
});

Deno.test("UserFamily.apply() flags more than 3 networks in one region as sharing", () => {
  const users = family();
  const batch = emptyBatch();
  for (let i = 1; i <= 3; i++) users.apply(ev({ ipHash: `h-${i}`, atMs: T0 + i }), NOW, batch);
  assert.equal(flagsOf(batch, "account_sharing").length, 0);
  users.apply(ev({ ipHash: "h-4", atMs: T0 + 4 }), NOW, batch);
  const sharing = flagsOf(batch, "account_sharing");
  assert.equal(sharing.length, 1);
  assert.equal(sharing[0].level, "MEDIUM");
  assert.equal(sharing[0].evidence.observed["distinct_ips"], 4);
});

Deno.test("UserFamily.apply() does not count regions seen longer than the sharing window ago", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ region: "DE", atMs: T0 }), NOW, batch);
  users.apply(ev({ region: "FR", atMs: T0 + 30 * MINUTE }), NOW, batch);
  users.apply(ev({ region: "IT", atMs: T0 + HOUR + 1 }), NOW, batch);
  assert.equal(flagsOf(batch, "account_sharing").length, 0);
});

Deno.test("UserFamily.apply() keeps sharing state per user", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ userId: "user-1", region: "DE" }), NOW, batch);
  users.apply(ev({ userId: "user-2", region: "FR" }), NOW, batch);
  users.apply(ev({ userId: "user-3", region: "IT" }), NOW, batch);
  assert.equal(flagsOf(batch, "account_sharing").length, 0);
});

/** A watermark past every window and segment cap of the fixtures. */
const LONG_AFTER = T0 + 5 * 3_600_000;

Deno.test("UserFamily.passivate() keeps an idle user who is still playing", () => {
  const users = family();
  users.apply(ev({ userId: "watching", type: "PLAY", atMs: T0 }), 1_000, emptyBatch());
  assert.equal(users.passivate(2_000, T0 + 2 * 3_600_000), 0);
  assert.equal(users.passivate(2_000, LONG_AFTER), 1);
});

Deno.test("UserFamily.passivate() evicts idle users only", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ userId: "idle" }), 1_000, batch);
  users.apply(ev({ userId: "busy" }), 5_000, batch);
  assert.equal(users.entityCount, 2);
  assert.equal(users.passivate(2_000, LONG_AFTER), 1);
  assert.equal(users.entityCount, 1);
  assert.equal(users.passivate(2_000, LONG_AFTER), 0);
});

Deno.test("UserFamily.passivate() drops an evicted user's open segment", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ userId: "idle", deviceId: "d-idle", type: "PLAY", atMs: T0 }), 1_000, batch);
  users.apply(ev({ userId: "busy", deviceId: "d-busy", type: "PLAY", atMs: T0 }), 5_000, batch);
  users.passivate(2_000, LONG_AFTER);
  users.apply(
    ev({ userId: "idle", deviceId: "d-idle", type: "STOP", atMs: T0 + MINUTE }),
    6_000,
    batch,
  );
  users.apply(
    ev({ userId: "busy", deviceId: "d-busy", type: "STOP", atMs: T0 + MINUTE }),
    6_000,
    batch,
  );
  assert.equal(batch.devices.get("d-idle")?.watchTimeMs, 0);
  assert.equal(batch.devices.get("d-busy")?.watchTimeMs, MINUTE);
  assert.equal(batch.counters.get("watch_time_ms"), MINUTE);
});

Deno.test({
  name: "UserFamily.passivate() keeps a user's regions seen within the sharing window",
  fn() {
    const users = family();
    const batch = emptyBatch();
    const maxIdleMs = testConfig().maxIdleMs;
    for (const [i, region] of ["DE", "FR", "IT"].entries()) {
      const atMs = T0 + i * 20 * MINUTE;
      users.passivate(atMs - maxIdleMs, atMs);
      users.apply(ev({ region, atMs }), atMs, batch);
    }
    const sharing = flagsOf(batch, "account_sharing");
    assert.equal(sharing.length, 1);
    assert.deepEqual(sharing[0].evidence.observed["regions"], ["DE", "FR", "IT"]);
  },
});

Deno.test("UserFamily.passivate() keeps duplicate detection for evicted users", () => {
  const users = family();
  const event = ev();
  users.apply(event, 1_000, emptyBatch());
  users.passivate(2_000, LONG_AFTER);
  const batch = emptyBatch();
  users.apply({ ...event }, 3_000, batch);
  assert.equal(batch.counters.get("duplicate_events"), 1);
  assert.equal(batch.rawEvents.length, 0);
});

Deno.test("UserFamily.apply() advances the user shard checkpoint to the highest position", () => {
  const users = family();
  const batch = emptyBatch();
  const key = `user:${shardOf("user-1", SHARDS)}`;
  users.apply(makeEvent({ eventId: "a", position: 5 }), NOW, batch);
  users.apply(makeEvent({ eventId: "b", position: 9 }), NOW, batch);
  users.apply(makeEvent({ eventId: "c", position: 3 }), NOW, batch);
  assert.equal(batch.checkpoints.get(key), 9);
  users.apply(makeEvent({ eventId: "a", position: 12 }), NOW, batch);
  assert.equal(batch.checkpoints.get(key), 12, "a duplicate was still applied");
  users.apply(makeEvent({ eventId: "d", position: 13, isLate: true }), NOW, batch);
  assert.equal(batch.checkpoints.get(key), 13, "a late event was still applied");
  assert.equal(batch.checkpoints.size, 1);
});

Deno.test("UserFamily.apply() fills every aggregate map for a small known event set", () => {
  const users = family();
  const batch = emptyBatch();
  const de = { userId: "user-1", deviceId: "device-1", region: "DE", isEu: true };
  const us = { userId: "user-2", deviceId: "device-2", region: "US", isEu: false };
  users.apply(ev({ ...de, contentId: "content-1", type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(
    ev({
      ...de,
      contentId: "content-1",
      type: "ERROR",
      errorCode: "DRM_LICENSE_FAILED",
      atMs: T0 + 30_000,
    }),
    NOW,
    batch,
  );
  users.apply(
    ev({ ...us, contentId: "content-1", type: "PLAY", atMs: T0, metadata: { platform: "WebOS" } }),
    NOW,
    batch,
  );
  users.apply(
    ev({ ...us, contentId: "content-1", type: "STOP", atMs: T0 + 45_000, metadata: {} }),
    NOW,
    batch,
  );
  users.apply(
    ev({
      ...us,
      contentId: "content-2",
      type: "PLAY",
      atMs: T0 + 50_000,
      metadata: { platform: "webos" },
    }),
    NOW,
    batch,
  );

  const counts = (events: number, plays: number, errors: number, watchTimeMs: number) => ({
    events,
    plays,
    errors,
    watchTimeMs,
  });
  assert.deepEqual(
    batch.contents,
    new Map([["content-1", counts(4, 2, 1, 75_000)], ["content-2", counts(1, 1, 0, 0)]]),
  );
  assert.deepEqual(
    batch.contentRegions,
    new Map([
      ["content-1" + KEY_SEP + "DE", counts(2, 1, 1, 30_000)],
      ["content-1" + KEY_SEP + "US", counts(2, 1, 0, 45_000)],
      ["content-2" + KEY_SEP + "US", counts(1, 1, 0, 0)],
    ]),
  );
  assert.deepEqual(
    batch.regions,
    new Map([
      ["DE", { ...counts(2, 1, 1, 30_000), isEu: true }],
      ["US", { ...counts(3, 2, 0, 45_000), isEu: false }],
    ]),
  );
  assert.deepEqual(
    batch.devices,
    new Map([["device-1", counts(2, 1, 1, 30_000)], ["device-2", counts(3, 2, 0, 45_000)]]),
  );
  assert.deepEqual(batch.regionErrorCodes, new Map([["DE" + KEY_SEP + "DRM_LICENSE_FAILED", 1]]));
  assert.deepEqual(
    batch.regionPlatforms,
    new Map([
      ["DE" + KEY_SEP + "tizen", 2],
      ["US" + KEY_SEP + "webos", 2],
      ["US" + KEY_SEP + "unknown", 1],
    ]),
  );
  assert.deepEqual(
    batch.counters,
    new Map([
      ["events:PLAY", 3],
      ["events:ERROR", 1],
      ["watch_time_ms", 75_000],
      ["events:STOP", 1],
    ]),
  );
  assert.equal(batch.rawEvents.length, 5);
  assert.equal(batch.flags.size, 0);
});
