import assert from "node:assert/strict";
import { parseConfig } from "./config.ts";
import { test } from "./tests/_permissions.ts";

const SECRET = "0123456789abcdef-secret";

test("parseConfig() applies the documented defaults", () => {
  const config = parseConfig({}, 6);
  assert.equal(config.port, 8000);
  assert.equal(config.hostname, "0.0.0.0");
  assert.equal(config.shards, 64);
  assert.equal(config.flushIntervalMs, 1000);
  assert.equal(config.workers, 6);
  assert.equal(config.queue, "postgres");
  assert.equal(config.databaseUrl, undefined);
  assert.deepEqual(config.ingestTokens, []);
  assert.deepEqual(config.readTokens, []);
  assert.deepEqual(config.apiTokens, []);
  assert.equal(config.auditRetentionDays, 365);
  assert.equal(config.maxSegmentMs, 14_400_000);
  assert.equal(config.allowedLatenessMs, 7_200_000);
  assert.equal(config.maxEventAgeMs, 604_800_000);
  assert.equal(config.bodyReadTimeoutMs, 30_000);
  assert.equal(config.isStrictSchema, false);
  assert.equal(config.gdprRegions.length, 31);
  for (const country of ["DE", "FR", "IE", "IS", "LI", "NO", "GB"]) {
    assert.ok(config.gdprRegions.includes(country), country);
  }
  for (const country of ["US", "CH", "CA"]) {
    assert.ok(!config.gdprRegions.includes(country), country);
  }
  assert.deepEqual(config.thresholds, {
    sharingWindowMs: 3_600_000,
    sharingMaxRegions: 2,
    sharingHighRegions: 4,
    sharingMaxIps: 3,
    sharingHighIps: 6,
    sharingRegionLevel: "subdivision",
    qualityWindowMs: 300_000,
    qualityMinEvents: 20,
    qualityMaxErrorRate: 0.2,
    qualityMinDevices: 3,
    // CONSENT_PURPOSES: TCF purposes 1 (storage) and 8 (measurement), as bits 0 and 7.
    consentPurposeMask: 0b1000_0001,
    // VIEW_IDLE_MS: a derived view ends after 30 minutes without an event.
    viewIdleMs: 1_800_000,
    // BUSINESS_ERROR_CODES: entitlement, geo-block, concurrent-stream limit, parental lock.
    businessErrorCodes: [
      "ENTITLEMENT*",
      "NOT_ENTITLED",
      "GEO_BLOCKED",
      "GEO*",
      "CONCURRENT_STREAM*",
      "PARENTAL*",
    ],
    // QOE_*: the qoe rule's 5-minute window, 25 views, 5% VSF, 2% rebuffering, p95 startup 8 s.
    qoe: {
      windowMs: 300_000,
      minViews: 25,
      maxVsfRate: 0.05,
      maxRebufferRatio: 0.02,
      maxStartupP95Ms: 8_000,
    },
    // ANOMALY_WINDOW_MS: the anomaly series' 5-minute windows.
    anomalyWindowMs: 300_000,
  });
  // ANOMALY_*: on, 25 events per window, 10,000 keys, 4 weeks, 2 minutes' grace; no prices.
  assert.deepEqual(config.anomaly, {
    isEnabled: true,
    minEvents: 25,
    maxSeries: 10_000,
    baselineWeeks: 4,
    graceMs: 120_000,
    planPrices: null,
    currency: "USD",
  });
  assert.equal(config.consentRetentionDays, 1_825);
  assert.deepEqual(
    [config.hourlyRetentionDays, config.dailyRetentionDays, config.entityRetentionDays],
    [35, 400, 90],
  );
  assert.throws(
    () => parseConfig({ HOURLY_RETENTION_DAYS: "60", DAILY_RETENTION_DAYS: "30" }),
    /DAILY_RETENTION_DAYS must be at least HOURLY_RETENTION_DAYS/,
  );
  assert.equal(config.consentVendorId, undefined);
});

