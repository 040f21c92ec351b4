/**
 * The HTTP application: one sub-app per resource mounted under its path, auth per role, and one error
 * handler so nothing a client sends becomes a 500.
 *
 * @module
 */
import { Hono } from "hono";
import type { MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { Kysely } from "kysely";
import type { Appender } from "../actors/log/mod.ts";
import type { Region } from "../actors/region.ts";
import type { Database } from "../db/schema.ts";
import type { OptOut } from "../rules/mod.ts";
import type { Logger } from "../logger.ts";
import { auditRoutes, auditTrail, captureSubject, requestId } from "./audit.ts";
import { type AuthConfig, authenticate, authRoutes, requireRole } from "./auth.ts";
import { complianceRoutes } from "./compliance.ts";
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
  rawEventsRetentionDays?: number;
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
  app.use("/compliance/*", privacy);
  app.use("/privacy/*", privacy);
  app.use("/audit/*", admin);
  app.use("/audit", admin);
  // Admin tokens, or the scrape-only METRICS_TOKEN.
  const metricsAccess = requireMetricsAccess(deps.auth, deps.metricsToken);
  app.use("/metrics/*", metricsAccess);
  app.use("/metrics", metricsAccess);
  // After auth, before every route: no handler reads an unbounded or endless body.
  app.use("*", readBodyWithin(deps.maxBodyBytes, deps.bodyReadTimeoutMs, deps.logger));
  app.use("/privacy/*", captureSubject(deps.logger));
  app.route("/events", eventsRoutes(deps));
  const isEu = (region: string) => isGdprRegion(region, deps.gdprRegions);
  app.route("/stats", statsRoutes(deps.db, isEu));
  app.route("/compliance", complianceRoutes(deps.db, isEu, deps.now));
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
      const reading = c.req.text();
      try {
        if (await Promise.race([reading, timeout]) === "timeout") {
          reading.catch(() => undefined);
          return timedOut();
        }
      } catch (error) {
        return goneMidBody(error);
      } finally {
        clearTimeout(timer);
      }
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
    return await next();
  };
}
