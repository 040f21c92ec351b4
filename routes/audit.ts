/**
 * Audit trail: a request id on every request and response, one `audit_log` row per access to
 * `/compliance/*`, `/privacy/*` and `/audit`, and per refused request (401/403) anywhere. Rows hold
 * who (token name and role, never the secret or any header), what (method, path, query, status,
 * subject user) and from where (client address). Refusals within one UTC minute fold into one row per
 * route pattern (never the raw path), status, actor and source, by an upsert on a fold key, so a
 * flood of bad tokens, even to ever-different paths, grows a counter instead of the table.
 * `GET /audit` (admin) pages through the rows newest first; {@link pruneAuditLog} enforces retention.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { Hono } from "hono";
import { matchedRoutes } from "hono/route";
import type { Context, MiddlewareHandler } from "hono";
import type { Insertable, Kysely } from "kysely";
import { z } from "zod";
import type { Logger } from "../logger.ts";
import type { AuditLogTable, Database } from "../db/schema.ts";
import { countParam, issuesOf, quote } from "./query_params.ts";
import { END_MS, instantParam } from "./time_range.ts";

declare module "hono" {
  interface ContextVariableMap {
    /** Set by {@link requestId} for every request. */
    requestId: string;
    /** The `user_id` of a privacy request body, set by {@link captureSubject}. */
    auditSubject: string | undefined;
  }
}

/** Longest request id taken from a client; longer ones are cut. */
export const MAX_REQUEST_ID_CHARS = 128;
/** Longest path or query kept in a row; longer ones are cut. */
const MAX_TEXT_CHARS = 256;
/** Query parameters whose values never reach a row, should a client put a credential there. */
const SECRET_PARAM = /token|secret|password|passwd|key|auth|signature/i;
const MINUTE_MS = 60_000;

/** Keeps at most 128 characters of `[A-Za-z0-9._-]` from a client's request id; `undefined` if none
 * are left, so the caller makes one up. */
export function sanitizeRequestId(raw: string | undefined): string | undefined {
  const kept = (raw ?? "").replace(/[^A-Za-z0-9._-]/g, "").slice(0, MAX_REQUEST_ID_CHARS);
  return kept.length === 0 ? undefined : kept;
}

/** Middleware giving every request an id (the client's `X-Request-Id` when usable) and echoing it
 * in the response's `X-Request-Id`. */
export function requestId(): MiddlewareHandler {
  return async (c, next) => {
    const id = sanitizeRequestId(c.req.header("x-request-id")) ?? crypto.randomUUID();
    c.set("requestId", id);
    await next();
    c.res.headers.set("X-Request-Id", id);
  };
}

/** True for the paths whose every request is audited. */
export function isAuditedPath(path: string): boolean {
  return ["/compliance", "/privacy", "/audit"].some((p) => path === p || path.startsWith(`${p}/`));
}

/** Middleware writing the audit row of a request once it is answered; place it before auth so it
 * sees refusals, and {@link captureSubject} after the body limit so it sees privacy subjects. */
export function auditTrail(
  db: Kysely<Database>,
  logger: Logger,
  now: () => number = Date.now,
  privacy: AuditPrivacy = {},
): MiddlewareHandler {
  const subjectFor = privacy.subjectFor ?? ((userId: string) => userId);
  const sourceFor = privacy.sourceFor ?? ((address: string) => address);
  return async (c, next) => {
    const atMs = now();
    await next();
    const status = c.res.status;
    const isRefused = status === 401 || status === 403;
    if (!isRefused && !isAuditedPath(c.req.path)) return;
    const principal = c.get("principal");
    // A refusal stores its route pattern, so its row never holds a path the client chose.
    const path = isRefused ? storable(routePatternOf(c)) : storable(c.req.path);
    const row = {
      at: new Date(atMs).toISOString(),
      request_id: c.get("requestId") ?? crypto.randomUUID(),
      actor_name: principal?.name ?? "unauthenticated",
      actor_role: principal?.role ?? "none",
      method: c.req.method,
      path,
      query: redactedQuery(c.req.url),
      status,
      subject_user_id: null as string | null,
      source: sourceOf(c, sourceFor),
      fold_key: null as string | null,
    };
    const subject = subjectOf(c);
    if (subject !== null) {
      // An erased user is named by pseudonym, in the subject and wherever the URL held the id.
      const shown = subjectFor(subject);
      row.subject_user_id = shown;
      if (shown !== subject) {
        if (!isRefused) {
          row.path = storable(
            row.path.replaceAll(subject, shown).replaceAll(encodeURIComponent(subject), shown),
          );
        }
        row.query = storable(row.query.replaceAll(encodeURIComponent(subject), shown));
      }
    }
    if (isRefused) {
      const minute = Math.floor(atMs / MINUTE_MS);
      const key = [minute, row.source, row.path, status, row.actor_name, row.actor_role];
      row.fold_key = createHash("sha256").update(JSON.stringify(key)).digest("hex");
    }
    try {
      await insertAuditRow(db, row);
    } catch (error) {
      logger.error("Cannot write audit row: the database refused it", {
        request_id: row.request_id,
        method: row.method,
        path: row.path,
        status,
        error: error instanceof Error ? error.message : String(error),
      });
    }
  };
}

