/**
 * The API contract: `GET /openapi.json` (OpenAPI 3.1) built from the zod schemas the routes validate
 * with, and `GET /docs`, an interactive reference (Swagger UI) whose assets the server serves from
 * its own npm package, so it works on a network with no internet. A test checks that every route the
 * app registers is documented here and that nothing documented is missing from the app.
 *
 * @module
 */
import { Hono } from "hono";
import { z } from "zod";
import { EVENT_SCHEMA } from "./event_schema.ts";
import { LIST as PRIVACY_LIST, REQUEST as PRIVACY_REQUEST } from "./privacy.ts";
import { SERIES_QUERY } from "./stats.ts";
import { AUDIT_QUERY } from "./audit.ts";
import { LIST_QUERY as FLAG_LIST, REVIEW, RISK_QUERY } from "./compliance.ts";
import { RANGE_QUERY } from "./time_range.ts";

/** Who may call a route. */
type Access = "public" | "any-token" | "ingest" | "stats" | "privacy" | "admin" | "metrics";

const ROLES_OF: Record<Access, string[]> = {
  public: [],
  "any-token": ["ingest", "analyst", "privacy", "admin"],
  ingest: ["ingest", "admin"],
  stats: ["analyst", "privacy", "admin"],
  privacy: ["privacy", "admin"],
  admin: ["admin"],
  metrics: ["admin", "METRICS_TOKEN"],
};

interface Reply {
  description: string;
  schema?: z.ZodType;
  contentType?: string;
}

/** One documented operation; `path` uses OpenAPI's `{param}` form. */
export interface RouteDoc {
  method: "get" | "post" | "patch";
  path: string;
  summary: string;
  tag: string;
  access: Access;
  query?: z.ZodObject;
  body?: z.ZodType;
  responses: Record<number, Reply>;
}

const ERROR = z.object({
  error: z.string().meta({ description: "What went wrong and what to do, in a sentence" }),
  issues: z.array(z.object({ path: z.string(), message: z.string() })),
});
const JSON_OBJECT = z.record(z.string(), z.unknown());
const INGESTED = z.object({
  accepted: z.literal(1),
  event_id: z.string(),
  ignored_fields: z.array(z.string()),
  gpc: z.literal(true).optional().meta({ description: "The request carried Sec-GPC: 1" }),
});
const BATCH_INGESTED = z.object({
  accepted: z.number().int(),
  rejected: z.array(z.object({ index: z.number().int(), issues: ERROR.shape.issues })),
  ignored: z.array(z.object({ index: z.number().int(), fields: z.array(z.string()) })),
  gpc: z.literal(true).optional().meta({ description: "The request carried Sec-GPC: 1" }),
});
const PRIVACY_RECORD = z.object({
  id: z.string(),
  user_id: z.string(),
  type: z.string(),
  source: z.string(),
  jurisdiction: z.string().nullable(),
  status: z.enum(["received", "in_progress", "completed", "failed"]),
  received_at: z.string(),
  due_at: z.string().nullable(),
  completed_at: z.string().nullable(),
  overdue: z.boolean(),
  result: JSON_OBJECT.nullable(),
  is_repeat: z.boolean().optional(),
});

const err = (description: string): Reply => ({ description, schema: ERROR });
const ok = (description: string, schema: z.ZodType = JSON_OBJECT): Reply => ({
  description,
  schema,
});
const REFUSALS = {
  401: err("No bearer token, or an unknown one"),
  403: err("The token's role may not call this route"),
};
const BODY_LIMITS = {
  400: err("Malformed JSON"),
  408: err("The body did not arrive within BODY_READ_TIMEOUT_MS"),
  413: err("The body is larger than MAX_BODY_BYTES"),
};
const INGEST_REFUSALS = {
  ...REFUSALS,
  ...BODY_LIMITS,
  415: err("Unsupported content type"),
  503: err(
    "Backpressure, the log is unavailable, or the server is draining: retry after Retry-After",
  ),
};

