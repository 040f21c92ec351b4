/**
 * The workers' lives, seen from the region: start them with fresh leases and replay the durable log
 * into them before live events flow; when one dies or is fenced, restart it (with backoff while the
 * database is down) and tell the cluster which shards it lost; take what workers report (status,
 * logs, PGlite writes they cannot do themselves); ask them to flush, and stop them. The region
 * routes; this keeps it routing to live, caught-up workers.
 *
 * @module
 */
import type { FlushBatch } from "../db/flush_batch.ts";
import type { OptOut, TelemetryEvent } from "../rules/mod.ts";
import type { FromWorker, ShardLease, WorkerInit, WorkerStatus } from "./protocol.ts";
import { WorkerBatch } from "./event_columns.ts";
import { replayLog } from "./replay.ts";
import { type RegionOptions, type WorkerSlot } from "./region_types.ts";
import { idleStatus } from "./region_types.ts";
import { workerOfShard } from "./shard_of.ts";
import { ENTITY_TYPES, formatShardKey, parseShardKey } from "./shard_key.ts";
import type { WorkerPool } from "./worker_pool.ts";

/** What the supervisor needs of the region it serves. */
export interface SupervisedRegion {
  readonly options: RegionOptions;
  readonly slots: readonly WorkerSlot[];
  readonly pool: WorkerPool;
  isDraining(): boolean;
  /** Highest position handed to workers; a restarted worker's replay reads the log up to here. */
  lastDispatchedPosition(): number;
  /** The position a worker has been posted everything up to, when the log can say (see Region). */
  throughPositionFor(slot: WorkerSlot): number | undefined;
  workerOf(key: string): number;
  markLateness(events: ReadonlyArray<{ atMs: number; receivedAtMs: number }>): boolean[];
  /** Posts a page of replayed events, through `pageEnd`, to a worker. */
  postReplayed(slot: WorkerSlot, batch: WorkerBatch, pageEnd: number): void;
  /** Resolves once the worker has at most `maxInFlight` batches unacknowledged, or died. */
  acked(slot: WorkerSlot, maxInFlight: number): Promise<void>;
  /** Posts whatever live events the buffers hold. */
  postAll(): void;
}

/** How long a flush request waits for a worker's answer before it counts as failed. */
const FLUSH_ANSWER_TIMEOUT_MS = 60_000;
/** How long a shard release waits for the worker's flush before the worker counts as failed. */
const RELEASE_ANSWER_TIMEOUT_MS = 60_000;
/** First and longest wait between attempts to restart a worker that could not be restarted. */
const RESTART_BACKOFF_MS = { first: 500, max: 30_000 };

/** Starts, replays and restarts the region's workers. */
export class Supervisor {
  #region: SupervisedRegion;
  #restartTimers = new Set<ReturnType<typeof setTimeout>>();
  /** PGlite writes done for workers, one after another. */
  #writeChain: Promise<void> = Promise.resolve();
  /** Workers restarted after a death since start. */
  restartedWorkers = 0;
  /** Log entries read back into workers since start (start-up replay and worker restarts). */
  replayedEvents = 0;

  constructor(region: SupervisedRegion) {
    this.#region = region;
  }

