import assert from "node:assert/strict";
import { makeWireEvent, T0 } from "../tests/fixtures.ts";
import {
  EVENT_SCHEMA,
  isNestedDeeperThan,
  MAX_METADATA_BYTES,
  validateEvent,
  type Validation,
  type ValidationContext,
} from "./event_schema.ts";
import { canonicalRegion, DEFAULT_GDPR_REGIONS, isGdprRegion } from "./gdpr_regions.ts";
import { IpAnonymizer } from "./ip_anonymizer.ts";
import { DEFAULT_METADATA_KEYS } from "./scrub.ts";
import { ConsentDecoder } from "./consent_decoder.ts";
import { DEFAULT_THRESHOLDS } from "../rules/mod.ts";

const DAY_MS = 86_400_000;

const CONTEXT: ValidationContext = {
  nowMs: T0,
  maxFutureSkewMs: 300_000,
  maxEventAgeMs: 7 * DAY_MS,
  gdprRegions: DEFAULT_GDPR_REGIONS,
  isStrictSchema: false,
  metadataKeys: new Set(DEFAULT_METADATA_KEYS),
  anonymizer: new IpAnonymizer("test-secret-0123456789"),
  consentDecoder: new ConsentDecoder(undefined),
  consentPurposeMask: DEFAULT_THRESHOLDS.consentPurposeMask,
};

function accepted(input: unknown, ctx: Partial<ValidationContext> = {}) {
  const result = validateEvent(input, { ...CONTEXT, ...ctx });
  assert.ok(result.ok, `expected the event to be accepted: ${JSON.stringify(result)}`);
  return result;
}

function refused(input: unknown, ctx: Partial<ValidationContext> = {}) {
  const result: Validation = validateEvent(input, { ...CONTEXT, ...ctx });
  assert.ok(!result.ok, "expected the event to be refused");
  return result.issues;
}

/** A wire event with one field removed, as a TV that does not know the field sends it. */
function without(field: string, overrides = {}): Record<string, unknown> {
  const event: Record<string, unknown> = { ...makeWireEvent(overrides) };
  delete event[field];
  return event;
}

/** `{ a: { a: ... { a: 1 } } }` with `depth` nested objects. */
function nested(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = { a: 1 };
  for (let i = 1; i < depth; i++) value = { a: value };
  return value;
}

Deno.test("validateEvent() accepts playback types in any case and upper-cases them", () => {
  for (const type of ["play", "Pause", "SEEK", "stop"]) {
    assert.equal(accepted(makeWireEvent({ event_type: type })).event.type, type.toUpperCase());
  }
});

Deno.test("validateEvent() accepts other event types such as login and app_start, upper-cased", () => {
  for (
    const [type, stored] of [
      ["login", "LOGIN"],
      ["heartbeat", "HEARTBEAT"],
      [
        "app_start",
        "APP_START",
      ],
      ["Logout2", "LOGOUT2"],
      ["x".repeat(64), "X".repeat(64)],
    ]
  ) {
    assert.equal(accepted(makeWireEvent({ event_type: type })).event.type, stored);
  }
});

Deno.test("validateEvent() refuses event types that are not a name, with a clear message", () => {
  for (const type of ["", "2fast", "app-start", "log in", "_x", "x".repeat(65), "PLAY\n"]) {
    const issues = refused(makeWireEvent({ event_type: type }));
    assert.equal(issues[0].path, "event_type", type);
    assert.match(issues[0].message, /PLAY, PAUSE, SEEK, STOP, ERROR or another name/);
  }
});

Deno.test("validateEvent() treats a missing or null error_code as null, but requires it on ERROR", () => {
  assert.equal(accepted(without("error_code")).event.errorCode, null);
  assert.equal(accepted(makeWireEvent({ error_code: null })).event.errorCode, null);
  const issues = refused(without("error_code", { event_type: "error" }));
  assert.deepEqual(issues, [{ path: "error_code", message: "is required for ERROR events" }]);
  const error = accepted(makeWireEvent({ event_type: "ERROR", error_code: "DRM_FAILURE" }));
  assert.equal(error.event.errorCode, "DRM_FAILURE");
});

