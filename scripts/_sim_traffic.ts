/**
 * Deterministic fake TV traffic for `deno task simulate`: viewing sessions, EU viewers with and without
 * consent, account sharers, viewers who opt out and keep watching, error-prone titles and devices,
 * retried duplicates and malformed events, plus the rule hits the server should report for them.
 * Pure: the same count, seed and `nowMs` give the same traffic, event ids included.
 *
 * @module
 */
import { type Expectations, expectationsOf, QUALITY, SHARING } from "./_sim_expect.ts";

export { type Expectations, QUALITY, SHARING };

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

/** Event time covered by one run, ending at `nowMs`: shorter than the server's sharing window. */
export const SPAN_MS = 20 * 60_000;
/** Phase 2 (after the opt-outs) starts this long after the beginning of the span. */
export const PHASE1_MS = 12 * 60_000;
/** Titles that fail often (DRM, manifest, CDN problems). */
export const BAD_TITLES = ["title-bad-drm", "title-bad-manifest", "title-bad-cdn"];
/** TVs with faulty firmware, each shared by the profiles of one household. */
export const BAD_DEVICES = ["tv-bad-firmware-1", "tv-bad-firmware-2"];
/** EU regions; every other region the simulator uses is outside the EU. */
export const EU_REGIONS = ["DE", "FR", "ES", "IT", "NL"];
const OTHER_REGIONS = ["US-CA", "US-NY", "US-TX", "GB", "BR", "JP"];
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

interface Viewer {
  id: string;
  role: Role;
  device: string;
  platform: string;
  appVersion: string;
  hasConsent: boolean;
  /** Where the viewer watches from: one place, or 4-7 networks over 3-5 regions for a sharer. */
  places: Array<{ region: string; ip: string }>;
  sessionCount: number;
}

/** An event before it gets its id, with its time as a number for sorting and counting. */
interface Draft {
  atMs: number;
  event: WireEvent;
}

interface Gen {
  random: () => number;
  endMs: number;
  drafts: Draft[];
}

/** Generates `count` unique valid events (plus duplicates and malformed ones) ending at `nowMs`. */
export function generateTraffic(count: number, seed: number, nowMs: number): Traffic {
  const random = prng(seed);
  const endMs = Math.floor(nowMs / 1000) * 1000;
  const startMs = endMs - SPAN_MS;
  const splitMs = startMs + PHASE1_MS;
  const g: Gen = { random, endMs, drafts: [] };
  const viewers = makeViewers(Math.max(20, Math.floor(count / 25)), random);
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
      watch(g, v, startBetween(startMs, splitMs - 300_000));
      watch(g, v, startBetween(splitMs, endMs - 120_000));
    }
  }
  const weights = viewers.map((v) => v.role === "sharer" || v.role === "household" ? 2 : 1);
  const cumulative: number[] = [];
  weights.reduce((sum, w) => (cumulative.push(sum + w), sum + w), 0);
  const total = cumulative[cumulative.length - 1];
  while (g.drafts.length < count) {
    const v = viewers[lowerBound(cumulative, random() * total)];
    watch(g, v, startBetween(startMs, endMs));
  }
  // The first `count` drafts are kept: the mandatory sessions come first, so small runs keep them.
  const drafts = g.drafts.slice(0, count).sort((a, b) => a.atMs - b.atMs);
  drafts.forEach((d, i) => d.event.event_id = `sim-${seed}-${i}`);

  const main = drafts.filter((d) => d.atMs < splitMs && d.event.do_not_track !== true);
  const dnt = drafts.filter((d) => d.event.do_not_track === true);
  const late = drafts.filter((d) => d.atMs >= splitMs);
  const junk = { random, seed, duplicates: 0, malformed: 0 };
  const phase1Main = withRetriesAndJunk(main.map((d) => d.event), junk);
  const phase1 = [...phase1Main, ...withRetriesAndJunk(dnt.map((d) => d.event), junk)];
  const phase2 = withRetriesAndJunk(late.map((d) => d.event), junk);
  const requests: PrivacyRequest[] = viewers.filter((v) => v.role === "api").map((v, i) => ({
    user_id: v.id,
    type: i % 2 === 0 ? "do_not_track" : "deletion",
  }));
  const optedOut = new Set([...requests.map((r) => r.user_id), ...dnt.map((d) => d.event.user_id)]);
  const expectations = expectationsOf(drafts, {
    optedOut,
    splitMs,
    designedSharers: viewers.filter((v) => v.role === "sharer").map((v) => v.id),
    duplicates: junk.duplicates,
    malformed: junk.malformed,
    privacyRequests: requests.length,
  });
  return { phase1, dntFrom: phase1Main.length, requests, phase2, expectations };
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

