import assert from "node:assert/strict";
import { makeEvent } from "../tests/fixtures.ts";
import { test } from "../tests/_permissions.ts";
import {
  MemoryLogger,
  MemoryShardStore,
  testRegionOptions,
  until,
} from "../tests/_region_fakes.ts";
import type { WorkerBatch } from "./event_columns.ts";
import type { FlushBatch } from "../db/flush_batch.ts";
import type { ShardLease, ToWorker, WorkerInit } from "./protocol.ts";
import { emptySlot, type RegionOptions, type WorkerSlot } from "./region_types.ts";
import { shardOf, workerOfShard } from "./shard_of.ts";
import { type SupervisedRegion, Supervisor } from "./supervisor.ts";
import { WorkerPool } from "./worker_pool.ts";

const WORKERS = 2;
const SHARDS = 4;
/** Reports ready on init and stops when asked; ignores "adopt" and "release". */
const ANSWERING = new URL("../tests/_pool_worker_answering.ts", import.meta.url);

/** The keys worker 0 owns (shards 0 and 2) and worker 1 owns (shards 1 and 3), as `start` lists them. */
const WORKER_0_KEYS = ["user:0", "content:0", "device:0", "user:2", "content:2", "device:2"];
const WORKER_1_KEYS = ["user:1", "content:1", "device:1", "user:3", "content:3", "device:3"];

/**
 * The region as the supervisor sees it: real slots and a real pool of fixture workers, wired like
 * the region (a reported death goes to `Supervisor.onDeath`), with every call recorded.
 */
class FakeRegion implements SupervisedRegion {
  readonly options: RegionOptions;
  readonly slots: WorkerSlot[] = Array.from({ length: WORKERS }, (_, i) => emptySlot(i));
  readonly pool: WorkerPool;
  readonly supervisor: Supervisor;
  readonly store = new MemoryShardStore();
  readonly logger = new MemoryLogger();
  /** Deaths the pool reported, before the supervisor was told. */
  readonly deaths: Array<[number, string]> = [];
  /** Every spawn the supervisor asked of the pool, with the init message. */
  readonly spawns: Array<[number, WorkerInit]> = [];
  /** Every message the supervisor posted through the pool. */
  readonly posts: Array<[number, ToWorker]> = [];
  /** Replayed pages: worker, events in the page, page end. */
  readonly replayed: Array<[number, number, number]> = [];
  /** Shard keys the cluster was told were lost, one entry per call. */
  readonly lost: string[][] = [];
  postAllCalls = 0;
  isDrainingNow = false;
  dispatchedPosition = 0;

  constructor(overrides: { isLogDurable?: boolean; isCluster?: boolean } = {}) {
    this.options = {
      ...testRegionOptions({ workers: WORKERS, shards: SHARDS }, this.store, this.logger),
      isLogDurable: overrides.isLogDurable ?? false,
      cluster: overrides.isCluster
        ? { onShardsLost: (keys: string[]) => this.lost.push(keys) }
        : undefined,
    };
    const pool = new WorkerPool({
      workerUrl: ANSWERING,
      onMessage: () => {},
      onDeath: (index, reason) => {
        this.deaths.push([index, reason]);
        this.supervisor.onDeath(this.slots[index], reason);
      },
    });
    const spawn = pool.spawn.bind(pool);
    pool.spawn = (index, init) => {
      this.spawns.push([index, init]);
      return spawn(index, init);
    };
    const post = pool.post.bind(pool);
    pool.post = (index, message) => {
      this.posts.push([index, message]);
      post(index, message);
    };
    this.pool = pool;
    this.supervisor = new Supervisor(this);
  }

  isDraining(): boolean {
    return this.isDrainingNow;
  }
  lastDispatchedPosition(): number {
    return this.dispatchedPosition;
  }
  throughPositionFor(slot: WorkerSlot): number | undefined {
    return slot.isRecovering ? undefined : this.dispatchedPosition;
  }
  workerOf(key: string): number {
    return workerOfShard(shardOf(key, SHARDS), WORKERS);
  }
  markLateness(events: ReadonlyArray<{ atMs: number; receivedAtMs: number }>): boolean[] {
    return events.map(() => false);
  }
  postReplayed(slot: WorkerSlot, batch: WorkerBatch, pageEnd: number): void {
    this.replayed.push([slot.index, batch.size, pageEnd]);
  }
  acked(): Promise<void> {
    return Promise.resolve();
  }
  postAll(): void {
    this.postAllCalls++;
  }

  async close(): Promise<void> {
    await this.supervisor.stop();
  }
}

