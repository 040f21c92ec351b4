/**
 * The log's seam, apart from its factory (`mod.ts`): what the ingest route and the pipeline ask of
 * a log, and the traits that tell what a backend does, so callers never ask which backend it is.
 * Backends import this file, never the factory.
 *
 * @module
 */
import type { Kysely } from "kysely";
import type { AppendPath } from "../../db/copy_log.ts";
import type { AppendResult, LogRow } from "../../db/log_store.ts";
import type { Database } from "../../db/schema.ts";
import type { Logger } from "../../logger.ts";
import type { OptOut } from "../../rules/mod.ts";
import type { IncomingEvent, Refusal, Region } from "../region.ts";

/**
 * What a log backend does, as the rest of the pipeline needs to know it. Every mode check lives
 * in this folder: callers read traits.
 */
export interface LogTraits {
  /** Which backend, for logs, `/readyz` and metrics labels only (never for decisions). */
  readonly kind: "memory" | "postgres" | "redis";
  /**
   * `raw_events` is the log: appends store the events, workers never write raw rows, a worker
   * that starts replays it from its shards' checkpoints.
   */
  readonly isRawEventsLog: boolean;
  /** An acknowledged event survives a crash (false: unflushed events die with the process). */
  readonly isDurable: boolean;
  /** Several nodes share the shards: the user's actor may run on another node. */
  readonly isShared: boolean;
  /**
   * `raw_events.position` orders the log itself (memory and postgres queues): a row above the
   * lowest shard checkpoint is still to be applied, so erasure and retention wait for it.
   */
  readonly isPositional: boolean;
  /** Raw rows are numbered by the database sequence (not by the process). */
  readonly usesPositionSequence: boolean;
  /**
   * Ingest outcomes (accepted, duplicate, late) are counted where the backend decides them; the
   * redis log acknowledges before it knows, so its acknowledgements are counted at the route.
   */
  readonly countsOutcomes: boolean;
  /** Only one process may write this database's log (a second server is refused at start). */
  readonly isSingleWriter: boolean;
}

/** What the ingest route needs: append, and why appends would be refused. */
export interface Appender {
  /** Which backend this is, for logs and `/readyz`. */
  readonly kind: string;
  /** Why appends would be refused right now, or null. */
  refusal(): Refusal | null;
  /** Appends the events; resolving means they are the pipeline's responsibility. */
  append(events: IncomingEvent[]): Promise<void>;
}

/** Readiness problems and details a log adds to `/readyz`. */
export interface LogReadiness {
  problems: string[];
  details: Record<string, unknown>;
  /** For a cluster node: entries waiting in the streams it holds, and held shards not moving. */
  cluster?: { lagEvents: number; stalledShards: number; isSteppedDown: boolean };
}

/** A log backend with its whole life: append, privacy requests, readiness, drain, close. */
export interface EventLog extends Appender {
  /** What this backend does: callers read these instead of asking which backend it is. */
  readonly traits: LogTraits;
  /** Delivers a privacy request to the user's actor, after the user's events appended before. */
  recordOptOut(userId: string, optOut: OptOut): Promise<void>;
  /** What `/readyz` should say about the log. */
  readiness(): LogReadiness;
  /**
   * Stops intake (appends get 503), lets `drainRegion` flush what the workers applied, and leaves
   * (a cluster node gives its shards back).
   */
  drain(drainRegion: () => Promise<void>): Promise<void>;
  /** Closes connections; call after {@link EventLog.drain}. */
  close(): void | Promise<void>;
  /** The region lost shards (fenced flush, worker restart): take them again where still ours. */
  onShardsLost(keys: string[]): void;
  /**
   * Deletes what the log itself keeps about a user outside `raw_events` (redis stream entries),
   * only where every shard has applied it. Logs that keep nothing else leave it out.
   */
  eraseUser?(userId: string): Promise<ErasedEntries>;
  /**
   * Resolves once every append begun before the call is durable or failed, for logs whose appends
   * commit after they are accepted (postgres): a deletion waits for it before erasing, so an event
   * accepted under the user's id just before the deletion began cannot land after the erasure.
   */
  appendsSettled?(): Promise<void>;
}

/** What {@link EventLog.eraseUser} removed, and how many entries wait for their shard. */
export interface ErasedEntries {
  deleted: number;
  left: number;
}

/** An append that could not be made durable; the route answers 503 and the client retries. */
export class AppendError extends Error {
  override name = "AppendError";
}

/** What opening a log needs besides configuration. */
export interface LogDeps {
  db: Kysely<Database>;
  region: Region;
  logger: Logger;
  /** Sees every append's result (metrics). */
  onAppended?: (rows: LogRow[], result: AppendResult) => void;
  /** Told whether each append group took the COPY or the insert path (postgres log, metrics). */
  onAppendPath?: (path: AppendPath, rows: number) => void;
  /** Next free log position (above every stored position and checkpoint). */
  firstPosition: number;
}
