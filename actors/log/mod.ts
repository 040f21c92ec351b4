/**
 * The log: where the ingest route hands accepted events over, and where privacy requests travel in
 * order with a user's events. Backends differ in when they acknowledge (see the README's delivery
 * guarantees) and in how many nodes share the shards; actors, rules and flushes do not change with
 * them. {@link openLog} is the only place that knows the concrete backends.
 *
 * @module
 */
import { Kysely, PostgresDialect } from "kysely";
// @ts-types="@types/pg"
import pg from "pg";
import { type AppendPath, CopyLogWriter } from "../../db/copy_log.ts";
import type { Config, QueueKind } from "../../config.ts";
import {
  type AppendResult,
  appendToLog,
  type LogRow,
  type PositionedRow,
} from "../../db/log_store.ts";
import type { Database } from "../../db/schema.ts";
import type { Logger } from "../../logger.ts";
import type { OptOut } from "../../rules/mod.ts";
import type { IncomingEvent, Refusal, Region } from "../region.ts";
import { MemoryLog } from "./memory.ts";
import { PostgresLog } from "./postgres.ts";

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
}

/** A log backend with its whole life: append, privacy requests, readiness, drain, close. */
export interface EventLog extends Appender {
  readonly kind: QueueKind;
  /** Several nodes share the shards (the user's actor may run elsewhere). */
  readonly isShared: boolean;
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

/**
 * Append transactions the postgres log runs at once on PostgreSQL. One: while it commits, the next
 * group gathers every request that arrives, and fewer, larger groups cost PostgreSQL less CPU per
 * event (on 2 cores, single events +22% over two at once; batches the same).
 */
const CONCURRENT_APPENDS = 1;

/** The postgres log appender's own connections, one per concurrent append. */
function appenderPool(databaseUrl: string, logger: Logger, size: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: size,
    connectionTimeoutMillis: 30_000,
    idleTimeoutMillis: 0,
    query_timeout: 30_000,
    keepAlive: true,
  });
  // A dropped connection must not crash the process; the append in progress fails and is retried.
  const report = (error: Error) =>
    logger.warn("Log appender connection failed", { error: error.message });
  pool.on("error", report);
  pool.on("connect", (client) => client.on("error", report));
  return pool;
}

/** Opens the log `config.queue` names. */
export async function openLog(config: Config, deps: LogDeps): Promise<EventLog> {
  switch (config.queue) {
    case "memory":
      return new MemoryLog(deps.region);
    case "postgres": {
      const insertCounted = (rows: PositionedRow[]) => {
        deps.onAppendPath?.("insert", rows.length);
        return appendToLog(deps.db, rows);
      };
      // On PostgreSQL the appender writes on connections of its own (COPY, or the one-statement
      // insert for possible retries); PGlite always takes the insert.
      let copy: CopyLogWriter | undefined;
      if (config.databaseUrl !== undefined) {
        const pool = appenderPool(config.databaseUrl, deps.logger, CONCURRENT_APPENDS);
        // Over the same pool; closing the writer ends it.
        const appenderDb = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
        copy = new CopyLogWriter({
          pool,
          insert: (rows) => appendToLog(appenderDb, rows),
          onPath: deps.onAppendPath,
        });
      }
      return new PostgresLog(deps.region, {
        append: async (rows) => {
          const result = await (copy === undefined ? insertCounted(rows) : copy.append(rows));
          deps.onAppended?.(rows, result);
          return result;
        },
        close: () => copy?.close(),
        firstPosition: deps.firstPosition,
        // PGlite has one connection: its transactions would only queue behind each other.
        maxConcurrentAppends: copy === undefined ? 1 : CONCURRENT_APPENDS,
        maxQueuedEvents: config.maxPendingEvents,
        logger: deps.logger,
      });
    }
    case "redis": {
      // Loaded only when used: ioredis reads the whole environment when it loads.
      const { openRedisLog } = await import("./redis/mod.ts");
      return await openRedisLog(config, deps);
    }
  }
}
