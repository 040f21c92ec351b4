/**
 * Bounded memory of recently seen event ids, for duplicate detection.
 *
 * @module
 */

/**
 * Remembers event ids with their event time. Ids older than the prune horizon are forgotten, and the
 * oldest are evicted first once `capacity` is reached, so memory stays bounded under any load.
 */
export class RecentIds {
  #atMsById = new Map<string, number>();
  #capacity: number;

  constructor(capacity: number) {
    this.#capacity = Math.max(1, capacity);
  }

  /** Records the id; returns false if it was already remembered (a duplicate). */
  add(eventId: string, atMs: number): boolean {
    if (this.#atMsById.has(eventId)) return false;
    if (this.#atMsById.size >= this.#capacity) {
      const oldest = this.#atMsById.keys().next().value;
      if (oldest !== undefined) this.#atMsById.delete(oldest);
    }
    this.#atMsById.set(eventId, atMs);
    return true;
  }

  /** Forgets ids, oldest inserted first, while their event time is before `horizonMs`. */
  prune(horizonMs: number): void {
    for (const [id, atMs] of this.#atMsById) {
      if (atMs >= horizonMs) break;
      this.#atMsById.delete(id);
    }
  }

  /** Number of remembered ids. */
  get size(): number {
    return this.#atMsById.size;
  }
}
