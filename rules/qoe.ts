/**
 * Quality of experience per view, as video teams measure it: startup time, exits before video
 * start, start and playback failures, rebuffering, playing time, bitrate, upscaling. The
 * definitions follow Mux Data's ("view", "video startup time", "exits before video start", "video
 * startup failure", "playback failure", "rebuffer percentage") and CTA-2066 ("Streaming Quality of
 * Experience Events, Properties and Metrics": session, startup, stall vs seek). Everything here is a
 * pure function of a view's events sorted by event time, so the outcome never depends on the order
 * they arrived in: a late event only changes what the view's recomputed outcome is.
 *
 * @module
 */

/** Event types with QoE meaning besides PLAY, PAUSE, SEEK, STOP and ERROR. */
export const QOE_EVENT_TYPES = [
  "PLAY_REQUEST",
  "FIRST_FRAME",
  "REBUFFER_START",
  "REBUFFER_END",
  "AD_BREAK_START",
  "AD_BREAK_END",
  "RENDITION_CHANGE",
] as const;

/** Types a view is made of; others (LOGIN, custom types) say nothing about playback quality. */
const VIEW_TYPES: ReadonlySet<string> = new Set([
  ...QOE_EVENT_TYPES,
  "PLAY",
  "PAUSE",
  "SEEK",
  "STOP",
  "ERROR",
  "HEARTBEAT",
]);

/** Types that open a derived view (the viewer asked to play, or playback began). */
const OPENING_TYPES: ReadonlySet<string> = new Set(["PLAY_REQUEST", "PLAY", "FIRST_FRAME"]);

/** True for the types views are made of. */
export function isViewType(type: string): boolean {
  return VIEW_TYPES.has(type);
}

const HOUR_MS = 3_600_000;

/** Exits before video start shorter than this are not counted as EBVS (as Mux does). */
export const MIN_EBVS_MS = 1_000;

/** A stall that starts within this of a seek is seek time, not rebuffering (CTA-2066). */
export const SEEK_STALL_MS = 1_000;

/** The dimensions a view is counted under: those of its first event. */
export interface ViewDims {
  contentId: string;
  region: string;
  platform: string;
  appVersion: string;
  plan: string;
  cdn: string;
}

/** What a view needs of one event. */
export interface ViewEvent {
  eventId: string;
  atMs: number;
  type: string;
  contentId: string;
  /** The client's `view_id`, or null (the view is then derived). */
  viewId: string | null;
  /** On ERROR: false for a warning (the client's `fatal: false`); true otherwise. */
  fatal: boolean;
  errorCode: string | null;
  bitrateKbps: number | null;
  renditionHeight: number | null;
  playerHeight: number | null;
  dims: ViewDims;
}

/** Order of a view's events: event time, then id, so ties never depend on arrival. */
export function compareViewEvents(a: ViewEvent, b: ViewEvent): number {
  return a.atMs - b.atMs || (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0);
}

/** One view found among a device's events. */
export interface ViewSpan {
  /** `v:<view_id>`, or `d:<device>:<title>:<first event ms>` for a derived view. */
  key: string;
  events: ViewEvent[];
  /** Closed: STOP, a fatal error, another title, or idle past `VIEW_IDLE_MS`. */
  isEnded: boolean;
}

/**
 * The views in one device's events (sorted by {@link compareViewEvents}). Events with a `view_id`
 * form that view. Others form derived views: one opens at PLAY_REQUEST, PLAY or FIRST_FRAME and
 * lasts until STOP, a fatal ERROR, an event of another title on the device, or `idleMs` without an
 * event; events outside any view (a PAUSE after a STOP) belong to none. A view is also ended once
 * `watermarkMs` is more than `idleMs` past its last event.
 */
export function viewsOf(
  deviceId: string,
  events: readonly ViewEvent[],
  idleMs: number,
  watermarkMs: number,
): ViewSpan[] {
  const views: ViewSpan[] = [];
  const explicit = new Map<string, ViewSpan>();
  let current: ViewSpan | null = null;
  const close = () => {
    if (current !== null) current.isEnded = true;
    current = null;
  };
  for (const e of events) {
    if (e.viewId !== null) {
      let view = explicit.get(e.viewId);
      if (view === undefined) {
        view = { key: `v:${e.viewId}`, events: [], isEnded: false };
        explicit.set(e.viewId, view);
        views.push(view);
      }
      view.events.push(e);
      if (e.type === "STOP" || (e.type === "ERROR" && e.fatal)) view.isEnded = true;
      continue;
    }
    const open = current as ViewSpan | null;
    if (open !== null) {
      const last = open.events[open.events.length - 1];
      if (e.contentId !== last.contentId || e.atMs - last.atMs > idleMs) close();
    }
    if (current === null) {
      if (!OPENING_TYPES.has(e.type)) continue;
      current = { key: `d:${deviceId}:${e.contentId}:${e.atMs}`, events: [], isEnded: false };
      views.push(current);
    }
    (current as ViewSpan).events.push(e);
    if (e.type === "STOP" || (e.type === "ERROR" && e.fatal)) close();
  }
  for (const view of views) {
    const last = view.events[view.events.length - 1];
    if (watermarkMs - last.atMs > idleMs) view.isEnded = true;
  }
  return views;
}

