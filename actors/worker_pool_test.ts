import assert from "node:assert/strict";
import { DEFAULT_THRESHOLDS } from "../rules/mod.ts";
import { T0 } from "../tests/fixtures.ts";
import { test } from "../tests/_permissions.ts";
import type { FromWorker, WorkerInit } from "./protocol.ts";
import { WorkerPool } from "./worker_pool.ts";

/** Fixture workers under tests/: see each module's doc comment for how it behaves. */
const ANSWERING = new URL("../tests/_pool_worker_answering.ts", import.meta.url);
const SILENT = new URL("../tests/_pool_worker_silent.ts", import.meta.url);
const THROWING = new URL("../tests/_pool_worker_throwing.ts", import.meta.url);
const UNREADY = new URL("../tests/_pool_worker_unready.ts", import.meta.url);

/** Long enough never to fire in a passing test: the ask must settle some other way. */
const NEVER_MS = 60_000;

function workerInit(workerIndex = 0): WorkerInit {
  return {
    workerIndex,
    nowMs: T0,
    shardCount: 4,
    dedupeIdsPerShard: 1_000,
    maxSegmentMs: 4 * 3_600_000,
    maxIdleMs: 60_000,
    allowedLatenessMs: 600_000,
    thresholds: DEFAULT_THRESHOLDS,
    databaseUrl: undefined,
    optOuts: [],
    isLogDurable: false,
    hasStreamPositions: false,
    shards: [],
  };
}

/** A pool whose callbacks are recorded, with a way to await a message. */
class Probe {
  readonly messages: Array<[number, FromWorker]> = [];
  readonly deaths: Array<[number, string]> = [];
  readonly pool: WorkerPool;
  #waiters: Array<{ match: (i: number, m: FromWorker) => boolean; resolve: () => void }> = [];

  constructor(workerUrl: URL, startTimeoutMs?: number) {
    this.pool = new WorkerPool({
      workerUrl,
      startTimeoutMs,
      onMessage: (index, message) => {
        this.messages.push([index, message]);
        for (const waiter of this.#waiters.filter((w) => w.match(index, message))) {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          waiter.resolve();
        }
      },
      onDeath: (index, reason) => this.deaths.push([index, reason]),
    });
  }

  /** Resolves once a message matching `match` arrived (at once if one already did). */
  received(match: (index: number, message: FromWorker) => boolean): Promise<void> {
    if (this.messages.some(([i, m]) => match(i, m))) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ match, resolve });
    return promise;
  }

  /** Types of the messages slot `index` sent, in arrival order. */
  typesFrom(index: number): string[] {
    return this.messages.filter(([i]) => i === index).map(([, m]) => m.type);
  }
}

test("WorkerPool.spawn() resolves once the worker reports ready, and post() reaches it", async () => {
  const probe = new Probe(ANSWERING);
  try {
    await probe.pool.spawn(0, workerInit());
    assert.equal(probe.pool.isAlive(0), true);
    assert.deepEqual(probe.typesFrom(0), ["ready"]);

    probe.pool.post(0, { type: "tick", nowMs: T0, watermarkMs: T0 });
    await probe.received((_, m) => m.type === "log");
    assert.deepEqual(probe.messages, [
      [0, { type: "ready" }],
      [0, { type: "log", level: "info", message: `tick ${T0}` }],
    ]);
  } finally {
    await probe.pool.stopAll(1_000);
  }
});

test("WorkerPool.spawn() throws while the slot's previous worker is still alive", async () => {
  const probe = new Probe(ANSWERING);
  try {
    await probe.pool.spawn(0, workerInit());
    assert.throws(
      () => probe.pool.spawn(0, workerInit()),
      /Cannot spawn worker 0: the previous one is still alive/,
    );
    assert.equal(probe.pool.isAlive(0), true);
  } finally {
    await probe.pool.stopAll(1_000);
  }
});

test("WorkerPool.ask() resolves with null when the worker answers", async () => {
  const probe = new Probe(ANSWERING);
  try {
    await probe.pool.spawn(0, workerInit());
    const results = await Promise.all([
      probe.pool.ask(0, (requestId) => ({ type: "flush", requestId }), NEVER_MS),
      probe.pool.ask(0, (requestId) => ({ type: "flush", requestId }), NEVER_MS),
    ]);
    assert.deepEqual(results, [null, null]);
    // Answers are messages too: the owner sees both, each with its own request id.
    const answered = probe.messages.flatMap(([, m]) => m.type === "flushed" ? [m.requestId] : []);
    assert.equal(answered.length, 2);
    assert.notEqual(answered[0], answered[1]);
    assert.deepEqual(probe.deaths, []);
  } finally {
    await probe.pool.stopAll(1_000);
  }
});

test("WorkerPool.ask() resolves with a reason when the worker does not answer in time", async () => {
  const probe = new Probe(SILENT);
  try {
    await probe.pool.spawn(0, workerInit());
    const result = await probe.pool.ask(0, (requestId) => ({ type: "flush", requestId }), 100);
    assert.equal(result, "worker 0 did not answer within 100 ms");
    // A slow answer is not a death: the worker stays.
    assert.equal(probe.pool.isAlive(0), true);
    assert.deepEqual(probe.deaths, []);
  } finally {
    await probe.pool.stopAll(100);
  }
});

