import assert from "node:assert/strict";
import {
  advance,
  type AnomalyStep,
  contributions,
  DEFAULT_ANOMALY_SETTINGS,
  detectSeries,
  formatContribution,
  harmfulZ,
  isAnomalous,
  KeyTracker,
  NO_INCIDENT,
  seasonalBaseline,
  type SegmentChange,
  type SeriesKind,
  type SeriesPoint,
  WEEK_MS,
  windowsToExclude,
} from "./anomaly.ts";

const S = DEFAULT_ANOMALY_SETTINGS;
const WINDOW_MS = S.windowMs;
const DAY_MS = 24 * 3_600_000;
const WINDOWS_PER_DAY = DAY_MS / WINDOW_MS;
/** A Monday, 00:00 UTC: the first window of every seeded series. */
const START_MS = Date.UTC(2026, 0, 5);
/** Four weeks of history, then one day being watched. */
const HISTORY_WINDOWS = 4 * 7 * WINDOWS_PER_DAY;
/** 14:00 on the watched day: where the incidents of the tests start. */
const INCIDENT_AT = HISTORY_WINDOWS + 14 * 12;

/** A small seedable PRNG (mulberry32) returning numbers in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A standard normal draw (Box–Muller) from a seeded generator. */
function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** Traffic of the time of day: a trough at night, a peak in the evening (0.5 to 1.5). */
function dailyPattern(windowIndex: number): number {
  const dayFraction = (windowIndex % WINDOWS_PER_DAY) / WINDOWS_PER_DAY;
  return 1 + 0.5 * Math.sin(2 * Math.PI * (dayFraction - 0.5));
}

function windowStart(i: number): number {
  return START_MS + i * WINDOW_MS;
}

/** Index of a step's window in its series. */
function indexOf(step: AnomalyStep): number {
  return (step.windowStartMs - START_MS) / WINDOW_MS;
}

/** A count series of `windows` windows around `base` per window, with daily pattern and noise. */
function countSeries(
  seed: number,
  windows: number,
  base: number,
  factorAt: (i: number) => number = () => 1,
  relativeNoise = 0,
): SeriesPoint[] {
  const random = mulberry32(seed);
  return Array.from({ length: windows }, (_, i) => {
    const mean = base * dailyPattern(i) * factorAt(i);
    // Poisson-like noise by default; `relativeNoise` makes a series noisier than sampling alone.
    const sd = relativeNoise > 0 ? relativeNoise * mean : Math.sqrt(mean);
    const num = Math.max(0, Math.round(mean + sd * gaussian(random)));
    return { windowStartMs: windowStart(i), num, den: 1 };
  });
}

/**
 * A rate or share series: `den` around `volume` per window (daily pattern), `num` a binomial-like
 * draw of `rateAt(i)` of them.
 */
function rateSeries(
  seed: number,
  windows: number,
  volume: number,
  rateAt: (i: number) => number,
  { flatVolume = false } = {},
): SeriesPoint[] {
  const random = mulberry32(seed);
  return Array.from({ length: windows }, (_, i) => {
    const den = Math.round(flatVolume ? volume : volume * dailyPattern(i));
    const p = rateAt(i);
    const mean = den * p;
    const draw = Math.round(mean + Math.sqrt(mean * (1 - p)) * gaussian(random));
    return { windowStartMs: windowStart(i), num: Math.min(den, Math.max(0, draw)), den };
  });
}

/** The rate during windows [from, from + length), `normal` elsewhere. */
function stepRate(normal: number, changed: number, from: number, length: number) {
  return (i: number) => (i >= from && i < from + length ? changed : normal);
}

function opened(steps: readonly AnomalyStep[]): number[] {
  return steps.flatMap((s) => s.opened ?? []);
}

function closed(steps: readonly AnomalyStep[]): number[] {
  return steps.flatMap((s) => s.closed ?? []);
}

/** The steps of the watched day (after the four weeks of history). */
function watchedDay(steps: readonly AnomalyStep[]): AnomalyStep[] {
  return steps.filter((s) => s.windowStartMs >= windowStart(HISTORY_WINDOWS));
}

