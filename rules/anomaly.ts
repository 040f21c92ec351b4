/**
 * Anomaly detection over 5-minute series: the pure model, before any flush writes a series or any
 * store keeps an incident. Every function here is a function of the numbers it is given (no clock,
 * no I/O, no randomness), so seeded series can test it.
 *
 * A series has a kind, which fixes what a value is and which direction hurts:
 *
 * - `count` (event volume): the value is `num`; a drop hurts.
 * - `rate` (error rate, technical VSF rate): the value is `num / den`; a rise hurts.
 * - `share` (EU consent share): the value is `num / den`; a drop hurts.
 *
 * For each window the model computes an expected value, a scale and a modified z-score:
 *
 * 1. Seasonal baseline: the median of the same time-of-week window over the `baselineWeeks`
 *    previous weeks (fewer when some are missing, muted or inside an incident).
 * 2. Recent level: the median of observed / seasonal over the last `levelWindows` windows (those with
 *    a seasonal value above 0), 1 when there is none. Expected = seasonal × level.
 * 3. Scale: `MAD_TO_SIGMA` × MAD of the residuals (observed − expected) over the last `scaleWindows`
 *    windows, never below the sampling noise of the window ({@link samplingNoise}).
 * 4. z = (observed − expected) / scale. A window is anomalous when z reaches `alarmZ` in the harmful
 *    direction and the change is large enough: a count at most expected / `minChangeFactor`, a rate
 *    at least `minChangeFactor` × expected and `minChangePoints` above it, a share at most
 *    expected / `minChangeFactor` and `minChangePoints` below it.
 * 5. Only keys expecting at least `minEvents` per window are watched (expected count, or expected
 *    denominator for rates and shares).
 * 6. Per key, an incident opens after `openAfter` anomalous windows in a row and closes after
 *    `closeAfter` windows in a row with |z| < `calmZ` ({@link advance}).
 *
 * A key without history is compared with the other keys of the same series in the same window
 * ({@link peerExpectation}); with fewer than `minPeers` usable peers its baseline is "learning" and
 * it never alarms. Windows of an incident and muted windows must stay out of later baselines
 * ({@link windowsToExclude}); {@link detectSeries} runs the whole model over one key's series.
 *
 * Defaults ({@link DEFAULT_ANOMALY_SETTINGS}) and their sources:
 *
 * | Setting            | Default | Source                                                                 |
 * | ------------------ | ------- | ---------------------------------------------------------------------- |
 * | `windowMs`         | 300000  | `QOE_WINDOW_MS` (README, docs/qoe.md): the 5-minute series             |
 * | `baselineWeeks`    | 4       | chosen: four same time-of-week windows, a median of 4                  |
 * | `levelWindows`     | 12      | chosen: one hour of 5-minute windows                                   |
 * | `scaleWindows`     | 2016    | chosen: 7 days of 5-minute windows (7 × 24 × 12)                       |
 * | `alarmZ`           | 3.5     | Iglewicz & Hoaglin (1993), modified z-score outlier cut-off            |
 * | `calmZ`            | 2       | chosen: recovery hysteresis, well inside the alarm cut-off             |
 * | `openAfter`        | 2       | chosen: two anomalous windows in a row (10 minutes)                    |
 * | `closeAfter`       | 3       | chosen: three calm windows in a row (15 minutes)                       |
 * | `minEvents`        | 25      | `QOE_MIN_VIEWS` (README): the smallest window the `qoe` rule judges    |
 * | `minChangeFactor`  | 2       | chosen: counts −50%, rates ×2, shares ÷2                               |
 * | `minChangePoints`  | 0.02    | chosen: rates and shares move at least 2 percentage points             |
 * | `minPeers`         | 3       | chosen: fewer than 3 peers is "learning"                               |
 *
 * `MAD_TO_SIGMA` (1.4826 = 1 / Φ⁻¹(3/4)) makes the MAD a consistent estimate of a normal standard
 * deviation (Rousseeuw & Croux 1993); with it, z is Iglewicz & Hoaglin's 0.6745 (x − x̃) / MAD.
 *
 * @module
 */

