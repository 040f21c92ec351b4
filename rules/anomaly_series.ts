/**
 * What the anomaly detector watches (`rules/anomaly.ts` is the model): two small cubes of
 * `ANOMALY_WINDOW_MS` windows that the user workers count in their flush, and the series read from
 * them.
 *
 * - The **cube** counts every event by platform, region, app version and plan: events, errors, EU
 *   events, EU events with consent (as the `privacy` rule decides it: `has_consent` after the
 *   consent signal was decoded), viewers, and new account-sharing flags (the first flag of a user
 *   and sharing period the user's worker sees, in the row of the event that raised it).
 * - The **titles** cube counts events, errors and viewers by title, platform and plan.
 *
 * An on-time event is counted in the window of its own time (capped at the moment it was received);
 * a late one (behind the watermark by more than `ALLOWED_LATENESS_MS`) in the window it was received
 * in, so a batch a TV kept offline for hours adds to the newest window, never to one already judged,
 * and backdated traffic sent in time order (the scripted week) still lands in its own windows.
 *
 * - The **QoE** cube counts, by title, CDN and plan, what views' outcomes became in the window it
 *   happened in (the window of the TV's newest event when its views were recounted): views,
 *   technical start failures, rebuffer time, watched time (playing plus rebuffering), views with a
 *   measured startup and slow startups (above `QOE_MAX_STARTUP_P95_MS`). A late FIRST_FRAME that
 *   turns an exit into a start moves the counts in the window it arrived in.
 *
 * A viewer is counted once per window and cube row while it stays on one row; a viewer switching
 * between two rows within a window (another platform or app version) counts in each row each time.
 *
 * @module
 */
import type { SeriesKind } from "./anomaly.ts";

/** The cube's measures, in the order of a delta row. */
export const CUBE_MEASURES = [
  "events",
  "errors",
  "eu_events",
  "eu_consented",
  "viewers",
  "sharing_flags",
] as const;

/** The titles cube's measures, in the order of a delta row. */
export const TITLE_MEASURES = ["events", "errors", "viewers"] as const;

/** The QoE cube's measures, in the order of a delta row. */
export const QOE_SERIES_MEASURES = [
  "views",
  "vsf_technical",
  "rebuffer_ms",
  "watched_ms",
  "startup_views",
  "slow_startups",
] as const;

/** Every measure of every cube (numbers when read back). */
export const ALL_MEASURES: ReadonlySet<string> = new Set([
  ...CUBE_MEASURES,
  ...TITLE_MEASURES,
  ...QOE_SERIES_MEASURES,
]);

/**
 * A view's anomaly QoE row from its `qoe` rule window row (`WINDOW_MEASURES` of
 * `rules/qoe_rule.ts`: views, vsf_technical, rebuffer_ms, playing_ms, startup_views,
 * slow_startups, very_slow_startups).
 */
export function anomalyQoeCountsOf(windowCounts: readonly number[]): number[] {
  const [views, vsf, rebufferMs, playingMs, startupViews, slow] = windowCounts;
  return [views, vsf, rebufferMs, rebufferMs + playingMs, startupViews, slow];
}

/** A cube column. */
export type CubeDimension = "platform" | "region" | "app_version" | "subscription_plan";

/** A titles cube column. */
export type TitleDimension = "content_id" | "platform" | "subscription_plan";

/** A QoE cube column. */
export type QoeDimension = "content_id" | "cdn" | "subscription_plan";

/** One watched series: which table, which key, which measures. */
export interface SeriesDefinition {
  /** `<metric>:<dimension>`, e.g. `volume:platform`. */
  id: string;
  /** What it detects, shared by the series of one fault: keys of one family can be related. */
  family: "volume" | "errors" | "consent" | "vsf" | "rebuffer" | "startup" | "sharing";
  kind: SeriesKind;
  table: "cube" | "titles" | "qoe";
  /** The dimension whose values are the series' keys. */
  dimension: CubeDimension | TitleDimension | QoeDimension;
  /** Numerator (the count itself for a `count` series). */
  num: string;
  /** Denominator of a rate or share; null for a count. */
  den: string | null;
  /** The sample behind a rate whose denominator is not a count (a rebuffer ratio: views). */
  size?: string;
  /** The measure that counts the viewers an incident touches. */
  viewers: string;
  /** The dimensions a drill-down splits an incident's change by. */
  drillDown: readonly (CubeDimension | TitleDimension | QoeDimension)[];
}

