import assert from "node:assert/strict";
import { deepFreeze, makeEvent, T0, testConfig } from "../tests/fixtures.ts";
import {
  CONTENT_QUALITY_RULE_VERSION,
  contentQualityRule,
  type QualityFacts,
} from "./content_quality.ts";

// Defaults: 5-minute window, at least 20 events, error rate strictly above 0.2, errors from at
// least 3 devices for a content.
const THRESHOLDS = testConfig().thresholds;
const WINDOW = 300_000;

function facts(
  eventCount: number,
  errorCount: number,
  o: Partial<QualityFacts> = {},
): QualityFacts {
  return {
    entityType: "content",
    entityId: "content-1",
    windowStartMs: T0,
    windowEndMs: T0 + WINDOW,
    eventCount,
    errorCount,
    errorsByCode: { DRM_LICENSE_FAILED: errorCount },
    sampleEventIds: Array.from({ length: Math.min(errorCount, 3) }, (_, i) => `e-${i + 1}`),
    errorDeviceCount: 3,
    ...o,
  };
}

Deno.test("contentQualityRule() does not flag below the minimum events even at 100% errors", () => {
  assert.equal(THRESHOLDS.qualityMinEvents, 20);
  assert.equal(contentQualityRule(makeEvent(), facts(19, 19), THRESHOLDS), null);
});

Deno.test("contentQualityRule() does not flag an error rate exactly at the threshold", () => {
  assert.equal(THRESHOLDS.qualityMaxErrorRate, 0.2);
  assert.equal(contentQualityRule(makeEvent(), facts(20, 4), THRESHOLDS), null);
  const tenth = { ...THRESHOLDS, qualityMaxErrorRate: 0.1 };
  assert.equal(contentQualityRule(makeEvent(), facts(30, 3), tenth), null);
});

Deno.test("contentQualityRule() flags an error rate above the threshold at the minimum events", () => {
  const flag = contentQualityRule(makeEvent(), facts(20, 5), THRESHOLDS);
  assert.ok(flag !== null);
  assert.equal(flag.level, "HIGH");
});

Deno.test("contentQualityRule() keys flags per entity and window", () => {
  const a = contentQualityRule(makeEvent(), facts(20, 5), THRESHOLDS);
  const nextWindow = facts(20, 5, { windowStartMs: T0 + WINDOW, windowEndMs: T0 + 2 * WINDOW });
  const b = contentQualityRule(makeEvent(), nextWindow, THRESHOLDS);
  const other = contentQualityRule(makeEvent(), facts(20, 5, { entityId: "c-2" }), THRESHOLDS);
  const device = contentQualityRule(
    makeEvent(),
    facts(20, 5, { entityType: "device", entityId: "device-1" }),
    THRESHOLDS,
  );
  assert.ok(a !== null && b !== null && other !== null && device !== null);
  assert.equal(a.flagKey, `content_quality:content:content-1:${T0}`);
  assert.equal(b.flagKey, `content_quality:content:content-1:${T0 + WINDOW}`);
  assert.equal(other.flagKey, `content_quality:content:c-2:${T0}`);
  assert.equal(device.flagKey, `content_quality:device:device-1:${T0}`);
  assert.equal(device.entityType, "device");
  assert.match(device.reason, /^Device "device-1"/);
});

Deno.test("contentQualityRule() records thresholds, window, observed values and event ids", () => {
  const event = makeEvent({ eventId: "e-9", userId: "user-4", region: "IT", atMs: T0 + 1000 });
  const flag = contentQualityRule(
    event,
    facts(20, 5, { errorsByCode: { DRM_LICENSE_FAILED: 3, UNKNOWN: 2 } }),
    THRESHOLDS,
  );
  assert.ok(flag !== null);
  assert.equal(flag.rule, "content_quality");
  assert.equal(flag.ruleVersion, CONTENT_QUALITY_RULE_VERSION);
  assert.equal(flag.entityType, "content");
  assert.equal(flag.entityId, "content-1");
  assert.equal(flag.eventId, "e-9");
  assert.equal(flag.userId, "", "a title's flag names no viewer");
  assert.equal(flag.region, "");
  assert.equal(flag.isEu, false);
  assert.equal(flag.atMs, T0 + 1000);
  assert.equal(flag.flaggedEventCount, 1);
  assert.equal(flag.reason, 'Content "content-1" had 5 errors in 20 events (25.0%) in one window');
  assert.deepEqual(flag.evidence, {
    rule: "content_quality",
    rule_version: CONTENT_QUALITY_RULE_VERSION,
    thresholds: { window_ms: WINDOW, min_events: 20, max_error_rate: 0.2, min_devices: 3 },
    window: { start: "2026-11-23T12:00:00.000Z", end: "2026-11-23T12:05:00.000Z" },
    observed: {
      events: 20,
      errors: 5,
      error_rate: 0.25,
      errors_by_code: { DRM_LICENSE_FAILED: 3, UNKNOWN: 2 },
      error_devices: 3,
    },
    event_ids: ["e-1", "e-2", "e-3"],
  });
});

Deno.test("contentQualityRule() does not mutate deep-frozen input and copies it into evidence", () => {
  const event = deepFreeze(makeEvent());
  const quality = deepFreeze(facts(20, 20));
  const thresholds = deepFreeze({ ...THRESHOLDS });
  const before = structuredClone({ event, quality, thresholds });
  const flag = contentQualityRule(event, quality, thresholds);
  assert.ok(flag !== null);
  assert.deepEqual({ event, quality, thresholds }, before);
  assert.notEqual(flag.evidence.observed["errors_by_code"], quality.errorsByCode);
  assert.notEqual(flag.evidence.event_ids, quality.sampleEventIds);
});

Deno.test("contentQualityRule() flags a content only with errors from the minimum of devices", () => {
  assert.equal(CONTENT_QUALITY_RULE_VERSION, 2);
  assert.equal(THRESHOLDS.qualityMinDevices, 3);
  assert.equal(
    contentQualityRule(makeEvent(), facts(20, 20, { errorDeviceCount: 1 }), THRESHOLDS),
    null,
  );
  assert.equal(
    contentQualityRule(makeEvent(), facts(20, 20, { errorDeviceCount: 2 }), THRESHOLDS),
    null,
  );
  const flag = contentQualityRule(makeEvent(), facts(20, 5, { errorDeviceCount: 3 }), THRESHOLDS);
  assert.ok(flag !== null);
  assert.equal(flag.evidence.observed["error_devices"], 3);
});

Deno.test("contentQualityRule() flags a lone device and keeps its viewer and region", () => {
  const event = makeEvent({ userId: "user-4", region: "IT", isEu: true });
  const device = facts(20, 20, { entityType: "device", entityId: "tv-1", errorDeviceCount: 1 });
  const flag = contentQualityRule(event, device, THRESHOLDS);
  assert.ok(flag !== null);
  assert.equal(flag.userId, "user-4");
  assert.equal(flag.region, "IT");
  assert.equal(flag.isEu, true);
  assert.equal(flag.ruleVersion, 2);
  assert.deepEqual(flag.evidence.thresholds, {
    window_ms: WINDOW,
    min_events: 20,
    max_error_rate: 0.2,
  });
  assert.equal("error_devices" in flag.evidence.observed, false);
});
