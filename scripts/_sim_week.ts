/**
 * The scripted week (`_scenario_week.ts`) as wire events, for `deno task simulate --scenario week`:
 * each watched window's events reproduce its cube rows exactly (events, errors and EU consents per
 * platform, region, app version and plan), its QoE rows view by view (views, technical start
 * failures, stalls, measured and slow startups per title, CDN and plan) and its titles rows as
 * closely as the cube allows (see {@link weekWindow}). Pure and seeded, one window at a time, so a
 * week of millions of events streams without being held.
 *
 * @module
 */
import { prng } from "./_sim_traffic.ts";
import type { ViewWireEvent } from "./_sim_views.ts";
import {
  type CubeCell,
  DAY_MS,
  type Fault,
  faultsOf,
  PLAN_SHARES,
  PLANS,
  PLATFORMS,
  type QoeCell,
  REGIONS,
  type ScenarioOptions,
  type TitleCell,
  watchedWindows,
  windowRows,
} from "./_scenario_week.ts";

/** One event of the week in the wire format: a plain event (no `cdn`) or one of a QoE view. */
export interface WeekEvent extends Omit<ViewWireEvent, "cdn"> {
  cdn?: string;
  subscription_plan: string;
}

/** The events of one watched window, in time order, and how its views fitted the cube. */
export interface WeekWindow {
  startMs: number;
  events: WeekEvent[];
  /** QoE views sent (each a `view_id`). */
  views: number;
  /** Views of the QoE rows that found no room in the window's cube rows (not sent). */
  droppedViews: number;
}

/** A QoE view's startup above this is slow (`QOE_MAX_STARTUP_P95_MS` defaults to 8 s). */
const SLOW_STARTUP_MS = 9_000;
const TECHNICAL_CODES = ["MANIFEST_404", "CDN_TIMEOUT", "DECODER_ERROR"];
const SESSION_CODES = ["NETWORK_TIMEOUT", "DECODER_ERROR", "DRM_LICENSE_FAILED"];
/** Windows between two uses of one viewer (two hours of 5-minute windows). */
const REUSE_WINDOWS = 24;
/** The busiest traffic `trafficAt` gives: 20:00 on a weekend day. */
const PEAK_TRAFFIC = 1.5 * 1.2;

/** The faults a run watching `o` should open incidents for: those that end in its watched days. */
export function faultsWatched(o: ScenarioOptions): Fault[] {
  const endMs = o.watchStartMs + o.days * DAY_MS;
  return faultsOf(o.watchStartMs).filter((f) => f.endMs <= endMs);
}

/** Windows, events and QoE views of a run: the sums of its cube and QoE rows. */
export function weekTotals(o: ScenarioOptions): { windows: number; events: number; views: number } {
  const totals = { windows: 0, events: 0, views: 0 };
  for (const t of watchedWindows(o)) {
    const rows = windowRows(t, o);
    totals.windows++;
    for (const c of rows.cube) totals.events += c.events;
    for (const c of rows.qoe) totals.views += c.views;
  }
  return totals;
}

/** The watched windows' events from `fromMs` on, one window at a time, in time order. */
export function* weekWindows(o: ScenarioOptions, fromMs = o.watchStartMs): Generator<WeekWindow> {
  for (const t of watchedWindows(o)) if (t >= fromMs) yield weekWindow(t, o);
}

/** One event of a unit (a view or a plain session), its time relative to the unit's start. */
interface Step {
  type: WeekEvent["event_type"];
  offsetMs: number;
  errorCode?: string;
}

/** What one viewer does in a window: one QoE view, or a plain session of one title. */
interface Unit {
  contentId: string;
  view: { id: string; cdn: string } | null;
  steps: Step[];
  /** Time from the first step to the last. */
  durationMs: number;
  /** The whole view of a piece of a view split over rows: the piece takes its viewer and start. */
  owner?: Unit;
  viewer?: number;
  startMs?: number;
}

/** A cube row of the window and the room left in it. */
interface Row {
  cell: CubeCell;
  platform: number;
  region: number;
  plan: number;
  freeOk: number;
  freeErrors: number;
  units: Unit[];
}

/** One view a QoE row asks for. */
interface ViewPlan {
  contentId: string;
  cdn: string;
  isVsf: boolean;
  isMeasured: boolean;
  isSlow: boolean;
  stallMs: number;
  playingMs: number;
}

