/**
 * The `from` / `to` query parameters of the analytics and compliance reads: ISO-8601 instants on UTC
 * bucket boundaries, `from` inclusive and `to` exclusive. An unaligned bound is refused with the
 * nearest aligned ones named, rather than silently widened or cut.
 *
 * @module
 */
import { z } from "zod";
import type { TimeRange } from "../db/stats_queries.ts";
import { quote } from "./query_params.ts";

/** First instant PostgreSQL can store as an ISO year: 0001-01-01T00:00:00Z (year 0000 is 1 BC). */
export const FIRST_MS = Date.parse("0001-01-01T00:00:00Z");
/** First instant past the four-digit years: 10000-01-01T00:00:00Z. */
export const END_MS = Date.UTC(10_000, 0, 1);
const INSTANT_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z";

/**
 * An ISO-8601 date-time with a zone, within the years 0001-9999: a query bound `name` (its refusal
 * says "Invalid <name>: ..."), or a body field (no name: the issue's path names it).
 */
export function instantParam(name?: string) {
  const prefix = name === undefined ? "" : `Invalid ${name}: `;
  return z.iso.datetime({
    offset: true,
    abort: true,
    error: (issue) =>
      `${prefix}expected an ISO-8601 date-time such as 2026-11-30T10:00:00Z, received ${
        quote(String(issue.input))
      }`,
  }).refine((value) => Date.parse(value) >= FIRST_MS && Date.parse(value) < END_MS, {
    error: (issue) =>
      `${prefix}must be from ${INSTANT_RANGE}, received ${quote(String(issue.input))}`,
  });
}

/** The query parameters {@link parseRange} reads, for the API's OpenAPI document. */
export const RANGE_QUERY = z.object({
  from: z.string().optional().meta({
    description: "Start (inclusive), ISO-8601 on a UTC hour, e.g. 2026-11-30T10:00:00Z",
  }),
  to: z.string().optional().meta({ description: "End (exclusive), ISO-8601 on a UTC hour" }),
});

/** A parsed range, or the reason it was refused and the parameter at fault. */
export type ParsedRange =
  | { ok: true; range: TimeRange }
  | { ok: false; error: string; param: "from" | "to" };

/** Parses `from` and `to` (either may be absent or empty) aligned to `bucketMs` (default one hour). */
export function parseRange(
  from: string | undefined,
  to: string | undefined,
  bucketMs = 3_600_000,
): ParsedRange {
  const range: TimeRange = {};
  for (const [name, value] of [["from", from], ["to", to]] as const) {
    if (value === undefined || value.trim() === "") continue;
    const ms = parseInstant(value);
    if (ms === null) {
      return {
        ok: false,
        error: `Invalid ${name}: expected an ISO-8601 date-time such as 2026-11-30T10:00:00Z, ` +
          `received ${quote(value)}`,
        param: name,
      };
    }
    if (ms < FIRST_MS || ms >= END_MS) {
      return {
        ok: false,
        error: `Invalid ${name}: must be from 0001-01-01T00:00:00Z to 9999-12-31T23:00:00Z, ` +
          `received ${quote(value)}`,
        param: name,
      };
    }
    if (ms % bucketMs !== 0) {
      const before = new Date(Math.floor(ms / bucketMs) * bucketMs).toISOString();
      const after = new Date(Math.ceil(ms / bucketMs) * bucketMs).toISOString();
      return {
        ok: false,
        error: `Invalid ${name}: ${quote(value)} is not on a ${bucketName(bucketMs)} boundary; ` +
          `use ${before} or ${after}`,
        param: name,
      };
    }
    range[name === "from" ? "fromMs" : "toMs"] = ms;
  }
  if (range.fromMs !== undefined && range.toMs !== undefined && range.fromMs >= range.toMs) {
    return { ok: false, error: "Invalid range: from must be before to", param: "to" };
  }
  return { ok: true, range };
}

/** Epoch ms of an ISO-8601 date or date-time (a date-time needs a zone), or null. */
function parseInstant(value: string): number | null {
  const isDate = /^\d{4}-\d{2}-\d{2}$/.test(value);
  const isDateTime = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/
    .test(value);
  if (!isDate && !isDateTime) return null;
  // Date.parse rolls impossible dates over (February 30 becomes March 2): refuse them instead.
  const [year, month, day] = value.slice(0, 10).split("-").map(Number);
  // Not Date.UTC, which reads the years 0-99 as 1900-1999.
  const calendar = new Date(0);
  calendar.setUTCFullYear(year, month - 1, day);
  if (calendar.getUTCMonth() !== month - 1 || calendar.getUTCDate() !== day) return null;
  const ms = Date.parse(isDate ? `${value}T00:00:00Z` : value);
  return Number.isNaN(ms) ? null : ms;
}

function bucketName(bucketMs: number): string {
  return bucketMs === 86_400_000 ? "UTC day" : "UTC hour";
}