/** Every route of the API. */
export const ROUTE_DOCS: RouteDoc[] = [
  {
    method: "post",
    path: "/events",
    tag: "ingest",
    access: "ingest",
    summary: "Send one event; 202 once it is stored in the log",
    body: EVENT_SCHEMA,
    responses: {
      202: ok("Accepted; unknown top-level fields are dropped and named", INGESTED),
      ...INGEST_REFUSALS,
      422: err("Invalid event: every problem is listed in issues"),
    },
  },
  {
    method: "post",
    path: "/events/batch",
    tag: "ingest",
    access: "ingest",
    summary:
      "Send up to MAX_BATCH_EVENTS events as a JSON array or NDJSON; invalid items are listed",
    body: z.array(EVENT_SCHEMA),
    responses: {
      202: ok("The valid events are stored; invalid ones are in rejected", BATCH_INGESTED),
      ...INGEST_REFUSALS,
      422: err("Empty batch, or no event was valid"),
    },
  },
  ...(["summary", "content/{contentId}", "region/{region}"] as const).map((what): RouteDoc => ({
    method: "get",
    path: `/stats/${what}`,
    tag: "analytics",
    access: "stats",
    summary: `Totals ${
      what === "summary" ? "of everything" : `of one ${what.split("/")[0]}`
    } over an optional range of event-time hours`,
    query: RANGE_QUERY,
    responses: {
      200: ok("Counts, rates, unique viewers (HyperLogLog) and top lists"),
      400: err("A bound is not on a UTC hour, or is not a date"),
      ...REFUSALS,
      ...(what === "summary" ? {} : { 404: err("Never seen") }) as Record<number, Reply>,
    },
  })),
  {
    method: "get",
    path: "/stats/timeseries",
    tag: "analytics",
    access: "stats",
    summary: "One metric per 1h or 1d bucket, optionally filtered and grouped",
    query: SERIES_QUERY,
    responses: {
      200: ok("Series of points, every bucket filled"),
      400: err("Bad metric, bucket, range, filter or too many points"),
      ...REFUSALS,
    },
  },
  ...(["summary", "events", "regions"] as const).map((what): RouteDoc => ({
    method: "get",
    path: `/compliance/${what}`,
    tag: "compliance",
    access: "privacy",
    summary: what === "events"
      ? "Flags with their evidence, newest first, keyset-paginated"
      : `Flag and flagged-event counts ${what === "regions" ? "per region" : "by rule and level"}`,
    query: what === "events" ? FLAG_LIST : RANGE_QUERY,
    responses: { 200: ok("Flags or counts"), 400: err("Bad filter or range"), ...REFUSALS },
  })),
  {
    method: "get",
    path: "/compliance/flags/{id}",
    tag: "compliance",
    access: "privacy",
    summary: "One flag with its evidence, review status and history",
    responses: {
      200: ok("The flag"),
      400: err("Not a flag id"),
      404: err("No such flag"),
      ...REFUSALS,
    },
  },
  {
    method: "patch",
    path: "/compliance/flags/{id}",
    tag: "compliance",
    access: "privacy",
    summary:
      "Review a flag: acknowledge, escalate, dismiss or resolve it (reason required to close)",
    body: REVIEW,
    responses: {
      409: err("The flag has a newer revision than the one reviewed"),
      200: ok("The flag after the change"),
      400: err("Not a flag id, or malformed JSON"),
      404: err("No such flag"),
      422: err("Invalid status change"),
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/compliance/risk",
    tag: "compliance",
    access: "privacy",
    summary: "Risk scores of flagged users, contents and devices, highest first, keyset-paginated",
    query: RISK_QUERY,
    responses: { 200: ok("A page of scores"), 400: err("Bad filter or cursor"), ...REFUSALS },
  },
  {
    method: "get",
    path: "/compliance/risk/{entity_type}/{id}",
    tag: "compliance",
    access: "privacy",
    summary: "One entity's risk score, level and flag counts by rule and status",
    responses: {
      200: ok("The score"),
      400: err("Not an entity type or id"),
      404: err("The entity has no flag"),
      ...REFUSALS,
    },
  },
  {
    method: "post",
    path: "/privacy/requests",
    tag: "privacy",
    access: "privacy",
    summary:
      "File a deletion, access, do-not-track or opt-out request; a repeat returns the record",
    body: PRIVACY_REQUEST,
    responses: {
      202: ok("The request record (a deletion runs on in the background)", PRIVACY_RECORD),
      ...BODY_LIMITS,
      ...REFUSALS,
      422: err("Invalid request"),
    },
  },
  {
    method: "get",
    path: "/privacy/requests",
    tag: "privacy",
    access: "privacy",
    summary: "Requests newest first, by status, type, or overdue",
    query: PRIVACY_LIST,
    responses: {
      200: ok(
        "A page of requests",
        z.object({
          items: z.array(PRIVACY_RECORD),
          next_cursor: z.string().nullable(),
        }),
      ),
      400: err("Bad filter"),
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/privacy/requests/{id}",
    tag: "privacy",
    access: "privacy",
    summary: "One request with its status, deadline and result",
    responses: { 200: ok("The record", PRIVACY_RECORD), 404: err("No such request"), ...REFUSALS },
  },
  {
    method: "get",
    path: "/privacy/requests/{id}/export",
    tag: "privacy",
    access: "privacy",
    summary: "Everything held about the user of an access request",
    responses: { 200: ok("The export"), 404: err("No such access request"), ...REFUSALS },
  },
  {
    method: "get",
    path: "/privacy/users/{user_id}/consent",
    tag: "privacy",
    access: "privacy",
    summary:
      "A user's consent changes at event time, from the raw events still kept (at most 1,000)",
    responses: { 200: ok("The changes and current consent"), 400: err("Bad user id"), ...REFUSALS },
  },
  {
    method: "get",
    path: "/audit",
    tag: "operations",
    access: "admin",
    summary: "Who read compliance and privacy data, and every refused request",
    query: AUDIT_QUERY,
    responses: { 200: ok("A page of audit rows"), 400: err("Bad filter"), ...REFUSALS },
  },
  {
    method: "get",
    path: "/auth/whoami",
    tag: "operations",
    access: "any-token",
    summary: "The calling token's name and role",
    responses: { 200: ok("Name, role, and whether auth is on"), 401: REFUSALS[401] },
  },
  {
    method: "get",
    path: "/auth/status",
    tag: "operations",
    access: "public",
    summary: "Whether auth is on (so a page knows to ask for a token first)",
    responses: { 200: ok("auth: on or off", z.object({ auth: z.enum(["on", "off"]) })) },
  },
  {
    method: "get",
    path: "/metrics",
    tag: "operations",
    access: "metrics",
    summary: "Prometheus metrics",
    responses: {
      200: { description: "Prometheus text exposition format", contentType: "text/plain" },
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/healthz",
    tag: "operations",
    access: "public",
    summary: "The process answers",
    responses: { 200: ok("Always ok") },
  },
  {
    method: "get",
    path: "/readyz",
    tag: "operations",
    access: "public",
    summary: "Database reachable, workers alive, flushes succeeding",
    responses: { 200: ok("Ready"), 503: ok("Degraded: problems lists why") },
  },
  {
    method: "get",
    path: "/openapi.json",
    tag: "operations",
    access: "public",
    summary: "This document",
    responses: { 200: ok("OpenAPI 3.1") },
  },
  {
    method: "get",
    path: "/docs",
    tag: "operations",
    access: "public",
    summary: "Interactive API reference",
    responses: { 200: { description: "HTML page", contentType: "text/html" } },
  },
  {
    method: "get",
    path: "/dashboard",
    tag: "operations",
    access: "public",
    summary: "Dashboard page (its data comes from the API with the viewer's token)",
    responses: { 200: { description: "HTML page", contentType: "text/html" } },
  },
  {
    method: "get",
    path: "/dashboard/assets/{file}",
    tag: "operations",
    access: "public",
    summary: "Script, style and chart library of the dashboard",
    responses: {
      200: { description: "The asset", contentType: "text/javascript" },
      404: err("Not an asset of the dashboard"),
    },
  },
  {
    method: "get",
    path: "/docs/assets/{file}",
    tag: "operations",
    access: "public",
    summary: "Script and style of the reference page, from the swagger-ui-dist package",
    responses: {
      200: { description: "The asset", contentType: "text/javascript" },
      404: err("Not an asset of the page"),
    },
  },
];

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  // Input side: what a client sends; transforms (e.g. upper-casing) are not representable.
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" });
  return rest;
}

function parameters(route: RouteDoc): unknown[] {
  const inPath = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
    name: m[1],
    in: "path",
    required: true,
    schema: { type: "string" },
  }));
  const query = route.query === undefined ? [] : Object.entries(
    (jsonSchema(route.query).properties ?? {}) as Record<string, unknown>,
  ).map(([name, schema]) => ({
    name,
    in: "query",
    required: ((jsonSchema(route.query!).required ?? []) as string[]).includes(name) &&
      !(schema as { default?: unknown }).default,
    schema,
  }));
  return [...inPath, ...query];
}

