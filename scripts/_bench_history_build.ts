/**
 * The history bench's data: the platform's key spread scaled by a factor, written straight into the
 * tables with server-side `INSERT ... SELECT generate_series` (the bench's stand-in for COPY: no
 * pipeline, no client round trip per row). The hourly tables are generated; every other table with
 * an `hour` or `day` column (daily twins, narrow rollups) is found in the catalog at run time and
 * derived from the generated hourly rows in SQL, so each rollup row is the sum of its hourly rows
 * and the reads agree whichever table they use. Raw events of older days are the pipeline's own
 * rows of the last day, copied with new ids and negative log positions (below every checkpoint, so
 * no shard replays them) into daily partitions created by the server's own code.
 *
 * What production holds: a table the server's aggregate retention prunes (`db/horizons.ts`) is only
 * written for the days it still holds at the bench's `now` (plus the day its cutoff falls in, so the
 * bench's retention run deletes rows and records the horizons the reads report). Hourly rows that a
 * kept rollup (a daily table) is derived from but that are past their own retention are generated
 * into unlogged, index-free copies in the `bench_stage` schema, read by the derivations and emptied
 * after each day.
 *
 * @module
 */
// @ts-types="@types/pg"
import pg from "pg";
import { Kysely, PostgresDialect } from "kysely";
import type { Database } from "../db/schema.ts";
import { dailyName, DAY_MS, ensureDays } from "../db/partitions.ts";
import { type AggregateRetention, DAILY_TABLES, HOURLY_TABLES } from "../db/horizons.ts";
import { PLAYBACK_TYPES } from "../rules/event.ts";
import { RULE_IDS } from "../rules/registry.ts";

/** The platform the bench is scaled from (per UTC hour unless said otherwise). */
export const PLATFORM = {
  titles: 20_000,
  regions: 60,
  platforms: 6,
  appVersions: 10,
  plans: 3,
  viewers: 5_000_000,
  eventsPerDay: 200_000_000,
  /** Distinct (title, region, platform, app version, plan) keys seen in an hour (estimate). */
  factKeysPerHour: 300_000,
  /** Distinct TVs (and viewers) active in an hour (estimate: 5M viewers, ~2.4 h a day each). */
  devicesPerHour: 500_000,
  /** Risk flags raised per day (estimate). */
  flagsPerDay: 20_000,
  /** Privacy requests filed per day (estimate). */
  privacyRequestsPerDay: 2_000,
  /** Audit rows per day: staff reads of compliance and privacy data (not scaled). */
  auditRowsPerDay: 2_000,
  /** A viewer's consent state changes about this often (days). */
  consentChangeDays: 60,
} as const;

/** 60 region codes the API accepts (ISO 3166-1 alpha-2, one subdivision). */
export const REGION_CODES = [
  "US-CA",
  "DE",
  "FR",
  "GB",
  "JP",
  "BR",
  "US",
  "IT",
  "ES",
  "NL",
  "SE",
  "PL",
  "CA",
  "MX",
  "AU",
  "IN",
  "KR",
  "AR",
  "CL",
  "CO",
  "PE",
  "BE",
  "AT",
  "CH",
  "DK",
  "NO",
  "FI",
  "IE",
  "PT",
  "GR",
  "CZ",
  "HU",
  "RO",
  "BG",
  "HR",
  "SI",
  "SK",
  "LT",
  "LV",
  "EE",
  "TR",
  "IL",
  "AE",
  "SA",
  "ZA",
  "EG",
  "NG",
  "KE",
  "MA",
  "TH",
  "VN",
  "PH",
  "ID",
  "MY",
  "SG",
  "NZ",
  "TW",
  "HK",
  "UA",
  "IS",
]; // deno-fmt-ignore
export const PLATFORMS = ["tizen", "webos", "roku", "androidtv", "firetv", "tvos"];
export const APP_VERSIONS = Array.from({ length: 10 }, (_, i) => `5.${i}.0`);
export const PLANS = ["basic", "standard", "premium"];
const ERROR_CODES = [
  "NETWORK_TIMEOUT",
  "DRM_FAILURE",
  "DECODE_ERROR",
  "CDN_404",
  "AUTH_EXPIRED",
  "BUFFER_UNDERRUN",
  "MANIFEST_ERROR",
  "LICENSE_DENIED",
]; // deno-fmt-ignore

