/**
 * Appending to the `raw_events` log on PostgreSQL with COPY: events are encoded once into COPY text
 * and sent, with the statements that must commit with them, in one round trip on the appender's own
 * connections, at the positions the log gave them, in one transaction. COPY cannot skip an
 * `event_id` that is already stored, so a group is copied only when nothing in it is known to be a
 * retry; otherwise, and whenever COPY fails on a duplicate key or finds a retried erased event, the
 * group goes through the exact `INSERT ... ON CONFLICT DO NOTHING` path instead. Both paths commit
 * the same rows and the same duplicate count. An event is its `event_id` with its timestamp (the
 * primary key of the day-partitioned table); recent ids are remembered by id alone, so a reused id
 * with another timestamp takes the exact path too.
 *
 * @module
 */
// @ts-types="@types/pg"
import type pg from "pg";
import { AppendResult, type PositionedRow, storedMetadata } from "./log_store.ts";
import { copyInOneTrip } from "./pipelined_copy.ts";
import {
  copyText as fieldCopyText,
  OPTIONAL_FIELDS,
  type OptionalFields,
} from "../rules/fields.ts";

/** Columns in COPY order. */
const COLUMNS = "event_id, position, user_id, device_id, content_id, event_type, occurred_at, " +
  "received_at, region, is_eu, has_consent, ip_hash, ip_prefix, error_code, do_not_track, " +
  "is_late, platform, app_version, extra_metadata, client_is_eu, subscription_plan, consent, " +
  OPTIONAL_FIELDS.map((f) => f.column).join(", ");

/**
 * SQLSTATEs that send a group to the exact path: a unique-constraint violation, a deadlock, and
 * `refuse_erased_retries` finding a retried erased event.
 */
const UNIQUE_VIOLATION = "23505";
const DEADLOCK = "40P01";
const ERASED_RETRY = "OT001";

/**
 * Fingerprints of recently appended event ids, in two generations of open-addressed tables of
 * 64-bit hashes (typed arrays: no allocation, no Set): when the current one holds `capacity / 2`
 * ids it becomes the previous one, and the old previous one is dropped. So the newest
 * `capacity / 2` to `capacity` ids are remembered, in fixed memory (16 bytes per slot, slots = twice
 * the capacity). A hit means "maybe a retry", which only sends the group down the exact path; false
 * positives (equal 64-bit hashes) have a chance of about capacity / 2^64 per id. A retry of an id no
 * longer remembered is caught by the primary key when COPY fails.
 */
export class RecentFingerprints {
  #current: FingerprintTable;
  #previous: FingerprintTable;
  #generationSize: number;

  constructor(capacity: number) {
    this.#generationSize = Math.max(1, Math.ceil(capacity / 2));
    this.#current = new FingerprintTable(this.#generationSize);
    this.#previous = new FingerprintTable(this.#generationSize);
  }

  /** Whether the id was added and is still remembered. */
  has(eventId: string): boolean {
    const [hi, lo] = fingerprintParts(eventId);
    return this.hasParts(hi, lo);
  }

  /** {@link has} for an id's {@link fingerprintParts}. */
  hasParts(hi: number, lo: number): boolean {
    return this.#current.has(hi, lo) || this.#previous.has(hi, lo);
  }

  /** Remembers the id; the oldest generation is forgotten when the current one is full. */
  add(eventId: string): void {
    const [hi, lo] = fingerprintParts(eventId);
    this.addParts(hi, lo);
  }

  /** {@link add} for an id's {@link fingerprintParts}. */
  addParts(hi: number, lo: number): void {
    if (this.#current.has(hi, lo)) return;
    if (this.#current.size >= this.#generationSize) {
      const recycled = this.#previous;
      recycled.clear();
      this.#previous = this.#current;
      this.#current = recycled;
    }
    this.#current.add(hi, lo);
  }
}

/** Linear-probing set of (hi, lo) pairs; (0, 0) marks an empty slot, so it is stored as (0, 1). */
class FingerprintTable {
  #hi: Uint32Array;
  #lo: Uint32Array;
  #mask: number;
  size = 0;

  constructor(entries: number) {
    let slots = 1;
    while (slots < entries * 2) slots *= 2;
    this.#hi = new Uint32Array(slots);
    this.#lo = new Uint32Array(slots);
    this.#mask = slots - 1;
  }

