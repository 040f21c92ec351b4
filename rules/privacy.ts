/**
 * GDPR-like consent rule: an EU viewer's event without consent is tracked data without a legal basis.
 *
 * @module
 */
import type { TelemetryEvent } from "./event.ts";
import type { Flag } from "./types.ts";
import { raisedBy } from "./_flag.ts";

/** Version stored with each flag; bump when the rule's meaning changes. */
export const PRIVACY_RULE_VERSION = 1;

/** Flags an event from an EU viewer who has not given consent (HIGH), or returns null. */
export function privacyRule(event: TelemetryEvent): Flag | null {
  if (!event.isEu || event.hasConsent) return null;
  return {
    flagKey: `privacy:${event.eventId}`,
    rule: "privacy",
    ruleVersion: PRIVACY_RULE_VERSION,
    level: "HIGH",
    entityType: "user",
    entityId: event.userId,
    ...raisedBy(event),
    reason: `EU event "${event.eventId}" from region ${event.region} was collected without consent`,
    evidence: {
      rule: "privacy",
      rule_version: PRIVACY_RULE_VERSION,
      thresholds: {},
      window: null,
      observed: { is_eu: true, has_consent: false, region: event.region },
      event_ids: [event.eventId],
    },
    flaggedEventCount: 1,
  };
}