/** The OpenAPI 3.1 document of {@link ROUTE_DOCS}. */
export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of ROUTE_DOCS) {
    const roles = ROLES_OF[route.access];
    const operation: Record<string, unknown> = {
      tags: [route.tag],
      summary: route.summary,
      operationId: `${route.method}${
        route.path.replace(/[^A-Za-z0-9]+(.)?/g, (_, c) => c === undefined ? "" : c.toUpperCase())
      }`,
      description: roles.length === 0
        ? "No token needed."
        : `Roles: ${roles.join(", ")} (when auth is on).`,
      security: roles.length === 0 ? [] : [{ bearer: roles }],
      parameters: parameters(route),
      responses: Object.fromEntries(
        Object.entries(route.responses).map(([status, reply]) => [status, {
          description: reply.description,
          ...(reply.schema === undefined && reply.contentType === undefined ? {} : {
            content: {
              [reply.contentType ?? "application/json"]: {
                schema: reply.schema === undefined ? { type: "string" } : jsonSchema(reply.schema),
              },
            },
          }),
        }]),
      ),
    };
    if (route.body !== undefined) {
      operation.requestBody = {
        required: true,
        content: { "application/json": { schema: jsonSchema(route.body) } },
      };
    }
    (paths[route.path] ??= {})[route.method] = operation;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "OTT compliance events pipeline",
      version: "1.0.0",
      description: "Smart TV playback telemetry: ingest, analytics, compliance flags and privacy " +
        "requests. With auth on, send `Authorization: Bearer <token>`; each route says its roles.",
    },
    servers: [{ url: "/" }],
    tags: ["ingest", "analytics", "compliance", "privacy", "operations"].map((name) => ({ name })),
    components: {
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          description: "A token from API_TOKENS (role:name:secret); METRICS_TOKEN for /metrics",
        },
      },
    },
    paths,
  };
}

