/**
 * Users whose data was erased, known only by a keyed hash of their id, and the log seam that makes
 * sure nothing they send later links to them: their events are appended under a pseudonym, with
 * the device id and IP hash replaced too.
 *
 * @module
 */
import { createHmac } from "node:crypto";
import type { Appender } from "./log/log.ts";
import type { IncomingEvent, Refusal } from "./region.ts";

/** Prefix of every pseudonym, so a reader sees at once that a row belongs to an erased user. */
export const PSEUDONYM_PREFIX = "erased-";

/** The form of every pseudonym: ingest refuses user and device ids in it, so none can be claimed. */
export const PSEUDONYM_PATTERN = /^erased-[0-9a-f]{24}$/;

/** The keyed hashes of erased users, and the pseudonym each user's later events carry. */
export class ErasedUsers {
  #key: string;
  #hashes = new Set<string>();

  constructor(key: string, hashes: Iterable<string> = []) {
    this.#key = key;
    for (const hash of hashes) this.#hashes.add(hash);
  }

  /** HMAC-SHA256 of the user id, hex: what the database keeps instead of the id. */
  subjectHash(userId: string): string {
    return createHmac("sha256", this.#key).update(userId).digest("hex");
  }

  /** The pseudonym of a subject hash: stable, short, and not reversible without the key. */
  pseudonymOf(subjectHash: string): string {
    return PSEUDONYM_PREFIX + subjectHash.slice(0, 24);
  }

  /** Remembers an erased user by hash. */
  add(subjectHash: string): void {
    this.#hashes.add(subjectHash);
  }

  /** Number of erased users remembered. */
  get size(): number {
    return this.#hashes.size;
  }

  /** The pseudonym to use for this user's events, or null when the user was not erased. */
  pseudonymFor(userId: string): string | null {
    if (this.#hashes.size === 0 || userId.startsWith(PSEUDONYM_PREFIX)) return null;
    const hash = this.subjectHash(userId);
    return this.#hashes.has(hash) ? this.pseudonymOf(hash) : null;
  }
}

/**
 * Wraps a log so events of erased users are appended under their pseudonym. The HMAC is computed
 * only once at least one user was erased (about 1 µs per event then).
 */
export class ErasingLog implements Appender {
  #inner: Appender;
  #erased: ErasedUsers;

  constructor(inner: Appender, erased: ErasedUsers) {
    this.#inner = inner;
    this.#erased = erased;
  }

  get kind(): string {
    return this.#inner.kind;
  }

  /** The wrapped log, for callers that need its backend (readiness, drain). */
  get inner(): Appender {
    return this.#inner;
  }

  refusal(): Refusal | null {
    return this.#inner.refusal();
  }

  append(events: IncomingEvent[]): Promise<void> {
    if (this.#erased.size === 0) return this.#inner.append(events);
    return this.#inner.append(events.map((event) => {
      const pseudonym = this.#erased.pseudonymFor(event.userId);
      if (pseudonym === null) return event;
      return { ...event, userId: pseudonym, deviceId: pseudonym, ipHash: pseudonym, ipPrefix: "" };
    }));
  }
}