test("parseConfig() reads CONSENT_PURPOSES by TCF id or name, and refuses unknown purposes", () => {
  assert.equal(
    parseConfig({ CONSENT_PURPOSES: "1, measurement, 10" }).thresholds.consentPurposeMask,
    0b10_1000_0001,
  );
  assert.throws(
    () => parseConfig({ CONSENT_PURPOSES: "storage, telepathy" }),
    /CONSENT_PURPOSES.*unknown purpose "telepathy"/,
  );
  assert.equal(parseConfig({ CONSENT_VENDOR_ID: "755" }).consentVendorId, 755);
});

test("parseConfig() uses WORKERS over the core count, and at least one worker", () => {
  assert.equal(parseConfig({ WORKERS: "3" }, 16).workers, 3);
  assert.equal(parseConfig({}, 0).workers, 1);
});

test("parseConfig() reads numbers and ratios from strings", () => {
  const config = parseConfig({
    PORT: "9090",
    SHARDS: "128",
    FLUSH_INTERVAL_MS: "250",
    QUALITY_MAX_ERROR_RATE: "0.35",
    SHARING_MAX_REGIONS: "3",
    QUALITY_MIN_DEVICES: "5",
  }, 2);
  assert.equal(config.port, 9090);
  assert.equal(config.shards, 128);
  assert.equal(config.flushIntervalMs, 250);
  assert.equal(config.thresholds.qualityMaxErrorRate, 0.35);
  assert.equal(config.thresholds.sharingMaxRegions, 3);
  assert.equal(config.thresholds.qualityMinDevices, 5);
});

test("parseConfig() splits token lists on commas, trimming and dropping empties", () => {
  const config = parseConfig({ INGEST_TOKENS: " a , ,b,, c ", READ_TOKENS: "r1" }, 2);
  assert.deepEqual(config.ingestTokens, ["a", "b", "c"]);
  assert.deepEqual(config.readTokens, ["r1"]);
  assert.deepEqual(parseConfig({ READ_TOKENS: " , " }, 2).readTokens, []);
});

Deno.test("parseConfig() rejects an invalid value with a message naming the variable", () => {
  assert.throws(() => parseConfig({ PORT: "eighty" }, 2), /^Error: Cannot start: .*PORT/);
  assert.throws(() => parseConfig({ SHARDS: "0" }, 2), /SHARDS/);
  assert.throws(() => parseConfig({ FLUSH_INTERVAL_MS: "1.5" }, 2), /FLUSH_INTERVAL_MS/);
  assert.throws(() => parseConfig({ QUALITY_MAX_ERROR_RATE: "1.5" }, 2), /QUALITY_MAX_ERROR_RATE/);
  assert.throws(() => parseConfig({ QUALITY_MIN_DEVICES: "0" }, 2), /QUALITY_MIN_DEVICES/);
  assert.throws(() => parseConfig({ LOG_LEVEL: "loud" }, 2), /LOG_LEVEL/);
  assert.throws(() => parseConfig({ DATABASE_URL: "not a url" }, 2), /DATABASE_URL/);
  assert.throws(() => parseConfig({ IP_HASH_SECRET: "short" }, 2), /IP_HASH_SECRET/);
});

Deno.test("parseConfig() lists every invalid variable in one error", () => {
  assert.throws(
    () => parseConfig({ PORT: "70000", WORKERS: "0" }, 2),
    (error: Error) => /PORT/.test(error.message) && /WORKERS/.test(error.message),
  );
});

test("parseConfig() rejects SHARING_HIGH_* below SHARING_MAX_*", () => {
  const message = /SHARING_HIGH_\* must be at least SHARING_MAX_\*/;
  assert.throws(
    () => parseConfig({ SHARING_MAX_REGIONS: "5", SHARING_HIGH_REGIONS: "4" }, 2),
    message,
  );
  assert.throws(() => parseConfig({ SHARING_MAX_IPS: "7" }, 2), message);
  const equal = parseConfig({ SHARING_MAX_IPS: "6", SHARING_HIGH_IPS: "6" }, 2);
  assert.equal(equal.thresholds.sharingHighIps, 6);
});

test("parseConfig() ignores unknown variables", () => {
  const config = parseConfig({ PATH: "/usr/bin", HOME: "", FOO: "not-a-number" }, 2);
  assert.equal(config.port, 8000);
});

