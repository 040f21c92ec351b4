/**
 * The content and device side of the actor system: per-entity tumbling windows of events and errors,
 * and the quality rule over them. One instance per family (`content`, `device`) in each worker.
 *
 * @module
 */
import type { FlushBatch } from "../db/flush_batch.ts";
import {
  isPlaybackType,
  QUALITY_RULES,
  type QualityFacts,
  type RuleThresholds,
  type TelemetryEvent,
} from "../rules/mod.ts";
import { addFlag, advanceCheckpoint, emptyBatch, isEmptyBatch } from "./pending.ts";
import { RecentIdsByShard } from "./recent_ids.ts";
import { shardOf } from "./shard_of.ts";
import { Slots } from "./slots.ts";

/** The fields of an event the quality side needs; a smaller message than the whole event. */
export type QualityEvent = Pick<
  TelemetryEvent,
  | "eventId"
  | "userId"
  | "deviceId"
  | "contentId"
  | "type"
  | "atMs"
  | "region"
  | "isEu"
  | "errorCode"
  | "isLate"
  | "position"
  | "fields"
>;

/** Settings of a quality family. */
export interface QualityFamilyOptions {
  family: "content" | "device";
  shardCount: number;
  dedupeIdsPerShard: number;
  thresholds: RuleThresholds;
  onRuleError: (rule: string, event: QualityEvent, error: unknown) => void;
  /** Owned shards and their checkpoints (see UserFamily); undefined: every shard. */
  owned?: ReadonlyMap<number, number>;
}

interface WindowCounts {
  startMs: number;
  eventCount: number;
  errorCount: number;
  /** Created on the window's first error: most windows have none (per-entity memory). */
  errors?: WindowErrors;
}

interface WindowErrors {
  byCode: Record<string, number>;
  sampleEventIds: string[];
  /** Devices that sent an error, at most `qualityMinDevices`: enough to judge a content window. */
  devices: Set<string>;
}

const NO_ERRORS: Readonly<WindowErrors> = Object.freeze({
  byCode: Object.freeze({}),
  sampleEventIds: Object.freeze([]) as unknown as string[],
  devices: new Set<string>(),
});

/** In the window-start column: the entity's windows are objects (a start no window can have). */
const AS_OBJECTS = -Infinity;

/** Error event ids kept per window as evidence. */
const SAMPLE_IDS = 10;

/** In-memory state of the content (or device) shards hosted by one worker. */
export class QualityFamily {
  #o: QualityFamilyOptions;
  /**
   * A slot per title or TV in memory; its state is in the columns below (see `slots.ts`). Most have
   * one open window without errors, held in two columns; the others keep their open windows as
   * objects in `#windows`, a list whose length is bounded by the windows between the lateness
   * horizon and the clock.
   */
  #entities = new Slots((slot) => this.#clear(slot));
  /**
   * Start of the entity's one open window without errors; NaN: no window; {@link AS_OBJECTS}: its
   * windows are objects in `#windows`.
   */
  #windowStartMs: number[] = [];
  /** Events in that window. */
  #windowEvents: number[] = [];
  /** Every open window of the few entities with several, or with errors in one, by slot. */
  #windows = new Map<number, WindowCounts[]>();
  #recent: RecentIdsByShard;
  #scratch = emptyBatch();

  constructor(options: QualityFamilyOptions) {
    this.#o = options;
    this.#recent = new RecentIdsByShard(options.dedupeIdsPerShard);
  }

  /** Number of entities currently held in memory. */
  get entityCount(): number {
    return this.#entities.size;
  }

