/**
 * Content and device quality rule: too many playback errors for one title or one device in a window.
 * A title is judged only when its errors come from several devices: one broken TV is the device
 * flag's business, not the title's.
 *
 * @module
 */
import type { TelemetryEvent } from "./event.ts";
import { type Flag, type RuleThresholds, windowOf } from "./types.ts";
import { raisedBy } from "./_flag.ts";
import type { QualityRule } from "./registry.ts";

/** Version stored with each flag; bump when the rule's meaning changes. */
export const CONTENT_QUALITY_RULE_VERSION = 2;

/** Counts of one content or device in one tumbling window, after the current event was added. */
export interface QualityFacts {
  entityType: "content" | "device";
  entityId: string;
  windowStartMs: number;
  windowEndMs: number;
  eventCount: number;
  errorCount: number;
  errorsByCode: Readonly<Record<string, number>>;
  /** A few of the window's error event ids. */
  sampleEventIds: readonly string[];
  /**
   * Distinct devices that sent an error in the window, counted up to `qualityMinDevices` (the
   * tracking stops there); only content flags look at it.
   */
  errorDeviceCount: number;
}

/**
 * Flags the entity when its window has at least the minimum sample and an error rate strictly above
 * the threshold, and for a content also errors from at least `qualityMinDevices` devices (HIGH). One
 * flag per entity and window. A content flag is about the title, so it names no viewer: its user id
 * and region are "" and `isEu` is false (`risk_flags` requires non-null text).
 */
export function contentQualityRule(
  event: Pick<TelemetryEvent, "eventId" | "userId" | "region" | "isEu" | "atMs">,
  facts: QualityFacts,
  t: RuleThresholds,
): Flag | null {
  if (facts.eventCount < t.qualityMinEvents) return null;
  const errorRate = facts.errorCount / facts.eventCount;
  if (errorRate <= t.qualityMaxErrorRate) return null;
  const isContent = facts.entityType === "content";
  if (isContent && facts.errorDeviceCount < t.qualityMinDevices) return null;
  const percent = (errorRate * 100).toFixed(1);
  return {
    flagKey: `content_quality:${facts.entityType}:${facts.entityId}:${facts.windowStartMs}`,
    rule: "content_quality",
    ruleVersion: CONTENT_QUALITY_RULE_VERSION,
    level: "HIGH",
    entityType: facts.entityType,
    entityId: facts.entityId,
    ...(isContent ? { ...raisedBy(event), userId: "", region: "", isEu: false } : raisedBy(event)),
    reason: `${isContent ? "Content" : "Device"} "${facts.entityId}" had ` +
      `${facts.errorCount} errors in ${facts.eventCount} events (${percent}%) in one window`,
    evidence: {
      rule: "content_quality",
      rule_version: CONTENT_QUALITY_RULE_VERSION,
      thresholds: {
        window_ms: t.qualityWindowMs,
        min_events: t.qualityMinEvents,
        max_error_rate: t.qualityMaxErrorRate,
        ...(isContent ? { min_devices: t.qualityMinDevices } : {}),
      },
      window: windowOf(facts.windowStartMs, facts.windowEndMs),
      observed: {
        events: facts.eventCount,
        errors: facts.errorCount,
        error_rate: errorRate,
        errors_by_code: { ...facts.errorsByCode },
        ...(isContent ? { error_devices: facts.errorDeviceCount } : {}),
      },
      event_ids: [...facts.sampleEventIds],
    },
    flaggedEventCount: 1,
  };
}

/** The quality rule as the registry runs it, for titles and devices alike. */
export const CONTENT_QUALITY_RULE: QualityRule = {
  id: "content_quality",
  family: "quality",
  version: CONTENT_QUALITY_RULE_VERSION,
  weight: 1,
  description: "Too many playback errors for one title or one device in a tumbling window",
  evaluate: contentQualityRule,
};
