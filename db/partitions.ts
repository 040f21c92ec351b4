/**
 * The daily partitions of `raw_events` (see the `raw_events_by_day` migration): which days exist,
 * creating the days ahead of need and on demand, and dropping whole days once past retention.
 *
 * DDL never makes appends queue: a partition is created as a table of its own and then attached,
 * which takes only a SHARE UPDATE EXCLUSIVE lock on `raw_events` (inserts go on); a drop needs an
 * ACCESS EXCLUSIVE lock, which waits at most `lockTimeoutMs` (appends queued behind the waiting
 * drop wait no longer) and is retried later. Creators on several connections (workers, a cluster)
 * serialise on an advisory lock and re-read the catalog under it.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";

type Db = Kysely<Database>;

/** One UTC day. */
export const DAY_MS = 86_400_000;

/** The partition holding the rows stored before the upgrade to daily partitions, if any. */
export const LEGACY_PARTITION = "raw_events_legacy";

/** Name prefix of a daily partition: `raw_events_p20261207`. */
export const DAILY_PREFIX = "raw_events_p";

/** Advisory lock key taken by partition DDL (an arbitrary constant of this project). */
const PARTITION_LOCK = 720_117_001;

/** PostgreSQL's SQLSTATE for "no partition of relation found for row". */
export const NO_PARTITION = "23514";

/** A partition of `raw_events` and the event times it holds: `[fromMs, toMs)`. */
export interface Partition {
  name: string;
  /** Null for the legacy partition's open lower bound. */
  fromMs: number | null;
  toMs: number;
}

/** Start of the UTC day that holds `atMs`. */
export function dayOf(atMs: number): number {
  return Math.floor(atMs / DAY_MS) * DAY_MS;
}

/** The name of the partition of the UTC day starting at `dayMs`. */
export function dailyName(dayMs: number): string {
  return DAILY_PREFIX + new Date(dayMs).toISOString().slice(0, 10).replaceAll("-", "");
}

/** Every partition of `raw_events` with its bounds, oldest first. */
export async function listPartitions(db: Db): Promise<Partition[]> {
  const result = await sql<
    { name: string; from_ms: number | string | null; to_ms: number | string }
  >`
    select c.relname as name,
      extract(epoch from (regexp_match(pg_get_expr(c.relpartbound, c.oid),
        'FROM \\(''([^'']*)''\\)'))[1]::timestamptz) * 1000 as from_ms,
      extract(epoch from (regexp_match(pg_get_expr(c.relpartbound, c.oid),
        'TO \\(''([^'']*)''\\)'))[1]::timestamptz) * 1000 as to_ms
    from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'raw_events'::regclass`.execute(db);
  return result.rows
    .map((r) => ({
      name: r.name,
      fromMs: r.from_ms === null ? null : Number(r.from_ms),
      toMs: Number(r.to_ms),
    }))
    .sort((a, b) => a.toMs - b.toMs);
}

/** True when some partition holds the UTC day starting at `dayMs`. */
export function covers(partitions: readonly Partition[], dayMs: number): boolean {
  return partitions.some((p) => (p.fromMs === null || p.fromMs <= dayMs) && dayMs < p.toMs);
}

/** Options of partition DDL. */
export interface DdlOptions {
  /** Longest wait for a table lock before giving up (and retrying later). */
  lockTimeoutMs?: number;
}

/**
 * Creates the daily partitions of the days from `fromDayMs` to `toDayMs` (inclusive) that no
 * partition holds yet; returns the partitions after. Safe to call from several connections.
 */
export async function ensureDays(
  db: Db,
  fromDayMs: number,
  toDayMs: number,
  options: DdlOptions = {},
): Promise<Partition[]> {
  const days: number[] = [];
  for (let day = dayOf(fromDayMs); day <= toDayMs; day += DAY_MS) days.push(day);
  return await ensureDayList(db, days, options);
}