Deno.test("validateEvent() turns null or absent extra_metadata into an empty object", () => {
  assert.deepEqual(accepted(makeWireEvent({ extra_metadata: null })).event.metadata, {});
  assert.deepEqual(accepted(without("extra_metadata")).event.metadata, {});
  assert.deepEqual(accepted(makeWireEvent()).event.metadata, { platform: "tizen" });
});

Deno.test("validateEvent() bounds extra_metadata at 4 levels of nesting", () => {
  assert.deepEqual(
    accepted(makeWireEvent({ extra_metadata: { cdn: nested(3) } })).event.metadata,
    { cdn: nested(3) },
  );
  const issues = refused(makeWireEvent({ extra_metadata: nested(5) }));
  assert.deepEqual(issues.map((i) => i.path), ["extra_metadata"]);
  assert.match(issues[0].message, /at most 4 levels deep/);
  const arrays = refused(makeWireEvent({ extra_metadata: { a: [[[[1]]]] } }));
  assert.match(arrays[0].message, /levels deep/);
});

Deno.test("validateEvent() refuses hostile nesting without exhausting the stack", () => {
  const depth = 200_000;
  const json = `{"a":${"[".repeat(depth)}${"]".repeat(depth)}}`;
  const input = { ...makeWireEvent(), extra_metadata: JSON.parse(json) };
  assert.match(refused(input)[0].message, /levels deep/);
  assert.equal(isNestedDeeperThan(JSON.parse(json), 4), true);
});

Deno.test("validateEvent() counts the 4 KiB metadata limit in UTF-8 bytes, not characters", () => {
  // 1500 characters of 3 bytes each: 1500 characters, but 4500 bytes, over the limit.
  const wide = "€".repeat(1500);
  assert.ok(JSON.stringify({ note: wide }).length < MAX_METADATA_BYTES);
  const issues = refused(makeWireEvent({ extra_metadata: { note: wide } }));
  assert.equal(issues[0].path, "extra_metadata");
  assert.match(issues[0].message, /at most 4096 bytes of JSON \(UTF-8\), received 4511/);
  const narrow = "e".repeat(4000);
  assert.equal(
    accepted(makeWireEvent({ extra_metadata: { model: narrow } })).event.metadata.model,
    narrow,
  );
});

Deno.test("validateEvent() reads subscription_plan, null when absent", () => {
  assert.equal(
    accepted(makeWireEvent({ subscription_plan: "premium" })).event.subscriptionPlan,
    "premium",
  );
  assert.equal(accepted(makeWireEvent()).event.subscriptionPlan, null);
  assert.equal(accepted(makeWireEvent({ subscription_plan: null })).event.subscriptionPlan, null);
  for (const plan of ["", "x".repeat(65), "basic\tplus", "a\u0000"]) {
    assert.equal(refused(makeWireEvent({ subscription_plan: plan }))[0].path, "subscription_plan");
  }
});

Deno.test("validateEvent() stores region UK as GB and keeps EU, both under GDPR", () => {
  const uk = accepted(makeWireEvent({ region: "uk", is_eu: false })).event;
  assert.equal(uk.region, "GB");
  assert.equal(uk.isEu, true);
  assert.equal(accepted(makeWireEvent({ region: "UK-SCT" })).event.region, "GB-SCT");
  const eu = accepted(makeWireEvent({ region: "eu", is_eu: null })).event;
  assert.equal(eu.region, "EU");
  assert.equal(eu.isEu, true);
  assert.equal(eu.clientIsEu, null);
});

Deno.test("validateEvent() decides isEu from the region, whatever is_eu claims", () => {
  const de = accepted(makeWireEvent({ region: "DE", is_eu: false })).event;
  assert.equal(de.isEu, true);
  assert.equal(de.clientIsEu, false);
  const us = accepted(makeWireEvent({ region: "US", is_eu: true })).event;
  assert.equal(us.isEu, false);
  assert.equal(us.clientIsEu, true);
  const bavaria = accepted(without("is_eu", { region: "de-by" })).event;
  assert.equal(bavaria.isEu, true);
  assert.equal(bavaria.clientIsEu, null);
  const custom = accepted(makeWireEvent({ region: "CH" }), { gdprRegions: ["CH"] }).event;
  assert.equal(custom.isEu, true);
});