/** What a series measures: a volume, a failure rate or a share of a good outcome. */
export type SeriesKind = "count" | "rate" | "share";

/** The direction of a change. */
export type Direction = "up" | "down";

/**
 * The direction that hurts per kind: fewer events, more failures, less consent. Only changes in
 * this direction alarm; a traffic surge or a failure rate falling to zero is good news.
 */
export const HARMFUL_DIRECTION: Readonly<Record<SeriesKind, Direction>> = {
  count: "down",
  rate: "up",
  share: "down",
};

/** One 5-minute window of one key's series. */
export interface SeriesPoint {
  /** Start of the window (epoch ms). */
  windowStartMs: number;
  /** The count, or the numerator of a rate or share (errors, consenting viewers). */
  num: number;
  /** The denominator of a rate or share (events, viewers); unused for counts (pass 1). */
  den: number;
  /**
   * The sample behind a rate whose denominator is not a count of trials (a rebuffer ratio's
   * denominator is milliseconds; its sample is views): sets the sampling noise and whether the key
   * is watched. Defaults to `den`.
   */
  size?: number;
}

/** The sample size of a point: its `size`, else its denominator. */
export function sizeOf(point: SeriesPoint): number {
  return point.size ?? point.den;
}

/** Settings of the detector; see the module doc for each default's source. */
export interface AnomalySettings {
  /** Length of a window (ms). */
  windowMs: number;
  /** Previous weeks whose same time-of-week window make the seasonal baseline. */
  baselineWeeks: number;
  /** Recent windows whose observed / seasonal ratio make the level. */
  levelWindows: number;
  /** Recent windows whose residuals make the scale (MAD). */
  scaleWindows: number;
  /** |z| from which a window in the harmful direction may be anomalous. */
  alarmZ: number;
  /** |z| below which a window counts towards closing an incident. */
  calmZ: number;
  /** Anomalous windows in a row that open an incident. */
  openAfter: number;
  /** Calm windows in a row that close an incident. */
  closeAfter: number;
  /** Expected count (or denominator) per window from which a key is watched. */
  minEvents: number;
  /** Smallest relative change that may alarm: counts and shares ÷ it, rates × it. */
  minChangeFactor: number;
  /** Smallest absolute change of a rate or share that may alarm (a fraction: 0.02 = 2 points). */
  minChangePoints: number;
  /** Usable peers needed to judge a key without history. */
  minPeers: number;
}

/** The defaults; the module doc gives each one's source. */
export const DEFAULT_ANOMALY_SETTINGS: Readonly<AnomalySettings> = {
  windowMs: 300_000,
  baselineWeeks: 4,
  levelWindows: 12,
  scaleWindows: 7 * 24 * 12,
  alarmZ: 3.5,
  calmZ: 2,
  openAfter: 2,
  closeAfter: 3,
  minEvents: 25,
  minChangeFactor: 2,
  minChangePoints: 0.02,
  minPeers: 3,
};

/** 1 / Φ⁻¹(3/4): scales a MAD to a normal standard deviation (Rousseeuw & Croux 1993). */
export const MAD_TO_SIGMA = 1.4826;

/** One week (ms): the distance between two same time-of-week windows. */
export const WEEK_MS = 7 * 24 * 3_600_000;

/** Median of the values, null when there are none. Robust to the outliers it must not follow. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const work = Float64Array.from(values);
  const middle = work.length >> 1;
  const upper = selectInPlace(work, middle);
  if (work.length % 2 === 1) return upper;
  // After the selection, every value left of `middle` is at most `upper`: the lower middle is
  // their maximum.
  let lower = work[0];
  for (let i = 1; i < middle; i++) lower = Math.max(lower, work[i]);
  return (lower + upper) / 2;
}

/**
 * The k-th smallest value (0-based) of `work`, which it partially reorders (Hoare's quickselect):
 * linear on average, where sorting the 2 016 residuals of a week at every window would dominate.
 */