/** Index of each measure in a {@link ViewOutcome}'s `counts`. */
export const QOE = {
  views: 0,
  startedViews: 1,
  ebvs: 2,
  /** Ended before the first frame within {@link MIN_EBVS_MS}: not EBVS, counted apart. */
  shortExits: 3,
  vsfBusiness: 4,
  vsfTechnical: 5,
  vpf: 6,
  /** Views with a measured startup (PLAY_REQUEST and FIRST_FRAME both seen). */
  startupViews: 7,
  startupMs: 8,
  rebuffers: 9,
  rebufferMs: 10,
  playingMs: 11,
  /** Sum of bitrate x playing time (kbps x ms), over the time a bitrate was known. */
  bitrateKbpsMs: 12,
  bitrateMs: 13,
  upscaleMs: 14,
  /** Non-fatal errors (`fatal: false`). */
  warnings: 15,
  /** Time stalled right after a seek (not rebuffering). */
  seekStallMs: 16,
} as const;

/** Number of measures in a {@link ViewOutcome}. */
export const QOE_MEASURES = 17;

/** What one view contributes to the QoE aggregates. */
export interface ViewOutcome {
  counts: number[];
  /** Startup histogram bucket ({@link startupBucket}), or -1 without a measured startup. */
  startupBucket: number;
  /** Where the view is counted: its first event's hour and dimensions. */
  hourMs: number;
  dims: ViewDims;
  /** Event time of the view's first event: the `qoe` rule's window. */
  startMs: number;
  /**
   * How a person finds the view in evidence: the client's `view_id`, or `event:<id>` of a derived
   * view's first event (a derived view's key holds the device id, which evidence never shows).
   */
  ref: string;
}

/** Ratio between histogram bucket bounds: the midpoint is within 4.9% of any value in a bucket. */
export const STARTUP_BUCKET_RATIO = 1.1;
/** Highest bucket: about 2 hours; longer startups land in it. */
export const MAX_STARTUP_BUCKET = 120;

/** Bucket of a startup time: 0 for 0 ms, then `[1.1^(b-1), 1.1^b)` ms. */
export function startupBucket(ms: number): number {
  if (ms < 1) return 0;
  const b = 1 + Math.floor(Math.log(ms) / Math.log(STARTUP_BUCKET_RATIO));
  return Math.min(Math.max(b, 1), MAX_STARTUP_BUCKET);
}

/** The value a bucket stands for: the geometric middle of its bounds (0 for bucket 0). */
export function bucketValue(bucket: number): number {
  return bucket === 0 ? 0 : Math.pow(STARTUP_BUCKET_RATIO, bucket - 0.5);
}

/**
 * A percentile (0-1) of a startup histogram (`counts[b]` views in bucket `b`), nearest rank:
 * within 4.9% of the exact value. Null without views.
 */
export function histogramPercentile(counts: ReadonlyArray<number>, p: number): number | null {
  let total = 0;
  for (const n of counts) total += n;
  if (total <= 0) return null;
  const rank = Math.max(1, Math.ceil(p * total));
  let seen = 0;
  for (let b = 0; b < counts.length; b++) {
    seen += counts[b];
    if (seen >= rank) return bucketValue(b);
  }
  return bucketValue(counts.length - 1);
}

/**
 * One view's outcome from its events (sorted). `isBusinessError` says which fatal error codes are
 * not the service's fault (entitlement, geo-block, ...): their start failures are VSF-B.
 */
export function outcomeOf(
  view: ViewSpan,
  isBusinessError: (code: string | null) => boolean,
): ViewOutcome {
  const c = new Array<number>(QOE_MEASURES).fill(0);
  const events = view.events;
  c[QOE.views] = 1;
  const firstFrame = events.findIndex((e) => e.type === "FIRST_FRAME");
  // A client that never sends FIRST_FRAME has its PLAY count as the start.
  const start = firstFrame !== -1 ? firstFrame : events.findIndex((e) => e.type === "PLAY");
  let startupBucketIndex = -1;
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    if (e.type !== "ERROR") continue;
    if (!e.fatal) c[QOE.warnings]++;
    else if (start === -1 || i < start) {
      c[isBusinessError(e.errorCode) ? QOE.vsfBusiness : QOE.vsfTechnical] = 1;
      break;
    } else {
      c[QOE.vpf] = 1;
      break;
    }
  }
  const failedToStart = c[QOE.vsfBusiness] + c[QOE.vsfTechnical] > 0;
  if (start !== -1 && !failedToStart) {
    c[QOE.startedViews] = 1;
    const request = events.findIndex((e) => e.type === "PLAY_REQUEST");
    if (firstFrame !== -1 && request !== -1 && request <= firstFrame) {
      const from = events[request].atMs;
      const to = events[firstFrame].atMs;
      const startup = Math.max(0, to - from - adTime(events, from, to));
      c[QOE.startupViews] = 1;
      c[QOE.startupMs] = startup;
      startupBucketIndex = startupBucket(startup);
    }
    playback(events, start, c);
  } else if (view.isEnded && !failedToStart) {
    const span = events[events.length - 1].atMs - events[0].atMs;
    c[span >= MIN_EBVS_MS ? QOE.ebvs : QOE.shortExits] = 1;
  }
  const first = events[0];
  return {
    counts: c,
    startupBucket: startupBucketIndex,
    hourMs: Math.floor(first.atMs / HOUR_MS) * HOUR_MS,
    dims: first.dims,
    startMs: first.atMs,
    ref: first.viewId ?? `event:${first.eventId}`,
  };
}