/** Creates the daily partitions of these UTC days (day starts) that no partition holds yet. */
async function ensureDayList(
  db: Db,
  days: readonly number[],
  options: DdlOptions,
): Promise<Partition[]> {
  const known = await listPartitions(db);
  const missing = days.filter((day) => !covers(known, day));
  if (missing.length === 0) return known;
  await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${PARTITION_LOCK})`.execute(trx);
    await sql`select set_config('lock_timeout', ${`${options.lockTimeoutMs ?? 2_000}ms`}, true)`
      .execute(trx);
    // Another connection may have created some while this one waited for the lock.
    const now = await listPartitions(trx);
    for (const day of missing) {
      if (covers(now, day)) continue;
      const name = sql.id(dailyName(day));
      await sql`create table ${name} (like raw_events including defaults)`.execute(trx);
      await sql`alter table raw_events attach partition ${name}
        for values from (${sql.lit(new Date(day).toISOString())})
        to (${sql.lit(new Date(day + DAY_MS).toISOString())})`.execute(trx);
    }
  });
  return await listPartitions(db);
}

/**
 * Creates the partitions of every day an event can still be accepted for at `nowMs` (`maxAgeMs`
 * back) and two days ahead, so appends and flushes normally find theirs.
 */
export async function ensureDaysAhead(
  db: Db,
  nowMs: number,
  maxAgeMs: number,
  options: DdlOptions = {},
): Promise<Partition[]> {
  return await ensureDays(db, dayOf(nowMs - maxAgeMs), dayOf(nowMs) + 2 * DAY_MS, options);
}

/** Creates the partitions an append or a flush of events at these times needs, if any is missing. */
export async function ensureDaysFor(
  db: Db,
  atMs: Iterable<number>,
  options: DdlOptions = {},
): Promise<Partition[]> {
  const days = new Set<number>();
  for (const at of atMs) days.add(dayOf(at));
  return await ensureDayList(db, [...days], options);
}

/** True when an error is PostgreSQL's "no partition of relation found for row". */
export function isNoPartition(error: unknown): boolean {
  return (error as { code?: unknown })?.code === NO_PARTITION &&
    /no partition/i.test(String((error as Error).message));
}

/** A partition retention dropped, or kept and why. */
export interface PartitionDrop {
  name: string;
  isDropped: boolean;
  /** Why it was kept: its log is above the lowest checkpoint, or its lock was busy. */
  keptBecause?: "checkpoint" | "busy";
}

/**
 * Drops every partition whose whole range ends at or before `cutoffMs` and, when raw events are
 * the log (`isLogPositional`), whose every position is at or below the lowest shard checkpoint (a
 * shard that has not applied them still replays them). Oldest first; stops when a drop cannot get
 * its lock within `lockTimeoutMs` (appends held the table: the next run goes on).
 */
export async function dropPartitionsBefore(
  db: Db,
  cutoffMs: number,
  isLogPositional: boolean,
  options: DdlOptions = {},
): Promise<PartitionDrop[]> {
  const results: PartitionDrop[] = [];
  for (const partition of await listPartitions(db)) {
    if (partition.toMs > cutoffMs) break;
    const name = sql.id(partition.name);
    if (isLogPositional) {
      const above = await sql<{ above: boolean }>`select coalesce(
          (select max(position) from ${name}), 0)
        > (select coalesce(min(position), 0) from shard_checkpoints) as above`.execute(db);
      if (above.rows[0].above) {
        // Days and positions are not in the same order (a late event of an old day comes last).
        results.push({ name: partition.name, isDropped: false, keptBecause: "checkpoint" });
        continue;
      }
    }
    try {
      await db.transaction().execute(async (trx) => {
        await sql`select set_config('lock_timeout', ${`${options.lockTimeoutMs ?? 500}ms`}, true)`
          .execute(trx);
        await sql`drop table ${name}`.execute(trx);
      });
      results.push({ name: partition.name, isDropped: true });
    } catch (error) {
      // 55P03: lock_not_available. Appends held the table: the next run tries again.
      if ((error as { code?: string }).code !== "55P03") throw error;
      results.push({ name: partition.name, isDropped: false, keptBecause: "busy" });
      break;
    }
  }
  return results;
}

/**
 * The partitions the postgres log's appender knows, so that an append checks its days in memory
 * and runs DDL only for a day no partition holds (normally never: days are created ahead).
 */
export class DayPartitions {
  #db: Db;
  #partitions: Partition[];

  private constructor(db: Db, partitions: Partition[]) {
    this.#db = db;
    this.#partitions = partitions;
  }

  /** Reads the partitions that exist now. */
  static async load(db: Db): Promise<DayPartitions> {
    return new DayPartitions(db, await listPartitions(db));
  }

  /** Creates the partitions rows at these event times need, when one is missing. */
  async ensureFor(rows: ReadonlyArray<{ atMs: number }>): Promise<void> {
    let lastDay = NaN;
    for (const row of rows) {
      const day = dayOf(row.atMs);
      // Rows of a group mostly share a day: check each run of one day once.
      if (day === lastDay) continue;
      lastDay = day;
      if (!covers(this.#partitions, day)) {
        this.#partitions = await ensureDaysFor(this.#db, rows.map((r) => r.atMs));
        return;
      }
    }
  }
}