function selectInPlace(work: Float64Array, k: number): number {
  let left = 0;
  let right = work.length - 1;
  while (left < right) {
    const pivot = work[(left + right) >> 1];
    let i = left;
    let j = right;
    while (i <= j) {
      while (work[i] < pivot) i++;
      while (work[j] > pivot) j--;
      if (i <= j) {
        const swap = work[i];
        work[i] = work[j];
        work[j] = swap;
        i++;
        j--;
      }
    }
    if (k <= j) right = j;
    else if (k >= i) left = i;
    else return work[k];
  }
  return work[k];
}

/** Median absolute deviation from the median, null when there are no values. */
export function medianAbsoluteDeviation(values: readonly number[]): number | null {
  const center = median(values);
  if (center === null) return null;
  return median(values.map((v) => Math.abs(v - center)));
}

/**
 * The value a point stands for: its count, or its rate or share (null when the denominator is 0,
 * because a rate of nothing is unknown, not 0).
 */
export function valueOf(kind: SeriesKind, point: SeriesPoint): number | null {
  if (kind === "count") return point.num;
  return point.den > 0 ? point.num / point.den : null;
}

/** The seasonal baseline of a window, before the recent level adjusts it. */
export interface SeasonalBaseline {
  /** Median value of the same time-of-week windows (a count, or a rate for rates and shares). */
  value: number;
  /** Median volume of those windows: the count, or the denominator of a rate or share. */
  volume: number;
}

/**
 * Median of the same time-of-week windows of previous weeks (the caller passes up to
 * `baselineWeeks` of them, already scaled to the window and without incident or muted windows), so
 * that one odd week does not move the baseline. Null when no window has a value.
 */
export function seasonalBaseline(
  kind: SeriesKind,
  sameWindowPastWeeks: readonly SeriesPoint[],
): SeasonalBaseline | null {
  const known = sameWindowPastWeeks.filter((p) => valueOf(kind, p) !== null);
  const value = median(known.map((p) => valueOf(kind, p) as number));
  if (value === null) return null;
  const volume = kind === "count" ? value : median(known.map(sizeOf)) as number;
  return { value, volume };
}

/** One recent window as the level sees it. */
export interface LevelSample {
  observed: number;
  /** The window's seasonal value (before any level). */
  seasonal: number;
}

/**
 * The recent level: median of observed / seasonal over the recent windows whose seasonal value is
 * above 0, 1 when there is none. It follows a lasting shift (a growing audience, a holiday) that the
 * weeks before did not have, without following one odd window.
 */
export function recentLevel(recent: readonly LevelSample[]): number {
  const ratios = recent.filter((s) => s.seasonal > 0).map((s) => s.observed / s.seasonal);
  return median(ratios) ?? 1;
}

/**
 * The smallest scale a window can have: the standard deviation of its sampling noise, √expected for
 * a count (Poisson) and √(p(1 − p) / n) for a rate or share (binomial, p the expected rate, n the
 * window's denominator). It keeps a perfectly flat history from turning every wiggle into an alarm.
 * p is kept within [1/n, 1 − 1/n] (and a count at least 1) so that an expected 0 or 100% still has
 * the noise of one event instead of a zero scale.
 */
export function samplingNoise(kind: SeriesKind, expected: number, den: number): number {
  if (kind === "count") return Math.sqrt(Math.max(expected, 1));
  const n = Math.max(den, 1);
  const floor = Math.min(0.5, 1 / n);
  const p = Math.min(Math.max(expected, floor), 1 - floor);
  return Math.sqrt(p * (1 - p) / n);
}

/**
 * The scale of a window: the robust spread of recent residuals (`MAD_TO_SIGMA` × MAD), never below
 * the window's sampling noise ({@link samplingNoise}).
 */
export function robustScale(
  kind: SeriesKind,
  residuals: readonly number[],
  expected: number,
  den: number,
): number {
  return Math.max(spreadOf(residuals), samplingNoise(kind, expected, den));
}