Deno.test("anomaly: a steady series with daily pattern and noise raises nothing over 7 days", () => {
  const windows = HISTORY_WINDOWS + 7 * WINDOWS_PER_DAY;
  const checks: [SeriesKind, SeriesPoint[]][] = [
    ["count", countSeries(1, windows, 400)],
    ["rate", rateSeries(2, windows, 2_000, () => 0.001)],
    ["share", rateSeries(3, windows, 300, () => 0.85)],
  ];
  for (const [kind, series] of checks) {
    const lastWeek = detectSeries(kind, series).filter((s) =>
      s.windowStartMs >= windowStart(HISTORY_WINDOWS)
    );
    assert.equal(lastWeek.length, 7 * WINDOWS_PER_DAY);
    // The week is really judged: from history, watched, with an expectation near the truth.
    assert.ok(lastWeek.every((s) => s.baseline === "history" && s.watched), kind);
    // Over the week, expected / true mean is centred on 1 (a rate of 0.1% of 2 000 is ~2 errors a
    // window, so one window's expectation is noisy; their median is not).
    const ratios = lastWeek.map((s) =>
      s.expected! /
      (kind === "count" ? 400 * dailyPattern(indexOf(s)) : kind === "rate" ? 0.001 : 0.85)
    ).sort((a, b) => a - b);
    const medianRatio = ratios[ratios.length >> 1];
    assert.ok(Math.abs(medianRatio - 1) < 0.1, `${kind}: median expected/true ${medianRatio}`);
    assert.deepEqual(lastWeek.filter((s) => s.anomalous).map((s) => s.windowStartMs), [], kind);
    assert.deepEqual(opened(lastWeek), [], kind);
    assert.ok(lastWeek.every((s) => s.state === "normal"), kind);
  }
});

Deno.test("anomaly: a count following the daily pattern gets the pattern as its expectation", () => {
  const steps = watchedDay(detectSeries("count", countSeries(4, HISTORY_WINDOWS + 288, 1_000)));
  const night = steps[3 * 12]; // 03:00, pattern ≈ 0.5
  const evening = steps[18 * 12]; // 18:00, pattern ≈ 1.5
  assert.ok(Math.abs(night.expected! - 1_000 * dailyPattern(HISTORY_WINDOWS + 36)) < 60);
  assert.ok(Math.abs(evening.expected! - 1_000 * dailyPattern(HISTORY_WINDOWS + 216)) < 80);
  const [lo, hi] = evening.band!;
  assert.ok(Math.abs(hi - evening.expected! - 3.5 * evening.scale!) < 1e-9);
  assert.ok(Math.abs(evening.expected! - lo - 3.5 * evening.scale!) < 1e-9);
});

Deno.test("anomaly: the recent level follows a lasting shift the previous weeks did not have", () => {
  // The audience grows by 30% two hours before 14:00 and stays there.
  const series = countSeries(
    16,
    HISTORY_WINDOWS + 288,
    400,
    (i) => (i >= INCIDENT_AT - 24 ? 1.3 : 1),
  );
  const step = detectSeries("count", series)[INCIDENT_AT];
  const seasonal = 400 * dailyPattern(INCIDENT_AT);
  assert.ok(Math.abs(step.expected! / seasonal - 1.3) < 0.06, `level ${step.expected! / seasonal}`);
});

Deno.test("anomaly: only the harmful direction alarms", () => {
  assert.equal(harmfulZ("count", -4), 4);
  assert.equal(harmfulZ("share", -4), 4);
  assert.equal(harmfulZ("rate", -4), -4);
  assert.equal(isAnomalous("count", 40, 100, -4, S), true);
  assert.equal(isAnomalous("count", 40, 100, 4, S), false);
  assert.equal(isAnomalous("rate", 0.3, 0.1, 4, S), true);
  assert.equal(isAnomalous("rate", 0.3, 0.1, -4, S), false);
  assert.equal(isAnomalous("share", 0.03, 0.85, -4, S), true);
  assert.equal(isAnomalous("share", 0.03, 0.85, 3.4, S), false);
  assert.equal(isAnomalous("count", 40, 100, -3.4, S), false, "z under 3.5");
});