/** The key spread at a scale factor, and the row counts it gives. */
export interface Spread {
  scale: number;
  titles: number;
  regions: string[];
  /** Fact rows per hour aimed at, and the Zipf constant that gives them. */
  factKeysPerHour: number;
  zipfA: number;
  /** Fact rows per hour the Zipf rule actually gives. */
  factRowsPerHour: number;
  devicesPerHour: number;
  devicePool: number;
  eventsPerHour: number;
  viewers: number;
  flagsPerDay: number;
  privacyRequestsPerDay: number;
  auditRowsPerDay: number;
  consentRowsPerDay: number;
}

const ZIPF = 0.9;
const combosPerTitle = (regions: number) => regions * 6 * 10 * 3;
const rowsOfTitle = (a: number, t: number, combos: number) =>
  Math.min(combos, Math.max(1, Math.floor(a / (t + 1) ** ZIPF)));

/** The spread at `scale` (1 = the platform): titles, regions and rows per hour. */
export function spreadAt(scale: number): Spread {
  const titles = Math.max(20, Math.round(PLATFORM.titles * scale));
  const regions = REGION_CODES.slice(0, Math.max(6, Math.round(PLATFORM.regions * scale)));
  const combos = combosPerTitle(regions.length);
  const target = Math.max(titles, Math.round(PLATFORM.factKeysPerHour * scale));
  const total = (a: number) => {
    let n = 0;
    for (let t = 0; t < titles; t++) n += rowsOfTitle(a, t, combos);
    return n;
  };
  let lo = 1, hi = 1e9;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (total(mid) < target) lo = mid;
    else hi = mid;
  }
  const viewers = Math.max(1000, Math.round(PLATFORM.viewers * scale));
  return {
    scale,
    titles,
    regions,
    factKeysPerHour: target,
    zipfA: hi,
    factRowsPerHour: total(hi),
    devicesPerHour: Math.max(100, Math.round(PLATFORM.devicesPerHour * scale)),
    devicePool: viewers,
    eventsPerHour: Math.round((PLATFORM.eventsPerDay * scale) / 24),
    viewers,
    flagsPerDay: Math.max(10, Math.round(PLATFORM.flagsPerDay * scale)),
    privacyRequestsPerDay: Math.max(2, Math.round(PLATFORM.privacyRequestsPerDay * scale)),
    auditRowsPerDay: PLATFORM.auditRowsPerDay,
    consentRowsPerDay: Math.max(1, Math.round(viewers / PLATFORM.consentChangeDays)),
  };
}

/** The hourly tables the bench generates; everything else with `hour` or `day` is derived. */
export const BASE_TABLES = [
  "event_facts_hourly",
  "error_codes_hourly",
  "event_types_hourly",
  "device_facts_hourly",
  "viewer_sketches_hourly",
  "flagged_events_hourly",
  "consent_facts_hourly",
] as const;

/** How a table with an `hour` or `day` column (not a base table) is derived. */
export interface Derivation {
  table: string;
  source: string | null;
  /** The INSERT with `$1` (from) and `$2` (to) placeholders, or why there is none. */
  sql: string | null;
  why: string;
}

/** The first instant each table keeps at `nowMs` (absent: the server never prunes it). */
export type KeptFrom = Map<string, number>;

const HOUR_MS = 3_600_000;

/**
 * The first instant each pruned aggregate table keeps at `nowMs` under `retention`, as
 * `pruneAggregates` computes its cutoffs (the per-TV tables follow the entity retention).
 */
