import assert from "node:assert/strict";
import { type FactDims, factKey, type FlushBatch, hourOf, KEY_SEP } from "../db/flush_batch.ts";
import { addPacked, packedRegister } from "../db/hll.ts";
import type { TelemetryEvent } from "../rules/mod.ts";
import { makeEvent, makeFactDims, T0, testConfig } from "../tests/fixtures.ts";
import { IpAnonymizer } from "../routes/ip_anonymizer.ts";
import { emptyBatch } from "./pending.ts";
import { shardOf } from "./shard_of.ts";
import {
  ipHashKeyIdOf,
  networkFingerprint,
  UserFamily,
  type UserFamilyOptions,
} from "./user_family.ts";

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

function flagsOf(batch: FlushBatch, rule: string) {
  return [...batch.flags.values()].filter((f) => f.rule === rule);
}

const H0 = hourOf(T0);

const dims = makeFactDims;

/** Sums the fact rows whose dimensions match `where` (every hour unless `where.hourMs` is set). */
function sumFacts(
  batch: FlushBatch,
  where: Partial<FactDims> & { hourMs?: number } = {},
): { events: number; plays: number; errors: number; watchTimeMs: number } {
  const total = { events: 0, plays: 0, errors: 0, watchTimeMs: 0 };
  for (const [key, row] of batch.facts) {
    const [hour, contentId, region, platform, appVersion, subscriptionPlan] = key.split(KEY_SEP);
    const fields: Record<string, string> = {
      contentId,
      region,
      platform,
      appVersion,
      subscriptionPlan,
    };
    if (where.hourMs !== undefined && Number(hour) !== where.hourMs) continue;
    const isMatch = Object.entries(where).every(([name, value]) =>
      name === "hourMs" || fields[name] === value
    );
    if (!isMatch) continue;
    total.events += row.events;
    total.plays += row.plays;
    total.errors += row.errors;
    total.watchTimeMs += row.watchTimeMs;
  }
  return total;
}

/** Total watch time over every fact row. */
function watchTimeMs(batch: FlushBatch): number {
  return sumFacts(batch).watchTimeMs;
}

/** Summed watch time of one device over every hour. */
function deviceWatchTimeMs(batch: FlushBatch, deviceId: string): number {
  let total = 0;
  for (const [key, row] of batch.devices) {
    if (key.split(KEY_SEP)[0] === deviceId) total += row.watchTimeMs;
  }
  return total;
}

/** Events of one type over every hour. */
function typeEvents(batch: FlushBatch, type: string): number {
  let total = 0;
  for (const [key, row] of batch.types) if (key.split(KEY_SEP)[1] === type) total += row.events;
  return total;
}

function counts(events: number, plays: number, errors: number, watchTimeMs: number) {
  return { events, plays, errors, watchTimeMs };
}

function sketchOf(...userIds: string[]): Map<number, number> {
  const sketch = new Map<number, number>();
  for (const userId of userIds) addPacked(sketch, packedRegister(userId));
  return sketch;
}

Deno.test("UserFamily.apply() counts PLAY→PAUSE→PLAY→STOP as the sum of the playing segments", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "PAUSE", atMs: T0 + 60_000 }), NOW, batch);
  users.apply(ev({ type: "PLAY", atMs: T0 + 90_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 150_000 }), NOW, batch);
  assert.deepEqual(batch.facts, new Map([[factKey(H0, dims()), counts(4, 2, 0, 120_000)]]));
  assert.deepEqual(
    batch.devices,
    new Map([["device-1" + KEY_SEP + H0, counts(4, 2, 0, 120_000)]]),
  );
});

Deno.test("UserFamily.apply() keeps separate segments per device of one user", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", deviceId: "tv", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "PLAY", deviceId: "phone", atMs: T0 + 10_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", deviceId: "tv", atMs: T0 + 30_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", deviceId: "phone", atMs: T0 + 70_000 }), NOW, batch);
  assert.equal(batch.devices.get("tv" + KEY_SEP + H0)?.watchTimeMs, 30_000);
  assert.equal(batch.devices.get("phone" + KEY_SEP + H0)?.watchTimeMs, 60_000);
  assert.equal(watchTimeMs(batch), 90_000);
});