const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
};

const DOCS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>OTT pipeline API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="docs"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#docs", deepLinking: true });
</script>
</body>
</html>`;

/** `GET /openapi.json`, `GET /docs` and the page's assets, read from the swagger-ui-dist package. */
export function docsRoutes(): Hono {
  const app = new Hono();
  const document = JSON.stringify(openApiDocument());
  const cache = new Map<string, Uint8Array>();
  app.get("/openapi.json", (c) => c.body(document, 200, { "content-type": "application/json" }));
  app.get("/docs", (c) => c.html(DOCS_PAGE));
  app.get("/docs/assets/:file", async (c) => {
    const file = c.req.param("file");
    const type = ASSETS[file];
    if (type === undefined) return c.json({ error: `Not found: asset "${file}"`, issues: [] }, 404);
    let bytes = cache.get(file);
    if (bytes === undefined) {
      const url = new URL(`../node_modules/swagger-ui-dist/${file}`, import.meta.url);
      try {
        bytes = await Deno.readFile(url);
      } catch (error) {
        return c.json({
          error: `Cannot serve "${file}": run \`deno install\` (${(error as Error).message})`,
          issues: [],
        }, 503);
      }
      cache.set(file, bytes);
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": type,
      "cache-control": "public, max-age=86400",
    });
  });
  return app;
}
