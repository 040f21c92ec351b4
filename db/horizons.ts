/**
 * Aggregate retention and what it leaves: hourly rows are kept `HOURLY_RETENTION_DAYS`, daily rows
 * `DAILY_RETENTION_DAYS` (the undated "before upgrade" bucket of the hourly migration stays), the
 * per-device rows and per-entity risk rows `ENTITY_RETENTION_DAYS`; each deletion records the first
 * bucket its level still holds, and a read of a range reaching further back says so.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import { splitRange } from "./rollups.ts";
import type { Database } from "./schema.ts";
import type { TimeRange } from "./stats_queries.ts";

type Db = Kysely<Database>;

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;

/** Hourly tables of anonymous aggregates, pruned at `HOURLY_RETENTION_DAYS`. */
export const HOURLY_TABLES = [
  "event_facts_hourly",
  "event_types_hourly",
  "error_codes_hourly",
  "viewer_sketches_hourly",
  "flagged_events_hourly",
  "consent_facts_hourly",
  "totals_hourly",
  "content_region_hourly",
  "audience_hourly",
  "region_error_codes_hourly",
  "dimension_hourly",
  "qoe_hourly",
  "qoe_startup_hourly",
] as const;

/** Daily tables of anonymous aggregates, pruned at `DAILY_RETENTION_DAYS`. */
export const DAILY_TABLES = [
  "event_facts_daily",
  "event_types_daily",
  "error_codes_daily",
  "viewer_sketches_daily",
  "flagged_events_daily",
  "consent_facts_daily",
  "totals_daily",
  "content_region_daily",
  "audience_daily",
  "region_error_codes_daily",
  "dimension_daily",
  "qoe_daily",
  "qoe_startup_daily",
] as const;

/** Days the anomaly series' windows are kept (the detector's warm-up and scale read 2 days). */
export const ANOMALY_WINDOW_DAYS = 2;

/** How many days each kind of aggregate is kept. */
export interface AggregateRetention {
  hourlyRetentionDays: number;
  dailyRetentionDays: number;
  entityRetentionDays: number;
  /** The anomaly baselines' weeks (`ANOMALY_BASELINE_WEEKS`): hourly series are kept one more. */
  anomaly?: { baselineWeeks: number };
}

/** Rows one run deleted: hourly and daily aggregates, per-device rows and per-entity risk rows. */
export interface AggregatePruneCounts {
  hourly_rows: number;
  daily_rows: number;
  device_rows: number;
  entity_risk: number;
  /**
   * Anomaly rows: series windows after 2 days, series hours after the baseline weeks and one more,
   * recovered incidents after `dailyRetentionDays`.
   */
  anomaly_rows: number;
}

/**
 * Deletes aggregate rows past their retention at `nowMs`, in statements of at most `batchSize`
 * rows (up to `maxBatches` per table), and records each level's first bucket still held.
 */
