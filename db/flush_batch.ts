/**
 * The unit of work a worker hands to the database: additive deltas, new flags, raw events and shard
 * checkpoints, all plain data so it can cross `postMessage` to the database owner unchanged.
 *
 * @module
 */
import type { ConsentSignal, ConsentSource, Flag, Level, OptOutType } from "../rules/mod.ts";
import type { OptionalFields } from "../rules/fields.ts";
import type { SparseSketch } from "./hll.ts";

/** Additive counters of one key (a fact row or a device hour). */
export interface CountDelta {
  events: number;
  plays: number;
  errors: number;
  watchTimeMs: number;
}

/** One raw event as stored: the IP only as keyed hash and truncated prefix. */
export interface RawEventRow {
  /** Log position; absent when the log's positions are per stream (redis), so a sequence assigns one. */
  position?: number;
  eventId: string;
  userId: string;
  deviceId: string;
  contentId: string;
  type: string;
  atMs: number;
  receivedAtMs: number;
  region: string;
  isEu: boolean;
  clientIsEu: boolean | null;
  subscriptionPlan: string | null;
  hasConsent: boolean;
  ipHash: string;
  ipPrefix: string;
  errorCode: string | null;
  doNotTrack: boolean;
  isLate: boolean;
  metadata: Record<string, unknown>;
  /** The decoded consent signal, when the event carried one. */
  consent?: ConsentSignal | null;
  /** The optional fields (`rules/fields.ts`) the event carried. */
  fields?: OptionalFields;
}

/** What one view of a TV was counted as (`open_views`, one row per view); null deletes the row. */
export interface OpenViewsRow {
  shard: number;
  userId: string;
  deviceId: string;
  viewKey: string;
  /** The view tracker's stored outcome, as JSON (see `actors/view_tracker.ts`). */
  outcome: unknown[] | null;
}

/** Highest level and number of flags raised for one entity during the batch. */
export interface RiskDelta {
  entityType: string;
  entityId: string;
  level: Level;
  flagCount: number;
}

/**
 * A privacy request carried by an event: do-not-track (`do_not_track: true`, source `event`), or an
 * opt-out of sale and sharing a GPP string says (source `gpp`).
 */
export interface OptOutRow {
  userId: string;
  type: OptOutType | "opt_out_sale_share";
  sinceMs: number;
  source?: "event" | "gpp";
}

/**
 * A consent ledger row a user actor proposes. `change`: the state differs from the user's previous
 * event by event time, as the actor saw it; `checked`: the actor cannot tell (first event since
 * the user was loaded, or an event older than the user's latest), so the flush inserts it only
 * when the ledger holds another state at its time; `carried`: the user's latest state again, at
 * its time, after an older event of another state was recorded (proof copied from the row that
 * introduced that state).
 */
export interface ConsentLedgerRow {
  kind: "change" | "checked" | "carried";
  userId: string;
  atMs: number;
  eventId: string;
  receivedAtMs: number;
  region: string;
  /** `consentStateCode` of the state. */
  state: number;
  source: ConsentSource;
  purposes: number;
  vendorConsent: boolean | null;
  hasConsent: boolean;
  isDecoded: boolean;
  isOptOutSaleShare: boolean;
  cmpId: number | null;
  cmpVersion: number | null;
  policyVersion: number | null;
  stringHash: string | null;
}

/** Events, and events that carried a consent signal, of one hour and region. */
export interface ConsentFactDelta {
  events: number;
  signalEvents: number;
}

/** Events and late events of one event type in one hour. */
export interface TypeDelta {
  events: number;
  lateEvents: number;
}

/**
 * Everything one flush writes, in one transaction. Aggregates are keyed by the UTC hour of event
 * time (`hourMs`, epoch ms of the hour's start) and their dimensions, joined with {@link KEY_SEP}.
 */
