/**
 * Anomaly incidents and maintenance windows over HTTP, mounted under `/compliance`: the incidents
 * the detector opened (filtered, newest first), one with its history, a person's review of one
 * (acknowledge, mute until a time, resolve with a reason), and the maintenance windows that keep
 * incidents from opening.
 *
 * @module
 */
import { type Context, Hono } from "hono";
import type { Kysely } from "kysely";
import { z } from "zod";
import {
  createMaintenance,
  getIncident,
  INCIDENT_STATUSES,
  listIncidents,
  maintenanceBetween,
  reviewIncident,
} from "../db/incidents.ts";
import type { Database } from "../db/schema.ts";
import { SERIES } from "../rules/anomaly_series.ts";
import { ANONYMOUS } from "./auth.ts";
import {
  badRequest,
  choiceParam,
  countParam,
  givenQuery,
  issuesOf,
  quote,
  textParam,
} from "./query_params.ts";
import { instantParam, parseRange } from "./time_range.ts";

const DAY_MS = 86_400_000;
/** Longest maintenance window: a longer outage is not maintenance. */
const MAINTENANCE_MAX_MS = 31 * DAY_MS;

const SERIES_IDS = SERIES.map((s) => s.id) as [string, ...string[]];
const STATES = ["active", "recovered"] as const;

/** Query of `GET /compliance/incidents`. */
export const INCIDENT_QUERY = z.strictObject({
  state: choiceParam("state", STATES).optional(),
  status: choiceParam("status", INCIDENT_STATUSES).optional(),
  series: choiceParam("series", SERIES_IDS).optional(),
  // Checked by parseRange, any instant: incidents live on 5-minute windows, not on hours.
  from: z.string().optional(),
  to: z.string().optional(),
  limit: countParam("limit", 1, 500).default(100),
});

/** Query of `GET /compliance/maintenance`. */
export const MAINTENANCE_QUERY = z.strictObject({
  from: z.string().optional(),
  to: z.string().optional(),
});

/** Free text a person writes: trimmed, 1-500 characters, no control characters but newlines. */
const REASON = z.string().trim().min(1).max(500)
  // deno-lint-ignore no-control-regex
  .regex(/^[^\u0000-\u0009\u000b-\u001f\u007f]*$/, "must not contain control characters")
  .refine((s) => s.isWellFormed(), "must be well-formed Unicode");

/** An ISO-8601 date-time with a zone, within the years 0001-9999. */
const INSTANT = instantParam();

/** Body of `PATCH /compliance/incidents/{id}`; the route also holds `muted_until` to the future. */
export const INCIDENT_REVIEW = z.strictObject({
  status: z.enum(INCIDENT_STATUSES),
  reason: REASON.optional(),
  muted_until: INSTANT.optional(),
}).superRefine((review, ctx) => {
  // Closing an incident must say why; a blank reason is already refused by its own check.
  if (review.status === "resolved" && review.reason === undefined) {
    ctx.addIssue({ code: "custom", path: ["reason"], message: "is required when resolving" });
  }
  if (review.status === "muted" && review.muted_until === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["muted_until"],
      message: "is required when the status is muted",
    });
  }
  if (review.status !== "muted" && review.muted_until !== undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["muted_until"],
      message: `is allowed only when the status is muted, not ${review.status}`,
    });
  }
});

/** Body of `POST /compliance/maintenance`. */
export const MAINTENANCE = z.strictObject({
  starts_at: INSTANT,
  ends_at: INSTANT,
  series: choiceParam("series", SERIES_IDS).optional(),
  key: textParam("key").optional(),
  reason: REASON,
}).superRefine((w, ctx) => {
  const lengthMs = Date.parse(w.ends_at) - Date.parse(w.starts_at);
  if (lengthMs <= 0) {
    ctx.addIssue({ code: "custom", path: ["ends_at"], message: "must be after starts_at" });
  } else if (lengthMs > MAINTENANCE_MAX_MS) {
    ctx.addIssue({
      code: "custom",
      path: ["ends_at"],
      message: "must be at most 31 days after starts_at",
    });
  }
  if (w.key !== undefined && w.series === undefined) {
    ctx.addIssue({ code: "custom", path: ["key"], message: "is allowed only with a series" });
  }
});

