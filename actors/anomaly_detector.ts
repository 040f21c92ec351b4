/**
 * The anomaly detector: steps window by window through the series the flushes wrote
 * (`rules/anomaly_series.ts`), judges every watched key with the model of `rules/anomaly.ts` (one
 * {@link KeyTracker} per key) and keeps incidents (`db/incidents.ts`).
 *
 * - **When.** A window is judged once the watermark passed its end by `ANOMALY_GRACE_MS` (batching
 *   TVs' events have arrived); when no event arrived for two windows (a total outage freezes the
 *   watermark), the wall clock steps it instead.
 * - **Once per cluster.** The detector holds a lease row (`anomaly_detector`); a node that takes it
 *   over warms its trackers up on the windows of the last day, silently, before it judges.
 * - **Baselines.** The same window of past weeks comes from the hourly copies, scaled to the window,
 *   without the hours of an incident or a maintenance window of that key.
 * - **Watched keys.** Keys expecting at least `ANOMALY_MIN_EVENTS` per window; the
 *   `ANOMALY_MAX_SERIES` busiest are tracked (a quarter of the minimum already, so a key's level and
 *   scale are known when it grows into it).
 * - **Incidents.** A key that opens while an active incident of the same family names its value in
 *   the drill-down (or is named by it) attaches to that incident as `related`; otherwise it opens
 *   its own. Maintenance windows suppress opening.
 *
 * @module
 */
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.ts";
import { HOUR_MS, hourOf, KEY_SEP } from "../db/flush_batch.ts";
import {
  type AnomalySettings,
  contributions,
  DEFAULT_ANOMALY_SETTINGS,
  formatContribution,
  KeyTracker,
  median,
  type Peer,
  seasonalBaseline,
  type SegmentChange,
  type SeriesPoint,
  type TrackedStep,
  WEEK_MS,
} from "../rules/anomaly.ts";
import { SERIES, type SeriesDefinition } from "../rules/anomaly_series.ts";
import {
  type CubeName,
  type CubeRow,
  excludeHours,
  readExcludedHours,
  readHourRows,
  readWindowRows,
} from "../db/anomaly_series.ts";
import {
  activeIncidents,
  type AlertPolicy,
  attachRelated,
  type DrillDownEntry,
  type Exposure,
  type IncidentReading,
  isUnderMaintenance,
  maintenanceBetween,
  type MaintenanceWindow,
  openIncident,
  recoverIncident,
  updateIncident,
} from "../db/incidents.ts";
import type { Level } from "../rules/types.ts";
import type { Logger } from "../logger.ts";
import type { AnomalyConfig } from "../config.ts";
import { sql } from "kysely";

/** Settings of an {@link AnomalyDetector}: `ANOMALY_*` and `PLAN_*` besides these. */
export interface AnomalyDetectorOptions extends Omit<AnomalyConfig, "isEnabled"> {
  db: Kysely<Database>;
  windowMs: number;
  /** The newest event time seen (the region's watermark). */
  watermarkMs: () => number;
  now?: () => number;
  /** This node's name in the lease. */
  owner: string;
  /** Which incident revisions alert (`ALERT_WEBHOOK_URL`, `ALERT_MIN_LEVEL`). */
  alerts: AlertPolicy;
  logger: Logger;
}

/** Levels of an incident from how long it lasts and how many viewers it touches. */
export const LEVEL_RULES = {
  mediumWindows: 6,
  highWindows: 24,
  mediumViewers: 100,
  highViewers: 1_000,
} as const;

/** Keys judged between two turns of the event loop. */
const YIELD_EVERY_KEYS = 500;

/** Windows replayed silently after the lease is taken (one day, within the 2 days kept). */
const WARMUP_WINDOWS_PER_HOUR = 24;