Deno.test("anomaly: a volume drop of 80% for 30 minutes opens one incident and closes it", () => {
  const dropWindows = 6;
  const series = countSeries(
    15,
    HISTORY_WINDOWS + 288,
    400,
    (i) => (i >= INCIDENT_AT && i < INCIDENT_AT + dropWindows ? 0.2 : 1),
  );
  const steps = detectSeries("count", series);
  const at = (i: number) => steps[i];
  assert.deepEqual(opened(steps), [windowStart(INCIDENT_AT + 1)], "opens at the 2nd window");
  assert.deepEqual(closed(steps), [windowStart(INCIDENT_AT + dropWindows + 2)], "3rd calm window");
  assert.equal(at(INCIDENT_AT - 1).state, "normal");
  assert.equal(at(INCIDENT_AT).state, "pending");
  assert.ok(at(INCIDENT_AT).anomalous && at(INCIDENT_AT).z <= -3.5);
  assert.ok(at(INCIDENT_AT).observed! <= 0.5 * at(INCIDENT_AT).expected!);
  for (let i = INCIDENT_AT + 1; i < INCIDENT_AT + dropWindows; i++) {
    assert.equal(at(i).state, "open");
  }
  assert.equal(at(INCIDENT_AT + dropWindows).state, "recovering");
  assert.equal(at(INCIDENT_AT + dropWindows + 1).state, "recovering");
  assert.equal(at(INCIDENT_AT + dropWindows + 2).state, "normal");
  // The outage stays out of later baselines: the drop and the recovery windows.
  const excluded = windowsToExclude(steps);
  const expectedExcluded = Array.from(
    { length: dropWindows + 2 },
    (_, k) => windowStart(INCIDENT_AT + k),
  );
  assert.deepEqual([...excluded].sort((a, b) => a - b), expectedExcluded);
  // After the incident the level is back near 1: the drop did not drag the expectation down.
  const after = at(INCIDENT_AT + dropWindows + 3);
  assert.ok(Math.abs(after.z) < 2, `z ${after.z}`);
});

Deno.test("anomaly: windowsToExclude adds the muted windows the caller flags", () => {
  const steps = detectSeries("count", countSeries(6, HISTORY_WINDOWS + 12, 400));
  assert.deepEqual([...windowsToExclude(steps, [windowStart(3)])], [windowStart(3)]);
});

Deno.test("anomaly: a muted week stays out of the seasonal baseline", () => {
  // The same window a week ago was an outage at 10%; muted, it no longer lowers the median.
  const series = countSeries(7, HISTORY_WINDOWS + 288, 400, (i) => {
    const weekBack = INCIDENT_AT - 7 * WINDOWS_PER_DAY;
    const twoWeeksBack = INCIDENT_AT - 14 * WINDOWS_PER_DAY;
    return i === weekBack || i === twoWeeksBack ? 0.1 : 1;
  });
  const muted = [windowStart(INCIDENT_AT) - WEEK_MS, windowStart(INCIDENT_AT) - 2 * WEEK_MS];
  const plain = detectSeries("count", series)[INCIDENT_AT];
  const withMute = detectSeries("count", series, S, { muted })[INCIDENT_AT];
  assert.ok(plain.expected! < 0.8 * withMute.expected!, `${plain.expected} ${withMute.expected}`);
});

Deno.test("anomaly: an error rate jumping from 0.1% to 15% opens an incident", () => {
  const series = rateSeries(8, HISTORY_WINDOWS + 288, 2_000, stepRate(0.001, 0.15, INCIDENT_AT, 4));
  const steps = detectSeries("rate", series);
  assert.deepEqual(opened(steps), [windowStart(INCIDENT_AT + 1)]);
  assert.ok(steps[INCIDENT_AT].z >= 3.5);
  assert.equal(steps[INCIDENT_AT].baseline, "history");
});

Deno.test("anomaly: below minEvents a rate jump is not watched; from it, it is", () => {
  // 20 views per window: even 15% failures (3 of 20) stay quiet.
  const quiet = detectSeries(
    "rate",
    rateSeries(9, HISTORY_WINDOWS + 288, 20, stepRate(0.003, 0.15, INCIDENT_AT, 4), {
      flatVolume: true,
    }),
  );
  assert.equal(quiet[INCIDENT_AT].watched, false);
  assert.equal(quiet[INCIDENT_AT].observed, 0.15);
  assert.deepEqual(quiet.filter((s) => s.anomalous), []);
  assert.deepEqual(opened(quiet), []);
  // The same jump with 30 views per window is watched and opens.
  const loud = detectSeries(
    "rate",
    rateSeries(9, HISTORY_WINDOWS + 288, 30, stepRate(0.003, 0.15, INCIDENT_AT, 4), {
      flatVolume: true,
    }),
  );
  assert.equal(loud[INCIDENT_AT].watched, true);
  assert.deepEqual(opened(loud), [windowStart(INCIDENT_AT + 1)]);
});

