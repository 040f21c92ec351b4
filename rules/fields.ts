/**
 * The event's optional fields in one table. Each entry says the field's wire name, its name on
 * {@link OptionalFields}, its `raw_events` column and what values it takes; from this table come
 * the validation (fast path and zod's messages alike), the worker message columns, the stream
 * entry, the raw row (insert, COPY, read back), the privacy export and the documented schema.
 * Adding an optional field is one entry here, a migration adding its column (migrations stay
 * hand-written), the code that uses it and its test.
 *
 * The required fields and the optional ones with a meaning of their own (`is_eu`, `has_consent`,
 * `consent`, `error_code`, `subscription_plan`, `do_not_track`, `extra_metadata`) stay written out
 * where they are used.
 *
 * @module
 */
import { z } from "zod";

/** What values a field takes. */
export type FieldKind =
  /** An opaque id: 1-128 characters, no control characters, no e-mail or IP address. */
  | "id"
  /** A short label: 1-64 characters, no control characters; free text is scrubbed. */
  | "label"
  /** A whole number from 0 to the field's `max`. */
  | "count"
  | "boolean";

/** One optional field. */
export interface OptionalField {
  /** Its name in the JSON a TV sends (and in the export). */
  wire: string;
  /** Its name on {@link OptionalFields}. */
  key: string;
  /** Its `raw_events` column. */
  column: string;
  kind: FieldKind;
  /** Highest value of a count. */
  max?: number;
  /** For the documented schema. */
  description: string;
}

/** The optional fields. Order is the order of columns and of values in a stream entry. */
export const OPTIONAL_FIELDS = [
  {
    wire: "view_id",
    key: "viewId",
    column: "view_id",
    kind: "id",
    description: "The client's id of one attempt to play one title on one device (a Mux view, " +
      "a CTA-2066 session). Without it the server derives views (see the QoE section).",
  },
  {
    wire: "playhead_ms",
    key: "playheadMs",
    column: "playhead_ms",
    kind: "count",
    max: 2_147_483_647,
    description: "Position in the title, in milliseconds.",
  },
  {
    wire: "bitrate_kbps",
    key: "bitrateKbps",
    column: "bitrate_kbps",
    kind: "count",
    max: 1_000_000,
    description: "Bitrate of the rendition playing (on FIRST_FRAME, RENDITION_CHANGE, HEARTBEAT).",
  },
  {
    wire: "rendition_height",
    key: "renditionHeight",
    column: "rendition_height",
    kind: "count",
    max: 10_000,
    description: "Height in pixels of the rendition playing.",
  },
  {
    wire: "player_height",
    key: "playerHeight",
    column: "player_height",
    kind: "count",
    max: 10_000,
    description: "Height in pixels of the player on screen (a rendition below it is upscaled).",
  },
  {
    wire: "fatal",
    key: "fatal",
    column: "fatal",
    kind: "boolean",
    description: "On ERROR: false for a warning, which still counts in errors but fails no view " +
      "and feeds no quality rule. Absent means true.",
  },
  {
    wire: "cdn",
    key: "cdn",
    column: "cdn",
    kind: "label",
    description: "The CDN serving the view: a dimension of the QoE reads.",
  },
] as const satisfies readonly OptionalField[];

type Fields = typeof OPTIONAL_FIELDS[number];
type ValueOf<K extends FieldKind> = K extends "id" | "label" ? string
  : K extends "count" ? number
  : boolean;

/** The optional fields an event carried (absent when it carried none of them). */
export type OptionalFields = { -readonly [F in Fields as F["key"]]?: ValueOf<F["kind"]> };

// deno-lint-ignore no-control-regex
const NO_CONTROL_CHARS = /^[^\u0000-\u001f\u007f]+$/;

/** zod's view of a field (its messages are the ones clients see). */
export function fieldSchema(field: OptionalField): z.ZodType {
  switch (field.kind) {
    case "id":
    case "label":
      return z.string().min(1).max(field.kind === "id" ? 128 : 64)
        .regex(NO_CONTROL_CHARS, "must not contain control characters")
        .refine((s) => s.isWellFormed(), "must be well-formed Unicode");
    case "count":
      return z.number().int().min(0).max(field.max ?? Number.MAX_SAFE_INTEGER);
    case "boolean":
      return z.boolean();
  }
}

/** The `raw_events` column type of a field. */
export function columnType(field: OptionalField): "text" | "integer" | "boolean" {
  return field.kind === "count" ? "integer" : field.kind === "boolean" ? "boolean" : "text";
}

/** The JSON schema of a field, for the OpenAPI document. */
export function jsonSchemaOf(field: OptionalField): Record<string, unknown> {
  const base = { description: field.description };
  switch (field.kind) {
    case "id":
      return { ...base, type: "string", minLength: 1, maxLength: 128 };
    case "label":
      return { ...base, type: "string", minLength: 1, maxLength: 64 };
    case "count":
      return { ...base, type: "integer", minimum: 0, maximum: field.max };
    case "boolean":
      return { ...base, type: "boolean" };
  }
}

/** Whether a value is one the field takes, checked without zod (the ingest fast path). */
export function isFieldValue(field: OptionalField, v: unknown): boolean {
  switch (field.kind) {
    case "id":
    case "label":
      return typeof v === "string" && v.length >= 1 &&
        v.length <= (field.kind === "id" ? 128 : 64) &&
        NO_CONTROL_CHARS.test(v) && v.isWellFormed();
    case "count":
      return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= (field.max ?? Infinity);
    case "boolean":
      return typeof v === "boolean";
  }
}

/** Text of a stored value in PostgreSQL's COPY text format (`\N` for none). */
export function copyText(v: unknown): string {
  if (v === undefined || v === null) return "\\N";
  if (typeof v === "boolean") return v ? "t" : "f";
  if (typeof v === "number") return String(v);
  return String(v).replace(/[\\\n\r\t]/g, (c) => COPY_ESCAPES[c]);
}

const COPY_ESCAPES: Record<string, string> = {
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

/** The fields of a stored row (columns by name), or undefined when it has none. */
export function fieldsOfRow(row: Record<string, unknown>): OptionalFields | undefined {
  let fields: Record<string, unknown> | undefined;
  for (const f of OPTIONAL_FIELDS) {
    const v = row[f.column];
    if (v !== null && v !== undefined) (fields ??= {})[f.key] = v;
  }
  return fields as OptionalFields | undefined;
}
