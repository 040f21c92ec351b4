/**
 * Analytics reads for platform and ops engineers: `/stats/summary`, `/stats/content/{id}`,
 * `/stats/region/{region}`, `/stats/qoe` and `/stats/timeseries`, each over an optional range of UTC hours. Served
 * from PostgreSQL; fresh within about one flush interval.
 *
 * @module
 */
import { type Context, Hono } from "hono";
import type { Kysely } from "kysely";
import { z } from "zod";
import { getContentStats, getRegionStats, getSummary } from "../db/stats_queries.ts";
import { BUCKETS, getTimeseries, GROUP_BYS, METRICS, SeriesQueryError } from "../db/timeseries.ts";
import type { Database } from "../db/schema.ts";
import { getQoe } from "../db/qoe_queries.ts";
import { REGION_SCHEMA } from "./event_schema.ts";
import {
  badRequest,
  choiceParam,
  countParam,
  issuesOf,
  quote,
  requiredOr,
  textParam,
  textRefusal,
} from "./query_params.ts";
import { type ParsedRange, parseRange } from "./time_range.ts";

/** Most points one series may have: 62 days of hours, or about 5 years of days. */
export const MAX_POINTS = 1_500;
/** Most series one grouped request may ask for. */
export const MAX_SERIES = 50;

const blankAsAbsent = (s: unknown) => (s === "" ? undefined : s);
const optional = <T extends z.ZodType>(schema: T) => z.preprocess(blankAsAbsent, schema.optional());

const ON_A_DAY = "(on a UTC day such as 2026-11-30 when bucket is 1d)";
/** What `from` and `to` must be, as a missing one is told. */
const BOUND_HELP = {
  from: `an ISO-8601 date-time on a UTC hour such as 2026-11-30T10:00:00Z ${ON_A_DAY}`,
  to: `an ISO-8601 date-time after from on a UTC hour such as 2026-11-30T12:00:00Z ${ON_A_DAY}`,
} as const;

/** A required bound of the series; blank counts as missing, and {@link parseRange} checks the rest. */
const bound = (name: "from" | "to") =>
  z.string({ error: (issue) => requiredOr(name, issue.input, BOUND_HELP[name]) });

/** Query of `GET /stats/timeseries`. */
export const SERIES_QUERY = z.object({
  metric: choiceParam("metric", METRICS),
  bucket: choiceParam("bucket", Object.keys(BUCKETS) as ["1h", "1d"]).default("1h"),
  from: bound("from"),
  to: bound("to"),
  content_id: optional(textParam("content_id")),
  region: optional(REGION_SCHEMA),
  device_id: optional(textParam("device_id")),
  platform: optional(textParam("platform", 32).transform((s) => s.toLowerCase())),
  group_by: optional(choiceParam("group_by", GROUP_BYS)),
  limit: optional(countParam("limit", 1, MAX_SERIES)),
});

/** Filters of `GET /stats/qoe` (the range is read by {@link parseRange}). */
export const QOE_QUERY = z.object({
  content_id: optional(textParam("content_id")),
  region: optional(REGION_SCHEMA),
  platform: optional(textParam("platform", 32).transform((s) => s.toLowerCase())),
  app_version: optional(textParam("app_version", 32)),
  cdn: optional(textParam("cdn", 64)),
});

/** The 400 answer of a refused range, naming the parameter at fault. */
function badRange(c: Context, range: Extract<ParsedRange, { ok: false }>): Response {
  return badRequest(c, range.error, range.param);
}

/** The stats sub-app; `isEu` tells whether GDPR-like rules apply to a region. */
export function statsRoutes(db: Kysely<Database>, isEu: (region: string) => boolean): Hono {
  const app = new Hono();
  app.get("/summary", async (c) => {
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRange(c, range);
    return c.json(await getSummary(db, range.range));
  });
  app.get("/content/:contentId", async (c) => {
    const contentId = c.req.param("contentId");
    const refusal = textRefusal("content id", contentId);
    if (refusal !== null) return badRequest(c, refusal, "contentId");
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRange(c, range);
    const stats = await getContentStats(db, contentId, range.range);
    if (stats === null) {
      return c.json({ error: `Unknown content ${quote(contentId)}`, issues: [] }, 404);
    }
    return c.json(stats);
  });
  app.get("/region/:region", async (c) => {
    const parsed = REGION_SCHEMA.safeParse(c.req.param("region"));
    if (!parsed.success) {
      return badRequest(
        c,
        "Invalid region: expected ISO 3166-1 alpha-2 (or UK, EU) or a subdivision such as US-CA, " +
          `received ${quote(c.req.param("region"))}`,
        "region",
      );
    }
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRange(c, range);
    const region = parsed.data;
    const stats = await getRegionStats(db, region, isEu(region), range.range);
    if (stats === null) {
      return c.json({ error: `Unknown region ${quote(region)}`, issues: [] }, 404);
    }
    return c.json(stats);
  });
  app.get("/qoe", async (c) => {
    const range = parseRange(c.req.query("from"), c.req.query("to"));
    if (!range.ok) return badRange(c, range);
    const parsed = QOE_QUERY.safeParse(c.req.query());
    if (!parsed.success) {
      return c.json({ error: "Invalid query: see issues", issues: issuesOf(parsed.error) }, 400);
    }
    return c.json(await getQoe(db, range.range, parsed.data));
  });
  app.get("/timeseries", async (c) => {
    const parsed = SERIES_QUERY.safeParse(c.req.query());
    if (!parsed.success) {
      return c.json({ error: "Invalid query: see issues", issues: issuesOf(parsed.error) }, 400);
    }
    const q = parsed.data;
    const bucketMs = BUCKETS[q.bucket];
    const range = parseRange(q.from, q.to, bucketMs);
    if (!range.ok) return badRange(c, range);
    const { fromMs, toMs } = range.range;
    if (fromMs === undefined) return badRequest(c, `from is required: ${BOUND_HELP.from}`, "from");
    if (toMs === undefined) return badRequest(c, `to is required: ${BOUND_HELP.to}`, "to");
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