Deno.test("UserFamily.apply() caps a segment longer than maxSegmentMs", () => {
  const users = family({ maxSegmentMs: HOUR });
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 3 * HOUR }), NOW, batch);
  assert.equal(watchTimeMs(batch), HOUR);
  assert.equal(sumFacts(batch, { contentId: "content-1" }).watchTimeMs, HOUR);
});

Deno.test("UserFamily.apply() does not end a segment on SEEK", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "SEEK", atMs: T0 + 20_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 50_000 }), NOW, batch);
  assert.equal(watchTimeMs(batch), 50_000);
  assert.deepEqual(batch.types.get(H0 + KEY_SEP + "SEEK"), { events: 1, lateEvents: 0 });
});

Deno.test("UserFamily.apply() ends a segment on ERROR", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "ERROR", errorCode: "E1", atMs: T0 + 5_000 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 60_000 }), NOW, batch);
  assert.equal(watchTimeMs(batch), 5_000);
});

Deno.test("UserFamily.apply() counts an out-of-order PAUSE before its PLAY as zero, not negative", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 + 60_000 }), NOW, batch);
  users.apply(ev({ type: "PAUSE", atMs: T0 }), NOW, batch);
  assert.equal(sumFacts(batch, { contentId: "content-1" }).watchTimeMs, 0);
  assert.equal(deviceWatchTimeMs(batch, "device-1"), 0);
  assert.equal(sumFacts(batch, { contentId: "content-1" }).events, 2);
});

Deno.test("UserFamily.apply() counts a repeated event id once and counts the duplicate", () => {
  const users = family();
  const batch = emptyBatch();
  const event = ev({ type: "PLAY", isEu: true, hasConsent: false });
  users.apply(event, NOW, batch);
  users.apply({ ...event }, NOW, batch);
  assert.equal(batch.counters.get("duplicate_events"), 1);
  assert.equal(typeEvents(batch, "PLAY"), 1);
  assert.equal(sumFacts(batch, { contentId: "content-1" }).events, 1);
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
  assert.equal(later.facts.size, 0);
  assert.equal(later.types.size, 0);
});

Deno.test("UserFamily.apply() counts a late event 3 hours old in its own hour and flags privacy", () => {
  const users = family();
  const batch = emptyBatch();
  const atMs = T0 - 3 * HOUR + 10 * MINUTE;
  const late = ev({ type: "PLAY", atMs, isLate: true, hasConsent: false, region: "FR" });
  users.apply(late, NOW, batch);
  const hourMs = hourOf(atMs);
  assert.equal(hourMs, H0 - 3 * HOUR);
  assert.deepEqual(
    batch.types,
    new Map([[hourMs + KEY_SEP + "PLAY", { events: 1, lateEvents: 1 }]]),
  );
  assert.deepEqual(
    batch.facts,
    new Map([[factKey(hourMs, dims({ region: "FR" })), counts(1, 1, 0, 0)]]),
  );
  assert.deepEqual(batch.devices, new Map([["device-1" + KEY_SEP + hourMs, counts(1, 1, 0, 0)]]));
  assert.deepEqual(batch.viewers.get("" + KEY_SEP + hourMs), sketchOf("user-1"));
  assert.deepEqual(batch.rawEvents.map((r) => [r.eventId, r.isLate]), [[late.eventId, true]]);
  const privacy = flagsOf(batch, "privacy");
  assert.equal(privacy.length, 1);
  assert.equal(privacy[0].eventId, late.eventId);
  assert.deepEqual(privacy[0].evidence.event_ids, [late.eventId]);
  assert.equal(privacy[0].region, "FR");
  assert.equal(privacy[0].evidence.observed["too_late_for_windows"], true);
  assert.deepEqual(
    batch.flaggedEvents,
    new Map([[hourMs + KEY_SEP + "privacy" + KEY_SEP + "FR", 1]]),
  );
});

