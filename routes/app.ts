/**
 * The HTTP application: one sub-app per resource mounted under its path, auth per role, and one error
 * handler so nothing a client sends becomes a 500.
 *
 * @module
 */
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Kysely } from "kysely";
import type { Appender } from "../actors/log/log.ts";
import type { Region } from "../actors/region.ts";
import type { Database } from "../db/schema.ts";
import type { OptOut } from "../rules/mod.ts";
import type { Logger } from "../logger.ts";
import { auditRoutes, auditTrail, captureSubject, requestId } from "./audit.ts";
import { type AuthConfig, authenticate, authRoutes, isAuthEnabled, requireRole } from "./auth.ts";
import { complianceRoutes } from "./compliance.ts";
import { incidentRoutes } from "./incidents.ts";
import { eventsRoutes } from "./events.ts";
import { isGdprRegion } from "./gdpr_regions.ts";
import { healthRoutes } from "./health.ts";
import {
  httpMetrics,
  metricsRoutes,
  type PipelineMetrics,
  requireMetricsAccess,
} from "./metrics.ts";
import type { IpAnonymizer } from "./ip_anonymizer.ts";
import type { ConsentDecoder } from "./consent_decoder.ts";
import { type Jurisdiction, privacyRoutes } from "./privacy.ts";
import { docsRoutes } from "./openapi.ts";
import { dashboardRoutes } from "./dashboard.ts";
import type { ErasedUsers } from "../actors/erased_users.ts";
import type { Eraser } from "../actors/erasure.ts";
import { statsRoutes } from "./stats.ts";

/** Everything the routes need. */
export interface AppDeps {
  db: Kysely<Database>;
  region: Region;
  log: Appender;
  anonymizer: IpAnonymizer;
  auth: AuthConfig;
  maxBodyBytes: number;
  /** How long a request body may take to arrive before the answer is 408. */
  bodyReadTimeoutMs: number;
  maxBatchEvents: number;
  maxFutureSkewMs: number;
  maxEventAgeMs: number;
  gdprRegions: readonly string[];
  isStrictSchema: boolean;
  /** `extra_metadata` keys kept at ingest (`METADATA_KEYS`). */
  metadataKeys: readonly string[];
  /** Decodes consent signals at ingest. */
  consentDecoder: ConsentDecoder;
  /** The purposes the processing needs (`CONSENT_PURPOSES`), as a mask of TCF purpose ids. */
  consentPurposeMask: number;
  logger: Logger;
  /** Prometheus registry: with it, `GET /metrics` and request timing are mounted. */
  metrics?: PipelineMetrics;
  /** Scrape-only bearer token for `GET /metrics` (`METRICS_TOKEN`). */
  metricsToken?: string;
  /** Delivers a privacy request to the user's actor (directly, or through the log). */
  recordOptOut: (userId: string, optOut: OptOut) => Promise<void> | void;
  /** Runs deletion requests to their end. */
  eraser: Eraser;
  /** Erased users by keyed hash, to answer a repeated deletion with the first record. */
  erased: ErasedUsers;
  /** Legal framework of privacy requests that name none. */
  privacyJurisdiction: Jurisdiction;
  /** Days the consent ledger keeps a state after it was last seen (`CONSENT_RETENTION_DAYS`). */
  consentRetentionDays?: number;
  /** Extra readiness problems and details (cluster membership). */
  readiness?: () => { problems: string[]; details: Record<string, unknown> };
  now?: () => number;
}