/** An incident's level: LOW, MEDIUM from 30 minutes or 100 viewers, HIGH from 2 hours or 1,000. */
export function incidentLevel(windows: number, viewers: number): Level {
  if (windows >= LEVEL_RULES.highWindows || viewers >= LEVEL_RULES.highViewers) return "HIGH";
  if (windows >= LEVEL_RULES.mediumWindows || viewers >= LEVEL_RULES.mediumViewers) return "MEDIUM";
  return "LOW";
}

/** What one key holds in one window, and the cube rows it came from. */
interface KeyWindow {
  num: number;
  den: number;
  /** The sample behind the rate (`size` of the series, else the denominator). */
  size: number;
  viewers: number;
  rows: CubeRow[];
}

/** An incident the detector follows: its id, or the incident a related key is attached to. */
interface Following {
  id: string;
  isRelated: boolean;
  windows: number;
  /** The drill-down values of the incident, `dimension=value`, for relating later keys. */
  names: Set<string>;
}

/** Judges windows, on demand ({@link stepTo}) or every interval ({@link start}). */
export class AnomalyDetector {
  #o: AnomalyDetectorOptions;
  #s: AnomalySettings;
  #trackers = new Map<string, KeyTracker>();
  /** When each tracked key was last a candidate: a key gone for a day loses its tracker. */
  #lastCandidate = new Map<string, number>();
  #following = new Map<string, Following>();
  #judgedUntil: number | null = null;
  #hourCache = new Map<number, Promise<PastHours>>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #running: Promise<number> | null = null;
  #lastWatermark = 0;
  #watermarkMovedAt = 0;
  #isWarm = false;

