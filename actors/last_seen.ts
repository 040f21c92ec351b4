/**
 * A sliding-window distinct counter: for each value, when it was last seen (event time).
 *
 * @module
 */

/**
 * Tracks the last sighting of each distinct value (a region, an IP hash), so "distinct values within
 * the last W ms" is a scan over at most `capacity` entries instead of a list of every event.
 */
export class LastSeen {
  #byValue = new Map<string, { atMs: number; eventId: string }>();
  #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** Records a sighting; keeps the later time if the value was seen already (events may be out of order). */
  see(value: string, atMs: number, eventId: string): void {
    const existing = this.#byValue.get(value);
    if (existing !== undefined) {
      if (existing.atMs <= atMs) {
        existing.atMs = atMs;
        existing.eventId = eventId;
      }
      return;
    }
    if (this.#byValue.size >= this.#capacity) this.#forgetStalest();
    this.#byValue.set(value, { atMs, eventId });
  }

  /** Distinct values seen at or after `sinceMs`, sorted. */
  keysSince(sinceMs: number): string[] {
    const keys: string[] = [];
    for (const [value, seen] of this.#byValue) if (seen.atMs >= sinceMs) keys.push(value);
    return keys.sort();
  }

  /** Number of distinct values seen at or after `sinceMs`, only those `isCounted` accepts if given. */
  countSince(sinceMs: number, isCounted?: (value: string) => boolean): number {
    let n = 0;
    for (const [value, seen] of this.#byValue) {
      if (seen.atMs >= sinceMs && (isCounted === undefined || isCounted(value))) n++;
    }
    return n;
  }

  /** Last event id of each value seen at or after `sinceMs`, oldest first. */
  eventIdsSince(sinceMs: number): string[] {
    return [...this.#byValue.values()]
      .filter((seen) => seen.atMs >= sinceMs)
      .sort((a, b) => a.atMs - b.atMs)
      .map((seen) => seen.eventId);
  }

  #forgetStalest(): void {
    let stalest: string | undefined;
    let stalestMs = Infinity;
    for (const [value, seen] of this.#byValue) {
      if (seen.atMs < stalestMs) {
        stalestMs = seen.atMs;
        stalest = value;
      }
    }
    if (stalest !== undefined) this.#byValue.delete(stalest);
  }
}
