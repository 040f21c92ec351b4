/**
 * Compliance reads for privacy and legal teams: flag counts, the flagged-event list with evidence
 * (keyset-paginated, newest first), and flagged counts per region with EU and US-CA groupings; the
 * counts take an optional `from` / `to` range of UTC hours of event time.
 *
 * @module
 */
import { Hono } from "hono";
import type { Kysely } from "kysely";
import { z } from "zod";
import { getComplianceRegions, getComplianceSummary, listFlags } from "../db/queries.ts";
import type { Database } from "../db/schema.ts";
import { RULE_IDS } from "../rules/mod.ts";
import { REGION_SCHEMA } from "./event_schema.ts";
import { parseRange } from "./time_range.ts";

const LIST_QUERY = z.strictObject({
  rule: z.enum(RULE_IDS as [string, ...string[]]).optional(),
  level: z.string().transform((s) => s.toUpperCase()).pipe(z.enum(["LOW", "MEDIUM", "HIGH"]))
    .optional(),
  region: REGION_SCHEMA.optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().regex(/^\d{1,18}$/, "must be a next_cursor value from a previous page")
    .optional(),
});

/** The compliance sub-app. */
export function complianceRoutes(
  db: Kysely<Database>,
  isEu: (region: string) => boolean,
): Hono {
  const app = new Hono();
  app.get("/summary", async (c) => {
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return c.json({ error: range.error, issues: [] }, 400);
    return c.json(await getComplianceSummary(db, range.range));
  });
  app.get("/events", async (c) => {
    // An empty parameter (`?rule=&level=`) means no filter, as a form with blank fields sends it.
    const given = Object.entries(c.req.query()).filter(([, value]) => value.trim() !== "");
    const parsed = LIST_QUERY.safeParse(Object.fromEntries(given));
    if (!parsed.success) {
      return c.json({
        error: "Invalid query: see issues",
        issues: parsed.error.issues.map((i) => ({
          path: i.path.join(".") || "(root)",
          message: i.message,
        })),
      }, 400);
    }
    const q = parsed.data;
    return c.json(
      await listFlags(db, {
        rule: q.rule,
        level: q.level,
        region: q.region,
        limit: q.limit,
        beforeId: q.cursor === undefined ? undefined : Number(q.cursor),
      }),
    );
  });
  app.get("/regions", async (c) => {
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return c.json({ error: range.error, issues: [] }, 400);
    return c.json(await getComplianceRegions(db, isEu, range.range));
  });
  return app;
}
