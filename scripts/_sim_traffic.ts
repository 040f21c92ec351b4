/**
 * Deterministic fake TV traffic for `deno task simulate`: viewing sessions, EU viewers with and without
 * consent, account sharers, viewers who opt out and keep watching, error-prone titles and devices,
 * retried duplicates and malformed events, plus the rule hits the server should report for them.
 * Pure: the same seed and `nowMs` give the same traffic.
 *
 * @module
 */

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

/** Rule hits the server should report for this traffic (`GET /compliance/summary`). */
export interface Expectations {
  unique_events: number;
  duplicates_sent: number;
  malformed_sent: number;
  /** Events flagged by the privacy rule (EU, no consent). */
  privacy_events: number;
  /** Events flagged by the retention rule (sent after their user's opt-out). */
  retention_events: number;
  /** Users built to share their account: each gets at least one account_sharing flag. */
  account_sharing_users: number;
  /** Titles and devices whose error rate exceeds the threshold in at least one window. */
  content_quality_entities: number;
  quality_entities: string[];
}

/** Generated traffic: phase 1, then the privacy requests, then phase 2 (later timestamps). */
export interface Traffic {
  phase1: unknown[];
  requests: PrivacyRequest[];
  phase2: unknown[];
  expectations: Expectations;
}

/** Quality rule thresholds the expectations are computed with (the server's defaults). */
export const QUALITY = { windowMs: 300_000, minEvents: 20, maxErrorRate: 0.2 };

const EU_REGIONS = ["DE", "FR", "ES", "IT", "NL"];
const OTHER_REGIONS = ["US-CA", "US-NY", "US-TX", "GB", "BR", "JP"];
const PLATFORMS = ["tizen", "webos", "androidtv", "roku", "tvos"];
const SPAN_MS = 20 * 60_000;
const PHASE1_SHARE = 0.6;

/** A small, fast, seedable PRNG (mulberry32). */
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

interface Viewer {
  id: string;
  region: string;
  isEu: boolean;
  hasConsent: boolean;
  ip: string;
  device: string;
  platform: string;
  /** Sharers roam over these; others stay at index 0. */
  regions: string[];
  ips: string[];
  optOut: "api" | "dnt" | null;
}

/** Generates `count` unique valid events (plus duplicates and malformed ones) ending at `nowMs`. */
export function generateTraffic(count: number, seed: number, nowMs: number): Traffic {
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const startMs = nowMs - SPAN_MS;
  const splitMs = startMs + SPAN_MS * PHASE1_SHARE;
  const viewers = makeViewers(Math.max(20, Math.floor(count / 25)), random, pick);
  const titles = Array.from({ length: 50 }, (_, i) => `title-${String(i + 1).padStart(3, "0")}`);
  const badTitles = ["title-bad-drm", "title-bad-manifest", "title-bad-cdn"];
  const badDevices = ["tv-bad-panel-1", "tv-bad-panel-2"];

  const events: WireEvent[] = [];
  let n = 0;
  while (events.length < count) {
    const viewer = pick(viewers);
    const isBadTitle = random() < 0.06;
    const title = isBadTitle ? pick(badTitles) : pick(titles);
    const isBadDevice = random() < 0.04;
    const device = isBadDevice ? pick(badDevices) : viewer.device;
    const errorRate = isBadTitle || isBadDevice ? 0.4 : 0.01;
    const where = viewer.regions.length > 1 ? Math.floor(random() * viewer.regions.length) : 0;
    let atMs = startMs + Math.floor(random() * (SPAN_MS - 10 * 60_000));
    const length = 3 + Math.floor(random() * 6);
    for (let i = 0; i < length && events.length < count && atMs <= nowMs; i++) {
      const isLast = i === length - 1;
      let type: WireEvent["event_type"] = i === 0
        ? "PLAY"
        : isLast
        ? "STOP"
        : pick(["PAUSE", "PLAY", "SEEK", "SEEK"] as const);
      if (i > 0 && random() < errorRate) type = "ERROR";
      const code = type !== "ERROR"
        ? null
        : isBadTitle
        ? pick(["DRM_LICENSE_FAILED", "MANIFEST_404"])
        : isBadDevice
        ? pick(["DECODER_ERROR", "HDCP_FAILURE"])
        : pick(["NETWORK_TIMEOUT", "BUFFER_UNDERRUN"]);
      events.push({
        event_id: `sim-${seed}-${n++}`,
        user_id: viewer.id,
        device_id: device,
        content_id: title,
        event_type: type,
        timestamp: new Date(atMs).toISOString(),
        region: viewer.regions[where],
        is_eu: EU_REGIONS.includes(viewer.regions[where]),
        has_consent: viewer.hasConsent,
        ip_address: viewer.ips[where % viewer.ips.length],
        error_code: code,
        extra_metadata: { platform: isBadDevice ? "tizen" : viewer.platform, app_version: "5.2.0" },
      });
      if (type === "ERROR") break;
      atMs += 5_000 + Math.floor(random() * 115_000);
    }
  }
  events.sort((a, b) => a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0);

  // Opt-outs: DNT users announce it with their last phase-1 event; API users file a request
  // between the phases. Either way their phase-2 events are retention violations.
  const lastPhase1 = new Map<string, WireEvent>();
  for (const e of events) if (Date.parse(e.timestamp) < splitMs) lastPhase1.set(e.user_id, e);
  const byId = new Map(viewers.map((v) => [v.id, v]));
  for (const [userId, event] of lastPhase1) {
    if (byId.get(userId)?.optOut === "dnt") event.do_not_track = true;
  }
  const requests: PrivacyRequest[] = viewers.filter((v) => v.optOut === "api").map((v, i) => ({
    user_id: v.id,
    type: i % 2 === 0 ? "do_not_track" : "deletion",
  }));
  const optedOut = new Set(
    viewers.filter((v) => v.optOut !== null && (v.optOut === "api" || lastPhase1.has(v.id)))
      .map((v) => v.id),
  );

  const phase1Events = events.filter((e) => Date.parse(e.timestamp) < splitMs);
  const phase2Events = events.filter((e) => Date.parse(e.timestamp) >= splitMs);
  const expectations = expect(events, viewers, optedOut, splitMs);
  const [phase1, dup1, bad1] = withRetriesAndJunk(phase1Events, random, seed, "a");
  const [phase2, dup2, bad2] = withRetriesAndJunk(phase2Events, random, seed, "b");
  expectations.duplicates_sent = dup1 + dup2;
  expectations.malformed_sent = bad1 + bad2;
  return { phase1, requests, phase2, expectations };
}