Deno.test("UserFamily.apply() counts a day-old late event and its watch time in that day's hour", () => {
  const users = family();
  const batch = emptyBatch();
  const dayAgoMs = T0 - 24 * HOUR;
  users.apply(ev({ type: "PLAY", atMs: dayAgoMs, isLate: true }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: dayAgoMs + 20 * MINUTE, isLate: true }), NOW, batch);
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  const dayAgoHour = hourOf(dayAgoMs);
  assert.deepEqual(
    batch.types,
    new Map([
      [dayAgoHour + KEY_SEP + "PLAY", { events: 1, lateEvents: 1 }],
      [dayAgoHour + KEY_SEP + "STOP", { events: 1, lateEvents: 1 }],
      [H0 + KEY_SEP + "PLAY", { events: 1, lateEvents: 0 }],
    ]),
  );
  assert.deepEqual(
    batch.facts,
    new Map([
      [factKey(dayAgoHour, dims()), counts(2, 1, 0, 20 * MINUTE)],
      [factKey(H0, dims()), counts(1, 1, 0, 0)],
    ]),
  );
  assert.equal(sumFacts(batch).events, 3);
  assert.equal(batch.rawEvents.length, 3);
});

Deno.test("UserFamily.apply() leaves the open segment alone on a late STOP older than its PLAY", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 - 3 * HOUR, isLate: true }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 2 * MINUTE }), NOW, batch);
  assert.equal(watchTimeMs(batch), 2 * MINUTE);
  assert.deepEqual(batch.types.get(hourOf(T0 - 3 * HOUR) + KEY_SEP + "STOP"), {
    events: 1,
    lateEvents: 1,
  });
});

Deno.test("UserFamily.apply() does not count late events towards account sharing", () => {
  const users = family();
  const batch = emptyBatch();
  for (const [i, region] of ["DE", "FR", "IT", "ES", "PL"].entries()) {
    users.apply(ev({ region, atMs: T0 - 3 * HOUR + i * MINUTE, isLate: true }), NOW, batch);
  }
  assert.equal(flagsOf(batch, "account_sharing").length, 0);
  assert.equal(typeEvents(batch, "PLAY"), 5);
  users.apply(ev({ region: "NL", atMs: T0 }), NOW, batch);
  users.apply(ev({ region: "BE", atMs: T0 + MINUTE }), NOW, batch);
  assert.equal(flagsOf(batch, "account_sharing").length, 0, "only 2 on-time regions were seen");
});

Deno.test("UserFamily.apply() counts a LOGIN event without watch time, session or viewer", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "LOGIN", userId: "user-2", atMs: T0 + MINUTE }), NOW, batch);
  users.apply(ev({ type: "LOGIN", atMs: T0 + 2 * MINUTE }), NOW, batch);
  users.apply(ev({ type: "STOP", atMs: T0 + 3 * MINUTE }), NOW, batch);
  assert.deepEqual(batch.types.get(H0 + KEY_SEP + "LOGIN"), { events: 2, lateEvents: 0 });
  assert.deepEqual(batch.facts, new Map([[factKey(H0, dims()), counts(4, 1, 0, 3 * MINUTE)]]));
  assert.equal(watchTimeMs(batch), 3 * MINUTE, "a LOGIN does not end the open segment");
  assert.deepEqual(batch.viewers.get("" + KEY_SEP + H0), sketchOf("user-1"));
  assert.equal(batch.rawEvents.length, 4);
});

Deno.test("UserFamily.apply() gives a lone LOGIN no watch time and no viewer sketch", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "LOGIN", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "LOGIN", atMs: T0 + 10 * MINUTE }), NOW, batch);
  assert.deepEqual(batch.types, new Map([[H0 + KEY_SEP + "LOGIN", { events: 2, lateEvents: 0 }]]));
  assert.deepEqual(batch.facts, new Map([[factKey(H0, dims()), counts(2, 0, 0, 0)]]));
  assert.equal(batch.viewers.size, 0);
});

Deno.test("UserFamily.apply() counts the error code of an ERROR but not of a PLAY that carries one", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ type: "PLAY", errorCode: "BUFFERING", atMs: T0 }), NOW, batch);
  users.apply(ev({ type: "ERROR", errorCode: "DRM_LICENSE_FAILED", atMs: T0 + 1 }), NOW, batch);
  assert.deepEqual(
    batch.errorCodes,
    new Map([[factKey(H0, dims()) + KEY_SEP + "DRM_LICENSE_FAILED", 1]]),
  );
  assert.equal(sumFacts(batch).errors, 1);
  assert.deepEqual(batch.rawEvents.map((r) => r.errorCode), ["BUFFERING", "DRM_LICENSE_FAILED"]);
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

