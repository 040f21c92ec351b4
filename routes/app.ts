/**
 * The HTTP application: one sub-app per resource mounted under its path, auth per role, and one error
 * handler so nothing a client sends becomes a 500.
 *
 * @module
 */
import { Hono } from "hono";
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
  maxBatchEvents: number;
  maxFutureSkewMs: number;
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
  app.route("/events", eventsRoutes(deps));
  app.route("/stats", statsRoutes(deps.db));
  app.route("/compliance", complianceRoutes(deps.db));
  app.route("/privacy", privacyRoutes(deps.db, deps.recordOptOut, deps.now));
  app.route("/", healthRoutes(deps.db, deps.region, deps.log.kind, deps.readiness));
  app.notFound((c) => c.json({ error: `Not found: ${c.req.method} ${c.req.path}` }, 404));
  app.onError((error, c) => {
    if (error instanceof HTTPException) {
      return c.json({ error: error.message || "Request rejected" }, error.status);
    }
    deps.logger.error("Unhandled error while serving request", {
      method: c.req.method,
      path: c.req.path,
      error: error instanceof Error ? error.message : String(error),
    });
    return c.json({ error: "Internal error: the request was not processed; retry later" }, 500);
  });
  return app;
}