/** `MAD_TO_SIGMA` × MAD of the values, 0 when there are none. */
function spreadOf(values: readonly number[]): number {
  return MAD_TO_SIGMA * (medianAbsoluteDeviation(values) ?? 0);
}

/** z measured in the harmful direction: positive when the window moved the way that hurts. */
export function harmfulZ(kind: SeriesKind, z: number): number {
  return HARMFUL_DIRECTION[kind] === "up" ? z : -z;
}

/**
 * Whether a window is anomalous: z at least `alarmZ` in the harmful direction (Iglewicz & Hoaglin)
 * and a change large enough to matter to an operator (see the module doc), because with enough
 * volume a statistically clear change can still be too small to act on.
 */
export function isAnomalous(
  kind: SeriesKind,
  observed: number,
  expected: number,
  z: number,
  s: Readonly<AnomalySettings>,
): boolean {
  if (harmfulZ(kind, z) < s.alarmZ) return false;
  switch (kind) {
    case "count":
      return observed <= expected / s.minChangeFactor;
    case "rate":
      return observed >= expected * s.minChangeFactor &&
        observed - expected >= s.minChangePoints;
    case "share":
      return observed <= expected / s.minChangeFactor &&
        expected - observed >= s.minChangePoints;
  }
}

/** Where a window's expectation came from. */
export type BaselineSource = "history" | "peers" | "learning";

/** What a window is compared with, before its own sampling noise floors the scale. */
export interface Expectation {
  /** Expected value: a count, or a rate for rates and shares. */
  expected: number;
  /** Expected volume (count, or denominator for rates and shares); watched from `minEvents`. */
  volume: number;
  /** Robust spread of the comparison (`MAD_TO_SIGMA` × MAD), before the noise floor. */
  spread: number;
  source: "history" | "peers";
}

/** The judgement of one window, before the incident state machine. */
export interface WindowJudgement {
  baseline: BaselineSource;
  /** The window's value; null for a rate or share of nothing (den 0), which is not judged. */
  observed: number | null;
  /** Null while learning. */
  expected: number | null;
  /** Null while learning. */
  scale: number | null;
  /** Modified z-score, signed (observed above expected is positive); 0 when not judged. */
  z: number;
  /** expected ± `alarmZ` × scale; null while learning. */
  band: [number, number] | null;
  /** Whether the key expects at least `minEvents` in the window. */
  watched: boolean;
  anomalous: boolean;
}

/**
 * Judges one window against its expectation (null: learning): its z-score, its band and whether it
 * is anomalous. Unwatched and learning windows are never anomalous.
 */
export function judgeWindow(
  kind: SeriesKind,
  point: SeriesPoint,
  expectation: Expectation | null,
  s: Readonly<AnomalySettings>,
): WindowJudgement {
  const observed = valueOf(kind, point);
  if (expectation === null) {
    return {
      baseline: "learning",
      observed,
      expected: null,
      scale: null,
      z: 0,
      band: null,
      watched: false,
      anomalous: false,
    };
  }
  const { expected } = expectation;
  const scale = Math.max(expectation.spread, samplingNoise(kind, expected, sizeOf(point)));
  const z = observed === null ? 0 : (observed - expected) / scale;
  const watched = expectation.volume >= s.minEvents;
  return {
    baseline: expectation.source,
    observed,
    expected,
    scale,
    z,
    band: [expected - s.alarmZ * scale, expected + s.alarmZ * scale],
    watched,
    anomalous: watched && observed !== null && isAnomalous(kind, observed, expected, z, s),
  };
}

/** Another key of the same series, in the window being judged. */
export interface Peer {
  /** The peer's point in the window. */
  point: SeriesPoint;
  /** Counts only: the peer's median count over its recent windows (its size). */
  recentMedian?: number;
}