export interface FlushBatch {
  rawEvents: RawEventRow[];
  /** All-time named counters: `duplicate_events`. */
  counters: Map<string, number>;
  /** Keyed by {@link factKey}: hour, content, region, platform, app version, plan. */
  facts: Map<string, CountDelta>;
  /** Keyed by `hourMs + SEP + event_type`. */
  types: Map<string, TypeDelta>;
  /** Keyed by `factKey + SEP + error_code`; errors of ERROR events only. */
  errorCodes: Map<string, number>;
  /** Keyed by `device_id + SEP + hourMs`. */
  devices: Map<string, CountDelta>;
  /** Unique-viewer sketches keyed by `scope + SEP + hourMs`; scope "" (all), `c:<id>`, `r:<region>`. */
  viewers: Map<string, SparseSketch>;
  /** Flagged events keyed by `hourMs + SEP + rule + SEP + region`. */
  flaggedEvents: Map<string, number>;
  flags: Map<string, Flag>;
  risks: Map<string, RiskDelta>;
  optOuts: OptOutRow[];
  /** Consent ledger rows proposed, in the order the events were applied. */
  consentLedger: ConsentLedgerRow[];
  /** Users seen (hourly) with the latest event time: marks how long a ledger state held. */
  consentSeen: Map<string, number>;
  /** Keyed by `hourMs + SEP + region`. */
  consentFacts: Map<string, ConsentFactDelta>;
  /**
   * QoE deltas keyed by `qoeKey` (hour the view started and its dimensions), one number per
   * measure of `QOE` in `rules/qoe.ts`; a retracted view subtracts what it added.
   */
  qoe: Map<string, number[]>;
  /** Startup histogram deltas keyed by `qoeKey + SEP + bucket`. */
  qoeStartup: Map<string, number>;
  /**
   * The `qoe` rule's window deltas keyed by `window start ms + SEP + content + SEP + cdn + SEP +
   * region`, one number per measure of `WINDOW_MEASURES` in `rules/qoe_rule.ts`.
   */
  qoeWindows: Map<string, number[]>;
  /** Troubled views (evidence) keyed like `qoeWindows`, at most 10 each. */
  qoeWindowViews: Map<string, string[]>;
  /**
   * Anomaly series deltas (`db/anomaly_series.ts`) keyed by `window start ms + SEP + platform + SEP
   * + region + SEP + app version + SEP + plan`, one number per `CUBE_MEASURES`.
   */
  anomalyCube: Map<string, number[]>;
  /**
   * Anomaly series deltas keyed by `window start ms + SEP + content + SEP + platform + SEP + plan`,
   * one number per `TITLE_MEASURES`.
   */
  anomalyTitles: Map<string, number[]>;
  /**
   * Anomaly QoE deltas keyed by `window start ms + SEP + content + SEP + cdn + SEP + plan`, one
   * number per `QOE_SERIES_MEASURES`, in the window a view's outcome changed.
   */
  anomalyQoe: Map<string, number[]>;
  /** TVs' views to store, keyed by `shard + SEP + user + SEP + device + SEP + view key`. */
  openViews: Map<string, OpenViewsRow>;
  /** Keyed by `family + ":" + shard`; the highest log position applied. */
  checkpoints: Map<string, number>;
  /** Keyed like `checkpoints`: the owner epoch the flush must still hold (fencing). */
  epochs: Map<string, number>;
}

/** Length of a bucket: aggregates are kept per UTC hour of event time. */
export const HOUR_MS = 3_600_000;

/** Start of the UTC hour that holds `atMs`. */
export function hourOf(atMs: number): number {
  return Math.floor(atMs / HOUR_MS) * HOUR_MS;
}

/** The dimensions an event is counted under, besides its hour. */
export interface FactDims {
  contentId: string;
  region: string;
  platform: string;
  appVersion: string;
  subscriptionPlan: string;
}

/** The key of a fact row: hour and dimensions joined with {@link KEY_SEP}. */
export function factKey(hourMs: number, d: FactDims): string {
  return hourMs + KEY_SEP + d.contentId + KEY_SEP + d.region + KEY_SEP + d.platform + KEY_SEP +
    d.appVersion + KEY_SEP + d.subscriptionPlan;
}

/** Separator of composite map keys; cannot occur in validated ids. */
export const KEY_SEP = "\u0000";
