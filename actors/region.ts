/**
 * The region: the main-thread router from key to shard to worker. It decides lateness once per event,
 * batches events per worker, tracks batches in flight for backpressure, drives time into workers with
 * ticks, writes flushes for workers when the database is PGlite, restarts dead workers (with backoff
 * while the database is down) and drains. Spawning and asking workers is {@link WorkerPool}'s job;
 * reading the log back into them is {@link replayLog}'s.
 *
 * @module
 */
import type { FlushBatch } from "../db/flush_batch.ts";
import type { Logger } from "../logger.ts";
import type { OptOut, RuleThresholds, TelemetryEvent } from "../rules/mod.ts";
import type {
  DuplicateMark,
  FlushReport,
  FromWorker,
  ShardLease,
  ToWorker,
  WorkerInit,
  WorkerStatus,
} from "./protocol.ts";
import { ROLE, WorkerBatch } from "./event_columns.ts";
import { forEachWorker, replayLog } from "./replay.ts";
import { AGGREGATED_METADATA_KEYS } from "./user_family.ts";
import { shardOf, workerOfShard } from "./shard_of.ts";
import { ENTITY_TYPES, type EntityType, formatShardKey, parseShardKey } from "./shard_key.ts";
import { Watermark } from "./watermark.ts";
import { WorkerPool } from "./worker_pool.ts";

/** An event as the ingest route hands it over: not yet positioned in the log. */
export type IncomingEvent = Omit<TelemetryEvent, "position" | "isLate">;

/** Shard ownership and log reading, backed by the database. */
export interface ShardStore {
  /** Takes ownership of `family:shard` keys: raises their epochs, returns checkpoints and epochs. */
  acquire(keys: string[]): Promise<Map<string, ShardLease>>;
  /** Log entries with `after < position <= through`, in position order, at most `limit`. */
  readLog(after: number, through: number, limit: number): Promise<TelemetryEvent[]>;
  /** Highest position in the log. */
  lastPosition(): Promise<number>;
  /** Privacy requests on record, read again whenever workers (re)start. */
  loadOptOuts(): Promise<Array<[string, OptOut]>>;
}

/** Settings of the region. */
export interface RegionOptions {
  workers: number;
  shards: number;
  batchDelayMs: number;
  /** Events per worker buffer that trigger an immediate post. */
  maxBatchEvents?: number;
  maxInFlightBatches: number;
  maxPendingEvents: number;
  allowedLatenessMs: number;
  maxIdleMs: number;
  maxSegmentMs: number;
  dedupeMaxIds: number;
  thresholds: RuleThresholds;
  databaseUrl: string | undefined;
  /** Flags at or above this level rank go to the alert outbox in their flush (unset: no alerts). */
  alertMinRank?: number;
  /** Writes a worker's batch when workers cannot reach the database themselves (PGlite). */
  writeBatch: (batch: FlushBatch) => Promise<void>;
  /** First log position to hand out when the region positions events itself (memory log). */
  firstPosition: number;
  shardStore: ShardStore;
  /** Durable log: raw events are already stored, and workers are rebuilt from the log. */
  isLogDurable: boolean;
  /** Module of the shard worker (tests substitute a wrapper that can crash). */
  workerUrl?: URL;
  /**
   * Set when shards are owned cluster-wide (redis log): workers start with no shards, the cluster
   * adopts and releases them, and is told when a worker lost its shards (reset or restart).
   */
  cluster?: { onShardsLost(keys: string[]): void };
  /** Told what the region decides and what workers report, on the main thread (metrics). */
  observer?: RegionObserver;
  logger: Logger;
}

/** Receives region decisions and worker reports as they happen; must not throw or block. */
export interface RegionObserver {
  /** Memory log: events positioned by {@link Region.route}, of which `lateCount` were late. */
  onRouted?(eventCount: number, lateCount: number): void;
  /** A worker's flush measurements since its previous status. */
  onFlushReport?(workerIndex: number, report: FlushReport): void;
}

/** Why the region refuses new events right now. */
export type Refusal = "draining" | "busy" | "degraded" | "recovering";