/**
 * The expectation of a key without history, from its peers in the same window; null (learning) with
 * fewer than `minPeers` usable peers.
 *
 * - Rates and shares are compared as rates: expected = median of the peers' rates, spread = their
 *   MAD, volume = the key's own denominator. A peer is usable with a denominator of at least
 *   `minEvents` (a smaller one's rate is mostly noise).
 * - Counts cannot be compared directly (keys differ in size), so each is normalised by its size, its
 *   median count over its recent windows: expected = the key's own recent median × the median of the
 *   peers' current / recent-median ratios. A key with no recent window of its own is learning; a peer
 *   is usable with a recent median of at least `minEvents`.
 */
export function peerExpectation(
  kind: SeriesKind,
  point: SeriesPoint,
  ownRecentMedian: number | null,
  peers: readonly Peer[],
  s: Readonly<AnomalySettings>,
): Expectation | null {
  let values: number[];
  if (kind === "count") {
    if (ownRecentMedian === null || ownRecentMedian <= 0) return null;
    values = peers
      .filter((p) => (p.recentMedian ?? 0) >= s.minEvents)
      .map((p) => ownRecentMedian * p.point.num / (p.recentMedian as number));
  } else {
    values = peers.filter((p) => sizeOf(p.point) >= s.minEvents && p.point.den > 0)
      .map((p) => p.point.num / p.point.den);
  }
  if (values.length < s.minPeers) return null;
  const expected = median(values) as number;
  return {
    expected,
    volume: kind === "count" ? expected : sizeOf(point),
    spread: spreadOf(values),
    source: "peers",
  };
}

/** State of a key's incident: none, anomalous but not yet open, open, or open and calming down. */
export type IncidentState = "normal" | "pending" | "open" | "recovering";

/** What the state machine remembers of a key between windows. */
export interface IncidentMemory {
  state: IncidentState;
  /** Anomalous windows in a row (counts towards `openAfter`). */
  anomalousRun: number;
  /** Calm windows in a row while open (counts towards `closeAfter`). */
  calmRun: number;
}

/** A key with no incident. */
export const NO_INCIDENT: Readonly<IncidentMemory> = {
  state: "normal",
  anomalousRun: 0,
  calmRun: 0,
};

/** One step of the state machine. */
export interface IncidentTransition {
  memory: IncidentMemory;
  /** The incident opened in this window. */
  opened: boolean;
  /** The incident closed in this window. */
  closed: boolean;
}

/**
 * Moves a key's incident state by one window. Two anomalous windows in a row open an incident (one
 * odd window is noise); three windows in a row with |z| < `calmZ` close it, the lower cut-off
 * keeping an incident that hovers near the alarm from flapping. While open, a window that is not
 * calm restarts the count.
 */
export function advance(
  memory: Readonly<IncidentMemory>,
  judgement: Pick<WindowJudgement, "anomalous" | "z">,
  s: Readonly<AnomalySettings>,
): IncidentTransition {
  const isCalm = !judgement.anomalous && Math.abs(judgement.z) < s.calmZ;
  switch (memory.state) {
    case "normal":
    case "pending": {
      if (!judgement.anomalous) return { memory: { ...NO_INCIDENT }, opened: false, closed: false };
      const anomalousRun = memory.anomalousRun + 1;
      const opened = anomalousRun >= s.openAfter;
      return {
        memory: { state: opened ? "open" : "pending", anomalousRun, calmRun: 0 },
        opened,
        closed: false,
      };
    }
    case "open":
    case "recovering": {
      if (!isCalm) {
        return { memory: { ...memory, state: "open", calmRun: 0 }, opened: false, closed: false };
      }
      const calmRun = memory.calmRun + 1;
      if (calmRun >= s.closeAfter) {
        return { memory: { ...NO_INCIDENT }, opened: false, closed: true };
      }
      return { memory: { ...memory, state: "recovering", calmRun }, opened: false, closed: false };
    }
  }
}

