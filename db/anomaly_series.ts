/**
 * The anomaly series in the database (`rules/anomaly_series.ts` says what they count): the flush
 * adds its window deltas to the 5-minute cubes and to their hourly copies in one transaction, and
 * the detector reads one window, or the hours of past weeks, of a whole cube at once. Rows are
 * bounded by the keys of a window, never by history.
 *
 * @module
 */
import { type Kysely, sql, type Transaction } from "kysely";
import { type FlushBatch, hourOf, KEY_SEP } from "./flush_batch.ts";
import type { Database } from "./schema.ts";
import {
  ALL_MEASURES,
  CUBE_MEASURES,
  QOE_SERIES_MEASURES,
  type SeriesDefinition,
  TITLE_MEASURES,
} from "../rules/anomaly_series.ts";

const CUBE_DIMS = ["platform", "region", "app_version", "subscription_plan"] as const;
const TITLE_DIMS = ["content_id", "platform", "subscription_plan"] as const;
const QOE_DIMS = ["content_id", "cdn", "subscription_plan"] as const;

/** A cube, by the name its series use. */
export type CubeName = SeriesDefinition["table"];

/** One row of a cube, dimensions and measures by column name. */
export type CubeRow = Record<string, string | number>;

/** Adds the batch's anomaly deltas to the window and hourly tables, in key order (lock order). */
export async function upsertAnomalySeries(
  trx: Transaction<Database>,
  batch: FlushBatch,
): Promise<void> {
  await upsertCube(trx, batch.anomalyCube, "anomaly_cube", CUBE_DIMS, CUBE_MEASURES);
  await upsertCube(trx, batch.anomalyTitles, "anomaly_titles", TITLE_DIMS, TITLE_MEASURES);
  await upsertCube(trx, batch.anomalyQoe, "anomaly_qoe", QOE_DIMS, QOE_SERIES_MEASURES);
}

async function upsertCube(
  trx: Transaction<Database>,
  deltas: Map<string, number[]>,
  table: `anomaly_${CubeName}`,
  dims: readonly string[],
  measures: readonly string[],
): Promise<void> {
  if (deltas.size === 0) return;
  const windows = [...deltas].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, d]) => [key.split(KEY_SEP), d] as const);
  const hourly = new Map<string, number[]>();
  for (const [parts, d] of windows) {
    const key = [String(hourOf(Number(parts[0]))), ...parts.slice(1)].join(KEY_SEP);
    const row = hourly.get(key);
    if (row === undefined) hourly.set(key, [...d]);
    else for (let i = 0; i < d.length; i++) row[i] += d[i];
  }
  const hours = [...hourly].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, d]) => [key.split(KEY_SEP), d] as const);
  await upsertRows(trx, table, "window_start", dims, measures, windows);
  await upsertRows(trx, `${table}_hourly`, "hour", dims, measures, hours);
}

async function upsertRows(
  trx: Transaction<Database>,
  table: string,
  timeColumn: string,
  dims: readonly string[],
  measures: readonly string[],
  rows: ReadonlyArray<readonly [string[], number[]]>,
): Promise<void> {
  const columns = [timeColumn, ...dims, ...measures].map((c) => sql.ref(c));
  const arrays = [
    sql`${rows.map(([k]) => new Date(Number(k[0])).toISOString())}::timestamptz[]`,
    ...dims.map((_, i) => sql`${rows.map(([k]) => k[i + 1])}::text[]`),
    ...measures.map((_, i) => sql`${rows.map(([, d]) => d[i])}::bigint[]`),
  ];
  await sql`
    insert into ${sql.table(table)} (${sql.join(columns)})
    select * from unnest(${sql.join(arrays)})
    on conflict (${sql.join([timeColumn, ...dims].map((c) => sql.ref(c)))}) do update set
      ${
    sql.join(measures.map((m) =>
      sql`${sql.ref(m)} = ${sql.table(table)}.${sql.ref(m)} + excluded.${sql.ref(m)}`
    ))
  }`.execute(trx);
}

/**
 * Rows read per statement: a window at the watched-series cap holds 50,000+ rows, and PGlite runs
 * on the main thread, so a read is cut into slices (keyset pages of the primary key) with a turn of
 * the event loop between them; ingest and reads go on while the detector reads.
 */
export const READ_SLICE_ROWS = 2_000;

