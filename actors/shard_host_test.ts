import assert from "node:assert/strict";
import type { FlushBatch } from "../db/flush_batch.ts";
import { DEFAULT_THRESHOLDS, type TelemetryEvent } from "../rules/mod.ts";
import { makeEvent, T0 } from "../tests/fixtures.ts";
import type { FromWorker, ShardLease, WorkerInit } from "./protocol.ts";
import { ROLE, toColumns } from "./event_columns.ts";
import { type FlushSink, ShardHost } from "./shard_host.ts";

/** An event for every family of the worker. */
const ALL_ROLES = ROLE.user | ROLE.content | ROLE.device;

const SHARD_COUNT = 4;
const FAMILIES = ["user", "content", "device"] as const;
/** Every `family:shard` key of the test worker, which owns all shards. */
const ALL_KEYS = FAMILIES.flatMap((family) =>
  Array.from({ length: SHARD_COUNT }, (_, shard) => `${family}:${shard}`)
);

function workerInit(): WorkerInit {
  const shards: Array<[string, ShardLease]> = ALL_KEYS.map((key) => [
    key,
    { position: 0, epoch: 1 },
  ]);
  return {
    workerIndex: 0,
    nowMs: T0,
    shardCount: SHARD_COUNT,
    dedupeIdsPerShard: 100_000,
    maxSegmentMs: 4 * 3_600_000,
    maxIdleMs: 60_000,
    allowedLatenessMs: 600_000,
    thresholds: DEFAULT_THRESHOLDS,
    databaseUrl: undefined,
    optOuts: [],
    isLogDurable: false,
    hasStreamPositions: false,
    shards,
  };
}

/** Distinct events at positions `from..to` (inclusive), one user and one event id each. */
function eventsAt(from: number, to: number): TelemetryEvent[] {
  const events: TelemetryEvent[] = [];
  for (let position = from; position <= to; position++) {
    events.push(makeEvent({
      eventId: `e-${position}`,
      userId: `user-${position}`,
      deviceId: `device-${position % 1_000}`,
      contentId: `content-${position % 50}`,
      atMs: T0 + position,
      position,
    }));
  }
  return events;
}

let nextBatchId = 1;

/** Sends events at positions `from..to` in messages of at most `perMessage` events. */
async function applyEvents(host: ShardHost, from: number, to: number, perMessage = 30_000) {
  for (let start = from; start <= to; start += perMessage) {
    const end = Math.min(start + perMessage - 1, to);
    const events = eventsAt(start, end);
    await host.handle({
      type: "events",
      batchId: nextBatchId++,
      watermarkMs: T0,
      events: toColumns(events, events.map(() => ALL_ROLES)),
      throughPosition: end,
    });
  }
}

function summedTypeEvents(batch: FlushBatch): number {
  let total = 0;
  for (const row of batch.types.values()) total += row.events;
  return total;
}

/** What the sink saw on each call, counted when it was called (the batch object is reused). */
interface SinkCall {
  batch: FlushBatch;
  rawEventCount: number;
  isFailed: boolean;
}

/** A sink that rejects its first `failures` calls with a connection timeout. */
function failingSink(failures: number): { sink: FlushSink; calls: SinkCall[] } {
  const calls: SinkCall[] = [];
  let failuresLeft = failures;
  const sink: FlushSink = (batch) => {
    const isFailed = failuresLeft > 0;
    failuresLeft--;
    calls.push({ batch, rawEventCount: batch.rawEvents.length, isFailed });
    return isFailed
      ? Promise.reject(new Error("Connection terminated due to connection timeout"))
      : Promise.resolve();
  };
  return { sink, calls };
}

function flushedMessages(sent: FromWorker[]) {
  return sent.filter((m): m is Extract<FromWorker, { type: "flushed" }> => m.type === "flushed");
}

function assertEveryEventOnce(batch: FlushBatch, count: number): void {
  assert.equal(batch.rawEvents.length, count);
  const ids = new Set(batch.rawEvents.map((r) => r.eventId));
  assert.equal(ids.size, count, "no raw event was written twice");
  for (let position = 1; position <= count; position += 9_973) {
    assert.ok(ids.has(`e-${position}`), `event e-${position} is missing`);
  }
  assert.ok(ids.has(`e-${count}`));
  assert.equal(summedTypeEvents(batch), count);
}

