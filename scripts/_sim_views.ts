/**
 * Deterministic Quality-of-Experience views for `deno task simulate`, one of each case of
 * docs/qoe.md and then a random mix: startups with and without pre-roll ads, exits before video
 * start over and under 1 s, business and technical start failures, playback failures, warnings,
 * stalls (after a seek or not), bitrate and rendition switches, derived views without a `view_id`,
 * events sent out of order and retried duplicates.
 *
 * The QoE each view adds is known **by construction**: a view is written interval by interval
 * (startup, playing at a rendition, stalled, paused, in an ad) and each interval adds what it is
 * to the expectation. Nothing here calls `rules/qoe.ts`, so the simulator test can catch its bugs.
 * Pure: the same count, seed and `nowMs` give the same views, event ids included.
 *
 * @module
 */
import { prng, SPAN_MS, type WireEvent } from "./_sim_traffic.ts";

/** The CDN labels of the simulated views: read `/stats/qoe?cdn=<label>` to see only them. */
export const SIM_CDNS = ["sim-cdn-a", "sim-cdn-b"] as const;

/** The cases of docs/qoe.md a simulated view exercises, one kind of view each. */
export const VIEW_CASES = [
  /** PLAY_REQUEST, FIRST_FRAME, playing, STOP. */
  "startup",
  /** A pre-roll ad between request and first frame (not startup time), then a mid-roll. */
  "pre_roll_ads",
  /** STOP 1.5-9 s after the request, half of them during a pre-roll: an EBVS. */
  "exit_before_start",
  /** STOP within 1 s of the request: counted apart, not an EBVS. */
  "exit_under_1s",
  /** A fatal ERROR with a business code (GEO_BLOCKED, ...) before the first frame: VSF-B. */
  "vsf_business",
  /** A fatal ERROR with another code before the first frame: VSF-T. */
  "vsf_technical",
  /** A stall, then a fatal ERROR after the first frame: VPF. */
  "playback_failure",
  /** Two `fatal: false` errors (one before the first frame): warnings, no failure. */
  "warnings",
  /** Two stalls: rebuffering. */
  "rebuffering",
  /** A stall within 1 s of a SEEK (seek time), then one 2-5 s after a SEEK (rebuffering). */
  "seek_stall",
  /** RENDITION_CHANGE and HEARTBEAT switches of bitrate and height, some upscaled. */
  "bitrate_switches",
  /** No `view_id`: a view derived from PLAY_REQUEST to STOP, a pause, then a PAUSE after it. */
  "derived",
  /** No `view_id` and no QoE types (an old client): started at PLAY, startup not measured. */
  "derived_no_startup",
] as const;

/** One case of {@link VIEW_CASES}. */
export type ViewCase = (typeof VIEW_CASES)[number];

/** Event types the simulated views send. */
export type ViewEventType =
  | "PLAY_REQUEST"
  | "FIRST_FRAME"
  | "REBUFFER_START"
  | "REBUFFER_END"
  | "AD_BREAK_START"
  | "AD_BREAK_END"
  | "RENDITION_CHANGE"
  | "HEARTBEAT"
  | "PLAY"
  | "PAUSE"
  | "SEEK"
  | "STOP"
  | "ERROR";

/** The optional QoE fields of an event (docs/qoe.md), as sent. */
export interface ViewFields {
  view_id?: string;
  playhead_ms?: number;
  bitrate_kbps?: number;
  rendition_height?: number;
  player_height?: number;
  fatal?: boolean;
}

/** One event of a simulated view, in the wire format the server accepts. */
export interface ViewWireEvent extends Omit<WireEvent, "event_type">, ViewFields {
  event_type: ViewEventType;
  cdn: string;
}

/**
 * What `GET /stats/qoe?cdn=<label>` should answer for the simulated views of one CDN, rounded as
 * the server rounds. Startup percentiles are exact (nearest rank): the server's are within
 * `relative_error` (4.9%) of them.
 */
