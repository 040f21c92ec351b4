import assert from "node:assert/strict";
import { makeEvent, T0 } from "../tests/fixtures.ts";
import { DEFAULT_THRESHOLDS, QUALITY_RULES, RULE_IDS, RULES, USER_RULES } from "./mod.ts";

Deno.test("registry lists every rule once, with a snake_case id, a version and a weight", () => {
  assert.deepEqual(RULE_IDS, ["privacy", "retention", "account_sharing", "content_quality", "qoe"]);
  assert.equal(new Set(RULE_IDS).size, RULES.length);
  for (const rule of RULES) {
    assert.match(rule.id, /^[a-z][a-z_]*$/);
    assert.ok(Number.isInteger(rule.version) && rule.version >= 1, rule.id);
    assert.ok(rule.weight > 0, rule.id);
    assert.ok(rule.description.length > 10, rule.id);
  }
  // The qoe rule runs over flushed windows, outside the actor families.
  assert.equal(USER_RULES.length + QUALITY_RULES.length + 1, RULES.length);
});

Deno.test("each registered rule raises flags under its own id and version", () => {
  const event = makeEvent({ isEu: true, hasConsent: false, atMs: T0 + 10 });
  const flags = USER_RULES.map((rule) =>
    rule.evaluate(event, {
      optOut: { type: "deletion", sinceMs: T0, source: "api" },
      privacySample: [event.eventId],
      sharing: {
        windowStartMs: T0,
        windowEndMs: T0 + 10,
        regions: ["DE", "FR", "US", "JP", "BR"],
        ipHashCount: 1,
        sampleEventIds: [event.eventId],
      },
    }, DEFAULT_THRESHOLDS)
  );
  for (const [i, rule] of USER_RULES.entries()) {
    assert.equal(flags[i]?.rule, rule.id);
    assert.equal(flags[i]?.ruleVersion, rule.version);
  }
  const [quality] = QUALITY_RULES;
  const flag = quality.evaluate(event, {
    entityType: "device",
    entityId: "tv-1",
    windowStartMs: T0,
    windowEndMs: T0 + 300_000,
    eventCount: 40,
    errorCount: 30,
    errorsByCode: { E1: 30 },
    sampleEventIds: [event.eventId],
    errorDeviceCount: 1,
  }, DEFAULT_THRESHOLDS);
  assert.equal(flag?.rule, quality.id);
});

Deno.test("the sharing rule skips late events, whose facts carry no window", () => {
  const sharing = USER_RULES.find((r) => r.id === "account_sharing")!;
  const event = makeEvent({ isLate: true });
  assert.equal(
    sharing.evaluate(
      event,
      { optOut: undefined, privacySample: [], sharing: null },
      DEFAULT_THRESHOLDS,
    ),
    null,
  );
});