/** The incident sub-app; `now` is the clock a mute must end after and maintenance reads start at. */
export function incidentRoutes(db: Kysely<Database>, now: () => number = Date.now): Hono {
  const app = new Hono();
  app.get("/incidents", async (c) => {
    const parsed = INCIDENT_QUERY.safeParse(givenQuery(c));
    if (!parsed.success) {
      return c.json({ error: "Invalid query: see issues", issues: issuesOf(parsed.error) }, 400);
    }
    const q = parsed.data;
    const range = parseRange(q.from, q.to, 1);
    if (!range.ok) return badRequest(c, range.error, range.param);
    const incidents = await listIncidents(db, {
      state: q.state,
      status: q.status,
      series: q.series,
      fromMs: range.range.fromMs,
      toMs: range.range.toMs,
      limit: q.limit,
    });
    return c.json({ incidents });
  });
  app.get("/incidents/:id", async (c) => {
    const id = c.req.param("id");
    const incident = await getIncident(db, id);
    if (incident === null) return notFound(c, id);
    return c.json(incident);
  });
  app.patch("/incidents/:id", async (c) => {
    const id = c.req.param("id");
    const body = await jsonBody(c);
    if (body instanceof Response) return body;
    const nowMs = now();
    const parsed = INCIDENT_REVIEW.refine(
      (r) =>
        r.status !== "muted" || r.muted_until === undefined || Date.parse(r.muted_until) > nowMs,
      { path: ["muted_until"], message: `must be after now (${new Date(nowMs).toISOString()})` },
    ).safeParse(body);
    if (!parsed.success) {
      return c.json(
        { error: "Invalid incident review: see issues", issues: issuesOf(parsed.error) },
        422,
      );
    }
    const review = parsed.data;
    // With auth off every caller is the anonymous admin, and the history says so.
    const principal = c.get("principal") ?? ANONYMOUS;
    const reviewed = await reviewIncident(db, id, {
      status: review.status,
      reason: review.reason,
      mutedUntilMs: review.muted_until === undefined ? undefined : Date.parse(review.muted_until),
      actor: principal.name,
    });
    if (reviewed === null) return notFound(c, id);
    const incident = await getIncident(db, id);
    return incident === null ? notFound(c, id) : c.json(incident);
  });
  app.get("/maintenance", async (c) => {
    const parsed = MAINTENANCE_QUERY.safeParse(givenQuery(c));
    if (!parsed.success) {
      return c.json({ error: "Invalid query: see issues", issues: issuesOf(parsed.error) }, 400);
    }
    const range = parseRange(parsed.data.from, parsed.data.to, 1);
    if (!range.ok) return badRequest(c, range.error, range.param);
    const nowMs = now();
    const fromMs = range.range.fromMs ?? nowMs - 7 * DAY_MS;
    const toMs = range.range.toMs ?? nowMs + 30 * DAY_MS;
    if (fromMs >= toMs) {
      return badRequest(
        c,
        `Invalid range: from must be before to, which is ${new Date(toMs).toISOString()}`,
        "to",
      );
    }
    return c.json({
      from: new Date(fromMs).toISOString(),
      to: new Date(toMs).toISOString(),
      windows: await maintenanceBetween(db, fromMs, toMs),
    });
  });
  app.post("/maintenance", async (c) => {
    const body = await jsonBody(c);
    if (body instanceof Response) return body;
    const parsed = MAINTENANCE.safeParse(body);
    if (!parsed.success) {
      return c.json(
        { error: "Invalid maintenance window: see issues", issues: issuesOf(parsed.error) },
        422,
      );
    }
    const w = parsed.data;
    const principal = c.get("principal") ?? ANONYMOUS;
    const window = await createMaintenance(db, {
      startsAtMs: Date.parse(w.starts_at),
      endsAtMs: Date.parse(w.ends_at),
      series: w.series,
      key: w.key,
      reason: w.reason,
    }, principal.name);
    return c.json(window, 201);
  });
  return app;
}

/** The request's JSON body, or the 400 answer to a malformed one. */
async function jsonBody(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch (error) {
    return c.json({ error: `Malformed JSON: ${(error as Error).message}`, issues: [] }, 400);
  }
}

function notFound(c: Context, id: string): Response {
  return c.json({ error: `Not found: incident ${quote(id)}`, issues: [] }, 404);
}
