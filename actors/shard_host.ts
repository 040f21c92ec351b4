/**
 * The logic of one shard worker, apart from the Worker global so tests can drive it directly: it owns
 * the user, content and device shards dealt to it, applies event batches, prunes and passivates on
 * tick, and flushes its pending deltas strictly one flush at a time.
 *
 * @module
 */
import type { FlushBatch } from "../db/flush_batch.ts";
import { emptyBatch, isEmptyBatch, mergeBatch } from "./pending.ts";
import type { FromWorker, ToWorker, WorkerInit, WorkerStatus } from "./protocol.ts";
import { QualityFamily } from "./quality_family.ts";
import { UserFamily } from "./user_family.ts";

/** Writes one batch in one transaction; rejects if nothing was committed. */
export type FlushSink = (batch: FlushBatch) => Promise<void>;

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 30_000;

/** One worker's shards and their pending deltas. */
export class ShardHost {
  #init: WorkerInit;
  #send: (message: FromWorker) => void;
  #sink: FlushSink;
  #users: UserFamily;
  #contents: QualityFamily;
  #devices: QualityFamily;
  #pending: FlushBatch = emptyBatch();
  #pendingEvents = 0;
  #inFlightEvents = 0;
  #flushChain: Promise<void> = Promise.resolve();
  #isFlushing = false;
  #backoffMs = 0;
  #nextAttemptMs = 0;
  #lastFlushError: string | null = null;
  #epochs = new Map<string, number>();

  constructor(init: WorkerInit, send: (message: FromWorker) => void, sink: FlushSink) {
    this.#init = init;
    this.#send = send;
    this.#sink = sink;
    const onRuleError = (rule: string, event: { eventId: string }, error: unknown) => {
      this.#log("error", `Rule "${rule}" failed on event "${event.eventId}": ${describe(error)}`);
    };
    const common = {
      shardCount: init.shardCount,
      dedupeIdsPerShard: init.dedupeIdsPerShard,
      thresholds: init.thresholds,
      onRuleError,
    };
    const through = (family: string) =>
      new Map(
        init.shards.filter(([key]) => key.startsWith(`${family}:`)).map((
          [key, lease],
        ) => [Number(key.slice(family.length + 1)), lease.position]),
      );
    for (const [key, lease] of init.shards) this.#epochs.set(key, lease.epoch);
    this.#users = new UserFamily({
      ...common,
      maxSegmentMs: init.maxSegmentMs,
      isLogDurable: init.isLogDurable,
      appliedThrough: through("user"),
    });
    this.#contents = new QualityFamily({
      ...common,
      family: "content",
      appliedThrough: through("content"),
    });
    this.#devices = new QualityFamily({
      ...common,
      family: "device",
      appliedThrough: through("device"),
    });
    for (const [userId, optOut] of init.optOuts) this.#users.recordOptOut(userId, optOut);
  }

  /** Handles one message from the region; resolves when any flush it started has finished. */
  async handle(message: ToWorker): Promise<void> {
    switch (message.type) {
      case "events": {
        for (const event of message.user) this.#users.apply(event, message.nowMs, this.#pending);
        for (const event of message.content) {
          this.#contents.apply(event, message.nowMs, this.#pending);
        }
        for (const event of message.device) {
          this.#devices.apply(event, message.nowMs, this.#pending);
        }
        this.#users.discardScratch();
        this.#contents.discardScratch();
        this.#devices.discardScratch();
        this.#pendingEvents += message.user.length;
        this.#send({ type: "ack", batchId: message.batchId, status: this.status() });
        return;
      }
      case "tick":
        this.#tick(message.nowMs, message.watermarkMs);
        if (!this.#isFlushing && message.nowMs >= this.#nextAttemptMs) {
          await this.#enqueueFlush(null, message.nowMs);
        }
        return;
      case "flush":
        await this.#enqueueFlush(message.requestId, this.#nextAttemptMs);
        return;
      case "opt_out":
        this.#users.recordOptOut(message.userId, message.optOut);
        return;
      case "init":
      case "db_done":
      case "stop":
        return;
    }
  }

  /** Current load and health, reported to the region for backpressure and readiness. */
  status(): WorkerStatus {
    return {
      pendingEvents: this.#pendingEvents + this.#inFlightEvents,
      entities: this.#users.entityCount + this.#contents.entityCount + this.#devices.entityCount,
      isFlushFailing: this.#lastFlushError !== null,
      lastFlushError: this.#lastFlushError,
    };
  }

  #tick(nowMs: number, watermarkMs: number): void {
    const horizonMs = watermarkMs - this.#init.allowedLatenessMs;
    this.#users.prune(horizonMs);
    this.#contents.prune(horizonMs);
    this.#devices.prune(horizonMs);
    const idleSinceMs = nowMs - this.#init.maxIdleMs;
    const evicted = this.#users.passivate(idleSinceMs, watermarkMs) +
      this.#contents.passivate(idleSinceMs) +
      this.#devices.passivate(idleSinceMs);
    if (evicted > 0) this.#log("debug", `Passivated ${evicted} idle entities`);
  }

  /** Flushes are chained so two never run at once (two at once double-counted in a prototype). */
  #enqueueFlush(requestId: number | null, nowMs: number): Promise<void> {
    this.#flushChain = this.#flushChain.then(() => this.#flushOnce(requestId, nowMs));
    return this.#flushChain;
  }

  async #flushOnce(requestId: number | null, nowMs: number): Promise<void> {
    // Snapshot synchronously: events applied while the write runs land in the fresh batch.
    const batch = this.#pending;
    const events = this.#pendingEvents;
    if (isEmptyBatch(batch)) {
      if (requestId !== null) this.#reportFlush(requestId, null, 0);
      return;
    }
    this.#pending = emptyBatch();
    this.#pendingEvents = 0;
    this.#inFlightEvents = events;
    this.#isFlushing = true;
    try {
      for (const key of batch.checkpoints.keys()) {
        const epoch = this.#epochs.get(key);
        if (epoch === undefined) {
          throw new Error(`Cannot flush shard "${key}": this worker does not own it`);
        }
        batch.epochs.set(key, epoch);
      }
      await this.#sink(batch);
      this.#backoffMs = 0;
      this.#nextAttemptMs = 0;
      this.#lastFlushError = null;
      this.#inFlightEvents = 0;
      this.#reportFlush(requestId, null, events);
    } catch (error) {
      // The transaction rolled back: put the deltas back in front of anything newer and retry later.
      const newer = this.#pending;
      this.#pending = batch;
      mergeBatch(this.#pending, newer);
      this.#pendingEvents += events;
      this.#inFlightEvents = 0;
      this.#backoffMs = Math.min(Math.max(this.#backoffMs * 2, MIN_BACKOFF_MS), MAX_BACKOFF_MS);
      this.#nextAttemptMs = nowMs + this.#backoffMs;
      this.#lastFlushError = describe(error);
      this.#log(
        "warn",
        `Flush of ${events} events failed, retrying in ${this.#backoffMs} ms: ${this.#lastFlushError}`,
      );
      this.#reportFlush(requestId, this.#lastFlushError, 0);
    } finally {
      this.#isFlushing = false;
    }
  }

  #reportFlush(requestId: number | null, error: string | null, flushedEvents: number): void {
    this.#send({ type: "flushed", requestId, error, flushedEvents, status: this.status() });
  }

  #log(level: "debug" | "info" | "warn" | "error", message: string): void {
    this.#send({ type: "log", level, message: `worker ${this.#init.workerIndex}: ${message}` });
  }
}

/** A short description of a thrown value for logs and status. */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
