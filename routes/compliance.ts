/**
 * Compliance reads for privacy and legal teams: flag counts, the flagged-event list with evidence
 * (keyset-paginated, newest first), and flagged counts per region with EU and US-CA groupings; the
 * counts take an optional `from` / `to` range of UTC hours of event time. Flag review (GDPR Art. 22:
 * a person decides): one flag with its history, and a reviewer's status change with its reason.
 * Risk scores per user, content or device, computed from the flags at read time.
 *
 * @module
 */
import { type Context, Hono } from "hono";
import type { Kysely } from "kysely";
import { z } from "zod";
import {
  FLAG_STATUSES,
  getComplianceRegions,
  getComplianceSummary,
  getFlag,
  listFlags,
  reviewFlag,
} from "../db/queries.ts";
import {
  decodeRiskCursor,
  ENTITY_TYPES,
  getEntityRisk,
  listEntityRisks,
  type RiskCursor,
} from "../db/risk_queries.ts";
import type { Database } from "../db/schema.ts";
import { DEFAULT_THRESHOLDS, purposeNames, RULE_IDS } from "../rules/mod.ts";
import { type ConsentRegionSummary, consentSummary } from "../db/consent_store.ts";
import { completenessOf, loadHorizons } from "../db/horizons.ts";
import { ANONYMOUS } from "./auth.ts";
import { REGION_SCHEMA } from "./event_schema.ts";
import {
  badRequest,
  choiceParam,
  countParam,
  givenQuery,
  issuesOf,
  quote,
  textParam,
  textRefusal,
} from "./query_params.ts";
import { parseRange } from "./time_range.ts";

/** A level in any case (`high`, `HIGH`), upper-cased. */
const LEVEL = z.string().transform((s) => s.toUpperCase())
  .pipe(choiceParam("level", ["LOW", "MEDIUM", "HIGH"]));

/** The refusal of a cursor that no previous page gave. */
const cursorRefusal = (text: string) =>
  `Invalid cursor: must be a next_cursor value from a previous page, received ${quote(text)}`;

/** Query of `GET /compliance/events`. */
export const LIST_QUERY = z.strictObject({
  rule: choiceParam("rule", RULE_IDS as [string, ...string[]]).optional(),
  level: LEVEL.optional(),
  region: REGION_SCHEMA.optional(),
  status: choiceParam("status", FLAG_STATUSES).optional(),
  user_id: textParam("user_id").optional(),
  entity_id: textParam("entity_id").optional(),
  // Checked by parseRange, as on the other reads.
  from: z.string().optional(),
  to: z.string().optional(),
  limit: countParam("limit", 1, 500).default(50),
  cursor: z.string().regex(/^\d{1,18}$/, { error: (issue) => cursorRefusal(String(issue.input)) })
    .optional(),
});

/** Query of `GET /compliance/risk`. */
export const RISK_QUERY = z.strictObject({
  entity_type: choiceParam("entity_type", ENTITY_TYPES).optional(),
  level: LEVEL.optional(),
  limit: countParam("limit", 1, 200).default(50),
  cursor: z.string().transform((text, ctx): RiskCursor => {
    const cursor = decodeRiskCursor(text);
    // The id inside is held to the rules of an id in the URL: PostgreSQL refuses a NUL in a query.
    if (cursor !== null && textRefusal("entity id", cursor.entityId) === null) return cursor;
    ctx.issues.push({ code: "custom", input: text, message: cursorRefusal(text) });
    return z.NEVER;
  }).optional(),
});

/** Free text a reviewer writes: trimmed, 1-1000 characters, no control characters but newlines. */
const NOTE = z.string().trim().min(1).max(1000)
  // deno-lint-ignore no-control-regex
  .regex(/^[^\u0000-\u0009\u000b-\u001f\u007f]*$/, "must not contain control characters")
  .refine((s) => s.isWellFormed(), "must be well-formed Unicode");

/** Body of `PATCH /compliance/flags/{id}`. */
export const REVIEW = z.strictObject({
  status: z.enum(FLAG_STATUSES),
  reason: NOTE.optional(),
  assignee: z.string().trim().min(1).max(128)
    // deno-lint-ignore no-control-regex
    .regex(/^[^\u0000-\u001f\u007f]*$/, "must not contain control characters")
    .refine((s) => s.isWellFormed(), "must be well-formed Unicode").nullable().optional(),
  revision: z.number().int().min(1).optional(),
}).superRefine((review, ctx) => {
  // A decision that closes a flag must say why (GDPR Art. 22: a person decides, and is accountable).
  const isClosing = review.status === "dismissed" || review.status === "resolved";
  // A blank reason is already refused by its own check.
  if (isClosing && review.reason === undefined) {
    ctx.addIssue({
      code: "custom",
      path: ["reason"],
      message: `is required when the status is ${review.status}`,
    });
  }
});

const FLAG_ID = /^\d{1,18}$/;

