/**
 * Writing a {@link FlushBatch}: one transaction of bulk `unnest` statements (one parameter per column,
 * never one statement per row), additive upserts (`x = x + excluded.x`) and forward-only checkpoints.
 * A batch is either wholly committed or not at all, which is what makes retrying it safe.
 *
 * @module
 */
import { type Kysely, type RawBuilder, sql, type Transaction } from "kysely";
import { KEY_SEP } from "./flush_batch.ts";
import type { ConsentLedgerRow, CountDelta, FlushBatch } from "./flush_batch.ts";
import type { Database } from "./schema.ts";
import { insertRawEvents } from "./log_store.ts";
import { ensureDaysFor, isNoPartition } from "./partitions.ts";
import { upsertOwnRollups, upsertSharedRollups } from "./rollups.ts";
import { LEVEL_RANK } from "../rules/mod.ts";
import { packSketch } from "./hll.ts";
import { enqueueAlerts } from "./alert_outbox.ts";
import { upsertQoeWindows } from "./qoe_windows.ts";
import { upsertAnomalySeries } from "./anomaly_series.ts";
import { upsertQoe, writeOpenViews } from "./qoe_store.ts";
import { parseShardKey } from "../actors/shard_key.ts";

/** Rows per raw-event statement: bounds a statement's size however many events are pending. */
const RAW_CHUNK = 5_000;

/** What a flush does besides writing the batch. */
export interface FlushOptions {
  /** Flags at or above this level rank go to the alert outbox (unset: no alerts configured). */
  alertMinRank?: number;
}

/**
 * Writes every part of the batch in one transaction. Raw rows of a day with no partition yet
 * (only when the days ahead were not created) roll it back: the partitions are made, and it runs
 * once more.
 */
export async function writeFlush(
  db: Kysely<Database>,
  batch: FlushBatch,
  options: FlushOptions = {},
): Promise<void> {
  try {
    await writeOnce(db, batch, options);
  } catch (error) {
    if (!isNoPartition(error) || batch.rawEvents.length === 0) throw error;
    await ensureDaysFor(db, batch.rawEvents.map((row) => row.atMs));
    await writeOnce(db, batch, options);
  }
}

async function writeOnce(
  db: Kysely<Database>,
  batch: FlushBatch,
  options: FlushOptions,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    for (let i = 0; i < batch.rawEvents.length; i += RAW_CHUNK) {
      await insertRawEvents(trx, batch.rawEvents.slice(i, i + RAW_CHUNK));
    }
    // First the rows that only this worker's entities touch (devices, titles' viewers, flags).
    await upsertDevices(trx, batch.devices);
    await upsertViewers(trx, batch);
    await upsertFlaggedEvents(trx, batch.flaggedEvents);
    await upsertOwnRollups(trx, batch);
    await upsertFlags(trx, batch);
    if (options.alertMinRank !== undefined) {
      // Same transaction as the flags: an alert is neither lost nor made up by a crash.
      await enqueueAlerts(trx, [...batch.flags.keys()], options.alertMinRank);
    }
    await upsertRisks(trx, batch);
    await insertOptOuts(trx, batch);
    // A user's ledger rows come only from the user's own shard, which this worker owns.
    await writeConsent(trx, batch);
    // So are a TV's open views: stored with the deltas they were counted as.
    await writeOpenViews(trx, batch);
    // Then the rows every worker adds to (counters, hourly facts, types, error codes), just before
    // the commit, so another worker's flush waits for their locks only that long: taken first,
    // they made it wait for this whole transaction (150 ms of a 300 ms flush, measured).
    await upsertCounters(trx, batch.counters);
    await upsertFacts(trx, batch.facts);
    await upsertTypes(trx, batch);
    await upsertErrorCodes(trx, batch.errorCodes);
    await upsertConsentFacts(trx, batch);
    await upsertSharedRollups(trx, batch);
    await upsertQoe(trx, batch);
    await upsertQoeWindows(trx, batch);
    await upsertAnomalySeries(trx, batch);
    await advanceCheckpoints(trx, batch);
  });
}

