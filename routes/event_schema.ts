/**
 * The wire format of one event, validated with zod at the HTTP boundary and converted to the internal
 * {@link TelemetryEvent} shape (raw IP replaced by its keyed hash and prefix).
 *
 * @module
 */
import { z } from "zod";
import { EVENT_TYPES } from "../rules/mod.ts";
import type { IncomingEvent } from "../actors/region.ts";
import type { IpAnonymizer } from "./ip_anonymizer.ts";

/** Largest `extra_metadata` accepted, in bytes of JSON. */
export const MAX_METADATA_BYTES = 4096;

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

/** True when every string (keys included) in a JSON value is storable text. */
export function isStorableJson(value: unknown): boolean {
  if (typeof value === "string") return isStorable(value);
  if (Array.isArray(value)) return value.every(isStorableJson);
  if (value !== null && typeof value === "object") {
    return Object.entries(value).every(([k, v]) => isStorable(k) && isStorableJson(v));
  }
  return true;
}

/** A region: ISO 3166-1 alpha-2 or a subdivision such as `US-CA`, any case on input, upper-cased. */
export const REGION_SCHEMA = z.string().transform((s) => s.toUpperCase()).pipe(
  z.string().regex(
    /^[A-Z]{2}(-[A-Z0-9]{1,3})?$/,
    "must be an ISO 3166-1 alpha-2 code or a subdivision such as US-CA",
  ),
);

/** zod schema of one event as a TV sends it; unknown fields are rejected. */
export const EVENT_SCHEMA = z.strictObject({
  event_id: ID_SCHEMA,
  user_id: ID_SCHEMA,
  device_id: ID_SCHEMA,
  content_id: ID_SCHEMA,
  event_type: z.string().transform((s) => s.toUpperCase()).pipe(z.enum(EVENT_TYPES)),
  timestamp: z.iso.datetime({ offset: true, message: "must be an ISO-8601 date-time with a zone" }),
  region: REGION_SCHEMA,
  is_eu: z.boolean(),
  has_consent: z.boolean(),
  ip_address: z.union([z.ipv4(), z.ipv6()], { message: "must be an IPv4 or IPv6 address" }),
  error_code: z.string().min(1).max(64).regex(NO_CONTROL_CHARS)
    .refine((s) => s.isWellFormed(), "must be well-formed Unicode").nullable(),
  extra_metadata: z.record(z.string(), z.unknown()).default({}).refine(
    (m) => JSON.stringify(m).length <= MAX_METADATA_BYTES,
    `must be at most ${MAX_METADATA_BYTES} bytes of JSON`,
  ).refine(isStorableJson, "must not contain NUL characters or malformed Unicode"),
  do_not_track: z.boolean().optional(),
}).check((ctx) => {
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

/** Result of validating one wire event. */
export type Validation = { ok: true; event: IncomingEvent } | { ok: false; issues: Issue[] };

/** Limits that depend on the server clock and config. */
export interface ValidationContext {
  nowMs: number;
  maxFutureSkewMs: number;
  anonymizer: IpAnonymizer;
}

/** Validates one decoded JSON value and converts it, or lists every problem. */
export function validateEvent(input: unknown, ctx: ValidationContext): Validation {
  const parsed = EVENT_SCHEMA.safeParse(input);
  if (!parsed.success) {
    return {
      ok: false,
      issues: parsed.error.issues.map((i) => ({
        path: i.path.join(".") || "(root)",
        message: i.message,
      })),
    };
  }
  const e = parsed.data;
  const atMs = Date.parse(e.timestamp);
  if (atMs > ctx.nowMs + ctx.maxFutureSkewMs) {
    return {
      ok: false,
      issues: [{
        path: "timestamp",
        message: `is more than ${ctx.maxFutureSkewMs} ms in the future: ${e.timestamp}`,
      }],
    };
  }
  if (atMs < Date.UTC(2000, 0, 1)) {
    return { ok: false, issues: [{ path: "timestamp", message: "is before the year 2000" }] };
  }
  const { hash, prefix } = ctx.anonymizer.anonymize(e.ip_address);
  return {
    ok: true,
    event: {
      eventId: e.event_id,
      userId: e.user_id,
      deviceId: e.device_id,
      contentId: e.content_id,
      type: e.event_type,
      atMs,
      region: e.region,
      isEu: e.is_eu,
      hasConsent: e.has_consent,
      ipHash: hash,
      ipPrefix: prefix,
      errorCode: e.error_code,
      doNotTrack: e.do_not_track ?? false,
      metadata: e.extra_metadata,
      receivedAtMs: ctx.nowMs,
    },
  };
}
