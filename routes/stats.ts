/**
 * Analytics reads for platform and ops engineers: `/stats/summary`, `/stats/content/{id}`,
 * `/stats/region/{region}`. Served from PostgreSQL; fresh within about one flush interval.
 *
 * @module
 */
import { Hono } from "hono";
import type { Kysely } from "kysely";
import { getContentStats, getRegionStats, getSummary } from "../db/queries.ts";
import type { Database } from "../db/schema.ts";
import { ID_SCHEMA, REGION_SCHEMA } from "./event_schema.ts";

/** The stats sub-app. */
export function statsRoutes(db: Kysely<Database>): Hono {
  const app = new Hono();
  app.get("/summary", async (c) => c.json(await getSummary(db)));
  app.get("/content/:contentId", async (c) => {
    const contentId = c.req.param("contentId");
    if (!ID_SCHEMA.safeParse(contentId).success) {
      return c.json({ error: "Invalid content id: 1-128 characters, no control characters" }, 400);
    }
    const stats = await getContentStats(db, contentId);
    if (stats === null) return c.json({ error: `Unknown content "${contentId}"` }, 404);
    return c.json(stats);
  });
  app.get("/region/:region", async (c) => {
    const parsed = REGION_SCHEMA.safeParse(c.req.param("region"));
    if (!parsed.success) {
      return c.json(
        { error: "Invalid region: use ISO 3166-1 alpha-2 or a subdivision (US-CA)" },
        400,
      );
    }
    const region = parsed.data;
    const stats = await getRegionStats(db, region);
    if (stats === null) return c.json({ error: `Unknown region "${region}"` }, 404);
    return c.json(stats);
  });
  return app;
}
