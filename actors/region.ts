/**
 * The region: the main-thread router from key to shard to worker. It stamps each event with its log
 * position and lateness, batches events per worker, tracks batches in flight for backpressure, drives
 * time into workers with ticks, writes flushes for workers when the database is PGlite, and drains.
 *
 * @module
 */
import type { FlushBatch } from "../db/flush_batch.ts";
import type { Logger } from "../log.ts";
import type { OptOut, RuleThresholds, TelemetryEvent } from "../rules/mod.ts";
import type { FromWorker, ToWorker, WorkerInit, WorkerStatus } from "./protocol.ts";
import type { QualityEvent } from "./quality_family.ts";
import { shardOf, workerOfShard } from "./shard_of.ts";

/** An event as the ingest route hands it over: not yet positioned in the log. */
export type IncomingEvent = Omit<TelemetryEvent, "position" | "isLate">;

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
  /** Writes a worker's batch when workers cannot reach the database themselves (PGlite). */
  writeBatch: (batch: FlushBatch) => Promise<void>;
  /** First log position to hand out (one past the highest checkpoint on record). */
  firstPosition: number;
  /** Opt-outs on record, dealt to the workers owning each user. */
  optOuts: Array<[string, OptOut]>;
  logger: Logger;
}

/** Why the region refuses new events right now. */
export type Refusal = "draining" | "busy" | "degraded";

interface WorkerSlot {
  index: number;
  worker: Worker;
  user: TelemetryEvent[];
  content: QualityEvent[];
  device: QualityEvent[];
  inFlight: number;
  status: WorkerStatus;
  isAlive: boolean;
  /** Flush requests this worker has not answered yet. */
  flushRequests: Set<number>;
}

/** Health of the actor system, for `/readyz`. */
export interface RegionHealth {
  isDraining: boolean;
  workers: Array<{ index: number; isAlive: boolean; inFlight: number } & WorkerStatus>;
  watermarkMs: number;
  lostWorkers: number;
}

/** Routes events to shard workers and owns their lifecycle. */
export class Region {
  #o: RegionOptions;
  #slots: WorkerSlot[] = [];
  #nextPosition: number;
  #watermarkMs = 0;
  #nextBatchId = 1;
  #nextRequestId = 1;
  #postTimer: ReturnType<typeof setTimeout> | null = null;
  #isDraining = false;
  #lostWorkers = 0;
  #flushWaiters = new Map<number, (error: string | null) => void>();
  #writeChain: Promise<void> = Promise.resolve();
  #readyWaiters: Array<() => void> = [];
  #stopWaiters: Array<() => void> = [];

  private constructor(options: RegionOptions) {
    this.#o = options;
    this.#nextPosition = options.firstPosition;
  }