Deno.test("anomaly: a rate tripling from 0.1% to 0.3% is under the 2-point minimum change", () => {
  const series = rateSeries(
    10,
    HISTORY_WINDOWS + 288,
    20_000,
    stepRate(0.001, 0.003, INCIDENT_AT, 6),
    { flatVolume: true },
  );
  const steps = detectSeries("rate", series);
  assert.ok(steps[INCIDENT_AT].z >= 3.5, "statistically clear");
  assert.deepEqual(opened(steps), []);
  assert.equal(steps[INCIDENT_AT].anomalous, false);
});

Deno.test("anomaly: a 1.5x rate change does not alarm, a 2x change does", () => {
  const run = (changed: number) =>
    detectSeries(
      "rate",
      rateSeries(11, HISTORY_WINDOWS + 288, 1_000, stepRate(0.1, changed, INCIDENT_AT, 4), {
        flatVolume: true,
      }),
    );
  const oneAndHalf = run(0.15);
  assert.ok(oneAndHalf[INCIDENT_AT].z >= 3.5, `z ${oneAndHalf[INCIDENT_AT].z}: only ×2 stops it`);
  assert.ok(oneAndHalf[INCIDENT_AT].observed! - oneAndHalf[INCIDENT_AT].expected! >= 0.02);
  assert.deepEqual(opened(oneAndHalf), []);
  assert.deepEqual(opened(run(0.25)), [windowStart(INCIDENT_AT + 1)]);
});

Deno.test("anomaly: an EU consent share falling from 85% to 3% opens; a rise does not", () => {
  const fall = detectSeries(
    "share",
    rateSeries(12, HISTORY_WINDOWS + 288, 500, stepRate(0.85, 0.03, INCIDENT_AT, 4)),
  );
  assert.deepEqual(opened(fall), [windowStart(INCIDENT_AT + 1)]);
  assert.ok(fall[INCIDENT_AT].z <= -3.5);
  const rise = detectSeries(
    "share",
    rateSeries(12, HISTORY_WINDOWS + 288, 500, stepRate(0.45, 0.99, INCIDENT_AT, 4)),
  );
  assert.ok(rise[INCIDENT_AT].z >= 3.5, "a clear change, in the harmless direction");
  assert.deepEqual(opened(rise), []);
});

Deno.test("anomaly: a new key is compared with its peers in the same window", () => {
  const windows = HISTORY_WINDOWS + 288;
  const peers = [21, 22, 23, 24].map((seed) => rateSeries(seed, windows, 800, () => 0.01));
  // The new key appears on the watched day: no baseline week of its own.
  const fresh = rateSeries(25, windows, 600, stepRate(0.01, 0.2, INCIDENT_AT, 4))
    .slice(HISTORY_WINDOWS);
  const steps = detectSeries("rate", fresh, S, { peers });
  assert.ok(steps.every((s) => s.baseline === "peers"));
  const before = steps[INCIDENT_AT - HISTORY_WINDOWS - 1];
  assert.ok(Math.abs(before.expected! - 0.01) < 0.005, `peer median ${before.expected}`);
  assert.deepEqual(opened(steps), [windowStart(INCIDENT_AT + 1)]);
  assert.equal(steps.filter((s) => s.anomalous).length, 4);
});

Deno.test("anomaly: a new count key is normalised by its size against its peers", () => {
  const windows = HISTORY_WINDOWS + 288;
  const peers = [31, 32, 33].map((seed, k) => countSeries(seed, windows, 200 * (k + 1)));
  // 1 000 per window, 5 to 10 times its peers' size; it drops by 80% at 14:00.
  const fresh = countSeries(
    34,
    windows,
    1_000,
    (i) => (i >= INCIDENT_AT && i < INCIDENT_AT + 4 ? 0.2 : 1),
  ).slice(HISTORY_WINDOWS);
  const steps = detectSeries("count", fresh, S, { peers });
  const before = steps[INCIDENT_AT - HISTORY_WINDOWS - 1];
  assert.equal(before.baseline, "peers");
  assert.ok(Math.abs(before.expected! / before.observed! - 1) < 0.2, "own size, peers' movement");
  assert.deepEqual(opened(steps), [windowStart(INCIDENT_AT + 1)]);
  assert.equal(steps[0].baseline, "learning", "no recent window of its own yet");
});

