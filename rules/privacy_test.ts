import assert from "node:assert/strict";
import { deepFreeze, makeEvent, T0 } from "../tests/fixtures.ts";
import { MAX_PRIVACY_EVENT_IDS, PRIVACY_RULE_VERSION, privacyRule } from "./privacy.ts";

Deno.test("privacyRule() flags an EU event without consent as HIGH, keyed by user and day", () => {
  const event = makeEvent({
    eventId: "e-7",
    userId: "user-9",
    region: "FR",
    isEu: true,
    hasConsent: false,
    atMs: T0 + 1234,
  });
  const flag = privacyRule(event, ["e-3", "e-7"]);
  assert.ok(flag !== null);
  const dayMs = Math.floor((T0 + 1234) / 86_400_000) * 86_400_000;
  assert.equal(flag.flagKey, `privacy:user-9:${dayMs}`);
  assert.equal(flag.rule, "privacy");
  assert.equal(flag.ruleVersion, PRIVACY_RULE_VERSION);
  assert.equal(flag.level, "HIGH");
  assert.equal(flag.entityType, "user");
  assert.equal(flag.entityId, "user-9");
  assert.equal(flag.eventId, "e-7");
  assert.equal(flag.userId, "user-9");
  assert.equal(flag.region, "FR");
  assert.equal(flag.isEu, true);
  assert.equal(flag.atMs, T0 + 1234);
  assert.equal(flag.flaggedEventCount, 1);
  assert.match(flag.reason, /"user-9".*FR.*without consent/);
  assert.deepEqual(flag.evidence, {
    rule: "privacy",
    rule_version: PRIVACY_RULE_VERSION,
    thresholds: {},
    window: {
      start: new Date(dayMs).toISOString(),
      end: new Date(dayMs + 86_400_000).toISOString(),
    },
    observed: { is_eu: true, has_consent: false, region: "FR" },
    event_ids: ["e-3", "e-7"],
  });
});

Deno.test("privacyRule() does not flag an EU event with consent", () => {
  assert.equal(privacyRule(makeEvent({ isEu: true, hasConsent: true })), null);
});

Deno.test("privacyRule() does not flag a non-EU event without consent", () => {
  assert.equal(privacyRule(makeEvent({ region: "US-NY", isEu: false, hasConsent: false })), null);
});

Deno.test("privacyRule() gives one user's events of one day one flag, and the next day another", () => {
  const at = (eventId: string, atMs: number) =>
    privacyRule(makeEvent({ eventId, isEu: true, hasConsent: false, atMs }))!;
  assert.equal(at("e-1", T0).flagKey, at("e-2", T0 + 60_000).flagKey);
  assert.notEqual(at("e-1", T0).flagKey, at("e-3", T0 + 86_400_000).flagKey);
  const other = privacyRule(makeEvent({ userId: "user-2", isEu: true, hasConsent: false }))!;
  assert.notEqual(other.flagKey, at("e-1", T0).flagKey);
});

Deno.test("privacyRule() lists at most MAX_PRIVACY_EVENT_IDS event ids", () => {
  const ids = Array.from({ length: MAX_PRIVACY_EVENT_IDS + 5 }, (_, i) => `e-${i}`);
  const flag = privacyRule(makeEvent({ isEu: true, hasConsent: false }), ids)!;
  assert.equal(flag.evidence.event_ids.length, MAX_PRIVACY_EVENT_IDS);
});

Deno.test("privacyRule() does not mutate a deep-frozen event", () => {
  const event = deepFreeze(makeEvent({ isEu: true, hasConsent: false }));
  const before = structuredClone(event);
  const flag = privacyRule(event);
  assert.ok(flag !== null);
  assert.deepEqual(event, before);
});