export function keptFrom(nowMs: number, retention: AggregateRetention): KeptFrom {
  const hour = Math.floor((nowMs - retention.hourlyRetentionDays * DAY_MS) / HOUR_MS) * HOUR_MS;
  const day = Math.floor((nowMs - retention.dailyRetentionDays * DAY_MS) / DAY_MS) * DAY_MS;
  const entity = Math.floor((nowMs - retention.entityRetentionDays * DAY_MS) / HOUR_MS) * HOUR_MS;
  const out: KeptFrom = new Map();
  for (const t of HOURLY_TABLES) out.set(t, hour);
  for (const t of DAILY_TABLES) out.set(t, day);
  out.set("device_facts_hourly", entity);
  out.set("device_facts_daily", entity);
  return out;
}

/**
 * Whether the UTC day starting `dayMs` is written into `table`: when the table is not pruned, or
 * the day holds an hour at or after one hour before its cutoff (so the day the cutoff falls in is
 * written, and the retention run deletes its first hours and records the horizon).
 */
export function isWritten(kept: KeptFrom, table: string, dayMs: number): boolean {
  const from = kept.get(table);
  return from === undefined || dayMs + DAY_MS > from - HOUR_MS;
}

/** A connection pool and a Kysely over it, for the server's own DDL helpers. */
export interface BuildDb {
  pool: pg.Pool;
  db: Kysely<Database>;
}

export function openBuildDb(url: string): BuildDb {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  // Bulk loads: the loss of the last commits on a crash only loses bench data.
  pool.on("connect", (client) => {
    client.query("set synchronous_commit = off; set maintenance_work_mem = '256MB'").catch(
      () => undefined,
    );
  });
  return { pool, db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }) };
}

const DAY_EXPR = "(date_trunc('day', hour at time zone 'UTC') at time zone 'UTC')";

/**
 * Finds every table with an `hour` or `day` column besides the base tables and how to derive it
 * from them: its primary-key columns are the groups, numeric columns are summed, `int[]` sketch
 * registers are merged (highest rank per register). The source is the first base table (in
 * {@link BASE_TABLES} order) holding every column.
 */