/** Leases of the keys from position 0 under epoch 2, as the cluster hands them over. */
function leasesAtEpoch2(...keys: string[]): Map<string, ShardLease> {
  return new Map(keys.map((key) => [key, { position: 0, epoch: 2 }]));
}

test("Supervisor.start() leases the shards of the given workers, spawns them, then releases live events", async () => {
  const region = new FakeRegion();
  // user-1 and user-3 live in worker 0, user-0 and user-2 in worker 1.
  region.store.optOuts = [
    ["user-0", { type: "do_not_track", sinceMs: 1, source: "event" }],
    ["user-1", { type: "deletion", sinceMs: 2, source: "api" }],
    ["user-2", { type: "deletion", sinceMs: 3, source: "api" }],
  ];
  try {
    await region.supervisor.start([1], 0);

    assert.deepEqual(region.store.acquired, [WORKER_1_KEYS]);
    assert.equal(region.spawns.length, 1);
    const [index, init] = region.spawns[0];
    assert.equal(index, 1);
    assert.equal(init.workerIndex, 1);
    assert.deepEqual(init.shards, WORKER_1_KEYS.map((key) => [key, { position: 0, epoch: 1 }]));
    // Privacy requests reach the worker that hosts the user, and only that one.
    assert.deepEqual(init.optOuts.map(([userId]) => userId), ["user-0", "user-2"]);
    assert.equal(region.pool.isAlive(1), true);
    assert.equal(region.pool.isAlive(0), false);
    assert.equal(region.slots[1].isRecovering, false);
    assert.equal(region.slots[0].isRecovering, true, "worker 0 was not started");
    assert.equal(region.postAllCalls, 1);
    assert.deepEqual(region.deaths, []);
  } finally {
    await region.close();
  }
});

test("Supervisor.start() throws and leaves no live worker when leasing or the replay fails", async () => {
  const leaseless = new FakeRegion();
  const durable = new FakeRegion({ isLogDurable: true });
  try {
    leaseless.store.failingAcquires = 1;
    await assert.rejects(leaseless.supervisor.start([0, 1], 0), /database unavailable/);
    assert.deepEqual(leaseless.spawns, []);
    assert.equal(leaseless.postAllCalls, 0);
    assert.ok(leaseless.slots.every((slot) => slot.isRecovering));

    // The replay fails after the workers were spawned: they are stopped again, not reported dead
    // (a death would start a restart loop for a start the caller already sees failing).
    durable.store.log.push(makeEvent({ position: 1 }));
    durable.store.readLogError = new Error("Cannot read the log: connection reset");
    await assert.rejects(durable.supervisor.start([0, 1], 1), /connection reset/);
    assert.deepEqual(durable.spawns.map(([index]) => index).sort(), [0, 1]);
    assert.equal(durable.pool.isAlive(0), false);
    assert.equal(durable.pool.isAlive(1), false);
    assert.deepEqual(durable.deaths, []);
    assert.equal(durable.postAllCalls, 0);
    assert.equal(durable.supervisor.restartedWorkers, 0);
  } finally {
    await Promise.all([leaseless.close(), durable.close()]);
  }
});

test("Supervisor under a cluster: start() leases nothing, adopt() and release() follow the hosting worker", async () => {
  const region = new FakeRegion({ isCluster: true });
  try {
    await region.supervisor.start([0, 1], 0);
    assert.deepEqual(region.store.acquired, [], "the cluster, not start(), leases shards");
    assert.deepEqual(region.spawns.map(([, init]) => init.shards), [[], []]);
    assert.ok(region.spawns.every(([, init]) => init.hasStreamPositions));
    assert.equal(region.postAllCalls, 1);

    region.supervisor.adopt(
      new Map([
        ["user:0", { position: 5, epoch: 2 }],
        ["device:3", { position: 7, epoch: 3 }],
        ["content:2", { position: 9, epoch: 4 }],
      ]),
    );
    assert.deepEqual(region.posts, [
      [0, {
        type: "adopt",
        shards: [["user:0", { position: 5, epoch: 2 }], ["content:2", { position: 9, epoch: 4 }]],
      }],
      [1, { type: "adopt", shards: [["device:3", { position: 7, epoch: 3 }]] }],
    ]);
    assert.deepEqual([...region.slots[0].ownedKeys], ["user:0", "content:2"]);
    assert.deepEqual([...region.slots[1].ownedKeys], ["device:3"]);

    // The fixture worker does not answer "release": the answer of a live worker is stubbed.
    const asked: Array<[number, ToWorker]> = [];
    region.pool.ask = (index, build) => {
      asked.push([index, build(41)]);
      return Promise.resolve(`worker ${index}: cannot commit before release`);
    };
    region.pool.terminate(1, "test");
    assert.deepEqual(await region.supervisor.release(["device:3"]), []);
    assert.deepEqual(asked, [], "a dead worker is not asked");
    assert.deepEqual([...region.slots[1].ownedKeys], []);

    assert.deepEqual(await region.supervisor.release(["user:0"]), [
      "worker 0: cannot commit before release",
    ]);
    assert.deepEqual(asked, [[0, { type: "release", requestId: 41, keys: ["user:0"] }]]);
    assert.deepEqual([...region.slots[0].ownedKeys], ["content:2"]);
  } finally {
    await region.close();
  }
});

