import assert from "node:assert/strict";
import { deepFreeze, makeEvent, T0, testConfig } from "../tests/fixtures.ts";
import {
  ACCOUNT_SHARING_RULE_VERSION,
  accountSharingRule,
  type SharingFacts,
} from "./account_sharing.ts";

// Defaults: window 1 h, MEDIUM above 2 regions or 3 IPs, HIGH above 4 regions or 6 IPs.
const THRESHOLDS = testConfig().thresholds;
const HOUR = 3_600_000;
const REGIONS = ["BR", "DE", "FR", "JP", "US-NY", "US-CA"];

function facts(regionCount: number, ipHashCount = 1, atMs = T0): SharingFacts {
  return {
    windowStartMs: atMs - HOUR,
    windowEndMs: atMs,
    regions: REGIONS.slice(0, regionCount),
    ipHashCount,
    sampleEventIds: REGIONS.slice(0, regionCount).map((_, i) => `e-${i + 1}`),
  };
}

function levelFor(regionCount: number, ipHashCount: number): string | null {
  return accountSharingRule(makeEvent(), facts(regionCount, ipHashCount), THRESHOLDS)?.level ??
    null;
}

Deno.test("accountSharingRule() does not flag exactly the allowed number of regions", () => {
  assert.equal(THRESHOLDS.sharingMaxRegions, 2);
  assert.equal(levelFor(2, 1), null);
});

Deno.test("accountSharingRule() flags one region over the allowed number as MEDIUM", () => {
  assert.equal(levelFor(3, 1), "MEDIUM");
});

Deno.test("accountSharingRule() keeps MEDIUM at the high bound of regions and is HIGH past it", () => {
  assert.equal(THRESHOLDS.sharingHighRegions, 4);
  assert.equal(levelFor(4, 1), "MEDIUM");
  assert.equal(levelFor(5, 1), "HIGH");
});

Deno.test("accountSharingRule() applies the IP bounds the same way as the region bounds", () => {
  assert.equal(THRESHOLDS.sharingMaxIps, 3);
  assert.equal(THRESHOLDS.sharingHighIps, 6);
  assert.equal(levelFor(1, 3), null);
  assert.equal(levelFor(1, 4), "MEDIUM");
  assert.equal(levelFor(1, 6), "MEDIUM");
  assert.equal(levelFor(1, 7), "HIGH");
});

Deno.test("accountSharingRule() is HIGH when either bound is passed even if the other is MEDIUM", () => {
  assert.equal(levelFor(3, 7), "HIGH");
  assert.equal(levelFor(5, 4), "HIGH");
});

Deno.test("accountSharingRule() follows configured thresholds", () => {
  const strict = { ...THRESHOLDS, sharingMaxRegions: 1, sharingHighRegions: 2 };
  assert.equal(accountSharingRule(makeEvent(), facts(2), strict)?.level, "MEDIUM");
  assert.equal(accountSharingRule(makeEvent(), facts(3), strict)?.level, "HIGH");
});

Deno.test("accountSharingRule() gives two events in one period the same flag key", () => {
  const early = makeEvent({ eventId: "e-a", atMs: T0 + 10 * 60_000 });
  const late = makeEvent({ eventId: "e-b", atMs: T0 + HOUR - 1 });
  const a = accountSharingRule(early, facts(3, 1, early.atMs), THRESHOLDS);
  const b = accountSharingRule(late, facts(3, 1, late.atMs), THRESHOLDS);
  assert.ok(a !== null && b !== null);
  assert.equal(a.flagKey, `account_sharing:user-1:${T0}`);
  assert.equal(b.flagKey, a.flagKey);
});

Deno.test("accountSharingRule() gives an event in the next period a new flag key", () => {
  const before = makeEvent({ atMs: T0 + HOUR - 1 });
  const next = makeEvent({ atMs: T0 + HOUR });
  const a = accountSharingRule(before, facts(3, 1, before.atMs), THRESHOLDS);
  const b = accountSharingRule(next, facts(3, 1, next.atMs), THRESHOLDS);
  assert.ok(a !== null && b !== null);
  assert.notEqual(a.flagKey, b.flagKey);
  assert.equal(b.flagKey, `account_sharing:user-1:${T0 + HOUR}`);
});

Deno.test("accountSharingRule() keys flags per user", () => {
  const a = accountSharingRule(makeEvent({ userId: "user-1" }), facts(3), THRESHOLDS);
  const b = accountSharingRule(makeEvent({ userId: "user-2" }), facts(3), THRESHOLDS);
  assert.ok(a !== null && b !== null);
  assert.notEqual(a.flagKey, b.flagKey);
  assert.equal(b.entityId, "user-2");
});

Deno.test("accountSharingRule() records thresholds, window, observed values and event ids", () => {
  const event = makeEvent({ eventId: "e-3", region: "FR", atMs: T0 + 30 * 60_000 });
  const flag = accountSharingRule(event, facts(3, 2, event.atMs), THRESHOLDS);
  assert.ok(flag !== null);
  assert.equal(flag.rule, "account_sharing");
  assert.equal(flag.ruleVersion, ACCOUNT_SHARING_RULE_VERSION);
  assert.equal(flag.entityType, "user");
  assert.equal(flag.entityId, "user-1");
  assert.equal(flag.eventId, "e-3");
  assert.equal(flag.region, "FR");
  assert.equal(flag.flaggedEventCount, 1);
  assert.equal(
    flag.reason,
    'User "user-1" was seen from 3 regions and 2 networks within 60 minutes',
  );
  assert.deepEqual(flag.evidence, {
    rule: "account_sharing",
    rule_version: ACCOUNT_SHARING_RULE_VERSION,
    thresholds: { window_ms: HOUR, max_regions: 2, high_regions: 4, max_ips: 3, high_ips: 6 },
    window: { start: "2026-11-23T11:30:00.000Z", end: "2026-11-23T12:30:00.000Z" },
    observed: { regions: ["BR", "DE", "FR"], distinct_regions: 3, distinct_ips: 2 },
    event_ids: ["e-1", "e-2", "e-3"],
  });
});

Deno.test("accountSharingRule() does not mutate deep-frozen input and copies it into evidence", () => {
  const event = deepFreeze(makeEvent());
  const sharing = deepFreeze(facts(5, 7));
  const thresholds = deepFreeze({ ...THRESHOLDS });
  const before = structuredClone({ event, sharing, thresholds });
  const flag = accountSharingRule(event, sharing, thresholds);
  assert.ok(flag !== null);
  assert.deepEqual({ event, sharing, thresholds }, before);
  assert.notEqual(flag.evidence.observed["regions"], sharing.regions);
  assert.notEqual(flag.evidence.event_ids, sharing.sampleEventIds);
});