/** The model's answer for one window of one key. */
export interface AnomalyStep extends WindowJudgement {
  windowStartMs: number;
  /** State after this window. */
  state: IncidentState;
  /** This window's start, when an incident opened in it. */
  opened?: number;
  /** This window's start, when an incident closed in it. */
  closed?: number;
}

/**
 * The windows to keep out of later baselines (seasonal weeks, level and scale): the windows of an
 * incident (open or recovering, and the anomalous windows that led to its opening) and the muted
 * windows the caller flags. An outage must not teach the baseline that an outage is normal.
 */
export function windowsToExclude(
  steps: readonly Pick<AnomalyStep, "windowStartMs" | "state" | "opened">[],
  muted: Iterable<number> = [],
): Set<number> {
  const excluded = new Set(muted);
  steps.forEach((step, i) => {
    if (step.state === "open" || step.state === "recovering") excluded.add(step.windowStartMs);
    if (step.opened === undefined) return;
    for (let j = i - 1; j >= 0 && steps[j].state === "pending"; j--) {
      excluded.add(steps[j].windowStartMs);
    }
  });
  return excluded;
}

/** Options of {@link detectSeries}. */
export interface DetectOptions {
  /** Starts of windows the caller mutes (maintenance, known events): kept out of baselines. */
  muted?: Iterable<number>;
  /** The other keys' series of the same series, for windows without history. */
  peers?: readonly (readonly SeriesPoint[])[];
}

/**
 * Runs the whole model over one key's series, window by window in time order: expectation from
 * history (or peers, or learning), judgement, state machine, and exclusion of incident and muted
 * windows from the baselines of the windows after them. Only windows with a point are judged: pass
 * a point for every window of a count series, 0 included, since a missing window is not a drop.
 */
export function detectSeries(
  kind: SeriesKind,
  points: readonly SeriesPoint[],
  s: Readonly<AnomalySettings> = DEFAULT_ANOMALY_SETTINGS,
  options: DetectOptions = {},
): AnomalyStep[] {
  const series = [...points].sort((a, b) => a.windowStartMs - b.windowStartMs);
  const byWindow = new Map(series.map((p) => [p.windowStartMs, p]));
  const peerSeries = (options.peers ?? []).map((ps) =>
    new Map(ps.map((p) => [p.windowStartMs, p]))
  );
  const excluded = new Set(options.muted ?? []);
  const seasonalOf = new Map<number, number>();
  const residuals: { windowStartMs: number; residual: number }[] = [];
  let firstResidual = 0;
  let memory: IncidentMemory = { ...NO_INCIDENT };
  const steps: AnomalyStep[] = [];
  for (const point of series) {
    const t = point.windowStartMs;
    const pastWeeks = pastWindows(t, WEEK_MS, s.baselineWeeks)
      .filter((w) => !excluded.has(w))
      .flatMap((w) => byWindow.get(w) ?? []);
    const seasonal = seasonalBaseline(kind, pastWeeks);
    let expectation: Expectation | null = null;
    if (seasonal !== null) {
      const level = recentLevel(
        pastWindows(t, s.windowMs, s.levelWindows).flatMap((w) => {
          const observed = byWindow.has(w) ? valueOf(kind, byWindow.get(w)!) : null;
          const seasonalValue = seasonalOf.get(w);
          if (excluded.has(w) || observed === null || seasonalValue === undefined) return [];
          return [{ observed, seasonal: seasonalValue }];
        }),
      );
      while (
        firstResidual < residuals.length &&
        residuals[firstResidual].windowStartMs < t - s.scaleWindows * s.windowMs
      ) firstResidual++;
      const recentResiduals = residuals.slice(firstResidual)
        .filter((r) => !excluded.has(r.windowStartMs))
        .map((r) => r.residual);
      expectation = {
        expected: seasonal.value * level,
        volume: seasonal.volume,
        spread: spreadOf(recentResiduals),
        source: "history",
      };
    } else if (peerSeries.length > 0) {
      expectation = peerExpectation(
        kind,
        point,
        recentMedianOf(byWindow, t, s),
        peerSeries.flatMap((ps) => {
          const peerPoint = ps.get(t);
          return peerPoint
            ? [{ point: peerPoint, recentMedian: recentMedianOf(ps, t, s) ?? 0 }]
            : [];
        }),
        s,
      );
    }
    const judgement = judgeWindow(kind, point, expectation, s);
    if (seasonal !== null) {
      seasonalOf.set(t, seasonal.value);
      if (judgement.observed !== null && judgement.expected !== null) {
        residuals.push({ windowStartMs: t, residual: judgement.observed - judgement.expected });
      }
    }
    const transition = advance(memory, judgement, s);
    memory = transition.memory;
    const step: AnomalyStep = { windowStartMs: t, state: memory.state, ...judgement };
    if (transition.opened) step.opened = t;
    if (transition.closed) step.closed = t;
    steps.push(step);
    for (const w of windowsToExclude(steps.slice(-(s.openAfter + 1)))) excluded.add(w);
  }
  return steps;
}