Deno.test("anomaly: a new key with fewer than 3 peers is learning and never alarms", () => {
  const windows = HISTORY_WINDOWS + 288;
  const peers = [41, 42].map((seed) => rateSeries(seed, windows, 800, () => 0.01));
  const fresh = rateSeries(43, windows, 600, stepRate(0.01, 0.5, INCIDENT_AT, 12))
    .slice(HISTORY_WINDOWS);
  const steps = detectSeries("rate", fresh, S, { peers });
  assert.ok(steps.every((s) => s.baseline === "learning"));
  assert.equal(steps[INCIDENT_AT - HISTORY_WINDOWS].expected, null);
  assert.equal(steps[INCIDENT_AT - HISTORY_WINDOWS].band, null);
  assert.deepEqual(steps.filter((s) => s.anomalous || s.state !== "normal"), []);
  // Alone, without any peer series, a new key is learning too.
  assert.ok(detectSeries("rate", fresh).every((s) => s.baseline === "learning"));
});

Deno.test("anomaly: a noisy series gets the MAD of its residuals as its scale", () => {
  // 25% noise per window, far above the sampling noise of ~400 events: two windows at 45% of the
  // pattern are within what this series does.
  const dip = (i: number) => (i === INCIDENT_AT || i === INCIDENT_AT + 1 ? 0.45 : 1);
  const steps = detectSeries("count", countSeries(17, HISTORY_WINDOWS + 288, 400, dip, 0.25));
  const step = steps[INCIDENT_AT];
  assert.ok(step.scale! > 3 * Math.sqrt(step.expected!), `scale ${step.scale}`);
  assert.ok(step.observed! <= 0.5 * step.expected!, "a change large enough, were it unusual");
  assert.ok(step.z > -3.5, `z ${step.z}`);
  assert.equal(step.anomalous, false);
  assert.equal(steps[INCIDENT_AT + 1].anomalous, false);
  assert.equal(steps[INCIDENT_AT + 1].state, "normal");
});

Deno.test("anomaly: sampling noise floors the scale of a perfectly flat history", () => {
  const flatCount = (
    i: number,
  ) => (i === INCIDENT_AT ? 990 : i === INCIDENT_AT + 1 ? 1_012 : 1_000);
  const counts = detectSeries(
    "count",
    Array.from({ length: HISTORY_WINDOWS + 288 }, (_, i) => ({
      windowStartMs: windowStart(i),
      num: flatCount(i),
      den: 1,
    })),
  );
  const wiggle = counts[INCIDENT_AT];
  assert.equal(wiggle.expected, 1_000);
  assert.equal(wiggle.scale, Math.sqrt(1_000), "MAD is 0: √expected is the scale");
  assert.ok(Math.abs(wiggle.z + 10 / Math.sqrt(1_000)) < 1e-9);
  assert.ok(Math.abs(counts[INCIDENT_AT + 1].z) < 1);
  assert.ok(counts.every((s) => s.state === "normal" && Number.isFinite(s.z)));

  const flatRate = (i: number) => (i === INCIDENT_AT ? 105 : 100);
  const rates = detectSeries(
    "rate",
    Array.from({ length: HISTORY_WINDOWS + 288 }, (_, i) => ({
      windowStartMs: windowStart(i),
      num: flatRate(i),
      den: 10_000,
    })),
  );
  const rateWiggle = rates[INCIDENT_AT];
  assert.ok(Math.abs(rateWiggle.scale! - Math.sqrt(0.01 * 0.99 / 10_000)) < 1e-12);
  assert.ok(rateWiggle.z > 0.4 && rateWiggle.z < 0.6, `z ${rateWiggle.z}`);
  assert.ok(rates.every((s) => s.state === "normal"));
});

Deno.test("anomaly: incidents open after 2 anomalous windows and close after 3 calm ones", () => {
  let memory = { ...NO_INCIDENT };
  const trace: string[] = [];
  const windows: [boolean, number][] = [
    [true, -5], // pending
    [false, -1], // one odd window: back to normal
    [true, -5],
    [true, -6], // opens
    [false, -1], // calm 1
    [false, -2.5], // not calm: back to open
    [false, 0.5],
    [false, -1.9],
    [false, 1], // closes
  ];
  for (const [anomalous, z] of windows) {
    const t = advance(memory, { anomalous, z }, S);
    memory = t.memory;
    trace.push(memory.state + (t.opened ? "+opened" : "") + (t.closed ? "+closed" : ""));
  }
  assert.deepEqual(trace, [
    "pending",
    "normal",
    "pending",
    "open+opened",
    "recovering",
    "open",
    "recovering",
    "recovering",
    "normal+closed",
  ]);
});