  constructor(options: AnomalyDetectorOptions) {
    this.#o = options;
    this.#s = {
      ...DEFAULT_ANOMALY_SETTINGS,
      windowMs: options.windowMs,
      baselineWeeks: options.baselineWeeks,
      minEvents: options.minEvents,
      // Residuals of the last 2 days: as long as the window table keeps them for a warm-up.
      scaleWindows: Math.round(2 * 24 * HOUR_MS / options.windowMs),
    };
  }

  /** Keys with a tracker (watched, or a quarter of the way there). */
  get trackedKeys(): number {
    return this.#trackers.size;
  }

  /** Start of the first window not judged yet (null before the first run). */
  get judgedUntil(): number | null {
    return this.#judgedUntil;
  }

  /** Runs a pass every `intervalMs`; a failed pass is logged and retried at the next. */
  start(intervalMs: number): void {
    this.#timer = setInterval(() => {
      this.runOnce().catch((error) =>
        this.#o.logger.warn("Anomaly detection failed: the next pass retries", {
          error: (error as Error).message,
        })
      );
    }, intervalMs);
  }

  /** Stops the interval and waits for a running pass. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running?.catch(() => {});
  }

  /** Takes the lease and judges every window the watermark (or wall clock) has passed. */
  runOnce(): Promise<number> {
    return this.#running ??= this.#pass().finally(() => this.#running = null);
  }

  async #pass(): Promise<number> {
    const nowMs = (this.#o.now ?? Date.now)();
    const watermark = this.#o.watermarkMs();
    if (watermark !== this.#lastWatermark) {
      this.#lastWatermark = watermark;
      this.#watermarkMovedAt = nowMs;
    }
    if (!await this.#holdLease(nowMs)) return 0;
    const isFrozen = nowMs - this.#watermarkMovedAt >= 2 * this.#o.windowMs;
    const horizon = (isFrozen ? Math.max(watermark, nowMs) : watermark) - this.#o.graceMs;
    // A server that never judged and has seen no event waits for one: judging up to the wall clock
    // would skip the windows of backdated traffic (the scripted week) before it arrives.
    if (watermark === 0 && (!isFrozen || this.#judgedUntil === null)) return 0;
    // Back after a long stop: the windows of the day before now, not every window since (the
    // window table keeps 2 days; a gap of days would be judged as days of outage).
    const w = this.#o.windowMs;
    const oldest = Math.floor((horizon - 24 * HOUR_MS) / w) * w;
    if (this.#judgedUntil !== null && this.#judgedUntil < oldest) {
      this.#o.logger.warn("Anomaly detection resumes a day back: older windows are not judged", {
        judged_until: new Date(this.#judgedUntil).toISOString(),
        resumes_at: new Date(oldest).toISOString(),
      });
      this.#judgedUntil = oldest;
    }
    return await this.stepTo(horizon);
  }

  async #holdLease(nowMs: number): Promise<boolean> {
    const leaseUntil = new Date(nowMs + 3 * 60_000).toISOString();
    const result = await sql<{ judged_until: Date | string | null; was: string | null }>`
      update anomaly_detector d set owner = ${this.#o.owner}, lease_until = ${leaseUntil}
      from (select owner as was from anomaly_detector where id = 1 for update) w
      where d.id = 1 and (d.owner is null or d.owner = ${this.#o.owner}
        or d.lease_until < ${new Date(nowMs).toISOString()}::timestamptz)
      returning d.judged_until, w.was`.execute(this.#o.db);
    if (result.rows.length === 0) {
      this.#isWarm = false; // another node judges; take over from its progress later
      return false;
    }
    const row = result.rows[0];
    if (!this.#isWarm || row.was !== this.#o.owner) {
      this.#judgedUntil = row.judged_until === null ? null : new Date(row.judged_until).getTime();
      await this.#warmUp();
    }
    return true;
  }

  /** Replays the last day of windows without touching incidents, then follows active ones. */
  async #warmUp(): Promise<void> {
    this.#trackers.clear();
    this.#lastCandidate.clear();
    this.#following.clear();
    this.#isWarm = true;
    if (this.#judgedUntil === null) return;
    const w = this.#o.windowMs;
    const from = this.#judgedUntil - WARMUP_WINDOWS_PER_HOUR * HOUR_MS;
    for (let t = from; t < this.#judgedUntil; t += w) await this.#judge(t, { isSilent: true });
    for (const [key, id] of await activeIncidents(this.#o.db)) {
      this.#following.set(key, { id, isRelated: false, windows: 1, names: new Set() });
    }
  }

  /**
   * Judges every window that ends at or before `untilMs`, oldest first; resolves to the number
   * judged. The first run starts with the window that ends there (history is not replayed).
   */
  async stepTo(untilMs: number): Promise<number> {
    const w = this.#o.windowMs;
    const last = Math.floor(untilMs / w) * w - w; // the last window that ended by untilMs
    if (this.#judgedUntil === null) this.#judgedUntil = last;
    let judged = 0;
    while (this.#judgedUntil <= last) {
      await this.#judge(this.#judgedUntil, { isSilent: false });
      this.#judgedUntil += w;
      judged++;
      await sql`update anomaly_detector set judged_until =
        ${new Date(this.#judgedUntil).toISOString()}::timestamptz where id = 1`.execute(this.#o.db);
    }
    return judged;
  }

  async #judge(t: number, { isSilent }: { isSilent: boolean }): Promise<void> {
    const { db } = this.#o;
    const w = this.#o.windowMs;
    const rows: Record<CubeName, CubeRow[]> = {
      cube: await readWindowRows(db, "cube", t),
      titles: await readWindowRows(db, "titles", t),
      qoe: await readWindowRows(db, "qoe", t),
    };
    const past = await this.#pastHours(hourOf(t));
    const maintenance = await maintenanceBetween(db, t, t + w);
    const excludedHours: Array<{ series: string; key: string; hourMs: number }> = [];
    const steps: Array<{ def: SeriesDefinition; key: string; step: TrackedStep; now: KeyWindow }> =
      [];
    const candidates = this.#candidates(rows, past);
    // A series' peers (each key's point and recent size), built once per window when a key
    // without history first needs them: per key, that was a pass over every candidate.
    const peersOf = new Map<SeriesDefinition, Array<{ key: string; peer: Peer }>>();
    const peersFor = (def: SeriesDefinition, key: string): Peer[] => {
      let list = peersOf.get(def);
      if (list === undefined) peersOf.set(def, list = this.#peers(def, t, candidates));
      return list.filter((p) => p.key !== key).map((p) => p.peer);
    };
    let sinceYield = 0;
    for (const { def, key, now, pastPoints, isPresent } of candidates) {
      // A turn of the event loop now and then: on PGlite ingest shares this thread.
      if (++sinceYield === YIELD_EVERY_KEYS) {
        sinceYield = 0;
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      const id = def.id + KEY_SEP + key;
      if (isPresent) this.#lastCandidate.set(id, t);
      let tracker = this.#trackers.get(id);
      if (tracker === undefined) {
        // At the cap a new key waits for a tracked one to go (candidates come busiest first).
        if (this.#trackers.size >= this.#o.maxSeries) continue;
        this.#trackers.set(id, tracker = new KeyTracker(def.kind, this.#s));
      }
      if (tracker.lastWindow >= t) continue;
      const point: SeriesPoint = {
        windowStartMs: t,
        num: now.num,
        den: def.kind === "count" ? 1 : now.den,
        size: def.kind === "count" ? 1 : now.size,
      };
      const usable = pastPoints.filter((p) =>
        !past.excluded.has(def.id + KEY_SEP + key + KEY_SEP + p.windowStartMs) &&
        !isUnderMaintenance(
          past.maintenance,
          def.id,
          key,
          p.windowStartMs,
          p.windowStartMs + HOUR_MS,
        )
      ).map((p) => scaled(p, w));
      const seasonal = seasonalBaseline(def.kind, usable);
      const peers = seasonal === null ? peersFor(def, key) : undefined;
      const isMuted = isUnderMaintenance(maintenance, def.id, key, t, t + w);
      const step = tracker.step(point, seasonal, { peers, isMuted });
      for (const e of step.excluded) excludedHours.push({ series: def.id, key, hourMs: hourOf(e) });
      steps.push({ def, key, step, now });
    }
    this.#forgetGoneKeys(t);
    if (isSilent) return;
    await excludeHours(db, dedupe(excludedHours));
    // In the order of SERIES (the most specific cause first), so a CDN's incident exists before
    // the titles it stalls open and attach to it; within a series, busiest first.
    const order = (def: SeriesDefinition) => SERIES.indexOf(def);
    steps.sort((a, b) => order(a.def) - order(b.def));
    for (const { def, key, step, now } of steps) {
      await this.#follow(def, key, step, now, past, maintenance);
    }
  }

  /**
   * Drops the trackers of keys that were no candidate for a day (a title nobody watches any more),
   * so memory follows the keys of the last day, not every key ever watched. Once an hour.
   */
  #forgetGoneKeys(t: number): void {
    if (t % HOUR_MS !== 0) return;
    for (const [id, lastMs] of this.#lastCandidate) {
      if (lastMs >= t - 24 * HOUR_MS || this.#following.has(id)) continue;
      this.#lastCandidate.delete(id);
      this.#trackers.delete(id);
    }
  }

  /** Every key worth a tracker in this window, with its window and past-week points. */
  #candidates(rows: Record<CubeName, CubeRow[]>, past: PastHours) {
    const out: Array<
      {
        def: SeriesDefinition;
        key: string;
        now: KeyWindow;
        pastPoints: SeriesPoint[];
        size: number;
        /** In this window's rows or its past weeks' (not only a tracker from before). */
        isPresent: boolean;
      }
    > = [];
    const floor = this.#o.minEvents / 4;
    const hoursPerWindow = this.#o.windowMs / HOUR_MS;
    for (const def of SERIES) {
      const now = byKey(def, rows[def.table]);
      const pastByHour = new Map<number, Map<string, KeyWindow>>();
      for (const hourMs of past.hours) {
        pastByHour.set(hourMs, byKey(def, past.byHour[def.table].get(hourMs) ?? []));
      }
      const keys = new Set(now.keys());
      for (const byHour of pastByHour.values()) for (const k of byHour.keys()) keys.add(k);
      for (const id of this.#trackers.keys()) {
        if (id.startsWith(def.id + KEY_SEP)) keys.add(id.slice(def.id.length + 1));
      }
      for (const key of keys) {
        const current = now.get(key) ?? { num: 0, den: 0, size: 0, viewers: 0, rows: [] };
        const pastPoints: SeriesPoint[] = [];
        let pastSize = 0;
        for (const [hourMs, byHour] of pastByHour) {
          const p = byHour.get(key);
          if (p === undefined) continue;
          pastPoints.push({ windowStartMs: hourMs, num: p.num, den: p.den, size: p.size });
          pastSize = Math.max(pastSize, (def.kind === "count" ? p.num : p.size) * hoursPerWindow);
        }
        const size = Math.max(def.kind === "count" ? current.num : current.size, pastSize);
        const isTracked = this.#trackers.has(def.id + KEY_SEP + key);
        if (size < floor && !isTracked) continue;
        const isPresent = now.has(key) || pastSize > 0;
        out.push({ def, key, now: current, pastPoints, size, isPresent });
      }
    }
    out.sort((a, b) => b.size - a.size);
    return out.slice(0, this.#o.maxSeries);
  }

  /** Every candidate key of a series as a peer in window `t`. */
  #peers(
    def: SeriesDefinition,
    t: number,
    candidates: ReadonlyArray<{ def: SeriesDefinition; key: string; now: KeyWindow }>,
  ): Array<{ key: string; peer: Peer }> {
    return candidates.filter((c) => c.def === def).map((c) => ({
      key: c.key,
      peer: {
        point: {
          windowStartMs: t,
          num: c.now.num,
          den: def.kind === "count" ? 1 : c.now.den,
          size: def.kind === "count" ? 1 : c.now.size,
        },
        recentMedian: this.#trackers.get(def.id + KEY_SEP + c.key)?.recentMedian(t) ?? 0,
      },
    }));
  }

  async #follow(
    def: SeriesDefinition,
    key: string,
    step: TrackedStep,
    now: KeyWindow,
    past: PastHours,
    maintenance: readonly MaintenanceWindow[],
  ): Promise<void> {
    const id = def.id + KEY_SEP + key;
    const following = this.#following.get(id);
    const t = step.windowStartMs;
    const w = this.#o.windowMs;
    if (following !== undefined && (step.state === "normal" || step.state === "pending")) {
      this.#following.delete(id);
      if (!following.isRelated) {
        await recoverIncident(this.#o.db, following.id, t + w, this.#o.alerts);
      }
      return;
    }
    if (step.state !== "open" && step.state !== "recovering") return;
    if (following === undefined && step.opened === undefined) return; // suppressed at opening
    if (following === undefined) {
      if (isUnderMaintenance(maintenance, def.id, key, t, t + w)) return;
      const reading = this.#reading(def, key, step, now, past, 1);
      const related = this.#relatedTo(def, key, reading.drillDown);
      if (related !== undefined) {
        this.#following.set(id, { ...related, isRelated: true });
        await attachRelated(this.#o.db, related.id, {
          series: def.id,
          key,
          opened_at: new Date(t).toISOString(),
          expected: reading.expected,
          observed: reading.observed,
        });
        return;
      }
      const startedAt = Math.min(t, ...step.excluded);
      const incidentId = await openIncident(this.#o.db, reading, startedAt, this.#o.alerts);
      this.#following.set(id, {
        id: incidentId,
        isRelated: false,
        windows: 1,
        names: new Set([`${def.dimension}=${key}`, ...namesOf(reading.drillDown)]),
      });
      this.#o.logger.warn("Incident opened", {
        id: incidentId,
        series: def.id,
        key,
        expected: round(reading.expected),
        observed: round(reading.observed),
        drill_down: reading.drillDown[0]?.text,
      });
      return;
    }
    following.windows++;
    if (following.isRelated) return;
    await updateIncident(
      this.#o.db,
      following.id,
      this.#reading(def, key, step, now, past, following.windows),
      this.#o.alerts,
    );
  }

  /** An active incident of the same family this key belongs to, by drill-down names. */
  #relatedTo(
    def: SeriesDefinition,
    key: string,
    drillDown: readonly DrillDownEntry[],
  ): Following | undefined {
    const own = `${def.dimension}=${key}`;
    const ownNames = namesOf(drillDown);
    for (const [id, f] of this.#following) {
      if (f.isRelated) continue;
      const series = SERIES.find((s) => id.startsWith(s.id + KEY_SEP));
      if (series === undefined || series.family !== def.family || series.id === def.id) continue;
      const otherName = `${series.dimension}=${id.slice(series.id.length + 1)}`;
      if (f.names.has(own) || ownNames.has(otherName)) return f;
    }
    return undefined;
  }

  #reading(
    def: SeriesDefinition,
    key: string,
    step: TrackedStep,
    now: KeyWindow,
    past: PastHours,
    windows: number,
  ): IncidentReading {
    const expected = step.expected ?? 0;
    // The key's rows of past weeks and its level, found once for the drill-down and the viewers.
    const pastRows = past.rows[def.table].filter((r) => r[def.dimension] === key);
    const level = def.kind === "count" ? this.#level(def, step, pastRows) : 1;
    const drillDown = this.#drillDown(def, step, now, pastRows, level);
    const byPlan = this.#affectedByPlan(def, now, pastRows, level);
    const viewers = Object.values(byPlan).reduce((a, b) => a + b, 0);
    return {
      series: def.id,
      key,
      kind: def.kind,
      level: incidentLevel(windows, viewers),
      windowStartMs: step.windowStartMs,
      baseline: step.baseline,
      expected,
      observed: step.observed ?? 0,
      band: step.band ?? [expected, expected],
      z: step.z,
      viewers,
      drillDown,
      exposure: this.#exposure(byPlan),
    };
  }

  /**
   * Which values of the other dimensions explain the change: each value of each drill-down
   * dimension, and each pair, observed against expected (counts: the same segment in past weeks
   * × the key's level; rates and shares: the key's expected rate × the segment's denominator).
   */
  #drillDown(
    def: SeriesDefinition,
    step: TrackedStep,
    now: KeyWindow,
    pastRows: readonly PastRow[],
    level: number,
  ): DrillDownEntry[] {
    const expectedRate = step.expected ?? 0;
    const groupings = [
      ...def.drillDown.map((d) => [d]),
      ...(def.drillDown.length >= 2 ? [def.drillDown.slice(0, 2)] : []),
    ];
    const segments: SegmentChange[] = [];
    for (const dims of groupings) {
      const observed = group(now.rows, dims, def);
      const expectedCounts = def.kind === "count" ? seasonalByGroup(pastRows, dims, def) : null;
      const names = new Set([...observed.keys(), ...(expectedCounts?.keys() ?? [])]);
      for (const name of names) {
        const o = observed.get(name) ?? { num: 0, den: 0 };
        const dimensions = Object.fromEntries(dims.map((d, i) => [d, name.split(KEY_SEP)[i]]));
        if (def.kind === "count") {
          const e = (expectedCounts?.get(name) ?? 0) * this.#o.windowMs / HOUR_MS * level;
          segments.push({ dimensions, expected: e, observed: o.num });
        } else segments.push({ dimensions, expected: expectedRate * o.den, observed: o.num });
      }
    }
    const parent = def.kind === "count"
      ? { expected: step.expected ?? 0, observed: step.observed ?? 0 }
      : { expected: expectedRate * now.den, observed: now.num };
    return contributions(parent, segments)
      .filter((c) => c.share >= 0.1)
      .slice(0, 5)
      .map((c) => ({
        dimensions: { ...c.dimensions },
        expected: round(c.expected),
        observed: c.observed,
        share: round(c.share),
        text: formatContribution(c),
      }));
  }

  /** The key's level (expected / seasonal) for scaling its segments' past weeks. */
  #level(def: SeriesDefinition, step: TrackedStep, pastRows: readonly PastRow[]): number {
    const byHour = new Map<number, number>();
    for (const r of pastRows) {
      byHour.set(r.hourMs, (byHour.get(r.hourMs) ?? 0) + Number(r[def.num]));
    }
    const seasonal = (median([...byHour.values()]) ?? 0) * this.#o.windowMs / HOUR_MS;
    return seasonal > 0 && step.expected !== null ? step.expected / seasonal : 1;
  }

  /**
   * Affected viewers by plan: for a drop, the viewers missing against the same window of past
   * weeks (at the key's level); for a rate or share, every viewer of the key in the window.
   */
  #affectedByPlan(
    def: SeriesDefinition,
    now: KeyWindow,
    pastRows: readonly PastRow[],
    level: number,
  ): Record<string, number> {
    const observed = new Map<string, number>();
    for (const r of now.rows) {
      const plan = String(r.subscription_plan);
      observed.set(plan, (observed.get(plan) ?? 0) + Number(r[def.viewers]));
    }
    if (def.kind !== "count") return Object.fromEntries(observed);
    const perHour = new Map<string, Map<number, number>>();
    for (const r of pastRows) {
      const plan = String(r.subscription_plan);
      const hours = perHour.get(plan) ?? new Map<number, number>();
      hours.set(r.hourMs, (hours.get(r.hourMs) ?? 0) + Number(r[def.viewers]));
      perHour.set(plan, hours);
    }
    const out: Record<string, number> = {};
    for (const [plan, hours] of perHour) {
      // Hourly rows sum the windows' viewers: a window's share is a twelfth (at 5 minutes).
      const expected = (median([...hours.values()]) ?? 0) * this.#o.windowMs / HOUR_MS * level;
      const missing = Math.round(expected - (observed.get(plan) ?? 0));
      if (missing > 0) out[plan] = missing;
    }
    return out;
  }

  #exposure(byPlan: Record<string, number>): Exposure | null {
    const prices = this.#o.planPrices;
    if (prices === null) return null;
    let revenue = 0;
    const unpriced: string[] = [];
    for (const [plan, viewers] of Object.entries(byPlan)) {
      if (prices[plan] === undefined) unpriced.push(plan);
      else revenue += viewers * prices[plan];
    }
    return {
      currency: this.#o.currency,
      viewers_by_plan: byPlan,
      monthly_revenue: Math.round(revenue * 100) / 100,
      unpriced_plans: unpriced.sort(),
    };
  }

  /** Past weeks' hourly rows for the window's hour, read once per hour judged. */
  #pastHours(hourMs: number): Promise<PastHours> {
    let cached = this.#hourCache.get(hourMs);
    if (cached === undefined) {
      const hours = Array.from(
        { length: this.#o.baselineWeeks },
        (_, k) => hourMs - (k + 1) * WEEK_MS,
      );
      cached = (async () => {
        const rows: PastHours["rows"] = {
          cube: await readHourRows(this.#o.db, "cube", hours),
          titles: await readHourRows(this.#o.db, "titles", hours),
          qoe: await readHourRows(this.#o.db, "qoe", hours),
        };
        const byHour = {
          cube: new Map(),
          titles: new Map(),
          qoe: new Map(),
        } as PastHours["byHour"];
        for (const table of ["cube", "titles", "qoe"] as const) {
          for (const row of rows[table]) {
            const list = byHour[table].get(row.hourMs);
            if (list === undefined) byHour[table].set(row.hourMs, [row]);
            else list.push(row);
          }
        }
        return {
          hours,
          rows,
          byHour,
          excluded: await readExcludedHours(this.#o.db, hours),
          maintenance: await maintenanceBetween(
            this.#o.db,
            Math.min(...hours),
            Math.max(...hours) + HOUR_MS,
          ),
        };
      })();
      this.#hourCache.set(hourMs, cached);
      // One hour is judged at a time: keep the current and the previous one.
      for (const old of this.#hourCache.keys()) {
        if (old < hourMs - HOUR_MS) this.#hourCache.delete(old);
      }
    }
    return cached;
  }
}

/** A row of an hourly copy, with its hour. */
type PastRow = CubeRow & { hourMs: number };

/** The past weeks of one hour. */
interface PastHours {
  hours: number[];
  rows: Record<CubeName, Array<CubeRow & { hourMs: number }>>;
  /** The same rows by hour. */
  byHour: Record<CubeName, Map<number, CubeRow[]>>;
  /** `series SEP key SEP hour ms` kept out of baselines. */
  excluded: Set<string>;
  maintenance: MaintenanceWindow[];
}

function byKey(def: SeriesDefinition, rows: readonly CubeRow[]): Map<string, KeyWindow> {
  const out = new Map<string, KeyWindow>();
  for (const r of rows) {
    const key = String(r[def.dimension]);
    let k = out.get(key);
    if (k === undefined) out.set(key, k = { num: 0, den: 0, size: 0, viewers: 0, rows: [] });
    k.num += Number(r[def.num]);
    k.den += def.den === null ? 0 : Number(r[def.den]);
    k.size += Number(r[def.size ?? def.den ?? def.num]);
    k.viewers += Number(r[def.viewers]);
    k.rows.push(r);
  }
  return out;
}

function group(
  rows: readonly CubeRow[],
  dims: readonly string[],
  def: SeriesDefinition,
): Map<string, { num: number; den: number }> {
  const out = new Map<string, { num: number; den: number }>();
  for (const r of rows) {
    const name = dims.map((d) => String(r[d])).join(KEY_SEP);
    const g = out.get(name) ?? { num: 0, den: 0 };
    g.num += Number(r[def.num]);
    g.den += def.den === null ? 0 : Number(r[def.den]);
    out.set(name, g);
  }
  return out;
}

/** Median over the past hours of each segment's count (an hour's count; 0 for an hour without). */
function seasonalByGroup(
  rows: ReadonlyArray<CubeRow & { hourMs: number }>,
  dims: readonly string[],
  def: SeriesDefinition,
): Map<string, number> {
  const perName = new Map<string, Map<number, number>>();
  for (const r of rows) {
    const name = dims.map((d) => String(r[d])).join(KEY_SEP);
    const hours = perName.get(name) ?? new Map<number, number>();
    hours.set(r.hourMs, (hours.get(r.hourMs) ?? 0) + Number(r[def.num]));
    perName.set(name, hours);
  }
  const heldHours = new Set(rows.map((r) => r.hourMs));
  const out = new Map<string, number>();
  for (const [name, hours] of perName) {
    out.set(name, median([...heldHours].map((h) => hours.get(h) ?? 0)) ?? 0);
  }
  return out;
}

function scaled(p: SeriesPoint, windowMs: number): SeriesPoint {
  const f = windowMs / HOUR_MS;
  return {
    windowStartMs: p.windowStartMs,
    num: p.num * f,
    den: p.den * f,
    size: p.size === undefined ? undefined : p.size * f,
  };
}

function namesOf(drillDown: readonly DrillDownEntry[]): Set<string> {
  const names = new Set<string>();
  for (const entry of drillDown) {
    if (entry.share < 0.5) continue;
    for (const [d, v] of Object.entries(entry.dimensions)) names.add(`${d}=${v}`);
  }
  return names;
}

function dedupe<T extends { series: string; key: string; hourMs: number }>(rows: T[]): T[] {
  const seen = new Set<string>();
  return rows.filter((r) => {
    const k = r.series + KEY_SEP + r.key + KEY_SEP + r.hourMs;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function round(n: number): number {
  return Math.round(n * 10_000) / 10_000;
}