Deno.test("ShardHost retries a failed flush of 210,000 events with the 10,000 that came after, each once", async () => {
  const sent: FromWorker[] = [];
  const { sink, calls } = failingSink(1);
  const host = new ShardHost(workerInit(), (m) => sent.push(m), sink);

  await applyEvents(host, 1, 210_000);
  await host.handle({ type: "flush", requestId: 1 });
  assert.equal(calls.length, 1);
  assert.equal(calls[0].rawEventCount, 210_000);
  assert.equal(host.status().isFlushFailing, true);
  assert.equal(host.status().lastFlushError, "Connection terminated due to connection timeout");
  assert.equal(host.status().pendingEvents, 210_000);

  await applyEvents(host, 210_001, 220_000);
  await host.handle({ type: "flush", requestId: 2 });
  assert.equal(calls.length, 2);
  assert.equal(calls[1].isFailed, false);
  assertEveryEventOnce(calls[1].batch, 220_000);
  assert.equal(host.status().isFlushFailing, false);
  assert.equal(host.status().pendingEvents, 0);

  const flushed = flushedMessages(sent);
  assert.deepEqual(flushed.map((m) => [m.requestId, m.error, m.flushedEvents]), [
    [1, "Connection terminated due to connection timeout", 0],
    [2, null, 220_000],
  ]);
  assert.equal(flushed[0].status.isFlushFailing, true);
  assert.equal(flushed[1].status.isFlushFailing, false);
});

Deno.test("ShardHost keeps 210,000 events that arrive while a flush of 10,000 fails", async () => {
  const sent: FromWorker[] = [];
  const calls: SinkCall[] = [];
  let failFirst: (error: Error) => void = () => {};
  let onFirstCall: () => void = () => {};
  const firstCalled = new Promise<void>((resolve) => (onFirstCall = resolve));
  const sink: FlushSink = (batch) => {
    const isFailed = calls.length === 0;
    calls.push({ batch, rawEventCount: batch.rawEvents.length, isFailed });
    if (!isFailed) return Promise.resolve();
    onFirstCall();
    return new Promise<void>((_, reject) => (failFirst = reject));
  };
  const host = new ShardHost(workerInit(), (m) => sent.push(m), sink);

  await applyEvents(host, 1, 10_000);
  const failing = host.handle({ type: "flush", requestId: 1 });
  await firstCalled;
  // The newer batch is the big one: folding it back must not spread it into a call's arguments.
  await applyEvents(host, 10_001, 220_000);
  assert.equal(host.status().pendingEvents, 220_000, "in-flight and newer events are both pending");
  failFirst(new Error("Connection terminated due to connection timeout"));
  await failing;
  assert.equal(host.status().isFlushFailing, true);

  await host.handle({ type: "flush", requestId: 2 });
  assert.equal(calls.length, 2);
  assert.equal(calls[0].rawEventCount, 10_000);
  assertEveryEventOnce(calls[1].batch, 220_000);
  assert.equal(host.status().isFlushFailing, false);
  assert.deepEqual(flushedMessages(sent).map((m) => [m.error, m.flushedEvents]), [
    ["Connection terminated due to connection timeout", 0],
    [null, 220_000],
  ]);
});

Deno.test("ShardHost advances every owned shard's checkpoint to throughPosition on flush", async () => {
  const { sink, calls } = failingSink(0);
  const host = new ShardHost(workerInit(), () => {}, sink);
  const [event] = eventsAt(500, 500);
  await host.handle({
    type: "events",
    batchId: 1,
    watermarkMs: T0,
    events: toColumns([event], [ROLE.user]),
    throughPosition: 500,
  });
  await host.handle({ type: "flush", requestId: 1 });
  assert.equal(calls.length, 1);
  const { checkpoints, epochs } = calls[0].batch;
  assert.deepEqual([...checkpoints.keys()].sort(), [...ALL_KEYS].sort());
  for (const key of ALL_KEYS) {
    assert.ok((checkpoints.get(key) ?? -1) >= 500, `checkpoint of ${key} is below 500`);
    assert.equal(epochs.get(key), 1, `epoch of ${key} is not fenced`);
  }
  assert.equal(calls[0].batch.rawEvents.length, 1);
});

