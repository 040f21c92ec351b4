/**
 * The wire format of one event, validated with zod at the HTTP boundary and converted to the internal
 * {@link TelemetryEvent} shape (raw IP replaced by its keyed hash and prefix, GDPR decided from the
 * region, `extra_metadata` cut to allowed keys and free text scrubbed of IP and e-mail addresses).
 *
 * @module
 */
import { z } from "zod";
import { PSEUDONYM_PATTERN } from "../actors/erased_users.ts";
import type { IncomingEvent } from "../actors/region.ts";
import {
  AGGREGATED_METADATA_KEYS,
  isDimensionValue,
  MAX_DIMENSION_CHARS,
} from "../actors/user_family.ts";
import { canonicalRegion, isGdprRegion } from "./gdpr_regions.ts";
import type { IpAnonymizer } from "./ip_anonymizer.ts";
import { type ConsentDecoder, type WireConsent } from "./consent_decoder.ts";
import { type ConsentSignal, isConsentGranted } from "../rules/consent.ts";
import { opaqueIdProblem, scrubMetadata, scrubText } from "./scrub.ts";
import {
  fieldSchema,
  isFieldValue,
  jsonSchemaOf,
  OPTIONAL_FIELDS,
  type OptionalFields,
} from "../rules/fields.ts";

/** Largest `extra_metadata` accepted, in UTF-8 bytes of JSON. */
export const MAX_METADATA_BYTES = 4096;

/** Deepest nesting of objects and arrays in `extra_metadata`, the metadata object itself being level 1. */
export const MAX_METADATA_DEPTH = 4;

// deno-lint-ignore no-control-regex
const NO_CONTROL_CHARS = /^[^\u0000-\u001f\u007f]+$/;
/** Text PostgreSQL can store: no NUL and no lone UTF-16 surrogates (which would also collide ids). */
const isStorable = (s: string) => s.isWellFormed() && !s.includes("\u0000");
/** An id as TVs send it: 1-128 characters, no control characters, well-formed Unicode. */
export const ID_SCHEMA = z.string().min(1).max(128).regex(
  NO_CONTROL_CHARS,
  "must not contain control characters",
)
  .refine((s) => s.isWellFormed(), "must be well-formed Unicode");

/** A short optional label (error code, subscription plan): absent or null becomes null. */
const LABEL_SCHEMA = z.string().min(1).max(64).regex(
  NO_CONTROL_CHARS,
  "must not contain control characters",
)
  .refine((s) => s.isWellFormed(), "must be well-formed Unicode")
  .nullish().transform((s) => (s === null || s === undefined ? null : scrubText(s)));

/** An id that is stored: it must not hold an e-mail or IP address (ids must be pseudonymous). */
const OPAQUE_ID_SCHEMA = ID_SCHEMA.check((ctx) => {
  const problem = opaqueIdProblem(ctx.value);
  if (problem !== null) ctx.issues.push({ code: "custom", input: ctx.value, message: problem });
});

/** True when every string (keys included) in a JSON value is storable text. */
export function isStorableJson(value: unknown): boolean {
  if (typeof value === "string") return isStorable(value);
  if (Array.isArray(value)) return value.every(isStorableJson);
  if (value !== null && typeof value === "object") {
    return Object.entries(value).every(([k, v]) => isStorable(k) && isStorableJson(v));
  }
  return true;
}

/**
 * True when a JSON value nests objects and arrays more than `maxDepth` levels deep; the recursion stops
 * at `maxDepth + 1`, so a hostile 500 000-level document cannot exhaust the stack.
 */
export function isNestedDeeperThan(value: unknown, maxDepth: number): boolean {
  if (value === null || typeof value !== "object") return false;
  if (maxDepth <= 0) return true;
  const children = Array.isArray(value) ? value : Object.values(value);
  return children.some((child) => isNestedDeeperThan(child, maxDepth - 1));
}

const utf8 = new TextEncoder();

/** Why metadata is refused, or null; depth is checked first so the later recursive steps are bounded. */
function metadataProblem(metadata: Record<string, unknown>): string | null {
  if (isNestedDeeperThan(metadata, MAX_METADATA_DEPTH)) {
    return `must nest objects and arrays at most ${MAX_METADATA_DEPTH} levels deep`;
  }
  const json = JSON.stringify(metadata);
  // A UTF-16 code unit is at most 3 bytes of UTF-8: short JSON needs no encoding to be measured.
  const bytes = json.length * 3 <= MAX_METADATA_BYTES ? json.length : utf8.encode(json).byteLength;
  if (bytes > MAX_METADATA_BYTES) {
    return `must be at most ${MAX_METADATA_BYTES} bytes of JSON (UTF-8), received ${bytes}`;
  }
  if (!isStorableJson(metadata)) return "must not contain NUL characters or malformed Unicode";
  return null;
}

