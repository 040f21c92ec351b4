/**
 * Small integer slots for string keys (user ids, titles, TVs), reused once released. A family keeps
 * each entity's state in columns, plain arrays indexed by slot, instead of an object per entity:
 * per-entity memory is what a worker multiplies by every active user, and on Deno's V8 an object
 * costs a 24-byte header, a wrapped array 48 bytes, and a time that is not a small integer 16 bytes
 * of its own, while a column of times stores each one unboxed in 8 bytes.
 *
 * Slots are handed out densely (a released slot is taken again before a new one), so the columns
 * never have holes and V8 keeps them packed. They do not shrink: they are bounded by the most
 * entities held at once, as the entities were. A slot is emptied (the family's `clear`) both when
 * taken, so a new slot grows every column, and when released, so a free slot keeps nothing alive.
 *
 * @module
 */

/** Slots of one family's entities, by key, with when each was last touched. */
export class Slots {
  #byKey = new Map<string, number>();
  #free: number[] = [];
  #issued = 0;
  /** Wall-clock time of each slot's latest touch (passivation); 0 for a free slot. */
  #touchedMs: number[] = [];
  #clear: (slot: number) => void;

  /** `clear` empties a slot in every column of the family. */
  constructor(clear: (slot: number) => void) {
    this.#clear = clear;
  }

  /** Entities holding a slot now. */
  get size(): number {
    return this.#byKey.size;
  }

  /** The key's slot, if it holds one. */
  get(key: string): number | undefined {
    return this.#byKey.get(key);
  }

  /**
   * The key's slot: the one it holds, or else an empty one, released before or the next new one
   * (the columns' length, so `clear` grows each column by assigning at it).
   */
  acquire(key: string): number {
    const held = this.#byKey.get(key);
    if (held !== undefined) return held;
    const slot = this.#free.pop() ?? this.#issued++;
    this.#byKey.set(key, slot);
    this.#touchedMs[slot] = 0;
    this.#clear(slot);
    return slot;
  }

  /** The key's slot (see {@link acquire}), marked touched at `nowMs` (wall clock). */
  touch(key: string, nowMs: number): number {
    const slot = this.acquire(key);
    this.#touchedMs[slot] = nowMs;
    return slot;
  }

  /** Wall-clock time of the slot's latest {@link touch}, for passivating idle entities. */
  touchedMs(slot: number): number {
    return this.#touchedMs[slot];
  }

  /** Empties the key's slot and frees it for another key; false if the key held none. */
  release(key: string): boolean {
    const slot = this.#byKey.get(key);
    if (slot === undefined) return false;
    this.#byKey.delete(key);
    this.#touchedMs[slot] = 0;
    this.#clear(slot);
    this.#free.push(slot);
    return true;
  }

  /**
   * Calls `fn` with every slot and its key; releasing the current key meanwhile is safe. Allocates
   * nothing per entry, unlike iterating entries: passivation runs over every entity on each tick.
   */
  forEach(fn: (slot: number, key: string) => void): void {
    this.#byKey.forEach((slot, key) => fn(slot, key));
  }
}
