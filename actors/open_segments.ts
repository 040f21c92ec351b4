/**
 * A user's running playback segments: per device and title, the event time playback started. Kept
 * as one flat array of `[key, startMs]` pairs that the user entity holds itself (most users play one
 * thing at a time; a Map per user, or even a wrapper object, costs several times more), and capped,
 * so a TV that starts many titles without ever stopping cannot grow it. The functions that change it
 * return the array to keep, which may be a new one.
 *
 * @module
 */

/** Open segments by key (`device + KEY_SEP + content`), flattened; treat as opaque. */
export type OpenSegments = Array<string | number> & { readonly __segments?: true };

const STRIDE = 2;
const NONE = Object.freeze([]) as unknown as OpenSegments;

/** No open segment: shared, never written into (the functions below replace it). */
export function noSegments(): OpenSegments {
  return NONE;
}

/** Start time of the key's open segment, if any. */
export function segmentStart(e: OpenSegments, key: string): number | undefined {
  const i = indexOf(e, key);
  return i === -1 ? undefined : e[i + 1] as number;
}

/**
 * Opens (or restarts) the key's segment; past `capacity` segments the earliest-started one is
 * dropped. Returns the segments to keep.
 */
export function startSegment(
  e: OpenSegments,
  key: string,
  atMs: number,
  capacity: number,
): OpenSegments {
  const i = indexOf(e, key);
  if (i !== -1) {
    e[i + 1] = atMs;
    return e;
  }
  const kept = e.length >= capacity * STRIDE ? without(e, earliest(e)) : e;
  // Copied, not pushed: a push grows the backing store by 16 slots, and new keys are rare.
  return kept.concat(key, atMs) as OpenSegments;
}

/** Closes the key's segment; returns the segments to keep. */
export function endSegment(e: OpenSegments, key: string): OpenSegments {
  const i = indexOf(e, key);
  return i === -1 ? e : without(e, i);
}

/** Whether any open segment started at or after `sinceMs`. */
export function hasStartedSince(e: OpenSegments, sinceMs: number): boolean {
  for (let i = 0; i < e.length; i += STRIDE) if ((e[i + 1] as number) >= sinceMs) return true;
  return false;
}

function indexOf(e: OpenSegments, key: string): number {
  for (let i = 0; i < e.length; i += STRIDE) if (e[i] === key) return i;
  return -1;
}

function earliest(e: OpenSegments): number {
  let found = 0;
  for (let i = STRIDE; i < e.length; i += STRIDE) {
    if ((e[i + 1] as number) < (e[found + 1] as number)) found = i;
  }
  return found;
}

function without(e: OpenSegments, i: number): OpenSegments {
  if (e.length === STRIDE) return NONE;
  return e.filter((_, j) => j < i || j >= i + STRIDE) as OpenSegments;
}