export interface QoeExpectations {
  views: number;
  started_views: number;
  views_measured: number;
  views_not_measured: number;
  startup_mean_ms: number | null;
  startup_p50_ms: number | null;
  startup_p95_ms: number | null;
  exits_before_video_start: number;
  exits_under_1s_not_counted: number;
  vsf_business: number;
  vsf_technical: number;
  playback_failures: number;
  rebuffers: number;
  rebuffer_ms: number;
  rebuffer_ratio: number | null;
  seek_stall_ms: number;
  playing_ms: number;
  average_bitrate_kbps: number | null;
  upscale_share: number | null;
  warnings: number;
  /** Views sent of each case (not part of the answer: to check every case was sent). */
  views_by_case: Record<ViewCase, number>;
}

/** The simulated views: what to send and what the server should answer. */
export interface SimViews {
  /** Items in send order: view after view, some shuffled, retries soon after their original. */
  items: ViewWireEvent[];
  /** The unique events (first sightings, in send order). */
  events: ViewWireEvent[];
  /** Retries in `items` (same event_id and body as an earlier item). */
  duplicates: number;
  /** Per CDN label of {@link SIM_CDNS}. */
  qoe: Record<string, QoeExpectations>;
}

/** Codes in the server's default BUSINESS_ERROR_CODES (exact or by prefix). */
const BUSINESS_CODES = ["GEO_BLOCKED", "NOT_ENTITLED", "ENTITLEMENT_EXPIRED", "PARENTAL_LOCK"];
const START_FAILURE_CODES = ["DRM_LICENSE_FAILED", "MANIFEST_404", "CDN_TIMEOUT"];
const PLAYBACK_FAILURE_CODES = ["NETWORK_LOST", "DECODER_ERROR"];
/** Outside the EU, so the views make no privacy flags whatever their consent. */
const REGIONS = ["US-CA", "US-NY", "US-TX", "CA", "BR", "JP"];
const PLATFORMS = ["tizen", "webos", "androidtv", "roku", "tvos"];
const APP_VERSIONS = ["6.1.0", "6.2.0"];
/** A rendition ladder: bitrate and height. */
const LADDER = [
  { kbps: 800, height: 432 },
  { kbps: 1_500, height: 540 },
  { kbps: 3_000, height: 720 },
  { kbps: 4_500, height: 1_080 },
  { kbps: 16_000, height: 2_160 },
];
const PLAYER_HEIGHTS = [720, 1_080, 2_160];

/** What is playing: a bitrate, a rendition height and the player's height. */
interface Rendition {
  kbps: number;
  height: number;
  player: number;
}

/** What one view adds to the QoE sums, by construction. */
interface Tally {
  started: number;
  /** Measured startup (PLAY_REQUEST to FIRST_FRAME less ads), or null. */
  startupMs: number | null;
  ebvs: number;
  shortExits: number;
  vsfBusiness: number;
  vsfTechnical: number;
  vpf: number;
  rebuffers: number;
  rebufferMs: number;
  seekStallMs: number;
  playingMs: number;
  bitrateKbpsMs: number;
  bitrateMs: number;
  upscaleMs: number;
  warnings: number;
}

/** One event of a view being written: its offset from the view's start, type and QoE fields. */
interface Step {
  ms: number;
  type: ViewEventType;
  fields: ViewFields;
  errorCode: string | null;
}

/**
 * A view being written: the events at offsets from its start, and what each interval between
 * them is (waiting, playing, stalled), added to its {@link Tally} as the view is written.
 */
class ViewWriter {
  readonly steps: Step[] = [];
  readonly tally: Tally = {
    started: 0,
    startupMs: null,
    ebvs: 0,
    shortExits: 0,
    vsfBusiness: 0,
    vsfTechnical: 0,
    vpf: 0,
    rebuffers: 0,
    rebufferMs: 0,
    seekStallMs: 0,
    playingMs: 0,
    bitrateKbpsMs: 0,
    bitrateMs: 0,
    upscaleMs: 0,
    warnings: 0,
  };
  /** Offset of the next event. */
  ms = 0;

