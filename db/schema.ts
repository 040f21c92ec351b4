/**
 * Kysely table types: the one place the database's shape is written down for the type checker.
 * Counters are `bigint` columns; drivers return them as strings (pg) or numbers (PGlite), so every
 * read normalises with `Number()`.
 *
 * @module
 */
import type { ColumnType, Generated } from "kysely";

type BigCount = ColumnType<number | string, number, number>;
type Timestamp = ColumnType<Date | string, string, string>;

/** Every table of the pipeline. */
export interface Database {
  raw_events: RawEventsTable;
  /** All-time counters that are not about event time: `duplicate_events`. */
  stat_counters: { name: string; value: BigCount };
  event_facts_hourly: CountsTable & FactDimsColumns & { hour: Timestamp };
  event_types_hourly: {
    hour: Timestamp;
    event_type: string;
    events: BigCount;
    late_events: BigCount;
  };
  error_codes_hourly: FactDimsColumns & { hour: Timestamp; error_code: string; errors: BigCount };
  device_facts_hourly: CountsTable & { device_id: string; hour: Timestamp };
  viewer_sketches_hourly: { scope: string; hour: Timestamp; registers: number[] };
  flagged_events_hourly: {
    hour: Timestamp;
    rule: string;
    region: string;
    flagged_events: BigCount;
  };
  risk_flags: RiskFlagsTable;
  flag_history: FlagHistoryTable;
  entity_risk: EntityRiskTable;
  privacy_requests: PrivacyRequestsTable;
  erased_subjects: ErasedSubjectsTable;
  erased_events: ErasedEventsTable;
  app_secrets: AppSecretsTable;
  alert_outbox: AlertOutboxTable;
  shard_checkpoints: ShardCheckpointsTable;
  audit_log: AuditLogTable;
  consent_ledger: ConsentLedgerTable;
  /** The first bucket each level of aggregates still holds, once retention deleted older ones. */
  aggregate_horizons: { level: string; first_held: Timestamp };
  /** Rule and level weights of risk scores, written at start (the score triggers read them). */
  risk_weights: { kind: string; name: string; weight: number };
  /** One risk row per flagged entity, kept by triggers on `risk_flags` (see risk_queries.ts). */
  entity_scores: {
    entity_type: string;
    entity_id: string;
    weighted: number;
    open_flags: number;
    flags_by_rule: unknown;
    flags_by_status: unknown;
    first_flag_at: Timestamp;
    last_flag_at: Timestamp;
  };
  // Daily twins of the hourly tables and narrow rollups (see db/rollups.ts): each row is the sum
  // of the hourly rows it covers.
  event_facts_daily: CountsTable & FactDimsColumns & { day: Timestamp };
  event_types_daily: {
    day: Timestamp;
    event_type: string;
    events: BigCount;
    late_events: BigCount;
  };
  error_codes_daily: FactDimsColumns & { day: Timestamp; error_code: string; errors: BigCount };
  device_facts_daily: CountsTable & { device_id: string; day: Timestamp };
  viewer_sketches_daily: { scope: string; day: Timestamp; registers: number[] };
  flagged_events_daily: { day: Timestamp; rule: string; region: string; flagged_events: BigCount };
  consent_facts_daily: {
    day: Timestamp;
    region: string;
    events: BigCount;
    signal_events: BigCount;
  };
  totals_hourly: CountsTable & { hour: Timestamp };
  totals_daily: CountsTable & { day: Timestamp };
  content_region_hourly: CountsTable & { hour: Timestamp; content_id: string; region: string };
  content_region_daily: CountsTable & { day: Timestamp; content_id: string; region: string };
  audience_hourly: CountsTable & AudienceColumns & { hour: Timestamp };
  audience_daily: CountsTable & AudienceColumns & { day: Timestamp };
  region_error_codes_hourly: {
    hour: Timestamp;
    region: string;
    error_code: string;
    errors: BigCount;
  };
  region_error_codes_daily: {
    day: Timestamp;
    region: string;
    error_code: string;
    errors: BigCount;
  };
  /** Events and events that carried a consent signal, per UTC hour of event time and region. */
  consent_facts_hourly: {
    hour: Timestamp;
    region: string;
    events: BigCount;
    signal_events: BigCount;
  };
}

/**
 * One row per change of a user's consent state, in event-time order, with the proof the signal
 * carried (CMP, policy version, a hash of the string; the string itself is never kept).
 */
export interface ConsentLedgerTable {
  user_id: string;
  occurred_at: Timestamp;
  event_id: string;
  received_at: Timestamp;
  region: string;
  /** The state packed as `consentStateCode` does: equal codes are the same state. */
  state: number;
  source: string;
  /** Purposes consented to, bit `id - 1` for TCF purpose `id`. */
  purposes: number;
  vendor_consent: boolean | null;
  has_consent: boolean;
  is_decoded: boolean;
  opt_out_sale_share: boolean;
  cmp_id: number | null;
  cmp_version: number | null;
  policy_version: number | null;
  string_hash: string | null;
  /** Latest event time the user was seen in this state (hourly), for the consent summary. */
  seen_until: ColumnType<Date | string | null, string | null | undefined, string | null>;
  /**
   * The user's latest state recorded again after an older event of another state arrived: its
   * proof is copied from the row that introduced the state, and its event id is made up.
   */
  is_carried: Generated<boolean>;
}

/** The dimensions an hourly fact is keyed by; `unknown` when a TV did not report one. */
export interface FactDimsColumns {
  content_id: string;
  region: string;
  platform: string;
  app_version: string;
  subscription_plan: string;
}

/** The dimensions of the audience rollups: a fact's, without the title. */
export interface AudienceColumns {
  region: string;
  platform: string;
  app_version: string;
  subscription_plan: string;
}

