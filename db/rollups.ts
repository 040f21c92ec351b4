/**
 * The rollups of a flush: the same deltas the hourly tables take, summed into their daily twins and
 * into the narrow tables the reads use (pipeline totals, titles by region, the audience without
 * titles, each audience dimension alone, error codes by region), in the same transaction. So a late event lands in its hour and
 * its day at once, and every rollup row is exactly the sum of the hourly rows it covers.
 *
 * @module
 */
import { type RawBuilder, sql, type Transaction } from "kysely";
import { type CountDelta, type FlushBatch, HOUR_MS, KEY_SEP } from "./flush_batch.ts";
import { mergeSketch, packSketch, type SparseSketch } from "./hll.ts";
import type { Database } from "./schema.ts";

type Trx = Transaction<Database>;

/** Length of a daily rollup bucket. */
export const DAY_MS = 86_400_000;

const COUNTERS = ["events", "plays", "errors", "watch_time_ms"] as const;

/** Start of the UTC day of an hour key (epoch ms as a string). */
const dayOfKey = (hourKey: string): string => String(Math.floor(Number(hourKey) / DAY_MS) * DAY_MS);

/** A rollup's rows: key parts (time first, as epoch-ms strings) to additive values. */
type Rows = Map<string, number[]>;

function add(rows: Rows, key: string, values: readonly number[]): void {
  const row = rows.get(key);
  if (row === undefined) rows.set(key, [...values]);
  else for (let i = 0; i < values.length; i++) row[i] += values[i];
}

const countsOf = (d: CountDelta) => [d.events, d.plays, d.errors, d.watchTimeMs];

/** One rollup table: its key columns (the first is the time) and its additive columns. */
interface Rollup {
  table: string;
  keys: readonly string[];
  values: readonly string[];
}

/**
 * Upserts additive rows: `value = value + excluded.value`. Keys are written in sorted order, so
 * concurrent flushes of several workers lock rows in one order (no deadlocks).
 */
