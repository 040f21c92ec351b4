/**
 * Reading the rollups over a range: whole UTC days from a table's daily twin, the hours at the
 * range's edges from its hourly table (see `splitRange`), so a read's rows are bounded by its keys
 * times the buckets that cover the range, never by the history. Every table pair is named
 * `<base>_daily` (column `day`) and `<base>_hourly` (column `hour`).
 *
 * @module
 */
import { type RawBuilder, sql } from "kysely";
import { splitRange } from "./rollups.ts";
import type { TimeRange } from "./stats_queries.ts";

/** The aggregate tables that have an hourly table and a daily twin. */
export type RollupBase =
  | "event_facts"
  | "event_types"
  | "error_codes"
  | "device_facts"
  | "viewer_sketches"
  | "flagged_events"
  | "consent_facts"
  | "totals"
  | "content_region"
  | "audience"
  | "region_error_codes"
  | "dimension"
  | "qoe"
  | "qoe_startup";

const iso = (ms: number) => new Date(ms).toISOString();

function between(column: string, fromMs: number, toMs: number): RawBuilder<unknown> {
  const conditions = [sql`true`];
  if (Number.isFinite(fromMs)) {
    conditions.push(sql`${sql.ref(column)} >= ${iso(fromMs)}::timestamptz`);
  }
  if (Number.isFinite(toMs)) conditions.push(sql`${sql.ref(column)} < ${iso(toMs)}::timestamptz`);
  return sql.join(conditions, sql` and `);
}

/**
 * A derived table of the rows of `base` that cover `range`: `columns` (a SQL list of expressions
 * over the table's own columns) from the daily rows of its whole days and the hourly rows of its
 * edges, each with `where` applied. Use as `select ... from ${rollupRows(...)} as r`.
 */
export function rollupRows(
  base: RollupBase,
  columns: RawBuilder<unknown>,
  range: TimeRange,
  where: RawBuilder<unknown> = sql`true`,
): RawBuilder<unknown> {
  const split = splitRange(range.fromMs, range.toMs);
  const parts: RawBuilder<unknown>[] = [];
  if (split.days !== null) {
    parts.push(sql`select ${columns} from ${sql.table(`${base}_daily`)}
      where ${between("day", split.days.fromMs, split.days.toMs)} and (${where})`);
  }
  for (const edge of split.hours) {
    parts.push(sql`select ${columns} from ${sql.table(`${base}_hourly`)}
      where ${between("hour", edge.fromMs, edge.toMs)} and (${where})`);
  }
  return sql`(${sql.join(parts, sql` union all `)})`;
}