  /**
   * Spawns workers owning fresh leases, replays the log into them, then releases live events. On
   * failure the workers it spawned are stopped again and the error is thrown.
   */
  async start(indexes: number[], through: number): Promise<void> {
    const r = this.#region;
    const o = r.options;
    const owned = new Set(indexes);
    const keys: string[] = [];
    for (let shard = 0; shard < o.shards; shard++) {
      if (!owned.has(workerOfShard(shard, o.workers))) continue;
      for (const type of ENTITY_TYPES) keys.push(formatShardKey(type, shard));
    }
    try {
      // Under cluster ownership workers start empty; the cluster adopts shards as it wins leases.
      const leases = o.cluster === undefined
        ? await o.shardStore.acquire(keys)
        : new Map<string, ShardLease>();
      // Read again on every (re)start: requests recorded since, including DNT events a dead worker
      // had flushed, must reach the new worker.
      const optOuts = await o.shardStore.loadOptOuts();
      await Promise.all(indexes.map((index) => this.#spawn(index, leases, optOuts)));
      if (o.isLogDurable) await this.#replay(indexes, leases, through);
    } catch (error) {
      for (const index of indexes) r.pool.terminate(index, "start failed");
      throw error;
    }
    for (const index of indexes) r.slots[index].isRecovering = false;
    r.postAll();
  }

  /** A worker died: restart it, and replay or give up its shards as the log allows. */
  onDeath(slot: WorkerSlot, reason: string): void {
    const r = this.#region;
    const o = r.options;
    for (const waiter of slot.ackWaiters.splice(0)) waiter();
    if (r.isDraining()) return;
    this.restartedWorkers++;
    // Live events dispatched from now on wait in the buffers until the replay is done. With a
    // durable log, buffered events are dropped: they are in the log and the replay posts them.
    slot.isRecovering = true;
    if (o.isLogDurable || o.cluster !== undefined) {
      slot.batch = new WorkerBatch();
      slot.duplicates = [];
    }
    const through = r.lastDispatchedPosition();
    let onRestarted = () => {};
    if (o.cluster !== undefined) {
      o.logger.error(
        `Worker ${slot.index} died; restarting it, the cluster re-acquires its shards`,
        { reason },
      );
      // The restarted worker owns nothing until the cluster hands the shards back (adopt).
      const lost = [...slot.ownedKeys];
      slot.ownedKeys.clear();
      onRestarted = () => o.cluster?.onShardsLost(lost);
    } else if (!o.isLogDurable) {
      o.logger.error(
        `Worker ${slot.index} died; restarting it. Up to ${slot.status.pendingEvents} unflushed ` +
          `events of its shards are lost (memory queue)`,
        { reason },
      );
    } else {
      o.logger.error(
        `Worker ${slot.index} died; restarting it and replaying its shards from the log`,
        { reason },
      );
    }
    this.#restart(slot, through, onRestarted);
  }

  /** A worker was fenced off shards (another owner raised their epoch). */
  onReset(slot: WorkerSlot, keys: string[], reason: string): void {
    const o = this.#region.options;
    if (o.cluster !== undefined) {
      for (const key of keys) slot.ownedKeys.delete(key);
      o.cluster.onShardsLost(keys);
      return;
    }
    // Single-node backends own every shard: a fence means another process took them over.
    o.logger.error(
      `Worker ${slot.index} was fenced off its shards: is a second server using this database? ` +
        `Use QUEUE=redis to run several nodes`,
      { reason },
    );
    this.#region.pool.kill(slot.index, `fenced: ${reason}`);
  }

  /** Cluster ownership: gives workers the shards the cluster won, with checkpoints and epochs. */
  adopt(leases: Map<string, ShardLease>): void {
    const r = this.#region;
    for (const [index, shards] of this.#byWorker([...leases])) {
      for (const [key] of shards) r.slots[index].ownedKeys.add(key);
      r.pool.post(index, { type: "adopt", shards });
    }
  }

  /** Cluster ownership: every live worker drops all its shards without flushing. */
  resetAll(reason: string): void {
    const r = this.#region;
    for (const slot of r.slots) {
      slot.ownedKeys.clear();
      if (r.pool.isAlive(slot.index)) r.pool.post(slot.index, { type: "reset", reason });
    }
  }

  /**
   * Cluster ownership: the workers flush and forget the shards; resolves with the errors of those
   * that could not commit first (they reset, and the new owner replays from the checkpoint).
   */
  async release(keys: string[]): Promise<string[]> {
    const r = this.#region;
    const byWorker = this.#byWorker(keys.map((key) => [key, key] as const));
    const results = await Promise.all([...byWorker].map(([index, entries]) => {
      const workerKeys = entries.map(([key]) => key);
      for (const key of workerKeys) r.slots[index].ownedKeys.delete(key);
      if (!r.pool.isAlive(index)) return Promise.resolve(null);
      return r.pool.ask(
        index,
        (requestId) => ({ type: "release", requestId, keys: workerKeys }),
        RELEASE_ANSWER_TIMEOUT_MS,
      );
    }));
    return results.filter((e): e is string => e !== null);
  }

  /**
   * Posts buffered events and asks every live worker to flush now; resolves with the errors of the
   * flushes that failed. A worker stuck behind a hung database does not hold it forever: asks time
   * out.
   */
  async flush(timeoutMs = FLUSH_ANSWER_TIMEOUT_MS): Promise<string[]> {
    const r = this.#region;
    r.postAll();
    const results = await Promise.all(
      r.slots.filter((s) => r.pool.isAlive(s.index)).map((slot) =>
        r.pool.ask(
          slot.index,
          (requestId) => ({
            type: "flush",
            requestId,
            throughPosition: r.throughPositionFor(slot),
          }),
          timeoutMs,
        )
      ),
    );
    return results.filter((e): e is string => e !== null);
  }

  /** Flushes until everything is committed or `deadlineMs` passed; the errors of the last try. */
  async flushUntilCommitted(deadlineMs: number): Promise<string[]> {
    const giveUpAt = Date.now() + deadlineMs;
    let errors = await this.flush();
    while (errors.length > 0 && Date.now() < giveUpAt) {
      this.#region.options.logger.warn("Drain flush failed, retrying", { errors });
      await new Promise((resolve) => setTimeout(resolve, 500));
      errors = await this.flush();
    }
    return errors;
  }

  /** A worker's message other than an acknowledgement. */
  onMessage(slot: WorkerSlot, message: Exclude<FromWorker, { type: "ack" }>): void {
    switch (message.type) {
      case "flushed":
      case "status":
        this.takeStatus(slot, message.status);
        return;
      case "db_write":
        this.#writeForWorker(slot, message.requestId, message.batch);
        return;
      case "log":
        this.#region.options.logger.log(message.level, message.message);
        return;
      case "reset":
        this.onReset(slot, message.keys, message.reason);
        return;
      case "ready":
      case "stopped":
      case "released":
        return; // answers the pool settles
    }
  }

  /** Keeps a worker's status on its slot and hands its flush report to the observer. */
  takeStatus(slot: WorkerSlot, status: WorkerStatus): void {
    if (status.flushes === undefined) {
      slot.status = status;
      return;
    }
    const { flushes, ...rest } = status;
    this.#region.options.observer?.onFlushReport?.(slot.index, flushes);
    slot.status = rest;
  }

  /** Cancels pending restarts, waits for the PGlite writes under way, and stops the workers. */
  async stop(): Promise<void> {
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#restartTimers.clear();
    await this.#writeChain;
    await this.#region.pool.stopAll();
  }

  /** PGlite has one owner (the main thread): worker flushes are written there, one after another. */
  #writeForWorker(slot: WorkerSlot, requestId: number, batch: FlushBatch): void {
    this.#writeChain = this.#writeChain.then(async () => {
      let error: string | null = null;
      let isFenced = false;
      try {
        await this.#region.options.writeBatch(batch);
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
        isFenced = e instanceof Error && e.name === "FencedError";
      }
      this.#region.pool.post(slot.index, { type: "db_done", requestId, error, isFenced });
    });
  }

  /** Groups `[shard key, value]` entries by the worker hosting the shard. */
  #byWorker<T>(entries: ReadonlyArray<readonly [string, T]>): Map<number, Array<[string, T]>> {
    const workers = this.#region.options.workers;
    const byWorker = new Map<number, Array<[string, T]>>();
    for (const [key, value] of entries) {
      const index = workerOfShard(parseShardKey(key).shard, workers);
      const group = byWorker.get(index);
      if (group === undefined) byWorker.set(index, [[key, value]]);
      else group.push([key, value]);
    }
    return byWorker;
  }

  #spawn(
    index: number,
    leases: Map<string, ShardLease>,
    optOuts: Array<[string, OptOut]>,
  ): Promise<void> {
    const r = this.#region;
    const o = r.options;
    const slot = r.slots[index];
    // Buffered live events survive the restart; what was posted to the dead worker did not.
    slot.inFlight = 0;
    slot.unackedBatches = [];
    slot.unackedEvents = 0;
    slot.isRecovering = true;
    slot.status = idleStatus();
    const isOwned = (key: string) => workerOfShard(parseShardKey(key).shard, o.workers) === index;
    const init: WorkerInit = {
      workerIndex: index,
      nowMs: Date.now(),
      shardCount: o.shards,
      // The single-node durable log deduplicates by primary key before events reach workers, so
      // workers need no memory of ids (the redis log and the memory log do not).
      dedupeIdsPerShard: o.isLogDurable && o.cluster === undefined
        ? 0
        : Math.ceil(o.dedupeMaxIds / o.shards),
      maxSegmentMs: o.maxSegmentMs,
      maxIdleMs: o.maxIdleMs,
      allowedLatenessMs: o.allowedLatenessMs,
      thresholds: o.thresholds,
      databaseUrl: o.databaseUrl,
      isLogDurable: o.isLogDurable,
      alertMinRank: o.alertMinRank,
      hasStreamPositions: o.cluster !== undefined,
      shards: [...leases.entries()].filter(([key]) => isOwned(key)),
      optOuts: optOuts.filter(([userId]) => r.workerOf(userId) === index),
    };
    return r.pool.spawn(index, init);
  }

  /** Reads the log from the oldest checkpoint of the leases up to `through` into the workers. */
  async #replay(
    indexes: number[],
    leases: Map<string, ShardLease>,
    through: number,
  ): Promise<void> {
    const r = this.#region;
    const o = r.options;
    let after = through;
    for (const lease of leases.values()) after = Math.min(after, lease.position);
    const replayed = await replayLog(
      {
        readLog: (from, to, limit): Promise<TelemetryEvent[]> =>
          o.shardStore.readLog(from, to, limit),
        workerOf: (key) => r.workerOf(key),
        markLateness: (events) => r.markLateness(events),
        post: (index, batch, pageEnd) => r.postReplayed(r.slots[index], batch, pageEnd),
        caughtUp: (index) => r.acked(r.slots[index], 1),
      },
      indexes,
      after,
      through,
    );
    this.replayedEvents += replayed;
    if (replayed > 0) {
      o.logger.info(`Replayed ${replayed} logged events into workers ${indexes.join(", ")}`, {
        through,
      });
    }
  }

  /**
   * Restarts a dead worker, retrying with exponential backoff while it fails (database down). Until
   * it succeeds, live events wait in its buffers and backpressure refuses more ("recovering").
   */
  #restart(slot: WorkerSlot, through: number, onRestarted: () => void): void {
    const o = this.#region.options;
    if (this.#region.isDraining()) return;
    this.start([slot.index], through).then(
      () => {
        if (slot.restartFailures > 0) {
          o.logger.info(
            `Worker ${slot.index} restarted after ${slot.restartFailures} failed attempts`,
          );
        }
        slot.restartFailures = 0;
        onRestarted();
      },
      (error) => {
        slot.restartFailures++;
        const delayMs = Math.min(
          RESTART_BACKOFF_MS.max,
          RESTART_BACKOFF_MS.first * 2 ** (slot.restartFailures - 1),
        );
        o.logger.error(`Cannot restart worker ${slot.index}: retrying in ${delayMs} ms`, {
          attempt: slot.restartFailures,
          error: error instanceof Error ? error.message : String(error),
        });
        const timer = setTimeout(() => {
          this.#restartTimers.delete(timer);
          this.#restart(slot, through, onRestarted);
        }, delayMs);
        this.#restartTimers.add(timer);
      },
    );
  }
}
