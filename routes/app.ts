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
import type { EventLog } from "../actors/event_log.ts";
import type { Region } from "../actors/region.ts";
import type { Database } from "../db/schema.ts";
import type { OptOut } from "../rules/mod.ts";
import type { Logger } from "../log.ts";
import { type AuthConfig, requireRole } from "./auth.ts";
import { complianceRoutes } from "./compliance.ts";
import { eventsRoutes } from "./events.ts";
import { isGdprRegion } from "./gdpr_regions.ts";
import { healthRoutes } from "./health.ts";
import type { IpAnonymizer } from "./ip_anonymizer.ts";
import { privacyRoutes } from "./privacy.ts";
import { statsRoutes } from "./stats.ts";

/** Everything the routes need. */
export interface AppDeps {
  db: Kysely<Database>;
  region: Region;
  log: EventLog;
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
  logger: Logger;
  /** Delivers a privacy request to the user's actor (directly, or through the log). */
  recordOptOut: (userId: string, optOut: OptOut) => Promise<void> | void;
  /** Extra readiness problems and details (cluster membership). */
  readiness?: () => { problems: string[]; details: Record<string, unknown> };
  now?: () => number;
}

/** Builds the application; test it with `app.request()`, serve it with `Deno.serve(app.fetch)`. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const ingest = requireRole("ingest", deps.auth);
  const read = requireRole("read", deps.auth);
  app.use("/events/*", ingest);
  app.use("/events", ingest);
  app.use("/stats/*", read);
  app.use("/compliance/*", read);
  app.use("/privacy/*", read);
  // After auth, before every route: no handler reads an unbounded or endless body.
  app.use("*", readBodyWithin(deps.maxBodyBytes, deps.bodyReadTimeoutMs, deps.logger));
  app.route("/events", eventsRoutes(deps));
  const isEu = (region: string) => isGdprRegion(region, deps.gdprRegions);
  app.route("/stats", statsRoutes(deps.db, isEu));
  app.route("/compliance", complianceRoutes(deps.db, isEu));
  app.route("/privacy", privacyRoutes(deps.db, deps.recordOptOut, deps.now));
  app.route("/", healthRoutes(deps.db, deps.region, deps.log.kind, deps.readiness));
  app.notFound((c) =>
    c.json({ error: `Not found: ${c.req.method} ${c.req.path}`, issues: [] }, 404)
  );
  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      return c.json({ error: error.message || "Request rejected", issues: [] }, error.status);
    }
    deps.logger.error("Unhandled error while serving request", {
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
    const body = c.req.raw.body;
    if (body === null) return await next();
    const tooLarge = () =>
      c.json({ error: `Body too large: the limit is ${maxBytes} bytes`, issues: [] }, 413);
    const timedOut = () =>
      c.json({
        error: `Request timeout: the body did not arrive within ${timeoutMs} ms`,
        issues: [],
      }, 408);
    const cancel = (stream: { cancel(): Promise<void> }, why: string) =>
      stream.cancel().catch((error) =>
        logger.debug(`Cannot cancel a request body ${why}`, { error: String(error) })
      );
    if (Number(c.req.header("content-length") ?? "0") > maxBytes) {
      await cancel(body, "over the size limit");
      return tooLarge();
    }
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
      logger.debug("Cannot read request body: the client went away mid-body", {
        method: c.req.method,
        path: c.req.path,
        error: error instanceof Error ? error.message : String(error),
      });
      return c.json({ error: "Cannot read body: the connection closed mid-body", issues: [] }, 400);
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
    c.req.raw = new Request(c.req.raw, { body: bytes });
    return await next();
  };
}