/**
 * A region: ISO 3166-1 alpha-2 or a subdivision such as `US-CA`, any case on input, upper-cased; the
 * aliases TVs send are accepted too: `UK` is stored as `GB`, `EU` is kept (and always means GDPR).
 */
export const REGION_SCHEMA = z.string().transform((s) => s.toUpperCase()).pipe(
  z.string().regex(
    /^[A-Z]{2}(-[A-Z0-9]{1,3})?$/,
    "must be an ISO 3166-1 alpha-2 code (or UK, EU) or a subdivision such as US-CA",
  ),
).transform(canonicalRegion);

/**
 * An event type: PLAY, PAUSE, SEEK, STOP, ERROR or any other name a TV sends (login, heartbeat, ...),
 * in any case on input, upper-cased.
 */
export const EVENT_TYPE_SCHEMA = z.string().regex(
  /^[A-Za-z][A-Za-z0-9_]{0,63}$/,
  "must be PLAY, PAUSE, SEEK, STOP, ERROR or another name of 1-64 letters, digits and underscores " +
    "starting with a letter",
).transform((s) => s.toUpperCase());

/** Longest consent string accepted (a TC string with a long vendor list is a few kB). */
export const MAX_CONSENT_STRING_CHARS = 8_192;

const CONSENT_STRING = z.string().min(1).max(MAX_CONSENT_STRING_CHARS).regex(
  NO_CONTROL_CHARS,
  "must not contain control characters",
);

/**
 * A consent signal: a TCF v2 TC string, a GPP string with its applicable section ids, or purposes
 * by name (`storage`, `measurement`, ...) or TCF id. A string that does not decode is accepted and
 * grants nothing (the 202 says so).
 */
export const CONSENT_SCHEMA = z.union([
  z.strictObject({ tcf: CONSENT_STRING }),
  z.strictObject({
    gpp: CONSENT_STRING,
    gpp_sid: z.array(z.number().int().min(0).max(255)).max(64).optional(),
  }),
  z.strictObject({
    purposes: z.record(z.string().min(1).max(32), z.boolean()).refine(
      (p) => Object.keys(p).length <= 32,
      "must name at most 32 purposes",
    ),
  }),
], { message: 'must be {"tcf": "..."}, {"gpp": "...", "gpp_sid": [...]} or {"purposes": {...}}' });

/** A user or device id: opaque, and never in the form of an erased user's pseudonym. */
const SUBJECT_ID_SCHEMA = OPAQUE_ID_SCHEMA.refine(
  (s) => !PSEUDONYM_PATTERN.test(s),
  "must not have the form of an erased user's pseudonym (erased- and 24 hex digits)",
);

const EVENT_FIELDS = {
  event_id: OPAQUE_ID_SCHEMA,
  user_id: SUBJECT_ID_SCHEMA,
  device_id: SUBJECT_ID_SCHEMA,
  content_id: OPAQUE_ID_SCHEMA,
  event_type: EVENT_TYPE_SCHEMA,
  timestamp: z.iso.datetime({ offset: true, message: "must be an ISO-8601 date-time with a zone" }),
  region: REGION_SCHEMA,
  is_eu: z.boolean().nullish().transform((b) => b ?? null),
  // Required unless `consent` is sent (see EVENT_SCHEMA); the decoded signal wins over it.
  has_consent: z.boolean().optional(),
  consent: CONSENT_SCHEMA.nullish().transform((c) => c ?? null),
  ip_address: z.union([z.ipv4(), z.ipv6()], { message: "must be an IPv4 or IPv6 address" }),
  error_code: LABEL_SCHEMA,
  subscription_plan: LABEL_SCHEMA,
  extra_metadata: z.record(z.string(), z.unknown()).nullish().transform((m, ctx) => {
    const metadata = m ?? {};
    const problem = metadataProblem(metadata);
    if (problem === null) return metadata;
    ctx.issues.push({ code: "custom", input: m, message: problem });
    return z.NEVER;
  }),
  do_not_track: z.boolean().optional(),
};