  has(hi: number, lo: number): boolean {
    if (hi === 0 && lo === 0) lo = 1;
    for (let i = lo & this.#mask;; i = (i + 1) & this.#mask) {
      if (this.#hi[i] === hi && this.#lo[i] === lo) return true;
      if (this.#hi[i] === 0 && this.#lo[i] === 0) return false;
    }
  }

  add(hi: number, lo: number): void {
    if (hi === 0 && lo === 0) lo = 1;
    let i = lo & this.#mask;
    while (this.#hi[i] !== 0 || this.#lo[i] !== 0) {
      if (this.#hi[i] === hi && this.#lo[i] === lo) return;
      i = (i + 1) & this.#mask;
    }
    this.#hi[i] = hi;
    this.#lo[i] = lo;
    this.size++;
  }

  clear(): void {
    this.#hi.fill(0);
    this.#lo.fill(0);
    this.size = 0;
  }
}

/**
 * The first row of each id within one group, by fingerprint: open addressing over row indexes, with
 * the ids themselves compared on a fingerprint match, so repeats are found exactly.
 */
class GroupIndex {
  #slots: Int32Array;
  #hi: Uint32Array;
  #lo: Uint32Array;
  #mask: number;

  constructor(rows: number) {
    let size = 2;
    while (size < rows * 2) size *= 2;
    this.#slots = new Int32Array(size).fill(-1);
    this.#hi = new Uint32Array(size);
    this.#lo = new Uint32Array(size);
    this.#mask = size - 1;
  }

  /** The index of the first row with this id: `row` itself when it is the first. */
  addFirst(hi: number, lo: number, row: number, isSameId: (first: number) => boolean): number {
    for (let i = (lo ^ hi) & this.#mask;; i = (i + 1) & this.#mask) {
      const first = this.#slots[i];
      if (first === -1) {
        this.#slots[i] = row;
        this.#hi[i] = hi;
        this.#lo[i] = lo;
        return row;
      }
      if (this.#hi[i] === hi && this.#lo[i] === lo && isSameId(first)) return first;
    }
  }
}

const PARTS: [number, number] = [0, 0];

/** Two independent 32-bit hashes of the id (FNV-1a variants with murmur finalisers), reused array. */
function fingerprintParts(text: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193) ^ (b >>> 15);
  }
  a = Math.imul(a ^ (a >>> 16), 0x85ebca6b);
  a ^= a >>> 13;
  b = Math.imul(b ^ (b >>> 13), 0xc2b2ae35);
  b ^= b >>> 16;
  PARTS[0] = a >>> 0;
  PARTS[1] = b >>> 0;
  return PARTS;
}

/** How a group was appended, for metrics and tests. */
export type AppendPath = "copy" | "insert";

/** Settings of {@link CopyLogWriter}. */
export interface CopyLogWriterOptions {
  /** A pool of its own, with one connection per concurrent append. */
  pool: pg.Pool;
  /** The exact path: `appendToLog` over Kysely, at the same positions (one statement). */
  insert: (rows: PositionedRow[]) => Promise<AppendResult>;
  /** Event ids whose fingerprints are remembered (default 200,000: about 6 MB). */
  recentIds?: number;
  /** Told which path each group took. */
  onPath?: (path: AppendPath, rows: number) => void;
}

/** The postgres log's append on PostgreSQL: COPY when it can, the exact insert when it must. */
export class CopyLogWriter {
  #o: CopyLogWriterOptions;
  #recent: RecentFingerprints;

  constructor(options: CopyLogWriterOptions) {
    this.#o = options;
    this.#recent = new RecentFingerprints(options.recentIds ?? 200_000);
  }

  /**
   * Appends one group at the positions its rows carry; same contract as `appendToLog`. Groups may
   * run concurrently (one connection each); a key conflict or deadlock between two groups sends the
   * losing one to the exact path, which then waits for the other's commit.
   */
  async append(rows: PositionedRow[]): Promise<AppendResult> {
    // Each id is hashed once: for the repeats inside the group, the recent ids, and remembering it.
    const hi = new Uint32Array(rows.length);
    const lo = new Uint32Array(rows.length);
    const firsts = new GroupIndex(rows.length);
    const unique: PositionedRow[] = [];
    // What COPY stores: each id's first row.
    const isFirst = new Uint8Array(rows.length);
    let isMaybeRetry = false;
    for (let i = 0; i < rows.length; i++) {
      const id = rows[i].eventId;
      const atMs = rows[i].atMs;
      const parts = fingerprintParts(id);
      hi[i] = parts[0];
      lo[i] = parts[1];
      // An event is its id and timestamp (the primary key): a repeat repeats both.
      const isSame = (j: number) => rows[j].eventId === id && rows[j].atMs === atMs;
      if (firsts.addFirst(hi[i], lo[i], i, isSame) !== i) continue;
      isFirst[i] = 1;
      if (this.#recent.hasParts(hi[i], lo[i])) isMaybeRetry = true;
      unique.push(rows[i]);
    }
    let result: AppendResult;
    if (!isMaybeRetry && await this.#copy(unique, rows.length - unique.length)) {
      this.#o.onPath?.("copy", rows.length);
      result = new AppendResult(rows, isFirst, rows.length - unique.length);
    } else {
      result = await this.#o.insert(rows);
      this.#o.onPath?.("insert", rows.length);
    }
    for (let i = 0; i < rows.length; i++) {
      if (result.stored[i] === 1) this.#recent.addParts(hi[i], lo[i]);
    }
    return result;
  }

  /** Closes the appender's pool. */
  async close(): Promise<void> {
    await this.#o.pool.end();
  }

  /**
   * COPYs the rows atomically, in one round trip: the COPY, then the tombstone check of the rows it
   * wrote and, when the group repeats ids, the repeat count, all in the implicit transaction of one
   * simple query. False when the group must take the exact path: one of its ids is already stored
   * (or stored by a concurrent group), or it retries an erased event.
   */
  async #copy(rows: PositionedRow[], repeated: number): Promise<boolean> {
    let first = Infinity;
    let last = -Infinity;
    for (const row of rows) {
      if (row.position < first) first = row.position;
      if (row.position > last) last = row.position;
    }
    // Positions and `repeated` are numbers this process computed: safe to inline.
    let text = `copy raw_events (${COLUMNS}) from stdin; ` +
      `select refuse_erased_retries(${first}, ${last})`;
    if (repeated > 0) {
      text += `; insert into stat_counters (name, value) values ('duplicate_events', ${repeated})
        on conflict (name) do update set value = stat_counters.value + excluded.value`;
    }
    const client = await this.#o.pool.connect();
    let isBroken = false;
    try {
      await copyInOneTrip(client, text, copyText(rows));
      return true;
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === UNIQUE_VIOLATION || code === DEADLOCK || code === ERASED_RETRY) return false;
      // Anything but the server's refusal may leave the connection mid-protocol: close it.
      isBroken = true;
      throw error;
    } finally {
      client.release(isBroken);
    }
  }
}

/** The optional fields of an event that carried none: a null per column. */
const NO_FIELDS = "\t\\N".repeat(OPTIONAL_FIELDS.length);

function fieldsText(fields: OptionalFields): string {
  let out = "";
  for (const f of OPTIONAL_FIELDS) {
    out += "\t" + fieldCopyText((fields as Record<string, unknown>)[f.key]);
  }
  return out;
}

/** The rows as COPY text (tab-separated, `\N` for null). */
export function copyText(rows: readonly PositionedRow[]): string {
  const lines: string[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    const m = storedMetadata(r.metadata);
    lines[i] = text(r.eventId) + "\t" + r.position + "\t" + text(r.userId) + "\t" +
      text(r.deviceId) + "\t" + text(r.contentId) + "\t" + text(r.type) + "\t" + iso(r.atMs) +
      "\t" + iso(r.receivedAtMs) + "\t" + text(r.region) + "\t" + bool(r.isEu) + "\t" +
      bool(r.hasConsent) + "\t" + text(r.ipHash) + "\t" + text(r.ipPrefix) + "\t" +
      nullable(r.errorCode) + "\t" + bool(r.doNotTrack) + "\t" + bool(r.isLate) + "\t" +
      nullable(m.platform) + "\t" + nullable(m.appVersion) + "\t" + nullable(m.rest) + "\t" +
      nullableBool(r.clientIsEu) + "\t" +
      nullable(r.subscriptionPlan) + "\t" +
      (r.consent === undefined || r.consent === null ? "\\N" : text(JSON.stringify(r.consent))) +
      (r.fields === undefined ? NO_FIELDS : fieldsText(r.fields)) + "\n";
  }
  return lines.join("");
}

const NEEDS_ESCAPE = /[\\\t\n\r]/;

/** A text value with COPY's backslash escapes (backslash, tab, newline, carriage return). */
function text(value: string): string {
  if (!NEEDS_ESCAPE.test(value)) return value;
  return value.replace(
    /[\\\t\n\r]/g,
    (c) => c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r",
  );
}

function nullable(value: string | null): string {
  return value === null ? "\\N" : text(value);
}

function bool(value: boolean): string {
  return value ? "t" : "f";
}

function nullableBool(value: boolean | null): string {
  return value === null ? "\\N" : bool(value);
}

const DAY_MS = 86_400_000;
let cachedDay = Number.NaN;
let cachedDayPrefix = "";
const TWO_DIGITS = Array.from({ length: 60 }, (_, i) => String(i).padStart(2, "0"));
const THREE_DIGITS = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, "0"));

/**
 * ISO-8601 of an epoch-ms time (`YYYY-MM-DDTHH:MM:SS.mmmZ`), as `Date#toISOString` writes it but
 * about ten times cheaper: the date part is cached per UTC day and the time is built from tables.
 */
export function iso(ms: number): string {
  const day = Math.floor(ms / DAY_MS);
  if (day !== cachedDay) {
    cachedDay = day;
    cachedDayPrefix = new Date(day * DAY_MS).toISOString().slice(0, 11);
  }
  let rest = Math.floor(ms) - day * DAY_MS;
  const millis = rest % 1000;
  rest = (rest - millis) / 1000;
  const seconds = rest % 60;
  rest = (rest - seconds) / 60;
  const minutes = rest % 60;
  const hours = (rest - minutes) / 60;
  return cachedDayPrefix + TWO_DIGITS[hours] + ":" + TWO_DIGITS[minutes] + ":" +
    TWO_DIGITS[seconds] + "." + THREE_DIGITS[millis] + "Z";
}
