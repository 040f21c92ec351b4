/**
 * The views of the TVs in a worker's user shards: each TV's events with QoE meaning, the views
 * they make ({@link viewsOf}) and what each view was last counted as. At every flush the TVs that
 * changed are recomputed and the difference is flushed: a late event that turns an exit before
 * video start into a start retracts the exit and adds the start, so totals never depend on arrival
 * order. What each view was counted as is flushed with the deltas (`open_views`, one row per view,
 * written only when the view changed); the TV's events are already in `raw_events`, so a worker that
 * takes the shard over (restart, hand-over) reads them back from there and carries on from exactly
 * what was counted. (Storing each TV's whole state at every flush cost its whole history per flush:
 * a cluster under load fell minutes behind.)
 *
 * A TV is kept until the watermark passes its last event + `VIEW_IDLE_MS` + `ALLOWED_LATENESS_MS`;
 * an event later than that (marked late) counts in the totals and `qoe_late_events`, and changes
 * no view.
 *
 * @module
 */
import { HOUR_MS, KEY_SEP } from "../db/flush_batch.ts";
import type { FlushBatch, OpenViewsRow } from "../db/flush_batch.ts";
import {
  compareViewEvents,
  isViewType,
  outcomeOf,
  QOE_MEASURES,
  type ViewDims,
  type ViewEvent,
  type ViewOutcome,
  viewsOf,
} from "../rules/qoe.ts";
import type { TelemetryEvent } from "../rules/mod.ts";
import { addCounter } from "./pending.ts";
import { anomalyQoeCountsOf } from "../rules/anomaly_series.ts";
import {
  isTroubledView,
  MAX_EVIDENCE_VIEWS,
  type QoeRuleThresholds,
  windowCountsOf,
  windowStartOf,
} from "../rules/qoe_rule.ts";

/** Settings of a {@link ViewTracker}. */
export interface ViewTrackerOptions {
  idleMs: number;
  allowedLatenessMs: number;
  isBusinessError: (code: string | null) => boolean;
  /** Events kept per TV; past it an event is counted in `qoe_events_over_cap` and left out. */
  maxEventsPerTv: number;
  /**
   * Events held at most over all TVs (about 400 bytes each); past it the longest-held TV's views
   * are ended and let go, so memory stays bounded however many TVs play at once.
   */
  maxEvents: number;
  /** Dimensions an event is counted under (platform and app version read from its metadata). */
  dimsOf: (event: TelemetryEvent) => ViewDims;
  /** The `qoe` rule's window and thresholds: each view is also counted in its window's row. */
  qoeRule: QoeRuleThresholds;
  /**
   * Window of the anomaly series (`ANOMALY_WINDOW_MS`): a change of a view's outcome is counted
   * there in the window of the TV's newest event, when it happened (absent: not counted).
   */
  anomalyWindowMs?: number;
}

/** One TV's events and what its views were counted as. */
interface Tv {
  shard: number;
  userId: string;
  deviceId: string;
  events: ViewEvent[];
  /** What each view was counted as, by view key (an array: a TV has few views, a Map costs more). */
  emitted: Array<[string, ViewOutcome]>;
  /** When the newest view ends by idling if nothing arrives (null: it has ended). */
  openUntilMs: number | null;
  /**
   * The watermark its views were last counted at: they are never counted at a lower one (after a
   * restart the watermark starts low, and a view ended by idling must stay ended).
   */
  watermarkMs: number;
}

/**
 * The stored form of what a view was counted as (`open_views.outcome`), compact (one row per view
 * is written at every change): [start ms, watermark ms the TV was counted at, startup bucket, ref,
 * title, region, platform, app version, plan, CDN, ...counts]. A TV read back holds its views'
 * outcomes and its events from the earliest view's start on (from `raw_events`).
 */
export type StoredOutcome = [
  number,
  number,
  number,
  string,
  string,
  string,
  string,
  string,
  string,
  string,
  ...number[],
];