Deno.test("isGdprRegion() uses the country part of a subdivision and always applies to EU", () => {
  assert.equal(isGdprRegion("DE", DEFAULT_GDPR_REGIONS), true);
  assert.equal(isGdprRegion("DE-BY", DEFAULT_GDPR_REGIONS), true);
  assert.equal(isGdprRegion("NO", DEFAULT_GDPR_REGIONS), true);
  assert.equal(isGdprRegion("GB", DEFAULT_GDPR_REGIONS), true);
  assert.equal(isGdprRegion("UK", DEFAULT_GDPR_REGIONS), true);
  assert.equal(isGdprRegion("EU", []), true);
  assert.equal(isGdprRegion("US", DEFAULT_GDPR_REGIONS), false);
  assert.equal(isGdprRegion("US-CA", DEFAULT_GDPR_REGIONS), false);
  assert.equal(isGdprRegion("CH", DEFAULT_GDPR_REGIONS), false);
  assert.equal(isGdprRegion("DE", ["FR"]), false);
});

Deno.test("canonicalRegion() rewrites only the UK alias", () => {
  assert.equal(canonicalRegion("UK"), "GB");
  assert.equal(canonicalRegion("UK-WLS"), "GB-WLS");
  assert.equal(canonicalRegion("UA-30"), "UA-30");
  assert.equal(canonicalRegion("EU"), "EU");
});

Deno.test("validateEvent() drops unknown top-level fields and names them", () => {
  const input = { ...makeWireEvent({ event_id: "u-1" }), plan_x: "gold", app_flavour: 1 };
  const result = accepted(input);
  assert.deepEqual(result.ignoredFields, ["plan_x", "app_flavour"]);
  assert.ok(!("plan_x" in result.event));
  assert.ok(!JSON.stringify(result.event).includes("gold"));
  assert.deepEqual(accepted(makeWireEvent()).ignoredFields, []);
});

Deno.test("validateEvent() refuses unknown fields with STRICT_SCHEMA, next to other issues", () => {
  const input = { ...makeWireEvent(), plan_x: "gold", region: "Germany" };
  const issues = refused(input, { isStrictSchema: true });
  assert.deepEqual(issues.map((i) => i.path).sort(), ["plan_x", "region"]);
  assert.match(issues.find((i) => i.path === "plan_x")!.message, /is not a known field/);
  assert.deepEqual(accepted(makeWireEvent(), { isStrictSchema: true }).ignoredFields, []);
});

Deno.test("validateEvent() refuses events too old to be counted, telling the TV to drop them", () => {
  const tooOld = makeWireEvent({ atMs: T0 - 7 * DAY_MS - 1 });
  const issues = refused(tooOld);
  assert.equal(issues[0].path, "timestamp");
  assert.match(issues[0].message, /too old to be counted/);
  assert.match(issues[0].message, /drop the event/);
  assert.equal(accepted(makeWireEvent({ atMs: T0 - 7 * DAY_MS })).event.atMs, T0 - 7 * DAY_MS);
  assert.match(refused(tooOld, { maxEventAgeMs: 1000 })[0].message, /more than 1000 ms old/);
});

Deno.test("validateEvent() still refuses events too far in the future", () => {
  assert.match(refused(makeWireEvent({ atMs: T0 + 300_001 }))[0].message, /in the future/);
  assert.equal(accepted(makeWireEvent({ atMs: T0 + 300_000 })).event.atMs, T0 + 300_000);
});

Deno.test("EVENT_SCHEMA accepts a minimal event without the optional fields", () => {
  const minimal = {
    event_id: "m-1",
    user_id: "u",
    device_id: "d",
    content_id: "c",
    event_type: "heartbeat",
    timestamp: new Date(T0).toISOString(),
    region: "FR",
    has_consent: true,
    ip_address: "2001:db8::1",
  };
  assert.ok(EVENT_SCHEMA.safeParse(minimal).success);
  const event = accepted(minimal).event;
  assert.equal(event.isEu, true);
  assert.equal(event.doNotTrack, false);
});

