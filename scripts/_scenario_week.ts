/**
 * The scripted week of the anomaly detector: what the flushes would write to the anomaly series
 * (`rules/anomaly_series.ts`) for four baseline weeks and 6.5 watched days of a small platform, with
 * daily and weekly patterns, a release rolled out mid-week, and injected faults. Pure and seeded: the
 * same options give the same rows, so a test can step the detector through it by watermark and
 * compare the incidents with {@link Fault}s.
 *
 * @module
 */
import { prng } from "./_sim_traffic.ts";

/** A Monday, 00:00 UTC: the first watched window of {@link WEEK}. */
export const WATCH_START_MS = Date.UTC(2026, 10, 2);
const HOUR_MS = 3_600_000;
/** One day in milliseconds: watched days and fault times are counted in them. */
export const DAY_MS = 24 * HOUR_MS;
const WEEK_MS = 7 * DAY_MS;

export const PLATFORMS = ["tizen", "webos", "roku", "androidtv"] as const;
export const REGIONS = ["DE", "FR", "US-CA", "US-NY"] as const;
const EU_REGIONS = new Set(["DE", "FR"]);
export const PLANS = ["basic", "standard", "premium"] as const;
/** Each plan's share of the traffic, in the order of {@link PLANS}. */
export const PLAN_SHARES = [0.5, 0.3, 0.2] as const;
/** Title ids of a scenario: `title-01` ... (Zipf-distributed audience, title-01 the biggest). */
export function titlesOf(count: number): string[] {
  const width = Math.max(2, String(count).length);
  return Array.from({ length: count }, (_, i) => `title-${String(i + 1).padStart(width, "0")}`);
}
/** The release rolled out on tizen on the third watched day. */
export const NEW_VERSION = "7.1";

/** An injected fault and the incident it must open. */
export interface Fault {
  name: string;
  series: string;
  key: string;
  startMs: number;
  endMs: number;
  /** A `dimension=value` the incident's top drill-down entry must name. */
  drillDown?: string;
}

/** The faults of a scripted week whose first watched window starts at `watchStartMs`. */
export function faultsOf(watchStartMs: number): Fault[] {
  return [
    {
      name: "platform outage: webos sends 5% of its events for an hour",
      series: "volume:platform",
      key: "webos",
      startMs: watchStartMs + DAY_MS + 20 * HOUR_MS,
      endMs: watchStartMs + DAY_MS + 21 * HOUR_MS,
    },
    {
      name: "broken release: EU consent on app version 7.1 falls from 85% to 3% for four hours",
      series: "consent:app_version",
      key: NEW_VERSION,
      startMs: watchStartMs + 3 * DAY_MS + 18 * HOUR_MS,
      endMs: watchStartMs + 3 * DAY_MS + 22 * HOUR_MS,
      drillDown: "platform=tizen",
    },
    {
      name: "CDN stall spike: cdn-b's views stall 8 times each (8% of watched time) for an hour",
      series: "rebuffer:cdn",
      key: "cdn-b",
      startMs: watchStartMs + 2 * DAY_MS + 21 * HOUR_MS,
      endMs: watchStartMs + 2 * DAY_MS + 22 * HOUR_MS,
    },
    {
      name: "error burst: title-07 on roku fails 25% of its events for an hour",
      series: "errors:content_id",
      key: "title-07",
      startMs: watchStartMs + 4 * DAY_MS + 14 * HOUR_MS,
      endMs: watchStartMs + 4 * DAY_MS + 15 * HOUR_MS,
      drillDown: "platform=roku",
    },
  ];
}

/** The faults of the scripted week {@link WEEK} (watched time). */
export const FAULTS: readonly Fault[] = faultsOf(WATCH_START_MS);

/** Options of the generator. */
export interface ScenarioOptions {
  windowMs: number;
  /** Watched days (6.5 in the scripted week; a test may watch fewer). */
  days: number;
  /**
   * Start of the first watched window (a multiple of `windowMs`): the faults and the release are
   * placed relative to it, the baseline weeks end at it.
   */
  watchStartMs: number;
  baselineWeeks: number;
  /** Mean events per window across the platform. */
  eventsPerWindow: number;
  /** Titles in the catalogue (12 in the scripted week). */
  titleCount: number;
  /** Audience by title: Zipf (title-01 the biggest) or flat (every title alike: the cap bench). */
  titleAudience: "zipf" | "flat";
  seed: number;
}

/** The scripted week's defaults. */
export const WEEK: ScenarioOptions = {
  windowMs: 300_000,
  days: 6.5,
  watchStartMs: WATCH_START_MS,
  baselineWeeks: 4,
  eventsPerWindow: 2_400,
  titleCount: 12,
  titleAudience: "zipf",
  seed: 21,
};

