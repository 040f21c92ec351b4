/**
 * Deterministic fake TV traffic for `deno task simulate`: viewing sessions, EU viewers with and without
 * consent, account sharers, viewers who opt out and keep watching, error-prone titles and devices,
 * retried duplicates and malformed events, quality-of-experience views of every kind
 * (`_sim_views.ts`), plus the rule hits and the QoE the server should report for them.
 * Pure: the same count, seed and `nowMs` give the same traffic, event ids included.
 *
 * @module
 */
import { generateViews, type QoeExpectations, type ViewWireEvent } from "./_sim_views.ts";

/** One event in the wire format the server accepts. */
export interface WireEvent {
  event_id: string;
  user_id: string;
  device_id: string;
  content_id: string;
  event_type: "PLAY" | "PAUSE" | "SEEK" | "STOP" | "ERROR";
  timestamp: string;
  region: string;
  is_eu: boolean;
  has_consent: boolean;
  ip_address: string;
  error_code: string | null;
  extra_metadata: { platform: string; app_version: string };
  do_not_track?: boolean;
}

/** A privacy request the simulator files through `POST /privacy/requests` between the phases. */
export interface PrivacyRequest {
  user_id: string;
  type: "do_not_track" | "deletion";
}

/**
 * Rule hits the server should report for this traffic (`GET /compliance/summary`), counted over the
 * unique valid events: privacy and retention in flagged events, account sharing in users (one flag or
 * more each), content quality in `content:id` / `device:id` entities and in entity windows (the server
 * checks its rule after every event, so it may flag a few windows more, never fewer). Retention (v2)
 * judges by event time: the API requests are filed after every event of the traffic happened, so
 * only the do-not-track events make retention hits.
 */
export interface Expectations {
  unique_events: number;
  duplicates_sent: number;
  malformed_sent: number;
  privacy_requests: number;
  do_not_track_events: number;
  privacy_events: number;
  retention_events: number;
  account_sharing_users: number;
  account_sharing_high_users: number;
  account_sharing_user_ids: string[];
  content_quality_entities: number;
  content_quality_windows: number;
  quality_entities: string[];
  /**
   * What `GET /stats/qoe?cdn=<label>` should answer, per CDN label of the QoE views (the plain
   * sessions' derived views have CDN `unknown`, so they are not in these answers).
   */
  qoe: Record<string, QoeExpectations>;
}

/**
 * Generated traffic, sent in this order, each step answered before the next starts: `phase1` up to
 * `dntFrom`, the rest of `phase1` (the do-not-track events), `requests`, then `phase2`.
 */
export interface Traffic {
  phase1: unknown[];
  /** Index in `phase1` of the first do-not-track event: the user's earlier events must land first. */
  dntFrom: number;
  requests: PrivacyRequest[];
  phase2: unknown[];
  expectations: Expectations;
}

/**
 * Quality rule thresholds the expectations are computed with (the server's defaults): a content
 * window also needs errors from `minDevices` distinct TVs.
 */
export const QUALITY = { windowMs: 300_000, minEvents: 20, maxErrorRate: 0.2, minDevices: 3 };
/** Account sharing thresholds (the server's defaults): MEDIUM above max, HIGH above high. */
export const SHARING = { maxRegions: 2, maxIps: 3, highRegions: 4, highIps: 6 };
/**
 * Event time covered by one run, ending at `nowMs`: shorter than the server's allowed lateness
 * (10 minutes), so a run started right after another sends no late events, and than its sharing window.
 */
export const SPAN_MS = 8 * 60_000;
const PHASE1_MS = 5 * 60_000;
/** Titles that fail often (DRM, manifest, CDN problems). */
export const BAD_TITLES = ["title-bad-drm", "title-bad-manifest", "title-bad-cdn"];
/** TVs with faulty firmware, each shared by the profiles of one household. */
export const BAD_DEVICES = ["tv-bad-firmware-1", "tv-bad-firmware-2"];
/** EU regions; every other region the simulator uses is outside the EU. */
export const EU_REGIONS = ["DE", "FR", "ES", "IT", "NL"];
const OTHER_REGIONS = ["US-CA", "US-NY", "US-TX", "CA", "BR", "JP"];
const ALL_REGIONS = [...EU_REGIONS, ...OTHER_REGIONS];
const PLATFORMS = ["tizen", "webos", "androidtv", "roku", "tvos"];
const APP_VERSIONS = ["5.2.0", "5.2.1", "5.3.0", "6.0.1"];
const TITLES = Array.from({ length: 50 }, (_, i) => `title-${String(i + 1).padStart(3, "0")}`);
const TITLE_CODES = ["DRM_LICENSE_FAILED", "MANIFEST_404"];
const DEVICE_CODES = ["DECODER_ERROR", "HDCP_HANDSHAKE_FAILED"];
const COMMON_CODES = ["NETWORK_TIMEOUT", "DECODER_ERROR"];