function ipv4(i: number, k: number): string {
  return `${11 + ((i >> 14) % 180)}.${(i >> 6) & 255}.${((i & 63) << 2) + (k & 3)}.${10 + k}`;
}

function ipv6(i: number, k: number): string {
  return `2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::${(k + 1).toString(16)}`;
}

function makeViewers(count: number, random: () => number): Viewer[] {
  const viewers: Viewer[] = Array.from({ length: count }, (_, i) => {
    const isEu = random() < 0.45;
    const region = isEu ? pick(random, EU_REGIONS) : pick(random, OTHER_REGIONS);
    const isV6 = random() < 0.2;
    return {
      id: `viewer-${String(i).padStart(5, "0")}`,
      role: "plain",
      device: `tv-${String(i).padStart(5, "0")}`,
      platform: pick(random, PLATFORMS),
      appVersion: pick(random, APP_VERSIONS),
      // About 10% of EU viewers never gave consent: each of their EU events is a privacy flag.
      hasConsent: !(isEu && random() < 0.1),
      places: [{ region, ip: isV6 ? ipv6(i, 0) : ipv4(i, 0) }],
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
  for (const v of take(few(0.02))) {
    v.role = "sharer";
    const index = Number(v.id.slice(7));
    const others = ALL_REGIONS.filter((r) => r !== v.places[0].region);
    const regions = [v.places[0].region];
    const regionCount = 3 + Math.floor(random() * 3);
    while (regions.length < regionCount) {
      regions.push(others.splice(Math.floor(random() * others.length), 1)[0]);
    }
    const ipCount = 4 + Math.floor(random() * 4);
    v.places = Array.from(
      { length: ipCount },
      (_, k) => ({ region: regions[k % regionCount], ip: ipv4(index, k) }),
    );
  }
  for (const v of take(few(0.01))) v.role = "api";
  for (const v of take(few(0.01))) v.role = "dnt";
  // Households of several profiles on one faulty TV: enough events per window to trip the rule.
  const householdSize = Math.max(3, Math.round(count * 0.005));
  for (const device of BAD_DEVICES) {
    const members = take(householdSize);
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
  place: { region: string; ip: string },
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
function watch(g: Gen, v: Viewer, startMs: number): void {
  const { random } = g;
  // A sharer cycles through its places, so each one is used by its first sessions.
  const place = v.places[v.sessionCount++ % v.places.length];
  const isBadTitle = random() < 0.075;
  const contentId = isBadTitle ? pick(random, BAD_TITLES) : TITLES[Math.floor(50 * random() ** 2)];
  const isBadDevice = v.role === "household";
  const errorRate = isBadTitle || isBadDevice ? 0.5 : 0.01;
  const codes = isBadTitle ? TITLE_CODES : isBadDevice ? DEVICE_CODES : COMMON_CODES;
  const steps = 2 + Math.floor(random() * 6);
  let type: WireEvent["event_type"] = "PLAY";
  let atMs = startMs;
  for (let i = 0; i <= steps && atMs <= g.endMs; i++) {
    const code = type === "ERROR" ? pick(random, codes) : null;
    g.drafts.push({ atMs, event: makeEvent(v, place, contentId, type, atMs, code) });
    if (type === "STOP" || (type === "ERROR" && random() < 0.4)) return;
    atMs += 1000 * (type === "PAUSE" ? 10 + Math.floor(random() * 170) : 5 + Math.floor(random() * 115));
    type = random() < errorRate
      ? "ERROR"
      : i === steps - 1
      ? "STOP"
      : type === "PAUSE" || type === "ERROR"
      ? "PLAY"
      : pick(random, ["SEEK", "PAUSE", "SEEK", "PLAY"] as const);
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
        { ...event, event_id: id, event_type: "JUMP" },
        { ...event, event_id: id, timestamp: "yesterday" },
        { ...event, event_id: id, is_eu: "yes" },
      ];
      out.push(broken[junk.malformed++ % broken.length]);
    }
  });
  return out;
}