async function upsertAdditive(trx: Trx, rollup: Rollup, rows: Rows): Promise<void> {
  if (rows.size === 0) return;
  const sortedRows = [...rows.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const parts = sortedRows.map(([key]) => key.split(KEY_SEP));
  const keyArrays: RawBuilder<unknown>[] = rollup.keys.map((_, i) =>
    i === 0
      ? sql`${parts.map((p) => new Date(Number(p[0])).toISOString())}::timestamptz[]`
      : sql`${parts.map((p) => p[i])}::text[]`
  );
  const valueArrays = rollup.values.map((_, i) =>
    sql`${sortedRows.map(([, v]) => v[i])}::bigint[]`
  );
  const table = sql.table(rollup.table);
  const columns = sql.join([...rollup.keys, ...rollup.values].map((c) => sql.ref(c)));
  await sql`insert into ${table} (${columns})
    select * from unnest(${sql.join([...keyArrays, ...valueArrays])})
    on conflict (${sql.join(rollup.keys.map((c) => sql.ref(c)))}) do update set ${
    sql.join(
      rollup.values.map((c) =>
        sql`${sql.ref(c)} = ${sql.ref(`${rollup.table}.${c}`)} + excluded.${sql.ref(c)}`
      ),
    )
  }`.execute(trx);
}

const FACT_DIMS = ["content_id", "region", "platform", "app_version", "subscription_plan"];

/** The dimensions with single-dimension rollups, each with its value in a fact. */
const DIMENSION_VALUES = (
  region: string,
  platform: string,
  version: string,
  plan: string,
): Array<[string, string]> => [
  ["region", region],
  ["platform", platform],
  ["app_version", version],
  ["subscription_plan", plan],
];
const AUDIENCE_DIMS = ["region", "platform", "app_version", "subscription_plan"];

/** The rollups of the rows every worker shares (write them last, just before the commit). */
export async function upsertSharedRollups(trx: Trx, batch: FlushBatch): Promise<void> {
  const factsDaily: Rows = new Map();
  const totals = { hourly: new Map() as Rows, daily: new Map() as Rows };
  const titles = { hourly: new Map() as Rows, daily: new Map() as Rows };
  const audience = { hourly: new Map() as Rows, daily: new Map() as Rows };
  for (const [key, delta] of batch.facts) {
    // hour, content, region, platform, app version, plan
    const [hour, content, region, platform, version, plan] = key.split(KEY_SEP);
    const day = dayOfKey(hour);
    const values = countsOf(delta);
    add(factsDaily, [day, content, region, platform, version, plan].join(KEY_SEP), values);
    for (const [period, time] of [["hourly", hour], ["daily", day]] as const) {
      add(totals[period], time, values);
      add(titles[period], [time, content, region].join(KEY_SEP), values);
      add(audience[period], [time, region, platform, version, plan].join(KEY_SEP), values);
    }
  }
  const dimensions = { hourly: new Map() as Rows, daily: new Map() as Rows };
  for (const [key, delta] of batch.facts) {
    const [hour, , region, platform, version, plan] = key.split(KEY_SEP);
    const day = dayOfKey(hour);
    const values = countsOf(delta);
    for (const [dimension, value] of DIMENSION_VALUES(region, platform, version, plan)) {
      add(dimensions.hourly, [hour, dimension, value].join(KEY_SEP), values);
      add(dimensions.daily, [day, dimension, value].join(KEY_SEP), values);
    }
  }
  const typesDaily: Rows = new Map();
  for (const [key, d] of batch.types) {
    const [hour, type] = key.split(KEY_SEP);
    add(typesDaily, dayOfKey(hour) + KEY_SEP + type, [d.events, d.lateEvents]);
  }
  const codesDaily: Rows = new Map();
  const regionCodes = { hourly: new Map() as Rows, daily: new Map() as Rows };
  for (const [key, n] of batch.errorCodes) {
    const [hour, content, region, platform, version, plan, code] = key.split(KEY_SEP);
    const day = dayOfKey(hour);
    add(codesDaily, [day, content, region, platform, version, plan, code].join(KEY_SEP), [n]);
    add(regionCodes.hourly, [hour, region, code].join(KEY_SEP), [n]);
    add(regionCodes.daily, [day, region, code].join(KEY_SEP), [n]);
  }
  const consentDaily: Rows = new Map();
  for (const [key, d] of batch.consentFacts) {
    const [hour, region] = key.split(KEY_SEP);
    add(consentDaily, dayOfKey(hour) + KEY_SEP + region, [d.events, d.signalEvents]);
  }
  const counters = [...COUNTERS];
  await upsertAdditive(trx, {
    table: "event_facts_daily",
    keys: ["day", ...FACT_DIMS],
    values: counters,
  }, factsDaily);
  await upsertAdditive(trx, {
    table: "event_types_daily",
    keys: ["day", "event_type"],
    values: ["events", "late_events"],
  }, typesDaily);
  await upsertAdditive(trx, {
    table: "error_codes_daily",
    keys: ["day", ...FACT_DIMS, "error_code"],
    values: ["errors"],
  }, codesDaily);
  await upsertAdditive(trx, {
    table: "consent_facts_daily",
    keys: ["day", "region"],
    values: ["events", "signal_events"],
  }, consentDaily);
  for (const [period, time] of [["hourly", "hour"], ["daily", "day"]] as const) {
    await upsertAdditive(trx, {
      table: `content_region_${period}`,
      keys: [time, "content_id", "region"],
      values: counters,
    }, titles[period]);
    await upsertAdditive(trx, {
      table: `audience_${period}`,
      keys: [time, ...AUDIENCE_DIMS],
      values: counters,
    }, audience[period]);
    await upsertAdditive(trx, {
      table: `region_error_codes_${period}`,
      keys: [time, "region", "error_code"],
      values: ["errors"],
    }, regionCodes[period]);
    await upsertAdditive(trx, {
      table: `dimension_${period}`,
      keys: [time, "dimension", "value"],
      values: counters,
    }, dimensions[period]);
  }
  // One row per hour and day for the whole pipeline: the hottest rows, so the very last.
  for (const [period, time] of [["hourly", "hour"], ["daily", "day"]] as const) {
    await upsertAdditive(trx, {
      table: `totals_${period}`,
      keys: [time],
      values: counters,
    }, totals[period]);
  }
}

/** The rollups of rows only this worker's entities touch (devices, sketches, flagged events). */
export async function upsertOwnRollups(trx: Trx, batch: FlushBatch): Promise<void> {
  const devicesDaily: Rows = new Map();
  for (const [key, delta] of batch.devices) {
    const [device, hour] = key.split(KEY_SEP);
    add(devicesDaily, dayOfKey(hour) + KEY_SEP + device, countsOf(delta));
  }
  await upsertAdditive(
    trx,
    { table: "device_facts_daily", keys: ["day", "device_id"], values: [...COUNTERS] },
    devicesDaily,
  );
  const flaggedDaily: Rows = new Map();
  for (const [key, n] of batch.flaggedEvents) {
    const [hour, rule, region] = key.split(KEY_SEP);
    add(flaggedDaily, [dayOfKey(hour), rule, region].join(KEY_SEP), [n]);
  }
  await upsertAdditive(trx, {
    table: "flagged_events_daily",
    keys: ["day", "rule", "region"],
    values: ["flagged_events"],
  }, flaggedDaily);
  await upsertDailySketches(trx, batch.viewers);
}

/** Merges the hourly viewer sketches of a batch into their days (HyperLogLog union is exact). */
async function upsertDailySketches(trx: Trx, viewers: Map<string, SparseSketch>): Promise<void> {
  if (viewers.size === 0) return;
  const daily = new Map<string, SparseSketch>();
  for (const [key, sketch] of viewers) {
    const sep = key.lastIndexOf(KEY_SEP);
    const dayKey = key.slice(0, sep) + KEY_SEP + dayOfKey(key.slice(sep + 1));
    let target = daily.get(dayKey);
    if (target === undefined) daily.set(dayKey, target = new Map() as SparseSketch);
    mergeSketch(target, sketch);
  }
  const rows = [...daily.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(
    ([k, sketch]) => {
      const sep = k.lastIndexOf(KEY_SEP);
      return [k.slice(0, sep), k.slice(sep + 1), `{${packSketch(sketch).join(",")}}`] as const;
    },
  );
  await sql`
    insert into viewer_sketches_daily (scope, day, registers)
    select s, d, r::int[] from unnest(${rows.map((r) => r[0])}::text[],
      ${rows.map((r) => new Date(Number(r[1])).toISOString())}::timestamptz[],
      ${rows.map((r) => r[2])}::text[]) as x(s, d, r)
    on conflict (scope, day) do update set
      registers = hll_merge(viewer_sketches_daily.registers, excluded.registers)`.execute(trx);
}

/** The hours of a range as whole days plus the hours at either edge (for reads). */
export interface SplitRange {
  /** `[fromMs, toMs)` of whole UTC days, or null when the range holds none. */
  days: { fromMs: number; toMs: number } | null;
  /** Hour ranges `[fromMs, toMs)` outside the whole days (at most two). */
  hours: Array<{ fromMs: number; toMs: number }>;
}

/**
 * Splits an hour-aligned range into the whole UTC days inside it (read from daily rows) and the
 * hours at its edges (read from hourly rows). An open bound stays open on the days.
 */
export function splitRange(fromMs: number | undefined, toMs: number | undefined): SplitRange {
  const firstDay = fromMs === undefined ? -Infinity : Math.ceil(fromMs / DAY_MS) * DAY_MS;
  const lastDay = toMs === undefined ? Infinity : Math.floor(toMs / DAY_MS) * DAY_MS;
  if (firstDay >= lastDay) {
    // No whole day: every hour comes from the hourly rows.
    return { days: null, hours: [{ fromMs: fromMs!, toMs: toMs! }] };
  }
  const hours: SplitRange["hours"] = [];
  if (fromMs !== undefined && fromMs < firstDay) hours.push({ fromMs, toMs: firstDay });
  if (toMs !== undefined && lastDay < toMs) hours.push({ fromMs: lastDay, toMs });
  return { days: { fromMs: firstDay, toMs: lastDay }, hours };
}

/** One UTC hour, the finest rollup bucket. */
export const BUCKET_MS = HOUR_MS;