/** Inserts one audit row, or adds one to the count of the row with the same fold key. */
export async function insertAuditRow(
  db: Kysely<Database>,
  row: Omit<Insertable<AuditLogTable>, "count">,
): Promise<void> {
  await db.insertInto("audit_log").values(row)
    .onConflict((oc) =>
      oc.column("fold_key").doUpdateSet((eb) => ({ count: eb("audit_log.count", "+", 1) }))
    )
    .execute();
}

/**
 * Middleware reading `user_id` from a JSON body into the context for the audit row. Runs after
 * `readBodyWithin`, so the body is already bounded and buffered in Hono's body cache, which the
 * handler reads again.
 */
export function captureSubject(logger: Logger): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method === "POST" && c.req.raw.body !== null) {
      const text = await c.req.text();
      try {
        const body: unknown = JSON.parse(text);
        const userId = (body as { user_id?: unknown } | null)?.user_id;
        if (typeof userId === "string") c.set("auditSubject", storable(userId, 256));
      } catch (error) {
        // The handler answers the malformed body with 400; the audit row just has no subject.
        logger.debug("Cannot read audit subject: the body is not JSON", {
          path: c.req.path,
          error: (error as Error).message,
        });
      }
    }
    await next();
  };
}

const NAME = /^[A-Za-z0-9._-]{1,64}$/;
/** Largest PostgreSQL bigint, the type of an audit row's id. */
const MAX_BIGINT = 9_223_372_036_854_775_807n;

/** The refusal of a cursor that no earlier page gave. */
const cursorRefusal = (input: unknown) =>
  `Invalid cursor: must be a next_cursor value from a previous page, received ${
    quote(String(input))
  }`;

/** True for a cursor whose time is within the years 0001-9999 and whose id fits a bigint. */
function isCursorInRange(cursor: string): boolean {
  const [atMs, id] = cursor.split("-");
  return Number(atMs) < END_MS && BigInt(id) <= MAX_BIGINT;
}

/** Query of `GET /audit`. */
export const AUDIT_QUERY = z.strictObject({
  actor: z.string().regex(NAME, {
    error: (issue) =>
      `Invalid actor: expected a token name of 1-64 letters, digits, _ . or -, received ${
        quote(String(issue.input))
      }`,
  }).optional(),
  from: instantParam("from").optional(),
  to: instantParam("to").optional(),
  limit: countParam("limit", 1, 1000).default(100),
  cursor: z.string().regex(/^\d{1,15}-\d{1,19}$/, {
    abort: true,
    error: (issue) => cursorRefusal(issue.input),
  }).refine(isCursorInRange, { error: (issue) => cursorRefusal(issue.input) }).optional(),
});

/** `GET /`: audit rows newest first, filtered by actor and time, paged by a keyset cursor. Mount
 * under `/audit` behind the admin role. */
export function auditRoutes(db: Kysely<Database>): Hono {
  const app = new Hono();
  app.get("/", async (c) => {
    const parsed = AUDIT_QUERY.safeParse(c.req.query());
    if (!parsed.success) {
      return c.json(
        { error: "Invalid audit query: see issues", issues: issuesOf(parsed.error) },
        400,
      );
    }
    const { actor, from, to, limit, cursor } = parsed.data;
    let query = db.selectFrom("audit_log").select([
      "id",
      "at",
      "request_id",
      "actor_name",
      "actor_role",
      "method",
      "path",
      "query",
      "status",
      "subject_user_id",
      "source",
      "count",
    ]);
    if (actor !== undefined) query = query.where("actor_name", "=", actor);
    if (from !== undefined) query = query.where("at", ">=", new Date(from).toISOString());
    if (to !== undefined) query = query.where("at", "<", new Date(to).toISOString());
    if (cursor !== undefined) {
      const [atMs, id] = cursor.split("-");
      query = query.where((eb) =>
        eb(eb.refTuple("at", "id"), "<", eb.tuple(new Date(Number(atMs)).toISOString(), id))
      );
    }
    const rows = await query.orderBy("at", "desc").orderBy("id", "desc").limit(limit + 1)
      .execute();
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return c.json({
      entries: page.map((r) => ({
        ...r,
        id: Number(r.id),
        at: new Date(r.at).toISOString(),
        count: Number(r.count),
      })),
      next_cursor: rows.length > limit ? `${new Date(last.at).getTime()}-${String(last.id)}` : null,
    });
  });
  return app;
}

