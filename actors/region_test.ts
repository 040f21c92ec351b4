import assert from "node:assert/strict";
import type { FlushBatch } from "../db/flush_batch.ts";
import type { TelemetryEvent } from "../rules/mod.ts";
import { makeEvent, T0 } from "../tests/fixtures.ts";
import { test } from "../tests/_permissions.ts";
import {
  MemoryLogger,
  MemoryShardStore,
  testRegionOptions,
  until,
} from "../tests/_region_fakes.ts";
import { type IncomingEvent, Region, type RegionOptions } from "./region.ts";
import { shardOf, workerOfShard } from "./shard_of.ts";

const WORKERS = 2;
const SHARDS = 8;
const CRASHING_WORKER = new URL("../tests/_crashing_worker.ts", import.meta.url);

interface Setup {
  store: MemoryShardStore;
  logger: MemoryLogger;
  /** Every batch the workers handed to `writeBatch`, in order. */
  batches: FlushBatch[];
  options: RegionOptions;
}

function setup(overrides: Partial<RegionOptions> = {}): Setup {
  const store = new MemoryShardStore();
  const logger = new MemoryLogger();
  const batches: FlushBatch[] = [];
  const options: RegionOptions = {
    ...testRegionOptions({ workers: WORKERS, shards: SHARDS }, store, logger),
    writeBatch: (batch) => {
      batches.push(batch);
      return Promise.resolve();
    },
    ...overrides,
  };
  return { store, logger, batches, options };
}

/** An event as ingest hands it over, number `i` of a deterministic stream. */
function incoming(i: number, overrides: Partial<TelemetryEvent> = {}): IncomingEvent {
  const { position: _position, isLate: _isLate, ...event } = makeEvent({
    eventId: `e-${i}`,
    userId: `user-${i % 13}`,
    contentId: `content-${i % 5}`,
    deviceId: `device-${i % 17}`,
    type: i % 3 === 0 ? "PLAY" : "PAUSE",
    atMs: T0 + i * 1_000,
    receivedAtMs: T0 + i * 1_000,
    ...overrides,
  });
  return event;
}

function wave(from: number, count: number): IncomingEvent[] {
  return Array.from({ length: count }, (_, i) => incoming(from + i));
}

/** Events counted in the fact rows of all batches. */
function countedEvents(batches: FlushBatch[]): number {
  let events = 0;
  for (const batch of batches) for (const delta of batch.facts.values()) events += delta.events;
  return events;
}

/** Event ids of the raw rows of all batches, sorted. */
function rawEventIds(batches: FlushBatch[]): string[] {
  return batches.flatMap((b) => b.rawEvents.map((r) => r.eventId)).sort();
}

function idsOf(events: IncomingEvent[]): string[] {
  return events.map((e) => e.eventId).sort();
}

test("Region.route() and flush() hand every event to writeBatch exactly once", async () => {
  const { options, batches, store } = setup();
  const region = await Region.start(options);
  try {
    const events = wave(0, 60);
    region.route(events.slice(0, 25));
    region.route(events.slice(25));
    assert.deepEqual(await region.flush(), []);

    assert.equal(countedEvents(batches), 60);
    assert.deepEqual(rawEventIds(batches), idsOf(events));
    // The memory log positions events itself, from `firstPosition` on, in routing order.
    const positions = batches.flatMap((b) => b.rawEvents.map((r) => r.position ?? 0));
    positions.sort((a, b) => a - b);
    assert.deepEqual(positions, Array.from({ length: 60 }, (_, i) => i + 1));
    // Every shard of every family checkpoints the last position, events or not.
    const checkpoints = new Map<string, number>();
    for (const batch of batches) {
      for (const [key, position] of batch.checkpoints) {
        checkpoints.set(key, Math.max(checkpoints.get(key) ?? 0, position));
      }
    }
    assert.equal(checkpoints.size, 3 * SHARDS);
    assert.ok([...checkpoints.values()].every((position) => position === 60));
    assert.deepEqual(store.acquired.map((keys) => keys.length), [3 * SHARDS]);

    // Nothing routed since: a second flush writes nothing more.
    const written = batches.length;
    assert.deepEqual(await region.flush(), []);
    assert.equal(batches.length, written);
    assert.equal(countedEvents(batches), 60);
    for (const worker of region.health().workers) {
      assert.equal(worker.isAlive, true);
      assert.equal(worker.unappliedEvents, 0);
      assert.equal(worker.pendingEvents, 0);
    }
  } finally {
    await region.close();
  }
});

/** Keys of a deterministic stream whose shard lives in worker `index`. */
function keysOnWorker(index: number, prefix: string, count: number): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < count; i++) {
    if (workerOfShard(shardOf(`${prefix}-${i}`, SHARDS), WORKERS) === index) {
      keys.push(`${prefix}-${i}`);
    }
  }
  return keys;
}