Deno.test("validateEvent() keeps allowed metadata keys and names the dropped ones", () => {
  const metadata = { platform: "webos", app_version: "4.2.0", tv_serial: "SN-1", owner: "bob" };
  const result = accepted({ ...makeWireEvent({ extra_metadata: metadata }), plan_x: "gold" });
  assert.deepEqual(result.event.metadata, { platform: "webos", app_version: "4.2.0" });
  assert.deepEqual(result.ignoredFields, [
    "plan_x",
    "extra_metadata.tv_serial",
    "extra_metadata.owner",
  ]);
  assert.ok(!JSON.stringify(result.event).includes("SN-1"));
  const custom = accepted(makeWireEvent({ extra_metadata: metadata }), {
    metadataKeys: new Set(["tv_serial"]),
  });
  assert.deepEqual(custom.event.metadata, { tv_serial: "SN-1" });
});

Deno.test("validateEvent() scrubs IP and e-mail addresses from kept metadata, at any depth", () => {
  const result = accepted(makeWireEvent({
    extra_metadata: {
      cdn: { edge: "edge at 203.0.113.9", peers: ["2001:db8::7", "ok"], "bob@example.com": 1 },
      model: "owner bob@example.com",
      app_version: "10.0.0.1",
      player_version: "shaka 4.3 (contact ops@example.com)",
      drm: { cdm_version: "192.168.1.20", server: "192.168.1.20" },
    },
  }));
  assert.deepEqual(result.event.metadata, {
    cdn: { edge: "edge at [ip]", peers: ["[ip]", "ok"], "[email]": 1 },
    model: "owner [email]",
    app_version: "10.0.0.1",
    player_version: "shaka 4.3 (contact [email])",
    drm: { cdm_version: "192.168.1.20", server: "[ip]" },
  });
});

Deno.test("validateEvent() scrubs IP and e-mail addresses from error_code and subscription_plan", () => {
  const event = accepted(makeWireEvent({
    event_type: "ERROR",
    error_code: "E_CONN 10.1.2.3 fe80::1%eth0",
    subscription_plan: "family:ann@example.org",
  })).event;
  assert.equal(event.errorCode, "E_CONN [ip] [ip]");
  assert.equal(event.subscriptionPlan, "family:[email]");
  assert.equal(
    accepted(makeWireEvent({ error_code: "E_DRM_1.2.3" })).event.errorCode,
    "E_DRM_1.2.3",
  );
});

Deno.test("validateEvent() refuses ids holding an e-mail or IP address: ids must be opaque", () => {
  const cases = [
    ["user_id", "bob@example.com"],
    ["device_id", "192.168.0.12"],
    ["content_id", "2001:db8::1"],
    ["event_id", "e-1-ann@example.org"],
  ] as const;
  for (const [field, id] of cases) {
    const issues = refused(makeWireEvent({ [field]: id }));
    assert.deepEqual(issues.map((i) => i.path), [field], id);
    assert.match(issues[0].message, /^ids must be opaque: .*(e-mail|IP) address/);
  }
  for (const id of ["user-42", "aa:bb:cc:dd:ee:ff", "movie-1.2.3", "S01E02"]) {
    assert.equal(accepted(makeWireEvent({ device_id: id })).event.deviceId, id);
  }
});

Deno.test("validateEvent() refuses disallowed metadata keys with STRICT_SCHEMA, with a reason", () => {
  const input = { ...makeWireEvent({ extra_metadata: { platform: "tizen", owner: "x" } }), zz: 1 };
  const issues = refused(input, { isStrictSchema: true });
  assert.deepEqual(issues, [
    { path: "zz", message: "is not a known field" },
    { path: "extra_metadata.owner", message: "is not an allowed metadata key (see METADATA_KEYS)" },
  ]);
});

