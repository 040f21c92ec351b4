/**
 * Ingest: `POST /events` (one event) and `POST /events/batch` (JSON array or NDJSON). Validates at the
 * boundary, answers 202 only once the log has accepted the events (naming the unknown fields it dropped),
 * and 503 under backpressure. The body size and read time are bounded by the app (`readBodyWithin`).
 * A `Sec-GPC: 1` header (Global Privacy Control) records an opt-out of sale and sharing for the user
 * of each accepted event, once per user.
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { Kysely } from "kysely";
import type { ErasedUsers } from "../actors/erased_users.ts";
import { type Appender, AppendError } from "../actors/log/log.ts";
import { RecentIds } from "../actors/recent_ids.ts";
import type { IncomingEvent } from "../actors/region.ts";
import { recordGpcOptOuts } from "../db/privacy_store.ts";
import type { Database } from "../db/schema.ts";
import type { Logger } from "../logger.ts";
import { type Issue, validateEvent, type ValidationContext } from "./event_schema.ts";
import type { IpAnonymizer } from "./ip_anonymizer.ts";
import type { ConsentDecoder } from "./consent_decoder.ts";

/** What the ingest routes need. */
export interface EventsDeps {
  log: Appender;
  anonymizer: IpAnonymizer;
  maxBatchEvents: number;
  maxFutureSkewMs: number;
  maxEventAgeMs: number;
  gdprRegions: readonly string[];
  isStrictSchema: boolean;
  /** `extra_metadata` keys that are kept; the others are dropped and named in the 202. */
  metadataKeys: readonly string[];
  /** Decodes `consent` signals; one per server, so its cache serves every request. */
  consentDecoder: ConsentDecoder;
  /** The purposes the processing needs (`CONSENT_PURPOSES`), as a mask of TCF purpose ids. */
  consentPurposeMask: number;
  /** Where Global Privacy Control opt-outs are recorded. */
  db: Kysely<Database>;
  /** Erased users: their opt-outs are recorded under their pseudonym. */
  erased: ErasedUsers;
  logger: Logger;
  now?: () => number;
}

/** Users whose GPC opt-out this process has seen on record: beyond it, the database dedupes. */
const GPC_REMEMBERED_USERS = 100_000;

/** A batch item that failed validation. */
interface Rejected {
  index: number;
  issues: Issue[];
}

/** An accepted batch item whose unknown top-level fields were dropped. */
interface Ignored {
  index: number;
  fields: string[];
}

/** The ingest sub-app. */
export function eventsRoutes(deps: EventsDeps): Hono {
  const app = new Hono();
  const now = deps.now ?? Date.now;
  const metadataKeys: ReadonlySet<string> = new Set(deps.metadataKeys);
  const context = (): ValidationContext => ({
    nowMs: now(),
    maxFutureSkewMs: deps.maxFutureSkewMs,
    maxEventAgeMs: deps.maxEventAgeMs,
    gdprRegions: deps.gdprRegions,
    isStrictSchema: deps.isStrictSchema,
    metadataKeys,
    anonymizer: deps.anonymizer,
    consentDecoder: deps.consentDecoder,
    consentPurposeMask: deps.consentPurposeMask,
  });
  const gpcRecorded = new RecentIds(GPC_REMEMBERED_USERS);

  /**
   * Records the GPC opt-out of the users of appended events not yet seen on record, in one insert.
   * A failure is logged, not answered: the events are stored, and the next signal retries.
   */
  const recordGpc = async (c: Context, events: IncomingEvent[]): Promise<{ gpc?: true }> => {
    if (c.req.header("sec-gpc")?.trim() !== "1") return {};
    const users = new Set<string>();
    for (const userId of new Set(events.map((e) => e.userId))) {
      // An erased user's events are stored under the pseudonym: so is the opt-out.
      const recordedAs = deps.erased.pseudonymFor(userId) ?? userId;
      if (!gpcRecorded.has(recordedAs)) users.add(recordedAs);
    }
    if (users.size === 0) return { gpc: true };
    try {
      await recordGpcOptOuts(deps.db, [...users], now());
      const atMs = now();
      for (const userId of users) gpcRecorded.add(userId, atMs);
    } catch (error) {
      deps.logger.error("Cannot record Global Privacy Control opt-outs: the next signal retries", {
        request_id: c.get("requestId"),
        path: c.req.path,
        users: users.size,
        error: error instanceof Error ? error.message : String(error),
      });
    }
    return { gpc: true };
  };

  app.post("/", async (c) => {
    const refused = refuse(c, deps.log);
    if (refused !== null) return refused;
    if (!isMediaType(c, ["application/json"])) return unsupported(c, "application/json");
    const decoded = await decodeJson(c);
    if (!decoded.ok) return c.json({ error: decoded.error, issues: [] }, 400);
    const result = validateEvent(decoded.value, context());
    if (!result.ok) {
      return c.json({ error: "Invalid event: see issues", issues: result.issues }, 422);
    }
    const failed = await appendOr503(c, deps.log, [result.event]);
    if (failed !== null) return failed;
    const gpc = await recordGpc(c, [result.event]);
    return c.json({
      accepted: 1,
      event_id: result.event.eventId,
      ignored_fields: result.ignoredFields,
      ...(result.consentNotes.length === 0 ? {} : { consent_notes: result.consentNotes }),
      ...gpc,
    }, 202);
  });

  app.post("/batch", async (c) => {
    const refused = refuse(c, deps.log);
    if (refused !== null) return refused;
    const isNdjson = isMediaType(c, ["application/x-ndjson", "application/ndjson"]);
    if (!isNdjson && !isMediaType(c, ["application/json"])) {
      return unsupported(c, "application/json or application/x-ndjson");
    }
    const items = isNdjson ? await decodeNdjson(c) : await decodeJsonArray(c);
    if (!items.ok) return c.json({ error: items.error, issues: [] }, 400);
    if (items.values.length === 0) {
      return c.json({ error: "Empty batch: send at least one event", issues: [] }, 422);
    }
    if (items.values.length > deps.maxBatchEvents) {
      return c.json({
        error:
          `Batch too large: at most ${deps.maxBatchEvents} events, received ${items.values.length}`,
        issues: [],
      }, 413);
    }
    const ctx = context();
    const accepted: IncomingEvent[] = [];
    const rejected: Rejected[] = [];
    const ignored: Ignored[] = [];
    const consentNotes: Array<{ index: number; notes: string[] }> = [];
    items.values.forEach((value, index) => {
      if (value instanceof LineError) {
        rejected.push({ index, issues: [{ path: "(root)", message: value.message }] });
        return;
      }
      const result = validateEvent(value, ctx);
      if (!result.ok) {
        rejected.push({ index, issues: result.issues });
        return;
      }
      accepted.push(result.event);
      if (result.ignoredFields.length > 0) ignored.push({ index, fields: result.ignoredFields });
      if (result.consentNotes.length > 0) consentNotes.push({ index, notes: result.consentNotes });
    });
    if (accepted.length === 0) {
      return c.json({ error: "Invalid batch: no event was valid", issues: [], rejected }, 422);
    }
    const failed = await appendOr503(c, deps.log, accepted);
    if (failed !== null) return failed;
    const gpc = await recordGpc(c, accepted);
    return c.json({
      accepted: accepted.length,
      rejected,
      ignored,
      ...(consentNotes.length === 0 ? {} : { consent_notes: consentNotes }),
      ...gpc,
    }, 202);
  });

  return app;
}

