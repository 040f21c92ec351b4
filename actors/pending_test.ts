import assert from "node:assert/strict";
import { factKey, type FlushBatch, hourOf, KEY_SEP, type RawEventRow } from "../db/flush_batch.ts";
import { addPacked, packedRegister } from "../db/hll.ts";
import { makeFactDims, makeFlag, T0 } from "../tests/fixtures.ts";
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

const HOUR = 3_600_000;
const H0 = hourOf(T0);
const H1 = H0 + HOUR;

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
    clientIsEu: true,
    subscriptionPlan: null,
    hasConsent: true,
    ipHash: "hash-1",
    ipPrefix: "10.0.0.0/24",
    errorCode: null,
    doNotTrack: false,
    isLate: false,
    metadata: {},
  };
}

const dims = makeFactDims;

const FACT_C1_H0 = factKey(H0, dims());
const FACT_C2_H0 = factKey(H0, dims({ contentId: "content-2", region: "US" }));
const FACT_C1_H1 = factKey(H1, dims());

function sketchOf(...userIds: string[]): Map<number, number> {
  const sketch = new Map<number, number>();
  for (const userId of userIds) addPacked(sketch, packedRegister(userId));
  return sketch;
}

/** The batch whose flush failed: older than {@link newerBatch}. */
function olderBatch(): FlushBatch {
  const b = emptyBatch();
  b.rawEvents.push(raw("e-1", 1), raw("e-2", 2));
  b.types.set(H0 + KEY_SEP + "PLAY", { events: 2, lateEvents: 0 });
  addCounts(b.facts, FACT_C1_H0, { events: 2, plays: 2, errors: 0, watchTimeMs: 100 }, zeroCounts);
  addCounts(
    b.devices,
    "device-1" + KEY_SEP + H0,
    { events: 2, plays: 2, errors: 0, watchTimeMs: 100 },
    zeroCounts,
  );
  b.viewers.set("" + KEY_SEP + H0, sketchOf("user-1"));
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
  b.types.set(H0 + KEY_SEP + "PLAY", { events: 1, lateEvents: 1 });
  b.types.set(H1 + KEY_SEP + "ERROR", { events: 1, lateEvents: 0 });
  addCounter(b.counters, "duplicate_events", 1);
  addCounts(b.facts, FACT_C1_H0, { events: 1, plays: 0, errors: 1, watchTimeMs: 50 }, zeroCounts);
  addCounts(b.facts, FACT_C2_H0, { events: 1, plays: 1, errors: 0, watchTimeMs: 0 }, zeroCounts);
  addCounts(b.facts, FACT_C1_H1, { events: 1, plays: 0, errors: 1, watchTimeMs: 0 }, zeroCounts);
  addCounts(
    b.devices,
    "device-1" + KEY_SEP + H0,
    { events: 1, plays: 0, errors: 1, watchTimeMs: 50 },
    zeroCounts,
  );
  addCounter(b.errorCodes, FACT_C1_H1 + KEY_SEP + "E1", 1);
  b.viewers.set("" + KEY_SEP + H0, sketchOf("user-2"));
  b.viewers.set("r:US" + KEY_SEP + H0, sketchOf("user-2"));
  addFlag(
    b,
    makeFlag({ flagKey: "k-shared", eventId: "e-3", level: "HIGH", flaggedEventCount: 2 }),
  );
  b.optOuts.push({ userId: "user-3", type: "do_not_track", sinceMs: 20 });
  advanceCheckpoint(b, "user", 1, 7);
  advanceCheckpoint(b, "user", 3, 4);
  return b;
}

Deno.test("mergeBatch() adds counters and per-hour count deltas of both batches", () => {
  const into = olderBatch();
  mergeBatch(into, newerBatch());
  assert.deepEqual(into.counters, new Map([["duplicate_events", 1]]));
  assert.deepEqual(
    into.facts,
    new Map([
      [FACT_C1_H0, { events: 3, plays: 2, errors: 1, watchTimeMs: 150 }],
      [FACT_C2_H0, { events: 1, plays: 1, errors: 0, watchTimeMs: 0 }],
      [FACT_C1_H1, { events: 1, plays: 0, errors: 1, watchTimeMs: 0 }],
    ]),
  );
  assert.deepEqual(
    into.types,
    new Map([
      [H0 + KEY_SEP + "PLAY", { events: 3, lateEvents: 1 }],
      [H1 + KEY_SEP + "ERROR", { events: 1, lateEvents: 0 }],
    ]),
  );
  assert.deepEqual(
    into.devices,
    new Map([["device-1" + KEY_SEP + H0, { events: 3, plays: 2, errors: 1, watchTimeMs: 150 }]]),
  );
  assert.deepEqual(into.errorCodes, new Map([[FACT_C1_H1 + KEY_SEP + "E1", 1]]));
});

Deno.test("mergeBatch() merges viewer sketches into the union of both hours' viewers", () => {
  const into = olderBatch();
  mergeBatch(into, newerBatch());
  assert.deepEqual(
    into.viewers,
    new Map([
      ["" + KEY_SEP + H0, sketchOf("user-1", "user-2")],
      ["r:US" + KEY_SEP + H0, sketchOf("user-2")],
    ]),
  );
});

