/**
 * The region: the main-thread router from key to shard to worker. It decides lateness once per event,
 * batches events per worker, tracks batches in flight for backpressure (refusal) and drives time
 * into workers with ticks. Spawning and asking workers is {@link WorkerPool}'s job; starting,
 * replaying, restarting, flushing and stopping them, and what they report, is the
 * {@link Supervisor}'s; the region's settings and health types live in `region_types.ts`.
 *
 * @module
 */
import type { OptOut, TelemetryEvent } from "../rules/mod.ts";
import type { DuplicateMark, FromWorker, ShardLease } from "./protocol.ts";
import { ROLE, WorkerBatch } from "./event_columns.ts";
import { forEachWorker } from "./replay.ts";
import {
  emptySlot,
  type IncomingEvent,
  type Refusal,
  type RegionHealth,
  type RegionOptions,
  type WorkerSlot,
} from "./region_types.ts";
import { Supervisor } from "./supervisor.ts";
import { AGGREGATED_METADATA_KEYS } from "./user_family.ts";
import { shardOf, workerOfShard } from "./shard_of.ts";
import type { EntityType } from "./shard_key.ts";
import { Watermark } from "./watermark.ts";
import { WorkerPool } from "./worker_pool.ts";

export type {
  IncomingEvent,
  Refusal,
  RegionHealth,
  RegionObserver,
  RegionOptions,
  ShardStore,
} from "./region_types.ts";

/** Routes events to shard workers; its {@link Supervisor} keeps them alive. */
export class Region {
  #o: RegionOptions;
  #slots: WorkerSlot[] = [];
  #pool: WorkerPool;
  #supervisor: Supervisor;
  #nextPosition: number;
  /** Highest position handed to workers; a replay reads the log up to here. */
  #lastDispatchedPosition = 0;
  #nextBatchId = 1;
  #postTimer: ReturnType<typeof setTimeout> | null = null;
  #isDraining = false;

  #watermark: Watermark;

  private constructor(options: RegionOptions) {
    this.#o = options;
    this.#nextPosition = options.firstPosition;
    this.#watermark = new Watermark(options.allowedLatenessMs);
    this.#pool = new WorkerPool({
      workerUrl: options.workerUrl ?? new URL("./shard_worker.ts", import.meta.url),
      onMessage: (index, message) => this.#onMessage(this.#slots[index], message),
      onDeath: (index, reason) => this.#supervisor.onDeath(this.#slots[index], reason),
    });
    for (let index = 0; index < options.workers; index++) this.#slots.push(emptySlot(index));
    this.#supervisor = new Supervisor({
      options,
      slots: this.#slots,
      pool: this.#pool,
      isDraining: () => this.#isDraining,
      lastDispatchedPosition: () => this.#lastDispatchedPosition,
      throughPositionFor: (slot) => this.throughPositionFor(slot),
      workerOf: this.#workerOf,
      markLateness: (events) => this.markLateness(events),
      postReplayed: (slot, batch, pageEnd) => this.#postEvents(slot, { batch }, pageEnd),
      acked: (slot, maxInFlight) => this.#acked(slot, maxInFlight),
      postAll: () => this.#postAll(),
    });
  }

  /** Spawns the workers, replays the durable log into them, and resolves once all are ready. */
  static async start(options: RegionOptions): Promise<Region> {
    const region = new Region(options);
    const indexes = Array.from({ length: options.workers }, (_, i) => i);
    if (options.isLogDurable) {
      region.#lastDispatchedPosition = await options.shardStore.lastPosition();
    }
    try {
      await region.#supervisor.start(indexes, region.#lastDispatchedPosition);
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
    for (const slot of this.#slots) {
      this.#pool.post(slot.index, {
        type: "tick",
        nowMs,
        watermarkMs: this.#watermark.ms,
        throughPosition: this.throughPositionFor(slot),
      });
    }
  }

  /**
   * The position a worker has been posted every event up to, once its buffer is posted: the last
   * dispatched one, unless it is replaying (its buffer waits) or the cluster numbers per stream.
   */
  throughPositionFor(slot: WorkerSlot): number | undefined {
    if (this.#o.cluster !== undefined || slot.isRecovering || slot.batch.size > 0) return undefined;
    return this.#lastDispatchedPosition;
  }

  /**
   * Posts buffered events and asks every worker to flush now; resolves with the errors of the
   * flushes that failed (empty when everything routed so far is committed).
   */
  flush(timeoutMs?: number): Promise<string[]> {
    return this.#supervisor.flush(timeoutMs);
  }

  /**
   * Stops intake, flushes until everything is committed (retrying up to `deadlineMs`), then stops the
   * workers. Returns the errors of a final flush that could not commit.
   */
  async drain(deadlineMs = 30_000): Promise<string[]> {
    this.#isDraining = true;
    const errors = await this.#supervisor.flushUntilCommitted(deadlineMs);
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
      restartedWorkers: this.#supervisor.restartedWorkers,
      replayedEvents: this.#supervisor.replayedEvents,
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

  /** Acknowledgements free buffer room here; every other worker message is the supervisor's. */
  #onMessage(slot: WorkerSlot, message: FromWorker): void {
    if (message.type !== "ack") return this.#supervisor.onMessage(slot, message);
    slot.inFlight = Math.max(0, slot.inFlight - 1);
    slot.unackedEvents -= slot.unackedBatches.shift() ?? 0;
    this.#supervisor.takeStatus(slot, message.status);
    for (const waiter of slot.ackWaiters.splice(0)) waiter();
  }

  /** Gives workers the shards the cluster won, with their checkpoints and epochs. */
  adoptShards(leases: Map<string, ShardLease>): void {
    // Events still buffered from before are posted first, while the worker does not own the shards
    // yet (it ignores them): the stream is read again from the checkpoint after the adopt.
    this.#postAll();
    this.#supervisor.adopt(leases);
  }

  /**
   * Flushes and forgets shards the cluster hands to another node; resolves with the errors of
   * workers that could not commit first (they reset, and the new owner replays from the checkpoint).
   */
  releaseShards(keys: string[]): Promise<string[]> {
    this.#postAll();
    return this.#supervisor.release(keys);
  }

  /**
   * Cluster: every worker lets go of all its shards at once, without flushing (the node steps down
   * because it cannot flush; the new owners replay from the committed checkpoints).
   */
  resetShards(reason: string): void {
    this.#postAll();
    this.#supervisor.resetAll(reason);
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
    await this.#supervisor.stop();
  }
}