/** Ad time within `[from, to]`: AD_BREAK_START to AD_BREAK_END (or `to` if it never ended). */
function adTime(events: readonly ViewEvent[], from: number, to: number): number {
  let total = 0;
  let adStart: number | null = null;
  for (const e of events) {
    if (e.atMs > to) break;
    if (e.type === "AD_BREAK_START" && adStart === null) adStart = Math.max(e.atMs, from);
    if (e.type === "AD_BREAK_END" && adStart !== null) {
      total += Math.max(0, Math.min(e.atMs, to) - adStart);
      adStart = null;
    }
  }
  if (adStart !== null) total += Math.max(0, to - adStart);
  return total;
}

type PlayState = "playing" | "paused" | "stalled" | "ad";

/**
 * Playing time, stalls, bitrate and upscaling from the start on, each interval to the next event
 * charged to the state it was in; an open view is measured up to its last event.
 */
function playback(events: readonly ViewEvent[], start: number, c: number[]): void {
  let bitrate: number | null = null;
  let rendition: number | null = null;
  let player: number | null = null;
  const note = (e: ViewEvent) => {
    if (e.bitrateKbps !== null) bitrate = e.bitrateKbps;
    if (e.renditionHeight !== null) rendition = e.renditionHeight;
    if (e.playerHeight !== null) player = e.playerHeight;
  };
  for (let i = 0; i <= start; i++) note(events[i]);
  let state: PlayState = "playing";
  let isSeekStall = false;
  let lastSeekMs = -Infinity;
  let lastMs = events[start].atMs;
  for (let i = start + 1; i < events.length; i++) {
    const e = events[i];
    const dt = e.atMs - lastMs;
    if (state === "playing") {
      c[QOE.playingMs] += dt;
      if (bitrate !== null) {
        c[QOE.bitrateKbpsMs] += bitrate * dt;
        c[QOE.bitrateMs] += dt;
      }
      if (rendition !== null && player !== null && rendition < player) c[QOE.upscaleMs] += dt;
    } else if (state === "stalled") {
      c[isSeekStall ? QOE.seekStallMs : QOE.rebufferMs] += dt;
    }
    lastMs = e.atMs;
    note(e);
    switch (e.type) {
      case "PLAY":
      case "FIRST_FRAME":
        if (state === "paused") state = "playing";
        break;
      case "PAUSE":
        if (state === "playing") state = "paused";
        break;
      case "SEEK":
        lastSeekMs = e.atMs;
        break;
      case "REBUFFER_START":
        if (state !== "stalled") {
          isSeekStall = e.atMs - lastSeekMs <= SEEK_STALL_MS;
          if (!isSeekStall) c[QOE.rebuffers]++;
          state = "stalled";
        }
        break;
      case "REBUFFER_END":
        if (state === "stalled") state = "playing";
        break;
      case "AD_BREAK_START":
        state = "ad";
        break;
      case "AD_BREAK_END":
        if (state === "ad") state = "playing";
        break;
      case "STOP":
        return;
      case "ERROR":
        if (e.fatal) return;
        break;
    }
  }
}

/** `a - b`, measure by measure: what to add to retract `b` and count `a` instead. */
export function outcomeDelta(a: ViewOutcome | null, b: ViewOutcome | null): number[] {
  const out = new Array<number>(QOE_MEASURES).fill(0);
  if (a !== null) { for (let i = 0; i < QOE_MEASURES; i++) out[i] += a.counts[i]; }
  if (b !== null) { for (let i = 0; i < QOE_MEASURES; i++) out[i] -= b.counts[i]; }
  return out;
}

/** Business error codes by default: entitlement, geo-blocking, concurrent streams, parental lock. */
export const DEFAULT_BUSINESS_ERROR_CODES = [
  "ENTITLEMENT*",
  "NOT_ENTITLED",
  "GEO_BLOCKED",
  "GEO*",
  "CONCURRENT_STREAM*",
  "PARENTAL*",
];

/** A matcher for `BUSINESS_ERROR_CODES`: exact codes, or `PREFIX*` patterns, case-insensitive. */
export function businessErrorMatcher(
  patterns: readonly string[],
): (code: string | null) => boolean {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const p of patterns) {
    const upper = p.toUpperCase();
    if (upper.endsWith("*")) prefixes.push(upper.slice(0, -1));
    else exact.add(upper);
  }
  return (code) => {
    if (code === null) return false;
    const upper = code.toUpperCase();
    return exact.has(upper) || prefixes.some((prefix) => upper.startsWith(prefix));
  };
}