/** One cube row of one window (or hour), as the flush writes it. */
export interface CubeCell {
  startMs: number;
  platform: string;
  region: string;
  app_version: string;
  subscription_plan: string;
  events: number;
  errors: number;
  eu_events: number;
  eu_consented: number;
  viewers: number;
}

/** One QoE row of one window (or hour). */
export interface QoeCell {
  startMs: number;
  content_id: string;
  cdn: string;
  subscription_plan: string;
  views: number;
  vsf_technical: number;
  rebuffer_ms: number;
  watched_ms: number;
  startup_views: number;
  slow_startups: number;
}

/** The CDNs serving every title, a third each. */
export const CDNS = ["cdn-a", "cdn-b", "cdn-c"] as const;

/** One titles row of one window (or hour). */
export interface TitleCell {
  startMs: number;
  content_id: string;
  platform: string;
  subscription_plan: string;
  events: number;
  errors: number;
  viewers: number;
}

/** Traffic by time of day (a trough at 04:00, a peak at 20:00) and weekday (weekends +20%). */
export function trafficAt(ms: number): number {
  const hourOfDay = ((ms % DAY_MS) + DAY_MS) % DAY_MS / HOUR_MS;
  const daily = 1 + 0.5 * Math.cos(2 * Math.PI * (hourOfDay - 20) / 24);
  const weekday = new Date(ms).getUTCDay();
  return daily * (weekday === 0 || weekday === 6 ? 1.2 : 1);
}

/** App versions and their shares on a platform at a time: 7.1 takes half of tizen once released. */
function versionsAt(platform: string, ms: number, releaseAtMs: number): Array<[string, number]> {
  const base: Array<[string, number]> = [["7.0", 0.5], ["6.9", 0.3], ["6.8", 0.2]];
  if (platform !== "tizen" || ms < releaseAtMs) return base;
  return [[NEW_VERSION, 0.5], ...base.map(([v, s]) => [v, s / 2] as [string, number])];
}

function isIn(fault: Fault, ms: number): boolean {
  return ms >= fault.startMs && ms < fault.endMs;
}

/**
 * The rows of one window starting at `startMs`: counts drawn around their mean with Poisson-like
 * noise (seeded by the window), faults applied.
 */
export function windowRows(
  startMs: number,
  o: ScenarioOptions = WEEK,
): { cube: CubeCell[]; titles: TitleCell[]; qoe: QoeCell[] } {
  const random = prng(o.seed ^ Math.floor(startMs / o.windowMs));
  const draw = (mean: number) => {
    const u = 1 - random();
    const g = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
    return Math.max(0, Math.round(mean + Math.sqrt(mean) * g));
  };
  const total = o.eventsPerWindow * o.windowMs / 300_000 * trafficAt(startMs);
  const [outage, release, stall, burst] = o.watchStartMs === WATCH_START_MS
    ? FAULTS
    : faultsOf(o.watchStartMs);
  const releaseAtMs = o.watchStartMs + 2 * DAY_MS;
  const cube: CubeCell[] = [];
  for (const platform of PLATFORMS) {
    const platformShare = (isIn(outage, startMs) && platform === outage.key ? 0.05 : 1) / 4;
    for (const region of REGIONS) {
      for (const [version, versionShare] of versionsAt(platform, startMs, releaseAtMs)) {
        for (const [k, plan] of PLANS.entries()) {
          const events = draw(
            total * platformShare / REGIONS.length * versionShare * PLAN_SHARES[k],
          );
          const isEu = EU_REGIONS.has(region);
          const consentRate = version === NEW_VERSION && isIn(release, startMs) ? 0.03 : 0.85;
          const euConsented = isEu ? Math.min(events, draw(events * consentRate)) : 0;
          cube.push({
            startMs,
            platform,
            region,
            app_version: version,
            subscription_plan: plan,
            events,
            errors: Math.min(events, draw(events * 0.01)),
            eu_events: isEu ? events : 0,
            eu_consented: euConsented,
            viewers: Math.ceil(events / 3),
          });
        }
      }
    }
  }
  const titles: TitleCell[] = [];
  const titleIds = titlesOf(o.titleCount);
  const weights = titleIds.map((_, i) => o.titleAudience === "flat" ? 1 : 1 / (i + 1));
  const weightSum = weights.reduce((a, b) => a + b, 0);
  for (const [i, contentId] of titleIds.entries()) {
    for (const platform of PLATFORMS) {
      const platformShare = (isIn(outage, startMs) && platform === outage.key ? 0.05 : 1) / 4;
      for (const [k, plan] of PLANS.entries()) {
        const events = draw(total * weights[i] / weightSum * platformShare * PLAN_SHARES[k]);
        const isBurst = isIn(burst, startMs) && contentId === burst.key && platform === "roku";
        titles.push({
          startMs,
          content_id: contentId,
          platform,
          subscription_plan: plan,
          events,
          errors: Math.min(events, draw(events * (isBurst ? 0.25 : 0.01))),
          viewers: Math.ceil(events / 3),
        });
      }
    }
  }
  // Views: one per four events; five minutes watched each, 0.2 stalls of 3 s, 1% technical start
  // failures, 3% of measured startups slow.
  const qoe: QoeCell[] = [];
  for (const [i, contentId] of titleIds.entries()) {
    for (const cdn of CDNS) {
      for (const [k, plan] of PLANS.entries()) {
        const views = draw(total / 4 * weights[i] / weightSum / CDNS.length * PLAN_SHARES[k]);
        const stallsPerView = isIn(stall, startMs) && cdn === stall.key ? 8 : 0.2;
        const rebufferMs = draw(views * stallsPerView) * 3_000;
        const startupViews = Math.round(views * 0.9);
        qoe.push({
          startMs,
          content_id: contentId,
          cdn,
          subscription_plan: plan,
          views,
          vsf_technical: Math.min(views, draw(views * 0.01)),
          rebuffer_ms: rebufferMs,
          watched_ms: views * 300_000 + rebufferMs,
          startup_views: startupViews,
          slow_startups: Math.min(startupViews, draw(startupViews * 0.03)),
        });
      }
    }
  }
  return { cube, titles, qoe };
}