Deno.test("UserFamily.recordOptOut() makes the user's events after it flagged by retention", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ eventId: "before", atMs: T0 }), NOW, batch);
  users.recordOptOut("user-1", { type: "deletion", sinceMs: T0 + MINUTE, source: "api" });
  users.apply(ev({ eventId: "after", atMs: T0 + 2 * MINUTE }), NOW, batch);
  const retention = flagsOf(batch, "retention");
  assert.deepEqual(retention.map((f) => f.eventId), ["after"]);
  assert.equal(retention[0].level, "HIGH");
  assert.equal(retention[0].ruleVersion, 2);
  assert.equal(retention[0].evidence.observed["request_type"], "deletion");
});

Deno.test("UserFamily.apply() does not flag an event from before the request that arrives after it", () => {
  const users = family();
  const batch = emptyBatch();
  users.recordOptOut("user-1", { type: "deletion", sinceMs: T0 + MINUTE, source: "api" });
  // A TV that was offline delivers what it recorded before the request, then what came after.
  const offline = ev({ eventId: "offline", atMs: T0 + 30_000, receivedAtMs: T0 + HOUR });
  const after = ev({ eventId: "after", atMs: T0 + MINUTE + 1, receivedAtMs: T0 + HOUR });
  users.apply(offline, NOW, batch);
  users.apply(after, NOW, batch);
  assert.deepEqual(flagsOf(batch, "retention").map((f) => f.eventId), ["after"]);
});

Deno.test("UserFamily.apply() flags a do-not-track event of a user already opted out via the API", () => {
  const users = family();
  const batch = emptyBatch();
  users.recordOptOut("user-1", { type: "deletion", sinceMs: T0, source: "api" });
  const dnt = ev({ doNotTrack: true, hasDoNotTrack: true, atMs: T0 + 1 });
  users.apply(dnt, NOW, batch);
  assert.deepEqual(flagsOf(batch, "retention").map((f) => f.eventId), [dnt.eventId]);
  assert.deepEqual(batch.optOuts, []);
});

Deno.test("UserFamily.apply() lets a later do_not_track false turn do-not-track off", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ eventId: "on", doNotTrack: true, hasDoNotTrack: true, atMs: T0 }), NOW, batch);
  users.apply(ev({ eventId: "during", atMs: T0 + MINUTE }), NOW, batch);
  const setOff = ev({
    eventId: "off",
    doNotTrack: false,
    hasDoNotTrack: true,
    atMs: T0 + 2 * MINUTE,
  });
  users.apply(setOff, NOW, batch);
  users.apply(ev({ eventId: "later", atMs: T0 + 3 * MINUTE }), NOW, batch);
  // Delivered last by a TV that was offline: it happened while do-not-track was on.
  users.apply(ev({ eventId: "offline", atMs: T0 + 90_000 }), NOW, batch);
  assert.deepEqual(flagsOf(batch, "retention").map((f) => f.eventId).sort(), [
    "during",
    "offline",
  ]);
  assert.equal(batch.optOuts.length, 1);
});

Deno.test("UserFamily.apply() reads a missing do_not_track as no setting, not as off", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ doNotTrack: true, hasDoNotTrack: true, atMs: T0 }), NOW, batch);
  // Absent on the wire, or read back from the postgres log: doNotTrack false, hasDoNotTrack not true.
  users.apply(ev({ eventId: "silent", hasDoNotTrack: false, atMs: T0 + MINUTE }), NOW, batch);
  users.apply(ev({ eventId: "replayed", atMs: T0 + 2 * MINUTE }), NOW, batch);
  assert.deepEqual(flagsOf(batch, "retention").map((f) => f.eventId), ["silent", "replayed"]);
});