/**
 * Every watched series. Within a family, the order says which key becomes the incident when
 * several open in one window (the others attach as `related`): the most specific cause first, an
 * app version before a platform before a region.
 */
export const SERIES: readonly SeriesDefinition[] = [
  volume("app_version", ["platform", "region"]),
  volume("platform", ["app_version", "region"]),
  volume("region", ["platform", "app_version"]),
  {
    id: "errors:content_id",
    family: "errors",
    kind: "rate",
    table: "titles",
    dimension: "content_id",
    num: "errors",
    den: "events",
    viewers: "viewers",
    drillDown: ["platform", "subscription_plan"],
  },
  {
    id: "errors:platform",
    family: "errors",
    kind: "rate",
    table: "cube",
    dimension: "platform",
    num: "errors",
    den: "events",
    viewers: "viewers",
    drillDown: ["app_version", "region"],
  },
  consent("app_version", ["platform", "region"]),
  consent("platform", ["app_version", "region"]),
  consent("region", ["platform", "app_version"]),
  {
    id: "sharing:region",
    family: "sharing",
    kind: "rate",
    table: "cube",
    dimension: "region",
    num: "sharing_flags",
    den: "viewers",
    viewers: "viewers",
    drillDown: ["platform", "app_version"],
  },
  // QoE: a CDN before a title (a CDN's stall shows on every title it serves).
  ...(["cdn", "content_id"] as const).flatMap((dimension) => {
    const drillDown: QoeDimension[] = dimension === "cdn"
      ? ["content_id", "subscription_plan"]
      : ["cdn", "subscription_plan"];
    const qoe = { kind: "rate", table: "qoe", dimension, viewers: "views", drillDown } as const;
    return [
      { ...qoe, id: `vsf:${dimension}`, family: "vsf", num: "vsf_technical", den: "views" },
      {
        ...qoe,
        id: `rebuffer:${dimension}`,
        family: "rebuffer",
        num: "rebuffer_ms",
        den: "watched_ms",
        size: "views",
      },
      {
        ...qoe,
        id: `slow_startup:${dimension}`,
        family: "startup",
        num: "slow_startups",
        den: "startup_views",
      },
    ] satisfies SeriesDefinition[];
  }),
];

function volume(dimension: CubeDimension, drillDown: CubeDimension[]): SeriesDefinition {
  return {
    id: `volume:${dimension}`,
    family: "volume",
    kind: "count",
    table: "cube",
    dimension,
    num: "events",
    den: null,
    viewers: "viewers",
    drillDown,
  };
}

function consent(dimension: CubeDimension, drillDown: CubeDimension[]): SeriesDefinition {
  return {
    id: `consent:${dimension}`,
    family: "consent",
    kind: "share",
    table: "cube",
    dimension,
    num: "eu_consented",
    den: "eu_events",
    viewers: "viewers",
    drillDown,
  };
}

/** The series of an id, or undefined. */
export function seriesById(id: string): SeriesDefinition | undefined {
  return SERIES.find((s) => s.id === id);
}

/**
 * The window an event is counted in: its own time when on time (capped at its receive time, as the
 * watermark caps it), its receive time when late.
 */
export function anomalyWindowOf(
  event: { atMs: number; receivedAtMs: number; isLate: boolean },
  windowMs: number,
): number {
  const atMs = event.isLate ? event.receivedAtMs : Math.min(event.atMs, event.receivedAtMs);
  return Math.floor(atMs / windowMs) * windowMs;
}

/** A 31-bit FNV-1a hash of a string: a viewer's current cube row, in a small integer. */
export function rowHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 1;
}
