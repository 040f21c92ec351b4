import assert from "node:assert/strict";
import { deepFreeze, makeFlag } from "../tests/fixtures.ts";
import { mergeFlag } from "./flag_merge.ts";

Deno.test("mergeFlag() adds event counts and takes the latest evidence on equal levels", () => {
  const older = makeFlag({ eventId: "e-1", level: "MEDIUM", flaggedEventCount: 2 });
  const newer = makeFlag({
    eventId: "e-2",
    level: "MEDIUM",
    flaggedEventCount: 3,
    reason: "seen again with more regions",
    evidence: { ...older.evidence, event_ids: ["e-1", "e-2"] },
  });
  const merged = mergeFlag(older, newer);
  assert.equal(merged.flaggedEventCount, 5);
  assert.equal(merged.level, "MEDIUM");
  assert.equal(merged.eventId, "e-1");
  assert.equal(merged.reason, "seen again with more regions");
  assert.deepEqual(merged.evidence.event_ids, ["e-1", "e-2"]);
});

Deno.test("mergeFlag() takes the level and evidence of a newer escalation", () => {
  const older = makeFlag({ eventId: "e-1", level: "MEDIUM", flaggedEventCount: 4 });
  const newer = makeFlag({ eventId: "e-2", level: "HIGH", flaggedEventCount: 1 });
  const merged = mergeFlag(older, newer);
  assert.equal(merged.flaggedEventCount, 5);
  assert.equal(merged.level, "HIGH");
  assert.equal(merged.eventId, "e-2");
  assert.equal(merged.reason, newer.reason);
  assert.deepEqual(merged.evidence, newer.evidence);
});

Deno.test("mergeFlag() keeps the older evidence when the newer sighting is lower", () => {
  const older = makeFlag({ eventId: "e-1", level: "HIGH", flaggedEventCount: 1 });
  const newer = makeFlag({ eventId: "e-2", level: "MEDIUM", flaggedEventCount: 1 });
  const merged = mergeFlag(older, newer);
  assert.equal(merged.flaggedEventCount, 2);
  assert.equal(merged.level, "HIGH");
  assert.equal(merged.eventId, "e-1");
  assert.deepEqual(merged.evidence, older.evidence);
});

Deno.test("mergeFlag() does not mutate deep-frozen flags", () => {
  const older = deepFreeze(makeFlag({ eventId: "e-1", level: "LOW", flaggedEventCount: 1 }));
  const newer = deepFreeze(makeFlag({ eventId: "e-2", level: "HIGH", flaggedEventCount: 2 }));
  const before = structuredClone({ older, newer });
  const merged = mergeFlag(older, newer);
  assert.equal(merged.flaggedEventCount, 3);
  assert.deepEqual({ older, newer }, before);
});