Deno.test("UserFamily.apply() keeps a do-not-track filed through the API whatever events say", () => {
  const users = family();
  const batch = emptyBatch();
  users.recordOptOut("user-1", { type: "do_not_track", sinceMs: T0, source: "api" });
  users.apply(ev({ eventId: "off", hasDoNotTrack: true, atMs: T0 + MINUTE }), NOW, batch);
  users.apply(ev({ eventId: "later", atMs: T0 + 2 * MINUTE }), NOW, batch);
  const retention = flagsOf(batch, "retention");
  assert.deepEqual(retention.map((f) => f.eventId), ["off", "later"]);
  assert.ok(retention.every((f) => f.evidence.observed["request_source"] === "api"));
});

Deno.test("UserFamily.recordOptOut() takes a do-not-track from events as a setting later ones turn off", () => {
  const users = family();
  const batch = emptyBatch();
  // As loaded from privacy_requests at start (source "event").
  users.recordOptOut("user-1", { type: "do_not_track", sinceMs: T0, source: "event" });
  users.apply(ev({ eventId: "during", atMs: T0 + MINUTE }), NOW, batch);
  users.apply(ev({ eventId: "off", hasDoNotTrack: true, atMs: T0 + 2 * MINUTE }), NOW, batch);
  users.apply(ev({ eventId: "later", atMs: T0 + 3 * MINUTE }), NOW, batch);
  assert.deepEqual(flagsOf(batch, "retention").map((f) => f.eventId), ["during"]);
});

Deno.test("UserFamily.apply() does not start a do-not-track history from an off setting alone", () => {
  const users = family();
  const batch = emptyBatch();
  users.apply(ev({ eventId: "off", hasDoNotTrack: true, atMs: T0 }), NOW, batch);
  users.apply(ev({ eventId: "next", atMs: T0 + MINUTE }), NOW, batch);
  assert.equal(flagsOf(batch, "retention").length, 0);
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
  // The evidence is the latest snapshot: the last event seen from each region.
  assert.deepEqual(sharing[0].evidence.event_ids, ["de", "fr", "it2"]);
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

Deno.test("UserFamily.apply() counts networks only within the key of the event's IP hash", () => {
  const keyA = new IpAnonymizer("old-secret-0123456789", "A");
  const keyB = new IpAnonymizer("new-secret-0123456789", "B");
  const users = family();
  const batch = emptyBatch();
  let atMs = T0;
  const seeIp = (anonymizer: IpAnonymizer, ip: string) =>
    users.apply(ev({ ipHash: anonymizer.anonymize(ip).hash, atMs: atMs++ }), NOW, batch);
  for (const ip of ["10.0.0.1", "10.0.1.1", "10.0.2.1"]) seeIp(keyA, ip);
  // After the rotation: one address seen before and two new ones. Mixing keys would count 4 and 6.
  for (const ip of ["10.0.0.1", "10.0.3.1", "10.0.4.1"]) seeIp(keyB, ip);
  assert.equal(flagsOf(batch, "account_sharing").length, 0);
  seeIp(keyB, "10.0.5.1");
  const sharing = flagsOf(batch, "account_sharing");
  assert.equal(sharing.length, 1);
  assert.equal(sharing[0].level, "MEDIUM");
  assert.equal(sharing[0].evidence.observed["distinct_ips"], 4);
});

Deno.test("UserFamily.apply() keeps hashes without a key id in a legacy group of their own", () => {
  const keyed = new IpAnonymizer("new-secret-0123456789", "B");
  const users = family();
  const batch = emptyBatch();
  for (let i = 1; i <= 3; i++) {
    users.apply(ev({ ipHash: keyed.anonymize(`10.0.0.${i}`).hash, atMs: T0 + i }), NOW, batch);
  }
  users.apply(ev({ ipHash: "f".repeat(64), atMs: T0 + 4 }), NOW, batch);
  assert.equal(flagsOf(batch, "account_sharing").length, 0);
  for (let i = 1; i <= 3; i++) users.apply(ev({ ipHash: `h-${i}`, atMs: T0 + 4 + i }), NOW, batch);
  const sharing = flagsOf(batch, "account_sharing");
  assert.equal(sharing.length, 1);
  assert.equal(sharing[0].evidence.observed["distinct_ips"], 4);
});

Deno.test("ipHashKeyIdOf() reads the key id and its separator, empty for a legacy hash", () => {
  assert.equal(ipHashKeyIdOf("k-1~" + "a".repeat(22)), "k-1~");
  // The longer form of before is another group: its hashes never meet today's.
  assert.equal(ipHashKeyIdOf("k-1:" + "a".repeat(64)), "k-1:");
  assert.equal(ipHashKeyIdOf("a".repeat(64)), "");
  assert.equal(ipHashKeyIdOf("erased-abc"), "");
});

Deno.test("networkFingerprint() is a small integer, stable, and tells 100,000 real hashes apart", async () => {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode("test-secret"),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const seen = new Set<number>();
  for (let i = 0; i < 100_000; i++) {
    const mac = new Uint8Array(
      await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`10.${i >> 8}.${i & 255}.1`)),
    );
    const hash = "k1:" + Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
    const fingerprint = networkFingerprint(hash);
    assert.ok(Number.isInteger(fingerprint) && fingerprint >= 0 && fingerprint < 2 ** 30);
    assert.equal(networkFingerprint(hash), fingerprint);
    seen.add(fingerprint);
  }
  // Expected collisions among 100,000 random 30-bit values: about 4.7.
  assert.ok(seen.size >= 100_000 - 20, `${100_000 - seen.size} collisions`);
});