  /** Sends an event at the current offset. */
  send(type: ViewEventType, fields: ViewFields = {}, errorCode: string | null = null): void {
    this.steps.push({ ms: this.ms, type, fields, errorCode });
  }

  /** Time passes with nothing measured: startup, a pause, an ad break, before an exit. */
  wait(ms: number): void {
    this.ms += ms;
  }

  /** The view starts (its first frame, or PLAY for an old client) after `startupMs` measured. */
  start(startupMs: number | null): void {
    this.tally.started = 1;
    this.tally.startupMs = startupMs;
  }

  /** Time passes playing `r` (null: bitrate and heights not known). */
  play(ms: number, r: Rendition | null): void {
    this.ms += ms;
    this.tally.playingMs += ms;
    if (r === null) return;
    this.tally.bitrateKbpsMs += r.kbps * ms;
    this.tally.bitrateMs += ms;
    if (r.height < r.player) this.tally.upscaleMs += ms;
  }

  /** A stall: REBUFFER_START, `ms` stalled, REBUFFER_END; seek time when `isAfterSeek`. */
  stall(ms: number, isAfterSeek: boolean): void {
    this.send("REBUFFER_START");
    this.ms += ms;
    if (isAfterSeek) this.tally.seekStallMs += ms;
    else {
      this.tally.rebuffers++;
      this.tally.rebufferMs += ms;
    }
    this.send("REBUFFER_END");
  }
}

/** Random helpers of one generator. */
interface Dice {
  random: () => number;
  /** A whole number in [from, from + span). */
  int(from: number, span: number): number;
  pick<T>(items: readonly T[]): T;
}

function diceOf(random: () => number): Dice {
  return {
    random,
    int: (from, span) => from + Math.floor(random() * span),
    pick: (items) => items[Math.floor(random() * items.length)],
  };
}

/** A startup time: 250 ms to 10 s, most of them short. */
function startupMs(d: Dice): number {
  return Math.round(250 * Math.pow(40, d.random() ** 1.5));
}

/** A stretch of playing: 3-30 s. */
function stretchMs(d: Dice): number {
  return d.int(3_000, 27_000);
}

/** A rendition from the ladder on a player of some height (upscaled when below it). */
function renditionOf(d: Dice): Rendition {
  const step = d.pick(LADDER);
  return { kbps: step.kbps, height: step.height, player: d.pick(PLAYER_HEIGHTS) };
}

/** The fields announcing a rendition (on FIRST_FRAME and RENDITION_CHANGE). */
function renditionFields(r: Rendition): ViewFields {
  return { bitrate_kbps: r.kbps, rendition_height: r.height, player_height: r.player };
}

/** PLAY_REQUEST, startup, FIRST_FRAME of `r`: the common opening of a started view. */
function requestAndStart(w: ViewWriter, d: Dice, r: Rendition): void {
  const s = startupMs(d);
  w.send("PLAY_REQUEST");
  w.wait(s);
  w.send("FIRST_FRAME", renditionFields(r));
  w.start(s);
}