Deno.test("anomaly: contribution analysis attributes 92% of a drop to the version that broke", () => {
  const random = mulberry32(51);
  const segments: SegmentChange[] = [];
  for (const app_version of ["6.9", "7.0", "7.1"]) {
    for (const platform of ["tizen", "webos", "android"]) {
      const expected = 500 + Math.round(random() * 1_000);
      segments.push({ dimensions: { app_version, platform }, expected, observed: expected });
    }
  }
  // 7.1 on tizen loses 920 views; the other 80 of the 1 000 lost are spread over the rest.
  const broken = segments.find((s) =>
    s.dimensions.app_version === "7.1" && s.dimensions.platform === "tizen"
  )!;
  broken.observed = broken.expected - 920;
  const others = segments.filter((s) => s !== broken);
  const weights = others.map(() => random());
  const total = weights.reduce((a, b) => a + b, 0);
  let left = 80;
  others.forEach((s, k) => {
    const loss = k === others.length - 1 ? left : Math.floor(80 * weights[k] / total);
    s.observed -= loss;
    left -= loss;
  });
  const sum = (f: (s: SegmentChange) => number) => segments.reduce((a, s) => a + f(s), 0);
  const parent = { expected: sum((s) => s.expected), observed: sum((s) => s.observed) };
  assert.equal(parent.observed - parent.expected, -1_000);

  const ranked = contributions(parent, segments);
  assert.deepEqual(ranked[0].dimensions, { app_version: "7.1", platform: "tizen" });
  assert.ok(Math.abs(ranked[0].share - 0.92) < 1e-12);
  assert.equal(formatContribution(ranked[0]), "app_version 7.1 on platform tizen: 92% of the drop");
  assert.ok(ranked.every((c, k) => k === 0 || c.share <= ranked[k - 1].share), "sorted");
  assert.ok(Math.abs(ranked.reduce((a, c) => a + c.share, 0) - 1) < 1e-12);
  assert.equal(
    formatContribution(
      contributions({ expected: 10, observed: 20 }, [{
        dimensions: { platform: "webos" },
        expected: 5,
        observed: 10,
      }])[0],
    ),
    "platform webos: 50% of the rise",
  );
});

/**
 * Runs a {@link KeyTracker} over a whole series the way the detector does: each window's seasonal
 * baseline from the same window of past weeks, minus the windows the tracker excluded so far.
 */
function trackSeries(kind: SeriesKind, points: readonly SeriesPoint[]): AnomalyStep[] {
  const tracker = new KeyTracker(kind);
  const byWindow = new Map(points.map((p) => [p.windowStartMs, p]));
  const excluded = new Set<number>();
  return points.map((point) => {
    const pastWeeks = Array.from(
      { length: S.baselineWeeks },
      (_, k) => point.windowStartMs - (k + 1) * WEEK_MS,
    )
      .filter((w) => !excluded.has(w))
      .flatMap((w) => byWindow.get(w) ?? []);
    const step = tracker.step(point, seasonalBaseline(kind, pastWeeks));
    for (const w of step.excluded) excluded.add(w);
    const { excluded: _, ...rest } = step;
    return rest;
  });
}

Deno.test("anomaly: the window-by-window tracker answers as the whole-series model does", () => {
  const drop = countSeries(
    15,
    HISTORY_WINDOWS + 288,
    400,
    (i) => (i >= INCIDENT_AT && i < INCIDENT_AT + 6 ? 0.2 : 1),
  );
  const rate = rateSeries(7, HISTORY_WINDOWS + 288, 300, stepRate(0.01, 0.15, INCIDENT_AT, 8));
  for (const [kind, series] of [["count", drop], ["rate", rate]] as const) {
    const whole = detectSeries(kind, series);
    const tracked = trackSeries(kind, series);
    assert.equal(opened(tracked).length, 1, `${kind}: one incident`);
    assert.deepEqual(opened(tracked), opened(whole));
    assert.deepEqual(closed(tracked), closed(whole));
    for (let i = 0; i < whole.length; i++) {
      assert.equal(tracked[i].state, whole[i].state, `${kind} window ${i}: state`);
      assert.equal(tracked[i].baseline, whole[i].baseline);
      if (whole[i].expected === null) continue;
      assert.ok(Math.abs(tracked[i].z - whole[i].z) < 1e-9, `${kind} window ${i}: z`);
    }
  }
});
