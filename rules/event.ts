import type { ConsentSignal } from "./consent.ts";
import type { OptionalFields } from "./fields.ts";

/**
 * The internal shape of one telemetry event, as plain data that crosses `postMessage` unchanged.
 * The HTTP layer validates the wire format and converts it to this; nothing inside trusts anything else.
 *
 * @module
 */

/** Playback event kinds: the only types sessions and the quality rule look at. */
export const PLAYBACK_TYPES = ["PLAY", "PAUSE", "SEEK", "STOP", "ERROR"] as const;

/** One of {@link PLAYBACK_TYPES}. */
export type PlaybackType = typeof PLAYBACK_TYPES[number];

/**
 * An upper-cased event type: a playback type or any other word a TV sends (LOGIN, HEARTBEAT, ...),
 * which is counted and seen by the rules that are not about playback.
 */
export type EventType = string;

/** True for the five playback types, which carry session and quality meaning. */
export function isPlaybackType(type: string): type is PlaybackType {
  return (PLAYBACK_TYPES as readonly string[]).includes(type);
}

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
  /** Whether GDPR-like rules apply, decided on the server from the region (never from the client). */
  isEu: boolean;
  /** What the client claimed in `is_eu` (null when absent); stored for review, never trusted. */
  clientIsEu: boolean | null;
  /** The viewer's plan as the TV reports it (`subscription_plan`), or null. */
  subscriptionPlan: string | null;
  /**
   * Whether the viewer consented to what the processing needs: decided at ingest from the
   * decoded {@link ConsentSignal} when the event carries one, else the event's `has_consent`.
   */
  hasConsent: boolean;
  /** The consent signal the event carried, decoded (absent or null: none). */
  consent?: ConsentSignal | null;
  /** HMAC-SHA256 of the IP address, hex; the raw address never leaves the ingest route. */
  ipHash: string;
  /** Truncated network prefix, e.g. `203.0.113.0/24` or `2001:db8:1::/48`. */
  ipPrefix: string;
  errorCode: string | null;
  /** `do_not_track` as stored (NOT NULL): false when the TV sent false or nothing. */
  doNotTrack: boolean;
  /**
   * True when the TV sent `do_not_track` at all, so an explicit false (a setting turned off) differs
   * from silence. Absent on events read back from the postgres log, which stores only the boolean.
   */
  hasDoNotTrack?: boolean;
  metadata: Record<string, unknown>;
  /** The optional fields of `rules/fields.ts` the event carried (absent: none of them). */
  fields?: OptionalFields;
  /** Server receive time in epoch milliseconds. */
  receivedAtMs: number;
  /** Set by the region: older than the watermark minus the allowed lateness. */
  isLate: boolean;
  /** Log position assigned when the event was appended; increases with append order. */
  position: number;
}