const KEY_COLUMNS: Readonly<Record<CubeName, readonly string[]>> = {
  cube: CUBE_DIMS,
  titles: TITLE_DIMS,
  qoe: QOE_DIMS,
};

/** How long each slice read took (ms), the last 10,000: `deno task bench anomaly` reports them. */
export const sliceTimes: number[] = [];

/** Every row of one cube in one window. */
export async function readWindowRows(
  db: Kysely<Database>,
  table: CubeName,
  windowStartMs: number,
): Promise<CubeRow[]> {
  const rows = await readSliced(db, `anomaly_${table}`, "window_start", table, [windowStartMs]);
  return rows.map(({ time_ms: _, ...row }) => numeric(row));
}

/** Every row of one cube's hourly copy in the given hours, each with its hour (epoch ms). */
export async function readHourRows(
  db: Kysely<Database>,
  table: CubeName,
  hoursMs: readonly number[],
): Promise<Array<CubeRow & { hourMs: number }>> {
  if (hoursMs.length === 0) return [];
  const rows = await readSliced(db, `anomaly_${table}_hourly`, "hour", table, hoursMs);
  return rows.map(({ time_ms, ...row }) => ({ ...numeric(row), hourMs: Number(time_ms) }));
}

async function readSliced(
  db: Kysely<Database>,
  table: string,
  timeColumn: string,
  cube: CubeName,
  timesMs: readonly number[],
): Promise<CubeRow[]> {
  const dims = KEY_COLUMNS[cube];
  const dimRefs = sql.join(dims.map((k) => sql.ref(k)));
  const out: CubeRow[] = [];
  // One time at a time: an equality on the key's first column reads the primary key index in
  // order, so a slice is a range scan of its rows, never a sort of the whole time's rows.
  for (const timeMs of timesMs) {
    let last: CubeRow | null = null;
    for (;;) {
      const after: CubeRow | null = last;
      const from = after === null
        ? sql``
        : sql`and (${dimRefs}) > (${sql.join(dims.map((k) => sql`${after[k]}`))})`;
      const started = performance.now();
      const result = await sql<CubeRow>`select * from ${sql.table(table)}
        where ${sql.ref(timeColumn)} = ${new Date(timeMs).toISOString()}::timestamptz ${from}
        order by ${dimRefs} limit ${READ_SLICE_ROWS}`.execute(db);
      if (sliceTimes.push(performance.now() - started) > 10_000) sliceTimes.shift();
      for (const row of result.rows) {
        const { [timeColumn]: _, ...rest } = row;
        out.push({ ...rest, time_ms: timeMs });
      }
      if (result.rows.length < READ_SLICE_ROWS) break;
      last = out[out.length - 1];
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
  return out;
}

/** Counts come back from PostgreSQL as strings (bigint): numbers here. */
function numeric(row: CubeRow): CubeRow {
  const out: CubeRow = {};
  for (const [k, v] of Object.entries(row)) {
    out[k] = ALL_MEASURES.has(k) ? Number(v) : v;
  }
  return out;
}

/** The (series, key) hours kept out of baselines, among the given hours, as `series SEP key SEP ms`. */
export async function readExcludedHours(
  db: Kysely<Database>,
  hoursMs: readonly number[],
): Promise<Set<string>> {
  if (hoursMs.length === 0) return new Set();
  const result = await sql<{ series: string; key: string; ms: number | string }>`
    select series, key, extract(epoch from hour) * 1000 as ms from anomaly_excluded_hours
    where hour = any(${hoursMs.map((h) => new Date(h).toISOString())}::timestamptz[])`
    .execute(db);
  return new Set(result.rows.map((r) => r.series + KEY_SEP + r.key + KEY_SEP + Number(r.ms)));
}

/** Keeps a key's hours out of later baselines (an incident's hours). */
export async function excludeHours(
  db: Kysely<Database>,
  rows: ReadonlyArray<{ series: string; key: string; hourMs: number }>,
): Promise<void> {
  if (rows.length === 0) return;
  await sql`insert into anomaly_excluded_hours (series, key, hour)
    select * from unnest(${rows.map((r) => r.series)}::text[], ${rows.map((r) => r.key)}::text[],
      ${rows.map((r) => new Date(r.hourMs).toISOString())}::timestamptz[])
    on conflict do nothing`.execute(db);
}