/** Starts of the `count` windows `stepMs`, 2 × `stepMs`, … before `t`. */
function pastWindows(t: number, stepMs: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => t - (i + 1) * stepMs);
}

/** Median count of a key over the `levelWindows` windows before `t`, null when it has none. */
function recentMedianOf(
  byWindow: ReadonlyMap<number, SeriesPoint>,
  t: number,
  s: Readonly<AnomalySettings>,
): number | null {
  return median(
    pastWindows(t, s.windowMs, s.levelWindows).flatMap((w) => byWindow.get(w)?.num ?? []),
  );
}

/** Expected and observed totals of one value of the other dimensions (a segment). */
export interface SegmentChange {
  /** The segment's dimension values, e.g. `{ app_version: "7.1", platform: "tizen" }`. */
  dimensions: Readonly<Record<string, string>>;
  expected: number;
  observed: number;
}

/** A segment's part in the parent's change. */
export interface Contribution extends SegmentChange {
  /** observed − expected. */
  change: number;
  /** Fraction of the parent's change the segment explains (negative when it moved the other way). */
  share: number;
  /** Direction of the parent's change. */
  direction: "drop" | "rise";
}

/**
 * Drill-down: which segments explain the parent's change, sorted by share of the change explained
 * (largest first), so an incident can say which app version or platform broke. Changes must be
 * additive: counts, or for a rate its numerators (observed failures against expected rate × the
 * segment's denominator), not the rates themselves. A parent without change gives every share 0.
 */
export function contributions(
  parent: { expected: number; observed: number },
  segments: readonly SegmentChange[],
): Contribution[] {
  const parentChange = parent.observed - parent.expected;
  const direction = parentChange < 0 ? "drop" : "rise";
  return segments
    .map((segment) => {
      const change = segment.observed - segment.expected;
      const share = parentChange === 0 ? 0 : change / parentChange;
      return { ...segment, change, share, direction } satisfies Contribution;
    })
    .sort((a, b) => b.share - a.share);
}

/**
 * One contribution as a sentence for an incident, e.g. "app_version 7.1 on platform tizen: 92% of
 * the drop" (each dimension as "name value", joined with " on ", in the segment's key order).
 */
export function formatContribution(c: Contribution): string {
  const segment = Object.entries(c.dimensions).map(([name, value]) => `${name} ${value}`)
    .join(" on ");
  return `${segment}: ${Math.round(c.share * 100)}% of the ${c.direction}`;
}

/** One window's answer of a {@link KeyTracker}. */
export interface TrackedStep extends AnomalyStep {
  /** Windows this step kept out of later baselines (incident windows, muted, pending before open). */
  excluded: number[];
}

/**
 * The model of {@link detectSeries}, one window at a time, for a detector that cannot hold every
 * key's whole series: it keeps a key's last `levelWindows` counts and level samples, its residuals
 * of the last `scaleWindows` windows and its incident state. The caller gives each window's
 * seasonal baseline (from past weeks, without the windows this tracker excluded) and, for a key
 * without one, its peers; fed the same, it answers as {@link detectSeries} does.
 */