function refuse(c: Context, log: Appender): Response | null {
  const refusal = log.refusal();
  if (refusal === null) return null;
  const messages = {
    draining: "Service shutting down: retry against another instance",
    busy: "Service busy: retry after the indicated delay",
    degraded: "Service degraded: the database is unavailable and buffers are full",
    recovering: "Service recovering: replaying the log after a worker restart",
    log_unavailable: "Service reconnecting to its log (Redis): retry after the indicated delay",
  };
  c.header("Retry-After", refusal === "draining" ? "5" : "1");
  return c.json({ error: messages[refusal], issues: [] }, 503);
}

/** Appends, or answers 503 when the log could not make the events durable (nothing was acknowledged). */
async function appendOr503(
  c: Context,
  log: Appender,
  events: IncomingEvent[],
): Promise<Response | null> {
  try {
    await log.append(events);
    return null;
  } catch (error) {
    if (!(error instanceof AppendError)) throw error;
    c.header("Retry-After", "1");
    return c.json({ error: `${error.message}: retry later`, issues: [] }, 503);
  }
}

function isMediaType(c: Context, accepted: string[]): boolean {
  const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
  return accepted.includes(type);
}

function unsupported(c: Context, expected: string): Response {
  return c.json({ error: `Unsupported content type: send ${expected}`, issues: [] }, 415);
}

type Decoded = { ok: true; value: unknown } | { ok: false; error: string };

async function decodeJson(c: Context): Promise<Decoded> {
  const text = await c.req.text();
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, error: `Malformed JSON: ${(error as Error).message}` };
  }
}

/** An NDJSON line that is not valid JSON; rejected on its own, the rest of the batch goes on. */
class LineError {
  constructor(readonly message: string) {}
}

type DecodedItems = { ok: true; values: unknown[] } | { ok: false; error: string };

async function decodeJsonArray(c: Context): Promise<DecodedItems> {
  const decoded = await decodeJson(c);
  if (!decoded.ok) return decoded;
  if (!Array.isArray(decoded.value)) {
    return { ok: false, error: "Malformed batch: expected a JSON array of events" };
  }
  return { ok: true, values: decoded.value };
}

async function decodeNdjson(c: Context): Promise<DecodedItems> {
  const lines = (await c.req.text()).split("\n").filter((line) => line.trim() !== "");
  return {
    ok: true,
    values: lines.map((line, i) => {
      try {
        return JSON.parse(line);
      } catch (error) {
        return new LineError(`Malformed JSON on line ${i + 1}: ${(error as Error).message}`);
      }
    }),
  };
}
