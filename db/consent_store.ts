/**
 * Reading the consent ledger: a user's changes in event-time order and the state at any time, the
 * per-region summary of who grants which purpose, and its retention. Rows are written by the
 * workers' flushes (`db/flush.ts`); a read collapses consecutive rows of one state (a carried or
 * re-checked row repeats the state before it), so what it shows are changes.
 *
 * @module
 */
import { type Kysely, type Selectable, sql } from "kysely";
import { MAX_PURPOSE_ID, purposeNames, PURPOSES } from "../rules/consent.ts";
import type { ConsentLedgerTable, Database } from "./schema.ts";
import type { TimeRange } from "./stats_queries.ts";
import { rollupRows } from "./rollup_reads.ts";

type Db = Kysely<Database>;

const DAY_MS = 86_400_000;

/** One consent state as the API shows it, with the proof it was recorded with. */
export interface ConsentStateView {
  /** Event time of the event that showed this state. */
  at: string;
  received_at: string;
  /** The event that showed the state; null for a carried state (see `carried`). */
  event_id: string | null;
  /**
   * True when the row repeats the user's latest state after an older event of another state was
   * recorded late: the proof is that of the row that introduced the state.
   */
  carried: boolean;
  region: string;
  /** `tcf`, `gpp`, `purposes`, or `has_consent` (no signal: the event's boolean). */
  source: string;
  /** Purposes consented to, by name (see `PURPOSES`). */
  purposes: string[];
  /** What the privacy rule decided: the needed purposes are granted (and the vendor, if set). */
  has_consent: boolean;
  vendor_consent: boolean | null;
  opt_out_sale_share: boolean;
  /** False when the string did not decode (it then grants nothing). */
  decoded: boolean;
  cmp_id: number | null;
  cmp_version: number | null;
  policy_version: number | null;
  /** SHA-256 of the string the state was read from (first 32 hex digits); the string is not kept. */
  string_sha256: string | null;
}

/** Most ledger rows one user's history reads. */
export const MAX_LEDGER_ROWS = 1_000;

type LedgerRow = Selectable<ConsentLedgerTable>;

function toView(r: LedgerRow): ConsentStateView {
  return {
    at: new Date(r.occurred_at).toISOString(),
    received_at: new Date(r.received_at).toISOString(),
    event_id: r.is_carried ? null : r.event_id,
    carried: r.is_carried,
    region: r.region,
    source: r.source,
    purposes: purposeNames(r.purposes),
    has_consent: r.has_consent,
    vendor_consent: r.vendor_consent,
    opt_out_sale_share: r.opt_out_sale_share,
    decoded: r.is_decoded,
    cmp_id: r.cmp_id,
    cmp_version: r.cmp_version,
    policy_version: r.policy_version,
    string_sha256: r.string_hash,
  };
}

/**
 * A user's consent changes in event-time order (at most {@link MAX_LEDGER_ROWS} rows read), the
 * current state, and with `atMs` the state in force at that event time (null before the first).
 */
export async function consentLedgerOf(
  db: Db,
  userId: string,
  atMs?: number,
): Promise<{
  changes: ConsentStateView[];
  current: ConsentStateView | null;
  stateAt: ConsentStateView | null;
  isTruncated: boolean;
}> {
  // At one event time a real event's row comes before a carried one, so a change names the event.
  const rows = await db.selectFrom("consent_ledger").selectAll().where("user_id", "=", userId)
    .orderBy("occurred_at").orderBy("is_carried").orderBy("event_id").limit(MAX_LEDGER_ROWS + 1)
    .execute();
  const isTruncated = rows.length > MAX_LEDGER_ROWS;
  const changes: ConsentStateView[] = [];
  let previous: number | null = null;
  let stateAt: ConsentStateView | null = null;
  for (const row of rows.slice(0, MAX_LEDGER_ROWS)) {
    if (row.state === previous) continue;
    previous = row.state;
    const view = toView(row);
    changes.push(view);
    if (atMs !== undefined && new Date(row.occurred_at).getTime() <= atMs) stateAt = view;
  }
  return { changes, current: changes.at(-1) ?? null, stateAt, isTruncated };
}