Deno.test("validateEvent() gives the same answer with and without its fast path, on every variant", () => {
  const variants: unknown[] = [];
  const types = ["PLAY", "play", "Heartbeat", "ERROR", "error", "x", "1PLAY", "PLAY!"];
  const regions = ["DE", "de", "UK", "eu", "US-CA", "us-ny", "GBR", "D", "", "ß1"];
  const ips = [
    "10.0.0.1",
    "010.0.0.1",
    "256.1.1.1",
    "2001:db8::1",
    "::ffff:1.2.3.4",
    "fe80::1",
    "x",
  ];
  const times = [
    new Date(T0).toISOString(),
    "2026-11-30T10:00:00+01:00",
    "2026-11-30T25:00:00Z",
    "2026-11-30 10:00:00Z",
    "2026-13-01T00:00:00Z",
    "1999-12-31T23:00:00Z",
  ];
  const labels = [undefined, null, "", "E42", "user@example.com", "x".repeat(65), "a\u0000b", 7];
  const metadata = [
    undefined,
    null,
    {},
    { platform: "tizen", app_version: "10.0.0.1" },
    { note: "call 10.1.2.3", platform: "webos" },
    { platform: "p".repeat(33), app_version: 7 },
    [],
    { cdn: { a: { b: { c: { d: 1 } } } } },
    "x",
  ];
  const ids = [
    "u-1",
    "",
    "a\u0001",
    "bob@example.com",
    "10.0.0.9",
    "x".repeat(129),
    5,
    "\ud800",
    "erased-0123456789abcdef01234567",
    "erased-0123456789ABCDEF01234567",
  ];
  const base = makeWireEvent({ atMs: T0 });
  for (const event_type of types) variants.push({ ...base, event_type, error_code: "E1" });
  for (const region of regions) variants.push({ ...base, region });
  for (const ip_address of ips) variants.push({ ...base, ip_address });
  for (const timestamp of times) variants.push({ ...base, timestamp });
  for (const error_code of labels) {
    variants.push({ ...base, error_code }, { ...base, event_type: "ERROR", error_code });
  }
  for (const subscription_plan of labels) variants.push({ ...base, subscription_plan });
  for (const extra_metadata of metadata) variants.push({ ...base, extra_metadata });
  for (const id of ids) {
    for (const field of ["event_id", "user_id", "device_id", "content_id"]) {
      variants.push({ ...base, [field]: id });
    }
  }
  for (const is_eu of [undefined, null, true, false, "yes"]) variants.push({ ...base, is_eu });
  for (const has_consent of [true, false, undefined, "no"]) variants.push({ ...base, has_consent });
  for (const do_not_track of [undefined, true, false, 1]) variants.push({ ...base, do_not_track });
  variants.push({ ...base, surprise: "x" }, [], null, "event");
  const withoutTimestamp: Record<string, unknown> = { ...base };
  delete withoutTimestamp.timestamp;
  variants.push(withoutTimestamp);
  let fastAccepted = 0;
  for (const variant of variants) {
    const fast = validateEvent(variant, CONTEXT, true);
    const zod = validateEvent(variant, CONTEXT, false);
    assert.deepEqual(fast, zod, JSON.stringify(variant));
    if (fast.ok) fastAccepted++;
  }
  assert.ok(fastAccepted > 40, `only ${fastAccepted} variants were valid`);
});

Deno.test("validateEvent() refuses user and device ids in the form of an erased user's pseudonym", () => {
  const pseudonym = "erased-0123456789abcdef01234567";
  for (const field of ["user_id", "device_id"]) {
    const issues = refused(makeWireEvent({ [field]: pseudonym }));
    assert.deepEqual(issues.map((i) => i.path), [field]);
    assert.match(issues[0].message, /erased user's pseudonym/);
  }
  // Not the pseudonym form: upper-case hex, another length, or a title that happens to say erased.
  for (const id of ["erased-0123456789ABCDEF01234567", "erased-0123", "erased-user"]) {
    assert.equal(accepted(makeWireEvent({ user_id: id })).event.userId, id);
  }
  assert.equal(accepted(makeWireEvent({ content_id: pseudonym })).event.contentId, pseudonym);
});

Deno.test("validateEvent() names a platform or app_version it cannot count instead of counting it silently", () => {
  const input = makeWireEvent({
    extra_metadata: { platform: "p".repeat(33), app_version: 7, model: "QN90" },
  });
  const result = accepted(input);
  assert.deepEqual(result.ignoredFields, ["extra_metadata.platform", "extra_metadata.app_version"]);
  assert.deepEqual(result.event.metadata, { model: "QN90" });
  assert.equal(
    accepted(makeWireEvent({ extra_metadata: { platform: "p".repeat(32) } })).ignoredFields.length,
    0,
  );
  const issues = refused(input, { isStrictSchema: true });
  assert.deepEqual(issues.map((i) => i.path), [
    "extra_metadata.platform",
    "extra_metadata.app_version",
  ]);
  assert.match(issues[0].message, /1-32 characters/);
});