export class KeyTracker {
  readonly kind: SeriesKind;
  #s: Readonly<AnomalySettings>;
  #counts: { w: number; num: number }[] = [];
  #levels: { w: number; observed: number; seasonal: number }[] = [];
  #residualW: number[] = [];
  #residuals: number[] = [];
  #memory: IncidentMemory = { ...NO_INCIDENT };
  #pendingRun: number[] = [];
  #lastWindow = -Infinity;

  constructor(kind: SeriesKind, settings: Readonly<AnomalySettings> = DEFAULT_ANOMALY_SETTINGS) {
    this.kind = kind;
    this.#s = settings;
  }

  /** The incident state after the last window. */
  get state(): IncidentState {
    return this.#memory.state;
  }

  /** The last window judged (-Infinity before any). */
  get lastWindow(): number {
    return this.#lastWindow;
  }

  /** Median count over the `levelWindows` windows before `t` (a key's size, for peers). */
  recentMedian(t: number): number | null {
    const since = t - this.#s.levelWindows * this.#s.windowMs;
    return median(this.#counts.filter((c) => c.w >= since && c.w < t).map((c) => c.num));
  }

  /** Judges the next window (after every window given before). */
  step(
    point: SeriesPoint,
    seasonal: SeasonalBaseline | null,
    context: { peers?: readonly Peer[]; isMuted?: boolean } = {},
  ): TrackedStep {
    const s = this.#s;
    const t = point.windowStartMs;
    let expectation: Expectation | null = null;
    if (seasonal !== null) {
      const since = t - s.levelWindows * s.windowMs;
      const level = recentLevel(this.#levels.filter((l) => l.w >= since));
      const oldest = t - s.scaleWindows * s.windowMs;
      let drop = 0;
      while (drop < this.#residualW.length && this.#residualW[drop] < oldest) drop++;
      if (drop > 0) {
        this.#residualW.splice(0, drop);
        this.#residuals.splice(0, drop);
      }
      expectation = {
        expected: seasonal.value * level,
        volume: seasonal.volume,
        spread: spreadOf(this.#residuals),
        source: "history",
      };
    } else if (context.peers !== undefined && context.peers.length > 0) {
      expectation = peerExpectation(this.kind, point, this.recentMedian(t), context.peers, s);
    }
    const judgement = judgeWindow(this.kind, point, expectation, s);
    const transition = advance(this.#memory, judgement, s);
    this.#memory = transition.memory;
    const excluded: number[] = [];
    const state = this.#memory.state;
    if (transition.opened) {
      excluded.push(...this.#pendingRun);
      const dropped = new Set(this.#pendingRun);
      this.#levels = this.#levels.filter((l) => !dropped.has(l.w));
      const kept = this.#residualW.map((w, i) => dropped.has(w) ? -1 : i).filter((i) => i >= 0);
      this.#residuals = kept.map((i) => this.#residuals[i]);
      this.#residualW = kept.map((i) => this.#residualW[i]);
    }
    this.#pendingRun = state === "pending" ? [...this.#pendingRun, t] : [];
    const isExcluded = state === "open" || state === "recovering" || context.isMuted === true;
    if (isExcluded) excluded.push(t);
    this.#counts.push({ w: t, num: point.num });
    if (this.#counts.length > s.levelWindows) this.#counts.shift();
    if (seasonal !== null && !isExcluded && judgement.observed !== null) {
      this.#levels.push({ w: t, observed: judgement.observed, seasonal: seasonal.value });
      if (this.#levels.length > s.levelWindows) this.#levels.shift();
      this.#residualW.push(t);
      this.#residuals.push(judgement.observed - (judgement.expected as number));
    }
    this.#lastWindow = t;
    const step: TrackedStep = { windowStartMs: t, state, ...judgement, excluded };
    if (transition.opened) step.opened = t;
    if (transition.closed) step.closed = t;
    return step;
  }
}
