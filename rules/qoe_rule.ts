/**
 * The `qoe` rule: in a `QOE_WINDOW_MS` window (by the time views started) with at least
 * `QOE_MIN_VIEWS` views of one title, CDN or region, a technical video-start-failure rate above
 * `QOE_MAX_VSF_RATE`, a rebuffer ratio above `QOE_MAX_REBUFFER_RATIO` or a startup p95 above
 * `QOE_MAX_STARTUP_P95_MS` raises a flag: MEDIUM, HIGH at twice a threshold.
 *
 * Views live in user shards, spread over every worker, so the rule does not run in a worker: each
 * flush adds its views' window counts to `qoe_windows` (additive deltas, a late event retracting
 * what a view counted before, as for every QoE row), and a checker reads the windows that changed
 * and judges each title, CDN and region in them. Business failures (`BUSINESS_ERROR_CODES`) and
 * warnings never count here.
 *
 * The startup p95 needs no histogram: p95 (nearest rank) is above the threshold exactly when more
 * than `n - ceil(0.95 n)` of the n measured startups are, so a window counts the startups above the
 * threshold and above twice it.
 *
 * @module
 */
import { QOE, type ViewOutcome } from "./qoe.ts";
// Types only: `types.ts` reads this module's defaults, so a value import would be a cycle.
import type { Flag, Level } from "./types.ts";
import type { WindowRule } from "./registry.ts";

/** Settings of the rule (`QOE_*`). */
export interface QoeRuleThresholds {
  windowMs: number;
  minViews: number;
  maxVsfRate: number;
  maxRebufferRatio: number;
  maxStartupP95Ms: number;
}

/** The defaults documented in the README. */
export const DEFAULT_QOE_RULE: Readonly<QoeRuleThresholds> = {
  windowMs: 300_000,
  minViews: 25,
  maxVsfRate: 0.05,
  maxRebufferRatio: 0.02,
  maxStartupP95Ms: 8_000,
};

/** The measures of a `qoe_windows` row, in this order. */
export const WINDOW_MEASURES = [
  "views",
  "vsf_technical",
  "rebuffer_ms",
  "playing_ms",
  "startup_views",
  "slow_startups",
  "very_slow_startups",
] as const;

/** Index of each measure in a window row's counts. */
const W = Object.fromEntries(WINDOW_MEASURES.map((m, i) => [m, i])) as Record<
  typeof WINDOW_MEASURES[number],
  number
>;

/** Evidence names at most this many views. */
export const MAX_EVIDENCE_VIEWS = 10;

/** What one view adds to its window row. */
export function windowCountsOf(o: ViewOutcome, t: QoeRuleThresholds): number[] {
  const c = o.counts;
  const measured = c[QOE.startupViews] > 0;
  return [
    c[QOE.views],
    c[QOE.vsfTechnical],
    c[QOE.rebufferMs],
    c[QOE.playingMs],
    c[QOE.startupViews],
    measured && c[QOE.startupMs] > t.maxStartupP95Ms ? 1 : 0,
    measured && c[QOE.startupMs] > 2 * t.maxStartupP95Ms ? 1 : 0,
  ];
}

/** Whether a view is worth naming in evidence: it failed technically, stalled or started slowly. */
export function isTroubledView(o: ViewOutcome, t: QoeRuleThresholds): boolean {
  const c = o.counts;
  return c[QOE.vsfTechnical] > 0 || c[QOE.rebuffers] > 0 ||
    (c[QOE.startupViews] > 0 && c[QOE.startupMs] > t.maxStartupP95Ms);
}

/** Start of the rule's window that holds `atMs`. */
export function windowStartOf(atMs: number, windowMs: number): number {
  return Math.floor(atMs / windowMs) * windowMs;
}

/** Kinds of entity the rule judges. */
export type QoeEntityType = "content" | "cdn" | "region";

/** One entity's totals over one window, as the checker reads them. */
export interface QoeWindowTotals {
  entityType: QoeEntityType;
  entityId: string;
  windowStartMs: number;
  /** {@link WINDOW_MEASURES}, summed over the entity's rows. */
  counts: number[];
  /** Troubled views seen (at most {@link MAX_EVIDENCE_VIEWS}). */
  viewRefs: string[];
}