  /** Spawns the workers and resolves once every one is ready. */
  static async start(options: RegionOptions): Promise<Region> {
    const region = new Region(options);
    await Promise.all(
      Array.from({ length: options.workers }, (_, index) => region.#spawn(index)),
    );
    return region;
  }

  /** Highest event time seen; events older than it minus the allowed lateness are late. */
  get watermarkMs(): number {
    return this.#watermarkMs;
  }

  /** Returns why new events cannot be taken now, or null when they can. */
  refusal(): Refusal | null {
    if (this.#isDraining) return "draining";
    const perWorkerPending = this.#o.maxPendingEvents / this.#o.workers;
    for (const slot of this.#slots) {
      if (slot.inFlight >= this.#o.maxInFlightBatches) return "busy";
      if (slot.status.pendingEvents + slot.user.length >= perWorkerPending) {
        return slot.status.isFlushFailing ? "degraded" : "busy";
      }
    }
    return null;
  }

  /**
   * Positions the events in the log, marks late ones and queues them for their workers. Synchronous:
   * when it returns, the events are the region's responsibility.
   */
  route(events: IncomingEvent[]): void {
    if (this.#isDraining) {
      throw new Error(`Cannot route ${events.length} events: the region is draining`);
    }
    for (const incoming of events) {
      if (incoming.atMs > this.#watermarkMs) this.#watermarkMs = incoming.atMs;
      const event: TelemetryEvent = {
        ...incoming,
        position: this.#nextPosition++,
        // Lateness is decided once, here, so the user, content and device sides agree on it.
        isLate: incoming.atMs < this.#watermarkMs - this.#o.allowedLatenessMs,
      };
      const quality: QualityEvent = {
        eventId: event.eventId,
        userId: event.userId,
        deviceId: event.deviceId,
        contentId: event.contentId,
        type: event.type,
        atMs: event.atMs,
        region: event.region,
        isEu: event.isEu,
        errorCode: event.errorCode,
        isLate: event.isLate,
        position: event.position,
      };
      this.#slotFor(event.userId).user.push(event);
      this.#slotFor(event.contentId).content.push(quality);
      this.#slotFor(event.deviceId).device.push(quality);
    }
    const limit = this.#o.maxBatchEvents ?? 500;
    if (this.#slots.some((s) => s.user.length + s.content.length >= limit)) this.#postAll();
    else if (this.#postTimer === null) {
      this.#postTimer = setTimeout(() => this.#postAll(), this.#o.batchDelayMs);
    }
  }

  /** Sends a privacy request to the worker that owns the user. */
  recordOptOut(userId: string, optOut: OptOut): void {
    // Post buffered events first: events accepted before the request must not be flagged by it.
    this.#postAll();
    this.#post(this.#slotFor(userId), { type: "opt_out", userId, optOut });
  }

  /** Lets wall-clock time into the workers: prune, passivate, and flush if due. */
  tick(nowMs: number): void {
    this.#postAll();
    for (const slot of this.#slots) {
      this.#post(slot, { type: "tick", nowMs, watermarkMs: this.#watermarkMs });
    }
  }

  /**
   * Posts buffered events and asks every worker to flush now; resolves with the errors of the
   * flushes that failed (empty when everything routed so far is committed).
   */
  async flush(): Promise<string[]> {
    this.#postAll();
    const results = await Promise.all(
      this.#slots.filter((s) => s.isAlive).map((slot) => {
        const requestId = this.#nextRequestId++;
        return new Promise<string | null>((resolve) => {
          this.#flushWaiters.set(requestId, resolve);
          slot.flushRequests.add(requestId);
          this.#post(slot, { type: "flush", requestId });
        });
      }),
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
      watermarkMs: this.#watermarkMs,
      lostWorkers: this.#lostWorkers,
      workers: this.#slots.map((s) => ({
        index: s.index,
        isAlive: s.isAlive,
        inFlight: s.inFlight,
        ...s.status,
      })),
    };
  }

