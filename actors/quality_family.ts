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

/** Shared by entities with no window; never written into (windows are replaced, not pushed). */
const NO_WINDOWS = Object.freeze([]) as unknown as WindowCounts[];

interface QualityEntity {
  lastTouchedMs: number;
  /**
   * Open windows, usually one: an array costs about a third of a Map's memory per title or TV, and
   * its length is bounded by the windows between the lateness horizon and the clock.
   */
  windows: WindowCounts[];
}

/** Error event ids kept per window as evidence. */
const SAMPLE_IDS = 10;

/** In-memory state of the content (or device) shards hosted by one worker. */
export class QualityFamily {
  #o: QualityFamilyOptions;
  #entities = new Map<string, QualityEntity>();
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
    const entity = this.#entity(key, nowMs);
    const windowMs = this.#o.thresholds.qualityWindowMs;
    const windowStartMs = Math.floor(event.atMs / windowMs) * windowMs;
    let counts = entity.windows.find((w) => w.startMs === windowStartMs);
    if (counts === undefined) {
      counts = { startMs: windowStartMs, eventCount: 0, errorCount: 0 };
      // Copied, not pushed: a push grows the backing store by 16 slots, and most entities have one.
      entity.windows = entity.windows.concat(counts);
    }
    counts.eventCount++;
    if (event.type === "ERROR") {
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
    for (const key of this.#entities.keys()) {
      if (shardOf(key, this.#o.shardCount) === shard) this.#entities.delete(key);
    }
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
    for (const entity of this.#entities.values()) {
      if (entity.windows.some((w) => w.startMs + windowMs < horizonMs)) {
        const open = entity.windows.filter((w) => w.startMs + windowMs >= horizonMs);
        entity.windows = open.length === 0 ? NO_WINDOWS : open;
      }
    }
  }

  /**
   * Evicts entities untouched since `idleSinceMs` (wall clock) with no window left open (call after
   * {@link prune}); returns how many.
   */
  passivate(idleSinceMs: number): number {
    let evicted = 0;
    for (const [key, entity] of this.#entities) {
      if (entity.lastTouchedMs < idleSinceMs && entity.windows.length === 0) {
        this.#entities.delete(key);
        evicted++;
      }
    }
    return evicted;
  }

  #entity(key: string, nowMs: number): QualityEntity {
    let entity = this.#entities.get(key);
    if (entity === undefined) {
      entity = { lastTouchedMs: nowMs, windows: NO_WINDOWS };
      this.#entities.set(key, entity);
    }
    entity.lastTouchedMs = nowMs;
    return entity;
  }
}