/** Start of the first baseline hour: the watched start's hour, `baselineWeeks` weeks before. */
export function baselineStartMs(o: ScenarioOptions = WEEK): number {
  return Math.floor(o.watchStartMs / HOUR_MS) * HOUR_MS - o.baselineWeeks * WEEK_MS;
}

/**
 * True when a watched window compares with baseline hour `hourMs`: the same hour of the week, one
 * or more weeks later, overlaps the watched days.
 */
function isCompared(hourMs: number, o: ScenarioOptions): boolean {
  if (o.days >= 7) return true;
  const weeks = Math.max(1, Math.floor((o.watchStartMs - hourMs - HOUR_MS) / WEEK_MS) + 1);
  return hourMs + weeks * WEEK_MS < o.watchStartMs + o.days * DAY_MS;
}

/**
 * The hourly rows of the baseline weeks (before the watched days): each hour the sum of its
 * windows, as the flushes' hourly copies hold it. No faults, no release.
 */
export function* baselineHours(
  o: ScenarioOptions = WEEK,
): Generator<{ cube: CubeCell[]; titles: TitleCell[]; qoe: QoeCell[] }> {
  for (let hour = baselineStartMs(o); hour < o.watchStartMs; hour += HOUR_MS) {
    // Only the hours a watched window compares with (every hour over a week or more).
    if (!isCompared(hour, o)) continue;
    const cube = new Map<string, CubeCell>();
    const titles = new Map<string, TitleCell>();
    const qoe = new Map<string, QoeCell>();
    // The hour of a watched start that is not on the hour holds only the windows before it.
    const hourEnd = Math.min(hour + HOUR_MS, o.watchStartMs);
    for (let t = hour; t < hourEnd; t += o.windowMs) {
      const rows = windowRows(t, o);
      sumInto(cube, rows.cube, hour, ["platform", "region", "app_version", "subscription_plan"]);
      sumInto(qoe, rows.qoe, hour, ["content_id", "cdn", "subscription_plan"]);
      sumInto(titles, rows.titles, hour, ["content_id", "platform", "subscription_plan"]);
    }
    yield { cube: [...cube.values()], titles: [...titles.values()], qoe: [...qoe.values()] };
  }
}

/**
 * Adds window cells into the hour's cells of the same dimensions (`dims`): every numeric field but
 * `startMs` is a measure.
 */
function sumInto<T extends { startMs: number }>(
  into: Map<string, T>,
  cells: readonly T[],
  hourMs: number,
  dims: readonly (keyof T)[],
): void {
  for (const c of cells) {
    const key = dims.map((d) => c[d]).join("|");
    const sum = into.get(key);
    if (sum === undefined) {
      into.set(key, { ...c, startMs: hourMs });
      continue;
    }
    const row = sum as Record<string, unknown>;
    for (const [field, value] of Object.entries(c)) {
      if (field !== "startMs" && typeof value === "number") {
        row[field] = (row[field] as number) + value;
      }
    }
  }
}

/** Windows of the watched days, in order. */
export function* watchedWindows(o: ScenarioOptions = WEEK): Generator<number> {
  const end = o.watchStartMs + o.days * DAY_MS;
  for (let t = o.watchStartMs; t < end; t += o.windowMs) yield t;
}