/**
 * The events of the window starting at `t`. Per plan: the titles rows are scaled to the cube's
 * events and errors of each platform; each QoE view goes into the cube rows of its plan with room,
 * on the platform its title most still needs ({@link placeView}); the rest of every row is filled
 * with plain sessions (PLAY, SEEK or PAUSE, STOP, ERRORs) of the titles still short on that
 * platform. So the cube is exact, the QoE rows are exact unless the plan ran out of room (the
 * outage hour), and the titles are off where the views of a title outgrew its share of a platform.
 * Viewers are reused every two hours of windows; each does one view or session per window.
 */
export function weekWindow(t: number, o: ScenarioOptions): WeekWindow {
  const rows = windowRows(t, o);
  const windowNumber = Math.floor(t / o.windowMs);
  const random = prng(Math.imul(windowNumber, 0x9e3779b1) ^ o.seed ^ 0x7f4a7c15);
  // Watched time is scaled to fit a view in a window; stalls scale with it (same rebuffer ratio).
  const timeScale = o.windowMs / 1_200_000;
  let views = 0;
  let droppedViews = 0;
  const allRows: Row[] = [];
  for (const [k, plan] of PLANS.entries()) {
    const planRows = rows.cube.filter((c) => c.subscription_plan === plan).map((cell) => ({
      cell,
      platform: PLATFORMS.indexOf(cell.platform as typeof PLATFORMS[number]),
      region: REGIONS.indexOf(cell.region as typeof REGIONS[number]),
      plan: k,
      freeOk: cell.events - cell.errors,
      freeErrors: cell.errors,
      units: [],
    }));
    allRows.push(...planRows);
    const titles = rows.titles.filter((c) => c.subscription_plan === plan);
    const titleIds = [...new Set(titles.map((c) => c.content_id))];
    const targets = titleTargets(planRows, titles, titleIds);
    const plans = viewPlans(rows.qoe.filter((c) => c.subscription_plan === plan), timeScale);
    for (const [j, v] of plans.entries()) {
      const unit = viewUnit(v, `week-${o.seed}-${windowNumber}-${k}-${j}`, random);
      if (placeView(unit, v.isVsf, planRows, targets, titleIds.indexOf(v.contentId))) views++;
      else droppedViews++;
    }
    for (let p = 0; p < PLATFORMS.length; p++) {
      fillSessions(planRows.filter((r) => r.platform === p), titleIds, targets, p, random);
    }
  }
  const events = materialize(t, o, allRows, windowNumber, random);
  return { startMs: t, events, views, droppedViews };
}

/**
 * Puts a view into the plan's rows: whole into the row of the platform its title most still needs
 * (for a start failure: its errors) that it fills best, so rows keep room for the views after it;
 * else split over rows with room (its viewer switches rows mid-view, which only counts the viewer
 * in both rows). False when the plan has no room left for it.
 */
function placeView(
  unit: Unit,
  isVsf: boolean,
  rows: Row[],
  targets: { ok: number[][]; errors: number[][] },
  i: number,
): boolean {
  const isError = (step: Step) => step.type === "ERROR";
  const errors = unit.steps.filter(isError).length;
  const ok = unit.steps.length - errors;
  const need = isVsf ? targets.errors[i] : targets.ok[i];
  const take = (r: Row, steps: Step[]) => {
    const e = steps.filter(isError).length;
    r.freeOk -= steps.length - e;
    r.freeErrors -= e;
    targets.ok[i][r.platform] -= steps.length - e;
    targets.errors[i][r.platform] -= e;
  };
  let best: Row | undefined;
  for (const r of rows) {
    if (r.freeOk < ok || r.freeErrors < errors) continue;
    if (
      best === undefined || need[r.platform] > need[best.platform] ||
      (need[r.platform] === need[best.platform] && r.freeOk < best.freeOk)
    ) best = r;
  }
  if (best !== undefined) {
    take(best, unit.steps);
    best.units.push(unit);
    return true;
  }
  if (rows.reduce((a, r) => a + r.freeOk, 0) < ok) return false;
  if (rows.reduce((a, r) => a + r.freeErrors, 0) < errors) return false;
  let piece: { row: Row; steps: Step[] } | null = null;
  for (const step of unit.steps) {
    const hasRoom = (r: Row) => isError(step) ? r.freeErrors > 0 : r.freeOk > 0;
    if (piece === null || !hasRoom(piece.row)) {
      let row: Row | undefined;
      for (const r of rows) {
        if (!hasRoom(r)) continue;
        if (row === undefined || need[r.platform] > need[row.platform]) row = r;
        else if (need[r.platform] === need[row.platform] && r.freeOk > row.freeOk) row = r;
      }
      piece = { row: row!, steps: [] };
      piece.row.units.push({ ...unit, steps: piece.steps, owner: unit });
    }
    piece.steps.push(step);
    take(piece.row, [step]);
  }
  return true;
}

