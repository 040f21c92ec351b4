/**
 * Privacy requests as records: `POST /privacy/requests` files one (deletion, access, do-not-track,
 * opt-out of sale/sharing) with its legal deadline; `GET /privacy/requests[/{id}]` tracks them;
 * `GET /privacy/requests/{id}/export` answers an access request;
 * `GET /privacy/users/{user_id}/consent` shows how a user's consent changed, from the consent
 * ledger (with the state at any event time). A deletion runs in the background (see `Eraser`); do-not-track reaches the user's actor
 * in log order. Bodies are bounded in size and read time by the app (`readBodyWithin`), like every
 * route's.
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { Kysely } from "kysely";
import { z } from "zod";
import type { ErasedUsers } from "../actors/erased_users.ts";
import type { Eraser } from "../actors/erasure.ts";
import {
  exportUser,
  fileRequest,
  getRequest,
  listRequests,
  REQUEST_TYPES,
  type RequestType,
  setRequestSource,
  setRequestStatus,
} from "../db/privacy_store.ts";
import type { Database } from "../db/schema.ts";
import { consentLedgerOf } from "../db/consent_store.ts";
import type { OptOut } from "../rules/mod.ts";
import { ID_SCHEMA } from "./event_schema.ts";
import { badRequest, choiceParam, countParam, issuesOf, quote } from "./query_params.ts";

/** Legal frameworks a request can be filed under, and how long each gives to answer. */
export const JURISDICTIONS = ["gdpr", "ccpa"] as const;
/** A legal framework of a request. */
export type Jurisdiction = typeof JURISDICTIONS[number];

/** When a request received at `receivedAtMs` is due: GDPR one calendar month, CCPA 45 days. */
export function dueAtMs(jurisdiction: Jurisdiction, receivedAtMs: number): number {
  if (jurisdiction === "ccpa") return receivedAtMs + 45 * 86_400_000;
  const due = new Date(receivedAtMs);
  const day = due.getUTCDate();
  due.setUTCMonth(due.getUTCMonth() + 1);
  // 31 January + one month is the last day of February, not 3 March.
  if (due.getUTCDate() !== day) due.setUTCDate(0);
  return due.getTime();
}

/** A privacy request's id (a bigint in PostgreSQL), as paths and cursors give it. */
const REQUEST_ID = /^\d{1,18}$/;

/** Body of `POST /privacy/requests`. */
export const REQUEST = z.strictObject({
  user_id: ID_SCHEMA,
  type: z.enum(REQUEST_TYPES),
  jurisdiction: z.enum(JURISDICTIONS).optional(),
});

/** Query of `GET /privacy/requests`. */
export const LIST = z.object({
  status: choiceParam("status", ["received", "in_progress", "completed", "failed"]).optional(),
  type: choiceParam("type", REQUEST_TYPES).optional(),
  overdue: choiceParam("overdue", ["true", "false"]).optional(),
  limit: countParam("limit", 1, 500).default(50),
  cursor: z.string().regex(REQUEST_ID, {
    error: (issue) =>
      `Invalid cursor: must be a next_cursor value from a previous page, received ${
        quote(String(issue.input))
      }`,
  }).optional(),
});

/** Answers 400 to a request id that is not 1-18 digits, quoting it. */
function badRequestId(c: Context, id: string): Response {
  return badRequest(
    c,
    `Invalid request id: expected the numeric id of a privacy request (1-18 digits), received ${
      quote(id)
    }`,
    "id",
  );
}

/** What the privacy routes need. */
export interface PrivacyDeps {
  db: Kysely<Database>;
  /** Delivers a privacy request to the user's actor (directly, or through the log). */
  recordOptOut: (userId: string, optOut: OptOut) => Promise<void> | void;
  eraser: Eraser;
  erased: ErasedUsers;
  defaultJurisdiction: Jurisdiction;
  /** Days the consent ledger keeps a state after it was last seen (`CONSENT_RETENTION_DAYS`). */
  consentRetentionDays?: number;
  now?: () => number;
}

function invalid(what: string, issues: z.core.$ZodIssue[]) {
  return {
    error: `Invalid ${what}: see issues`,
    issues: issues.map((i) => ({ path: i.path.join(".") || "(root)", message: i.message })),
  };
}