export async function planDerivations(pool: pg.Pool): Promise<Derivation[]> {
  // Which dimensions the single-dimension rollups hold: those the server wrote for the pipeline
  // slice (so the bench follows db/rollups.ts without a copy of its list).
  const dimensionsOf = async (table: string): Promise<string[]> =>
    (await pool.query<{ dimension: string }>(
      `select distinct dimension from ${table} order by 1`,
    )).rows.map((r) => r.dimension);
  const cols = await pool.query<{ table_name: string; column_name: string; udt_name: string }>(
    `select c.table_name, c.column_name, c.udt_name from information_schema.columns c
     join information_schema.tables t using (table_schema, table_name)
     where c.table_schema = 'public' and t.table_type = 'BASE TABLE'
     order by c.table_name, c.ordinal_position`,
  );
  const pks = await pool.query<{ table_name: string; column_name: string }>(
    `select cl.relname as table_name, a.attname as column_name
     from pg_index i join pg_class cl on cl.oid = i.indrelid
     join pg_namespace n on n.oid = cl.relnamespace and n.nspname = 'public'
     join pg_attribute a on a.attrelid = cl.oid and a.attnum = any(i.indkey)
     where i.indisprimary`,
  );
  const tables = new Map<string, Map<string, string>>();
  for (const c of cols.rows) {
    if (!tables.has(c.table_name)) tables.set(c.table_name, new Map());
    tables.get(c.table_name)!.set(c.column_name, c.udt_name);
  }
  const pkOf = new Map<string, Set<string>>();
  for (const p of pks.rows) {
    if (!pkOf.has(p.table_name)) pkOf.set(p.table_name, new Set());
    pkOf.get(p.table_name)!.add(p.column_name);
  }
  const out: Derivation[] = [];
  for (const [table, columns] of tables) {
    if ((BASE_TABLES as readonly string[]).includes(table)) continue;
    const timeCol = columns.has("hour") ? "hour" : columns.has("day") ? "day" : null;
    if (timeCol === null) continue;
    const pk = pkOf.get(table) ?? new Set<string>();
    if (pk.has("dimension") && pk.has("value")) {
      out.push(await dimensionDerivation(table, timeCol, columns, pk, tables, dimensionsOf));
      continue;
    }
    const wanted = [...columns.keys()].filter((c) => c !== timeCol);
    const source = BASE_TABLES.find((b) => {
      const sc = tables.get(b);
      return sc !== undefined && sc.has("hour") && wanted.every((c) => sc.has(c));
    });
    if (source === undefined) {
      out.push({ table, source: null, sql: null, why: "no base table holds all its columns" });
      continue;
    }
    const keys = wanted.filter((c) => pk.has(c));
    const values = wanted.filter((c) => !pk.has(c));
    const bad = values.find((c) => ![...NUMERIC, "_int4"].includes(columns.get(c)!));
    if (bad !== undefined) {
      out.push({ table, source, sql: null, why: `cannot aggregate column ${bad}` });
      continue;
    }
    const time = timeCol === "hour" ? "hour" : DAY_EXPR;
    const where = "hour >= $1::timestamptz and hour < $2::timestamptz";
    const sketch = values.find((c) => columns.get(c) === "_int4");
    const keyList = keys.join(", ");
    const groupNums = keys.map((_, i) => String(i + 2)).join(", ");
    let text: string;
    if (sketch !== undefined) {
      if (values.length !== 1) {
        out.push({ table, source, sql: null, why: "sketch with other values" });
        continue;
      }
      text = `insert into ${table} (${timeCol}${keys.length ? ", " + keyList : ""}, ${sketch})
        select t${keys.length ? ", " + keyList : ""}, coalesce(array_agg(m order by m), '{}')
        from (select ${time} as t${keys.length ? ", " + keyList : ""}, max(v) as m
          from ${source}, unnest(${sketch}) as v where ${where}
          group by 1${keys.length ? ", " + groupNums : ""}, v >> 8) merged
        group by 1${keys.length ? ", " + groupNums : ""}`;
    } else {
      text = `insert into ${table} (${timeCol}${keys.length ? ", " + keyList : ""}${
        values.length ? ", " + values.join(", ") : ""
      })
        select ${time}${keys.length ? ", " + keyList : ""}${
        values.map((v) => `, sum(${v})`).join("")
      }
        from ${source} where ${where} group by 1${keys.length ? ", " + groupNums : ""}`;
    }
    out.push({ table, source, sql: text, why: `derived from ${source}` });
  }
  return out;
}

const NUMERIC = ["int2", "int4", "int8", "numeric", "float8"];

/**
 * A single-dimension rollup (key `dimension`, `value` and the time): for each dimension the server
 * writes, the sum of the hourly fact rows grouped by that dimension's column.
 */
async function dimensionDerivation(
  table: string,
  timeCol: string,
  columns: Map<string, string>,
  pk: Set<string>,
  tables: Map<string, Map<string, string>>,
  dimensionsOf: (table: string) => Promise<string[]>,
): Promise<Derivation> {
  const dims = await dimensionsOf(table);
  const otherKeys = [...pk].filter((c) => c !== timeCol && c !== "dimension" && c !== "value");
  const values = [...columns.keys()].filter((c) => !pk.has(c));
  if (dims.length === 0) {
    return {
      table,
      source: null,
      sql: null,
      why:
        "NOT DERIVED (left empty): the pipeline slice wrote no rows to learn its dimensions from",
    };
  }
  const source = BASE_TABLES.find((b) => {
    const sc = tables.get(b);
    return sc !== undefined && sc.has("hour") &&
      [...dims, ...otherKeys, ...values].every((c) => sc.has(c));
  });
  if (source === undefined || otherKeys.length > 0) {
    return {
      table,
      source: null,
      sql: null,
      why: `NOT DERIVED (left empty): no base table holds the dimensions ${dims.join(", ")}` +
        (otherKeys.length > 0 ? ` and keys ${otherKeys.join(", ")}` : ""),
    };
  }
  const bad = values.find((c) => !NUMERIC.includes(columns.get(c)!));
  if (bad !== undefined) {
    return { table, source, sql: null, why: `NOT DERIVED (left empty): cannot sum ${bad}` };
  }
  const time = timeCol === "hour" ? "hour" : DAY_EXPR;
  const valueOf = `case d ${dims.map((x) => `when '${x}' then ${x}::text`).join(" ")} end`;
  return {
    table,
    source,
    sql: `insert into ${table} (${timeCol}, dimension, value${values.map((v) => `, ${v}`).join("")})
      select ${time}, d, ${valueOf}${values.map((v) => `, sum(${v})`).join("")}
      from ${source} cross join unnest(${lit(dims)}) d
      where hour >= $1::timestamptz and hour < $2::timestamptz group by 1, 2, 3`,
    why: `derived from ${source}, one group per value of ${dims.join(", ")}`,
  };
}

