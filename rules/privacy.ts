/**
 * GDPR-like consent rule: an EU viewer's event without consent is tracked data without a legal basis.
 *
 * @module
 */
import type { TelemetryEvent } from "./event.ts";
import { type Flag, windowOf } from "./types.ts";
import { raisedBy } from "./_flag.ts";
import type { UserRule } from "./registry.ts";

/** Version stored with each flag; bump when the rule's meaning changes (2: one flag per day). */
export const PRIVACY_RULE_VERSION = 2;

/** Event ids a privacy flag's evidence lists at most; the count goes on beyond it. */
export const MAX_PRIVACY_EVENT_IDS = 20;

const DAY_MS = 86_400_000;

/**
 * Flags an event from an EU viewer who has not given consent (HIGH), or returns null. There is one
 * flag per user and UTC day of event time: each flagged event adds one to its count, and
 * `sampleEventIds` (the day's flagged events the caller remembers, this one included, at most
 * {@link MAX_PRIVACY_EVENT_IDS}) is its evidence.
 */
export function privacyRule(event: TelemetryEvent, sampleEventIds: readonly string[] = [
  event.eventId,
]): Flag | null {
  if (!event.isEu || event.hasConsent) return null;
  const dayMs = Math.floor(event.atMs / DAY_MS) * DAY_MS;
  const day = new Date(dayMs).toISOString().slice(0, 10);
  return {
    flagKey: `privacy:${event.userId}:${dayMs}`,
    rule: "privacy",
    ruleVersion: PRIVACY_RULE_VERSION,
    level: "HIGH",
    entityType: "user",
    entityId: event.userId,
    ...raisedBy(event),
    reason: `EU events from user "${event.userId}" in region ${event.region} on ${day} were ` +
      `collected without consent`,
    evidence: {
      rule: "privacy",
      rule_version: PRIVACY_RULE_VERSION,
      thresholds: {},
      window: windowOf(dayMs, dayMs + DAY_MS),
      observed: { is_eu: true, has_consent: false, region: event.region },
      event_ids: [...sampleEventIds].slice(0, MAX_PRIVACY_EVENT_IDS),
    },
    flaggedEventCount: 1,
  };
}

/** The consent rule as the registry runs it. */
export const PRIVACY_RULE: UserRule = {
  id: "privacy",
  family: "user",
  version: PRIVACY_RULE_VERSION,
  weight: 1,
  description: "An EU viewer's event without consent: tracked data without a legal basis",
  evaluate: (event, facts) => privacyRule(event, facts.privacySample),
};