/** Deletes audit rows older than `beforeMs`, `batchSize` rows per statement and at most
 * `maxBatches` statements per call, so one call never holds long locks; returns the rows deleted. */
export async function pruneAuditLog(
  db: Kysely<Database>,
  beforeMs: number,
  batchSize = 1000,
  maxBatches = 100,
): Promise<number> {
  const before = new Date(beforeMs).toISOString();
  let deleted = 0;
  for (let i = 0; i < maxBatches; i++) {
    const result = await db.deleteFrom("audit_log")
      .where(
        "id",
        "in",
        (eb) =>
          eb.selectFrom("audit_log").select("id").where("at", "<", before).orderBy("at")
            .limit(batchSize),
      )
      .executeTakeFirst();
    const count = Number(result.numDeletedRows);
    deleted += count;
    if (count < batchSize) break;
  }
  return deleted;
}

/** Runs {@link pruneAuditLog} now and then hourly with a `retentionDays` cutoff; returns the stop. */
export function startAuditPruner(
  db: Kysely<Database>,
  retentionDays: number,
  logger: Logger,
): () => void {
  const prune = () =>
    pruneAuditLog(db, Date.now() - retentionDays * 86_400_000)
      .then((deleted) => {
        if (deleted > 0) {
          logger.info("Pruned old audit rows", { deleted, retention_days: retentionDays });
        }
      })
      .catch((error) =>
        logger.warn("Cannot prune audit rows: will retry in an hour", {
          error: error instanceof Error ? error.message : String(error),
        })
      );
  void prune();
  const timer = setInterval(prune, 3_600_000);
  return () => clearInterval(timer);
}

function subjectOf(c: Context): string | null {
  const fromQuery = c.req.query("user_id");
  if (fromQuery !== undefined && fromQuery !== "") return storable(fromQuery, 256);
  return c.get("auditSubject") ?? null;
}

/** The client's address from `Deno.serve`'s connection info, or "unknown" (tests, other servers). */
function sourceOf(c: Context, sourceFor: (address: string) => string): string {
  const env = c.env as { remoteAddr?: { hostname?: unknown } } | undefined;
  const hostname = env?.remoteAddr?.hostname;
  return typeof hostname === "string" && hostname !== ""
    ? storable(sourceFor(hostname), 256)
    : "unknown";
}

/** How the audit trail keeps personal data out of its rows. */
export interface AuditPrivacy {
  /** The id to store for a subject user (the pseudonym of an erased user). */
  subjectFor?: (userId: string) => string;
  /** What to store for the client address (never the raw address: its network prefix). */
  sourceFor?: (address: string) => string;
}

/**
 * The route pattern a request matched, for folding refusals: the longest concrete pattern (no `*`)
 * such as `/compliance/flags/:id`; else, as on a path no route serves, the longest wildcard pattern
 * such as `/compliance/*`, or `/*`. Always a pattern the app registered, never the client's path.
 */
function routePatternOf(c: Context): string {
  let concrete: string | undefined;
  let wildcard = "/*";
  for (const { path } of matchedRoutes(c)) {
    if (path.includes("*")) {
      if (path.length > wildcard.length) wildcard = path;
    } else if (concrete === undefined || path.length >= concrete.length) {
      concrete = path;
    }
  }
  return concrete ?? wildcard;
}

/** Text PostgreSQL can store (no NUL, no lone surrogate: a decoded path may hold either), cut. */
function storable(text: string, maxChars = MAX_TEXT_CHARS): string {
  return text.toWellFormed().replaceAll("\u0000", "\uFFFD").slice(0, maxChars);
}

function redactedQuery(url: string): string {
  const params = new URL(url).searchParams;
  for (const name of new Set(params.keys())) {
    if (SECRET_PARAM.test(name)) params.set(name, "[redacted]");
  }
  return params.toString().slice(0, MAX_TEXT_CHARS);
}