/** How each case is written. */
const WRITERS: Record<ViewCase, (w: ViewWriter, d: Dice) => void> = {
  startup(w, d) {
    const r = renditionOf(d);
    requestAndStart(w, d, r);
    w.play(stretchMs(d), r);
    w.send("STOP", { playhead_ms: w.tally.playingMs });
  },
  pre_roll_ads(w, d) {
    const r = renditionOf(d);
    const beforeAd = d.int(200, 800);
    const afterAd = startupMs(d);
    w.send("PLAY_REQUEST");
    w.wait(beforeAd);
    w.send("AD_BREAK_START");
    w.wait(d.int(5_000, 25_000));
    w.send("AD_BREAK_END");
    w.wait(afterAd);
    w.send("FIRST_FRAME", renditionFields(r));
    w.start(beforeAd + afterAd);
    w.play(stretchMs(d), r);
    // A mid-roll: not playing time either.
    w.send("AD_BREAK_START");
    w.wait(d.int(5_000, 25_000));
    w.send("AD_BREAK_END");
    w.play(stretchMs(d), r);
    w.send("STOP");
  },
  exit_before_start(w, d) {
    const total = d.int(1_500, 7_500);
    w.send("PLAY_REQUEST");
    if (d.random() < 0.5) {
      // Gone during the pre-roll.
      const beforeAd = d.int(200, 800);
      w.wait(beforeAd);
      w.send("AD_BREAK_START");
      w.wait(total - beforeAd);
    } else w.wait(total);
    w.send("STOP");
    w.tally.ebvs = 1;
  },
  exit_under_1s(w, d) {
    w.send("PLAY_REQUEST");
    w.wait(d.int(100, 800));
    w.send("STOP");
    w.tally.shortExits = 1;
  },
  vsf_business(w, d) {
    w.send("PLAY_REQUEST");
    w.wait(d.int(300, 4_000));
    w.send("ERROR", d.random() < 0.5 ? {} : { fatal: true }, d.pick(BUSINESS_CODES));
    w.tally.vsfBusiness = 1;
  },
  vsf_technical(w, d) {
    w.send("PLAY_REQUEST");
    w.wait(d.int(300, 8_000));
    w.send("ERROR", d.random() < 0.5 ? {} : { fatal: true }, d.pick(START_FAILURE_CODES));
    w.tally.vsfTechnical = 1;
  },
  playback_failure(w, d) {
    const r = renditionOf(d);
    requestAndStart(w, d, r);
    w.play(stretchMs(d), r);
    w.stall(d.int(500, 5_000), false);
    w.play(stretchMs(d), r);
    w.send("ERROR", {}, d.pick(PLAYBACK_FAILURE_CODES));
    w.tally.vpf = 1;
  },
  warnings(w, d) {
    const r = renditionOf(d);
    const s = startupMs(d);
    const warnAt = Math.floor(s / 2);
    w.send("PLAY_REQUEST");
    w.wait(warnAt);
    w.send("ERROR", { fatal: false }, "AUDIO_TRACK_FALLBACK");
    w.wait(s - warnAt);
    w.send("FIRST_FRAME", renditionFields(r));
    w.start(s);
    w.play(stretchMs(d), r);
    w.send("ERROR", { fatal: false }, "SUBTITLE_LOST");
    w.play(stretchMs(d), r);
    w.send("STOP");
    w.tally.warnings = 2;
  },
  rebuffering(w, d) {
    const r = renditionOf(d);
    requestAndStart(w, d, r);
    w.play(stretchMs(d), r);
    w.stall(d.int(300, 6_000), false);
    w.play(stretchMs(d), r);
    w.stall(d.int(300, 6_000), false);
    w.play(stretchMs(d), r);
    w.send("STOP");
  },
  seek_stall(w, d) {
    const r = renditionOf(d);
    requestAndStart(w, d, r);
    w.play(stretchMs(d), r);
    w.send("SEEK", { playhead_ms: 600_000 });
    // Still playing between the seek and the stall.
    w.play(d.int(100, 800), r);
    w.stall(d.int(300, 4_000), true);
    w.play(stretchMs(d), r);
    w.send("SEEK", { playhead_ms: 1_200_000 });
    w.play(d.int(2_000, 3_000), r);
    w.stall(d.int(300, 4_000), false);
    w.play(stretchMs(d), r);
    w.send("STOP");
  },
  bitrate_switches(w, d) {
    const player = d.pick(PLAYER_HEIGHTS);
    const full = { kbps: 4_500, height: 1_080, player };
    requestAndStart(w, d, full);
    w.play(stretchMs(d), full);
    // A heartbeat saying nothing of the rendition changes nothing.
    w.send("HEARTBEAT");
    w.play(stretchMs(d), full);
    const low = { kbps: 1_500, height: 540, player };
    w.send("RENDITION_CHANGE", renditionFields(low));
    w.play(stretchMs(d), low);
    // Only the bitrate changes: the heights stay those of the last switch.
    const lowBitrate = { ...low, kbps: 1_200 };
    w.send("HEARTBEAT", { bitrate_kbps: lowBitrate.kbps });
    w.play(stretchMs(d), lowBitrate);
    const top = { kbps: 16_000, height: 2_160, player };
    w.send("RENDITION_CHANGE", renditionFields(top));
    w.play(stretchMs(d), top);
    w.send("STOP");
  },
  derived(w, d) {
    const r = renditionOf(d);
    requestAndStart(w, d, r);
    w.play(stretchMs(d), r);
    w.send("PAUSE");
    w.wait(d.int(2_000, 20_000));
    w.send("PLAY");
    w.play(stretchMs(d), r);
    w.send("STOP");
    // After the STOP: in no view.
    w.wait(d.int(1_000, 4_000));
    w.send("PAUSE");
  },
  derived_no_startup(w, d) {
    w.send("PLAY");
    w.start(null);
    w.play(stretchMs(d), null);
    w.send("PAUSE");
    w.wait(d.int(2_000, 20_000));
    w.send("PLAY");
    w.play(stretchMs(d), null);
    w.send("SEEK", { playhead_ms: 90_000 });
    w.play(stretchMs(d), null);
    w.send("STOP");
  },
};

