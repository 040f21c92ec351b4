/**
 * What the region is made of and shows: its settings, the store it reads shards and the log from,
 * its health for `/readyz`, and the per-worker slot both it and the {@link Supervisor} keep.
 *
 * @module
 */
import type { FlushBatch } from "../db/flush_batch.ts";
import type { Logger } from "../logger.ts";
import type { OptOut, RuleThresholds, TelemetryEvent } from "../rules/mod.ts";
import type { DuplicateMark, FlushReport, ShardLease, WorkerStatus } from "./protocol.ts";
import { WorkerBatch } from "./event_columns.ts";

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
export type Refusal = "draining" | "busy" | "degraded" | "recovering" | "log_unavailable";

/** The main thread's side of one worker: its buffers, what is in flight, its last status. */
export interface WorkerSlot {
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

/** A worker's status before it reported any. */
export function idleStatus(): WorkerStatus {
  return {
    pendingEvents: 0,
    entities: 0,
    heapUsedBytes: 0,
    isFlushFailing: false,
    lastFlushError: null,
    flushBlockedSinceMs: null,
  };
}

/** A slot whose worker is not started yet: live events wait in its buffer until it is. */
export function emptySlot(index: number): WorkerSlot {
  return {
    index,
    batch: new WorkerBatch(),
    duplicates: [],
    inFlight: 0,
    unackedBatches: [],
    unackedEvents: 0,
    status: idleStatus(),
    isRecovering: true,
    restartFailures: 0,
    ownedKeys: new Set(),
    ackWaiters: [],
  };
}