/** The compliance sub-app; `now` is the clock risk scores decay against. */
export function complianceRoutes(
  db: Kysely<Database>,
  isEu: (region: string) => boolean,
  now: () => number = Date.now,
  consentPurposeMask: number = DEFAULT_THRESHOLDS.consentPurposeMask,
): Hono {
  const app = new Hono();
  app.get("/consent/summary", async (c) => {
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRequest(c, range.error, range.param);
    const regions = await consentSummary(db, range.range);
    const total = (pick: (r: ConsentRegionSummary) => number) =>
      regions.reduce((sum, r) => sum + pick(r), 0);
    return c.json({
      from: range.range.fromMs === undefined ? null : new Date(range.range.fromMs).toISOString(),
      to: range.range.toMs === undefined ? null : new Date(range.range.toMs).toISOString(),
      ...completenessOf(await loadHorizons(db), range.range, "mixed"),
      required_purposes: purposeNames(consentPurposeMask),
      users: total((r) => r.users),
      events: total((r) => r.events),
      signal_events: total((r) => r.signal_events),
      regions,
    });
  });
  app.get("/summary", async (c) => {
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRequest(c, range.error, range.param);
    return c.json(await getComplianceSummary(db, range.range));
  });
  app.get("/events", async (c) => {
    const parsed = LIST_QUERY.safeParse(givenQuery(c));
    if (!parsed.success) {
      return c.json({ error: "Invalid query: see issues", issues: issuesOf(parsed.error) }, 400);
    }
    const q = parsed.data;
    const range = parseRange(q.from, q.to);
    if (!range.ok) return badRequest(c, range.error, range.param);
    return c.json(
      await listFlags(db, {
        rule: q.rule,
        level: q.level,
        region: q.region,
        status: q.status,
        userId: q.user_id,
        entityId: q.entity_id,
        range: range.range,
        limit: q.limit,
        beforeId: q.cursor === undefined ? undefined : Number(q.cursor),
      }),
    );
  });
  app.get("/flags/:id", async (c) => {
    const id = c.req.param("id");
    if (!FLAG_ID.test(id)) return badFlagId(c, id);
    const flag = await getFlag(db, Number(id));
    if (flag === null) return c.json({ error: `Not found: flag ${quote(id)}`, issues: [] }, 404);
    return c.json(flag);
  });
  app.patch("/flags/:id", async (c) => {
    const id = c.req.param("id");
    if (!FLAG_ID.test(id)) return badFlagId(c, id);
    let body: unknown;
    try {
      body = await c.req.json();
    } catch (error) {
      return c.json({ error: `Malformed JSON: ${(error as Error).message}`, issues: [] }, 400);
    }
    const parsed = REVIEW.safeParse(body);
    if (!parsed.success) {
      return c.json(
        { error: "Invalid flag review: see issues", issues: issuesOf(parsed.error) },
        422,
      );
    }
    // With auth off every caller is the anonymous admin, and the history says so.
    const principal = c.get("principal") ?? ANONYMOUS;
    const outcome = await reviewFlag(db, Number(id), {
      ...parsed.data,
      actor: { name: principal.name, role: principal.role },
    });
    if (outcome === "not_found") {
      return c.json({ error: `Not found: flag ${quote(id)}`, issues: [] }, 404);
    }
    if (outcome !== "reviewed") {
      return c.json({
        error: `Cannot review flag "${id}": it is at revision ${outcome.stale}, ` +
          `received ${parsed.data.revision}; read it again and decide on the new evidence`,
        issues: [],
      }, 409);
    }
    const flag = await getFlag(db, Number(id));
    // Reviewed, then erased or pruned before it could be read back.
    if (flag === null) return c.json({ error: `Not found: flag ${quote(id)}`, issues: [] }, 404);
    return c.json(flag);
  });
  app.get("/risk", async (c) => {
    const parsed = RISK_QUERY.safeParse(givenQuery(c));
    if (!parsed.success) {
      return c.json({ error: "Invalid query: see issues", issues: issuesOf(parsed.error) }, 400);
    }
    const q = parsed.data;
    return c.json(
      await listEntityRisks(db, {
        entityType: q.entity_type,
        level: q.level,
        limit: q.limit,
        after: q.cursor,
      }, now()),
    );
  });
  app.get("/risk/:entity_type/:id", async (c) => {
    const entityType = choiceParam("entity type", ENTITY_TYPES).safeParse(
      c.req.param("entity_type"),
    );
    if (!entityType.success) {
      return badRequest(c, entityType.error.issues[0].message, "entity_type");
    }
    const id = c.req.param("id");
    const refusal = textRefusal("entity id", id);
    if (refusal !== null) return badRequest(c, refusal, "id");
    const risk = await getEntityRisk(db, entityType.data, id, now());
    if (risk === null) {
      return c.json(
        { error: `Not found: no flag on ${entityType.data} ${quote(id)}`, issues: [] },
        404,
      );
    }
    return c.json(risk);
  });
  app.get("/regions", async (c) => {
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRequest(c, range.error, range.param);
    return c.json(await getComplianceRegions(db, isEu, range.range));
  });
  return app;
}

function badFlagId(c: Context, id: string): Response {
  return badRequest(
    c,
    `Invalid flag id: expected the numeric id of a flag, received ${quote(id)}`,
    "id",
  );
}