/** Builds the application; test it with `app.request()`, serve it with `Deno.serve(app.fetch)`. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  // First, so the timing covers every middleware and refusal too.
  if (deps.metrics !== undefined) app.use("*", httpMetrics(deps.metrics));
  // Request id, then the audit trail (which must see refusals), then who the caller is.
  app.use("*", requestId());
  app.use(
    "*",
    auditTrail(deps.db, deps.logger, deps.now, {
      subjectFor: (userId) => deps.erased.pseudonymFor(userId) ?? userId,
      // Refusals fold per network, and no raw IP address is stored.
      sourceFor: (address) => deps.anonymizer.anonymize(address).prefix,
    }),
  );
  app.use("*", authenticate(deps.auth));
  const ingest = requireRole(["ingest"]);
  const stats = requireRole(["analyst", "privacy"]);
  const privacy = requireRole(["privacy"]);
  const admin = requireRole(["admin"]);
  app.use("/events/*", ingest);
  app.use("/events", ingest);
  app.use("/stats/*", stats);
  // Analysts read incidents and maintenance windows; changing them, and the rest, needs privacy.
  app.use("/compliance/*", (c, next) => isIncidentRead(c) ? stats(c, next) : privacy(c, next));
  app.use("/privacy/*", privacy);
  app.use("/audit/*", admin);
  app.use("/audit", admin);
  // Admin tokens, or the scrape-only METRICS_TOKEN.
  const metricsAccess = requireMetricsAccess(deps.auth, deps.metricsToken);
  app.use("/metrics/*", metricsAccess);
  app.use("/metrics", metricsAccess);
  // With auth off, another site must not drive privacy requests or reviews through a browser.
  const sameOrigin = refuseForeignOrigin(deps.auth);
  app.use("/privacy/*", sameOrigin);
  app.use(
    "/compliance/*",
    (c, next) => BODY_METHODS.has(c.req.method) ? sameOrigin(c, next) : next(),
  );
  // After auth, before every route: only JSON bodies, and none unbounded, endless or not UTF-8.
  app.use("*", requireJsonBody());
  app.use("*", readBodyWithin(deps.maxBodyBytes, deps.bodyReadTimeoutMs, deps.logger));
  app.use("/privacy/*", captureSubject(deps.logger));
  app.route("/events", eventsRoutes(deps));
  const isEu = (region: string) => isGdprRegion(region, deps.gdprRegions);
  app.route("/stats", statsRoutes(deps.db, isEu));
  app.route("/compliance", incidentRoutes(deps.db, deps.now));
  app.route("/compliance", complianceRoutes(deps.db, isEu, deps.now, deps.consentPurposeMask));
  app.route("/privacy", privacyRoutes({ ...deps, defaultJurisdiction: deps.privacyJurisdiction }));
  app.route("/audit", auditRoutes(deps.db));
  app.route("/auth", authRoutes(deps.auth));
  if (deps.metrics !== undefined) app.route("/metrics", metricsRoutes(deps.metrics, deps.region));
  app.route("/", docsRoutes());
  app.route("/", dashboardRoutes());
  app.route("/", healthRoutes(deps.db, deps.region, deps.log.kind, deps.readiness));
  app.notFound((c) =>
    c.json({ error: `Not found: ${c.req.method} ${c.req.path}`, issues: [] }, 404)
  );
  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      return c.json({ error: error.message || "Request rejected", issues: [] }, error.status);
    }
    deps.logger.error("Unhandled error while serving request", {
      request_id: c.get("requestId"),
      method: c.req.method,
      path: c.req.path,
      error: error instanceof Error ? error.message : String(error),
    });
    return c.json(
      { error: "Internal error: the request was not processed; retry later", issues: [] },
      500,
    );
  });
  return app;
}

/**
 * Reads every request body in full before any handler runs, refusing one larger than `maxBytes` (413)
 * or slower than `timeoutMs` (408); a client that disconnects mid-body is logged at debug, not as an
 * error, since nobody is left to answer.
 */
