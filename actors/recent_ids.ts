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

  /** Whether the id is remembered. */
  has(eventId: string): boolean {
    return this.#atMsById.has(eventId);
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

/**
 * One {@link RecentIds} per shard, created on first use, so a released shard's ids can be dropped.
 * A capacity of 0 remembers nothing and calls every id new: for logs that deduplicate already.
 */
export class RecentIdsByShard {
  #byShard = new Map<number, RecentIds>();
  #capacityPerShard: number;

  constructor(capacityPerShard: number) {
    this.#capacityPerShard = capacityPerShard;
  }

  /** Records the id in the shard's memory; returns false if it was already there (a duplicate). */
  add(shard: number, eventId: string, atMs: number): boolean {
    if (this.#capacityPerShard === 0) return true;
    let ids = this.#byShard.get(shard);
    if (ids === undefined) {
      ids = new RecentIds(this.#capacityPerShard);
      this.#byShard.set(shard, ids);
    }
    return ids.add(eventId, atMs);
  }

  /** Forgets ids older than the horizon in every shard. */
  prune(horizonMs: number): void {
    for (const ids of this.#byShard.values()) ids.prune(horizonMs);
  }

  /** Forgets every id of one shard. */
  drop(shard: number): void {
    this.#byShard.delete(shard);
  }
}
