/**
 * Retention of stored personal data: raw events, risk flags, answered access requests and consent
 * ledger states no longer seen are deleted once older than their configured number of days, in
 * bounded batches so one run never holds long locks. Aggregates hold no personal data and are kept; audit rows and erased-event tombstones have
 * their own pruning.
 *
 * @module
 */
import { type DeleteResult, type Kysely, sql } from "kysely";
import type { Logger } from "../logger.ts";
import type { Database } from "./schema.ts";
import { pruneConsentLedger } from "./consent_store.ts";
import { type AggregatePruneCounts, type AggregateRetention, pruneAggregates } from "./horizons.ts";
import {
  dropPartitionsBefore,
  ensureDaysAhead,
  LEGACY_PARTITION,
  listPartitions,
} from "./partitions.ts";

type Db = Kysely<Database>;

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

/**
 * Request types whose answered records expire. Deletion and do-not-track records are kept: the rules
 * rebuild opt-outs from them at start. Sale/sharing opt-outs are kept: the record is the opt-out.
 */
export const EXPIRING_REQUEST_TYPES: readonly string[] = ["access"];

/** How many days each table keeps its rows (the resolved `*_RETENTION_DAYS` settings). */
export interface RetentionSettings {
  rawEventsRetentionDays: number;
  flagsRetentionDays: number;
  privacyRequestRetentionDays: number;
  /** Days the consent ledger keeps a state after it was last seen. */
  consentRetentionDays: number;
  /** Aggregate retention (see `db/horizons.ts`); absent: aggregates are not pruned (tests). */
  aggregates?: AggregateRetention;
  /**
   * Raw events are the log (postgres and memory queues): a row above the lowest shard checkpoint
   * is still to be replayed and stays. False for the redis queue, whose workers write raw rows in
   * the flush that applies them (its log is the streams), so every stored row is applied.
   */
  isLogPositional?: boolean;
}

/** Bounds of one {@link pruneExpired} run. */
export interface PruneLimits {
  /** Rows per delete statement. */
  batchSize?: number;
  /** Delete statements per table per run. */
  maxBatches?: number;
  /** Stops the run between statements (at shutdown). */
  signal?: AbortSignal;
}

/** Rows a run deleted, per table. */
export interface PruneCounts {
  /** Rows deleted one by one: only those of the partition from before the upgrade (legacy). */
  raw_events: number;
  /** Daily partitions of raw events dropped whole. */
  raw_event_days: number;
  risk_flags: number;
  privacy_requests: number;
  consent_ledger: number;
  /** Aggregate rows past their retention, when `aggregates` is set. */
  aggregates?: AggregatePruneCounts;
}

/**
 * Deletes what is older than its table's retention at `nowMs`: raw events by whole UTC days of
 * event time (a daily partition is dropped once its day ends before the cutoff, and never while a
 * shard has not applied its log), flags by event time (their `flag_history` rows cascade),
 * completed or failed access requests by the time they were received, and consent states no longer
 * seen. At most `maxBatches` statements of `batchSize` rows per table.
 */
