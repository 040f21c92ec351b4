/**
 * The unit of work a worker hands to the database: additive deltas, new flags, raw events and shard
 * checkpoints, all plain data so it can cross `postMessage` to the database owner unchanged.
 *
 * @module
 */
import type { Flag, Level, OptOutType } from "../rules/mod.ts";

/** Additive counters of one key (content, content and region, region or device). */
export interface CountDelta {
  events: number;
  plays: number;
  errors: number;
  watchTimeMs: number;
}

/** One raw event as stored: the IP only as keyed hash and truncated prefix. */
export interface RawEventRow {
  /** Log position; absent when the log's positions are per stream (redis), so a sequence assigns one. */
  position?: number;
  eventId: string;
  userId: string;
  deviceId: string;
  contentId: string;
  type: string;
  atMs: number;
  receivedAtMs: number;
  region: string;
  isEu: boolean;
  hasConsent: boolean;
  ipHash: string;
  ipPrefix: string;
  errorCode: string | null;
  doNotTrack: boolean;
  isLate: boolean;
  metadata: Record<string, unknown>;
}

/** Highest level and number of flags raised for one entity during the batch. */
export interface RiskDelta {
  entityType: string;
  entityId: string;
  level: Level;
  flagCount: number;
}

/** A do-not-track request carried by an event (`do_not_track: true`). */
export interface OptOutRow {
  userId: string;
  type: OptOutType;
  sinceMs: number;
}

/** Everything one flush writes, in one transaction. Maps are keyed as their names say. */
export interface FlushBatch {
  rawEvents: RawEventRow[];
  /** Named counters: `events:<TYPE>`, `watch_time_ms`, `late_events`, `duplicate_events`. */
  counters: Map<string, number>;
  contents: Map<string, CountDelta>;
  /** Keyed by `content_id + "\u0000" + region`. */
  contentRegions: Map<string, CountDelta>;
  regions: Map<string, CountDelta & { isEu: boolean }>;
  /** Keyed by `region + "\u0000" + error_code`. */
  regionErrorCodes: Map<string, number>;
  /** Keyed by `region + "\u0000" + platform`. */
  regionPlatforms: Map<string, number>;
  devices: Map<string, CountDelta>;
  flags: Map<string, Flag>;
  risks: Map<string, RiskDelta>;
  optOuts: OptOutRow[];
  /** Keyed by `family + ":" + shard`; the highest log position applied. */
  checkpoints: Map<string, number>;
  /** Keyed like `checkpoints`: the owner epoch the flush must still hold (fencing). */
  epochs: Map<string, number>;
}

/** Separator of composite map keys; cannot occur in validated ids. */
export const KEY_SEP = "\u0000";