const lit = (values: readonly string[]) =>
  `array[${values.map((v) => `'${v.replaceAll("'", "''")}'`).join(",")}]::text[]`;

/** The SQL that generates the base hourly rows of `[$1, $2)` (whole hours). */
function baseStatements(s: Spread): Array<[string, string]> {
  const G = s.regions.length;
  const C = combosPerTitle(G);
  const hours = `generate_series($1::timestamptz, $2::timestamptz - interval '1 hour',
    interval '1 hour') as hr cross join lateral
    (select (extract(epoch from hr) / 3600)::bigint as h) hh`;
  const meanFact = Math.max(1, Math.round(s.eventsPerHour / s.factRowsPerHour));
  const meanDevice = Math.max(1, Math.round(s.eventsPerHour / s.devicesPerHour));
  const regions = lit(s.regions);
  const stride = Math.max(1, Math.round(s.devicePool / 10));
  const rank = (x: string) =>
    `least(20, 1 + floor(-ln(((${x}) % 1000003 + 1)::float8 / 1000004) / ln(2)))::int`;
  const sketch = (viewers: string, seed: string) =>
    `array(select (((k * 2371 + ${seed}) % 4096) << 8 | ${rank(`k * 7919 + ${seed} * 13`)})::int
      from generate_series(0, greatest(0, round(4096 * (1 - exp(-(${viewers})::float8 / 4096)))::int - 1)) k
      order by 1)`;
  const types = PLAYBACK_TYPES;
  const typeShare: Record<string, number> = { PLAY: 0.3, PAUSE: 0.25, SEEK: 0.2, STOP: 0.23 };
  return [
    [
      "event_facts_hourly",
      `insert into event_facts_hourly (hour, content_id, region, platform,
        app_version, subscription_plan, events, plays, errors, watch_time_ms)
      select hr, 'title-' || lpad(t::text, 5, '0'), (${regions})[1 + combo % ${G}],
        (${lit(PLATFORMS)})[1 + (combo / ${G}) % 6], (${lit(APP_VERSIONS)})[1 + (combo / ${
        G * 6
      }) % 10],
        (${lit(PLANS)})[1 + (combo / ${G * 60}) % 3], ev, ev / 4, ev / 50 + (x % 2),
        (ev / 4) * 600000
      from ${hours} cross join generate_series(0, ${s.titles - 1}) t
      cross join lateral generate_series(0, least(${C}, greatest(1,
        floor(${s.zipfA} / power(t + 1, ${ZIPF}))))::int - 1) j
      cross join lateral (select (j::bigint * 7919 + h * 31 + t * 17) % ${C} as combo,
        (h * 2654435761 + t * 40503 + j * 9973) % 1000003 as x) k
      cross join lateral (select 1 + x % ${2 * meanFact - 1} as ev) e`,
    ],
    [
      "error_codes_hourly",
      `insert into error_codes_hourly (hour, content_id, region, platform,
        app_version, subscription_plan, error_code, errors)
      select hour, content_id, region, platform, app_version, subscription_plan,
        (${lit(ERROR_CODES)})[1 + abs(hashtext(content_id || platform)) % ${ERROR_CODES.length}],
        greatest(errors, 1)
      from event_facts_hourly where hour >= $1::timestamptz and hour < $2::timestamptz
        and abs(hashtext(content_id || region || platform || app_version || subscription_plan
          || hour::text)) % 10 = 0`,
    ],
    [
      "event_types_hourly",
      `insert into event_types_hourly (hour, event_type, events, late_events)
      select hr, ty, round(${s.eventsPerHour} * case ty ${
        types.map((t) => `when '${t}' then ${typeShare[t] ?? 0.02}`).join(" ")
      } else 0.01 end), round(${s.eventsPerHour} * 0.002)
      from ${hours} cross join unnest(${lit(types)}) ty`,
    ],
    [
      "device_facts_hourly",
      `insert into device_facts_hourly (device_id, hour, events, plays,
        errors, watch_time_ms)
      select 'tv-' || ((h * ${stride} + j) % ${s.devicePool}), hr, ev, ev / 4, ev / 50,
        (ev / 4) * 600000
      from ${hours} cross join generate_series(0, ${Math.min(s.devicesPerHour, s.devicePool) - 1}) j
      cross join lateral (select 1 + ((h * 2654435761 + j * 40503) % 1000003) % ${
        2 * meanDevice - 1
      } as ev) e`,
    ],
    [
      "viewer_sketches_hourly",
      `insert into viewer_sketches_hourly (scope, hour, registers)
      select scope, hr, ${sketch("v", "h * 7 + sd")} from ${hours}
      cross join lateral (
        select '' as scope, ${s.devicesPerHour}::float8 as v, 0::bigint as sd
        union all select 'r:' || r, ${s.devicesPerHour / G}::float8, i::bigint
          from unnest(${regions}) with ordinality as x(r, i)
        union all select 'c:title-' || lpad(t::text, 5, '0'),
          ${s.devicesPerHour}::float8 * least(${C}, greatest(1,
            floor(${s.zipfA} / power(t + 1, ${ZIPF})))) / ${s.factRowsPerHour}, 100 + t
          from generate_series(0, ${s.titles - 1}) t) scopes`,
    ],
    [
      "flagged_events_hourly",
      `insert into flagged_events_hourly (hour, rule, region,
        flagged_events)
      select hr, rule, region, 1 + (h + length(region) * 7 + length(rule)) % 20
      from ${hours} cross join unnest(${lit(RULE_IDS)}) rule cross join unnest(${regions}) region
      where (h + hashtext(rule || region)) % 2 = 0`,
    ],
    [
      "consent_facts_hourly",
      `insert into consent_facts_hourly (hour, region, events,
        signal_events)
      select hr, region, ${Math.round(s.eventsPerHour / G)}, ${
        Math.round(s.eventsPerHour / G * 0.7)
      }
      from ${hours} cross join unnest(${regions}) region`,
    ],
  ];
}