test("parseConfig() treats empty strings as unset", () => {
  const config = parseConfig({
    PORT: "",
    SHARDS: "",
    IP_HASH_SECRET: "",
    DATABASE_URL: "",
    LOG_LEVEL: "",
  }, 2);
  assert.equal(config.port, 8000);
  assert.equal(config.shards, 64);
  assert.equal(config.databaseUrl, undefined);
  assert.equal(config.logLevel, "info");
  assert.equal(config.isIpHashSecretGenerated, true);
});

test("parseConfig() generates a random IP secret when unset and says so", () => {
  const a = parseConfig({}, 2);
  const b = parseConfig({}, 2);
  assert.equal(a.isIpHashSecretGenerated, true);
  assert.match(a.ipHashSecret, /^[0-9a-f]{64}$/);
  assert.notEqual(a.ipHashSecret, b.ipHashSecret);
});

test("parseConfig() takes IP_HASH_KEY_ID, undefined when unset (derived from the secret)", () => {
  assert.equal(parseConfig({ IP_HASH_KEY_ID: "2026-q1_a" }, 2).ipHashKeyId, "2026-q1_a");
  assert.equal(parseConfig({}, 2).ipHashKeyId, undefined);
});

test("parseConfig() rejects an IP_HASH_KEY_ID that cannot prefix a hash", () => {
  for (const keyId of ["a:b", "a".repeat(17), "key id", "ключ"]) {
    assert.throws(
      () => parseConfig({ IP_HASH_KEY_ID: keyId }, 2),
      /^Error: Cannot start: invalid configuration: IP_HASH_KEY_ID: must be 1-16 letters, digits, _ -/,
    );
  }
});

test("parseConfig() keeps a configured IP secret and marks it as not generated", () => {
  const config = parseConfig({ IP_HASH_SECRET: SECRET }, 2);
  assert.equal(config.ipHashSecret, SECRET);
  assert.equal(config.isIpHashSecretGenerated, false);
});

test({
  name: "parseConfig() does not turn a whitespace-only PORT into port 0",
  fn() {
    let port: number | undefined;
    try {
      port = parseConfig({ PORT: "  " }, 2).port;
    } catch (error) {
      assert.match((error as Error).message, /PORT/);
      return;
    }
    assert.equal(port, 8000);
  },
});

test("parseConfig() keeps QUEUE=memory when asked, though postgres is the default", () => {
  assert.equal(parseConfig({ QUEUE: "memory" }, 2).queue, "memory");
  assert.throws(() => parseConfig({ QUEUE: "kafka" }, 2), /QUEUE/);
});

test("parseConfig() reads STRICT_SCHEMA as true or false only", () => {
  assert.equal(parseConfig({ STRICT_SCHEMA: "true" }, 2).isStrictSchema, true);
  assert.equal(parseConfig({ STRICT_SCHEMA: "false" }, 2).isStrictSchema, false);
  assert.throws(() => parseConfig({ STRICT_SCHEMA: "yes" }, 2), /STRICT_SCHEMA/);
});

test("parseConfig() reads METADATA_KEYS as a key list, blank meaning the defaults", () => {
  const defaults = parseConfig({}, 2).metadataKeys;
  assert.ok(defaults.includes("platform") && defaults.includes("app_version"));
  assert.deepEqual(parseConfig({ METADATA_KEYS: "" }, 2).metadataKeys, defaults);
  assert.deepEqual(parseConfig({ METADATA_KEYS: " , " }, 2).metadataKeys, defaults);
  assert.deepEqual(parseConfig({ METADATA_KEYS: "platform, tv_serial" }, 2).metadataKeys, [
    "platform",
    "tv_serial",
  ]);
  assert.throws(() => parseConfig({ METADATA_KEYS: "platform,a.b" }, 2), /METADATA_KEYS/);
});

test("parseConfig() reads GDPR_REGIONS as upper-cased country codes, UK as GB", () => {
  assert.deepEqual(parseConfig({ GDPR_REGIONS: "de, fr ,uk,,CH" }, 2).gdprRegions, [
    "DE",
    "FR",
    "GB",
    "CH",
  ]);
  assert.throws(() => parseConfig({ GDPR_REGIONS: "DE,Germany" }, 2), /GDPR_REGIONS/);
  assert.throws(() => parseConfig({ GDPR_REGIONS: "DE-BY" }, 2), /GDPR_REGIONS/);
});