Deno.test("mergeBatch() does not alias the newer batch's rows, so later adds do not count twice", () => {
  const into = emptyBatch();
  const from = newerBatch();
  mergeBatch(into, from);
  addCounts(from.facts, FACT_C1_H0, { events: 5, plays: 0, errors: 0, watchTimeMs: 0 }, zeroCounts);
  from.types.get(H0 + KEY_SEP + "PLAY")!.events += 5;
  addPacked(from.viewers.get("" + KEY_SEP + H0)!, packedRegister("user-9"));
  assert.equal(into.facts.get(FACT_C1_H0)?.events, 1);
  assert.equal(into.types.get(H0 + KEY_SEP + "PLAY")?.events, 1);
  assert.deepEqual(into.viewers.get("" + KEY_SEP + H0), sketchOf("user-2"));
});

Deno.test("mergeBatch() keeps raw events and opt-outs in order, older first", () => {
  const into = olderBatch();
  mergeBatch(into, newerBatch());
  assert.deepEqual(into.rawEvents.map((r) => r.eventId), ["e-1", "e-2", "e-3"]);
  assert.deepEqual(into.optOuts.map((o) => o.userId), ["user-1", "user-3"]);
});

Deno.test("mergeBatch() appends 250,000 raw events without overflowing the stack", () => {
  const into = olderBatch();
  const from = emptyBatch();
  for (let i = 0; i < 250_000; i++) from.rawEvents.push(raw(`big-${i}`, 100 + i));
  mergeBatch(into, from);
  assert.equal(into.rawEvents.length, 250_002);
  assert.equal(into.rawEvents[0].eventId, "e-1");
  assert.equal(into.rawEvents[2].eventId, "big-0");
  assert.equal(into.rawEvents[250_001].eventId, "big-249999");
  assert.equal(new Set(into.rawEvents.map((r) => r.eventId)).size, 250_002);
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
  assert.deepEqual(
    into.flaggedEvents,
    new Map([[H0 + KEY_SEP + "account_sharing" + KEY_SEP + "DE", 4]]),
  );
});

Deno.test("mergeBatch() into an empty batch reproduces the other batch", () => {
  const into = emptyBatch();
  mergeBatch(into, newerBatch());
  assert.deepEqual(into, newerBatch());
});

Deno.test("addFlag() counts flagged events by the flag's hour, rule and region", () => {
  const b = emptyBatch();
  addFlag(b, makeFlag({ flagKey: "a", atMs: T0 + 5_000, region: "DE", flaggedEventCount: 2 }));
  addFlag(b, makeFlag({ flagKey: "b", atMs: T0 + 10_000, region: "DE" }));
  addFlag(b, makeFlag({ flagKey: "c", atMs: T0 + 10_000, region: "FR" }));
  addFlag(b, makeFlag({ flagKey: "d", atMs: T0 + HOUR, region: "DE" }));
  addFlag(b, makeFlag({ flagKey: "e", atMs: T0, rule: "privacy", region: "DE" }));
  assert.deepEqual(
    b.flaggedEvents,
    new Map([
      [H0 + KEY_SEP + "account_sharing" + KEY_SEP + "DE", 3],
      [H0 + KEY_SEP + "account_sharing" + KEY_SEP + "FR", 1],
      [H1 + KEY_SEP + "account_sharing" + KEY_SEP + "DE", 1],
      [H0 + KEY_SEP + "privacy" + KEY_SEP + "DE", 1],
    ]),
  );
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
  const counted = emptyBatch();
  counted.types.set(H0 + KEY_SEP + "LOGIN", { events: 1, lateEvents: 0 });
  assert.equal(isEmptyBatch(counted), false);
});

Deno.test("mergeBatch() keeps the qoe rule's windows, their evidence and the anomaly rows", () => {
  // After a failed flush the older batch goes first and the newer is merged into it.
  const key = [H0, "title-1", "cdn-a", "DE"].join(KEY_SEP);
  const older = emptyBatch();
  older.qoeWindows.set(key, [2, 1, 0, 0, 2, 0, 0]);
  older.qoeWindowViews.set(key, ["view-1"]);
  older.anomalyCube.set("cube-row", [3, 1, 3, 2, 2, 0]);
  const newer = emptyBatch();
  newer.qoeWindows.set(key, [1, 1, 500, 9_000, 1, 1, 0]);
  newer.qoeWindowViews.set(key, ["view-1", "view-2"]);
  newer.anomalyCube.set("cube-row", [1, 0, 1, 1, 1, 1]);
  newer.anomalyQoe.set("qoe-row", [1, 0, 0, 1, 1, 0]);
  mergeBatch(older, newer);
  assert.deepEqual(older.qoeWindows.get(key), [3, 2, 500, 9_000, 3, 1, 0]);
  assert.deepEqual(older.qoeWindowViews.get(key), ["view-1", "view-2"]);
  assert.deepEqual(older.anomalyCube.get("cube-row"), [4, 1, 4, 3, 3, 1]);
  assert.deepEqual(older.anomalyQoe.get("qoe-row"), [1, 0, 0, 1, 1, 0]);
});