/**
 * Per title and platform, the non-error events and errors the titles rows ask for, scaled to the
 * cube's totals of that platform and plan; the views and sessions count down from them.
 */
function titleTargets(planRows: Row[], titles: TitleCell[], titleIds: string[]) {
  const ok = titleIds.map(() => PLATFORMS.map(() => 0));
  const errors = titleIds.map(() => PLATFORMS.map(() => 0));
  for (const [p, platform] of PLATFORMS.entries()) {
    const ofPlatform = planRows.filter((r) => r.platform === p);
    const events = ofPlatform.reduce((a, r) => a + r.cell.events, 0);
    const errorCount = ofPlatform.reduce((a, r) => a + r.cell.errors, 0);
    const cells = titleIds.map((id) =>
      titles.find((c) => c.content_id === id && c.platform === platform)
    );
    const eventsOf = apportion(events, cells.map((c) => c?.events ?? 0));
    // Errors go to the titles whose rows ask for the most first: a burst keeps its errors.
    const errorsOf = greedy(errorCount, cells.map((c) => c?.errors ?? 0), eventsOf);
    for (let i = 0; i < titleIds.length; i++) {
      ok[i][p] = eventsOf[i] - errorsOf[i];
      errors[i][p] = errorsOf[i];
    }
  }
  return { ok, errors };
}

/** The views of a plan's QoE rows, with what each must measure. */
function viewPlans(qoe: QoeCell[], timeScale: number): ViewPlan[] {
  const out: ViewPlan[] = [];
  for (const c of qoe) {
    const vsf = Math.min(c.views, c.vsf_technical);
    const started = c.views - vsf;
    const measured = Math.min(started, c.startup_views);
    const slow = Math.min(measured, c.slow_startups);
    const stalls = started === 0 ? 0 : Math.round(c.rebuffer_ms / 3_000);
    const stallMs = Math.round(3_000 * timeScale);
    const playingMs = Math.round(c.views * 300_000 * timeScale);
    for (let j = 0; j < c.views; j++) {
      const s = j - vsf;
      out.push({
        contentId: c.content_id,
        cdn: c.cdn,
        isVsf: j < vsf,
        isMeasured: s >= 0 && s < measured,
        isSlow: s >= 0 && s < slow,
        // Spread from the last view back, so stalls and slow startups fall on different views.
        stallMs: s < 0 ? 0 : share(stalls, started, started - 1 - s) * stallMs,
        playingMs: s < 0 ? 0 : share(playingMs, started, s),
      });
    }
  }
  // Start failures first (they need an error of the cube, the scarcer room), then the longest.
  const size = (v: ViewPlan) =>
    (v.isVsf ? 100 : 0) + (v.isMeasured ? 1 : 0) + (v.stallMs > 0 ? 2 : 0);
  return out.sort((a, b) => size(b) - size(a));
}

/** The `index`th of `count` near-equal parts of `total`. */
function share(total: number, count: number, index: number): number {
  return Math.floor(total / count) + (index < total % count ? 1 : 0);
}

/**
 * A view's events: PLAY_REQUEST (when its startup is measured), FIRST_FRAME after the startup,
 * one REBUFFER_START/END pair holding all its stalls, STOP; or PLAY_REQUEST then a fatal technical
 * ERROR for a start failure.
 */