/** Cases whose events carry no `view_id`. */
const DERIVED: ReadonlySet<ViewCase> = new Set(["derived", "derived_no_startup"]);

/** One written view, placed in time, with its CDN and case. */
interface PlacedView {
  cdn: string;
  viewCase: ViewCase;
  startMs: number;
  events: ViewWireEvent[];
  tally: Tally;
}

/**
 * Generates `count` views (the first `2 x cases` cover every case on both CDNs, the rest are
 * drawn at random), all within `[nowMs - SPAN_MS, nowMs]` and all ended (STOP or a fatal error).
 */
export function generateViews(count: number, seed: number, nowMs: number): SimViews {
  const d = diceOf(prng((seed ^ 0x51ce_0e0e) >>> 0));
  const endMs = Math.floor(nowMs / 1000) * 1000;
  const views: PlacedView[] = [];
  for (let i = 0; i < count; i++) {
    const isCovering = i < 2 * VIEW_CASES.length;
    const viewCase = isCovering ? VIEW_CASES[i % VIEW_CASES.length] : d.pick(VIEW_CASES);
    const cdn = isCovering ? SIM_CDNS[Math.floor(i / VIEW_CASES.length)] : d.pick(SIM_CDNS);
    views.push(placeView(d, seed, i, viewCase, cdn, endMs));
  }
  views.sort((a, b) => a.startMs - b.startMs);
  const items: ViewWireEvent[] = [];
  const events: ViewWireEvent[] = [];
  let duplicates = 0;
  let nextId = 0;
  views.forEach((view, i) => {
    for (const e of view.events) e.event_id = `qoe-${seed}-${nextId++}`;
    // Every other view arrives out of order; every fifth has one event retried after it.
    const sent = i % 2 === 0 ? shuffled(d, view.events) : view.events;
    items.push(...sent);
    events.push(...sent);
    if (i % 5 === 2) {
      items.push({ ...d.pick(sent) });
      duplicates++;
    }
  });
  const qoe: Record<string, QoeExpectations> = {};
  for (const cdn of SIM_CDNS) qoe[cdn] = expectationsOf(views.filter((v) => v.cdn === cdn));
  return { items, events, duplicates, qoe };
}