export function readBodyWithin(
  maxBytes: number,
  timeoutMs: number,
  logger: Logger,
): MiddlewareHandler {
  return async (c, next) => {
    const tooLarge = () =>
      c.json({ error: `Body too large: the limit is ${maxBytes} bytes`, issues: [] }, 413);
    const timedOut = () =>
      c.json({
        error: `Request timeout: the body did not arrive within ${timeoutMs} ms`,
        issues: [],
      }, 408);
    const goneMidBody = (error: unknown) => {
      logger.debug("Cannot read request body: the client went away mid-body", {
        method: c.req.method,
        path: c.req.path,
        error: error instanceof Error ? error.message : String(error),
      });
      return c.json({ error: "Cannot read body: the connection closed mid-body", issues: [] }, 400);
    };
    const notUtf8 = () =>
      c.json({
        error: "Invalid body: it is not UTF-8 (a byte sequence does not decode); send UTF-8",
        issues: [],
      }, 400);
    const cancel = (stream: { cancel(): Promise<void> }, why: string) =>
      stream.cancel().catch((error) =>
        logger.debug(`Cannot cancel a request body ${why}`, { error: String(error) })
      );
    const declared = c.req.header("content-length");
    if (Number(declared ?? "0") > maxBytes) {
      const body = c.req.raw.body;
      if (body !== null) await cancel(body, "over the size limit");
      return tooLarge();
    }
    if (declared !== undefined) {
      // The HTTP layer holds a body to its declared length: read it whole, natively, into Hono's
      // body cache. Not through `c.req.raw.body` (that getter builds a ReadableStream, a tenth of a
      // small request's cost), nor a reader or a new Request (a fifth).
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), timeoutMs);
      });
      const reading = c.req.arrayBuffer();
      let bytes: ArrayBuffer | "timeout";
      try {
        bytes = await Promise.race([reading, timeout]);
        if (bytes === "timeout") {
          reading.catch(() => undefined);
          return timedOut();
        }
      } catch (error) {
        return goneMidBody(error);
      } finally {
        clearTimeout(timer);
      }
      if (!cacheStrictText(c, bytes)) return notUtf8();
      return await next();
    }
    const body = c.req.raw.body;
    if (body === null) return await next();
    const reader = body.getReader();
    let isTimedOut = false;
    const timer = setTimeout(() => {
      isTimedOut = true;
      cancel(reader, "that timed out");
    }, timeoutMs);
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (isTimedOut) return timedOut();
        if (done) break;
        size += value.byteLength;
        if (size > maxBytes) {
          await cancel(reader, "over the size limit");
          return tooLarge();
        }
        chunks.push(value);
      }
    } catch (error) {
      if (isTimedOut) return timedOut();
      return goneMidBody(error);
    } finally {
      clearTimeout(timer);
    }
    reader.releaseLock();
    const bytes = new Uint8Array(size);
    let offset = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, offset);
      offset += chunk.byteLength;
    }
    // Chunked bodies (no content-length) are rare from TVs: a new Request is fine here.
    c.req.raw = new Request(c.req.raw, { body: bytes });
    if (!cacheStrictText(c, bytes)) return notUtf8();
    return await next();
  };
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decodes a body strictly and keeps the text in Hono's body cache, where `c.req.text()` and
 * `c.req.json()` find it; false when the bytes are not UTF-8. A lenient decoder would turn each
 * invalid byte into U+FFFD, so ids differing only in such bytes would merge into one event.
 */
function cacheStrictText(c: Context, bytes: ArrayBuffer | Uint8Array): boolean {
  let text: string;
  try {
    text = STRICT_UTF8.decode(bytes);
  } catch {
    return false;
  }
  // Hono caches body promises at run time; its type declares the settled value.
  c.req.bodyCache.text = Promise.resolve(text) as unknown as string;
  return true;
}

/** True for a GET or HEAD of `/compliance/incidents`, one incident, or `/compliance/maintenance`. */
function isIncidentRead(c: Context): boolean {
  if (c.req.method !== "GET" && c.req.method !== "HEAD") return false;
  const path = c.req.path;
  return path === "/compliance/incidents" || path.startsWith("/compliance/incidents/") ||
    path === "/compliance/maintenance";
}

/** Methods whose requests carry a body the routes read. */
const BODY_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/**
 * Refuses (415) a request with a body method whose content type is not JSON, so a plain HTML form
 * or a `text/plain` fetch from another site (no CORS preflight) cannot reach a handler. Ingest
 * (`/events*`) negotiates its own types (JSON, NDJSON) with the same answer.
 */
export function requireJsonBody(): MiddlewareHandler {
  return async (c, next) => {
    if (!BODY_METHODS.has(c.req.method) || c.req.path.startsWith("/events")) return await next();
    const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (type !== "application/json") {
      return c.json(
        { error: "Unsupported content type: send application/json", issues: [] },
        415,
      );
    }
    return await next();
  };
}

/**
 * With auth off, refuses (403) a request that names another site in `Origin`: a web page must not
 * drive privacy or review actions of a server it reached through the viewer's browser. Requests
 * without `Origin` (curl, servers, same-origin GETs) and from the server's own origin pass.
 */
export function refuseForeignOrigin(auth: AuthConfig): MiddlewareHandler {
  const isOff = !isAuthEnabled(auth);
  return async (c, next) => {
    const origin = c.req.header("origin");
    if (!isOff || origin === undefined || isOwnOrigin(c, origin)) return await next();
    return c.json({
      error: `Cross-site request refused: Origin "${origin.slice(0, 200)}" is not this server ` +
        "(auth is off; set API_TOKENS to call this API from other sites)",
      issues: [],
    }, 403);
  };
}

function isOwnOrigin(c: Context, origin: string): boolean {
  if (origin === new URL(c.req.url).origin) return true;
  // Behind a proxy the request URL may name the proxy's upstream: compare with the Host header.
  const host = c.req.header("host");
  try {
    return host !== undefined && new URL(origin).host === host;
  } catch {
    return false;
  }
}