test("WorkerPool.ask() settles with an error when the worker dies", async () => {
  const probe = new Probe(THROWING);
  try {
    await probe.pool.spawn(0, workerInit());
    const result = await probe.pool.ask(0, (requestId) => ({ type: "flush", requestId }), NEVER_MS);
    assert.match(result ?? "", /^worker 0 died: .*Injected failure on flush \d+/);
    assert.equal(probe.pool.isAlive(0), false);
    assert.equal(probe.deaths.length, 1);
    assert.equal(probe.deaths[0][0], 0);
    assert.match(probe.deaths[0][1], /Injected failure on flush/);
    // The dead slot reports nothing more, however it is poked.
    probe.pool.kill(0, "again");
    probe.pool.terminate(0, "again");
    assert.equal(probe.deaths.length, 1);
  } finally {
    await probe.pool.stopAll(100);
  }
});

test("WorkerPool.spawn() rejects and terminates the worker when it never reports ready", async () => {
  const probe = new Probe(UNREADY, 200);
  try {
    await assert.rejects(
      probe.pool.spawn(0, workerInit()),
      /Cannot start worker 0: no "ready" within 200 ms/,
    );
    assert.equal(probe.pool.isAlive(0), false);
    assert.equal(
      await probe.pool.ask(0, (requestId) => ({ type: "flush", requestId }), NEVER_MS),
      "worker 0 is not running",
    );
    // A failed start is the caller's error to handle, not a death to restart from.
    assert.deepEqual(probe.deaths, []);
    // The slot is free again: a second spawn is attempted (and times out) instead of being refused.
    await assert.rejects(
      probe.pool.spawn(0, workerInit()),
      /Cannot start worker 0: no "ready" within 200 ms/,
    );
    assert.deepEqual(probe.deaths, []);
  } finally {
    await probe.pool.stopAll(100);
  }
});

test("WorkerPool.terminate() settles pending asks without reporting a death", async () => {
  const probe = new Probe(SILENT);
  try {
    await probe.pool.spawn(0, workerInit());
    const pending = probe.pool.ask(0, (requestId) => ({ type: "flush", requestId }), NEVER_MS);
    probe.pool.terminate(0, "start failed");
    assert.equal(await pending, "worker 0 died: start failed");
    assert.equal(probe.pool.isAlive(0), false);
    assert.deepEqual(probe.deaths, []);
  } finally {
    await probe.pool.stopAll(100);
  }
});

test("WorkerPool.kill() settles pending asks and reports the death once", async () => {
  const probe = new Probe(SILENT);
  try {
    await probe.pool.spawn(0, workerInit());
    const pending = probe.pool.ask(0, (requestId) => ({ type: "flush", requestId }), NEVER_MS);
    probe.pool.kill(0, "fenced: epoch moved");
    assert.equal(await pending, "worker 0 died: fenced: epoch moved");
    assert.equal(probe.pool.isAlive(0), false);
    probe.pool.kill(0, "fenced again");
    assert.deepEqual(probe.deaths, [[0, "fenced: epoch moved"]]);
  } finally {
    await probe.pool.stopAll(100);
  }
});

test('WorkerPool.ask() and post() on a slot without a live worker: "not running", dropped', async () => {
  const probe = new Probe(ANSWERING);
  try {
    assert.equal(
      await probe.pool.ask(3, (requestId) => ({ type: "flush", requestId }), NEVER_MS),
      "worker 3 is not running",
    );
    await probe.pool.spawn(0, workerInit());
    probe.pool.terminate(0, "test");
    assert.equal(
      await probe.pool.ask(0, (requestId) => ({ type: "flush", requestId }), NEVER_MS),
      "worker 0 is not running",
    );
    probe.pool.post(0, { type: "tick", nowMs: T0, watermarkMs: T0 });
    probe.pool.post(3, { type: "tick", nowMs: T0, watermarkMs: T0 });
    assert.equal(probe.pool.isAlive(3), false);
    assert.deepEqual(probe.deaths, []);
  } finally {
    await probe.pool.stopAll(100);
  }
});

test('WorkerPool.stopAll() resolves once every worker reported "stopped"', async () => {
  const probe = new Probe(ANSWERING);
  try {
    await Promise.all([probe.pool.spawn(0, workerInit(0)), probe.pool.spawn(1, workerInit(1))]);
    const startedMs = performance.now();
    await probe.pool.stopAll(NEVER_MS);
    // Well below the timeout: it ended on the answers, not on the timer.
    assert.ok(performance.now() - startedMs < 30_000);
    assert.deepEqual(probe.typesFrom(0), ["ready", "stopped"]);
    assert.deepEqual(probe.typesFrom(1), ["ready", "stopped"]);
    assert.equal(probe.pool.isAlive(0), false);
    assert.equal(probe.pool.isAlive(1), false);
    assert.deepEqual(probe.deaths, []);
  } finally {
    await probe.pool.stopAll(100);
  }
});

test('WorkerPool.stopAll() resolves after its timeout when a worker ignores "stop"', async () => {
  const cooperative = new Probe(ANSWERING);
  const hung = new Probe(SILENT);
  try {
    await cooperative.pool.spawn(0, workerInit());
    await hung.pool.spawn(0, workerInit());
    const startedMs = performance.now();
    await Promise.all([cooperative.pool.stopAll(300), hung.pool.stopAll(300)]);
    assert.ok(performance.now() - startedMs >= 250, "the hung worker was waited for");
    assert.deepEqual(cooperative.typesFrom(0), ["ready", "stopped"]);
    assert.deepEqual(hung.typesFrom(0), ["ready"]);
    assert.equal(hung.pool.isAlive(0), false);
    assert.equal(cooperative.pool.isAlive(0), false);
    assert.deepEqual(hung.deaths, []);
    assert.deepEqual(cooperative.deaths, []);
  } finally {
    await Promise.all([cooperative.pool.stopAll(100), hung.pool.stopAll(100)]);
  }
});
