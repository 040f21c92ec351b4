import assert from "node:assert/strict";
import type { FlushBatch, RawEventRow } from "../db/flush_batch.ts";
import { makeFlag } from "../tests/fixtures.ts";
import {
  addCounter,
  addCounts,
  addFlag,
  advanceCheckpoint,
  emptyBatch,
  isEmptyBatch,
  mergeBatch,
  zeroCounts,
} from "./pending.ts";

function raw(eventId: string, position: number): RawEventRow {
  return {
    position,
    eventId,
    userId: "user-1",
    deviceId: "device-1",
    contentId: "content-1",
    type: "PLAY",
    atMs: 0,
    receivedAtMs: 0,
    region: "DE",
    isEu: true,
    hasConsent: true,
    ipHash: "hash-1",
    ipPrefix: "10.0.0.0/24",
    errorCode: null,
    doNotTrack: false,
    isLate: false,
    metadata: {},
  };
}

/** The batch whose flush failed: older than {@link newerBatch}. */
function olderBatch(): FlushBatch {
  const b = emptyBatch();
  b.rawEvents.push(raw("e-1", 1), raw("e-2", 2));
  addCounter(b.counters, "events:PLAY", 2);
  addCounts(
    b.contents,
    "content-1",
    { events: 2, plays: 2, errors: 0, watchTimeMs: 100 },
    zeroCounts,
  );
  addCounts(b.regions, "DE", { events: 2, plays: 2, errors: 0, watchTimeMs: 100 }, () => ({
    ...zeroCounts(),
    isEu: true,
  }));
  addCounter(b.regionPlatforms, "DE\u0000tizen", 2);
  addFlag(b, makeFlag({ flagKey: "k-shared", eventId: "e-1", level: "MEDIUM" }));
  addFlag(b, makeFlag({ flagKey: "k-older", eventId: "e-2", entityId: "user-2" }));
  b.optOuts.push({ userId: "user-1", type: "do_not_track", sinceMs: 10 });
  advanceCheckpoint(b, "user", 1, 10);
  advanceCheckpoint(b, "user", 2, 5);
  return b;
}

function newerBatch(): FlushBatch {
  const b = emptyBatch();
  b.rawEvents.push(raw("e-3", 3));
  addCounter(b.counters, "events:PLAY", 1);
  addCounter(b.counters, "duplicate_events", 1);
  addCounts(
    b.contents,
    "content-1",
    { events: 1, plays: 0, errors: 1, watchTimeMs: 50 },
    zeroCounts,
  );
  addCounts(
    b.contents,
    "content-2",
    { events: 1, plays: 1, errors: 0, watchTimeMs: 0 },
    zeroCounts,
  );
  addCounts(b.regions, "US", { events: 1, plays: 1, errors: 0, watchTimeMs: 0 }, () => ({
    ...zeroCounts(),
    isEu: false,
  }));
  addCounter(b.regionPlatforms, "DE\u0000tizen", 1);
  addCounter(b.regionErrorCodes, "DE\u0000E1", 1);
  addFlag(
    b,
    makeFlag({ flagKey: "k-shared", eventId: "e-3", level: "HIGH", flaggedEventCount: 2 }),
  );
  b.optOuts.push({ userId: "user-3", type: "do_not_track", sinceMs: 20 });
  advanceCheckpoint(b, "user", 1, 7);
  advanceCheckpoint(b, "user", 3, 4);
  return b;
}

Deno.test("mergeBatch() adds counters and count deltas of both batches", () => {
  const into = olderBatch();
  mergeBatch(into, newerBatch());
  assert.deepEqual(into.counters, new Map([["events:PLAY", 3], ["duplicate_events", 1]]));
  assert.deepEqual(
    into.contents,
    new Map([
      ["content-1", { events: 3, plays: 2, errors: 1, watchTimeMs: 150 }],
      ["content-2", { events: 1, plays: 1, errors: 0, watchTimeMs: 0 }],
    ]),
  );
  assert.deepEqual(
    into.regions,
    new Map([
      ["DE", { events: 2, plays: 2, errors: 0, watchTimeMs: 100, isEu: true }],
      ["US", { events: 1, plays: 1, errors: 0, watchTimeMs: 0, isEu: false }],
    ]),
  );
  assert.deepEqual(into.regionPlatforms, new Map([["DE\u0000tizen", 3]]));
  assert.deepEqual(into.regionErrorCodes, new Map([["DE\u0000E1", 1]]));
});

Deno.test("mergeBatch() keeps raw events and opt-outs in order, older first", () => {
  const into = olderBatch();
  mergeBatch(into, newerBatch());
  assert.deepEqual(into.rawEvents.map((r) => r.eventId), ["e-1", "e-2", "e-3"]);
  assert.deepEqual(into.optOuts.map((o) => o.userId), ["user-1", "user-3"]);
});

Deno.test("mergeBatch() keeps the highest checkpoint of each shard", () => {
  const into = olderBatch();
  mergeBatch(into, newerBatch());
  assert.deepEqual(into.checkpoints, new Map([["user:1", 10], ["user:2", 5], ["user:3", 4]]));
});

Deno.test("mergeBatch() merges flags by key: counts add up and the escalation brings its evidence", () => {
  const into = olderBatch();
  mergeBatch(into, newerBatch());
  assert.deepEqual([...into.flags.keys()].sort(), ["k-older", "k-shared"]);
  const shared = into.flags.get("k-shared");
  assert.equal(shared?.level, "HIGH");
  assert.equal(shared?.flaggedEventCount, 3);
  assert.equal(shared?.eventId, "e-3");
  assert.deepEqual(shared?.evidence.event_ids, ["e-3"]);
  assert.equal(into.risks.get("user:user-1")?.level, "HIGH");
  assert.equal(into.risks.get("user:user-1")?.flagCount, 2);
});

Deno.test("mergeBatch() into an empty batch reproduces the other batch", () => {
  const into = emptyBatch();
  mergeBatch(into, newerBatch());
  const expected = newerBatch();
  assert.deepEqual(into.counters, expected.counters);
  assert.deepEqual(into.contents, expected.contents);
  assert.deepEqual(into.flags, expected.flags);
  assert.deepEqual(into.checkpoints, expected.checkpoints);
});

Deno.test("advanceCheckpoint() never moves a checkpoint backwards", () => {
  const b = emptyBatch();
  advanceCheckpoint(b, "content", 3, 8);
  advanceCheckpoint(b, "content", 3, 2);
  assert.equal(b.checkpoints.get("content:3"), 8);
  advanceCheckpoint(b, "content", 3, 0);
  advanceCheckpoint(b, "device", 3, 0);
  assert.equal(b.checkpoints.get("device:3"), 0);
});

Deno.test("isEmptyBatch() is true only while nothing would be written", () => {
  const b = emptyBatch();
  assert.equal(isEmptyBatch(b), true);
  advanceCheckpoint(b, "user", 0, 1);
  assert.equal(isEmptyBatch(b), false);
});
