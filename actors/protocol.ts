/**
 * Messages between the region (main thread) and shard workers. Everything is plain data: numbers for
 * times, no class instances, no Dates, so structured cloning is cheap and lossless.
 *
 * @module
 */
import type { OpenViewsRow } from "../db/flush_batch.ts";
import type { FlushBatch } from "../db/flush_batch.ts";
import type { OptOut, RuleThresholds, TelemetryEvent } from "../rules/mod.ts";
import type { EventColumns } from "./event_columns.ts";

/** What a worker needs to start. */
export interface WorkerInit {
  workerIndex: number;
  /** Wall-clock time at spawn: the worker's "now" until its first tick (ticks are the only clock). */
  nowMs: number;
  shardCount: number;
  /** Event ids remembered per shard to catch retries; 0 when the log already stores each id once. */
  dedupeIdsPerShard: number;
  maxSegmentMs: number;
  maxIdleMs: number;
  allowedLatenessMs: number;
  thresholds: RuleThresholds;
  /** PostgreSQL URL: the worker flushes itself. Absent: it sends batches to the main thread (PGlite). */
  databaseUrl: string | undefined;
  /** Opt-outs on record for users whose shards this worker hosts. */
  optOuts: Array<[string, OptOut]>;
  /** Flags at or above this level rank go to the alert outbox in their flush (unset: none). */
  alertMinRank?: number;
  /** The log stores raw events itself (durable backends), so flushes must not write them. */
  isLogDurable: boolean;
  /** Log positions are per stream (redis log): raw rows are numbered by a database sequence. */
  hasStreamPositions: boolean;
  /**
   * Per `family:shard` this worker owns: the checkpoint (events at or below it only rebuild state)
   * and the ownership epoch every flush must still hold.
   */
  shards: Array<[string, ShardLease]>;
}

/** A retried event the log recognised; counted by the owner of the user's shard. */
export interface DuplicateMark {
  userId: string;
  position: number;
}

/** A shard's committed position and the epoch of its current owner. */
export interface ShardLease {
  position: number;
  epoch: number;
  /** A user shard's stored open views (QoE), as of its checkpoint. */
  openViews?: OpenViewsRow[];
  /** The stored events of those TVs (`raw_events`), to rebuild their views from. */
  viewEvents?: TelemetryEvent[];
}

/** Main thread to worker. */
export type ToWorker =
  | { type: "init"; init: WorkerInit }
  | {
    type: "events";
    batchId: number;
    watermarkMs: number;
    /** Each event once, with the families it is for in this worker (see `event_columns.ts`). */
    events: EventColumns;
    /** Retries the log recognised (redis log): counted as duplicates, in log order. */
    duplicates?: DuplicateMark[];
    /**
     * Single-node logs: every event at or below this position that belongs to this worker's shards
     * is in this message or an earlier one, so shards that saw none may checkpoint it too.
     */
    throughPosition?: number;
  }
  | {
    type: "tick";
    nowMs: number;
    watermarkMs: number;
    /**
     * Single-node logs: every event at or below this position was posted to this worker before the
     * tick, so every shard it owns may checkpoint it, events or not (erasure, retention and replay
     * wait for the lowest checkpoint, and must not wait for traffic).
     */
    throughPosition?: number;
  }
  | { type: "adopt"; shards: Array<[string, ShardLease]> }
  | { type: "release"; requestId: number; keys: string[] }
  | { type: "flush"; requestId: number; throughPosition?: number }
  /** Cluster: let go of every shard without flushing (the node steps down; owners replay). */
  | { type: "reset"; reason: string }
  | { type: "opt_out"; userId: string; optOut: OptOut }
  | { type: "db_done"; requestId: number; error: string | null; isFenced: boolean }
  | { type: "stop" };

/** Health a worker reports with every acknowledgement. */
export interface WorkerStatus {
  pendingEvents: number;
  entities: number;
  /** The worker isolate's V8 heap in use, in bytes, live state and not yet collected garbage. */
  heapUsedBytes: number;
  isFlushFailing: boolean;
  lastFlushError: string | null;
  /**
   * Wall-clock time (the region's ticks) since which nothing has committed while a flush was due:
   * the first of the failures in a row, or the start of a flush still running; null otherwise.
   */
  flushBlockedSinceMs: number | null;
  /** Flushes measured since the previous status this worker sent (absent when there were none). */
  flushes?: FlushReport;
}

/** What a worker's flushes did since its previous status, for metrics on the main thread. */
export interface FlushReport {
  /** Duration of each flush attempt that had something to write (failed ones too), in ms. */
  durationsMs: number[];
  /** Failed flush attempts (rolled back or fenced). */
  failures: number;
  /** Committed rows per table: `raw_events` (0 with a durable log, which stores them), `flags`. */
  rows: { rawEvents: number; flags: number };
  /** Committed flags per rule and level, keyed `rule + " " + level`. */
  flags: Record<string, number>;
}

/** Worker to main thread. */
export type FromWorker =
  | { type: "ready" }
  | { type: "ack"; batchId: number; status: WorkerStatus }
  /** After a tick passivated entities, so an idle worker's count in `/readyz` does not go stale. */
  | { type: "status"; status: WorkerStatus }
  | {
    type: "flushed";
    requestId: number | null;
    error: string | null;
    flushedEvents: number;
    status: WorkerStatus;
  }
  | { type: "db_write"; requestId: number; batch: FlushBatch }
  | { type: "log"; level: "debug" | "info" | "warn" | "error"; message: string }
  | { type: "released"; requestId: number; error: string | null }
  | { type: "reset"; keys: string[]; reason: string }
  | { type: "stopped" };