const KNOWN_FIELDS: ReadonlySet<string> = new Set([
  ...Object.keys(EVENT_FIELDS),
  ...OPTIONAL_FIELDS.map((f) => f.wire),
]);

/**
 * The documented schema of one event: {@link EVENT_SCHEMA} with the optional fields of
 * `rules/fields.ts`. (Validation reads those fields with {@link readOptionalFields}.)
 */
export const DOCUMENTED_EVENT_SCHEMA = z.object({
  ...EVENT_FIELDS,
  ...Object.fromEntries(
    OPTIONAL_FIELDS.map((f) => [f.wire, fieldSchema(f).nullish().meta(jsonSchemaOf(f))]),
  ),
});

/**
 * The optional fields of `rules/fields.ts` an event carries, checked one by one: a value that is
 * not right is a problem with zod's message (null and absent are the same: not sent).
 */
export function readOptionalFields(
  input: Record<string, unknown>,
): { fields: OptionalFields | undefined; issues: Issue[] } {
  let fields: Record<string, unknown> | undefined;
  const issues: Issue[] = [];
  for (const f of OPTIONAL_FIELDS) {
    const v = input[f.wire];
    if (v === undefined || v === null) continue;
    if (isFieldValue(f, v)) {
      const problem = f.kind === "id" ? opaqueIdProblem(v as string) : null;
      if (problem === null) {
        (fields ??= {})[f.key] = f.kind === "label" ? scrubText(v as string) : v;
        continue;
      }
      issues.push({ path: f.wire, message: problem });
      continue;
    }
    const parsed = fieldSchema(f).safeParse(v);
    issues.push({
      path: f.wire,
      message: parsed.success ? "is not accepted" : parsed.error.issues[0].message,
    });
  }
  return { fields: fields as OptionalFields | undefined, issues };
}

/** zod schema of one event as a TV sends it; unknown fields are stripped (see {@link validateEvent}). */
export const EVENT_SCHEMA = z.object(EVENT_FIELDS).check((ctx) => {
  if (ctx.value.has_consent === undefined && ctx.value.consent === null) {
    ctx.issues.push({
      code: "custom",
      input: undefined,
      path: ["has_consent"],
      message: "is required unless a consent signal is sent in consent",
    });
  }
  if (ctx.value.event_type === "ERROR" && ctx.value.error_code === null) {
    ctx.issues.push({
      code: "custom",
      input: ctx.value.error_code,
      path: ["error_code"],
      message: "is required for ERROR events",
    });
  }
});

/** A validation problem, as returned to clients. */
export interface Issue {
  path: string;
  message: string;
}

/**
 * Result of validating one wire event; `ignoredFields` are the unknown top-level fields and the
 * `extra_metadata.<key>` keys outside the allow-list, all dropped.
 */
export type Validation =
  | { ok: true; event: IncomingEvent; ignoredFields: string[]; consentNotes: string[] }
  | { ok: false; issues: Issue[] };

/** Limits that depend on the server clock and config. */
export interface ValidationContext {
  nowMs: number;
  maxFutureSkewMs: number;
  /** Events older than `nowMs` minus this are refused: too old to be counted. */
  maxEventAgeMs: number;
  /** Countries (ISO alpha-2) where GDPR-like rules apply; `EU` always does. */
  gdprRegions: readonly string[];
  /** Refuse unknown top-level fields and metadata keys instead of dropping them. */
  isStrictSchema: boolean;
  /** `extra_metadata` keys that are kept (`METADATA_KEYS`); others are dropped. */
  metadataKeys: ReadonlySet<string>;
  anonymizer: IpAnonymizer;
  /** Decodes `consent` signals (with the configured vendor). */
  consentDecoder: ConsentDecoder;
  /** The purposes the processing needs (`CONSENT_PURPOSES`), as a mask of TCF purpose ids. */
  consentPurposeMask: number;
}

/** Top-level field names of a decoded JSON object that the schema does not know. */
export function unknownFields(input: unknown): string[] {
  if (input === null || typeof input !== "object" || Array.isArray(input)) return [];
  return Object.keys(input).filter((key) => !KNOWN_FIELDS.has(key));
}

/** `extra_metadata.<key>` for each top-level metadata key outside the allow-list (scrubbed names). */
export function unknownMetadataFields(input: unknown, allowedKeys: ReadonlySet<string>): string[] {
  if (input === null || typeof input !== "object" || Array.isArray(input)) return [];
  const metadata = (input as Record<string, unknown>)["extra_metadata"];
  if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) return [];
  return Object.keys(metadata).filter((key) => !allowedKeys.has(key))
    .map((key) => `extra_metadata.${scrubText(key)}`);
}

