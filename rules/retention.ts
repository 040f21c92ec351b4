/**
 * CCPA-like retention rule: once a viewer asked not to be tracked, or to be deleted, every further event
 * from that viewer is data the platform should not be collecting.
 *
 * @module
 */
import type { TelemetryEvent } from "./event.ts";
import type { Flag } from "./types.ts";
import { raisedBy } from "./_flag.ts";

/** Version stored with each flag; bump when the rule's meaning changes. */
export const RETENTION_RULE_VERSION = 1;

/** Kind of privacy request a viewer can file. */
export type OptOutType = "do_not_track" | "deletion";

/** A do-not-track or deletion request on record for one user. */
export interface OptOut {
  type: OptOutType;
  /** When the request was recorded (API receive time, or event time of a DNT event). */
  sinceMs: number;
  source: "api" | "event";
  /**
   * Set on a deletion that erases the user: the user's state is dropped and later events, which
   * arrive under this pseudonym, are the ones flagged.
   */
  pseudonym?: string;
}

/** Flags an event that arrived after its user's opt-out was on record (HIGH), or returns null. */
export function retentionRule(event: TelemetryEvent, optOut: OptOut | undefined): Flag | null {
  if (optOut === undefined) return null;
  const request = optOut.type === "deletion" ? "a deletion request" : "a do-not-track request";
  return {
    flagKey: `retention:${event.eventId}`,
    rule: "retention",
    ruleVersion: RETENTION_RULE_VERSION,
    level: "HIGH",
    entityType: "user",
    entityId: event.userId,
    ...raisedBy(event),
    reason: `Event "${event.eventId}" arrived from user "${event.userId}" after ${request}`,
    evidence: {
      rule: "retention",
      rule_version: RETENTION_RULE_VERSION,
      thresholds: {},
      window: null,
      observed: {
        request_type: optOut.type,
        request_source: optOut.source,
        request_since: new Date(optOut.sinceMs).toISOString(),
      },
      event_ids: [event.eventId],
    },
    flaggedEventCount: 1,
  };
}
