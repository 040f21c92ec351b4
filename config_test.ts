import assert from "node:assert/strict";
import { parseConfig } from "./config.ts";

const SECRET = "0123456789abcdef-secret";

Deno.test("parseConfig() applies the documented defaults", () => {
  const config = parseConfig({}, 6);
  assert.equal(config.port, 8000);
  assert.equal(config.hostname, "0.0.0.0");
  assert.equal(config.shards, 64);
  assert.equal(config.flushIntervalMs, 1000);
  assert.equal(config.workers, 6);
  assert.equal(config.queue, "memory");
  assert.equal(config.databaseUrl, undefined);
  assert.deepEqual(config.ingestTokens, []);
  assert.deepEqual(config.readTokens, []);
  assert.equal(config.maxSegmentMs, 14_400_000);
  assert.deepEqual(config.thresholds, {
    sharingWindowMs: 3_600_000,
    sharingMaxRegions: 2,
    sharingHighRegions: 4,
    sharingMaxIps: 3,
    sharingHighIps: 6,
    qualityWindowMs: 300_000,
    qualityMinEvents: 20,
    qualityMaxErrorRate: 0.2,
  });
});

Deno.test("parseConfig() uses WORKERS over the core count, and at least one worker", () => {
  assert.equal(parseConfig({ WORKERS: "3" }, 16).workers, 3);
  assert.equal(parseConfig({}, 0).workers, 1);
});

Deno.test("parseConfig() reads numbers and ratios from strings", () => {
  const config = parseConfig({
    PORT: "9090",
    SHARDS: "128",
    FLUSH_INTERVAL_MS: "250",
    QUALITY_MAX_ERROR_RATE: "0.35",
    SHARING_MAX_REGIONS: "3",
  }, 2);
  assert.equal(config.port, 9090);
  assert.equal(config.shards, 128);
  assert.equal(config.flushIntervalMs, 250);
  assert.equal(config.thresholds.qualityMaxErrorRate, 0.35);
  assert.equal(config.thresholds.sharingMaxRegions, 3);
});

Deno.test("parseConfig() splits token lists on commas, trimming and dropping empties", () => {
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

Deno.test("parseConfig() rejects SHARING_HIGH_* below SHARING_MAX_*", () => {
  const message = /SHARING_HIGH_\* must be at least SHARING_MAX_\*/;
  assert.throws(
    () => parseConfig({ SHARING_MAX_REGIONS: "5", SHARING_HIGH_REGIONS: "4" }, 2),
    message,
  );
  assert.throws(() => parseConfig({ SHARING_MAX_IPS: "7" }, 2), message);
  const equal = parseConfig({ SHARING_MAX_IPS: "6", SHARING_HIGH_IPS: "6" }, 2);
  assert.equal(equal.thresholds.sharingHighIps, 6);
});

Deno.test("parseConfig() ignores unknown variables", () => {
  const config = parseConfig({ PATH: "/usr/bin", HOME: "", FOO: "not-a-number" }, 2);
  assert.equal(config.port, 8000);
});

Deno.test("parseConfig() treats empty strings as unset", () => {
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

Deno.test("parseConfig() generates a random IP secret when unset and says so", () => {
  const a = parseConfig({}, 2);
  const b = parseConfig({}, 2);
  assert.equal(a.isIpHashSecretGenerated, true);
  assert.match(a.ipHashSecret, /^[0-9a-f]{64}$/);
  assert.notEqual(a.ipHashSecret, b.ipHashSecret);
});

Deno.test("parseConfig() keeps a configured IP secret and marks it as not generated", () => {
  const config = parseConfig({ IP_HASH_SECRET: SECRET }, 2);
  assert.equal(config.ipHashSecret, SECRET);
  assert.equal(config.isIpHashSecretGenerated, false);
});

Deno.test({
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
