/**
 * Configuration: the only reader of `Deno.env`. Raw environment strings are parsed with zod into one
 * resolved {@link Config} with every default applied, so the rest of the code never sees `undefined`.
 *
 * @module
 */
import { DEFAULT_BUSINESS_ERROR_CODES } from "./rules/qoe.ts";
import { z } from "zod";
import { type ApiToken, parseApiTokens } from "./routes/auth.ts";
import { canonicalRegion, DEFAULT_GDPR_REGIONS } from "./routes/gdpr_regions.ts";
import { IP_HASH_KEY_ID_PATTERN } from "./routes/ip_anonymizer.ts";
import { DEFAULT_METADATA_KEYS } from "./routes/scrub.ts";
import type { RuleThresholds } from "./rules/types.ts";
import { DEFAULT_CONSENT_PURPOSES, purposeIdOf, purposeMask } from "./rules/consent.ts";

/** The queue backend that carries accepted events to the actors. */
export type QueueKind = "memory" | "postgres" | "redis";

/** Fully resolved server configuration (all defaults applied). */
export interface Config {
  port: number;
  hostname: string;
  /** PostgreSQL connection string; `undefined` means embedded PGlite under {@link Config.dataDir}. */
  databaseUrl: string | undefined;
  dataDir: string;
  queue: QueueKind;
  /** Cluster settings, used with `QUEUE=redis`. */
  redis: {
    url: string;
    keyPrefix: string;
    nodeId: string;
    leaseMs: number;
    heartbeatMs: number;
    /** How long the redis log remembers an event id to recognise retries. */
    dedupeTtlMs: number;
    /** Replicas that must acknowledge an append before its 202 (`WAIT`); 0 does not wait. */
    waitReplicas: number;
    /** How long an append waits for them before answering 503. */
    waitTimeoutMs: number;
  };
  workers: number;
  shards: number;
  flushIntervalMs: number;
  /** How long the region buffers events for one worker before posting them. */
  batchDelayMs: number;
  /** Batches posted to one worker and not yet acknowledged before ingest answers 503. */
  maxInFlightBatches: number;
  /** Events held by workers but not yet flushed before ingest answers 503. */
  maxPendingEvents: number;
  /** Named tokens from `API_TOKENS`; `ingestTokens` and the deprecated `readTokens` still work. */
  apiTokens: ApiToken[];
  ingestTokens: string[];
  readTokens: string[];
  /** Bearer token that may read `GET /metrics` only (for scrapers); admin tokens may too. */
  metricsToken: string | undefined;
  /** Audit rows older than this many days are deleted. */
  auditRetentionDays: number;
  /** Raw events older than this many days (event time) are deleted, once every shard applied them. */
  rawEventsRetentionDays: number;
  /** Risk flags older than this many days (event time) are deleted. */
  flagsRetentionDays: number;
  /** Hourly aggregate rows older than this many days (event time) are deleted. */
  hourlyRetentionDays: number;
  /** Daily aggregate rows older than this many days are deleted (the pre-upgrade bucket stays). */
  dailyRetentionDays: number;
  /** Per-device aggregates and per-entity risk rows (pseudonymous ids) are kept this many days. */
  entityRetentionDays: number;
  /** Answered access requests older than this many days are deleted. */
  privacyRequestRetentionDays: number;
  /** Consent ledger rows older than this many days (event time) are deleted. */
  consentRetentionDays: number;
  /** TCF vendor id whose consent a signal must also grant (`CONSENT_VENDOR_ID`); unset: not checked. */
  consentVendorId: number | undefined;
  /** HMAC key for IP addresses; `isIpHashSecretGenerated` tells whether it was made up at start. */
  ipHashSecret: string;
  isIpHashSecretGenerated: boolean;
  /**
   * Id of the IP hash key, stored in front of every hash (`<keyId>~<hash>`) so a rotated secret's
   * hashes are never compared with the old ones; `undefined` derives it from the secret.
   */
  ipHashKeyId: string | undefined;
  allowedLatenessMs: number;
  maxFutureSkewMs: number;
  /** Events older than now minus this are refused at ingest: too old to be counted. */
  maxEventAgeMs: number;
  maxIdleMs: number;
  /** Upper bound of remembered event ids per family, for duplicate detection. */
  dedupeMaxIds: number;
  maxSegmentMs: number;
  maxBodyBytes: number;
  /** How long a request body may take to arrive before the server answers 408. */
  bodyReadTimeoutMs: number;
  maxBatchEvents: number;
  /** Refuse (422) unknown top-level event fields instead of dropping them and naming them in the 202. */
  isStrictSchema: boolean;
  /** `extra_metadata` keys kept at ingest; the others are dropped (named in the 202). */
  metadataKeys: string[];
  /** Countries (ISO 3166-1 alpha-2) where GDPR-like rules apply; region `EU` always does. */
  gdprRegions: string[];
  /** Where flags at or above `minLevel` are POSTed (unset: no alerts). */
  alerts: {
    url: string | undefined;
    secret: string | undefined;
    minLevel: "LOW" | "MEDIUM" | "HIGH";
    isUserIncluded: boolean;
  };
  /** Legal framework of a privacy request that names none: sets its deadline. */
  privacyJurisdiction: "gdpr" | "ccpa";
  /** Key of erased users' hashes and pseudonyms; unset: a key the database keeps for itself. */
  pseudonymSecret: string | undefined;
  thresholds: RuleThresholds;
  /** The anomaly detector (`ANOMALY_*`, `PLAN_PRICES`); its window is `thresholds.anomalyWindowMs`. */
  anomaly: AnomalyConfig;
  logLevel: "debug" | "info" | "warn" | "error";
}