/** Additive counters shared by the aggregate tables. */
export interface CountsTable {
  events: BigCount;
  plays: BigCount;
  errors: BigCount;
  watch_time_ms: BigCount;
}

/** Accepted events; the IP only as keyed hash and truncated prefix. */
export interface RawEventsTable {
  event_id: string;
  position: BigCount;
  user_id: string;
  device_id: string;
  content_id: string;
  event_type: string;
  occurred_at: Timestamp;
  received_at: Timestamp;
  region: string;
  is_eu: boolean;
  client_is_eu: boolean | null;
  subscription_plan: string | null;
  has_consent: boolean;
  ip_hash: string;
  ip_prefix: string;
  error_code: string | null;
  do_not_track: boolean;
  is_late: boolean;
  /** `extra_metadata.platform` and `.app_version` when text, stored apart (null otherwise). */
  platform: string | null;
  app_version: string | null;
  /** The other metadata keys, null when there are none. */
  extra_metadata: unknown | null;
  /** The decoded consent signal as JSON (`ConsentSignal`), null when none was sent. */
  consent: ColumnType<unknown | null, unknown | null | undefined, unknown | null>;
  /** The optional fields of `rules/fields.ts`, null when not sent. */
  view_id: ColumnType<string | null, string | null | undefined, string | null>;
  playhead_ms: ColumnType<number | null, number | null | undefined, number | null>;
  bitrate_kbps: ColumnType<number | null, number | null | undefined, number | null>;
  rendition_height: ColumnType<number | null, number | null | undefined, number | null>;
  player_height: ColumnType<number | null, number | null | undefined, number | null>;
  fatal: ColumnType<boolean | null, boolean | null | undefined, boolean | null>;
  cdn: ColumnType<string | null, string | null | undefined, string | null>;
}

/** Risk flags with their evidence, one row per flag key. */
export interface RiskFlagsTable {
  id: ColumnType<number | string, never, never>;
  flag_key: string;
  rule: string;
  rule_version: number;
  level: string;
  level_rank: number;
  entity_type: string;
  entity_id: string;
  event_id: string;
  user_id: string;
  region: string;
  is_eu: boolean;
  occurred_at: Timestamp;
  reason: string;
  evidence: unknown;
  flagged_events: BigCount;
  raised_at: Timestamp;
  updated_at: Timestamp;
  /** Review status: open, acknowledged, escalated, dismissed or resolved. */
  status: Generated<string>;
  assignee: string | null;
  /** Evidence snapshots so far: 1 when raised, one more per escalation to a higher level. */
  revision: Generated<number>;
}

/** Review decisions and escalations of a flag, oldest first by id; an escalation keeps the evidence
 * and level it replaced. */
export interface FlagHistoryTable {
  id: ColumnType<number | string, never, never>;
  flag_id: number | string;
  at: ColumnType<Date | string, string | undefined, string>;
  actor_name: string;
  actor_role: string;
  from_status: string;
  to_status: string;
  reason: string | null;
  assignee: string | null;
  evidence: unknown | null;
  level: string | null;
}

/** Highest risk level reached by each user, content or device. */
export interface EntityRiskTable {
  entity_type: string;
  entity_id: string;
  level: string;
  level_rank: number;
  flag_count: BigCount;
  updated_at: Timestamp;
}

/**
 * Privacy requests on record (API and do-not-track events). After a deletion completes, `user_id`
 * holds the user's pseudonym, never the id.
 */
export interface PrivacyRequestsTable {
  id: ColumnType<number | string, never, never>;
  user_id: string;
  request_type: string;
  source: string;
  requested_at: Timestamp;
  status: Generated<string>;
  jurisdiction: string | null;
  due_at: Timestamp | null;
  completed_at: Timestamp | null;
  result: unknown | null;
  /** A deletion's user id while its erasure runs (the record names the pseudonym); then null. */
  erasing_user_id: string | null;
}

/** Users whose data was erased, by keyed hash; later events from them carry the pseudonym. */
export interface ErasedSubjectsTable {
  subject_hash: string;
  pseudonym: string;
  erased_at: Timestamp;
}

/** md5 of erased event ids, kept for `MAX_EVENT_AGE_MS` so a retry counts as a duplicate. */
export interface ErasedEventsTable {
  event_hash: string;
  erased_at: Timestamp;
}

/** Keys the database keeps for itself (the pseudonym key when none is configured). */
export interface AppSecretsTable {
  name: string;
  value: string;
}

/** Last log position each shard applied and flushed, and the owner epoch that wrote it. */
export interface ShardCheckpointsTable {
  family: string;
  shard: number;
  position: BigCount;
  epoch: BigCount;
  updated_at: Timestamp;
}

/** Who did what to compliance and privacy data, and every refused request (folded per minute). */
export interface AuditLogTable {
  id: ColumnType<number | string, never, never>;
  at: Timestamp;
  request_id: string;
  actor_name: string;
  actor_role: string;
  method: string;
  path: string;
  query: string;
  status: number;
  subject_user_id: string | null;
  source: string;
  count: ColumnType<number, number | undefined, number>;
  /** Digest of minute, source, path, status and actor for refusals; null (never folded) otherwise. */
  fold_key: string | null;
}

/** Alerts to deliver: one row per flag id and revision, written in the flush that raised it. */
export interface AlertOutboxTable {
  id: ColumnType<number | string, never, never>;
  flag_id: BigCount;
  revision: number;
  created_at: ColumnType<Date | string, string | undefined, string>;
  next_attempt_at: ColumnType<Date | string, string | undefined, string>;
  attempts: ColumnType<number, number | undefined, number>;
  delivered_at: Timestamp | null;
  last_error: string | null;
}
