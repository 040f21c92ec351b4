/**
 * Deterministic builders for tests: events (internal and wire format) and a resolved test config.
 *
 * @module
 */
import { type Config, parseConfig } from "../config.ts";
import type { Flag, TelemetryEvent } from "../rules/mod.ts";
import type { FactDims } from "../db/flush_batch.ts";
import type { IncidentReading } from "../db/incidents.ts";

/** A fixed point in time all fixtures are relative to (aligned to a 5-minute window). */
export const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);

/** An internal event with deterministic defaults. */
export function makeEvent(overrides: Partial<TelemetryEvent> = {}): TelemetryEvent {
  return {
    eventId: "e-1",
    userId: "user-1",
    deviceId: "device-1",
    contentId: "content-1",
    type: "PLAY",
    atMs: T0,
    region: "DE",
    isEu: true,
    clientIsEu: true,
    subscriptionPlan: null,
    hasConsent: true,
    ipHash: "hash-1",
    ipPrefix: "10.0.0.0/24",
    errorCode: null,
    doNotTrack: false,
    metadata: { platform: "tizen" },
    receivedAtMs: T0,
    isLate: false,
    position: 1,
    ...overrides,
  };
}

/** An event as a TV sends it over HTTP. */
export interface WireEvent {
  event_id: string;
  user_id: string;
  device_id: string;
  content_id: string;
  event_type: string;
  timestamp: string;
  region: string;
  /** The client's claim; stored for review, the server decides GDPR from the region. */
  is_eu?: boolean | null;
  has_consent: boolean;
  ip_address: string;
  error_code?: string | null;
  subscription_plan?: string | null;
  extra_metadata?: Record<string, unknown> | null;
  do_not_track?: boolean;
  /** A consent signal: `{tcf}`, `{gpp, gpp_sid}` or `{purposes}`. */
  consent?: { tcf: string } | { gpp: string; gpp_sid?: number[] } | {
    purposes: Record<string, boolean>;
  };
  /** The optional QoE fields (`rules/fields.ts`). */
  view_id?: string | null;
  playhead_ms?: number | null;
  bitrate_kbps?: number | null;
  rendition_height?: number | null;
  player_height?: number | null;
  fatal?: boolean | null;
  cdn?: string | null;
}

/** A wire-format event with deterministic defaults; `atMs` sets the timestamp. */
export function makeWireEvent(
  overrides: Partial<WireEvent> & { atMs?: number } = {},
): WireEvent {
  const { atMs, ...rest } = overrides;
  return {
    event_id: "e-1",
    user_id: "user-1",
    device_id: "device-1",
    content_id: "content-1",
    event_type: "PLAY",
    timestamp: new Date(atMs ?? T0).toISOString(),
    region: "DE",
    is_eu: true,
    has_consent: true,
    ip_address: "10.0.0.1",
    error_code: null,
    extra_metadata: { platform: "tizen" },
    ...rest,
  };
}

/**
 * A resolved config for tests: in-memory PGlite, QUEUE=memory, 10-minute lateness, 2 workers, 8 shards,
 * quiet logs; tests that need the durable log or other limits say so in `overrides`.
 */
export function testConfig(overrides: Partial<Config> = {}): Config {
  return {
    ...parseConfig({
      IP_HASH_SECRET: "test-secret-0123456789",
      NODE_ID: "test-node",
      LOG_LEVEL: "error",
      QUEUE: "memory",
      ALLOWED_LATENESS_MS: "600000",
    }, 2),
    dataDir: "memory://",
    workers: 2,
    shards: 8,
    batchDelayMs: 1,
    ...overrides,
  };
}

/** Freezes a value and everything reachable from it, so a test can prove code never mutates it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** An account-sharing flag with deterministic defaults, for merge tests. */
export function makeFlag(overrides: Partial<Flag> = {}): Flag {
  const eventId = overrides.eventId ?? "e-1";
  return {
    flagKey: "account_sharing:user-1:" + T0,
    rule: "account_sharing",
    ruleVersion: 1,
    level: "MEDIUM",
    entityType: "user",
    entityId: "user-1",
    eventId,
    userId: "user-1",
    region: "DE",
    isEu: true,
    atMs: T0,
    reason: `Flag raised by "${eventId}"`,
    evidence: {
      rule: "account_sharing",
      rule_version: 1,
      thresholds: { max_regions: 2 },
      window: null,
      observed: { raised_by: eventId },
      event_ids: [eventId],
    },
    flaggedEventCount: 1,
    ...overrides,
  };
}

/** The fact-row dimensions of a default fixture event, with overrides. */
export function makeFactDims(overrides: Partial<FactDims> = {}): FactDims {
  return {
    contentId: "content-1",
    region: "DE",
    platform: "tizen",
    appVersion: "unknown",
    subscriptionPlan: "unknown",
    ...overrides,
  };
}

/** An incident's reading: a volume drop on tizen at `T0`, 76% of it on app version 7.1. */
export function makeIncidentReading(overrides: Partial<IncidentReading> = {}): IncidentReading {
  return {
    series: "volume:platform",
    key: "tizen",
    kind: "count",
    level: "LOW",
    windowStartMs: T0,
    baseline: "history",
    expected: 1200,
    observed: 310,
    band: [1010, 1390],
    z: -9.4,
    viewers: 80,
    drillDown: [{
      dimensions: { app_version: "7.1" },
      expected: 700,
      observed: 20,
      share: 0.76,
      text: "app_version 7.1: 76% of the drop",
    }],
    exposure: {
      currency: "EUR",
      viewers_by_plan: { basic: 60, premium: 20 },
      monthly_revenue: 839.2,
      unpriced_plans: [],
    },
    ...overrides,
  };
}
