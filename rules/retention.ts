/**
 * CCPA-like retention rule: an event that happened after its viewer asked not to be tracked, or to be
 * deleted, is data the platform should not be collecting. What counts is the event's own time, not
 * when it arrived: a TV that was offline may deliver events from before the request, and those are
 * not violations.
 *
 * A do-not-track request comes from the API or from the `do_not_track` field of events. The API one
 * (and a deletion) stays in force; the one from events is a setting the TV reports, so the latest
 * setting as of the event's time wins (see {@link withDntSetting}). A sale/sharing opt-out is not an
 * {@link OptOut}: an event after it is not a violation by itself.
 *
 * @module
 */
import type { UserRule } from "./registry.ts";
import type { TelemetryEvent } from "./event.ts";
import type { Flag } from "./types.ts";
import { raisedBy } from "./_flag.ts";

/** Version stored with each flag; bump when the rule's meaning changes. */
export const RETENTION_RULE_VERSION = 2;

/** Kind of privacy request a viewer can file. */
export type OptOutType = "do_not_track" | "deletion";

/** A do-not-track or deletion request on record for one user. */
export interface OptOut {
  type: OptOutType;
  /**
   * When the request was made: API receive time, or for do-not-track from events the event time
   * since which the setting has been on. Only events after it are flagged.
   */
  sinceMs: number;
  source: "api" | "event";
  /**
   * Set on a deletion that erases the user: the user's state is dropped and later events, which
   * arrive under this pseudonym, are the ones flagged.
   */
  pseudonym?: string;
}

/** A do-not-track setting one event reported, as of the event's time. */
export interface DntSetting {
  atMs: number;
  isOn: boolean;
}

/** Most settings kept per user; beyond it the oldest are forgotten. */
export const MAX_DNT_SETTINGS = 32;

/**
 * The setting an event reports: true for `do_not_track: true`, false only for an explicit
 * `do_not_track: false` (`hasDoNotTrack`), null when the TV did not say.
 */
export function dntSettingOf(
  event: Pick<TelemetryEvent, "doNotTrack" | "hasDoNotTrack">,
): boolean | null {
  if (event.doNotTrack) return true;
  return event.hasDoNotTrack === true ? false : null;
}

/**
 * Returns a user's settings (sorted by event time) with one more, without touching `history`. Inside
 * a run of equal settings only the first and the last are kept, which is exact while settings arrive
 * in event-time order; a setting that arrives late, inside a run, is placed between the run's ends.
 * At equal event times "on" wins, so the result does not depend on arrival order.
 */
export function withDntSetting(
  history: readonly DntSetting[],
  setting: DntSetting,
  max = MAX_DNT_SETTINGS,
): DntSetting[] {
  const merged: DntSetting[] = [];
  let isPlaced = false;
  for (const s of history) {
    if (!isPlaced && setting.atMs <= s.atMs) {
      isPlaced = true;
      if (setting.atMs === s.atMs) {
        merged.push({ atMs: s.atMs, isOn: s.isOn || setting.isOn });
        continue;
      }
      merged.push({ ...setting });
    }
    merged.push(s);
  }
  if (!isPlaced) merged.push({ ...setting });
  const kept = merged.filter((s, i) =>
    i === 0 || i === merged.length - 1 ||
    merged[i - 1].isOn !== s.isOn || merged[i + 1].isOn !== s.isOn
  );
  return kept.slice(Math.max(0, kept.length - max));
}

/**
 * Event time since which do-not-track from events has been on at `atMs` (the start of the run the
 * latest setting at or before `atMs` belongs to), or null when it is off then.
 */
export function dntOnSince(history: readonly DntSetting[], atMs: number): number | null {
  let i = history.length - 1;
  while (i >= 0 && history[i].atMs > atMs) i--;
  if (i < 0 || !history[i].isOn) return null;
  while (i > 0 && history[i - 1].isOn) i--;
  return history[i].atMs;
}

/**
 * The opt-out an event at `atMs` falls under: the API request (or deletion) if the event is after it,
 * or do-not-track from events if it was on before the event; the earlier one when both apply.
 */
export function optOutInForce(
  atMs: number,
  request: OptOut | undefined,
  history: readonly DntSetting[],
): OptOut | undefined {
  const sinceMs = dntOnSince(history, atMs);
  const fromEvents: OptOut | undefined = sinceMs !== null && atMs > sinceMs
    ? { type: "do_not_track", sinceMs, source: "event" }
    : undefined;
  const fromRequest = request !== undefined && atMs > request.sinceMs ? request : undefined;
  if (fromRequest === undefined) return fromEvents;
  if (fromEvents === undefined) return fromRequest;
  return fromEvents.sinceMs < fromRequest.sinceMs ? fromEvents : fromRequest;
}

/** Flags an event whose event time is after its user's opt-out (HIGH), or returns null. */
export function retentionRule(event: TelemetryEvent, optOut: OptOut | undefined): Flag | null {
  if (optOut === undefined || event.atMs <= optOut.sinceMs) return null;
  const request = optOut.type === "deletion" ? "a deletion request" : "a do-not-track request";
  return {
    flagKey: `retention:${event.eventId}`,
    rule: "retention",
    ruleVersion: RETENTION_RULE_VERSION,
    level: "HIGH",
    entityType: "user",
    entityId: event.userId,
    ...raisedBy(event),
    reason: `Event "${event.eventId}" from user "${event.userId}" happened after ${request}`,
    evidence: {
      rule: "retention",
      rule_version: RETENTION_RULE_VERSION,
      thresholds: {},
      window: null,
      observed: {
        request_type: optOut.type,
        request_source: optOut.source,
        request_since: new Date(optOut.sinceMs).toISOString(),
        event_at: new Date(event.atMs).toISOString(),
      },
      event_ids: [event.eventId],
    },
    flaggedEventCount: 1,
  };
}

/** The retention rule as the registry runs it; its findings weigh half as much again in a score. */
export const RETENTION_RULE: UserRule = {
  id: "retention",
  family: "user",
  version: RETENTION_RULE_VERSION,
  weight: 1.5,
  description: "An event that happened after its user's do-not-track or deletion request",
  evaluate: (event, facts) => retentionRule(event, facts.optOut),
};