/** The privacy sub-app. */
export function privacyRoutes(deps: PrivacyDeps): Hono {
  const { db } = deps;
  const now = deps.now ?? Date.now;
  const app = new Hono();

  app.post("/requests", async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch (error) {
      return c.json({ error: `Malformed JSON: ${(error as Error).message}`, issues: [] }, 400);
    }
    const parsed = REQUEST.safeParse(body);
    if (!parsed.success) return c.json(invalid("privacy request", parsed.error.issues), 422);
    const { user_id: userId, type } = parsed.data;
    const jurisdiction = parsed.data.jurisdiction ?? deps.defaultJurisdiction;
    const receivedAtMs = now();
    const filed = { type: type as RequestType, jurisdiction, receivedAtMs };
    const dueAt = dueAtMs(jurisdiction, receivedAtMs);
    if (type === "deletion") {
      // The record names the user by pseudonym from the start; a repeat gets the first record.
      const pseudonym = deps.eraser.pseudonymOf(userId);
      const { request, isNew } = await fileRequest(db, {
        ...filed,
        userId: pseudonym,
        dueAtMs: dueAt,
        erasingUserId: userId,
      });
      if (!isNew) return c.json({ ...request, is_repeat: true }, 202);
      // From here on the user's events are stored under the pseudonym; the erasure runs on.
      await deps.eraser.begin(request.id, userId, receivedAtMs);
      return c.json(
        { ...((await getRequest(db, request.id, now())) ?? request), is_repeat: false },
        202,
      );
    }
    // An erased user is known only by pseudonym: so is every later request about them.
    const subjectId = deps.erased.pseudonymFor(userId) ?? userId;
    const { request, isNew } = await fileRequest(db, {
      ...filed,
      userId: subjectId,
      dueAtMs: dueAt,
    });
    if (!isNew && type === "do_not_track" && request.source === "event") {
      // A TV's do-not-track setting can be turned off again; the person's own request cannot, so
      // it becomes the API request on record and reaches the rules as one.
      await setRequestSource(db, request.id, "api");
      await deps.recordOptOut(subjectId, { type, sinceMs: receivedAtMs, source: "api" });
      return c.json({ ...(await getRequest(db, request.id, now()))!, is_repeat: true }, 202);
    }
    if (!isNew) return c.json({ ...request, is_repeat: true }, 202);
    if (type === "do_not_track") {
      await deps.recordOptOut(subjectId, { type, sinceMs: receivedAtMs, source: "api" });
      await setRequestStatus(db, request.id, "completed", { recorded: true }, now());
    } else if (type === "opt_out_sale_share") {
      // Recorded: the platform must stop selling or sharing; events after it are not violations.
      await setRequestStatus(db, request.id, "completed", { recorded: true }, now());
    } else {
      const data = await exportUser(db, subjectId, now());
      await setRequestStatus(db, request.id, "completed", {
        events: data.events.length,
        flags: data.flags.length,
        requests: data.requests.length,
      }, now());
    }
    return c.json(
      { ...((await getRequest(db, request.id, now())) ?? request), is_repeat: false },
      202,
    );
  });

  app.get("/requests", async (c) => {
    const query = Object.fromEntries(
      Object.entries(c.req.query()).filter(([, value]) => value !== ""),
    );
    const parsed = LIST.safeParse(query);
    if (!parsed.success) {
      return c.json({ error: "Invalid query: see issues", issues: issuesOf(parsed.error) }, 400);
    }
    const q = parsed.data;
    return c.json(
      await listRequests(db, {
        status: q.status,
        type: q.type,
        isOverdue: q.overdue === "true",
        limit: q.limit,
        beforeId: q.cursor,
      }, now()),
    );
  });

  app.get("/requests/:id", async (c) => {
    const id = c.req.param("id");
    if (!REQUEST_ID.test(id)) return badRequestId(c, id);
    const request = await getRequest(db, id, now());
    if (request === null) {
      return c.json({ error: `Not found: privacy request ${quote(id)}`, issues: [] }, 404);
    }
    return c.json(request);
  });

  app.get("/requests/:id/export", async (c) => {
    const id = c.req.param("id");
    if (!REQUEST_ID.test(id)) return badRequestId(c, id);
    const request = await getRequest(db, id, now());
    if (request === null || request.type !== "access") {
      return c.json({
        error: `Not found: access request ${quote(id)} (exports exist for access requests)`,
        issues: [],
      }, 404);
    }
    return c.json({ request, data: await exportUser(db, request.user_id, now()) });
  });

  app.get("/users/:user_id/consent", async (c) => {
    const parsed = ID_SCHEMA.safeParse(c.req.param("user_id"));
    if (!parsed.success) return c.json(invalid("user id", parsed.error.issues), 400);
    const userId = parsed.data;
    const at = c.req.query("at");
    const atMs = at === undefined || at === "" ? undefined : parseAt(at);
    if (atMs === null) {
      return c.json({
        error: `Invalid at: expected an ISO-8601 date-time with a zone, received ${quote(at!)}`,
        issues: [{ path: "at", message: "must be an ISO-8601 date-time with a zone" }],
      }, 400);
    }
    // The audit row names the user as subject, so an erasure pseudonymises it like the others.
    c.set("auditSubject", userId);
    // An erased user's ledger is kept under the pseudonym: the proof stays, the person does not.
    const subjectId = deps.erased.pseudonymFor(userId) ?? userId;
    const ledger = await consentLedgerOf(db, subjectId, atMs);
    return c.json({
      user_id: subjectId,
      source: "ledger",
      changes: ledger.changes,
      current: ledger.current,
      ...(atMs === undefined ? {} : { at: new Date(atMs).toISOString(), state_at: ledger.stateAt }),
      is_truncated: ledger.isTruncated,
      retained_days: deps.consentRetentionDays ?? null,
    });
  });

  return app;
}

/** Epoch ms of an ISO-8601 date-time with a zone in years 0001-9999, or null. */
function parseAt(value: string): number | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/.test(value)) {
    return null;
  }
  const ms = Date.parse(value);
  // -62135596800000 is 0001-01-01T00:00:00Z: PostgreSQL has no year 0.
  return Number.isNaN(ms) || ms < -62_135_596_800_000 ? null : ms;
}
