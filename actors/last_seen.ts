/**
 * A sliding-window distinct counter: for each value, when it was last seen (event time).
 *
 * @module
 */

/** Entries are `[value, atMs, eventId]` triples, flattened. */
const STRIDE = 3;
const NO_ENTRIES: ReadonlyArray<string | number> = Object.freeze([]);

/**
 * Tracks the last sighting of each distinct value (a region, an IP hash), so "distinct values within
 * the last W ms" is a scan over at most `capacity` entries instead of a list of every event. Kept as
 * one flat array of triples: most users have one or two values, and a small array costs about half
 * of a Map with an object per entry (this is per-user memory, multiplied by every active user).
 */
export class LastSeen {
  // A shared empty array until the first sighting: `see` replaces it, never writes into it.
  #entries = NO_ENTRIES as Array<string | number>;
  #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** Records a sighting; keeps the later time if the value was seen already (events may be out of order). */
  see(value: string, atMs: number, eventId: string): void {
    const e = this.#entries;
    for (let i = 0; i < e.length; i += STRIDE) {
      if (e[i] !== value) continue;
      if ((e[i + 1] as number) <= atMs) {
        e[i + 1] = atMs;
        e[i + 2] = eventId;
      }
      return;
    }
    if (e.length >= this.#capacity * STRIDE) this.#forgetStalest();
    // Copied, not pushed: a push grows the backing store by 16 slots, and new values are rare.
    this.#entries = this.#entries.concat(value, atMs, eventId);
  }

  /** Distinct values seen at or after `sinceMs`, sorted. */
  keysSince(sinceMs: number): string[] {
    const keys: string[] = [];
    const e = this.#entries;
    for (let i = 0; i < e.length; i += STRIDE) {
      if ((e[i + 1] as number) >= sinceMs) keys.push(e[i] as string);
    }
    return keys.sort();
  }

  /** Number of distinct values seen at or after `sinceMs`, only those `isCounted` accepts if given. */
  countSince(sinceMs: number, isCounted?: (value: string) => boolean): number {
    let n = 0;
    const e = this.#entries;
    for (let i = 0; i < e.length; i += STRIDE) {
      if ((e[i + 1] as number) < sinceMs) continue;
      if (isCounted === undefined || isCounted(e[i] as string)) n++;
    }
    return n;
  }

  /** Last event id of each value seen at or after `sinceMs`, oldest first. */
  eventIdsSince(sinceMs: number): string[] {
    const found: Array<{ atMs: number; eventId: string }> = [];
    const e = this.#entries;
    for (let i = 0; i < e.length; i += STRIDE) {
      const atMs = e[i + 1] as number;
      if (atMs >= sinceMs) found.push({ atMs, eventId: e[i + 2] as string });
    }
    return found.sort((a, b) => a.atMs - b.atMs).map((f) => f.eventId);
  }

  #forgetStalest(): void {
    const e = this.#entries;
    let stalest = -1;
    let stalestMs = Infinity;
    for (let i = 0; i < e.length; i += STRIDE) {
      if ((e[i + 1] as number) < stalestMs) {
        stalestMs = e[i + 1] as number;
        stalest = i;
      }
    }
    if (stalest !== -1) this.#entries = e.filter((_, j) => j < stalest || j >= stalest + STRIDE);
  }
}
