/**
 * The internal shape of one telemetry event, as plain data that crosses `postMessage` unchanged.
 * The HTTP layer validates the wire format and converts it to this; nothing inside trusts anything else.
 *
 * @module
 */

/** Playback event kinds a TV can send. */
export const EVENT_TYPES = ["PLAY", "PAUSE", "SEEK", "STOP", "ERROR"] as const;

/** One of {@link EVENT_TYPES}. */
export type EventType = typeof EVENT_TYPES[number];

/** A validated event with the raw IP already replaced by its keyed hash and truncated prefix. */
export interface TelemetryEvent {
  eventId: string;
  userId: string;
  deviceId: string;
  contentId: string;
  type: EventType;
  /** Event time (the TV's `timestamp`) in epoch milliseconds. */
  atMs: number;
  region: string;
  isEu: boolean;
  hasConsent: boolean;
  /** HMAC-SHA256 of the IP address, hex; the raw address never leaves the ingest route. */
  ipHash: string;
  /** Truncated network prefix, e.g. `203.0.113.0/24` or `2001:db8:1::/48`. */
  ipPrefix: string;
  errorCode: string | null;
  doNotTrack: boolean;
  metadata: Record<string, unknown>;
  /** Server receive time in epoch milliseconds. */
  receivedAtMs: number;
  /** Set by the region: older than the watermark minus the allowed lateness. */
  isLate: boolean;
  /** Log position assigned when the event was appended; increases with append order. */
  position: number;
}
