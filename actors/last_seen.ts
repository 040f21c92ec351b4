/**
 * A sliding-window distinct counter: for each value, when it was last seen (event time) and a tag
 * (the event id, say). {@link SightingsColumns} keeps an owner's first value in columns; an owner
 * with more has one flat array of `[value, atMs, tag]` triples, with no wrapper object (this is
 * per-user memory, multiplied by every active user: a wrapper object costs 48 bytes on Deno's V8, a
 * Map with an object per entry several times more). So "distinct values within the last W ms" is a
 * scan over at most `capacity` entries, and the functions return the array to keep, which may be a
 * new one.
 *
 * @module
 */

/** What a value or a tag may be: strings, or small integers, which cost no memory of their own. */
type Scalar = string | number;

/** Sightings of values `V` tagged `T`, flattened; treat as opaque. */
export type Sightings<V extends Scalar = string, T extends Scalar = string> =
  & Array<V | number | T>
  & {
    readonly __sightings?: [V, T];
  };

const STRIDE = 3;

/** No sightings: shared, never written into ({@link see} returns a new array instead). */
export function noSightings<V extends Scalar, T extends Scalar>(): Sightings<V, T> {
  return NONE as Sightings<V, T>;
}
const NONE = Object.freeze([]) as unknown as Sightings<Scalar, Scalar>;

/**
 * Records a sighting; keeps the later time and its tag if the value was seen already (events may be
 * out of order). Past `capacity` values the stalest is forgotten. Returns the sightings to keep.
 */
export function see<V extends Scalar, T extends Scalar>(
  e: Sightings<V, T>,
  value: V,
  atMs: number,
  tag: T,
  capacity: number,
): Sightings<V, T> {
  for (let i = 0; i < e.length; i += STRIDE) {
    if (e[i] !== value) continue;
    if ((e[i + 1] as number) <= atMs) {
      e[i + 1] = atMs;
      e[i + 2] = tag;
    }
    return e;
  }
  const kept = e.length >= capacity * STRIDE ? withoutStalest(e) : e;
  // Copied, not pushed: a push grows the backing store by 16 slots, and new values are rare.
  return kept.concat(value, atMs, tag) as Sightings<V, T>;
}

/** Distinct values seen at or after `sinceMs`, sorted. */
export function keysSince<V extends Scalar, T extends Scalar>(
  e: Sightings<V, T>,
  sinceMs: number,
): V[] {
  const keys: V[] = [];
  for (let i = 0; i < e.length; i += STRIDE) {
    if ((e[i + 1] as number) >= sinceMs) keys.push(e[i] as V);
  }
  return keys.sort();
}

/** Number of distinct values seen at or after `sinceMs`, only those tagged `tag` if given. */
export function countSince<V extends Scalar, T extends Scalar>(
  e: Sightings<V, T>,
  sinceMs: number,
  tag?: T,
): number {
  let n = 0;
  for (let i = 0; i < e.length; i += STRIDE) {
    if ((e[i + 1] as number) < sinceMs) continue;
    if (tag === undefined || e[i + 2] === tag) n++;
  }
  return n;
}

/** The latest tag of each value seen at or after `sinceMs`, oldest sighting first. */
export function tagsSince<V extends Scalar, T extends Scalar>(
  e: Sightings<V, T>,
  sinceMs: number,
): T[] {
  const found: Array<{ atMs: number; tag: T }> = [];
  for (let i = 0; i < e.length; i += STRIDE) {
    const atMs = e[i + 1] as number;
    if (atMs >= sinceMs) found.push({ atMs, tag: e[i + 2] as T });
  }
  return found.sort((a, b) => a.atMs - b.atMs).map((f) => f.tag);
}

function withoutStalest<V extends Scalar, T extends Scalar>(e: Sightings<V, T>): Sightings<V, T> {
  let stalest = -1;
  let stalestMs = Infinity;
  for (let i = 0; i < e.length; i += STRIDE) {
    if ((e[i + 1] as number) < stalestMs) {
      stalestMs = e[i + 1] as number;
      stalest = i;
    }
  }
  if (stalest === -1) return e;
  return e.filter((_, j) => j < stalest || j >= stalest + STRIDE) as Sightings<V, T>;
}

/** Marks, in the value column, an owner whose sightings moved to a flat array. */
const SPILLED: unique symbol = Symbol("spilled");

/**
 * Sightings of many owners in columns indexed by a slot (see `slots.ts`): the first value an owner
 * is seen with sits in three columns with no array of its own, which is all most users ever have
 * (one region, one network). An owner seen with a second value moves to a flat {@link Sightings}
 * array for good (until its slot is reset), kept in a map beside the columns, since few owners
 * need one. Same semantics as the functions above.
 */
export class SightingsColumns<V extends Scalar, T extends Scalar> {
  #values: Array<V | null | typeof SPILLED> = [];
  #atMs: number[] = [];
  #tags: Array<T | null> = [];
  #spilled = new Map<number, Sightings<V, T>>();

  /** `capacity`: most distinct values kept per owner, as {@link see}'s. */
  constructor(readonly capacity: number) {}

  /** Empties a slot; call it for every slot taken, new or reused, before using it. */
  reset(slot: number): void {
    if (this.#values[slot] === SPILLED) this.#spilled.delete(slot);
    this.#values[slot] = null;
    this.#atMs[slot] = 0;
    this.#tags[slot] = null;
  }

  /** Records a sighting, as {@link see}. */
  see(slot: number, value: V, atMs: number, tag: T): void {
    const first = this.#values[slot];
    if (first === SPILLED) {
      this.#spilled.set(slot, see(this.#spilled.get(slot)!, value, atMs, tag, this.capacity));
    } else if (first === null) {
      this.#values[slot] = value;
      this.#atMs[slot] = atMs;
      this.#tags[slot] = tag;
    } else if (first === value) {
      if (this.#atMs[slot] <= atMs) {
        this.#atMs[slot] = atMs;
        this.#tags[slot] = tag;
      }
    } else {
      const firstTag = this.#tags[slot] as T;
      const moved = see(noSightings<V, T>(), first, this.#atMs[slot], firstTag, this.capacity);
      this.#spilled.set(slot, see(moved, value, atMs, tag, this.capacity));
      this.#values[slot] = SPILLED;
      this.#tags[slot] = null;
    }
  }

  /** As {@link keysSince}. */
  keysSince(slot: number, sinceMs: number): V[] {
    const first = this.#values[slot];
    if (first === SPILLED) return keysSince(this.#spilled.get(slot)!, sinceMs);
    return first !== null && this.#atMs[slot] >= sinceMs ? [first] : [];
  }

  /** As {@link countSince}. */
  countSince(slot: number, sinceMs: number, tag?: T): number {
    const first = this.#values[slot];
    if (first === SPILLED) return countSince(this.#spilled.get(slot)!, sinceMs, tag);
    if (first === null || this.#atMs[slot] < sinceMs) return 0;
    return tag === undefined || this.#tags[slot] === tag ? 1 : 0;
  }

  /** As {@link tagsSince}. */
  tagsSince(slot: number, sinceMs: number): T[] {
    const first = this.#values[slot];
    if (first === SPILLED) return tagsSince(this.#spilled.get(slot)!, sinceMs);
    const tag = this.#tags[slot];
    return first !== null && this.#atMs[slot] >= sinceMs ? [tag as T] : [];
  }
}
