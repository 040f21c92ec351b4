/**
 * `POST /privacy/requests`: records a do-not-track or deletion request and tells the user's actor (via
 * the log where several nodes share the work), so
 * every later event from that user is flagged by the retention rule. The body is bounded in size and read
 * time by the app (`readBodyWithin`), like every route's.
 *
 * @module
 */
import { Hono } from "hono";
import type { Kysely } from "kysely";
import { z } from "zod";
import { insertPrivacyRequest } from "../db/queries.ts";
import type { Database } from "../db/schema.ts";
import type { OptOut } from "../rules/mod.ts";
import { ID_SCHEMA } from "./event_schema.ts";

const REQUEST = z.strictObject({
  user_id: ID_SCHEMA,
  type: z.enum(["do_not_track", "deletion"]),
});

/** The privacy sub-app. */
export function privacyRoutes(
  db: Kysely<Database>,
  recordOptOut: (userId: string, optOut: OptOut) => Promise<void> | void,
  now = Date.now,
): Hono {
  const app = new Hono();
  app.post("/requests", async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch (error) {
      return c.json({ error: `Malformed JSON: ${(error as Error).message}`, issues: [] }, 400);
    }
    const parsed = REQUEST.safeParse(body);
    if (!parsed.success) {
      return c.json({
        error: "Invalid privacy request: see issues",
        issues: parsed.error.issues.map((i) => ({
          path: i.path.join(".") || "(root)",
          message: i.message,
        })),
      }, 422);
    }
    const { user_id: userId, type } = parsed.data;
    const requestedAtMs = now();
    // Durable first, then in memory: a restart reloads it from the table.
    const isNew = await insertPrivacyRequest(db, userId, type, requestedAtMs);
    await recordOptOut(userId, { type, sinceMs: requestedAtMs, source: "api" });
    return c.json(
      { user_id: userId, type, status: isNew ? "recorded" : "already_recorded" },
      isNew ? 201 : 200,
    );
  });
  return app;
}