Deno.test("UserFamily shares at most 4,096 region strings, however many codes clients invent", () => {
  const users = family();
  const batch = emptyBatch();
  for (let i = 0; i < 5_000; i++) {
    const region = `X${String.fromCharCode(65 + (i % 26))}-${i.toString(36).toUpperCase()}`;
    users.apply(ev({ userId: `u-${i}`, region, atMs: T0 + i }), NOW, batch);
  }
  assert.equal(users.sharedRegionCount, 4_096);
  // Past the cap regions still count by value: one user in three invented regions is flagged.
  users.apply(ev({ userId: "roamer", region: "QQ-ZZ1", atMs: T0 }), NOW, batch);
  users.apply(ev({ userId: "roamer", region: "QQ-ZZ2", atMs: T0 + 1 }), NOW, batch);
  users.apply(ev({ userId: "roamer", region: "QQ-ZZ3", atMs: T0 + 2 }), NOW, batch);
  users.apply(ev({ userId: "roamer", region: "QQ-ZZ1", atMs: T0 + 3 }), NOW, batch);
  const roamer = flagsOf(batch, "account_sharing").filter((f) => f.entityId === "roamer");
  assert.equal(roamer.length > 0, true, "regions past the cap are still counted");
  assert.equal(users.sharedRegionCount, 4_096);
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
  assert.equal(deviceWatchTimeMs(batch, "d-idle"), 0);
  assert.equal(deviceWatchTimeMs(batch, "d-busy"), MINUTE);
  assert.equal(watchTimeMs(batch), MINUTE);
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
      subscriptionPlan: "premium",
      metadata: { platform: "webos", app_version: "4.2.0" },
    }),
    NOW,
    batch,
  );

  const c1De = factKey(H0, dims());
  assert.deepEqual(
    batch.facts,
    new Map([
      [c1De, counts(2, 1, 1, 30_000)],
      [factKey(H0, dims({ region: "US", platform: "webos" })), counts(1, 1, 0, 0)],
      [factKey(H0, dims({ region: "US", platform: "unknown" })), counts(1, 0, 0, 45_000)],
      [
        factKey(
          H0,
          dims({
            contentId: "content-2",
            region: "US",
            platform: "webos",
            appVersion: "4.2.0",
            subscriptionPlan: "premium",
          }),
        ),
        counts(1, 1, 0, 0),
      ],
    ]),
  );
  assert.deepEqual(
    batch.types,
    new Map([
      [H0 + KEY_SEP + "PLAY", { events: 3, lateEvents: 0 }],
      [H0 + KEY_SEP + "ERROR", { events: 1, lateEvents: 0 }],
      [H0 + KEY_SEP + "STOP", { events: 1, lateEvents: 0 }],
    ]),
  );
  assert.deepEqual(
    batch.devices,
    new Map([
      ["device-1" + KEY_SEP + H0, counts(2, 1, 1, 30_000)],
      ["device-2" + KEY_SEP + H0, counts(3, 2, 0, 45_000)],
    ]),
  );
  assert.deepEqual(batch.errorCodes, new Map([[c1De + KEY_SEP + "DRM_LICENSE_FAILED", 1]]));
  assert.deepEqual(
    batch.viewers,
    new Map([
      ["" + KEY_SEP + H0, sketchOf("user-1", "user-2")],
      ["c:content-1" + KEY_SEP + H0, sketchOf("user-1", "user-2")],
      ["r:DE" + KEY_SEP + H0, sketchOf("user-1")],
      ["r:US" + KEY_SEP + H0, sketchOf("user-2")],
      ["c:content-2" + KEY_SEP + H0, sketchOf("user-2")],
    ]),
  );
  assert.equal(watchTimeMs(batch), 75_000);
  assert.deepEqual(batch.counters, new Map());
  assert.equal(batch.rawEvents.length, 5);
  assert.equal(batch.flags.size, 0);
});