type Trx = Transaction<Database>;

function sorted<T>(entries: Iterable<[string, T]>): Array<[string, T]> {
  // Sorted keys: concurrent flushes of several workers then lock rows in one order (no deadlocks).
  return [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A hour key part (epoch ms as a string) as the timestamptz parameter PostgreSQL reads. */
const hours = (keys: string[]): RawBuilder<unknown> =>
  sql`${keys.map((k) => new Date(Number(k)).toISOString())}::timestamptz[]`;

async function upsertCounters(trx: Trx, counters: Map<string, number>): Promise<void> {
  if (counters.size === 0) return;
  const rows = sorted(counters.entries());
  await sql`
    insert into stat_counters (name, value)
    select * from unnest(${rows.map(([k]) => k)}::text[], ${rows.map(([, v]) => v)}::bigint[])
    on conflict (name) do update set value = stat_counters.value + excluded.value`.execute(trx);
}

const FACT_DIMS = ["content_id", "region", "platform", "app_version", "subscription_plan"];

async function upsertFacts(trx: Trx, facts: Map<string, CountDelta>): Promise<void> {
  if (facts.size === 0) return;
  const rows = sorted(facts.entries()).map(([k, d]) => [k.split(KEY_SEP), d] as const);
  const dims = FACT_DIMS.map((_, i) => sql`${rows.map(([k]) => k[i + 1])}::text[]`);
  await sql`
    insert into event_facts_hourly (hour, ${sql.join(FACT_DIMS.map((c) => sql.ref(c)))},
      events, plays, errors, watch_time_ms)
    select * from unnest(${hours(rows.map(([k]) => k[0]))}, ${sql.join(dims)},
      ${countArrays(rows.map(([, d]) => d))})
    on conflict (hour, ${sql.join(FACT_DIMS.map((c) => sql.ref(c)))}) do update set
      ${additive("event_facts_hourly")}`.execute(trx);
}

async function upsertTypes(trx: Trx, batch: FlushBatch): Promise<void> {
  if (batch.types.size === 0) return;
  const rows = sorted(batch.types.entries()).map(([k, d]) => [k.split(KEY_SEP), d] as const);
  await sql`
    insert into event_types_hourly (hour, event_type, events, late_events)
    select * from unnest(${hours(rows.map(([k]) => k[0]))}, ${rows.map(([k]) => k[1])}::text[],
      ${rows.map(([, d]) => d.events)}::bigint[], ${rows.map(([, d]) => d.lateEvents)}::bigint[])
    on conflict (hour, event_type) do update set
      events = event_types_hourly.events + excluded.events,
      late_events = event_types_hourly.late_events + excluded.late_events`.execute(trx);
}

async function upsertErrorCodes(trx: Trx, codes: Map<string, number>): Promise<void> {
  if (codes.size === 0) return;
  const rows = sorted(codes.entries()).map(([k, n]) => [k.split(KEY_SEP), n] as const);
  const dims = [...FACT_DIMS, "error_code"];
  const columns = dims.map((_, i) => sql`${rows.map(([k]) => k[i + 1])}::text[]`);
  await sql`
    insert into error_codes_hourly (hour, ${sql.join(dims.map((c) => sql.ref(c)))}, errors)
    select * from unnest(${hours(rows.map(([k]) => k[0]))}, ${sql.join(columns)},
      ${rows.map(([, n]) => n)}::bigint[])
    on conflict (hour, ${sql.join(dims.map((c) => sql.ref(c)))}) do update set
      errors = error_codes_hourly.errors + excluded.errors`.execute(trx);
}

async function upsertDevices(trx: Trx, devices: Map<string, CountDelta>): Promise<void> {
  if (devices.size === 0) return;
  const rows = sorted(devices.entries()).map(([k, d]) => [k.split(KEY_SEP), d] as const);
  await sql`
    insert into device_facts_hourly (device_id, hour, events, plays, errors, watch_time_ms)
    select * from unnest(${rows.map(([k]) => k[0])}::text[], ${hours(rows.map(([k]) => k[1]))},
      ${countArrays(rows.map(([, d]) => d))})
    on conflict (device_id, hour) do update set ${additive("device_facts_hourly")}`.execute(trx);
}

async function upsertViewers(trx: Trx, batch: FlushBatch): Promise<void> {
  if (batch.viewers.size === 0) return;
  const rows = sorted(batch.viewers.entries()).map(([k, sketch]) => {
    const sep = k.lastIndexOf(KEY_SEP);
    return [k.slice(0, sep), k.slice(sep + 1), `{${packSketch(sketch).join(",")}}`] as const;
  });
  await sql`
    insert into viewer_sketches_hourly (scope, hour, registers)
    select s, h, r::int[] from unnest(${rows.map((r) => r[0])}::text[],
      ${hours(rows.map((r) => r[1]))}, ${rows.map((r) => r[2])}::text[]) as x(s, h, r)
    on conflict (scope, hour) do update set
      registers = hll_merge(viewer_sketches_hourly.registers, excluded.registers)`.execute(trx);
}

async function upsertFlaggedEvents(trx: Trx, counts: Map<string, number>): Promise<void> {
  if (counts.size === 0) return;
  const rows = sorted(counts.entries()).map(([k, n]) => [k.split(KEY_SEP), n] as const);
  await sql`
    insert into flagged_events_hourly (hour, rule, region, flagged_events)
    select * from unnest(${hours(rows.map(([k]) => k[0]))}, ${rows.map(([k]) => k[1])}::text[],
      ${rows.map(([k]) => k[2])}::text[], ${rows.map(([, n]) => n)}::bigint[])
    on conflict (hour, rule, region) do update set
      flagged_events = flagged_events_hourly.flagged_events + excluded.flagged_events`
    .execute(trx);
}

function countArrays(deltas: CountDelta[]): RawBuilder<unknown> {
  return sql.join([
    sql`${deltas.map((d) => d.events)}::bigint[]`,
    sql`${deltas.map((d) => d.plays)}::bigint[]`,
    sql`${deltas.map((d) => d.errors)}::bigint[]`,
    sql`${deltas.map((d) => d.watchTimeMs)}::bigint[]`,
  ]);
}

function additive(table: string): RawBuilder<unknown> {
  return sql.join(
    ["events", "plays", "errors", "watch_time_ms"].map((c) =>
      sql`${sql.ref(c)} = ${sql.ref(`${table}.${c}`)} + excluded.${sql.ref(c)}`
    ),
  );
}

async function upsertFlags(trx: Trx, batch: FlushBatch): Promise<void> {
  if (batch.flags.size === 0) return;
  const flags = sorted(batch.flags.entries()).map(([, f]) => f);
  const col = <T>(pick: (f: typeof flags[number]) => T) => flags.map(pick);
  // Before the upsert, with the rows locked (in key order) so they cannot change in between: an
  // escalation keeps the evidence and level it replaces in flag_history, and re-opens a flag a
  // person dismissed or resolved (a higher level is new information they have not seen).
  await sql`
    with old as materialized (
      select r.id, r.level, r.level_rank, r.evidence, r.status, r.assignee, f.level as new_level,
        f.level_rank as new_rank
      from risk_flags r join unnest(${col((f) => f.flagKey)}::text[],
        ${col((f) => f.level)}::text[], ${col((f) => LEVEL_RANK[f.level])}::smallint[])
        as f(flag_key, level, level_rank) on r.flag_key = f.flag_key
      order by r.flag_key for update of r)
    insert into flag_history (flag_id, at, actor_name, actor_role, from_status, to_status, reason,
      assignee, evidence, level)
    select id, now(), 'pipeline', 'pipeline', status,
      case when status in ('dismissed', 'resolved') then 'open' else status end,
      'escalated to ' || new_level, assignee, evidence, level
    from old where new_rank > level_rank order by id`.execute(trx);
  // A flag seen again adds its events; the evidence (and reason) is the latest snapshot at the same
  // or a higher level, and a higher level also replaces the level and counts a revision.
  await sql`
    insert into risk_flags (flag_key, rule, rule_version, level, level_rank, entity_type, entity_id,
      event_id, user_id, region, is_eu, occurred_at, reason, evidence, flagged_events)
    select f.flag_key, f.rule, f.rule_version, f.level, f.level_rank, f.entity_type, f.entity_id,
      f.event_id, f.user_id, f.region, f.is_eu, to_timestamp(f.at_ms / 1000.0), f.reason,
      f.evidence::jsonb, f.flagged_events
    from unnest(${col((f) => f.flagKey)}::text[], ${col((f) => f.rule)}::text[],
      ${col((f) => f.ruleVersion)}::int[], ${col((f) => f.level)}::text[],
      ${col((f) => LEVEL_RANK[f.level])}::smallint[], ${col((f) => f.entityType)}::text[],
      ${col((f) => f.entityId)}::text[], ${col((f) => f.eventId)}::text[],
      ${col((f) => f.userId)}::text[], ${col((f) => f.region)}::text[],
      ${col((f) => f.isEu)}::boolean[], ${col((f) => f.atMs)}::float8[],
      ${col((f) => f.reason)}::text[], ${col((f) => JSON.stringify(f.evidence))}::text[],
      ${col((f) => f.flaggedEventCount)}::bigint[])
      as f(flag_key, rule, rule_version, level, level_rank, entity_type, entity_id, event_id,
        user_id, region, is_eu, at_ms, reason, evidence, flagged_events)
    on conflict (flag_key) do update set
      flagged_events = risk_flags.flagged_events + excluded.flagged_events,
      level = case when excluded.level_rank > risk_flags.level_rank
        then excluded.level else risk_flags.level end,
      reason = case when excluded.level_rank >= risk_flags.level_rank
        then excluded.reason else risk_flags.reason end,
      evidence = case when excluded.level_rank >= risk_flags.level_rank
        then excluded.evidence else risk_flags.evidence end,
      revision = risk_flags.revision
        + case when excluded.level_rank > risk_flags.level_rank then 1 else 0 end,
      status = case when excluded.level_rank > risk_flags.level_rank
        and risk_flags.status in ('dismissed', 'resolved') then 'open' else risk_flags.status end,
      level_rank = greatest(risk_flags.level_rank, excluded.level_rank),
      updated_at = now()`.execute(trx);
}

async function upsertRisks(trx: Trx, batch: FlushBatch): Promise<void> {
  if (batch.risks.size === 0) return;
  const risks = sorted(batch.risks.entries()).map(([, r]) => r);
  await sql`
    insert into entity_risk (entity_type, entity_id, level, level_rank, flag_count)
    select * from unnest(${risks.map((r) => r.entityType)}::text[],
      ${risks.map((r) => r.entityId)}::text[], ${risks.map((r) => r.level)}::text[],
      ${risks.map((r) => LEVEL_RANK[r.level])}::smallint[], ${
    risks.map((r) => r.flagCount)
  }::bigint[])
    on conflict (entity_type, entity_id) do update set
      level = case when excluded.level_rank > entity_risk.level_rank
        then excluded.level else entity_risk.level end,
      level_rank = greatest(entity_risk.level_rank, excluded.level_rank),
      flag_count = entity_risk.flag_count + excluded.flag_count,
      updated_at = now()`.execute(trx);
}

async function insertOptOuts(trx: Trx, batch: FlushBatch): Promise<void> {
  if (batch.optOuts.length === 0) return;
  const rows = batch.optOuts;
  // A do-not-track from a TV waits for review (received); a GPP opt-out of sale and sharing is
  // recorded as it stands, like the API's, and no later string withdraws it.
  await sql`
    insert into privacy_requests (user_id, request_type, source, requested_at, status,
      jurisdiction, due_at, completed_at, result)
    select u, t, src, to_timestamp(at_ms / 1000.0),
      case when src = 'gpp' then 'completed' else 'received' end,
      case when src = 'gpp' then 'ccpa' end,
      case when src = 'gpp' then to_timestamp(at_ms / 1000.0) end,
      case when src = 'gpp' then now() end,
      case when src = 'gpp' then '{"recorded": true}'::jsonb end
    from unnest(${rows.map((r) => r.userId)}::text[], ${rows.map((r) => r.type)}::text[],
      ${rows.map((r) => r.sinceMs)}::float8[], ${rows.map((r) => r.source ?? "event")}::text[])
      as o(u, t, at_ms, src)
    on conflict (user_id, request_type) where request_type <> 'access' do nothing`.execute(trx);
}

/** The ledger columns of proposed rows, as unnest arrays (kind aside). */
function ledgerColumns(rows: readonly ConsentLedgerRow[]): RawBuilder<unknown> {
  const col = <T>(pick: (r: ConsentLedgerRow) => T) => rows.map(pick);
  return sql`unnest(${col((r) => r.userId)}::text[], ${col((r) => r.atMs)}::float8[],
    ${col((r) => r.eventId)}::text[], ${col((r) => r.receivedAtMs)}::float8[],
    ${col((r) => r.region)}::text[], ${col((r) => r.state)}::int[], ${col((r) => r.source)}::text[],
    ${col((r) => r.purposes)}::int[], ${col((r) => r.vendorConsent)}::boolean[],
    ${col((r) => r.hasConsent)}::boolean[], ${col((r) => r.isDecoded)}::boolean[],
    ${col((r) => r.isOptOutSaleShare)}::boolean[], ${col((r) => r.cmpId)}::int[],
    ${col((r) => r.cmpVersion)}::int[], ${col((r) => r.policyVersion)}::int[],
    ${col((r) => r.stringHash)}::text[])
    as c(user_id, at_ms, event_id, received_ms, region, state, source, purposes, vendor_consent,
      has_consent, is_decoded, opt_out_sale_share, cmp_id, cmp_version, policy_version, string_hash)`;
}

const LEDGER_COLUMNS = sql`user_id, occurred_at, event_id, received_at, region, state, source,
  purposes, vendor_consent, has_consent, is_decoded, opt_out_sale_share, cmp_id, cmp_version,
  policy_version, string_hash`;

const LEDGER_VALUES = sql`c.user_id, to_timestamp(c.at_ms / 1000.0), c.event_id,
  to_timestamp(c.received_ms / 1000.0), c.region, c.state, c.source, c.purposes, c.vendor_consent,
  c.has_consent, c.is_decoded, c.opt_out_sale_share, c.cmp_id, c.cmp_version, c.policy_version,
  c.string_hash`;

/**
 * Writes the consent ledger rows the actors proposed (see {@link ConsentLedgerRow}), keyed by user,
 * event time and event id so a replay adds nothing twice; then marks users seen; then counts.
 */
async function writeConsent(trx: Trx, batch: FlushBatch): Promise<void> {
  const ofKind = (kind: ConsentLedgerRow["kind"]) =>
    batch.consentLedger.filter((r) => r.kind === kind);
  const changes = ofKind("change");
  if (changes.length > 0) {
    await sql`insert into consent_ledger (${LEDGER_COLUMNS})
      select ${LEDGER_VALUES} from ${ledgerColumns(changes)}
      on conflict do nothing`.execute(trx);
  }
  const checked = ofKind("checked");
  if (checked.length > 0) {
    // Only where the ledger holds another state (or none) just before it.
    await sql`insert into consent_ledger (${LEDGER_COLUMNS})
      select ${LEDGER_VALUES} from ${ledgerColumns(checked)}
      where c.state is distinct from (select l.state from consent_ledger l
        where l.user_id = c.user_id
          and (l.occurred_at, l.event_id) < (to_timestamp(c.at_ms / 1000.0), c.event_id)
        order by l.occurred_at desc, l.event_id desc limit 1)
      on conflict do nothing`.execute(trx);
  }
  const carried = ofKind("carried");
  if (carried.length > 0) {
    // The proof of a carried state is the row that introduced it.
    await sql`insert into consent_ledger (${LEDGER_COLUMNS}, is_carried)
      select c.user_id, to_timestamp(c.at_ms / 1000.0), c.event_id,
        to_timestamp(c.received_ms / 1000.0), p.region, p.state, p.source, p.purposes,
        p.vendor_consent, p.has_consent, p.is_decoded, p.opt_out_sale_share, p.cmp_id,
        p.cmp_version, p.policy_version, p.string_hash, true
      from ${ledgerColumns(carried)}
      cross join lateral (select * from consent_ledger l
        where l.user_id = c.user_id and l.state = c.state
          and l.occurred_at <= to_timestamp(c.at_ms / 1000.0)
        order by l.occurred_at desc, l.event_id desc limit 1) p
      on conflict do nothing`.execute(trx);
  }
  if (batch.consentSeen.size > 0) {
    const seen = sorted(batch.consentSeen.entries());
    await sql`with s as (
        select * from unnest(${seen.map(([u]) => u)}::text[], ${seen.map(([, t]) => t)}::float8[])
          as s(user_id, at_ms)),
      target as (
        select distinct on (s.user_id) l.user_id, l.occurred_at, l.event_id,
          to_timestamp(s.at_ms / 1000.0) as at
        from s join consent_ledger l on l.user_id = s.user_id
          and l.occurred_at <= to_timestamp(s.at_ms / 1000.0)
        order by s.user_id, l.occurred_at desc, l.event_id desc)
      update consent_ledger l set seen_until = greatest(coalesce(l.seen_until, l.occurred_at), t.at)
      from target t
      where l.user_id = t.user_id and l.occurred_at = t.occurred_at and l.event_id = t.event_id`
      .execute(trx);
  }
}

async function upsertConsentFacts(trx: Trx, batch: FlushBatch): Promise<void> {
  if (batch.consentFacts.size === 0) return;
  const rows = sorted(batch.consentFacts.entries()).map(([k, d]) => [k.split(KEY_SEP), d] as const);
  await sql`
    insert into consent_facts_hourly (hour, region, events, signal_events)
    select * from unnest(${hours(rows.map(([k]) => k[0]))}, ${rows.map(([k]) => k[1])}::text[],
      ${rows.map(([, d]) => d.events)}::bigint[], ${rows.map(([, d]) => d.signalEvents)}::bigint[])
    on conflict (hour, region) do update set
      events = consent_facts_hourly.events + excluded.events,
      signal_events = consent_facts_hourly.signal_events + excluded.signal_events`.execute(trx);
}

async function advanceCheckpoints(trx: Trx, batch: FlushBatch): Promise<void> {
  if (batch.checkpoints.size === 0) return;
  const rows = sorted(batch.checkpoints.entries()).map(([key, position]) => {
    const { entityType: family, shard } = parseShardKey(key);
    return { key, family, shard, position, epoch: batch.epochs.get(key) ?? -1 };
  });
  // Fencing: only the current owner (same epoch) may move a checkpoint. A stale owner (a worker
  // declared dead, a paused node) updates fewer rows and its whole transaction rolls back.
  const result = await sql<{ family: string }>`
    update shard_checkpoints c set position = greatest(c.position, u.position), updated_at = now()
    from unnest(${rows.map((r) => r.family)}::text[], ${rows.map((r) => r.shard)}::int[],
      ${rows.map((r) => r.position)}::bigint[], ${rows.map((r) => r.epoch)}::bigint[])
      as u(family, shard, position, epoch)
    where c.family = u.family and c.shard = u.shard and c.epoch = u.epoch
    returning c.family`.execute(trx);
  if (result.rows.length !== rows.length) {
    throw new FencedError(
      `Cannot commit flush: ${rows.length - result.rows.length} of ${rows.length} shards ` +
        `are owned by a newer epoch`,
    );
  }
}

/** A flush was rejected because another owner took over one of its shards. */
export class FencedError extends Error {
  override name = "FencedError";
}