  #slotFor(key: string): WorkerSlot {
    return this.#slots[workerOfShard(shardOf(key, this.#o.shards), this.#slots.length)];
  }

  #spawn(index: number): Promise<void> {
    const worker = new Worker(new URL("./shard_worker.ts", import.meta.url), { type: "module" });
    const slot: WorkerSlot = {
      index,
      worker,
      user: [],
      content: [],
      device: [],
      inFlight: 0,
      status: { pendingEvents: 0, entities: 0, isFlushFailing: false, lastFlushError: null },
      isAlive: true,
      flushRequests: new Set(),
    };
    this.#slots[index] = slot;
    const ready = new Promise<void>((resolve) => this.#readyWaiters.push(resolve));
    worker.onmessage = (e: MessageEvent<FromWorker>) => this.#onMessage(slot, e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#onWorkerDeath(slot, e.message);
    };
    const init: WorkerInit = {
      workerIndex: index,
      shardCount: this.#o.shards,
      dedupeIdsPerShard: Math.ceil(this.#o.dedupeMaxIds / this.#o.shards),
      maxSegmentMs: this.#o.maxSegmentMs,
      maxIdleMs: this.#o.maxIdleMs,
      allowedLatenessMs: this.#o.allowedLatenessMs,
      thresholds: this.#o.thresholds,
      databaseUrl: this.#o.databaseUrl,
      optOuts: this.#o.optOuts.filter(([userId]) => this.#slotFor(userId) === slot),
    };
    worker.postMessage({ type: "init", init } satisfies ToWorker);
    return ready;
  }

  #onMessage(slot: WorkerSlot, message: FromWorker): void {
    switch (message.type) {
      case "ready":
        this.#readyWaiters.shift()?.();
        return;
      case "ack":
        slot.inFlight = Math.max(0, slot.inFlight - 1);
        slot.status = message.status;
        return;
      case "flushed":
        slot.status = message.status;
        if (message.requestId !== null) this.#settleFlush(slot, message.requestId, message.error);
        return;
      case "db_write":
        this.#writeForWorker(slot, message.requestId, message.batch);
        return;
      case "log":
        this.#o.logger.log(message.level, message.message);
        return;
      case "stopped":
        this.#stopWaiters.shift()?.();
        return;
    }
  }

  /** PGlite has one owner (this thread): worker flushes are written here, one after another. */
  #writeForWorker(slot: WorkerSlot, requestId: number, batch: FlushBatch): void {
    this.#writeChain = this.#writeChain.then(async () => {
      let error: string | null = null;
      try {
        await this.#o.writeBatch(batch);
      } catch (e) {
        error = e instanceof Error ? e.message : String(e);
      }
      if (slot.isAlive) slot.worker.postMessage({ type: "db_done", requestId, error });
    });
  }

  #onWorkerDeath(slot: WorkerSlot, reason: string): void {
    if (!slot.isAlive) return;
    slot.isAlive = false;
    this.#lostWorkers++;
    const lost = slot.status.pendingEvents + slot.user.length;
    this.#o.logger.error(
      `Worker ${slot.index} died; restarting it. Up to ${lost} unflushed events on its shards are ` +
        `lost with the memory queue`,
      { reason },
    );
    slot.worker.terminate();
    for (const requestId of slot.flushRequests) {
      this.#settleFlush(slot, requestId, `worker ${slot.index} died: ${reason}`);
    }
    if (this.#isDraining) return;
    this.#spawn(slot.index).catch((error) =>
      this.#o.logger.error(`Cannot restart worker ${slot.index}`, { error: String(error) })
    );
  }

  #settleFlush(slot: WorkerSlot, requestId: number, error: string | null): void {
    slot.flushRequests.delete(requestId);
    this.#flushWaiters.get(requestId)?.(error);
    this.#flushWaiters.delete(requestId);
  }

  #postAll(): void {
    if (this.#postTimer !== null) {
      clearTimeout(this.#postTimer);
      this.#postTimer = null;
    }
    const nowMs = Date.now();
    for (const slot of this.#slots) {
      if (slot.user.length === 0 && slot.content.length === 0 && slot.device.length === 0) continue;
      const message: ToWorker = {
        type: "events",
        batchId: this.#nextBatchId++,
        nowMs,
        watermarkMs: this.#watermarkMs,
        user: slot.user,
        content: slot.content,
        device: slot.device,
      };
      slot.user = [];
      slot.content = [];
      slot.device = [];
      slot.inFlight++;
      this.#post(slot, message);
    }
  }

  #post(slot: WorkerSlot, message: ToWorker): void {
    slot.worker.postMessage(message);
  }

  async #stopWorkers(): Promise<void> {
    if (this.#postTimer !== null) clearTimeout(this.#postTimer);
    this.#postTimer = null;
    await this.#writeChain;
    const alive = this.#slots.filter((s) => s.isAlive);
    const stopped = Promise.all(
      alive.map(() => new Promise<void>((resolve) => this.#stopWaiters.push(resolve))),
    );
    for (const slot of alive) slot.worker.postMessage({ type: "stop" } satisfies ToWorker);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, 5_000)));
    await Promise.race([stopped, timeout]);
    clearTimeout(timer);
    for (const slot of alive) {
      slot.isAlive = false;
      slot.worker.terminate();
    }
  }
}
