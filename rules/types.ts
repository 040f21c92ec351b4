/**
 * Vocabulary shared by every rule: flags, levels, evidence and thresholds.
 *
 * @module
 */
import { DEFAULT_BUSINESS_ERROR_CODES } from "./qoe.ts";
import { DEFAULT_CONSENT_PURPOSES, purposeMask } from "./consent.ts";
import { DEFAULT_QOE_RULE, type QoeRuleThresholds } from "./qoe_rule.ts";

/** Identifier of a compliance rule: one of `RULE_IDS` in `registry.ts`. */
export type RuleId = string;

/** Risk level of a flag, ordered LOW < MEDIUM < HIGH. */
export type Level = "LOW" | "MEDIUM" | "HIGH";

/** Numeric rank of each level, so the higher of two levels can be kept. */
export const LEVEL_RANK: Readonly<Record<Level, number>> = { LOW: 1, MEDIUM: 2, HIGH: 3 };

/** Kind of entity a flag is about (`cdn` and `region` by the `qoe` rule only). */
export type EntityType = "user" | "content" | "device" | "cdn" | "region";

/** Why a flag was raised, in enough detail for a compliance reviewer; stored and served as JSON. */
export interface Evidence {
  rule: RuleId;
  rule_version: number;
  thresholds: Record<string, number>;
  /**
   * Event-time bounds as ISO-8601 strings: `[start, end)` for tumbling windows, `[start, end]` for the
   * sliding window ending at the triggering event; null for per-event rules.
   */
  window: { start: string; end: string } | null;
  observed: Record<string, unknown>;
  event_ids: string[];
}

/**
 * A risk signal. `flagKey` identifies it: per-event rules key by event id, windowed rules by entity
 * and window, so re-raising the same flag updates it instead of duplicating it.
 */
export interface Flag {
  flagKey: string;
  rule: RuleId;
  ruleVersion: number;
  level: Level;
  entityType: EntityType;
  entityId: string;
  /** The event that raised (or last escalated) the flag. */
  eventId: string;
  userId: string;
  region: string;
  isEu: boolean;
  /** Event time of the triggering event. */
  atMs: number;
  reason: string;
  evidence: Evidence;
  /** Events this flag covers (1 for per-event rules; events seen while over threshold otherwise). */
  flaggedEventCount: number;
}

/** Configurable thresholds of the windowed rules. */
export interface RuleThresholds {
  sharingWindowMs: number;
  /** More distinct regions than this in the sliding window is MEDIUM. */
  sharingMaxRegions: number;
  /** More distinct regions than this is HIGH. */
  sharingHighRegions: number;
  sharingMaxIps: number;
  sharingHighIps: number;
  /** Regions compared by the sharing rule: `subdivision` (US-CA and US-NY differ) or `country`. */
  sharingRegionLevel: "country" | "subdivision";
  /** Tumbling window length of the quality rule. */
  qualityWindowMs: number;
  qualityMinEvents: number;
  /** Error rate strictly above this raises a flag. */
  qualityMaxErrorRate: number;
  /** A content flag needs errors from at least this many distinct devices in the window. */
  qualityMinDevices: number;
  /** The purposes the processing needs (`CONSENT_PURPOSES`), as a mask of TCF purpose ids. */
  consentPurposeMask: number;
  /** A derived view ends after this long without an event (`VIEW_IDLE_MS`). */
  viewIdleMs: number;
  /** Error codes that are not the service's fault (`BUSINESS_ERROR_CODES`): exact or `PREFIX*`. */
  businessErrorCodes: readonly string[];
  /** The `qoe` rule's window and thresholds (`QOE_*`). */
  qoe: QoeRuleThresholds;
  /** Window of the anomaly series (`ANOMALY_WINDOW_MS`, a divisor of an hour). */
  anomalyWindowMs: number;
}

/** The defaults documented in the README. */
export const DEFAULT_THRESHOLDS: Readonly<RuleThresholds> = {
  sharingWindowMs: 3_600_000,
  sharingMaxRegions: 2,
  sharingHighRegions: 4,
  sharingMaxIps: 3,
  sharingHighIps: 6,
  sharingRegionLevel: "subdivision",
  qualityWindowMs: 300_000,
  qualityMinEvents: 20,
  qualityMaxErrorRate: 0.2,
  qualityMinDevices: 3,
  consentPurposeMask: purposeMask(DEFAULT_CONSENT_PURPOSES),
  viewIdleMs: 1_800_000,
  businessErrorCodes: DEFAULT_BUSINESS_ERROR_CODES,
  qoe: DEFAULT_QOE_RULE,
  anomalyWindowMs: 300_000,
};

/** An event-time window as stored in evidence. */
export function windowOf(startMs: number, endMs: number): { start: string; end: string } {
  return { start: new Date(startMs).toISOString(), end: new Date(endMs).toISOString() };
}