function viewUnit(v: ViewPlan, id: string, random: () => number): Unit {
  const steps: Step[] = [];
  if (v.isVsf) {
    steps.push({ type: "PLAY_REQUEST", offsetMs: 0 });
    steps.push({
      type: "ERROR",
      offsetMs: 1_000 + Math.floor(random() * 5_000),
      errorCode: pick(random, TECHNICAL_CODES),
    });
    return {
      contentId: v.contentId,
      view: { id, cdn: v.cdn },
      steps,
      durationMs: steps[1].offsetMs,
    };
  }
  const startupMs = v.isSlow
    ? SLOW_STARTUP_MS + Math.floor(random() * 5_000)
    : 400 + Math.floor(random() * 2_600);
  const firstFrameMs = v.isMeasured ? startupMs : 0;
  if (v.isMeasured) steps.push({ type: "PLAY_REQUEST", offsetMs: 0 });
  steps.push({ type: "FIRST_FRAME", offsetMs: firstFrameMs });
  const half = Math.floor(v.playingMs / 2);
  if (v.stallMs > 0) {
    steps.push({ type: "REBUFFER_START", offsetMs: firstFrameMs + half });
    steps.push({ type: "REBUFFER_END", offsetMs: firstFrameMs + half + v.stallMs });
  }
  steps.push({ type: "STOP", offsetMs: firstFrameMs + v.playingMs + v.stallMs });
  const durationMs = steps[steps.length - 1].offsetMs;
  return { contentId: v.contentId, view: { id, cdn: v.cdn }, steps, durationMs };
}

/**
 * Fills the room left in a platform's rows with plain sessions, title by title in a seeded order,
 * each title taking the non-error events and errors it is still short of.
 */
function fillSessions(
  rows: Row[],
  titleIds: string[],
  targets: { ok: number[][]; errors: number[][] },
  p: number,
  random: () => number,
): void {
  const okLeft = rows.reduce((a, r) => a + r.freeOk, 0);
  const errorsLeft = rows.reduce((a, r) => a + r.freeErrors, 0);
  const okWanted = titleIds.map((_, i) => Math.max(0, targets.ok[i][p]));
  const okOf = apportion(okLeft, okWanted);
  const errorsOf = greedy(
    errorsLeft,
    titleIds.map((_, i) => Math.max(0, targets.errors[i][p])),
    okOf,
  );
  const order = titleIds.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const okQueue = order.map((i) => ({ i, left: okOf[i] }));
  const errorQueue = order.map((i) => ({ i, left: errorsOf[i] }));
  for (const r of rows) {
    const take = (queue: typeof okQueue, count: number) => {
      const got = new Map<number, number>();
      while (count > 0) {
        const head = queue.find((q) => q.left > 0);
        if (head === undefined) break;
        const n = Math.min(count, head.left);
        head.left -= n;
        count -= n;
        got.set(head.i, (got.get(head.i) ?? 0) + n);
      }
      return got;
    };
    const ok = take(okQueue, r.freeOk);
    const errors = take(errorQueue, r.freeErrors);
    for (const i of new Set([...ok.keys(), ...errors.keys()])) {
      r.units.push(...sessions(titleIds[i], ok.get(i) ?? 0, errors.get(i) ?? 0, random));
      targets.ok[i][p] -= ok.get(i) ?? 0;
      targets.errors[i][p] -= errors.get(i) ?? 0;
    }
    r.freeOk = 0;
    r.freeErrors = 0;
  }
}

/** Plain sessions of one title holding `ok` non-error events and `errors` ERRORs, three a viewer. */
function sessions(contentId: string, ok: number, errors: number, random: () => number): Unit[] {
  const total = ok + errors;
  const count = Math.ceil(total / 3);
  const out: Unit[] = [];
  for (let s = 0; s < count; s++) {
    // Every count-th event from s: errors spread over the sessions.
    let okHere = 0;
    let errorsHere = 0;
    for (let e = s; e < total; e += count) {
      if (e < ok) okHere++;
      else errorsHere++;
    }
    const steps: Step[] = [];
    let atMs = 0;
    for (let e = 0; e < okHere; e++) {
      const type = e === 0 ? "PLAY" : e === okHere - 1 ? "STOP" : random() < 0.6 ? "SEEK" : "PAUSE";
      steps.push({ type, offsetMs: atMs });
      atMs += 2_000 + Math.floor(random() * 18_000);
    }
    for (let e = 0; e < errorsHere; e++) {
      steps.push({ type: "ERROR", offsetMs: atMs, errorCode: pick(random, SESSION_CODES) });
      atMs += 1_000 + Math.floor(random() * 4_000);
    }
    out.push({ contentId, view: null, steps, durationMs: steps[steps.length - 1].offsetMs });
  }
  return out;
}