  /** Adds one event to its entity's window and runs the quality rule on it. */
  apply(event: QualityEvent, nowMs: number, batch: FlushBatch): void {
    const key = this.#o.family === "content" ? event.contentId : event.deviceId;
    const shard = shardOf(key, this.#o.shardCount);
    const through = this.#o.owned === undefined ? -1 : this.#o.owned.get(shard);
    if (through === undefined) return;
    const out = event.position <= through ? this.#scratch : batch;
    advanceCheckpoint(out, this.#o.family, shard, event.position);
    if (!this.#recent.add(shard, event.eventId, event.atMs) || event.isLate) return;
    // Only playback events say anything about a title's or a TV's playback quality.
    if (!isPlaybackType(event.type)) return;
    const slot = this.#entities.touch(key, nowMs);
    const windowMs = this.#o.thresholds.qualityWindowMs;
    const windowStartMs = Math.floor(event.atMs / windowMs) * windowMs;
    // A warning (`fatal: false`) still counts as an event, not as a failure of the title or TV.
    const isError = event.type === "ERROR" && event.fields?.fatal !== false;
    const counts = this.#countIn(slot, windowStartMs, isError);
    if (isError) {
      counts.errorCount++;
      const errors = counts.errors ??= { byCode: {}, sampleEventIds: [], devices: new Set() };
      const code = event.errorCode ?? "UNKNOWN";
      errors.byCode[code] = (errors.byCode[code] ?? 0) + 1;
      if (errors.sampleEventIds.length < SAMPLE_IDS) errors.sampleEventIds.push(event.eventId);
      // Bounded: past the threshold, more devices change nothing the rule decides.
      if (errors.devices.size < this.#o.thresholds.qualityMinDevices) {
        errors.devices.add(event.deviceId);
      }
    }
    const facts: QualityFacts = {
      entityType: this.#o.family,
      entityId: key,
      windowStartMs,
      windowEndMs: windowStartMs + windowMs,
      eventCount: counts.eventCount,
      errorCount: counts.errorCount,
      errorsByCode: (counts.errors ?? NO_ERRORS).byCode,
      sampleEventIds: (counts.errors ?? NO_ERRORS).sampleEventIds,
      errorDeviceCount: (counts.errors ?? NO_ERRORS).devices.size,
    };
    for (const rule of QUALITY_RULES) {
      try {
        const flag = rule.evaluate(event, facts, this.#o.thresholds);
        if (flag !== null) addFlag(out, flag);
      } catch (error) {
        this.#o.onRuleError(rule.id, event, error);
      }
    }
  }

  /** Forgets every entity and remembered id of a shard this worker no longer owns. */
  dropShard(shard: number): void {
    this.#recent.drop(shard);
    this.#entities.forEach((_, key) => {
      if (shardOf(key, this.#o.shardCount) === shard) this.#entities.release(key);
    });
  }

  /** Drops what replayed events produced: it was committed before the restart. */
  discardScratch(): void {
    if (!isEmptyBatch(this.#scratch)) this.#scratch = emptyBatch();
  }

  /**
   * Drops windows that ended before the horizon (no on-time event can reach them any more) and
   * duplicate-detection ids older than it.
   */
  prune(horizonMs: number): void {
    this.#recent.prune(horizonMs);
    const windowMs = this.#o.thresholds.qualityWindowMs;
    // Over the column itself: a free slot's start is NaN, which no comparison passes.
    const starts = this.#windowStartMs;
    for (let slot = 0; slot < starts.length; slot++) {
      if (starts[slot] !== AS_OBJECTS && starts[slot] + windowMs < horizonMs) {
        starts[slot] = NaN;
        this.#windowEvents[slot] = 0;
      }
    }
    // Entries are replaced or deleted, never deleted and added again (that would visit them twice).
    this.#windows.forEach((windows, slot) => {
      if (!windows.some((w) => w.startMs + windowMs < horizonMs)) return;
      const open = windows.filter((w) => w.startMs + windowMs >= horizonMs);
      if (open.length > 1 || (open.length === 1 && open[0].errors !== undefined)) {
        this.#windows.set(slot, open);
        return;
      }
      this.#windows.delete(slot);
      // Back to the columns: one plain window, or none.
      starts[slot] = open.length === 1 ? open[0].startMs : NaN;
      this.#windowEvents[slot] = open.length === 1 ? open[0].eventCount : 0;
    });
  }

  /**
   * Evicts entities untouched since `idleSinceMs` (wall clock) with no window left open (call after
   * {@link prune}); returns how many.
   */
  passivate(idleSinceMs: number): number {
    let evicted = 0;
    this.#entities.forEach((slot, key) => {
      const hasWindow = !Number.isNaN(this.#windowStartMs[slot]);
      if (this.#entities.touchedMs(slot) < idleSinceMs && !hasWindow) {
        this.#entities.release(key);
        evicted++;
      }
    });
    return evicted;
  }

  /** Empties a slot in every column (see `slots.ts`). */
  #clear(slot: number): void {
    if (this.#windowStartMs[slot] === AS_OBJECTS) this.#windows.delete(slot);
    this.#windowStartMs[slot] = NaN;
    this.#windowEvents[slot] = 0;
  }

  /**
   * Counts one event into the entity's window starting at `windowStartMs`. Returns that window's
   * counts: a fresh object when the window lives in the columns (it is not kept), or the kept one.
   */
  #countIn(slot: number, windowStartMs: number, isError: boolean): WindowCounts {
    const startMs = this.#windowStartMs[slot];
    let windows: WindowCounts[];
    if (startMs === AS_OBJECTS) windows = this.#windows.get(slot)!;
    else {
      const isFree = Number.isNaN(startMs);
      if (!isError && (isFree || startMs === windowStartMs)) {
        this.#windowStartMs[slot] = windowStartMs;
        const eventCount = isFree ? 1 : this.#windowEvents[slot] + 1;
        this.#windowEvents[slot] = eventCount;
        return { startMs: windowStartMs, eventCount, errorCount: 0 };
      }
      // A second window or a first error: the windows become objects.
      windows = isFree ? [] : [{ startMs, eventCount: this.#windowEvents[slot], errorCount: 0 }];
      this.#windowStartMs[slot] = AS_OBJECTS;
      this.#windows.set(slot, windows);
    }
    let counts = windows.find((w) => w.startMs === windowStartMs);
    if (counts === undefined) {
      counts = { startMs: windowStartMs, eventCount: 0, errorCount: 0 };
      // Copied, not pushed: a push grows the backing store by 16 slots.
      this.#windows.set(slot, windows.concat(counts));
    }
    counts.eventCount++;
    return counts;
  }
}