test("Supervisor.onReset() tells the cluster which shards were lost, or kills a single-node worker", async () => {
  const cluster = new FakeRegion({ isCluster: true });
  const single = new FakeRegion();
  try {
    await Promise.all([cluster.supervisor.start([0, 1], 0), single.supervisor.start([0, 1], 0)]);

    cluster.supervisor.adopt(leasesAtEpoch2("user:0", "content:2"));
    cluster.supervisor.onReset(cluster.slots[0], ["user:0"], "epoch moved");
    assert.deepEqual(cluster.lost, [["user:0"]]);
    assert.deepEqual([...cluster.slots[0].ownedKeys], ["content:2"]);
    assert.equal(cluster.pool.isAlive(0), true, "the worker keeps its other shards");
    assert.deepEqual(cluster.deaths, []);

    single.supervisor.onReset(single.slots[0], ["user:0"], "epoch moved");
    assert.equal(single.pool.isAlive(0), false);
    assert.deepEqual(single.deaths, [[0, "fenced: epoch moved"]]);
    assert.ok(single.logger.has("error", /Worker 0 was fenced off its shards/));
    // The death restarts the worker with fresh leases.
    await until("the restart", () => single.pool.isAlive(0) && !single.slots[0].isRecovering);
    assert.equal(single.supervisor.restartedWorkers, 1);
    assert.deepEqual(single.store.acquired.at(-1), WORKER_0_KEYS);
  } finally {
    await Promise.all([cluster.close(), single.close()]);
  }
});

test("Supervisor.onDeath() in a cluster reports the dead worker's shards once, then owns none", async () => {
  const cluster = new FakeRegion({ isCluster: true });
  try {
    await cluster.supervisor.start([0, 1], 0);
    cluster.supervisor.adopt(leasesAtEpoch2("user:0", "content:2"));
    cluster.pool.kill(0, "crashed");
    await until("the restart", () => cluster.pool.isAlive(0) && !cluster.slots[0].isRecovering);
    assert.deepEqual(cluster.lost, [["user:0", "content:2"]]);
    assert.deepEqual([...cluster.slots[0].ownedKeys], []);
    // A second death before the cluster re-adopts must not report the shards it no longer has.
    cluster.pool.kill(0, "crashed again");
    await until("the second restart", () => cluster.lost.length === 2);
    assert.deepEqual(cluster.lost[1], []);
  } finally {
    await cluster.close();
  }
});

test("Supervisor.onDeath() while draining releases ack waiters and does not restart", async () => {
  const region = new FakeRegion();
  try {
    await region.supervisor.start([0, 1], 0);
    let released = 0;
    region.slots[0].ackWaiters.push(() => released++);
    region.isDrainingNow = true;

    region.pool.kill(0, "crashed during drain");
    assert.deepEqual(region.deaths, [[0, "crashed during drain"]]);
    assert.equal(released, 1, "a flush waiting on the dead worker must not hang");
    assert.deepEqual(region.slots[0].ackWaiters, []);
    assert.equal(region.supervisor.restartedWorkers, 0);
    assert.equal(region.store.acquired.length, 1, "only the start leased shards");
    assert.equal(region.spawns.length, 2, "only the start spawned workers");
    assert.equal(region.pool.isAlive(0), false);
  } finally {
    await region.close();
  }
});