/**
 * Validates one decoded JSON value and converts it, or lists every problem. A hand-written fast path
 * takes the events it is sure of (about a third of zod's cost); anything else, and every invalid
 * event, goes through zod, whose messages clients see. `useFastPath` is for the test that proves
 * both agree.
 */
export function validateEvent(
  input: unknown,
  ctx: ValidationContext,
  useFastPath = true,
): Validation {
  const fields = unknownFields(input);
  const metadataFields = unknownMetadataFields(input, ctx.metadataKeys);
  const ignoredFields = [...fields, ...metadataFields];
  const issues: Issue[] = ctx.isStrictSchema
    ? [
      ...fields.map((path) => ({ path, message: "is not a known field" })),
      ...metadataFields.map((path) => ({
        path,
        message: "is not an allowed metadata key (see METADATA_KEYS)",
      })),
    ]
    : [];
  const fast = useFastPath ? fastParse(input) : null;
  const parsed = fast !== null
    ? { success: true as const, data: fast }
    : EVENT_SCHEMA.safeParse(input);
  if (!parsed.success) {
    issues.push(...parsed.error.issues.map((i) => ({
      path: i.path.join(".") || "(root)",
      message: i.message,
    })));
  }
  const optional = input !== null && typeof input === "object" && !Array.isArray(input)
    ? readOptionalFields(input as Record<string, unknown>)
    : { fields: undefined, issues: [] };
  issues.push(...optional.issues);
  if (!parsed.success || issues.length > 0) return { ok: false, issues };
  const e = parsed.data;
  const timeIssue = timestampProblem(e.timestamp, ctx);
  if (timeIssue !== null) return { ok: false, issues: [{ path: "timestamp", message: timeIssue }] };
  const badDimensions = AGGREGATED_METADATA_KEYS.filter((key) =>
    ctx.metadataKeys.has(key) && e.extra_metadata[key] !== undefined &&
    !isDimensionValue(e.extra_metadata[key])
  );
  if (badDimensions.length > 0) {
    if (ctx.isStrictSchema) {
      return {
        ok: false,
        issues: badDimensions.map((key) => ({
          path: `extra_metadata.${key}`,
          message: `must be a string of 1-${MAX_DIMENSION_CHARS} characters`,
        })),
      };
    }
    // Counted as "unknown": dropped, so what is stored matches what is counted, and named.
    ignoredFields.push(...badDimensions.map((key) => `extra_metadata.${key}`));
  }
  const { hash, prefix } = ctx.anonymizer.anonymize(e.ip_address);
  const consentNotes: string[] = [];
  let consent: ConsentSignal | null = null;
  let hasConsent = e.has_consent ?? false;
  if (e.consent !== null) {
    const decoded = ctx.consentDecoder.decode(e.consent as WireConsent);
    consent = decoded.signal;
    hasConsent = isConsentGranted(consent, ctx.consentPurposeMask);
    if (decoded.problem !== null) consentNotes.push(`${decoded.problem}: treated as no consent`);
    if (e.has_consent !== undefined) {
      consentNotes.push("has_consent is ignored: the decoded consent signal decides");
    }
  }
  return {
    ok: true,
    ignoredFields,
    consentNotes,
    event: {
      eventId: e.event_id,
      userId: e.user_id,
      deviceId: e.device_id,
      contentId: e.content_id,
      type: e.event_type,
      atMs: Date.parse(e.timestamp),
      region: e.region,
      isEu: isGdprRegion(e.region, ctx.gdprRegions),
      clientIsEu: e.is_eu,
      subscriptionPlan: e.subscription_plan,
      hasConsent,
      ...(consent === null ? {} : { consent }),
      ipHash: hash,
      ipPrefix: prefix,
      errorCode: e.error_code,
      doNotTrack: e.do_not_track ?? false,
      hasDoNotTrack: e.do_not_track !== undefined,
      metadata: scrubMetadata(withoutKeys(e.extra_metadata, badDimensions), ctx.metadataKeys)
        .metadata,
      ...(optional.fields === undefined ? {} : { fields: optional.fields }),
      receivedAtMs: ctx.nowMs,
    },
  };
}

/** `metadata` without `keys` (the same object when there are none to drop). */
function withoutKeys(metadata: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  if (keys.length === 0) return metadata;
  return Object.fromEntries(Object.entries(metadata).filter(([key]) => !keys.includes(key)));
}