Deno.test("UserFamily.apply() raises one privacy flag per user and day, counting every event", () => {
  const users = family();
  const batch = emptyBatch();
  for (let i = 0; i < 3; i++) {
    users.apply(ev({ eventId: `p${i}`, isEu: true, hasConsent: false, atMs: T0 + i }), NOW, batch);
  }
  const privacy = flagsOf(batch, "privacy");
  assert.equal(privacy.length, 1);
  assert.equal(privacy[0].flaggedEventCount, 3);
  assert.equal(privacy[0].eventId, "p0");
  assert.deepEqual(privacy[0].evidence.event_ids, ["p0", "p1", "p2"]);
});

Deno.test("UserFamily.apply() compares countries, not subdivisions, with SHARING_REGION_LEVEL=country", () => {
  const events = ["US-CA", "US-NY", "US-TX", "US-WA"].map((region, i) =>
    ev({ eventId: `s${i}`, region, isEu: false, atMs: T0 + i * MINUTE })
  );
  const bySubdivision = emptyBatch();
  const subdivisions = family();
  for (const event of events) subdivisions.apply(event, NOW, bySubdivision);
  assert.equal(flagsOf(bySubdivision, "account_sharing").length, 1);
  const byCountry = emptyBatch();
  const countries = family({
    thresholds: { ...testConfig().thresholds, sharingRegionLevel: "country" },
  });
  for (const event of events) countries.apply(event, NOW, byCountry);
  assert.equal(flagsOf(byCountry, "account_sharing").length, 0);
});

Deno.test("UserFamily gives a user who takes an evicted user's place none of their regions", () => {
  const users = family();
  const batch = emptyBatch();
  for (const [i, region] of ["DE", "FR"].entries()) {
    users.apply(ev({ userId: "gone", region, atMs: T0 + i * MINUTE }), 1_000, batch);
  }
  assert.equal(users.passivate(2_000, LONG_AFTER), 1);
  for (const [i, region] of ["IT", "ES"].entries()) {
    users.apply(ev({ userId: "new", region, atMs: T0 + i * MINUTE }), 3_000, batch);
  }
  assert.equal(flagsOf(batch, "account_sharing").length, 0, "2 regions, not 4");
  users.apply(ev({ userId: "new", region: "PT", atMs: T0 + 2 * MINUTE }), 3_000, batch);
  const [flag] = flagsOf(batch, "account_sharing");
  assert.deepEqual(flag.evidence.observed["regions"], ["ES", "IT", "PT"]);
});

Deno.test("UserFamily gives a user who takes an evicted user's place none of their privacy ids", () => {
  const users = family();
  const batch = emptyBatch();
  const unconsented = { isEu: true, hasConsent: false };
  users.apply(ev({ userId: "gone", eventId: "g1", ...unconsented, atMs: T0 }), 1_000, batch);
  assert.equal(users.passivate(2_000, LONG_AFTER), 1);
  const later = emptyBatch();
  users.apply(ev({ userId: "new", eventId: "n1", ...unconsented, atMs: T0 + 1 }), 3_000, later);
  const [flag] = flagsOf(later, "privacy");
  assert.deepEqual(flag.evidence.event_ids, ["n1"]);
});