/** The rows' units as events: a viewer of the row's pool each, a time in the window, consent. */
function materialize(
  t: number,
  o: ScenarioOptions,
  rows: Row[],
  windowNumber: number,
  random: () => number,
): WeekEvent[] {
  const drafts: Array<{ atMs: number; event: WeekEvent }> = [];
  const used = new Map<number, number>();
  for (const r of rows) {
    const pool = (r.platform * REGIONS.length + r.region) * PLANS.length + r.plan;
    const stride = strideOf(o, r.plan);
    const isEu = r.cell.eu_events > 0;
    let consentsLeft = r.cell.eu_consented;
    for (const unit of r.units) {
      // A piece of a split view is its whole view's viewer, at its time.
      const whole = unit.owner ?? unit;
      if (whole.viewer === undefined || whole.startMs === undefined) {
        const n = used.get(pool) ?? 0;
        used.set(pool, n + 1);
        whole.viewer = pool * 1_000_000 + (windowNumber * stride + n) % (stride * REUSE_WINDOWS);
        whole.startMs = t + Math.floor(random() * Math.max(1, o.windowMs - whole.durationMs - 1));
      }
      const { viewer, startMs } = whole;
      for (const step of unit.steps) {
        const atMs = Math.min(startMs + step.offsetMs, t + o.windowMs - 1);
        const event: WeekEvent = {
          event_id: "",
          user_id: `week-${o.seed}-viewer-${viewer}`,
          device_id: `week-${o.seed}-tv-${viewer}`,
          content_id: unit.contentId,
          event_type: step.type,
          timestamp: "",
          region: r.cell.region,
          is_eu: isEu,
          // Outside the EU no consent is asked for: the cube counts consents of EU events only.
          has_consent: isEu ? consentsLeft-- > 0 : true,
          ip_address: ipOf(viewer),
          error_code: step.errorCode ?? null,
          extra_metadata: { platform: r.cell.platform, app_version: r.cell.app_version },
          subscription_plan: r.cell.subscription_plan,
        };
        if (unit.view !== null) {
          event.view_id = unit.view.id;
          event.cdn = unit.view.cdn;
        }
        drafts.push({ atMs, event });
      }
    }
  }
  drafts.sort((a, b) => a.atMs - b.atMs);
  return drafts.map(({ atMs, event }, n) => {
    event.event_id = `week-${o.seed}-${windowNumber}-${n}`;
    event.timestamp = new Date(atMs).toISOString();
    return event;
  });
}

/** Viewers a pool hands out per window: twice the busiest window's need, so windows rarely share. */
function strideOf(o: ScenarioOptions, plan: number): number {
  const peakEvents = o.eventsPerWindow * o.windowMs / 300_000 * PEAK_TRAFFIC;
  return Math.ceil(peakEvents * PLAN_SHARES[plan] / (PLATFORMS.length * REGIONS.length) / 3 * 2);
}

/** A distinct public-looking IPv4 address per viewer. */
function ipOf(viewer: number): string {
  const h = Math.imul(viewer ^ (viewer >>> 16), 0x45d9f3b) >>> 0;
  return `${11 + (h % 180)}.${(h >>> 8) & 255}.${(h >>> 16) & 255}.${1 + (viewer % 250)}`;
}

/** `total` split in proportion to `weights` (largest remainders; evenly when all are 0). */
function apportion(total: number, weights: readonly number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  const w = sum > 0 ? weights : weights.map(() => 1);
  const wSum = sum > 0 ? sum : w.length;
  const exact = w.map((x) => total * x / wSum);
  const out = exact.map(Math.floor);
  let left = total - out.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => [x - Math.floor(x), i]).sort((a, b) =>
    b[0] - a[0] || a[1] - b[1]
  );
  for (let k = 0; left > 0; k = (k + 1) % order.length, left--) out[order[k][1]]++;
  return out;
}

/**
 * `total` units for titles that ask for `targets`: past every target, the rest in proportion to
 * `weights`; short of them, one at a time to whoever lacks the most (a burst keeps its errors).
 */
function greedy(total: number, targets: readonly number[], weights: readonly number[]): number[] {
  const wanted = targets.reduce((a, b) => a + b, 0);
  if (total >= wanted) {
    const extra = apportion(total - wanted, weights);
    return targets.map((x, i) => x + extra[i]);
  }
  const out = targets.map(() => 0);
  for (let n = 0; n < total; n++) {
    let best = 0;
    for (let i = 1; i < targets.length; i++) {
      if (targets[i] - out[i] > targets[best] - out[best]) best = i;
    }
    out[best]++;
  }
  return out;
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}