/** What {@link EVENT_SCHEMA} produces. */
type EventFields = z.output<typeof EVENT_SCHEMA>;

const TIMESTAMP_SCHEMA = EVENT_FIELDS.timestamp;
const IP_SCHEMA = EVENT_FIELDS.ip_address;
// zod's own IPv4 pattern: dotted decimal, no leading zeros.
const IPV4 =
  /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])$/;
const TYPE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const REGION = /^[A-Z]{2}(-[A-Z0-9]{1,3})?$/;

const isId = (v: unknown): v is string =>
  typeof v === "string" && v.length >= 1 && v.length <= 128 && NO_CONTROL_CHARS.test(v) &&
  v.isWellFormed() && opaqueIdProblem(v) === null;

/** A label as {@link LABEL_SCHEMA} takes it, or `false` when the fast path is not sure. */
function fastLabel(v: unknown): string | null | false {
  if (v === undefined || v === null) return null;
  if (typeof v !== "string" || v.length < 1 || v.length > 64) return false;
  return NO_CONTROL_CHARS.test(v) && v.isWellFormed() ? scrubText(v) : false;
}

/**
 * The output of {@link EVENT_SCHEMA} for inputs it is sure zod accepts, each check the same as the
 * schema's (or the schema's own for timestamps and IPv6); null for anything else.
 */
function fastParse(input: unknown): EventFields | null {
  if (input === null || typeof input !== "object" || Array.isArray(input)) return null;
  const o = input as Record<string, unknown>;
  const { event_id, user_id, device_id, content_id, event_type, region, is_eu, has_consent } = o;
  if (!isId(event_id) || !isId(user_id) || !isId(device_id) || !isId(content_id)) return null;
  if (PSEUDONYM_PATTERN.test(user_id) || PSEUDONYM_PATTERN.test(device_id)) return null;
  if (typeof event_type !== "string" || !TYPE.test(event_type)) return null;
  if (typeof region !== "string" || typeof has_consent !== "boolean") return null;
  // Consent signals are decoded on zod's path (and cached by string there).
  if (o.consent !== undefined && o.consent !== null) return null;
  const upperRegion = region.toUpperCase();
  if (!REGION.test(upperRegion)) return null;
  if (is_eu !== undefined && is_eu !== null && typeof is_eu !== "boolean") return null;
  const ip = o.ip_address;
  if (typeof ip !== "string" || !(IPV4.test(ip) || IP_SCHEMA.safeParse(ip).success)) return null;
  const timestamp = o.timestamp;
  if (typeof timestamp !== "string" || !TIMESTAMP_SCHEMA.safeParse(timestamp).success) return null;
  const errorCode = fastLabel(o.error_code);
  const plan = fastLabel(o.subscription_plan);
  if (errorCode === false || plan === false) return null;
  const type = event_type.toUpperCase();
  if (type === "ERROR" && errorCode === null) return null;
  const dnt = o.do_not_track;
  if (dnt !== undefined && typeof dnt !== "boolean") return null;
  const m = o.extra_metadata;
  if (m !== undefined && m !== null && (typeof m !== "object" || Array.isArray(m))) return null;
  const metadata = (m ?? {}) as Record<string, unknown>;
  if (Object.getPrototypeOf(metadata) !== Object.prototype || metadataProblem(metadata) !== null) {
    return null;
  }
  return {
    event_id,
    user_id,
    device_id,
    content_id,
    event_type: type,
    timestamp,
    region: canonicalRegion(upperRegion),
    is_eu: is_eu ?? null,
    has_consent,
    consent: null,
    ip_address: ip,
    error_code: errorCode,
    subscription_plan: plan,
    extra_metadata: metadata,
    do_not_track: dnt,
  };
}

function timestampProblem(timestamp: string, ctx: ValidationContext): string | null {
  const atMs = Date.parse(timestamp);
  if (atMs > ctx.nowMs + ctx.maxFutureSkewMs) {
    return `is more than ${ctx.maxFutureSkewMs} ms in the future: ${timestamp}`;
  }
  if (atMs < Date.UTC(2000, 0, 1)) return "is before the year 2000";
  if (atMs < ctx.nowMs - ctx.maxEventAgeMs) {
    return `is more than ${ctx.maxEventAgeMs} ms old, too old to be counted: ${timestamp} ` +
      "(drop the event, do not retry it)";
  }
  return null;
}