test("Supervisor.onDeath() restarts the worker, backing off 500 ms while leasing fails", async () => {
  const region = new FakeRegion();
  try {
    await region.supervisor.start([0, 1], 0);
    region.store.failingAcquires = 1;
    const diedAt = performance.now();
    region.pool.kill(0, "crashed");
    const slot = region.slots[0];
    assert.equal(region.supervisor.restartedWorkers, 1);
    assert.equal(slot.isRecovering, true, "live events wait while the worker restarts");

    await until("a failed restart", () => slot.restartFailures === 1);
    assert.ok(region.logger.has("error", /^Cannot restart worker 0: retrying in 500 ms$/));
    assert.equal(region.pool.isAlive(0), false);
    assert.equal(slot.isRecovering, true);

    await until("the restart", () => slot.restartFailures === 0 && !slot.isRecovering);
    assert.ok(performance.now() - diedAt >= 450, "the retry waited for the backoff");
    assert.equal(region.pool.isAlive(0), true);
    assert.equal(region.pool.isAlive(1), true, "the other worker is untouched");
    // Start, the failed attempt and the successful one; each restart leases worker 0's shards only.
    assert.deepEqual(region.store.acquired, [
      [...WORKER_0_KEYS, ...WORKER_1_KEYS].sort(byShard),
      WORKER_0_KEYS,
      WORKER_0_KEYS,
    ]);
    assert.equal(region.postAllCalls, 2, "start, then the restart, released live events");
    assert.equal(region.supervisor.restartedWorkers, 1);
    assert.ok(region.logger.has("info", /^Worker 0 restarted after 1 failed attempts$/));
  } finally {
    await region.close();
  }
});

/** Orders shard keys as `start` lists them: by shard, then user, content, device. */
function byShard(a: string, b: string): number {
  const families = ["user", "content", "device"];
  const [fa, sa] = a.split(":");
  const [fb, sb] = b.split(":");
  return Number(sa) - Number(sb) || families.indexOf(fa) - families.indexOf(fb);
}

test("Supervisor.flush() posts buffered events first and asks only the live workers", async () => {
  const region = new FakeRegion();
  try {
    await region.supervisor.start([0], 0);
    const asked: number[] = [];
    const ask = region.pool.ask.bind(region.pool);
    region.pool.ask = (index, message, timeoutMs) => {
      asked.push(index);
      return ask(index, message, timeoutMs);
    };
    const postsBefore = region.postAllCalls;
    assert.deepEqual(await region.supervisor.flush(), []);
    assert.equal(region.postAllCalls, postsBefore + 1, "buffered events go out before the ask");
    assert.deepEqual(asked, [0], "worker 1 is not running: not asked");
  } finally {
    await region.close();
  }
});

test("Supervisor writes workers' PGlite batches one at a time and answers each with db_done", async () => {
  const region = new FakeRegion();
  const written: string[] = [];
  let release = () => {};
  const firstHeld = new Promise<void>((resolve) => (release = resolve));
  region.options.writeBatch = async (batch) => {
    const name = String(batch.rawEvents.length);
    written.push(`start ${name}`);
    if (name === "1") await firstHeld;
    written.push(`end ${name}`);
    if (name === "2") {
      const fenced = new Error("shard user:0 is owned by a newer epoch");
      fenced.name = "FencedError";
      throw fenced;
    }
  };
  const batchOf = (n: number) => ({ rawEvents: new Array(n).fill(null) }) as unknown as FlushBatch;
  try {
    await region.supervisor.start([0], 0);
    const slot = region.slots[0];
    region.supervisor.onMessage(slot, { type: "db_write", requestId: 7, batch: batchOf(1) });
    region.supervisor.onMessage(slot, { type: "db_write", requestId: 8, batch: batchOf(2) });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(written, ["start 1"], "the second write waits for the first");
    release();
    const answers = () => region.posts.filter(([, m]) => m.type === "db_done").map(([, m]) => m);
    await until("both answers", () => answers().length === 2);
    assert.deepEqual(written, ["start 1", "end 1", "start 2", "end 2"]);
    assert.deepEqual(answers(), [
      { type: "db_done", requestId: 7, error: null, isFenced: false },
      {
        type: "db_done",
        requestId: 8,
        error: "shard user:0 is owned by a newer epoch",
        isFenced: true,
      },
    ]);
  } finally {
    await region.close();
  }
});

test("Supervisor keeps a worker's status and hands its flush report to the observer", () => {
  const region = new FakeRegion();
  const reports: Array<[number, number]> = [];
  region.options.observer = {
    onFlushReport: (index, report) => reports.push([index, report.durationsMs.length]),
  };
  const slot = region.slots[1];
  const status = {
    pendingEvents: 3,
    entities: 9,
    heapUsedBytes: 1_000,
    isFlushFailing: false,
    lastFlushError: null,
    flushBlockedSinceMs: null,
  };
  region.supervisor.onMessage(slot, {
    type: "status",
    status: {
      ...status,
      flushes: { durationsMs: [4, 5], failures: 0, rows: { rawEvents: 0, flags: 0 }, flags: {} },
    },
  });
  assert.deepEqual(slot.status, status, "the report is not kept on the slot");
  assert.deepEqual(reports, [[1, 2]]);
});
