/**
 * The logic of one shard worker, apart from the Worker global so tests can drive it directly: it owns
 * the user, content and device shards dealt to it, applies event batches, prunes and passivates on
 * tick, and flushes its pending deltas strictly one flush at a time.
 *
 * @module
 */
import type { FlushBatch } from "../db/flush_batch.ts";
import { advanceCheckpoint, emptyBatch, isEmptyBatch, mergeBatch } from "./pending.ts";
import type {
  FlushReport,
  FromWorker,
  ShardLease,
  ToWorker,
  WorkerInit,
  WorkerStatus,
} from "./protocol.ts";
import { columnCount, eventAt, ROLE } from "./event_columns.ts";
import { QualityFamily } from "./quality_family.ts";
import { UserFamily } from "./user_family.ts";
import { parseShardKey } from "./shard_key.ts";

/** Writes one batch in one transaction; rejects if nothing was committed. */
export type FlushSink = (batch: FlushBatch) => Promise<void>;

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 30_000;
/** Flush durations kept between two status messages; more are dropped (metrics, not accounting). */
const MAX_REPORTED_FLUSHES = 100;
/** A worker that sent no status for this long (tick time) sends one on the next tick. */
const QUIET_STATUS_EVERY_MS = 10_000;

/** One worker's shards and their pending deltas. */
export class ShardHost {
  #init: WorkerInit;
  #send: (message: FromWorker) => void;
  #sink: FlushSink;
  #monotonicMs: () => number;
  /** Flush measurements not yet sent to the region; null when there were none. */
  #report: FlushReport | null = null;
  #users: UserFamily;
  #contents: QualityFamily;
  #devices: QualityFamily;
  #pending: FlushBatch = emptyBatch();
  #pendingEvents = 0;
  #inFlightEvents = 0;
  #flushChain: Promise<void> = Promise.resolve();
  #isFlushing = false;
  /** The region's time when the running flush started. */
  #flushStartedAtMs = 0;
  /** `flushBlockedSinceMs` as the last status sent said it. */
  #reportedBlockedSinceMs: number | null = null;
  #backoffMs = 0;
  #nextAttemptMs = 0;
  /** Latest wall-clock time the region sent (events and ticks): requested flushes back off from it. */
  #lastNowMs = 0;
  /** Tick time of the latest status sent (with an ack, a flush or on its own). */
  #statusAtMs = 0;
  #lastFlushError: string | null = null;
  /** Tick time of the first failed flush of the current run of failures. */
  #failingSinceMs: number | null = null;
  #epochs = new Map<string, number>();
  /** The region's watermark as of the last tick (event time every shard has seen). */
  #watermarkMs = 0;
  /** Highest position the region says this worker has been sent everything up to. */
  #seenThrough = 0;
  /** Highest such position already written as every owned shard's checkpoint. */
  #checkpointedThrough = 0;
  #owned = {
    user: new Map<number, number>(),
    content: new Map<number, number>(),
    device: new Map<number, number>(),
  };

  constructor(
    init: WorkerInit,
    send: (message: FromWorker) => void,
    sink: FlushSink,
    monotonicMs: () => number = () => performance.now(),
  ) {
    this.#init = init;
    this.#lastNowMs = init.nowMs;
    this.#statusAtMs = init.nowMs;
    this.#send = send;
    this.#sink = sink;
    this.#monotonicMs = monotonicMs;
    [this.#users, this.#contents, this.#devices] = this.#createFamilies();
    this.#adopt(init.shards);
    for (const [userId, optOut] of init.optOuts) this.#users.recordOptOut(userId, optOut);
  }

  #createFamilies(): [UserFamily, QualityFamily, QualityFamily] {
    const init = this.#init;
    const onRuleError = (rule: string, event: { eventId: string }, error: unknown) => {
      this.#log("error", `Rule "${rule}" failed on event "${event.eventId}": ${describe(error)}`);
    };
    const common = {
      shardCount: init.shardCount,
      dedupeIdsPerShard: init.dedupeIdsPerShard,
      thresholds: init.thresholds,
      onRuleError,
    };
    return [
      new UserFamily({
        ...common,
        maxSegmentMs: init.maxSegmentMs,
        allowedLatenessMs: init.allowedLatenessMs,
        isLogDurable: init.isLogDurable,
        hasStreamPositions: init.hasStreamPositions,
        owned: this.#owned.user,
      }),
      new QualityFamily({ ...common, family: "content", owned: this.#owned.content }),
      new QualityFamily({ ...common, family: "device", owned: this.#owned.device }),
    ];
  }

  /** Takes shards (`family:shard` keys) with their checkpoints and owner epochs. */
  #adopt(shards: Array<[string, ShardLease]>): void {
    for (const [key, lease] of shards) {
      const { entityType: family, shard } = parseShardKey(key);
      this.#owned[family].set(shard, lease.position);
      this.#epochs.set(key, lease.epoch);
      if (family === "user" && lease.openViews !== undefined) {
        this.#users.loadViews(lease.openViews, lease.viewEvents ?? []);
      }
    }
  }

  /** Forgets shards: no more events, flushes or state for them here. */
  #drop(keys: string[]): void {
    for (const key of keys) {
      const { entityType: family, shard } = parseShardKey(key);
      this.#owned[family].delete(shard);
      this.#epochs.delete(key);
      const owner = family === "user"
        ? this.#users
        : family === "content"
        ? this.#contents
        : this.#devices;
      owner.dropShard(shard);
    }
  }

  /**
   * After a fenced flush: another owner took one of this worker's shards, and pending deltas cannot
   * be split by shard, so everything is dropped and the region re-acquires what is still ours (the
   * log replays it from the committed checkpoints).
   */
  #reset(reason: string): void {
    const keys = [...this.#epochs.keys()];
    for (const family of ["user", "content", "device"] as const) this.#owned[family].clear();
    this.#epochs.clear();
    this.#pending = emptyBatch();
    this.#pendingEvents = 0;
    this.#backoffMs = 0;
    this.#nextAttemptMs = 0;
    this.#lastFlushError = null;
    this.#failingSinceMs = null;
    [this.#users, this.#contents, this.#devices] = this.#createFamilies();
    this.#log("warn", `Dropped all shards and unflushed deltas: ${reason}`);
    this.#send({ type: "reset", keys, reason });
    this.#sendStatus();
  }

  /** Handles one message from the region; resolves when any flush it started has finished. */
  async handle(message: ToWorker): Promise<void> {
    switch (message.type) {
      case "events": {
        // Time comes only from ticks: entities touched now count as touched at the last tick.
        const nowMs = this.#lastNowMs;
        const events = message.events;
        let userEvents = 0;
        for (let i = 0; i < columnCount(events); i++) {
          const event = eventAt(events, i);
          const roles = events.roles[i];
          if ((roles & ROLE.user) !== 0) {
            this.#users.apply(event, nowMs, this.#pending);
            userEvents++;
          }
          if ((roles & ROLE.content) !== 0) this.#contents.apply(event, nowMs, this.#pending);
          if ((roles & ROLE.device) !== 0) this.#devices.apply(event, nowMs, this.#pending);
        }
        for (const mark of message.duplicates ?? []) {
          this.#users.applyDuplicate(mark.userId, mark.position, this.#pending);
        }
        this.#users.discardScratch();
        this.#contents.discardScratch();
        this.#devices.discardScratch();
        this.#pendingEvents += userEvents;
        this.#see(message.throughPosition);
        this.#send({ type: "ack", batchId: message.batchId, status: this.#statusWithReport() });
        return;
      }
      case "tick":
        this.#see(message.throughPosition);
        this.#lastNowMs = Math.max(this.#lastNowMs, message.nowMs);
        this.#tick(message.nowMs, message.watermarkMs);
        if (!this.#isFlushing && message.nowMs >= this.#nextAttemptMs) {
          await this.#enqueueFlush(null, message.nowMs);
        }
        return;
      case "flush":
        this.#see(message.throughPosition);
        await this.#enqueueFlush(message.requestId, this.#lastNowMs);
        return;
      case "opt_out":
        this.#users.recordOptOut(message.userId, message.optOut);
        return;
      case "adopt":
        this.#adopt(message.shards);
        return;
      case "release": {
        // Commit what the shards have pending before letting go; if that fails, start over.
        await this.#enqueueFlush(null, this.#lastNowMs);
        const error = this.#lastFlushError;
        if (error === null) {
          this.#drop(message.keys);
          this.#sendStatus();
        } else this.#reset(`Cannot release shards ${message.keys.join(", ")}: ${error}`);
        this.#send({ type: "released", requestId: message.requestId, error });
        return;
      }
      case "reset":
        // After any flush under way: its outcome (committed, or fenced off) is settled first.
        this.#flushChain = this.#flushChain.then(() => this.#reset(message.reason));
        return await this.#flushChain;
      case "init":
      case "db_done":
      case "stop":
        return;
    }
  }

  /** The region has posted this worker everything up to `throughPosition` (when it says so). */
  #see(throughPosition: number | undefined): void {
    if (throughPosition !== undefined && throughPosition > this.#seenThrough) {
      this.#seenThrough = throughPosition;
    }
  }

  /** Current load and health, reported to the region for backpressure and readiness. */
  status(): WorkerStatus {
    return {
      pendingEvents: this.#pendingEvents + this.#inFlightEvents,
      entities: this.#users.entityCount + this.#contents.entityCount + this.#devices.entityCount,
      heapUsedBytes: Deno.memoryUsage().heapUsed,
      isFlushFailing: this.#lastFlushError !== null,
      lastFlushError: this.#lastFlushError,
      flushBlockedSinceMs: this.#blockedSinceMs(),
    };
  }

  /** Blocked since a time the last status did not say (its end is told by the flush's report). */
  #isNewlyBlocked(): boolean {
    const blocked = this.#blockedSinceMs();
    return blocked !== null && blocked !== this.#reportedBlockedSinceMs;
  }

  /** A flush that hangs (a silent network) has not failed yet, but has not committed either. */
  #blockedSinceMs(): number | null {
    return this.#failingSinceMs ?? (this.#isFlushing ? this.#flushStartedAtMs : null);
  }

  /** The status plus the flush measurements since the previous one, which are then forgotten. */
  #statusWithReport(): WorkerStatus {
    this.#statusAtMs = this.#lastNowMs;
    const status = this.status();
    this.#reportedBlockedSinceMs = status.flushBlockedSinceMs;
    if (this.#report === null) return status;
    const flushes = this.#report;
    this.#report = null;
    return { ...status, flushes };
  }

  #recordFlush(startedMs: number, batch: FlushBatch | null): void {
    const report = this.#report ??= {
      durationsMs: [],
      failures: 0,
      rows: { rawEvents: 0, flags: 0 },
      flags: {},
    };
    if (report.durationsMs.length < MAX_REPORTED_FLUSHES) {
      report.durationsMs.push(this.#monotonicMs() - startedMs);
    }
    if (batch === null) {
      report.failures++;
      return;
    }
    report.rows.rawEvents += batch.rawEvents.length;
    report.rows.flags += batch.flags.size;
    for (const flag of batch.flags.values()) {
      const key = `${flag.rule} ${flag.level}`;
      report.flags[key] = (report.flags[key] ?? 0) + 1;
    }
  }

  #tick(nowMs: number, watermarkMs: number): void {
    this.#watermarkMs = Math.max(this.#watermarkMs, watermarkMs);
    const horizonMs = watermarkMs - this.#init.allowedLatenessMs;
    this.#users.prune(horizonMs);
    this.#contents.prune(horizonMs);
    this.#devices.prune(horizonMs);
    const idleSinceMs = nowMs - this.#init.maxIdleMs;
    const evicted = this.#users.passivate(idleSinceMs, watermarkMs) +
      this.#contents.passivate(idleSinceMs) +
      this.#devices.passivate(idleSinceMs);
    // A worker no event reaches any more sends no ack, and its empty flushes send nothing: without
    // this its entity count would stay at the peak, and its heap at the last busy moment (V8 gives
    // back a load's garbage some 30-40 s into quiet).
    // A flush that started hanging is news at once: the cluster steps down on it.
    if (evicted > 0) {
      this.#log("debug", `Passivated ${evicted} idle entities`);
      this.#sendStatus();
    } else if (
      nowMs - this.#statusAtMs >= QUIET_STATUS_EVERY_MS || this.#isNewlyBlocked()
    ) this.#sendStatus();
  }

  /** Reports the status on its own, after entities went away without an event or a flush. */
  #sendStatus(): void {
    this.#send({ type: "status", status: this.#statusWithReport() });
  }

  /** Flushes are chained so two never run at once (two at once double-counted in a prototype). */
  #enqueueFlush(requestId: number | null, nowMs: number): Promise<void> {
    this.#flushChain = this.#flushChain.then(() => this.#flushOnce(requestId, nowMs));
    return this.#flushChain;
  }

  async #flushOnce(requestId: number | null, nowMs: number): Promise<void> {
    // Shards that saw no event still move their checkpoint, so a restart does not replay the log
    // from their old position for nothing.
    const through = this.#seenThrough;
    if (through > this.#checkpointedThrough) {
      for (const family of ["user", "content", "device"] as const) {
        for (const shard of this.#owned[family].keys()) {
          advanceCheckpoint(this.#pending, family, shard, through);
        }
      }
    }
    // Views changed since the last flush are recounted into this flush, with their state.
    this.#users.flushViews(this.#watermarkMs, this.#pending);
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
    this.#flushStartedAtMs = nowMs;
    const startedMs = this.#monotonicMs();
    try {
      for (const key of batch.checkpoints.keys()) {
        const epoch = this.#epochs.get(key);
        if (epoch === undefined) {
          throw new Error(`Cannot flush shard "${key}": this worker does not own it`);
        }
        batch.epochs.set(key, epoch);
      }
      await this.#sink(batch);
      this.#recordFlush(startedMs, batch);
      if (through > this.#checkpointedThrough) this.#checkpointedThrough = through;
      this.#backoffMs = 0;
      this.#nextAttemptMs = 0;
      this.#lastFlushError = null;
      this.#failingSinceMs = null;
      this.#inFlightEvents = 0;
      this.#reportFlush(requestId, null, events);
    } catch (error) {
      this.#recordFlush(startedMs, null);
      if (error instanceof Error && error.name === "FencedError") {
        this.#inFlightEvents = 0;
        this.#reset(describe(error));
        this.#reportFlush(requestId, describe(error), 0);
        return;
      }
      // The transaction rolled back: put the deltas back in front of anything newer and retry later.
      const newer = this.#pending;
      this.#pending = batch;
      mergeBatch(this.#pending, newer);
      this.#pendingEvents += events;
      this.#inFlightEvents = 0;
      this.#backoffMs = Math.min(Math.max(this.#backoffMs * 2, MIN_BACKOFF_MS), MAX_BACKOFF_MS);
      this.#nextAttemptMs = nowMs + this.#backoffMs;
      this.#lastFlushError = describe(error);
      this.#failingSinceMs ??= nowMs;
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
    this.#send({
      type: "flushed",
      requestId,
      error,
      flushedEvents,
      status: this.#statusWithReport(),
    });
  }

  #log(level: "debug" | "info" | "warn" | "error", message: string): void {
    this.#send({ type: "log", level, message: `worker ${this.#init.workerIndex}: ${message}` });
  }
}

/** A short description of a thrown value for logs and status. */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