/** The rule's registry entry. */
export const QOE_RULE: WindowRule = {
  id: "qoe",
  version: 1,
  weight: 1,
  family: "qoe",
  description:
    "A title, CDN or region whose views fail to start, stall or start slowly in a window",
};

/** Largest count above the p95 that still leaves the p95 at or below the threshold. */
function allowedAbove(measured: number): number {
  return measured - Math.ceil(0.95 * measured);
}

/** The flag one entity's window raises, or null. */
export function evaluateQoeWindow(w: QoeWindowTotals, t: QoeRuleThresholds): Flag | null {
  const c = w.counts;
  const views = c[W.views];
  if (views < t.minViews) return null;
  const vsfRate = c[W.vsf_technical] / views;
  const watched = c[W.playing_ms] + c[W.rebuffer_ms];
  const rebufferRatio = watched > 0 ? c[W.rebuffer_ms] / watched : 0;
  const measured = c[W.startup_views];
  const isSlow = measured > 0 && c[W.slow_startups] > allowedAbove(measured);
  const isVerySlow = measured > 0 && c[W.very_slow_startups] > allowedAbove(measured);
  const breaches: string[] = [];
  let level: Level | null = null;
  const breach = (isOver: boolean, isHigh: boolean, what: string) => {
    if (!isOver) return;
    breaches.push(what);
    if (isHigh) level = "HIGH";
    else level ??= "MEDIUM";
  };
  const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
  breach(
    vsfRate > t.maxVsfRate,
    vsfRate > 2 * t.maxVsfRate,
    `technical start failures ${c[W.vsf_technical]} of ${views} views (${pct(vsfRate)} > ${
      pct(t.maxVsfRate)
    })`,
  );
  breach(
    rebufferRatio > t.maxRebufferRatio,
    rebufferRatio > 2 * t.maxRebufferRatio,
    `rebuffer ratio ${pct(rebufferRatio)} > ${pct(t.maxRebufferRatio)}`,
  );
  breach(
    isSlow,
    isVerySlow,
    `startup p95 above ${t.maxStartupP95Ms} ms (${
      c[W.slow_startups]
    } of ${measured} measured startups)`,
  );
  if (level === null) return null;
  const endMs = w.windowStartMs + t.windowMs;
  return {
    flagKey: `qoe:${w.entityType}:${w.entityId}:${w.windowStartMs}`,
    rule: QOE_RULE.id,
    ruleVersion: QOE_RULE.version,
    level,
    entityType: w.entityType,
    entityId: w.entityId,
    // A window of many viewers' views: no one event or user raised it.
    eventId: "",
    userId: "",
    region: w.entityType === "region" ? w.entityId : "",
    isEu: false,
    atMs: w.windowStartMs,
    reason: `${w.entityType} ${w.entityId}: ${breaches.join("; ")}`,
    evidence: {
      rule: QOE_RULE.id,
      rule_version: QOE_RULE.version,
      thresholds: {
        window_ms: t.windowMs,
        min_views: t.minViews,
        max_vsf_rate: t.maxVsfRate,
        max_rebuffer_ratio: t.maxRebufferRatio,
        max_startup_p95_ms: t.maxStartupP95Ms,
      },
      window: {
        start: new Date(w.windowStartMs).toISOString(),
        end: new Date(endMs).toISOString(),
      },
      observed: {
        views,
        technical_start_failures: c[W.vsf_technical],
        technical_vsf_rate: round(vsfRate),
        rebuffer_ms: c[W.rebuffer_ms],
        playing_ms: c[W.playing_ms],
        rebuffer_ratio: round(rebufferRatio),
        startups_measured: measured,
        startups_over_threshold: c[W.slow_startups],
        startups_over_twice_threshold: c[W.very_slow_startups],
        startup_p95_over_threshold: isSlow,
        breaches,
        view_ids: w.viewRefs.slice(0, MAX_EVIDENCE_VIEWS),
      },
      event_ids: [],
    },
    // The views are in the evidence; no event is flagged.
    flaggedEventCount: 0,
  };
}

function round(v: number): number {
  return Math.round(v * 10_000) / 10_000;
}