test("Region: a worker no event reaches still checkpoints the dispatched position on tick and flush", async () => {
  const { options, batches } = setup();
  const region = await Region.start(options);
  try {
    // Users, titles and TVs all hosted by worker 0: worker 1 receives no event at all.
    const [user] = keysOnWorker(0, "user", 1);
    const [content] = keysOnWorker(0, "content", 1);
    const [device] = keysOnWorker(0, "device", 1);
    region.route(
      wave(0, 10).map((e) => ({ ...e, userId: user, contentId: content, deviceId: device })),
    );
    const idleKeys = new Set<string>();
    for (let shard = 0; shard < SHARDS; shard++) {
      if (workerOfShard(shard, WORKERS) !== 1) continue;
      for (const family of ["user", "content", "device"]) idleKeys.add(`${family}:${shard}`);
    }
    const checkpointsOf = () => {
      const seen = new Map<string, number>();
      for (const batch of batches) {
        for (const [key, position] of batch.checkpoints) {
          if (idleKeys.has(key)) seen.set(key, Math.max(seen.get(key) ?? 0, position));
        }
      }
      return seen;
    };
    // A flush request moves them at once (erasure settles with one)...
    assert.deepEqual(await region.flush(), []);
    assert.deepEqual(
      [...checkpointsOf().values()],
      [...idleKeys].map(() => 10),
      "the idle worker's shards checkpoint position 10",
    );
    // ...and so does the periodic tick, with no flush request and no event for that worker.
    region.route(
      wave(10, 5).map((e) => ({ ...e, userId: user, contentId: content, deviceId: device })),
    );
    region.tick(T0 + 60_000);
    await until(
      "the idle worker's checkpoints to follow on tick",
      () => [...checkpointsOf().values()].every((position) => position === 15),
    );
  } finally {
    await region.close();
  }
});

test('Region.refusal() is "busy" while a worker holds its share of maxPendingEvents', async () => {
  // Two workers share two pending events: one buffered event fills a worker's share.
  const { options, batches } = setup({ maxPendingEvents: 2 });
  const region = await Region.start(options);
  try {
    assert.equal(region.refusal(), null);
    region.route(wave(0, 4));
    assert.equal(region.refusal(), "busy");
    assert.deepEqual(await region.flush(), []);
    assert.equal(region.refusal(), null);
    assert.equal(countedEvents(batches), 4);
  } finally {
    await region.close();
  }
});

test('Region.drain() commits what was routed, then refuses with "draining"', async () => {
  const { options, batches } = setup();
  const region = await Region.start(options);
  try {
    const events = wave(0, 10);
    region.route(events);
    assert.deepEqual(await region.drain(), []);
    assert.equal(countedEvents(batches), 10);
    assert.deepEqual(rawEventIds(batches), idsOf(events));

    assert.equal(region.refusal(), "draining");
    assert.throws(() => region.route(wave(10, 1)), /Cannot route 1 events: the region is draining/);
    assert.throws(
      () => region.dispatch([makeEvent({ eventId: "e-late-comer", position: 99 })]),
      /the region is draining/,
    );
    const health = region.health();
    assert.equal(health.isDraining, true);
    assert.ok(health.workers.every((w) => !w.isAlive));
    assert.equal(countedEvents(batches), 10);
  } finally {
    await region.close();
  }
});

test("Region restarts a dead worker with backoff while its shards cannot be acquired", async () => {
  const marker = await Deno.makeTempFile({ prefix: "ott-region-crash-" });
  Deno.env.set("CRASH_MARKER", marker);
  const { options, batches, store, logger } = setup({ workerUrl: CRASHING_WORKER });
  const region = await Region.start(options);
  try {
    const before = wave(0, 20);
    region.route(before);
    assert.deepEqual(await region.flush(), []);
    assert.equal(countedEvents(batches), 20);

    // The database goes down as the worker hosting "user-crash" dies on the marker event.
    store.failingAcquires = 2;
    const victim = workerOfShard(shardOf("user-crash", SHARDS), WORKERS);
    region.route([incoming(1_000, { eventId: "crash-worker", userId: "user-crash" })]);
    await until("a failed restart", () => region.health().workers[victim].restartFailures > 0);
    assert.equal(region.health().workers[victim].isRecovering, true);

    // Events routed meanwhile wait in the region's buffers for the restarted worker.
    const during = wave(20, 20);
    region.route(during);
    await until("the restart", () => {
      const worker = region.health().workers[victim];
      return worker.restartFailures === 0 && worker.isAlive && !worker.isRecovering;
    });

    const after = wave(40, 20);
    region.route(after);
    assert.deepEqual(await region.flush(), []);
    // The memory log keeps no copy: the crash batch died with the worker; everything else counts.
    assert.equal(countedEvents(batches), 60);
    assert.deepEqual(rawEventIds(batches), idsOf([...before, ...during, ...after]));

    const health = region.health();
    assert.equal(health.restartedWorkers, 1);
    assert.ok(health.workers.every((w) => w.isAlive && w.restartFailures === 0));
    // Start, two failed attempts and the successful one, each restart for the victim's shards only.
    assert.equal(store.acquired.length, 4);
    for (const keys of store.acquired.slice(1)) {
      assert.equal(keys.length, 3 * SHARDS / WORKERS);
      assert.ok(keys.every((key) => workerOfShard(Number(key.split(":")[1]), WORKERS) === victim));
    }
    const failures = logger.entries.filter(([level, message]) =>
      level === "error" && message.startsWith(`Cannot restart worker ${victim}`)
    );
    assert.equal(failures.length, 2);
  } finally {
    await region.close();
    Deno.env.delete("CRASH_MARKER");
    await Deno.remove(marker).catch(() => {});
  }
});