/** Settings of the anomaly detector (`actors/anomaly_detector.ts`). */
export interface AnomalyConfig {
  isEnabled: boolean;
  /** Expected events (or denominator) per window from which a key is watched. */
  minEvents: number;
  /** Watched keys at most, busiest first. */
  maxSeries: number;
  baselineWeeks: number;
  /** How long after a window ends (by the watermark) it is judged: batching TVs' events arrive. */
  graceMs: number;
  /** Monthly price per `subscription_plan` (`PLAN_PRICES`); null: no revenue exposure. */
  planPrices: Record<string, number> | null;
  /** ISO 4217 currency of the prices. */
  currency: string;
}

const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const ratio = z.coerce.number().min(0).max(1);
const list = z.string().transform((s) =>
  s.split(",").map((t) => t.trim()).filter((t) => t.length > 0)
);
const boolean = z.enum(["true", "false"], { message: 'must be "true" or "false"' });
const countries = list.pipe(
  z.array(
    z.string().transform((s) => canonicalRegion(s.toUpperCase())).pipe(
      z.string().regex(/^[A-Z]{2}$/, "must be ISO 3166-1 alpha-2 country codes such as DE"),
    ),
  ),
);
const DAY_MS = 86_400_000;
const apiTokens = z.string().transform((text, ctx) => {
  const parsed = parseApiTokens(text);
  if (parsed.ok) return parsed.tokens;
  for (const problem of parsed.problems) ctx.addIssue({ code: "custom", message: problem });
  return z.NEVER;
});