/** The SQL for the day's non-aggregate history: flags, consent ledger, audit, privacy requests. */
function recordStatements(s: Spread, nowMs: number): Array<[string, string]> {
  const now = `'${new Date(nowMs).toISOString()}'::timestamptz`;
  const regions = lit(s.regions);
  const dayIdx = `(extract(epoch from $1::timestamptz) / 86400)::bigint`;
  return [
    [
      "risk_flags",
      `insert into risk_flags (flag_key, rule, rule_version, level, level_rank,
        entity_type, entity_id, event_id, user_id, region, is_eu, occurred_at, reason, evidence,
        flagged_events, raised_at, updated_at, status)
      select 'bench:' || ${dayIdx} || ':' || n, (${lit(RULE_IDS)})[1 + n % ${RULE_IDS.length}],
        1, (array['LOW','MEDIUM','HIGH'])[1 + n % 3], 1 + n % 3,
        (array['user','content','device'])[1 + n % 3], 'user-' || (n * 7919 % ${s.viewers}),
        gen_random_uuid()::text, 'user-' || (n * 7919 % ${s.viewers}),
        (${regions})[1 + n % ${s.regions.length}], n % 2 = 0, at,
        'Bench flag: watched from 4 regions within 60 minutes',
        jsonb_build_object('regions', jsonb_build_array('DE','FR','GB','JP'),
          'window_ms', 3600000, 'events', 12), 1 + n % 12, at, at,
        (array['open','open','open','acknowledged','dismissed','resolved'])[1 + n % 6]
      from generate_series(0, ${s.flagsPerDay - 1}) n
      cross join lateral (select $1::timestamptz + (n * 86399 / ${s.flagsPerDay}) * interval
        '1 second' as at) a`,
    ],
    [
      "consent_ledger",
      `insert into consent_ledger (user_id, occurred_at, event_id, received_at,
        region, state, source, purposes, vendor_consent, has_consent, is_decoded,
        opt_out_sale_share, cmp_id, cmp_version, policy_version, string_hash, seen_until)
      select 'user-' || u, at, gen_random_uuid()::text, at + interval '2 seconds',
        (${regions})[1 + u % ${s.regions.length}], (u + ${dayIdx}) % 7, 'tcf',
        case when (u + ${dayIdx}) % 5 = 0 then 1 else 1023 end, true, (u + ${dayIdx}) % 5 <> 0,
        true, false, 300, 2, 4, md5(u::text || ${dayIdx}::text),
        least(${now}, at + interval '${PLATFORM.consentChangeDays - 1} days')
      from generate_series(0, ${s.viewers - 1}) u
      cross join lateral (select $1::timestamptz + (u % 86400) * interval '1 second' as at) a
      where (u + ${dayIdx}) % ${PLATFORM.consentChangeDays} = 0`,
    ],
    [
      "audit_log",
      `insert into audit_log (at, request_id, actor_name, actor_role, method, path,
        query, status, subject_user_id, source)
      select $1::timestamptz + (n * 86399 / ${s.auditRowsPerDay}) * interval '1 second',
        gen_random_uuid()::text, (array['alice','bob','carol','dpo'])[1 + n % 4],
        (array['privacy','privacy','analyst','admin'])[1 + n % 4], 'GET',
        (array['/compliance/events','/compliance/summary','/privacy/requests',
          '/privacy/users/user-' || n || '/consent'])[1 + n % 4], 'limit=50', 200,
        case when n % 4 = 3 then 'user-' || n end, '10.0.0.' || (n % 250)
      from generate_series(0, ${s.auditRowsPerDay - 1}) n`,
    ],
    [
      "privacy_requests",
      `insert into privacy_requests (user_id, request_type, source,
        requested_at, status, jurisdiction, due_at, completed_at, result)
      select 'dsr-' || ${dayIdx} || '-' || n, (array['access','deletion','do_not_track'])[1 + n % 3],
        'api', at, case when at < ${now} - interval '30 days' then 'completed' else
          (array['received','in_progress','completed'])[1 + n % 3] end,
        'GDPR', at + interval '30 days',
        case when at < ${now} - interval '30 days' or n % 3 = 2 then at + interval '3 days' end,
        '{"rows": 12}'::jsonb
      from generate_series(0, ${s.privacyRequestsPerDay - 1}) n
      cross join lateral (select $1::timestamptz + (n * 86399 / ${s.privacyRequestsPerDay})
        * interval '1 second' as at) a`,
    ],
  ];
}

