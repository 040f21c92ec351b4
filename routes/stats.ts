/**
 * Analytics reads for platform and ops engineers: `/stats/summary`, `/stats/content/{id}`,
 * `/stats/region/{region}` and `/stats/timeseries`, each over an optional range of UTC hours. Served
 * from PostgreSQL; fresh within about one flush interval.
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { Kysely } from "kysely";
import { z } from "zod";
import { getContentStats, getRegionStats, getSummary } from "../db/stats_queries.ts";
import { BUCKETS, getTimeseries, GROUP_BYS, METRICS, SeriesQueryError } from "../db/timeseries.ts";
import type { Database } from "../db/schema.ts";
import { ID_SCHEMA, REGION_SCHEMA } from "./event_schema.ts";
import { parseRange } from "./time_range.ts";

/** Most points one series may have: 62 days of hours, or about 5 years of days. */
export const MAX_POINTS = 1_500;
/** Most series one grouped request may ask for. */
export const MAX_SERIES = 50;

const blankAsAbsent = (s: unknown) => (s === "" ? undefined : s);
const optional = <T extends z.ZodType>(schema: T) => z.preprocess(blankAsAbsent, schema.optional());

/** Query of `GET /stats/timeseries`. */
export const SERIES_QUERY = z.object({
  metric: z.enum(METRICS),
  bucket: z.enum(Object.keys(BUCKETS) as ["1h", "1d"]).default("1h"),
  from: z.string(),
  to: z.string(),
  content_id: optional(ID_SCHEMA),
  region: optional(REGION_SCHEMA),
  device_id: optional(ID_SCHEMA),
  platform: optional(z.string().max(32).transform((s) => s.toLowerCase())),
  group_by: optional(z.enum(GROUP_BYS)),
  limit: optional(z.coerce.number().int().min(1).max(MAX_SERIES)),
});

/** The stats sub-app; `isEu` tells whether GDPR-like rules apply to a region. */
export function statsRoutes(db: Kysely<Database>, isEu: (region: string) => boolean): Hono {
  const app = new Hono();
  app.get("/summary", async (c) => {
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRequest(c, range.error);
    return c.json(await getSummary(db, range.range));
  });
  app.get("/content/:contentId", async (c) => {
    const contentId = c.req.param("contentId");
    if (!ID_SCHEMA.safeParse(contentId).success) {
      return badRequest(c, "Invalid content id: 1-128 characters, no control characters");
    }
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRequest(c, range.error);
    const stats = await getContentStats(db, contentId, range.range);
    if (stats === null) return c.json({ error: `Unknown content "${contentId}"`, issues: [] }, 404);
    return c.json(stats);
  });
  app.get("/region/:region", async (c) => {
    const parsed = REGION_SCHEMA.safeParse(c.req.param("region"));
    if (!parsed.success) {
      return badRequest(c, "Invalid region: use ISO 3166-1 alpha-2 or a subdivision (US-CA)");
    }
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRequest(c, range.error);
    const region = parsed.data;
    const stats = await getRegionStats(db, region, isEu(region), range.range);
    if (stats === null) return c.json({ error: `Unknown region "${region}"`, issues: [] }, 404);
    return c.json(stats);
  });
  app.get("/timeseries", async (c) => {
    const parsed = SERIES_QUERY.safeParse(c.req.query());
    if (!parsed.success) {
      return c.json({
        error: "Invalid query: see issues",
        issues: parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
      }, 400);
    }
    const q = parsed.data;
    const bucketMs = BUCKETS[q.bucket];
    const range = parseRange(q.from, q.to, bucketMs);
    if (!range.ok) return badRequest(c, range.error);
    const { fromMs, toMs } = range.range;
    if (fromMs === undefined || toMs === undefined) {
      return badRequest(c, "Invalid query: from and to are required");
    }
    const points = (toMs - fromMs) / bucketMs;
    if (points > MAX_POINTS) {
      return badRequest(
        c,
        `Range too long: at most ${MAX_POINTS} buckets of ${q.bucket} per series, asked for ` +
          `${points}; use a larger bucket or a shorter range`,
      );
    }
    try {
      return c.json(
        await getTimeseries(db, {
          metric: q.metric,
          bucket: q.bucket,
          fromMs,
          toMs,
          contentId: q.content_id,
          region: q.region,
          deviceId: q.device_id,
          platform: q.platform,
          groupBy: q.group_by,
          limit: q.limit ?? (q.group_by === undefined ? 1 : 10),
        }),
      );
    } catch (error) {
      if (error instanceof SeriesQueryError) return badRequest(c, error.message);
      throw error;
    }
  });
  return app;
}

function badRequest(c: Context, error: string): Response {
  return c.json({ error, issues: [] }, 400);
}
