/**
 * The log's factory: {@link openLog} is the only place that knows the concrete backends, and
 * {@link logTraits} the only place that knows what each one does. The seam itself (interfaces,
 * traits) is `log.ts`, which backends import instead of this file.
 *
 * @module
 */
import { Kysely, PostgresDialect } from "kysely";
import type { Config, QueueKind } from "../../config.ts";
import { openAppenderPool } from "../../db/client.ts";
import { CopyLogWriter, RecentFingerprints } from "../../db/copy_log.ts";
import { appendToLog, type PositionedRow } from "../../db/log_store.ts";
import { DayPartitions } from "../../db/partitions.ts";
import type { Database } from "../../db/schema.ts";
import type { EventLog, LogDeps, LogTraits } from "./log.ts";
import { MemoryLog } from "./memory.ts";
import { PostgresLog } from "./postgres.ts";

export * from "./log.ts";

/** What each backend does (see {@link LogTraits}). */
export function logTraits(queue: QueueKind): LogTraits {
  switch (queue) {
    case "memory":
      return {
        kind: "memory",
        isRawEventsLog: false,
        isDurable: false,
        isShared: false,
        isPositional: true,
        usesPositionSequence: false,
        countsOutcomes: true,
        isSingleWriter: true,
      };
    case "postgres":
      return {
        kind: "postgres",
        isRawEventsLog: true,
        isDurable: true,
        isShared: false,
        isPositional: true,
        usesPositionSequence: true,
        countsOutcomes: true,
        isSingleWriter: true,
      };
    case "redis":
      return {
        kind: "redis",
        isRawEventsLog: false,
        isDurable: true,
        isShared: true,
        isPositional: false,
        usesPositionSequence: true,
        countsOutcomes: false,
        isSingleWriter: false,
      };
  }
}

/**
 * Append transactions the postgres log runs at once on PostgreSQL. One: while it commits, the next
 * group gathers every request that arrives, and fewer, larger groups cost PostgreSQL less CPU per
 * event (measured on 2 cores: see docs/benchmarks.md).
 */
const CONCURRENT_APPENDS = 1;

/** Event ids the postgres log remembers to count reused ids (about 3 MB). */
const RECENT_IDS = 200_000;

/** Opens the log `config.queue` names. */
export async function openLog(config: Config, deps: LogDeps): Promise<EventLog> {
  switch (config.queue) {
    case "memory":
      return new MemoryLog(deps.region, logTraits("memory"));
    case "postgres": {
      // A group's events need their days' partitions: created on demand when ahead was not enough.
      const days = await DayPartitions.load(deps.db);
      const insertCounted = (rows: PositionedRow[]) => {
        deps.onAppendPath?.("insert", rows.length);
        return appendToLog(deps.db, rows);
      };
      // On PostgreSQL the appender writes on connections of its own (COPY, or the one-statement
      // insert for possible retries); PGlite always takes the insert.
      let copy: CopyLogWriter | undefined;
      if (config.databaseUrl !== undefined) {
        const pool = openAppenderPool(
          config.databaseUrl,
          CONCURRENT_APPENDS,
          (error) => deps.logger.warn("Log appender connection failed", { error: error.message }),
        );
        // Over the same pool; closing the writer ends it.
        const appenderDb = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
        copy = new CopyLogWriter({
          pool,
          insert: (rows) => appendToLog(appenderDb, rows),
          onPath: deps.onAppendPath,
        });
      }
      // Ids stored recently: a stored row whose id is among them reused an id (another timestamp).
      const recentIds = new RecentFingerprints(RECENT_IDS);
      return new PostgresLog(deps.region, logTraits("postgres"), {
        append: async (rows) => {
          await days.ensureFor(rows);
          const result = await (copy === undefined ? insertCounted(rows) : copy.append(rows));
          for (let i = 0; i < rows.length; i++) {
            if (result.stored[i] !== 1) continue;
            if (recentIds.has(rows[i].eventId)) result.reusedIds++;
            recentIds.add(rows[i].eventId);
          }
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
      return await openRedisLog(config, deps, logTraits("redis"));
    }
  }
}
