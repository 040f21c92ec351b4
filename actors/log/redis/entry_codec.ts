/**
 * How an event travels in a Redis stream entry: a JSON array of its fields in a fixed order, not
 * an object with its field names. An event is stored three times (its user, title and TV streams)
 * and parsed by three owners, so the names were about half of every byte Redis stored, sent and
 * every owner parsed. Entries written as objects (before this format) are still read.
 *
 * @module
 */
import type { ConsentSignal, TelemetryEvent } from "../../../rules/mod.ts";
import type { IncomingEvent } from "../../region.ts";

/** An event as appended: everything but its log position, which is its stream id. */
export type StreamEvent = IncomingEvent & { isLate: boolean };

/** First element of an encoded entry: the format's version. */
const VERSION = 1;

/** Encodes an event for a stream entry. */
export function encodeEntry(event: StreamEvent): string {
  return JSON.stringify([
    VERSION,
    event.eventId,
    event.userId,
    event.deviceId,
    event.contentId,
    event.type,
    event.atMs,
    event.receivedAtMs,
    event.region,
    event.isEu,
    event.clientIsEu,
    event.subscriptionPlan,
    event.hasConsent,
    event.consent ?? null,
    event.ipHash,
    event.ipPrefix,
    event.errorCode,
    event.doNotTrack,
    event.hasDoNotTrack ?? null,
    event.metadata,
    event.isLate,
    event.fields ?? null,
  ]);
}

/** Decodes an entry into the event at `position`; throws on an entry that is neither format. */
export function decodeEntry(value: string, position: number): TelemetryEvent {
  const parsed = JSON.parse(value) as unknown;
  if (!Array.isArray(parsed)) {
    if (typeof parsed !== "object" || parsed === null) throw new TypeError("not an event entry");
    return { ...(parsed as StreamEvent), position };
  }
  if (parsed[0] !== VERSION) throw new TypeError(`unknown entry format ${String(parsed[0])}`);
  const event: TelemetryEvent = {
    eventId: parsed[1],
    userId: parsed[2],
    deviceId: parsed[3],
    contentId: parsed[4],
    type: parsed[5],
    atMs: parsed[6],
    receivedAtMs: parsed[7],
    region: parsed[8],
    isEu: parsed[9],
    clientIsEu: parsed[10],
    subscriptionPlan: parsed[11],
    hasConsent: parsed[12],
    ipHash: parsed[14],
    ipPrefix: parsed[15],
    errorCode: parsed[16],
    doNotTrack: parsed[17],
    metadata: parsed[19],
    isLate: parsed[20],
    position,
  };
  // Absent and null both mean "no consent signal"; absent is what most events have.
  if (parsed[13] !== null) event.consent = parsed[13] as ConsentSignal;
  if (parsed[18] !== null) event.hasDoNotTrack = parsed[18];
  // Absent in entries written before the optional fields existed.
  if (parsed[21] !== undefined && parsed[21] !== null) event.fields = parsed[21];
  return event;
}

/** The user id of an entry in either format (duplicate marks carry the event too). */
export function userIdOfEntry(value: string): string | undefined {
  const parsed = JSON.parse(value) as unknown;
  if (Array.isArray(parsed)) return typeof parsed[2] === "string" ? parsed[2] : undefined;
  const userId = (parsed as { userId?: unknown } | null)?.userId;
  return typeof userId === "string" ? userId : undefined;
}