interface WorkerSlot {
  index: number;
  /** Events waiting to be posted, each once, with the families it is for in this worker. */
  batch: WorkerBatch;
  duplicates: DuplicateMark[];
  inFlight: number;
  /** User events of each batch in flight, oldest first (workers acknowledge in order). */
  unackedBatches: number[];
  unackedEvents: number;
  status: WorkerStatus;
  /** While true, live events wait in the buffers: the worker is (re)starting or replaying. */
  isRecovering: boolean;
  /** Failed restart attempts in a row (database down); retried with backoff. */
  restartFailures: number;
  /** Shards (`family:shard`) adopted by this worker under cluster ownership. */
  ownedKeys: Set<string>;
  /** Called on the next acknowledgement (or death) of this worker. */
  ackWaiters: Array<() => void>;
}

/** Health of the actor system, for `/readyz`. */
export interface RegionHealth {
  isDraining: boolean;
  workers: Array<
    {
      index: number;
      isAlive: boolean;
      isRecovering: boolean;
      inFlight: number;
      /** Events buffered for or posted to the worker and not yet applied by it (log lag). */
      unappliedEvents: number;
      /** Failed restart attempts in a row; the region keeps retrying with backoff. */
      restartFailures: number;
    } & WorkerStatus
  >;
  watermarkMs: number;
  restartedWorkers: number;
  /** Log entries read back into workers since start (start-up replay and worker restarts). */
  replayedEvents: number;
}

/** How long a flush request waits for a worker's answer before it counts as failed. */
const FLUSH_ANSWER_TIMEOUT_MS = 60_000;
/** How long a shard release waits for the worker's flush before the worker counts as failed. */
const RELEASE_ANSWER_TIMEOUT_MS = 60_000;
/** First and longest wait between attempts to restart a worker that could not be restarted. */
const RESTART_BACKOFF_MS = { first: 500, max: 30_000 };

/** Routes events to shard workers and owns their lifecycle. */
export class Region {
  #o: RegionOptions;
  #slots: WorkerSlot[] = [];
  #pool: WorkerPool;
  #restartTimers = new Set<ReturnType<typeof setTimeout>>();
  #nextPosition: number;
  /** Highest position handed to workers; a replay reads the log up to here. */
  #lastDispatchedPosition = 0;
  #nextBatchId = 1;
  #postTimer: ReturnType<typeof setTimeout> | null = null;
  #isDraining = false;
  #restartedWorkers = 0;
  #replayedEvents = 0;
  #writeChain: Promise<void> = Promise.resolve();

  #watermark: Watermark;