/** Schema of the environment variables the server reads, with their defaults. */
export const ENV_SCHEMA = z.object({
  PORT: intFrom(0, 65535).default(8000),
  LISTEN_HOST: z.string().min(1).default("0.0.0.0"),
  DATABASE_URL: z.string().url().optional(),
  DATA_DIR: z.string().min(1).default("./data"),
  QUEUE: z.enum(["memory", "postgres", "redis"]).default("postgres"),
  REDIS_URL: z.string().url().default("redis://127.0.0.1:6379"),
  REDIS_KEY_PREFIX: z.string().max(64).default("ott:"),
  NODE_ID: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 letters, digits, _ . -")
    .optional(),
  LEASE_MS: intFrom(500, 600_000).default(5_000),
  HEARTBEAT_MS: intFrom(100, 60_000).default(1_000),
  DEDUPE_TTL_MS: intFrom(1_000, 7 * 86_400_000).default(3_600_000),
  REDIS_WAIT_REPLICAS: intFrom(0, 16).default(0),
  REDIS_WAIT_TIMEOUT_MS: intFrom(10, 60_000).default(1_000),
  WORKERS: intFrom(1, 64).optional(),
  SHARDS: intFrom(1, 4096).default(64),
  FLUSH_INTERVAL_MS: intFrom(10, 600_000).default(1000),
  BATCH_DELAY_MS: intFrom(0, 1000).default(3),
  MAX_IN_FLIGHT_BATCHES: intFrom(1, 100_000).default(256),
  MAX_PENDING_EVENTS: intFrom(1000, 100_000_000).default(500_000),
  INGEST_TOKENS: list.default([]),
  READ_TOKENS: list.default([]),
  METRICS_TOKEN: z.string().min(16, "METRICS_TOKEN must be at least 16 characters").optional(),
  API_TOKENS: apiTokens.default([]),
  AUDIT_RETENTION_DAYS: intFrom(1, 36_500).default(365),
  RAW_EVENTS_RETENTION_DAYS: intFrom(1, 36_500).default(30),
  FLAGS_RETENTION_DAYS: intFrom(1, 36_500).default(365),
  HOURLY_RETENTION_DAYS: intFrom(2, 36_500).default(35),
  // 13 months and a bit: year-over-year questions.
  DAILY_RETENTION_DAYS: intFrom(2, 36_500).default(400),
  ENTITY_RETENTION_DAYS: intFrom(1, 36_500).default(90),
  // CCPA keeps records of consumer requests for 24 months.
  PRIVACY_REQUEST_RETENTION_DAYS: intFrom(1, 36_500).default(730),
  // Proof of consent must outlive the processing it covers: five years by default.
  CONSENT_RETENTION_DAYS: intFrom(1, 36_500).default(1_825),
  CONSENT_PURPOSES: list.pipe(
    z.array(
      z.string().transform((s, ctx) => {
        const id = purposeIdOf(s.toLowerCase());
        if (id !== null) return id;
        ctx.addIssue({
          code: "custom",
          message: `unknown purpose "${s}": use TCF purpose ids 1-11 or names such as storage, ` +
            "measurement",
        });
        return z.NEVER;
      }),
    ).min(1, "must name at least one purpose"),
  ).default([...DEFAULT_CONSENT_PURPOSES]),
  CONSENT_VENDOR_ID: intFrom(1, 65_535).optional(),
  IP_HASH_SECRET: z.string().min(16, "IP_HASH_SECRET must be at least 16 characters").optional(),
  IP_HASH_KEY_ID: z.string().regex(IP_HASH_KEY_ID_PATTERN, "must be 1-16 letters, digits, _ -")
    .optional(),
  PSEUDONYM_SECRET: z.string().min(16, "PSEUDONYM_SECRET must be at least 16 characters")
    .optional(),
  PRIVACY_JURISDICTION: z.enum(["gdpr", "ccpa"]).default("gdpr"),
  ALERT_WEBHOOK_URL: z.string().url().optional(),
  ALERT_WEBHOOK_SECRET: z.string().min(16, "ALERT_WEBHOOK_SECRET must be at least 16 characters")
    .optional(),
  ALERT_MIN_LEVEL: z.string().transform((s) => s.toUpperCase()).pipe(
    z.enum(["LOW", "MEDIUM", "HIGH"]),
  ).default("HIGH"),
  ALERT_INCLUDE_USER: boolean.default("false"),
  ALLOWED_LATENESS_MS: intFrom(0, 7 * DAY_MS).default(7_200_000),
  VIEW_IDLE_MS: intFrom(1_000, DAY_MS).default(1_800_000),
  BUSINESS_ERROR_CODES: z.string().default(DEFAULT_BUSINESS_ERROR_CODES.join(",")).transform((s) =>
    s.split(",").map((c) => c.trim()).filter((c) => c.length > 0)
  ),
  MAX_FUTURE_SKEW_MS: intFrom(0, 86_400_000).default(300_000),
  MAX_EVENT_AGE_MS: intFrom(60_000, 366 * DAY_MS).default(7 * DAY_MS),
  MAX_IDLE_MS: intFrom(1000, 86_400_000).default(300_000),
  DEDUPE_MAX_IDS: intFrom(1000, 100_000_000).default(1_000_000),
  MAX_SEGMENT_MS: intFrom(1000, 86_400_000).default(14_400_000),
  MAX_BODY_BYTES: intFrom(1024, 16_777_216).default(1_048_576),
  BODY_READ_TIMEOUT_MS: intFrom(100, 600_000).default(30_000),
  MAX_BATCH_EVENTS: intFrom(1, 10_000).default(500),
  STRICT_SCHEMA: boolean.default("false"),
  METADATA_KEYS: list.pipe(
    z.array(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be keys of 1-64 letters, digits, _ -")),
  ).transform((keys) => (keys.length === 0 ? [...DEFAULT_METADATA_KEYS] : keys))
    .default([...DEFAULT_METADATA_KEYS]),
  GDPR_REGIONS: countries.default([...DEFAULT_GDPR_REGIONS]),
  SHARING_WINDOW_MS: intFrom(60_000, 7 * 86_400_000).default(3_600_000),
  SHARING_MAX_REGIONS: intFrom(1, 1000).default(2),
  SHARING_HIGH_REGIONS: intFrom(1, 1000).default(4),
  SHARING_MAX_IPS: intFrom(1, 1000).default(3),
  SHARING_HIGH_IPS: intFrom(1, 1000).default(6),
  SHARING_REGION_LEVEL: z.enum(["country", "subdivision"]).default("subdivision"),
  QUALITY_WINDOW_MS: intFrom(10_000, 86_400_000).default(300_000),
  QUALITY_MIN_EVENTS: intFrom(1, 1_000_000).default(20),
  QUALITY_MAX_ERROR_RATE: ratio.default(0.2),
  QUALITY_MIN_DEVICES: intFrom(1, 1000).default(3),
  QOE_WINDOW_MS: intFrom(10_000, 86_400_000).default(300_000),
  QOE_MIN_VIEWS: intFrom(1, 1_000_000).default(25),
  QOE_MAX_VSF_RATE: ratio.default(0.05),
  QOE_MAX_REBUFFER_RATIO: ratio.default(0.02),
  QOE_MAX_STARTUP_P95_MS: intFrom(1, 600_000).default(8_000),
  ANOMALY_DETECTION: boolean.default("true"),
  ANOMALY_WINDOW_MS: intFrom(60_000, 3_600_000).refine((ms) => 3_600_000 % ms === 0, {
    message: "must divide an hour (60000, 300000, 600000, 900000, ...)",
  }).default(300_000),
  ANOMALY_MIN_EVENTS: intFrom(1, 1_000_000).default(25),
  ANOMALY_MAX_SERIES: intFrom(1, 1_000_000).default(10_000),
  ANOMALY_BASELINE_WEEKS: intFrom(1, 8).default(4),
  ANOMALY_GRACE_MS: intFrom(0, 3_600_000).default(120_000),
  PLAN_PRICES: z.string().transform((text, ctx) => {
    const prices: Record<string, number> = {};
    for (const part of text.split(",").map((p) => p.trim()).filter((p) => p.length > 0)) {
      const match = /^([A-Za-z0-9_.-]{1,64})=(\d+(?:\.\d{1,4})?)$/.exec(part);
      if (match === null) {
        ctx.addIssue({
          code: "custom",
          message:
            `must be plan=price pairs such as "basic=7.99,premium=17.99", received "${part}"`,
        });
        return z.NEVER;
      }
      prices[match[1]] = Number(match[2]);
    }
    return prices;
  }).optional(),
  PLAN_CURRENCY: z.string().regex(/^[A-Z]{3}$/, "must be an ISO 4217 code such as EUR").default(
    "USD",
  ),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
});

/** Raw environment input as read from `Deno.env`. */
export type RawEnv = Record<string, string | undefined>;

/** Parses raw environment strings into a resolved config; throws with every problem listed. */
export function parseConfig(env: RawEnv, cores = navigator.hardwareConcurrency): Config {
  // Blank values count as unset, so `PORT=" "` means the default rather than port 0.
  const cleaned = Object.fromEntries(
    Object.entries(env)
      .filter(([key, value]) =>
        key in ENV_SCHEMA.shape && value !== undefined && value.trim() !== ""
      )
      .map(([key, value]) => [key, value!.trim()]),
  );
  const parsed = ENV_SCHEMA.safeParse(cleaned);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`Cannot start: invalid configuration: ${detail}`);
  }
  const e = parsed.data;
  if (e.QUEUE === "redis" && e.DATABASE_URL === undefined) {
    throw new Error(
      "Cannot start: invalid configuration: QUEUE=redis needs DATABASE_URL (several nodes share one " +
        "PostgreSQL; embedded PGlite belongs to one process)",
    );
  }
  if (e.HEARTBEAT_MS * 2 > e.LEASE_MS) {
    throw new Error(
      "Cannot start: invalid configuration: LEASE_MS must be at least twice HEARTBEAT_MS",
    );
  }
  if (e.SHARING_HIGH_REGIONS < e.SHARING_MAX_REGIONS || e.SHARING_HIGH_IPS < e.SHARING_MAX_IPS) {
    throw new Error(
      "Cannot start: invalid configuration: SHARING_HIGH_* must be at least SHARING_MAX_*",
    );
  }
  if (e.MAX_EVENT_AGE_MS < e.ALLOWED_LATENESS_MS) {
    throw new Error(
      "Cannot start: invalid configuration: MAX_EVENT_AGE_MS must be at least ALLOWED_LATENESS_MS " +
        "(older events are refused before they could be counted as late)",
    );
  }
  if (e.DAILY_RETENTION_DAYS < e.HOURLY_RETENTION_DAYS) {
    throw new Error(
      "Cannot start: invalid configuration: DAILY_RETENTION_DAYS must be at least " +
        "HOURLY_RETENTION_DAYS (a day's row outlives its hours)",
    );
  }
  if (e.RAW_EVENTS_RETENTION_DAYS * DAY_MS < e.MAX_EVENT_AGE_MS) {
    throw new Error(
      "Cannot start: invalid configuration: RAW_EVENTS_RETENTION_DAYS must cover MAX_EVENT_AGE_MS " +
        "(a stored event id is what makes a retried event a duplicate)",
    );
  }
  const sources = [e.API_TOKENS.map((t) => t.secret), e.INGEST_TOKENS, e.READ_TOKENS]
    .map((secrets) => new Set(secrets));
  const secretCount = sources.reduce((sum, secrets) => sum + secrets.size, 0);
  if (new Set(sources.flatMap((secrets) => [...secrets])).size < secretCount) {
    throw new Error(
      "Cannot start: invalid configuration: a bearer token appears twice across API_TOKENS, " +
        "INGEST_TOKENS and READ_TOKENS (each secret must name one caller with one role)",
    );
  }
  const isIpHashSecretGenerated = e.IP_HASH_SECRET === undefined;
  return {
    port: e.PORT,
    hostname: e.LISTEN_HOST,
    databaseUrl: e.DATABASE_URL,
    dataDir: e.DATA_DIR,
    queue: e.QUEUE,
    redis: {
      url: e.REDIS_URL,
      keyPrefix: e.REDIS_KEY_PREFIX,
      nodeId: e.NODE_ID ?? `node-${Deno.hostname()}-${Deno.pid}`,
      leaseMs: e.LEASE_MS,
      heartbeatMs: e.HEARTBEAT_MS,
      dedupeTtlMs: e.DEDUPE_TTL_MS,
      waitReplicas: e.REDIS_WAIT_REPLICAS,
      waitTimeoutMs: e.REDIS_WAIT_TIMEOUT_MS,
    },
    workers: e.WORKERS ?? Math.max(1, cores),
    shards: e.SHARDS,
    flushIntervalMs: e.FLUSH_INTERVAL_MS,
    batchDelayMs: e.BATCH_DELAY_MS,
    maxInFlightBatches: e.MAX_IN_FLIGHT_BATCHES,
    maxPendingEvents: e.MAX_PENDING_EVENTS,
    apiTokens: e.API_TOKENS,
    ingestTokens: e.INGEST_TOKENS,
    readTokens: e.READ_TOKENS,
    metricsToken: e.METRICS_TOKEN,
    auditRetentionDays: e.AUDIT_RETENTION_DAYS,
    rawEventsRetentionDays: e.RAW_EVENTS_RETENTION_DAYS,
    flagsRetentionDays: e.FLAGS_RETENTION_DAYS,
    hourlyRetentionDays: e.HOURLY_RETENTION_DAYS,
    dailyRetentionDays: e.DAILY_RETENTION_DAYS,
    entityRetentionDays: e.ENTITY_RETENTION_DAYS,
    privacyRequestRetentionDays: e.PRIVACY_REQUEST_RETENTION_DAYS,
    consentRetentionDays: e.CONSENT_RETENTION_DAYS,
    consentVendorId: e.CONSENT_VENDOR_ID,
    ipHashSecret: e.IP_HASH_SECRET ?? randomSecret(),
    isIpHashSecretGenerated,
    ipHashKeyId: e.IP_HASH_KEY_ID,
    allowedLatenessMs: e.ALLOWED_LATENESS_MS,
    maxFutureSkewMs: e.MAX_FUTURE_SKEW_MS,
    maxEventAgeMs: e.MAX_EVENT_AGE_MS,
    maxIdleMs: e.MAX_IDLE_MS,
    dedupeMaxIds: e.DEDUPE_MAX_IDS,
    maxSegmentMs: e.MAX_SEGMENT_MS,
    maxBodyBytes: e.MAX_BODY_BYTES,
    bodyReadTimeoutMs: e.BODY_READ_TIMEOUT_MS,
    maxBatchEvents: e.MAX_BATCH_EVENTS,
    isStrictSchema: e.STRICT_SCHEMA === "true",
    metadataKeys: e.METADATA_KEYS,
    gdprRegions: e.GDPR_REGIONS,
    alerts: {
      url: e.ALERT_WEBHOOK_URL,
      secret: e.ALERT_WEBHOOK_SECRET,
      minLevel: e.ALERT_MIN_LEVEL,
      isUserIncluded: e.ALERT_INCLUDE_USER === "true",
    },
    privacyJurisdiction: e.PRIVACY_JURISDICTION,
    pseudonymSecret: e.PSEUDONYM_SECRET,
    thresholds: {
      sharingWindowMs: e.SHARING_WINDOW_MS,
      sharingMaxRegions: e.SHARING_MAX_REGIONS,
      sharingHighRegions: e.SHARING_HIGH_REGIONS,
      sharingMaxIps: e.SHARING_MAX_IPS,
      sharingHighIps: e.SHARING_HIGH_IPS,
      sharingRegionLevel: e.SHARING_REGION_LEVEL,
      qualityWindowMs: e.QUALITY_WINDOW_MS,
      qualityMinEvents: e.QUALITY_MIN_EVENTS,
      qualityMaxErrorRate: e.QUALITY_MAX_ERROR_RATE,
      qualityMinDevices: e.QUALITY_MIN_DEVICES,
      consentPurposeMask: purposeMask(e.CONSENT_PURPOSES),
      viewIdleMs: e.VIEW_IDLE_MS,
      businessErrorCodes: e.BUSINESS_ERROR_CODES,
      qoe: {
        windowMs: e.QOE_WINDOW_MS,
        minViews: e.QOE_MIN_VIEWS,
        maxVsfRate: e.QOE_MAX_VSF_RATE,
        maxRebufferRatio: e.QOE_MAX_REBUFFER_RATIO,
        maxStartupP95Ms: e.QOE_MAX_STARTUP_P95_MS,
      },
      anomalyWindowMs: e.ANOMALY_WINDOW_MS,
    },
    anomaly: {
      isEnabled: e.ANOMALY_DETECTION === "true",
      minEvents: e.ANOMALY_MIN_EVENTS,
      maxSeries: e.ANOMALY_MAX_SERIES,
      baselineWeeks: e.ANOMALY_BASELINE_WEEKS,
      graceMs: e.ANOMALY_GRACE_MS,
      planPrices: e.PLAN_PRICES ?? null,
      currency: e.PLAN_CURRENCY,
    },
    logLevel: e.LOG_LEVEL,
  };
}

/** Reads the process environment (needs `--allow-env`) and resolves it. */
export function loadConfig(): Config {
  return parseConfig(Deno.env.toObject());
}

function randomSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