test("parseConfig() bounds the lateness, event age and body read time", () => {
  const week = 604_800_000;
  assert.equal(parseConfig({ ALLOWED_LATENESS_MS: String(week) }, 2).allowedLatenessMs, week);
  assert.throws(
    () => parseConfig({ ALLOWED_LATENESS_MS: String(week + 1) }, 2),
    /ALLOWED_LATENESS/,
  );
  assert.equal(parseConfig({ MAX_EVENT_AGE_MS: "86400000" }, 2).maxEventAgeMs, 86_400_000);
  assert.throws(() => parseConfig({ MAX_EVENT_AGE_MS: "0" }, 2), /MAX_EVENT_AGE_MS/);
  assert.equal(parseConfig({ BODY_READ_TIMEOUT_MS: "5000" }, 2).bodyReadTimeoutMs, 5_000);
  assert.throws(() => parseConfig({ BODY_READ_TIMEOUT_MS: "0" }, 2), /BODY_READ_TIMEOUT_MS/);
});

test("parseConfig() rejects MAX_EVENT_AGE_MS below ALLOWED_LATENESS_MS", () => {
  assert.throws(
    () => parseConfig({ MAX_EVENT_AGE_MS: "3600000" }, 2),
    /MAX_EVENT_AGE_MS must be at least ALLOWED_LATENESS_MS/,
  );
  const equal = parseConfig({ MAX_EVENT_AGE_MS: "3600000", ALLOWED_LATENESS_MS: "3600000" }, 2);
  assert.equal(equal.maxEventAgeMs, 3_600_000);
});

test("parseConfig() keeps raw events 30 days, flags a year and access records 24 months", () => {
  const config = parseConfig({}, 2);
  assert.equal(config.rawEventsRetentionDays, 30);
  assert.equal(config.flagsRetentionDays, 365);
  assert.equal(config.privacyRequestRetentionDays, 730);
  const set = parseConfig({
    RAW_EVENTS_RETENTION_DAYS: "7",
    FLAGS_RETENTION_DAYS: "1",
    PRIVACY_REQUEST_RETENTION_DAYS: "1",
  }, 2);
  assert.deepEqual(
    [set.rawEventsRetentionDays, set.flagsRetentionDays, set.privacyRequestRetentionDays],
    [7, 1, 1],
  );
  for (const name of ["RAW_EVENTS", "FLAGS", "PRIVACY_REQUEST"]) {
    const variable = `${name}_RETENTION_DAYS`;
    assert.throws(() => parseConfig({ [variable]: "0" }, 2), new RegExp(variable));
    assert.throws(() => parseConfig({ [variable]: "1.5" }, 2), new RegExp(variable));
  }
  // A retried event is recognised by its stored id for as long as ingest still accepts it.
  assert.throws(
    () => parseConfig({ RAW_EVENTS_RETENTION_DAYS: "6" }, 2),
    /RAW_EVENTS_RETENTION_DAYS must cover MAX_EVENT_AGE_MS/,
  );
});

test("parseConfig() reads PLAN_PRICES and refuses a window that does not divide an hour", () => {
  const config = parseConfig({ PLAN_PRICES: "basic=7.99, premium=17.5", PLAN_CURRENCY: "EUR" });
  assert.deepEqual(config.anomaly.planPrices, { basic: 7.99, premium: 17.5 });
  assert.equal(config.anomaly.currency, "EUR");
  assert.throws(
    () => parseConfig({ PLAN_PRICES: "basic:7.99" }),
    /PLAN_PRICES: must be plan=price/,
  );
  assert.throws(
    () => parseConfig({ ANOMALY_WINDOW_MS: "420000" }),
    /ANOMALY_WINDOW_MS: must divide/,
  );
  assert.equal(parseConfig({ ANOMALY_WINDOW_MS: "600000" }).thresholds.anomalyWindowMs, 600_000);
});