  private constructor(options: RegionOptions) {
    this.#o = options;
    this.#nextPosition = options.firstPosition;
    this.#watermark = new Watermark(options.allowedLatenessMs);
    this.#pool = new WorkerPool({
      workerUrl: options.workerUrl ?? new URL("./shard_worker.ts", import.meta.url),
      onMessage: (index, message) => this.#onMessage(this.#slots[index], message),
      onDeath: (index, reason) => this.#onWorkerDeath(this.#slots[index], reason),
    });
    for (let index = 0; index < options.workers; index++) this.#slots.push(emptySlot(index));
  }

  /** Spawns the workers, replays the durable log into them, and resolves once all are ready. */
  static async start(options: RegionOptions): Promise<Region> {
    const region = new Region(options);
    const indexes = Array.from({ length: options.workers }, (_, i) => i);
    if (options.isLogDurable) {
      region.#lastDispatchedPosition = await options.shardStore.lastPosition();
    }
    try {
      await region.#startWorkers(indexes, region.#lastDispatchedPosition);
    } catch (error) {
      await region.close();
      throw error;
    }
    return region;
  }

  /** Highest event time seen; events older than it minus the allowed lateness are late. */
  get watermarkMs(): number {
    return this.#watermark.ms;
  }

  /** Returns why new events cannot be taken now, or null when they can. */
  refusal(): Refusal | null {
    if (this.#isDraining) return "draining";
    const perWorkerPending = this.#o.maxPendingEvents / this.#o.workers;
    for (const slot of this.#slots) {
      if (slot.inFlight >= this.#o.maxInFlightBatches) return "busy";
      if (slot.status.pendingEvents + slot.batch.userCount >= perWorkerPending) {
        if (slot.isRecovering) return "recovering";
        return slot.status.isFlushFailing ? "degraded" : "busy";
      }
    }
    return null;
  }

  /** Advances the watermark over the events and tells which are late (see {@link Watermark}). */
  markLateness(events: ReadonlyArray<{ atMs: number; receivedAtMs: number }>): boolean[] {
    return this.#watermark.advance(events);
  }

  /**
   * Memory log: positions the events, marks late ones and queues them for their workers.
   * Synchronous: when it returns, the events are the region's responsibility.
   */
  route(events: IncomingEvent[]): void {
    const late = this.markLateness(events);
    this.#o.observer?.onRouted?.(events.length, late.filter((isLate) => isLate).length);
    this.dispatch(
      events.map((e, i) => ({ ...e, position: this.#nextPosition++, isLate: late[i] })),
    );
  }

  /** Queues positioned events for their workers, in position order. */
  dispatch(events: TelemetryEvent[]): void {
    if (this.#isDraining) {
      throw new Error(`Cannot route ${events.length} events: the region is draining`);
    }
    for (const event of events) {
      if (event.position > this.#lastDispatchedPosition) {
        this.#lastDispatchedPosition = event.position;
      }
      forEachWorker(event, this.#workerOf, (index, roles) => {
        this.#slots[index].batch.push(event, roles);
      });
    }
    this.#schedulePost();
  }

  #schedulePost(): void {
    const limit = this.#o.maxBatchEvents ?? 500;
    if (this.#slots.some((s) => s.batch.size >= limit)) this.#postAll();
    else if (this.#postTimer === null) {
      this.#postTimer = setTimeout(() => this.#postAll(), this.#o.batchDelayMs);
    }
  }

  /** Sends a privacy request to the worker that owns the user. */
  recordOptOut(userId: string, optOut: OptOut): void {
    // Post buffered events first: events accepted before the request must not be flagged by it.
    this.#postAll();
    this.#pool.post(this.#workerOf(userId), { type: "opt_out", userId, optOut });
  }

  /** Lets wall-clock time into the workers: prune, passivate, and flush if due. */
  tick(nowMs: number): void {
    this.#postAll();
    const message: ToWorker = { type: "tick", nowMs, watermarkMs: this.#watermark.ms };
    for (const slot of this.#slots) this.#pool.post(slot.index, message);
  }

  /**
   * Posts buffered events and asks every worker to flush now; resolves with the errors of the
   * flushes that failed (empty when everything routed so far is committed).
   */
  async flush(timeoutMs = FLUSH_ANSWER_TIMEOUT_MS): Promise<string[]> {
    this.#postAll();
    // A worker stuck behind a hung database must not hold a drain forever: asks time out.
    const results = await Promise.all(
      this.#slots.filter((s) => this.#pool.isAlive(s.index)).map((slot) =>
        this.#pool.ask(slot.index, (requestId) => ({ type: "flush", requestId }), timeoutMs)
      ),
    );
    return results.filter((e): e is string => e !== null);
  }

  /**
   * Stops intake, flushes until everything is committed (retrying up to `deadlineMs`), then stops the
   * workers. Returns the errors of a final flush that could not commit.
   */
  async drain(deadlineMs = 30_000): Promise<string[]> {
    this.#isDraining = true;
    const giveUpAt = Date.now() + deadlineMs;
    let errors = await this.flush();
    while (errors.length > 0 && Date.now() < giveUpAt) {
      this.#o.logger.warn("Drain flush failed, retrying", { errors });
      await new Promise((resolve) => setTimeout(resolve, 500));
      errors = await this.flush();
    }
    await this.#stopWorkers();
    return errors;
  }

  /** Terminates the workers without flushing (tests, and after drain). */
  async close(): Promise<void> {
    this.#isDraining = true;
    await this.#stopWorkers();
  }

  /** Per-worker load and flush health. */
  health(): RegionHealth {
    return {
      isDraining: this.#isDraining,
      watermarkMs: this.#watermark.ms,
      restartedWorkers: this.#restartedWorkers,
      replayedEvents: this.#replayedEvents,
      workers: this.#slots.map((s) => ({
        index: s.index,
        isAlive: this.#pool.isAlive(s.index),
        isRecovering: s.isRecovering,
        inFlight: s.inFlight,
        unappliedEvents: s.batch.userCount + s.unackedEvents,
        restartFailures: s.restartFailures,
        ...s.status,
      })),
    };
  }

  #slotFor(key: string): WorkerSlot {
    return this.#slots[this.#workerOf(key)];
  }

  /** The worker hosting a key's shard; a bound function, so it can be handed on as it is. */
  #workerOf = (key: string): number => workerOfShard(shardOf(key, this.#o.shards), this.#o.workers);

  /**
   * Spawns workers owning fresh leases, replays the log into them, then releases live events. On
   * failure the workers it spawned are stopped again and the error is thrown.
   */
  async #startWorkers(indexes: number[], through: number): Promise<void> {
    const owned = new Set(indexes);
    const keys: string[] = [];
    for (let shard = 0; shard < this.#o.shards; shard++) {
      if (!owned.has(workerOfShard(shard, this.#o.workers))) continue;
      for (const type of ENTITY_TYPES) keys.push(formatShardKey(type, shard));
    }
    try {
      // Under cluster ownership workers start empty; the cluster adopts shards as it wins leases.
      const leases = this.#o.cluster === undefined
        ? await this.#o.shardStore.acquire(keys)
        : new Map<string, ShardLease>();
      // Read again on every (re)start: requests recorded since, including DNT events a dead worker
      // had flushed, must reach the new worker.
      const optOuts = await this.#o.shardStore.loadOptOuts();
      await Promise.all(indexes.map((index) => this.#spawn(index, leases, optOuts)));
      if (this.#o.isLogDurable) {
        let after = through;
        for (const lease of leases.values()) after = Math.min(after, lease.position);
        const replayed = await replayLog(
          {
            readLog: (from, to, limit) => this.#o.shardStore.readLog(from, to, limit),
            workerOf: this.#workerOf,
            markLateness: (events) => this.markLateness(events),
            post: (index, batch, pageEnd) =>
              this.#postEvents(this.#slots[index], { batch }, pageEnd),
            caughtUp: (index) => this.#acked(this.#slots[index], 1),
          },
          indexes,
          after,
          through,
        );
        this.#replayedEvents += replayed;
        if (replayed > 0) {
          this.#o.logger.info(
            `Replayed ${replayed} logged events into workers ${indexes.join(", ")}`,
            { through },
          );
        }
      }
    } catch (error) {
      for (const index of indexes) this.#pool.terminate(index, "start failed");
      throw error;
    }
    for (const index of indexes) this.#slots[index].isRecovering = false;
    this.#postAll();
  }

  #spawn(
    index: number,
    leases: Map<string, ShardLease>,
    optOuts: Array<[string, OptOut]>,
  ): Promise<void> {
    const slot = this.#slots[index];
    // Buffered live events survive the restart; what was posted to the dead worker did not.
    slot.inFlight = 0;
    slot.unackedBatches = [];
    slot.unackedEvents = 0;
    slot.isRecovering = true;
    slot.status = { pendingEvents: 0, entities: 0, isFlushFailing: false, lastFlushError: null };
    const isOwned = (key: string) =>
      workerOfShard(parseShardKey(key).shard, this.#o.workers) === index;
    const init: WorkerInit = {
      workerIndex: index,
      nowMs: Date.now(),
      shardCount: this.#o.shards,
      // The single-node durable log deduplicates by primary key before events reach workers, so
      // workers need no memory of ids (the redis log and the memory log do not).
      dedupeIdsPerShard: this.#o.isLogDurable && this.#o.cluster === undefined
        ? 0
        : Math.ceil(this.#o.dedupeMaxIds / this.#o.shards),
      maxSegmentMs: this.#o.maxSegmentMs,
      maxIdleMs: this.#o.maxIdleMs,
      allowedLatenessMs: this.#o.allowedLatenessMs,
      thresholds: this.#o.thresholds,
      databaseUrl: this.#o.databaseUrl,
      isLogDurable: this.#o.isLogDurable,
      alertMinRank: this.#o.alertMinRank,
      hasStreamPositions: this.#o.cluster !== undefined,
      shards: [...leases.entries()].filter(([key]) => isOwned(key)),
      optOuts: optOuts.filter(([userId]) => this.#workerOf(userId) === index),
    };
    return this.#pool.spawn(index, init);
  }

  #onMessage(slot: WorkerSlot, message: FromWorker): void {
    switch (message.type) {
      case "ack":
        slot.inFlight = Math.max(0, slot.inFlight - 1);
        slot.unackedEvents -= slot.unackedBatches.shift() ?? 0;
        slot.status = this.#takeStatus(slot, message.status);
        for (const waiter of slot.ackWaiters.splice(0)) waiter();
        return;
      case "flushed":
      case "status":
        slot.status = this.#takeStatus(slot, message.status);
        return;
      case "db_write":
        this.#writeForWorker(slot, message.requestId, message.batch);
        return;
      case "log":
        this.#o.logger.log(message.level, message.message);
        return;
      case "reset":
        this.#onWorkerReset(slot, message.keys, message.reason);
        return;
      case "ready":
      case "stopped":
      case "released":
        return; // answers the pool settles
    }
  }

  /** Hands a status's flush report to the observer and keeps the rest as the slot's status. */
  #takeStatus(slot: WorkerSlot, status: WorkerStatus): WorkerStatus {
    if (status.flushes === undefined) return status;
    const { flushes, ...rest } = status;
    this.#o.observer?.onFlushReport?.(slot.index, flushes);
    return rest;
  }

  /** Gives workers the shards the cluster won, with their checkpoints and epochs. */
  adoptShards(leases: Map<string, ShardLease>): void {
    // Events still buffered from before are posted first, while the worker does not own the shards
    // yet (it ignores them): the stream is read again from the checkpoint after the adopt.
    this.#postAll();
    const byWorker = new Map<number, Array<[string, ShardLease]>>();
    for (const [key, lease] of leases) {
      const index = workerOfShard(parseShardKey(key).shard, this.#o.workers);
      byWorker.set(index, [...(byWorker.get(index) ?? []), [key, lease]]);
    }
    for (const [index, shards] of byWorker) {
      for (const [key] of shards) this.#slots[index].ownedKeys.add(key);
      this.#pool.post(index, { type: "adopt", shards });
    }
  }

  /**
   * Flushes and forgets shards the cluster hands to another node; resolves with the errors of
   * workers that could not commit first (they reset, and the new owner replays from the checkpoint).
   */
  async releaseShards(keys: string[]): Promise<string[]> {
    this.#postAll();
    const byWorker = new Map<number, string[]>();
    for (const key of keys) {
      const index = workerOfShard(parseShardKey(key).shard, this.#o.workers);
      byWorker.set(index, [...(byWorker.get(index) ?? []), key]);
    }
    const results = await Promise.all([...byWorker].map(([index, workerKeys]) => {
      for (const key of workerKeys) this.#slots[index].ownedKeys.delete(key);
      if (!this.#pool.isAlive(index)) return Promise.resolve(null);
      return this.#pool.ask(
        index,
        (requestId) => ({ type: "release", requestId, keys: workerKeys }),
        RELEASE_ANSWER_TIMEOUT_MS,
      );
    }));
    return results.filter((e): e is string => e !== null);
  }

  /** Queues events read from one family's stream for the workers owning their shards. */
  dispatchFamily(
    family: EntityType,
    events: TelemetryEvent[],
    duplicates: DuplicateMark[] = [],
  ): void {
    for (const event of events) {
      const key = family === "user"
        ? event.userId
        : family === "content"
        ? event.contentId
        : event.deviceId;
      const slot = this.#slotFor(key);
      slot.batch.push(event, ROLE[family]);
    }
    for (const mark of duplicates) this.#slotFor(mark.userId).duplicates.push(mark);
    this.#schedulePost();
  }

  #onWorkerReset(slot: WorkerSlot, keys: string[], reason: string): void {
    if (this.#o.cluster !== undefined) {
      for (const key of keys) slot.ownedKeys.delete(key);
      this.#o.cluster.onShardsLost(keys);
      return;
    }
    // Single-node backends own every shard: a fence means another process took them over.
    this.#o.logger.error(
      `Worker ${slot.index} was fenced off its shards: is a second server using this database? ` +
        `Use QUEUE=redis to run several nodes`,
      { reason },
    );
    this.#pool.kill(slot.index, `fenced: ${reason}`);
  }

  /** PGlite has one owner (this thread): worker flushes are written here, one after another. */
  #writeForWorker(slot: WorkerSlot, requestId: number, batch: FlushBatch): void {
    this.#writeChain = this.#writeChain.then(async () => {
      let error: string | null = null;
      let isFenced = false;
      try {
        await this.#o.writeBatch(batch);
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
        isFenced = e instanceof Error && e.name === "FencedError";
      }
      this.#pool.post(slot.index, { type: "db_done", requestId, error, isFenced });
    });
  }

  #onWorkerDeath(slot: WorkerSlot, reason: string): void {
    for (const waiter of slot.ackWaiters.splice(0)) waiter();
    if (this.#isDraining) return;
    this.#restartedWorkers++;
    // Live events dispatched from now on wait in the buffers until the replay is done. With a
    // durable log, buffered events are dropped: they are in the log and the replay posts them.
    slot.isRecovering = true;
    if (this.#o.isLogDurable || this.#o.cluster !== undefined) {
      slot.batch = new WorkerBatch();
      slot.duplicates = [];
    }
    const through = this.#lastDispatchedPosition;
    let onRestarted = () => {};
    if (this.#o.cluster !== undefined) {
      this.#o.logger.error(
        `Worker ${slot.index} died; restarting it, the cluster re-acquires its shards`,
        { reason },
      );
      const lost = [...slot.ownedKeys];
      onRestarted = () => this.#o.cluster?.onShardsLost(lost);
    } else if (!this.#o.isLogDurable) {
      this.#o.logger.error(
        `Worker ${slot.index} died; restarting it. Up to ${slot.status.pendingEvents} unflushed ` +
          `events of its shards are lost (memory queue)`,
        { reason },
      );
    } else {
      this.#o.logger.error(
        `Worker ${slot.index} died; restarting it and replaying its shards from the log`,
        { reason },
      );
    }
    this.#restart(slot, through, onRestarted);
  }

  /**
   * Restarts a dead worker, retrying with exponential backoff while it fails (database down). Until
   * it succeeds, live events wait in its buffers and backpressure refuses more ("recovering").
   */
  #restart(slot: WorkerSlot, through: number, onRestarted: () => void): void {
    if (this.#isDraining) return;
    this.#startWorkers([slot.index], through).then(
      () => {
        if (slot.restartFailures > 0) {
          this.#o.logger.info(
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
        this.#o.logger.error(`Cannot restart worker ${slot.index}: retrying in ${delayMs} ms`, {
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

  /** Resolves once the worker has at most `maxInFlight` batches unacknowledged, or died. */
  async #acked(slot: WorkerSlot, maxInFlight: number): Promise<void> {
    while (this.#pool.isAlive(slot.index) && slot.inFlight > maxInFlight) {
      await new Promise<void>((resolve) => slot.ackWaiters.push(resolve));
    }
  }

  #postAll(): void {
    if (this.#postTimer !== null) {
      clearTimeout(this.#postTimer);
      this.#postTimer = null;
    }
    for (const slot of this.#slots) {
      if (slot.isRecovering || !this.#pool.isAlive(slot.index)) continue;
      if (
        slot.batch.size === 0 && slot.duplicates.length === 0
      ) continue;
      this.#postEvents(
        slot,
        slot,
        this.#o.cluster === undefined ? this.#lastDispatchedPosition : undefined,
      );
      slot.batch = new WorkerBatch();
      slot.duplicates = [];
    }
  }

  #postEvents(
    slot: WorkerSlot,
    events: { batch: WorkerBatch; duplicates?: DuplicateMark[] },
    throughPosition?: number,
  ): void {
    slot.inFlight++;
    slot.unackedBatches.push(events.batch.userCount);
    slot.unackedEvents += events.batch.userCount;
    this.#pool.post(slot.index, {
      type: "events",
      batchId: this.#nextBatchId++,
      watermarkMs: this.#watermark.ms,
      // With a durable log the workers store no raw events: the aggregates' keys suffice.
      events: events.batch.toColumns(this.#o.isLogDurable ? AGGREGATED_METADATA_KEYS : undefined),
      duplicates: events.duplicates,
      throughPosition,
    });
  }

  async #stopWorkers(): Promise<void> {
    if (this.#postTimer !== null) clearTimeout(this.#postTimer);
    this.#postTimer = null;
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#restartTimers.clear();
    await this.#writeChain;
    await this.#pool.stopAll();
  }
}

function emptySlot(index: number): WorkerSlot {
  return {
    index,
    batch: new WorkerBatch(),
    duplicates: [],
    inFlight: 0,
    unackedBatches: [],
    unackedEvents: 0,
    status: { pendingEvents: 0, entities: 0, isFlushFailing: false, lastFlushError: null },
    isRecovering: true,
    restartFailures: 0,
    ownedKeys: new Set(),
    ackWaiters: [],
  };
}