export async function pruneAggregates(
  db: Db,
  nowMs: number,
  retention: AggregateRetention,
  limits: { batchSize?: number; maxBatches?: number; signal?: AbortSignal } = {},
): Promise<AggregatePruneCounts> {
  const { batchSize = 5_000, maxBatches = 100, signal } = limits;
  const hourCutoff = Math.floor((nowMs - retention.hourlyRetentionDays * DAY_MS) / HOUR_MS) *
    HOUR_MS;
  const dayCutoff = Math.floor((nowMs - retention.dailyRetentionDays * DAY_MS) / DAY_MS) * DAY_MS;
  const entityCutoff = Math.floor((nowMs - retention.entityRetentionDays * DAY_MS) / HOUR_MS) *
    HOUR_MS;
  const prune = async (table: string, column: string, cutoffMs: number): Promise<number> => {
    let deleted = 0;
    for (let i = 0; i < maxBatches && signal?.aborted !== true; i++) {
      // The "before upgrade" bucket (the epoch) holds the all-time totals of before hourly rows.
      const result = await sql`delete from ${sql.table(table)} where ctid in (
          select ctid from ${sql.table(table)}
          where ${sql.ref(column)} < ${new Date(cutoffMs).toISOString()}::timestamptz
            and ${sql.ref(column)} > 'epoch'::timestamptz
          limit ${batchSize})`.execute(db);
      const n = Number(result.numAffectedRows ?? 0);
      deleted += n;
      if (n < batchSize) break;
    }
    return deleted;
  };
  const counts: AggregatePruneCounts = {
    hourly_rows: 0,
    daily_rows: 0,
    device_rows: 0,
    entity_risk: 0,
    anomaly_rows: 0,
  };
  for (const table of HOURLY_TABLES) counts.hourly_rows += await prune(table, "hour", hourCutoff);
  // The qoe rule's 5-minute windows: finer than hours, kept as long.
  counts.hourly_rows += await prune("qoe_windows", "window_start", hourCutoff);
  for (const table of DAILY_TABLES) counts.daily_rows += await prune(table, "day", dayCutoff);
  counts.device_rows += await prune("device_facts_hourly", "hour", entityCutoff);
  counts.device_rows += await prune("device_facts_daily", "day", entityCutoff);
  counts.entity_risk += await prune("entity_risk", "updated_at", entityCutoff);
  // The anomaly series: by wall-clock age, whatever the other retention settings say.
  const windowCutoff = Math.floor((nowMs - ANOMALY_WINDOW_DAYS * DAY_MS) / HOUR_MS) * HOUR_MS;
  const weeks = (retention.anomaly?.baselineWeeks ?? 4) + 1;
  const baselineCutoff = Math.floor((nowMs - weeks * 7 * DAY_MS) / HOUR_MS) * HOUR_MS;
  for (const cube of ["anomaly_cube", "anomaly_titles", "anomaly_qoe"]) {
    counts.anomaly_rows += await prune(cube, "window_start", windowCutoff);
    counts.anomaly_rows += await prune(`${cube}_hourly`, "hour", baselineCutoff);
  }
  counts.anomaly_rows += await prune("anomaly_excluded_hours", "hour", baselineCutoff);
  // Recovered incidents as long as daily aggregates (their history and outbox rows go with them);
  // an active one stays however old.
  counts.anomaly_rows += await prune("incidents", "recovered_at", dayCutoff);
  if (counts.hourly_rows > 0) await raiseHorizon(db, "hourly", hourCutoff);
  if (counts.daily_rows > 0) await raiseHorizon(db, "daily", dayCutoff);
  if (counts.device_rows > 0) await raiseHorizon(db, "device", entityCutoff);
  return counts;
}

async function raiseHorizon(db: Db, level: string, firstHeldMs: number): Promise<void> {
  await sql`insert into aggregate_horizons (level, first_held)
    values (${level}, ${new Date(firstHeldMs).toISOString()}::timestamptz)
    on conflict (level) do update set
      first_held = greatest(aggregate_horizons.first_held, excluded.first_held)`.execute(db);
}

/** The first bucket each level still holds (absent: nothing was deleted yet). */
export interface Horizons {
  hourly?: number;
  daily?: number;
  device?: number;
}

/** Reads the horizons. */
export async function loadHorizons(db: Db): Promise<Horizons> {
  const rows = await db.selectFrom("aggregate_horizons").selectAll().execute();
  const horizons: Horizons = {};
  for (const row of rows) {
    horizons[row.level as keyof Horizons] = new Date(row.first_held).getTime();
  }
  return horizons;
}

/** Whether a read holds all of its range, and if not, the first bucket it holds. */
export interface Completeness {
  complete: boolean;
  /** The earliest time from which the answer is whole; null when it is whole. */
  first_bucket_held: string | null;
}

/**
 * Completeness of a read over `range` that takes whole days from daily rows and its edges from
 * hourly rows (`"mixed"`, see `splitRange`), or only one level (`"hourly"`, `"daily"`, `"device"`
 * for series of one bucket size). An open start reaches back to the beginning: all-time reads are
 * incomplete once anything was deleted.
 */
export function completenessOf(
  horizons: Horizons,
  range: TimeRange,
  reads: "mixed" | "hourly" | "daily" | "device",
): Completeness {
  const fromMs = range.fromMs ?? -Infinity;
  const limits: number[] = [];
  if (reads === "mixed") {
    const split = splitRange(range.fromMs, range.toMs);
    if (split.days !== null && horizons.daily !== undefined && split.days.fromMs < horizons.daily) {
      limits.push(horizons.daily);
    }
    for (const edge of split.hours) {
      if (horizons.hourly !== undefined && edge.fromMs < horizons.hourly) {
        limits.push(Math.min(horizons.hourly, edge.toMs));
      }
    }
  } else {
    const horizon = horizons[reads];
    if (horizon !== undefined && fromMs < horizon) limits.push(horizon);
  }
  if (limits.length === 0) return { complete: true, first_bucket_held: null };
  return { complete: false, first_bucket_held: new Date(Math.max(...limits)).toISOString() };
}