export async function pruneExpired(
  db: Db,
  nowMs: number,
  settings: RetentionSettings,
  limits: PruneLimits = {},
): Promise<PruneCounts> {
  const { batchSize = 5000, maxBatches = 100, signal } = limits;
  const cutoff = (days: number) => new Date(nowMs - days * DAY_MS).toISOString();
  const rawCutoff = cutoff(settings.rawEventsRetentionDays);
  const flagCutoff = cutoff(settings.flagsRetentionDays);
  const requestCutoff = cutoff(settings.privacyRequestRetentionDays);
  const inBatches = async (deleteBatch: () => Promise<DeleteResult>): Promise<number> => {
    let deleted = 0;
    for (let i = 0; i < maxBatches && signal?.aborted !== true; i++) {
      const count = Number((await deleteBatch()).numDeletedRows);
      deleted += count;
      if (count < batchSize) break;
    }
    return deleted;
  };
  // Whole days go at once; a shard that has not applied a day's log keeps the day.
  const isLogPositional = settings.isLogPositional !== false;
  const drops = signal?.aborted === true ? [] : await dropPartitionsBefore(
    db,
    nowMs - settings.rawEventsRetentionDays * DAY_MS,
    isLogPositional,
  );
  const raw_event_days = drops.filter((d) => d.isDropped).length;
  // The rows of before the upgrade to daily partitions, one partition until its bound passes.
  const hasLegacy = (await listPartitions(db)).some((p) => p.name === LEGACY_PARTITION);
  const raw_events = !hasLegacy
    ? 0
    : await inBatches(() =>
      sql`delete from raw_events_legacy where ctid in (
        select ctid from raw_events_legacy where occurred_at < ${rawCutoff}::timestamptz
          ${
        isLogPositional
          ? sql`and position <= (select coalesce(min(position), 0) from shard_checkpoints)`
          : sql``
      }
        limit ${batchSize})`.execute(db).then((r) => ({
        numDeletedRows: r.numAffectedRows ?? 0n,
      } as DeleteResult))
    );
  const risk_flags = await inBatches(() =>
    db.deleteFrom("risk_flags").where(
      "id",
      "in",
      (eb) =>
        eb.selectFrom("risk_flags").select("id").where("occurred_at", "<", flagCutoff)
          .limit(batchSize),
    ).executeTakeFirst()
  );
  const privacy_requests = await inBatches(() =>
    db.deleteFrom("privacy_requests").where(
      "id",
      "in",
      (eb) =>
        eb.selectFrom("privacy_requests").select("id")
          .where("request_type", "in", [...EXPIRING_REQUEST_TYPES])
          .where("status", "in", ["completed", "failed"])
          .where("requested_at", "<", requestCutoff)
          .limit(batchSize),
    ).executeTakeFirst()
  );
  const consent_ledger = await inBatches(async () => {
    const count = await pruneConsentLedger(db, nowMs, settings.consentRetentionDays, batchSize);
    return { numDeletedRows: BigInt(count) } as DeleteResult;
  });
  const counts: PruneCounts = {
    raw_events,
    raw_event_days,
    risk_flags,
    privacy_requests,
    consent_ledger,
  };
  if (settings.aggregates !== undefined && signal?.aborted !== true) {
    counts.aggregates = await pruneAggregates(db, nowMs, settings.aggregates, limits);
  }
  return counts;
}

/**
 * Runs storage upkeep now and then hourly (a run still going skips the next): creates the raw
 * events' daily partitions ahead (`maxEventAgeMs` back, two days on), then {@link pruneExpired}.
 * Returns the stop, which ends the running run after its current statement and resolves when it has.
 */
export function startRetentionPruner(
  db: Db,
  settings: RetentionSettings & { maxEventAgeMs: number },
  logger: Logger,
): () => Promise<void> {
  const controller = new AbortController();
  let running: Promise<void> | null = null;
  const prune = () => {
    if (running !== null || controller.signal.aborted) return;
    const nowMs = Date.now();
    running = ensureDaysAhead(db, nowMs, settings.maxEventAgeMs)
      .then(() => pruneExpired(db, nowMs, settings, { signal: controller.signal }))
      .then((counts) => {
        const { aggregates, ...rows } = counts;
        if (
          Object.values(rows).some((count) => count > 0) ||
          Object.values(aggregates ?? {}).some((count) => count > 0)
        ) {
          logger.info("Pruned expired rows", {
            ...rows,
            ...aggregates,
            raw_events_retention_days: settings.rawEventsRetentionDays,
            flags_retention_days: settings.flagsRetentionDays,
            privacy_request_retention_days: settings.privacyRequestRetentionDays,
            consent_retention_days: settings.consentRetentionDays,
          });
        }
      })
      .catch((error) =>
        logger.warn("Cannot create partitions or prune expired rows: will retry in an hour", {
          error: error instanceof Error ? error.message : String(error),
        })
      )
      .finally(() => running = null);
  };
  prune();
  const timer = setInterval(prune, HOUR_MS);
  return async () => {
    clearInterval(timer);
    controller.abort();
    await running;
  };
}