/** A view's outcome as stored, counted at `watermarkMs`. */
function storedOf(o: ViewOutcome, watermarkMs: number): StoredOutcome {
  const d = o.dims;
  return [
    o.startMs,
    watermarkMs,
    o.startupBucket,
    o.ref,
    d.contentId,
    d.region,
    d.platform,
    d.appVersion,
    d.plan,
    d.cdn,
    ...o.counts,
  ];
}

/** A stored outcome read back, with the watermark it was counted at. */
function outcomeOfStored(s: StoredOutcome): { outcome: ViewOutcome; watermarkMs: number } {
  const [startMs, watermarkMs, startupBucket, ref, contentId, region, platform, appVersion, plan] =
    s;
  const outcome: ViewOutcome = {
    hourMs: Math.floor(startMs / HOUR_MS) * HOUR_MS,
    dims: { contentId, region, platform, appVersion, plan, cdn: s[9] },
    startupBucket,
    startMs,
    ref,
    counts: s.slice(10) as number[],
  };
  return { outcome, watermarkMs };
}

/** Event time a stored outcome's view started at (`raw_events` are read back from there). */
export function storedStartMs(outcome: unknown): number {
  return Array.isArray(outcome) && typeof outcome[0] === "number" ? outcome[0] : 0;
}

/** Key of a QoE aggregate row: hour, then the dimensions, joined by {@link KEY_SEP}. */
export function qoeKey(hourMs: number, d: ViewDims): string {
  return [hourMs, d.contentId, d.region, d.platform, d.appVersion, d.plan, d.cdn].join(KEY_SEP);
}

/** Watermark progress between two walks over every TV (idling and letting go are judged then). */
const WALK_EVERY_MS = 60_000;

/** Tracks the views of one worker's user shards. */
export class ViewTracker {
  #o: ViewTrackerOptions;
  #tvs = new Map<string, Tv>();
  #dirty = new Set<Tv>();
  #eventCount = 0;
  /** The watermark of the last walk over every TV. */
  #walkedAtMs = -Infinity;

  constructor(options: ViewTrackerOptions) {
    this.#o = options;
  }

  /** TVs held (each with its open and recently ended views). */
  get tvCount(): number {
    return this.#tvs.size;
  }

  /** Events held over all TVs (about 400 bytes each, measured). */
  get eventCount(): number {
    return this.#eventCount;
  }

  /** Adds an event of a user in `shard`; counts it as late for QoE when it is too late. */
  apply(event: TelemetryEvent, shard: number, batch: FlushBatch): void {
    if (!hasViewMeaning(event)) return;
    if (event.isLate) {
      addCounter(batch.counters, "qoe_late_events", 1);
      return;
    }
    const key = event.userId + KEY_SEP + event.deviceId;
    let tv = this.#tvs.get(key);
    while (this.#eventCount >= this.#o.maxEvents && this.#tvs.size > 0) this.#evictOldest(batch);
    if (tv === undefined || !this.#tvs.has(key)) {
      tv = newTv(shard, event.userId, event.deviceId);
      this.#tvs.set(key, tv);
    }
    if (isHeld(tv, event)) return;
    if (tv.events.length >= this.#o.maxEventsPerTv) {
      addCounter(batch.counters, "qoe_events_over_cap", 1);
      return;
    }
    this.#hold(tv, event);
    this.#dirty.add(tv);
  }

  /** Puts an event among its TV's, in event-time order. */
  #hold(tv: Tv, event: TelemetryEvent): void {
    const f = event.fields;
    const last = tv.events[tv.events.length - 1];
    const dims = this.#o.dimsOf(event);
    const e: ViewEvent = {
      eventId: event.eventId,
      atMs: event.atMs,
      type: event.type,
      contentId: event.contentId,
      viewId: f?.viewId ?? null,
      fatal: f?.fatal ?? true,
      errorCode: event.errorCode,
      bitrateKbps: f?.bitrateKbps ?? null,
      renditionHeight: f?.renditionHeight ?? null,
      playerHeight: f?.playerHeight ?? null,
      // Consecutive events of a TV nearly always share their dimensions: keep one object.
      dims: last !== undefined && sameDims(last.dims, dims) ? last.dims : dims,
    };
    this.#eventCount++;
    if (last === undefined || compareViewEvents(last, e) <= 0) tv.events.push(e);
    else tv.events.splice(insertionPoint(tv.events, e.atMs, e.eventId), 0, e);
  }