/** A small, fast, seedable PRNG (mulberry32) returning numbers in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Role = "plain" | "sharer" | "api" | "dnt" | "household";
const WEIGHTS: Record<Role, number> = { plain: 1, sharer: 2, api: 1, dnt: 1, household: 3 };

interface Viewer {
  id: string;
  role: Role;
  device: string;
  platform: string;
  appVersion: string;
  hasConsent: boolean;
  /** Where the viewer watches from: one place, or 4-7 networks over 3-5 regions for a sharer. */
  places: Place[];
  sessionCount: number;
}

/** An event before it gets its id, with its time as a number for sorting and counting. */
type Draft = { atMs: number; event: WireEvent };
/** A plain or QoE event with its time, as the expectations count it. */
type Counted = { atMs: number; event: WireEvent | ViewWireEvent };
/** Unique events per QoE view sent: about 1 event in 10 belongs to a QoE view. */
const EVENTS_PER_QOE_VIEW = 50;
type Place = { region: string; ip: string };

/**
 * Generates `count` unique valid events (plus duplicates and malformed ones) ending at `nowMs`:
 * about 10% of them QoE views (sent in phase 1, before the do-not-track events), the rest plain
 * viewing sessions.
 */
export function generateTraffic(count: number, seed: number, nowMs: number): Traffic {
  const views = generateViews(Math.floor(count / EVENTS_PER_QOE_VIEW), seed, nowMs);
  const plainCount = Math.max(0, count - views.events.length);
  const random = prng(seed);
  const endMs = Math.floor(nowMs / 1000) * 1000;
  const startMs = endMs - SPAN_MS;
  const splitMs = startMs + PHASE1_MS;
  const g = { random, endMs, drafts: [] as Draft[] };
  const viewers = makeViewers(Math.max(20, Math.floor(count / 15)), seed, random);
  // Event times are whole seconds; a do-not-track event sits 1 ms before the split, so it is after
  // every phase 1 event of its user and before every phase 2 event.
  for (const v of viewers.filter((v) => v.role === "dnt")) {
    const dnt = makeEvent(v, v.places[0], pick(random, TITLES), "STOP", splitMs - 1, null);
    g.drafts.push({ atMs: splitMs - 1, event: { ...dnt, do_not_track: true } });
  }
  const startBetween = (fromMs: number, toMs: number) =>
    fromMs + 1000 * Math.floor(random() * Math.max(1, (toMs - fromMs) / 1000));
  for (const v of viewers) {
    if (v.role === "sharer") {
      for (const _ of v.places) watch(g, v, startBetween(startMs, endMs - 60_000));
    } else if (v.role === "api" || v.role === "dnt") {
      watch(g, v, startBetween(startMs, splitMs - 60_000));
      watch(g, v, startBetween(splitMs, endMs - 60_000));
    }
  }
  // Heavier viewers: sharers roam more, and a household's profiles all watch on the one faulty TV.
  let totalWeight = 0;
  const cumulative = viewers.map((v) => totalWeight += WEIGHTS[v.role]);
  while (g.drafts.length < plainCount) {
    const v = viewers[lowerBound(cumulative, random() * totalWeight)];
    watch(g, v, startBetween(startMs, endMs));
  }
  // The first `count` drafts are kept: the mandatory sessions come first, so small runs keep them.
  const drafts = g.drafts.slice(0, plainCount).sort((a, b) => a.atMs - b.atMs);
  drafts.forEach((d, i) => d.event.event_id = `sim-${seed}-${i}`);

  const main = drafts.filter((d) => d.atMs < splitMs && d.event.do_not_track !== true);
  const dnt = drafts.filter((d) => d.event.do_not_track === true);
  const late = drafts.filter((d) => d.atMs >= splitMs);
  const junk = { random, seed, duplicates: 0, malformed: 0 };
  const phase1Main = withRetriesAndJunk(main.map((d) => d.event), junk);
  // The QoE views' events, out of order within some views and with their own retries.
  const phase1Views = [...phase1Main, ...views.items];
  const phase1 = [...phase1Views, ...withRetriesAndJunk(dnt.map((d) => d.event), junk)];
  const phase2 = withRetriesAndJunk(late.map((d) => d.event), junk);
  const requests: PrivacyRequest[] = viewers.filter((v) => v.role === "api").map((v, i) => ({
    user_id: v.id,
    type: i % 2 === 0 ? "do_not_track" : "deletion",
  }));
  // Only do-not-track events opt out in event time: the API requests are filed after `nowMs`, later
  // than every event, so the phase 2 events of their users happened before them (not violations).
  const dntSinceMs = new Map(dnt.map((d) => [d.event.user_id, d.atMs]));
  const counted: Counted[] = [
    ...drafts,
    ...views.events.map((event) => ({ atMs: Date.parse(event.timestamp), event })),
  ];
  const expectations = {
    ...expectationsOf(counted, dntSinceMs),
    duplicates_sent: junk.duplicates + views.duplicates,
    malformed_sent: junk.malformed,
    privacy_requests: requests.length,
    qoe: views.qoe,
  };
  return { phase1, dntFrom: phase1Views.length, requests, phase2, expectations };
}