Deno.test("ShardHost advances checkpoints to throughPosition even when no event arrived", async () => {
  const { sink, calls } = failingSink(0);
  const host = new ShardHost(workerInit(), () => {}, sink);
  await host.handle({
    type: "events",
    batchId: 1,
    watermarkMs: T0,
    events: toColumns([], []),
    throughPosition: 500,
  });
  await host.handle({ type: "flush", requestId: 1 });
  assert.equal(calls.length, 1);
  assert.deepEqual(
    new Map([...calls[0].batch.checkpoints].sort()),
    new Map(ALL_KEYS.map((key) => [key, 500] as [string, number]).sort()),
  );
  await host.handle({ type: "flush", requestId: 2 });
  assert.equal(calls.length, 1, "nothing new to write: the second flush is skipped");
});

Deno.test("ShardHost keeps the advanced checkpoints of a failed flush for the retry", async () => {
  const { sink, calls } = failingSink(1);
  const host = new ShardHost(workerInit(), () => {}, sink);
  await host.handle({
    type: "events",
    batchId: 1,
    watermarkMs: T0,
    events: toColumns([], []),
    throughPosition: 500,
  });
  await host.handle({ type: "flush", requestId: 1 });
  await host.handle({ type: "flush", requestId: 2 });
  assert.equal(calls.length, 2);
  assert.equal(calls[1].isFailed, false);
  for (const key of ALL_KEYS) assert.equal(calls[1].batch.checkpoints.get(key), 500);
});

Deno.test("ShardHost reports its entity count after a tick passivates, with no event since", async () => {
  const sent: FromWorker[] = [];
  const { sink } = failingSink(0);
  const host = new ShardHost(workerInit(), (m) => sent.push(m), sink);
  await applyEvents(host, 1, 200);
  await host.handle({ type: "flush", requestId: 1 });
  const loaded = host.status().entities;
  assert.ok(loaded >= 200, `expected at least the 200 users, got ${loaded}`);
  sent.length = 0;

  // Past every window and the idle time, no event in between: the worker is otherwise silent.
  const laterMs = T0 + 2 * DEFAULT_THRESHOLDS.sharingWindowMs + 5 * 3_600_000;
  await host.handle({ type: "tick", nowMs: laterMs, watermarkMs: laterMs });
  const statuses = sent.filter((m) => m.type === "status");
  assert.equal(statuses.length, 1, "the passivation is reported");
  assert.equal(statuses[0].type === "status" && statuses[0].status.entities, 0);

  sent.length = 0;
  await host.handle({ type: "tick", nowMs: laterMs + 1_000, watermarkMs: laterMs + 1_000 });
  assert.equal(sent.filter((m) => m.type === "status").length, 0, "nothing evicted, nothing sent");
});

Deno.test("ShardHost reports its heap every 10 s of ticks even when nothing changes", async () => {
  const sent: FromWorker[] = [];
  const host = new ShardHost(workerInit(), (m) => sent.push(m), failingSink(0).sink);
  const statusesAt = async (nowMs: number) => {
    sent.length = 0;
    await host.handle({ type: "tick", nowMs, watermarkMs: T0 });
    return sent.filter((m) => m.type === "status").length;
  };
  // The first tick is 10 s after the worker's start (the tick time of its last status).
  assert.equal(await statusesAt(T0 + 10_000), 1, "the gauges follow the heap while quiet");
  assert.equal(await statusesAt(T0 + 11_000), 0);
  assert.equal(await statusesAt(T0 + 19_999), 0);
  assert.equal(await statusesAt(T0 + 20_000), 1);
});

Deno.test("ShardHost reports its entity count after releasing shards", async () => {
  const sent: FromWorker[] = [];
  const { sink } = failingSink(0);
  const host = new ShardHost(workerInit(), (m) => sent.push(m), sink);
  await applyEvents(host, 1, 200);
  const loaded = host.status().entities;
  sent.length = 0;
  // Every user shard goes: the users leave, the titles and TVs stay.
  const userKeys = ALL_KEYS.filter((key) => key.startsWith("user:"));
  await host.handle({ type: "release", requestId: 7, keys: userKeys });
  const status = sent.find((m) => m.type === "status");
  assert.ok(status !== undefined && status.type === "status", "the release is reported");
  assert.equal(status.status.entities, loaded - 200);
  assert.deepEqual(sent.at(-1), { type: "released", requestId: 7, error: null });
});
