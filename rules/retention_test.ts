import assert from "node:assert/strict";
import { deepFreeze, makeEvent, T0 } from "../tests/fixtures.ts";
import { type OptOut, RETENTION_RULE_VERSION, retentionRule } from "./retention.ts";

const DNT: OptOut = { type: "do_not_track", sinceMs: T0, source: "event" };

Deno.test("retentionRule() does not flag a user with no opt-out on record", () => {
  assert.equal(retentionRule(makeEvent(), undefined), null);
});

Deno.test("retentionRule() flags an event after a do-not-track request as HIGH with evidence", () => {
  const event = makeEvent({ eventId: "e-5", userId: "user-3", region: "US-CA", isEu: false });
  const flag = retentionRule(event, DNT);
  assert.ok(flag !== null);
  assert.equal(flag.flagKey, "retention:e-5");
  assert.equal(flag.rule, "retention");
  assert.equal(flag.ruleVersion, RETENTION_RULE_VERSION);
  assert.equal(flag.level, "HIGH");
  assert.equal(flag.entityType, "user");
  assert.equal(flag.entityId, "user-3");
  assert.equal(flag.region, "US-CA");
  assert.equal(flag.isEu, false);
  assert.equal(flag.flaggedEventCount, 1);
  assert.match(flag.reason, /"e-5".*"user-3".*do-not-track request/);
  assert.deepEqual(flag.evidence, {
    rule: "retention",
    rule_version: RETENTION_RULE_VERSION,
    thresholds: {},
    window: null,
    observed: {
      request_type: "do_not_track",
      request_source: "event",
      request_since: "2026-11-23T12:00:00.000Z",
    },
    event_ids: ["e-5"],
  });
});

Deno.test("retentionRule() names a deletion request from the API in reason and evidence", () => {
  const deletion: OptOut = { type: "deletion", sinceMs: T0 + 60_000, source: "api" };
  const flag = retentionRule(makeEvent({ eventId: "e-6" }), deletion);
  assert.ok(flag !== null);
  assert.match(flag.reason, /after a deletion request/);
  assert.deepEqual(flag.evidence.observed, {
    request_type: "deletion",
    request_source: "api",
    request_since: "2026-11-23T12:01:00.000Z",
  });
});

Deno.test("retentionRule() keys flags per event", () => {
  const first = retentionRule(makeEvent({ eventId: "e-1" }), DNT);
  const second = retentionRule(makeEvent({ eventId: "e-2" }), DNT);
  assert.ok(first !== null && second !== null);
  assert.equal(first.flagKey, "retention:e-1");
  assert.equal(second.flagKey, "retention:e-2");
});

Deno.test("retentionRule() does not mutate a deep-frozen event or opt-out", () => {
  const event = deepFreeze(makeEvent());
  const optOut = deepFreeze({ ...DNT });
  const before = structuredClone({ event, optOut });
  assert.ok(retentionRule(event, optOut) !== null);
  assert.deepEqual({ event, optOut }, before);
});
