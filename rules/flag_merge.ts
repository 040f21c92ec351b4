/**
 * Merging two sightings of the same flag, so a shard sends one row per flag key per flush.
 *
 * @module
 */
import { type Flag, LEVEL_RANK } from "./types.ts";

/**
 * Combines two flags with the same key: event counts add up, the higher level wins and brings its
 * evidence; on equal levels the earlier evidence is kept.
 */
export function mergeFlag(older: Flag, newer: Flag): Flag {
  const isEscalation = LEVEL_RANK[newer.level] > LEVEL_RANK[older.level];
  const base = isEscalation ? newer : older;
  return { ...base, flaggedEventCount: older.flaggedEventCount + newer.flaggedEventCount };
}