/** Counts the rule hits over the unique valid events, the way the server's rules see them. */
function expectationsOf(
  drafts: readonly Counted[],
  dntSinceMs: ReadonlyMap<string, number>,
): Omit<Expectations, "duplicates_sent" | "malformed_sent" | "privacy_requests" | "qoe"> {
  const places = new Map<string, { regions: Set<string>; ips: Set<string> }>();
  const windows = new Map<string, { events: number; errors: number; devices: Set<string> }>();
  let privacy = 0;
  let retention = 0;
  let dnt = 0;
  for (const { atMs, event: e } of drafts) {
    if (e.is_eu && !e.has_consent) privacy++;
    // A do-not-track event sits 1 ms before phase 2: its user's phase 2 events happened after it.
    if (atMs > (dntSinceMs.get(e.user_id) ?? Infinity)) retention++;
    if (e.do_not_track === true) dnt++;
    const seen = places.get(e.user_id) ?? { regions: new Set<string>(), ips: new Set<string>() };
    seen.regions.add(e.region);
    seen.ips.add(e.ip_address);
    places.set(e.user_id, seen);
    const windowStartMs = Math.floor(atMs / QUALITY.windowMs) * QUALITY.windowMs;
    for (const entity of [`content:${e.content_id}`, `device:${e.device_id}`]) {
      const key = `${entity}@${windowStartMs}`;
      const w = windows.get(key) ?? { events: 0, errors: 0, devices: new Set<string>() };
      w.events++;
      if (e.event_type === "ERROR") {
        w.errors++;
        w.devices.add(e.device_id);
      }
      windows.set(key, w);
    }
  }
  const sharers: string[] = [];
  let high = 0;
  for (const [userId, { regions, ips }] of places) {
    if (regions.size > SHARING.maxRegions || ips.size > SHARING.maxIps) sharers.push(userId);
    if (regions.size > SHARING.highRegions || ips.size > SHARING.highIps) high++;
  }
  const entities = new Set<string>();
  let flaggedWindows = 0;
  for (const [key, w] of windows) {
    // One broken TV does not make a title bad: a content window needs errors from several TVs.
    const hasDevices = !key.startsWith("content:") || w.devices.size >= QUALITY.minDevices;
    if (w.events >= QUALITY.minEvents && w.errors / w.events > QUALITY.maxErrorRate && hasDevices) {
      entities.add(key.slice(0, key.lastIndexOf("@")));
      flaggedWindows++;
    }
  }
  return {
    unique_events: drafts.length,
    do_not_track_events: dnt,
    privacy_events: privacy,
    retention_events: retention,
    account_sharing_users: sharers.length,
    account_sharing_high_users: high,
    account_sharing_user_ids: sharers.sort(),
    content_quality_entities: entities.size,
    content_quality_windows: flaggedWindows,
    quality_entities: [...entities].sort(),
  };
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

function lowerBound(sorted: number[], value: number): number {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid] > value) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** A distinct address per viewer `i` and network `k` (k < 8). */
function ipOf(i: number, k: number, isV6 = false): string {
  if (isV6) return `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::${k + 1}`;
  return `${11 + ((i >> 14) % 180)}.${(i >> 6) & 255}.${((i & 63) << 2) + (k & 3)}.${10 + k}`;
}

