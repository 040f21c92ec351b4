/**
 * Hourly event-time buckets. Every additive aggregate moves from an all-time row to one row per UTC
 * hour of event time, so reads can answer any range of whole hours and late events land in their own
 * hour. The upgrade re-derives every bucket from `raw_events` (which held every accepted event, late
 * ones included, while the old totals left late events out); only watch time cannot be re-derived, so
 * the old all-time watch time per title and region is kept in the "before upgrade" bucket at
 * 1970-01-01T00:00Z, which all-time reads include and ranged reads do not.
 *
 * Frozen: never edit a migration that has shipped; add a new one.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

const COUNTS = sql.raw(`
  events bigint not null default 0,
  plays bigint not null default 0,
  errors bigint not null default 0,
  watch_time_ms bigint not null default 0`);

/** The dimensions every fact row is keyed by, besides its hour. */
const DIMS = sql.raw(`
  content_id text not null,
  region text not null,
  platform text not null,
  app_version text not null,
  subscription_plan text not null`);

const DIM_NAMES = "content_id, region, platform, app_version, subscription_plan";

/** Precision of the unique-viewer sketches: 2^12 registers, standard error 1.04 / sqrt(4096). */
const SKETCH_BITS = 12;

/** Creates the hourly tables, fills them from the raw events, and drops the all-time tables. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table raw_events add column client_is_eu boolean, add column subscription_plan text`
    .execute(db);
  await sql`create index raw_events_occurred_idx on raw_events (occurred_at)`.execute(db);
  await sql`create table event_facts_hourly (
    hour timestamptz not null, ${DIMS}, ${COUNTS},
    primary key (hour, ${sql.raw(DIM_NAMES)})
  )`.execute(db);
  await sql`create index event_facts_content_idx on event_facts_hourly (content_id, hour)`
    .execute(db);
  await sql`create index event_facts_region_idx on event_facts_hourly (region, hour)`.execute(db);
  await sql`create table event_types_hourly (
    hour timestamptz not null, event_type text not null,
    events bigint not null default 0, late_events bigint not null default 0,
    primary key (hour, event_type)
  )`.execute(db);
  await sql`create table error_codes_hourly (
    hour timestamptz not null, ${DIMS}, error_code text not null,
    errors bigint not null default 0,
    primary key (hour, ${sql.raw(DIM_NAMES)}, error_code)
  )`.execute(db);
  await sql`create index error_codes_region_idx on error_codes_hourly (region, hour)`.execute(db);
  await sql`create table device_facts_hourly (
    device_id text not null, hour timestamptz not null, ${COUNTS},
    primary key (device_id, hour)
  )`.execute(db);
  // Sparse HyperLogLog registers packed as (index << 8 | rank); merged by taking the highest rank
  // per index, which is exactly the union of the two viewer sets' sketches.
  await sql`create table viewer_sketches_hourly (
    scope text not null, hour timestamptz not null, registers int[] not null,
    primary key (scope, hour)
  )`.execute(db);
  await sql`create function hll_merge(a int[], b int[]) returns int[] language sql immutable as $$
    select coalesce(array_agg(m order by m), '{}') from (
      select max(v) as m from unnest(a || b) as v group by v >> 8
    ) as merged
  $$`.execute(db);
  await sql`create table flagged_events_hourly (
    hour timestamptz not null, rule text not null, region text not null,
    flagged_events bigint not null default 0,
    primary key (hour, rule, region)
  )`.execute(db);

  await rederive(db);

  for (
    const table of [
      "content_stats",
      "content_region_stats",
      "region_stats",
      "region_error_codes",
      "region_platforms",
      "device_stats",
    ]
  ) {
    await sql`drop table ${sql.table(table)}`.execute(db);
  }
  // Duplicates stay an all-time counter: they are about arrival, not about event time.
  await sql`delete from stat_counters where name <> 'duplicate_events'`.execute(db);
}

/** Fills the hourly tables from what the old schema held. */
async function rederive(db: Kysely<unknown>): Promise<void> {
  const platform = sql.raw(`case when length(extra_metadata->>'platform') between 1 and 32
    then lower(extra_metadata->>'platform') else 'unknown' end`);
  const appVersion = sql.raw(`case when length(extra_metadata->>'app_version') between 1 and 32
    then extra_metadata->>'app_version' else 'unknown' end`);
  const hour = sql.raw(`date_trunc('hour', occurred_at at time zone 'UTC') at time zone 'UTC'`);
  await sql`insert into event_facts_hourly (hour, ${sql.raw(DIM_NAMES)}, events, plays, errors)
    select ${hour}, content_id, region, ${platform}, ${appVersion}, 'unknown', count(*),
      count(*) filter (where event_type = 'PLAY'), count(*) filter (where event_type = 'ERROR')
    from raw_events group by 1, 2, 3, 4, 5`.execute(db);
  // Watch time needs sessions, which only the actors rebuild: keep the old totals, undated.
  await sql`insert into event_facts_hourly (hour, ${sql.raw(DIM_NAMES)}, watch_time_ms)
    select timestamptz '1970-01-01T00:00:00Z', content_id, region, 'unknown', 'unknown', 'unknown',
      watch_time_ms
    from content_region_stats where watch_time_ms > 0`.execute(db);
  await sql`insert into event_types_hourly (hour, event_type, events, late_events)
    select ${hour}, event_type, count(*), count(*) filter (where is_late)
    from raw_events group by 1, 2`.execute(db);
  await sql`insert into error_codes_hourly (hour, ${sql.raw(DIM_NAMES)}, error_code, errors)
    select ${hour}, content_id, region, ${platform}, ${appVersion}, 'unknown', error_code, count(*)
    from raw_events where event_type = 'ERROR' and error_code is not null
    group by 1, 2, 3, 4, 5, 6, 7`.execute(db);
  await sql`insert into device_facts_hourly (device_id, hour, events, plays, errors, watch_time_ms)
    select device_id, ${hour}, count(*), count(*) filter (where event_type = 'PLAY'),
      count(*) filter (where event_type = 'ERROR'), 0
    from raw_events group by 1, 2`.execute(db);
  await sql`insert into flagged_events_hourly (hour, rule, region, flagged_events)
    select ${hour}, rule, region, sum(flagged_events) from risk_flags group by 1, 2, 3`.execute(db);
  await rederiveSketches(db);
}

