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

/** The stats sub-app. */
export function statsRoutes(db: Kysely<Database>): Hono {
  const app = new Hono();
  app.get("/summary", async (c) => c.json(await getSummary(db)));
  app.get("/content/:contentId", async (c) => {
    const contentId = c.req.param("contentId");
    const stats = await getContentStats(db, contentId);
    if (stats === null) return c.json({ error: `Unknown content "${contentId}"` }, 404);
    return c.json(stats);
  });
  app.get("/region/:region", async (c) => {
    const region = c.req.param("region").toUpperCase();
    const stats = await getRegionStats(db, region);
    if (stats === null) return c.json({ error: `Unknown region "${region}"` }, 404);
    return c.json(stats);
  });
  return app;
}