function makeViewers(count: number, seed: number, random: () => number): Viewer[] {
  const viewers: Viewer[] = Array.from({ length: count }, (_, i) => {
    const isEu = random() < 0.45;
    const region = isEu ? pick(random, EU_REGIONS) : pick(random, OTHER_REGIONS);
    return {
      // Ids carry the seed: runs with other seeds are other viewers (no cross-run sharing or opt-out).
      id: `viewer-${seed}-${String(i).padStart(5, "0")}`,
      role: "plain",
      device: `tv-${seed}-${String(i).padStart(5, "0")}`,
      platform: pick(random, PLATFORMS),
      appVersion: pick(random, APP_VERSIONS),
      // About 10% of EU viewers never gave consent: each of their EU events is a privacy flag.
      hasConsent: !(isEu && random() < 0.1),
      places: [{ region, ip: ipOf(i, 0, random() < 0.2) }],
      sessionCount: 0,
    };
  });
  // Roles go to a seeded shuffle of the viewers, so every run has at least one of each.
  const order = viewers.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const take = (n: number) => order.splice(0, n).map((i) => viewers[i]);
  const few = (share: number) => Math.max(1, Math.round(count * share));
  for (const index of order.splice(0, few(0.02))) {
    const v = viewers[index];
    v.role = "sharer";
    const others = ALL_REGIONS.filter((r) => r !== v.places[0].region);
    const regions = [v.places[0].region];
    const regionCount = 3 + Math.floor(random() * 3);
    while (regions.length < regionCount) {
      regions.push(others.splice(Math.floor(random() * others.length), 1)[0]);
    }
    const ipCount = 4 + Math.floor(random() * 4);
    v.places = Array.from(
      { length: ipCount },
      (_, k) => ({ region: regions[k % regionCount], ip: ipOf(index, k) }),
    );
  }
  for (const v of take(few(0.01))) v.role = "api";
  for (const v of take(few(0.01))) v.role = "dnt";
  // Households of four profiles on one faulty TV: dozens of events per window, whatever the run size.
  for (const device of BAD_DEVICES) {
    const members = take(4);
    for (const v of members) {
      v.role = "household";
      v.device = device;
      v.platform = "tizen";
      v.places = members[0].places;
    }
  }
  return viewers;
}

function makeEvent(
  v: Viewer,
  place: Place,
  contentId: string,
  type: WireEvent["event_type"],
  atMs: number,
  errorCode: string | null,
): WireEvent {
  return {
    event_id: "",
    user_id: v.id,
    device_id: v.device,
    content_id: contentId,
    event_type: type,
    timestamp: new Date(atMs).toISOString(),
    region: place.region,
    is_eu: EU_REGIONS.includes(place.region),
    has_consent: v.hasConsent,
    ip_address: place.ip,
    error_code: errorCode,
    extra_metadata: { platform: v.platform, app_version: v.appVersion },
  };
}

/** One viewing session: PLAY, some SEEK / PAUSE / PLAY (resume), then STOP, or ERRORs on the way. */
function watch(
  g: { random: () => number; endMs: number; drafts: Draft[] },
  v: Viewer,
  startMs: number,
): void {
  const { random } = g;
  // A sharer cycles through its places, so each one is used by its first sessions.
  const place = v.places[v.sessionCount++ % v.places.length];
  const isBadTitle = random() < 0.075;
  const contentId = isBadTitle ? pick(random, BAD_TITLES) : TITLES[Math.floor(50 * random() ** 2)];
  const isBadDevice = v.role === "household";
  const errorRate = isBadTitle || isBadDevice ? 0.6 : 0.01;
  const codes = isBadTitle ? TITLE_CODES : isBadDevice ? DEVICE_CODES : COMMON_CODES;
  const steps = 2 + Math.floor(random() * 6);
  let type: WireEvent["event_type"] = "PLAY";
  let atMs = startMs;
  for (let i = 0; i <= steps && atMs <= g.endMs; i++) {
    const code = type === "ERROR" ? pick(random, codes) : null;
    g.drafts.push({ atMs, event: makeEvent(v, place, contentId, type, atMs, code) });
    if (type === "STOP" || (type === "ERROR" && random() < 0.4)) return;
    atMs += 1000 *
      (type === "PAUSE" ? 10 + Math.floor(random() * 110) : 5 + Math.floor(random() * 55));
    // Resume after a pause, a seek or an error; while playing, seek or pause.
    const next: WireEvent["event_type"] = type === "PLAY"
      ? (random() < 0.6 ? "SEEK" : "PAUSE")
      : (type === "SEEK" && random() < 0.3 ? "PAUSE" : "PLAY");
    type = random() < errorRate ? "ERROR" : i === steps - 1 ? "STOP" : next;
  }
}

/** Interleaves about 1% retries of recent events (same id and body) and 0.2% malformed events. */
function withRetriesAndJunk(
  events: WireEvent[],
  junk: { random: () => number; seed: number; duplicates: number; malformed: number },
): unknown[] {
  const { random } = junk;
  const out: unknown[] = [];
  events.forEach((event, i) => {
    out.push(event);
    if (random() < 0.01) {
      out.push({ ...events[Math.max(0, i - Math.floor(random() * 20))] });
      junk.duplicates++;
    }
    if (random() < 0.002) {
      const id = `bad-${junk.seed}-${junk.malformed}`;
      const { user_id: _, ...withoutUser } = event;
      const broken: Record<string, unknown>[] = [
        { ...withoutUser, event_id: id },
        { ...event, event_id: id, event_type: "JUMP AHEAD" },
        { ...event, event_id: id, timestamp: "yesterday" },
        { ...event, event_id: id, is_eu: "yes" },
      ];
      out.push(broken[junk.malformed++ % broken.length]);
    }
  });
  return out;
}