/** Writes view `i` of a case and places it at a random time that fits before `endMs`. */
function placeView(
  d: Dice,
  seed: number,
  i: number,
  viewCase: ViewCase,
  cdn: string,
  endMs: number,
): PlacedView {
  const w = new ViewWriter();
  WRITERS[viewCase](w, d);
  const startMs = endMs - SPAN_MS + d.int(0, SPAN_MS - w.ms + 1);
  const id = `${seed}-${String(i).padStart(5, "0")}`;
  const base = {
    user_id: `qoe-viewer-${id}`,
    device_id: `qoe-tv-${id}`,
    // A title per view: no title window gets the 20 events the content quality rule needs.
    content_id: `qoe-title-${id}`,
    region: d.pick(REGIONS),
    is_eu: false,
    has_consent: true,
    ip_address: `198.18.${(i >> 8) & 255}.${i & 255}`,
    extra_metadata: { platform: d.pick(PLATFORMS), app_version: d.pick(APP_VERSIONS) },
    cdn,
  };
  const viewId = DERIVED.has(viewCase) ? {} : { view_id: `qoe-view-${id}` };
  const events = w.steps.map((step): ViewWireEvent => ({
    event_id: "",
    ...base,
    event_type: step.type,
    timestamp: new Date(startMs + step.ms).toISOString(),
    error_code: step.errorCode,
    ...viewId,
    ...step.fields,
  }));
  return { cdn, viewCase, startMs, events, tally: w.tally };
}

/** A seeded shuffle that never leaves a view of 2 or more events in time order. */
function shuffled<T>(d: Dice, items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(d.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  if (out.length > 1 && out.every((item, k) => item === items[k])) out.reverse();
  return out;
}

/** Rounds as the server does (`digits` decimals). */
function round(v: number | null, digits: number): number | null {
  return v === null ? null : Math.round(v * 10 ** digits) / 10 ** digits;
}

/** `count / of`, or null without a denominator. */
function rate(count: number, of: number): number | null {
  return of > 0 ? count / of : null;
}

/** A percentile (0-1) by nearest rank of sorted values, or null without values. */
function nearestRank(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.max(1, Math.ceil(p * sorted.length)) - 1];
}

/** Sums the views' tallies into what `/stats/qoe` answers for them. */
function expectationsOf(views: readonly PlacedView[]): QoeExpectations {
  const sum = (of: (t: Tally) => number) => views.reduce((total, v) => total + of(v.tally), 0);
  const startups = views.flatMap((v) => v.tally.startupMs === null ? [] : [v.tally.startupMs])
    .sort((a, b) => a - b);
  const started = sum((t) => t.started);
  const playing = sum((t) => t.playingMs);
  const rebuffering = sum((t) => t.rebufferMs);
  const byCase = Object.fromEntries(VIEW_CASES.map((c) => [c, 0])) as Record<ViewCase, number>;
  for (const v of views) byCase[v.viewCase]++;
  return {
    views: views.length,
    started_views: started,
    views_measured: startups.length,
    views_not_measured: started - startups.length,
    startup_mean_ms: round(rate(startups.reduce((a, b) => a + b, 0), startups.length), 0),
    startup_p50_ms: nearestRank(startups, 0.5),
    startup_p95_ms: nearestRank(startups, 0.95),
    exits_before_video_start: sum((t) => t.ebvs),
    exits_under_1s_not_counted: sum((t) => t.shortExits),
    vsf_business: sum((t) => t.vsfBusiness),
    vsf_technical: sum((t) => t.vsfTechnical),
    playback_failures: sum((t) => t.vpf),
    rebuffers: sum((t) => t.rebuffers),
    rebuffer_ms: rebuffering,
    rebuffer_ratio: round(rate(rebuffering, playing + rebuffering), 4),
    seek_stall_ms: sum((t) => t.seekStallMs),
    playing_ms: playing,
    average_bitrate_kbps: round(rate(sum((t) => t.bitrateKbpsMs), sum((t) => t.bitrateMs)), 0),
    upscale_share: round(rate(sum((t) => t.upscaleMs), playing), 4),
    warnings: sum((t) => t.warnings),
    views_by_case: byCase,
  };
}
