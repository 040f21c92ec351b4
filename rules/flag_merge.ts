/**
 * Merging two sightings of the same flag, so a shard sends one row per flag key per flush.
 *
 * @module
 */
import { type Flag, LEVEL_RANK } from "./types.ts";

/**
 * Combines two flags with the same key: event counts add up, and the newer sighting brings its
 * level, reason and evidence (the latest snapshot) unless it is at a lower level than the older.
 */
export function mergeFlag(older: Flag, newer: Flag): Flag {
  const flaggedEventCount = older.flaggedEventCount + newer.flaggedEventCount;
  const rankChange = LEVEL_RANK[newer.level] - LEVEL_RANK[older.level];
  if (rankChange > 0) return { ...newer, flaggedEventCount };
  if (rankChange < 0) return { ...older, flaggedEventCount };
  // Same level: the flag is still the one the first event raised, with the latest snapshot.
  return { ...older, reason: newer.reason, evidence: newer.evidence, flaggedEventCount };
}