/** Rows each statement wrote, per table, summed over a build. */
export type Written = Record<string, number>;

/** The schema of the unlogged, index-free copies of base tables past their retention. */
export const STAGE = "bench_stage";

/** Creates (empty) the staging copies of the base tables. */
export async function createStage(b: BuildDb): Promise<void> {
  await b.pool.query(`drop schema if exists ${STAGE} cascade; create schema ${STAGE}`);
  for (const t of BASE_TABLES) {
    await b.pool.query(`create unlogged table ${STAGE}.${t} (like public.${t} including defaults)`);
  }
}

/**
 * Writes the whole UTC days `[fromDay, toDay)`: base hourly rows, derived rollups, records, one day
 * per statement, oldest last (history grows backwards from the pipeline's day). A table is written
 * only for the days it holds at `nowMs` (see {@link isWritten}); a base table past its retention
 * that a kept rollup derives from is generated into {@link STAGE} and emptied after the day.
 * `written` counts the rows kept, `staged` those generated only to derive from.
 */
export async function buildDays(
  b: BuildDb,
  s: Spread,
  derivations: Derivation[],
  kept: KeptFrom,
  fromDay: number,
  toDay: number,
  nowMs: number,
  written: Written,
  staged: Written,
  progress: (m: string) => void,
): Promise<void> {
  const base = baseStatements(s);
  const records = recordStatements(s, nowMs);
  const started = performance.now();
  for (let day = toDay - DAY_MS; day >= fromDay; day -= DAY_MS) {
    const args = [new Date(day).toISOString(), new Date(day + DAY_MS).toISOString()];
    const derived = derivations.filter((d) => d.sql !== null && isWritten(kept, d.table, day));
    // Base tables this day needs: kept ones, sources of kept rollups, and the facts error codes
    // are drawn from.
    const needed = new Set<string>(
      base.map(([t]) => t).filter((t) =>
        isWritten(kept, t, day) || derived.some((d) => d.source === t)
      ),
    );
    if (needed.has("error_codes_hourly")) needed.add("event_facts_hourly");
    const stagedHere = [...needed].filter((t) => !isWritten(kept, t, day));
    const toStage = (text: string) =>
      stagedHere.length === 0
        ? text
        : text.replace(new RegExp(`\\b(${stagedHere.join("|")})\\b`, "g"), `${STAGE}.$1`);
    // Independent tables in parallel (error codes read the facts, rollups the base rows).
    const run = async (list: Array<[string, string | null]>) =>
      await Promise.all(list.map(async ([table, text]) => {
        if (text === null) return;
        const r = await b.pool.query(toStage(text), text.includes("$2") ? args : [args[0]]);
        const into = stagedHere.includes(table) ? staged : written;
        into[table] = (into[table] ?? 0) + (r.rowCount ?? 0);
      }));
    const bases = base.filter(([t]) => needed.has(t) && t !== "error_codes_hourly");
    await run(bases.slice(0, 2));
    await run(bases.slice(2));
    await run(base.filter(([t]) => needed.has(t) && t === "error_codes_hourly"));
    await run(derived.map((d) => [d.table, d.sql]));
    await run(records);
    if (stagedHere.length > 0) {
      await b.pool.query(`truncate ${stagedHere.map((t) => `${STAGE}.${t}`).join(", ")}`);
    }
    const done = (toDay - day) / DAY_MS;
    if (done % 10 === 0 || day === fromDay) {
      progress(
        `history: ${done}/${(toDay - fromDay) / DAY_MS} days written ` +
          `(${((performance.now() - started) / 1000).toFixed(0)} s)`,
      );
    }
  }
}