/** Users by region: how many were seen in a range, and how many granted each purpose. */
export interface ConsentRegionSummary {
  region: string;
  /** Users whose ledger state held at some time in the range (each counted once). */
  users: number;
  /** Share of those users whose latest state in the range grants consent as the rule decides it. */
  consent_share: number | null;
  /** Per purpose name: users whose latest state in the range grants it, and their share. */
  purposes: Record<string, { users: number; share: number | null }>;
  events: number;
  /** Events that carried a consent signal (TCF, GPP or purposes), and their share. */
  signal_events: number;
  signal_share: number | null;
}

/**
 * Per region: the share of users whose latest consent state in the range grants each purpose (and
 * consent as the privacy rule decides it), and the share of events that carried a signal.
 */
export async function consentSummary(db: Db, range: TimeRange): Promise<ConsentRegionSummary[]> {
  const from = range.fromMs === undefined ? null : new Date(range.fromMs).toISOString();
  const to = range.toMs === undefined ? null : new Date(range.toMs).toISOString();
  const purposeCounts = Array.from(
    { length: MAX_PURPOSE_ID },
    (_, i) => sql`count(*) filter (where purposes & ${1 << i} <> 0)`.as(`p${i + 1}`),
  );
  const users = await sql<Record<string, number | string>>`
    with latest as (
      select distinct on (user_id) user_id, region, purposes, has_consent
      from consent_ledger
      where (${to}::timestamptz is null or occurred_at < ${to}::timestamptz)
        and (${from}::timestamptz is null
          or greatest(occurred_at, coalesce(seen_until, occurred_at)) >= ${from}::timestamptz)
      order by user_id, occurred_at desc, event_id desc)
    select region, count(*) as users, count(*) filter (where has_consent) as consenting,
      ${sql.join(purposeCounts)}
    from latest group by region`.execute(db);
  const events = await sql<
    { region: string; events: number | string; signal_events: number | string }
  >`
    select region, sum(events) as events, sum(signal_events) as signal_events
    from ${rollupRows("consent_facts", sql`region, events, signal_events`, range)} as r
    group by region`.execute(db);
  const byRegion = new Map<string, ConsentRegionSummary>();
  const share = (n: number, of: number) => (of === 0 ? null : n / of);
  const entry = (region: string): ConsentRegionSummary => {
    let summary = byRegion.get(region);
    if (summary === undefined) {
      summary = {
        region,
        users: 0,
        consent_share: null,
        purposes: {},
        events: 0,
        signal_events: 0,
        signal_share: null,
      };
      byRegion.set(region, summary);
    }
    return summary;
  };
  for (const row of users.rows) {
    const summary = entry(String(row.region));
    summary.users = Number(row.users);
    summary.consent_share = share(Number(row.consenting), summary.users);
    for (let id = 1; id <= MAX_PURPOSE_ID; id++) {
      const granting = Number(row[`p${id}`]);
      summary.purposes[PURPOSES[id]] = { users: granting, share: share(granting, summary.users) };
    }
  }
  for (const row of events.rows) {
    const summary = entry(row.region);
    summary.events = Number(row.events);
    summary.signal_events = Number(row.signal_events);
    summary.signal_share = share(summary.signal_events, summary.events);
  }
  return [...byRegion.values()].sort((a, b) => (a.region < b.region ? -1 : 1));
}

/**
 * Deletes ledger rows whose state was last seen more than `retentionDays` before `nowMs`: a state
 * still seen keeps its row however old its change, so the proof of a consent in force stays.
 */
export async function pruneConsentLedger(
  db: Db,
  nowMs: number,
  retentionDays: number,
  batchSize = 5_000,
): Promise<number> {
  const cutoff = new Date(nowMs - retentionDays * DAY_MS).toISOString();
  const result = await sql`delete from consent_ledger where ctid in (
      select ctid from consent_ledger
      where greatest(occurred_at, coalesce(seen_until, occurred_at)) < ${cutoff}::timestamptz
      limit ${batchSize})`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
