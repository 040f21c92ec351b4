/**
 * A user's running playback segments: per device and title, the event time playback started. Kept
 * as two small parallel arrays (most users play one thing at a time; a Map per user costs several
 * times more) and capped, so a TV that starts many titles without ever stopping cannot grow it.
 *
 * @module
 */

/** Entries are `[key, startMs]` pairs, flattened. */
const STRIDE = 2;
const NO_ENTRIES: ReadonlyArray<string | number> = Object.freeze([]);

/** Open segments by key (`device + KEY_SEP + content`), at most `capacity`. */
export class OpenSegments {
  // A shared empty array until the first segment: `start` replaces it, never writes into it.
  #entries = NO_ENTRIES as Array<string | number>;
  #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** Start time of the key's open segment, if any. */
  get(key: string): number | undefined {
    const i = this.#indexOf(key);
    return i === -1 ? undefined : this.#entries[i + 1] as number;
  }

  /** Opens (or restarts) the key's segment; past capacity the earliest-started one is dropped. */
  start(key: string, atMs: number): void {
    const i = this.#indexOf(key);
    if (i !== -1) {
      this.#entries[i + 1] = atMs;
      return;
    }
    if (this.#entries.length >= this.#capacity * STRIDE) this.#remove(this.#earliest());
    // Copied, not pushed: a push grows the backing store by 16 slots, and new keys are rare.
    this.#entries = this.#entries.concat(key, atMs);
  }

  /** Closes the key's segment. */
  end(key: string): void {
    const i = this.#indexOf(key);
    if (i !== -1) this.#remove(i);
  }

  /** Whether any open segment started at or after `sinceMs`. */
  hasStartedSince(sinceMs: number): boolean {
    const e = this.#entries;
    for (let i = 0; i < e.length; i += STRIDE) if ((e[i + 1] as number) >= sinceMs) return true;
    return false;
  }

  #indexOf(key: string): number {
    const e = this.#entries;
    for (let i = 0; i < e.length; i += STRIDE) if (e[i] === key) return i;
    return -1;
  }

  #earliest(): number {
    const e = this.#entries;
    let earliest = 0;
    for (let i = STRIDE; i < e.length; i += STRIDE) {
      if ((e[i + 1] as number) < (e[earliest + 1] as number)) earliest = i;
    }
    return earliest;
  }

  #remove(i: number): void {
    this.#entries = this.#entries.length === STRIDE
      ? NO_ENTRIES as Array<string | number>
      : this.#entries.filter((_, j) => j < i || j >= i + STRIDE);
  }
}