/**
 * Copies the pipeline's raw rows of the UTC day `templateDay` into each day of `days`, shifted by
 * whole days, with new event ids and negative positions; creates the partitions first with the
 * server's `ensureDays`. Returns the rows written.
 */
export async function copyRawDays(
  b: BuildDb,
  templateDay: number,
  days: number[],
): Promise<number> {
  if (days.length === 0) return 0;
  await ensureDays(b.db, Math.min(...days), Math.max(...days));
  let rows = 0;
  const cols = await b.pool.query<{ column_name: string }>(
    `select column_name from information_schema.columns
     where table_schema = 'public' and table_name = 'raw_events' order by ordinal_position`,
  );
  const names = cols.rows.map((r) => r.column_name);
  for (const day of days) {
    const shift = `${(templateDay - day) / DAY_MS} days`;
    const select = names.map((c) =>
      c === "event_id"
        ? "gen_random_uuid()::text"
        : c === "position"
        ? `-(${Math.round(day / DAY_MS)}::bigint * 100000000 + row_number() over ())`
        : c === "occurred_at" || c === "received_at"
        ? `${c} - interval '${shift}'`
        : c
    ).join(", ");
    const r = await b.pool.query(
      `insert into raw_events (${names.join(", ")}) select ${select}
       from ${dailyName(templateDay)} where position > 0`,
    );
    rows += r.rowCount ?? 0;
  }
  return rows;
}
