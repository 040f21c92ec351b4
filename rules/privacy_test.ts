import assert from "node:assert/strict";
import { deepFreeze, makeEvent, T0 } from "../tests/fixtures.ts";
import { PRIVACY_RULE_VERSION, privacyRule } from "./privacy.ts";

Deno.test("privacyRule() flags an EU event without consent as HIGH with its evidence", () => {
  const event = makeEvent({
    eventId: "e-7",
    userId: "user-9",
    region: "FR",
    isEu: true,
    hasConsent: false,
    atMs: T0 + 1234,
  });
  const flag = privacyRule(event);
  assert.ok(flag !== null);
  assert.equal(flag.flagKey, "privacy:e-7");
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
  assert.match(flag.reason, /"e-7".*FR.*without consent/);
  assert.deepEqual(flag.evidence, {
    rule: "privacy",
    rule_version: PRIVACY_RULE_VERSION,
    thresholds: {},
    window: null,
    observed: { is_eu: true, has_consent: false, region: "FR" },
    event_ids: ["e-7"],
  });
});

Deno.test("privacyRule() does not flag an EU event with consent", () => {
  assert.equal(privacyRule(makeEvent({ isEu: true, hasConsent: true })), null);
});

Deno.test("privacyRule() does not flag a non-EU event without consent", () => {
  assert.equal(privacyRule(makeEvent({ region: "US-NY", isEu: false, hasConsent: false })), null);
});

Deno.test("privacyRule() keys flags per event so two events give two flags", () => {
  const first = privacyRule(makeEvent({ eventId: "e-1", isEu: true, hasConsent: false }));
  const second = privacyRule(makeEvent({ eventId: "e-2", isEu: true, hasConsent: false }));
  assert.ok(first !== null && second !== null);
  assert.notEqual(first.flagKey, second.flagKey);
  assert.equal(second.flagKey, "privacy:e-2");
});

Deno.test("privacyRule() does not mutate a deep-frozen event", () => {
  const event = deepFreeze(makeEvent({ isEu: true, hasConsent: false }));
  const before = structuredClone(event);
  const flag = privacyRule(event);
  assert.ok(flag !== null);
  assert.deepEqual(event, before);
});