/** Builds the unique-viewer sketches from the raw events, one page of (hour, user) pairs at a time. */
async function rederiveSketches(db: Kysely<unknown>): Promise<void> {
  const sketches = new Map<string, Map<number, number>>();
  let after = -1;
  for (;;) {
    const page = await sql<
      { position: string | number; at: string; u: string; c: string; r: string }
    >`
      select position, to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:00:00"Z"') as at,
        user_id as u, content_id as c, region as r
      from raw_events where position > ${after} order by position limit 10000`.execute(db);
    if (page.rows.length === 0) break;
    for (const row of page.rows) {
      const packed = packedRegister(row.u);
      for (const scope of ["", `c:${row.c}`, `r:${row.r}`]) {
        const key = `${scope}\u0000${row.at}`;
        let registers = sketches.get(key);
        if (registers === undefined) sketches.set(key, registers = new Map());
        const index = packed >> 8;
        if ((registers.get(index) ?? 0) < (packed & 0xff)) registers.set(index, packed & 0xff);
      }
    }
    after = Number(page.rows[page.rows.length - 1].position);
  }
  const entries = [...sketches.entries()];
  for (let i = 0; i < entries.length; i += 1000) {
    const chunk = entries.slice(i, i + 1000);
    await sql`insert into viewer_sketches_hourly (scope, hour, registers)
      select s, h::timestamptz, r::int[] from unnest(
        ${chunk.map(([k]) => k.split("\u0000")[0])}::text[],
        ${chunk.map(([k]) => k.split("\u0000")[1])}::text[],
        ${
      chunk.map(([, regs]) => `{${[...regs].map(([idx, rank]) => (idx << 8) | rank).join(",")}}`)
    }::text[]
      ) as x(s, h, r)`.execute(db);
  }
}

/**
 * A copy, frozen with this migration, of the sketch hash in `db/hll.ts`: FNV-1a with the murmur3
 * finaliser; the top bits pick the register, the rank is the position of the first 1 in the rest.
 */
function packedRegister(userId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) {
    h ^= userId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  h >>>= 0;
  const index = h >>> (32 - SKETCH_BITS);
  const rest = (h << SKETCH_BITS) >>> 0;
  const rank = rest === 0 ? 32 - SKETCH_BITS + 1 : Math.clz32(rest) + 1;
  return (index << 8) | rank;
}

/** Not reversible: the all-time tables it dropped cannot be rebuilt with their old meaning. */
export function down(): Promise<void> {
  return Promise.reject(new Error("Cannot undo the hourly-bucket migration: restore a backup"));
}
