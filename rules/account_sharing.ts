/**
 * Account sharing rule: one account seen from too many regions or networks within a sliding window.
 *
 * @module
 */
import type { TelemetryEvent } from "./event.ts";
import { type Flag, type Level, type RuleThresholds, windowOf } from "./types.ts";
import { raisedBy } from "./_flag.ts";
import type { UserRule } from "./registry.ts";

/** Version stored with each flag; bump when the rule's meaning changes. */
export const ACCOUNT_SHARING_RULE_VERSION = 1;

/** What the user's sliding window holds after the current event was added. */
export interface SharingFacts {
  windowStartMs: number;
  windowEndMs: number;
  regions: readonly string[];
  ipHashCount: number;
  /** A few of the window's event ids, newest last. */
  sampleEventIds: readonly string[];
}

/**
 * Flags the user when the window holds more distinct regions or IP hashes than allowed: MEDIUM, or HIGH
 * past the second bound. One flag per user and window-aligned period; escalation updates it.
 */
export function accountSharingRule(
  event: TelemetryEvent,
  facts: SharingFacts,
  t: RuleThresholds,
): Flag | null {
  const regionCount = facts.regions.length;
  const isHigh = regionCount > t.sharingHighRegions || facts.ipHashCount > t.sharingHighIps;
  const isMedium = regionCount > t.sharingMaxRegions || facts.ipHashCount > t.sharingMaxIps;
  if (!isMedium) return null;
  const level: Level = isHigh ? "HIGH" : "MEDIUM";
  // The flag key's period is aligned to the window length, so a user who keeps sharing gets one flag
  // per period rather than one per event.
  const periodStartMs = Math.floor(event.atMs / t.sharingWindowMs) * t.sharingWindowMs;
  return {
    flagKey: `account_sharing:${event.userId}:${periodStartMs}`,
    rule: "account_sharing",
    ruleVersion: ACCOUNT_SHARING_RULE_VERSION,
    level,
    entityType: "user",
    entityId: event.userId,
    ...raisedBy(event),
    reason:
      `User "${event.userId}" was seen from ${regionCount} regions and ${facts.ipHashCount} ` +
      `networks within ${Math.round(t.sharingWindowMs / 60_000)} minutes`,
    evidence: {
      rule: "account_sharing",
      rule_version: ACCOUNT_SHARING_RULE_VERSION,
      thresholds: {
        window_ms: t.sharingWindowMs,
        max_regions: t.sharingMaxRegions,
        high_regions: t.sharingHighRegions,
        max_ips: t.sharingMaxIps,
        high_ips: t.sharingHighIps,
      },
      window: windowOf(facts.windowStartMs, facts.windowEndMs),
      observed: {
        regions: [...facts.regions],
        distinct_regions: regionCount,
        distinct_ips: facts.ipHashCount,
      },
      event_ids: [...facts.sampleEventIds],
    },
    flaggedEventCount: 1,
  };
}

/** The account sharing rule as the registry runs it (not on late events: windows skip them). */
export const ACCOUNT_SHARING_RULE: UserRule = {
  id: "account_sharing",
  family: "user",
  version: ACCOUNT_SHARING_RULE_VERSION,
  weight: 1,
  description: "One account seen from too many regions or networks within a sliding window",
  evaluate: (event, facts, thresholds) =>
    facts.sharing === null ? null : accountSharingRule(event, facts.sharing, thresholds),
};
