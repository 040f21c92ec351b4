/**
 * Helpers shared by the rule files.
 *
 * @module
 */
import type { TelemetryEvent } from "./event.ts";
import type { Flag } from "./types.ts";

/** The fields a flag copies from the event that raised it. */
export function raisedBy(
  event: Pick<TelemetryEvent, "eventId" | "userId" | "region" | "isEu" | "atMs">,
): Pick<Flag, "eventId" | "userId" | "region" | "isEu" | "atMs"> {
  return {
    eventId: event.eventId,
    userId: event.userId,
    region: event.region,
    isEu: event.isEu,
    atMs: event.atMs,
  };
}