  /**
   * Recomputes the TVs that changed, or whose views the watermark ended or let go, and adds the
   * differences to the batch, with the TVs' new state (or its deletion).
   */
  flush(watermarkMs: number, batch: FlushBatch): void {
    const horizonMs = watermarkMs - this.#o.idleMs - this.#o.allowedLatenessMs;
    const visit = (key: string, tv: Tv) => {
      const lastMs = tv.events[tv.events.length - 1]?.atMs ?? -Infinity;
      const isDone = lastMs < horizonMs;
      // Without new events a TV changes only when the watermark ends its newest view by idling.
      const isIdled = tv.openUntilMs !== null && watermarkMs > tv.openUntilMs;
      if (!this.#dirty.has(tv) && !isDone && !isIdled) return;
      this.#recompute(tv, watermarkMs, batch);
      if (isDone) this.#letGo(key, tv, batch);
    };
    // Every TV is looked at once the watermark moved a minute (idling and letting go are judged
    // in minutes; a walk over a million TVs at every flush cost more than the flush's writes).
    if (watermarkMs - this.#walkedAtMs >= WALK_EVERY_MS) {
      this.#walkedAtMs = watermarkMs;
      for (const [key, tv] of this.#tvs) visit(key, tv);
    } else {
      for (const tv of this.#dirty) visit(tv.userId + KEY_SEP + tv.deviceId, tv);
    }
    this.#dirty.clear();
  }

  /** Ends the views of the TV held longest (insertion order) and lets it go. */
  #evictOldest(batch: FlushBatch): void {
    for (const [key, tv] of this.#tvs) {
      this.#recompute(tv, Infinity, batch);
      this.#letGo(key, tv, batch);
      this.#dirty.delete(tv);
      addCounter(batch.counters, "qoe_tvs_evicted", 1);
      return;
    }
  }

  /** Forgets a TV whose views are all final, deleting their stored rows. */
  #letGo(key: string, tv: Tv, batch: FlushBatch): void {
    this.#tvs.delete(key);
    this.#eventCount -= tv.events.length;
    for (const [viewKey] of tv.emitted) {
      batch.openViews.set(rowKey(tv, viewKey), { ...rowOf(tv, viewKey), outcome: null });
    }
  }

  /**
   * Takes the stored state of TVs in a shard this worker now owns, with their events read back
   * from `raw_events` (any order; those before a TV's `sinceMs`, late ones and others are skipped).
   */
  load(rows: ReadonlyArray<OpenViewsRow>, events: ReadonlyArray<TelemetryEvent>): void {
    const loaded = new Map<string, { tv: Tv; sinceMs: number }>();
    for (const row of rows) {
      if (row.outcome === null) continue;
      const { outcome, watermarkMs } = outcomeOfStored(row.outcome as StoredOutcome);
      const key = row.userId + KEY_SEP + row.deviceId;
      let held = loaded.get(key);
      if (held === undefined) {
        held = { tv: newTv(row.shard, row.userId, row.deviceId), sinceMs: Infinity };
        loaded.set(key, held);
        this.#tvs.set(key, held.tv);
      }
      held.tv.emitted.push([row.viewKey, outcome]);
      held.tv.watermarkMs = Math.max(held.tv.watermarkMs, watermarkMs);
      // Events before a TV's first view belong to none: they change nothing read back or not.
      held.sinceMs = Math.min(held.sinceMs, outcome.startMs);
    }
    for (const event of events) {
      const held = loaded.get(event.userId + KEY_SEP + event.deviceId);
      if (
        held === undefined || event.isLate || !hasViewMeaning(event) ||
        event.atMs < held.sinceMs || isHeld(held.tv, event) ||
        held.tv.events.length >= this.#o.maxEventsPerTv
      ) continue;
      this.#hold(held.tv, event);
    }
    // Recounted at the next flush: the log may replay events read back here (no news to the TV).
    for (const { tv } of loaded.values()) this.#dirty.add(tv);
  }

  /** Forgets the TVs of a shard handed over (their state is in the database as last flushed). */
  dropShard(shard: number): void {
    for (const [key, tv] of this.#tvs) {
      if (tv.shard !== shard) continue;
      this.#tvs.delete(key);
      this.#eventCount -= tv.events.length;
      this.#dirty.delete(tv);
    }
  }

  /** Forgets a user's TVs (deletion); their stored state is deleted with the user's rows. */
  forgetUser(userId: string): void {
    for (const [key, tv] of this.#tvs) {
      if (tv.userId !== userId) continue;
      this.#tvs.delete(key);
      this.#eventCount -= tv.events.length;
      this.#dirty.delete(tv);
    }
  }

  #recompute(tv: Tv, atWatermarkMs: number, batch: FlushBatch): void {
    const watermarkMs = Math.max(atWatermarkMs, tv.watermarkMs);
    tv.watermarkMs = watermarkMs;
    const views = viewsOf(tv.deviceId, tv.events, this.#o.idleMs, watermarkMs);
    const now = new Map<string, ViewOutcome>();
    for (const view of views) now.set(view.key, outcomeOf(view, this.#o.isBusinessError));
    const rule = this.#o.qoeRule;
    const newestEvent = tv.events[tv.events.length - 1];
    const at: Happened = { windowMs: this.#o.anomalyWindowMs, atMs: newestEvent?.atMs ?? null };
    const before = new Map(tv.emitted);
    for (const [key, old] of tv.emitted) {
      if (now.has(key)) continue;
      addOutcome(batch, old, -1, rule, at);
      batch.openViews.set(rowKey(tv, key), { ...rowOf(tv, key), outcome: null });
    }
    for (const [key, outcome] of now) {
      const old = before.get(key);
      if (old !== undefined && sameOutcome(old, outcome)) continue;
      if (old !== undefined) addOutcome(batch, old, -1, rule, at);
      addOutcome(batch, outcome, 1, rule, at);
      batch.openViews.set(rowKey(tv, key), {
        ...rowOf(tv, key),
        outcome: storedOf(outcome, watermarkMs),
      });
    }
    tv.emitted = [...now];
    const newest = views[views.length - 1];
    tv.openUntilMs = newest === undefined || newest.isEnded
      ? null
      : newest.events[newest.events.length - 1].atMs + this.#o.idleMs;
  }
}

function sameDims(a: ViewDims, b: ViewDims): boolean {
  return a.contentId === b.contentId && a.region === b.region && a.platform === b.platform &&
    a.appVersion === b.appVersion && a.plan === b.plan && a.cdn === b.cdn;
}

function sameOutcome(a: ViewOutcome, b: ViewOutcome): boolean {
  if (
    a.hourMs !== b.hourMs || a.startupBucket !== b.startupBucket || a.startMs !== b.startMs ||
    !sameDims(a.dims, b.dims)
  ) return false;
  for (let i = 0; i < QOE_MEASURES; i++) if (a.counts[i] !== b.counts[i]) return false;
  return true;
}

/** Where a recount happened: the anomaly window length and the TV's newest event time. */
interface Happened {
  windowMs: number | undefined;
  atMs: number | null;
}

/**
 * Adds (`sign` 1) or retracts (-1) a view's outcome in the batch: its QoE row, its row of the
 * `qoe` rule's window (a troubled view is named there as evidence when it is added) and, in the
 * window the change happened in, its anomaly QoE row (`rules/anomaly_series.ts`).
 */
function addOutcome(
  batch: FlushBatch,
  o: ViewOutcome,
  sign: 1 | -1,
  rule: QoeRuleThresholds,
  at: Happened,
): void {
  const key = qoeKey(o.hourMs, o.dims);
  addCounts(batch.qoe, key, o.counts, sign);
  if (o.startupBucket >= 0) addCounter(batch.qoeStartup, key + KEY_SEP + o.startupBucket, sign);
  const windowKey = [
    windowStartOf(o.startMs, rule.windowMs),
    o.dims.contentId,
    o.dims.cdn,
    o.dims.region,
  ]
    .join(KEY_SEP);
  const windowCounts = windowCountsOf(o, rule);
  addCounts(batch.qoeWindows, windowKey, windowCounts, sign);
  if (at.windowMs !== undefined) {
    const atMs = at.atMs ?? o.startMs;
    const anomalyKey = Math.floor(atMs / at.windowMs) * at.windowMs + KEY_SEP + o.dims.contentId +
      KEY_SEP + o.dims.cdn + KEY_SEP + o.dims.plan;
    addCounts(batch.anomalyQoe, anomalyKey, anomalyQoeCountsOf(windowCounts), sign);
  }
  if (sign === 1 && isTroubledView(o, rule)) {
    const refs = batch.qoeWindowViews.get(windowKey) ?? [];
    if (refs.length < MAX_EVIDENCE_VIEWS && !refs.includes(o.ref)) refs.push(o.ref);
    batch.qoeWindowViews.set(windowKey, refs);
  }
}

function addCounts(rows: Map<string, number[]>, key: string, counts: number[], sign: number): void {
  let row = rows.get(key);
  if (row === undefined) {
    row = new Array<number>(counts.length).fill(0);
    rows.set(key, row);
  }
  for (let i = 0; i < counts.length; i++) row[i] += sign * counts[i];
}

function rowKey(tv: Tv, viewKey: string): string {
  return tv.shard + KEY_SEP + tv.userId + KEY_SEP + tv.deviceId + KEY_SEP + viewKey;
}

function rowOf(tv: Tv, viewKey: string): Omit<OpenViewsRow, "outcome"> {
  return { shard: tv.shard, userId: tv.userId, deviceId: tv.deviceId, viewKey };
}

/** Index of the first held event after (atMs, eventId): events are sorted that way. */
function insertionPoint(events: readonly ViewEvent[], atMs: number, eventId: string): number {
  let lo = 0;
  let hi = events.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = events[mid];
    if (e.atMs < atMs || (e.atMs === atMs && e.eventId <= eventId)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Whether the TV holds this event already (a retry or a replay: same id, same time). */
function isHeld(tv: Tv, event: TelemetryEvent): boolean {
  const at = insertionPoint(tv.events, event.atMs, event.eventId);
  const before = tv.events[at - 1];
  return before !== undefined && before.atMs === event.atMs && before.eventId === event.eventId;
}

function newTv(shard: number, userId: string, deviceId: string): Tv {
  return {
    shard,
    userId,
    deviceId,
    events: [],
    emitted: [],
    openUntilMs: null,
    watermarkMs: 0,
  };
}

/** Whether the tracker keeps an event: a type with QoE meaning, a HEARTBEAT only with rendition. */
function hasViewMeaning(event: TelemetryEvent): boolean {
  if (!isViewType(event.type)) return false;
  const f = event.fields;
  return event.type !== "HEARTBEAT" || f?.bitrateKbps !== undefined ||
    f?.renditionHeight !== undefined || f?.playerHeight !== undefined;
}