function makeViewers(
  count: number,
  random: () => number,
  pick: <T>(items: readonly T[]) => T,
): Viewer[] {
  return Array.from({ length: count }, (_, i) => {
    const isEu = random() < 0.45;
    const region = isEu ? pick(EU_REGIONS) : pick(OTHER_REGIONS);
    const ip = `${10 + (i % 200)}.${Math.floor(i / 200) % 250}.${i % 250}.${1 + (i % 250)}`;
    const viewer: Viewer = {
      id: `viewer-${String(i).padStart(5, "0")}`,
      region,
      isEu,
      hasConsent: !(isEu && random() < 0.1),
      ip,
      device: `tv-${String(i).padStart(5, "0")}`,
      platform: pick(PLATFORMS),
      regions: [region],
      ips: [ip],
      optOut: null,
    };
    const role = random();
    if (role < 0.02) {
      // A sharer: the account shows up in 3-5 regions and 4-7 networks within the run.
      const others = [...EU_REGIONS, ...OTHER_REGIONS].filter((r) => r !== region);
      const extra = 2 + Math.floor(random() * 3);
      for (let k = 0; k < extra; k++) {
        viewer.regions.push(others.splice(Math.floor(random() * others.length), 1)[0]);
      }
      const ipCount = Math.max(viewer.regions.length, 4 + Math.floor(random() * 4));
      viewer.ips = Array.from({ length: ipCount }, (_, k) => `198.51.${i % 250}.${k + 1}`);
    } else if (role < 0.03) {
      viewer.optOut = "api";
    } else if (role < 0.04) {
      viewer.optOut = "dnt";
    }
    return viewer;
  });
}

function expect(
  events: WireEvent[],
  viewers: Viewer[],
  optedOut: Set<string>,
  splitMs: number,
): Expectations {
  const places = new Map<string, { regions: Set<string>; ips: Set<string> }>();
  for (const e of events) {
    const seen = places.get(e.user_id) ?? { regions: new Set(), ips: new Set() };
    seen.regions.add(e.region);
    seen.ips.add(e.ip_address);
    places.set(e.user_id, seen);
  }
  const sharers = viewers.filter((v) => {
    const seen = places.get(v.id);
    return seen !== undefined && (seen.regions.size > 2 || seen.ips.size > 3);
  });
  const windows = new Map<string, { events: number; errors: number }>();
  for (const e of events) {
    const start = Math.floor(Date.parse(e.timestamp) / QUALITY.windowMs);
    for (const key of [`content:${e.content_id}:${start}`, `device:${e.device_id}:${start}`]) {
      const w = windows.get(key) ?? { events: 0, errors: 0 };
      w.events++;
      if (e.event_type === "ERROR") w.errors++;
      windows.set(key, w);
    }
  }
  const quality = new Set<string>();
  for (const [key, w] of windows) {
    if (w.events >= QUALITY.minEvents && w.errors / w.events > QUALITY.maxErrorRate) {
      quality.add(key.slice(0, key.lastIndexOf(":")));
    }
  }
  return {
    unique_events: events.length,
    duplicates_sent: 0,
    malformed_sent: 0,
    privacy_events: events.filter((e) => e.is_eu && !e.has_consent).length,
    retention_events:
      events.filter((e) => optedOut.has(e.user_id) && Date.parse(e.timestamp) >= splitMs).length,
    account_sharing_users: sharers.length,
    content_quality_entities: quality.size,
    quality_entities: [...quality].sort(),
  };
}

/** About 1% retries of earlier events (same id and body) and 0.2% malformed events, interleaved. */
function withRetriesAndJunk(
  events: WireEvent[],
  random: () => number,
  seed: number,
  phase: string,
): [unknown[], number, number] {
  const out: unknown[] = [];
  let duplicates = 0;
  let malformed = 0;
  events.forEach((event, i) => {
    out.push(event);
    if (random() < 0.01) {
      out.push({ ...events[Math.max(0, i - Math.floor(random() * 20))] });
      duplicates++;
    }
    if (random() < 0.002) {
      const broken: Record<string, unknown>[] = [
        { ...event, event_id: `bad-${seed}-${phase}-${i}`, user_id: undefined },
        { ...event, event_id: `bad-${seed}-${phase}-${i}`, event_type: "JUMP" },
        { ...event, event_id: `bad-${seed}-${phase}-${i}`, timestamp: "yesterday" },
        { ...event, event_id: `bad-${seed}-${phase}-${i}`, is_eu: "yes" },
      ];
      out.push(broken[malformed % broken.length]);
      malformed++;
    }
  });
  return [out, duplicates, malformed];
}
