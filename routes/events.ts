/**
 * Ingest: `POST /events` (one event) and `POST /events/batch` (JSON array or NDJSON). Validates at the
 * boundary, answers 202 only once the log has accepted the events (naming the unknown fields it dropped),
 * and 503 under backpressure. The body size and read time are bounded by the app (`readBodyWithin`).
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { AppendError, type EventLog } from "../actors/event_log.ts";
import type { IncomingEvent } from "../actors/region.ts";
import { type Issue, validateEvent, type ValidationContext } from "./event_schema.ts";
import type { IpAnonymizer } from "./ip_anonymizer.ts";

/** What the ingest routes need. */
export interface EventsDeps {
  log: EventLog;
  anonymizer: IpAnonymizer;
  maxBatchEvents: number;
  maxFutureSkewMs: number;
  maxEventAgeMs: number;
  gdprRegions: readonly string[];
  isStrictSchema: boolean;
  /** `extra_metadata` keys that are kept; the others are dropped and named in the 202. */
  metadataKeys: readonly string[];
  now?: () => number;
}

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
  });

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
    return c.json(
      { accepted: 1, event_id: result.event.eventId, ignored_fields: result.ignoredFields },
      202,
    );
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
    });
    if (accepted.length === 0) {
      return c.json({ error: "Invalid batch: no event was valid", issues: [], rejected }, 422);
    }
    const failed = await appendOr503(c, deps.log, accepted);
    if (failed !== null) return failed;
    return c.json({ accepted: accepted.length, rejected, ignored }, 202);
  });

  return app;
}

function refuse(c: Context, log: EventLog): Response | null {
  const refusal = log.refusal();
  if (refusal === null) return null;
  const messages = {
    draining: "Service shutting down: retry against another instance",
    busy: "Service busy: retry after the indicated delay",
    degraded: "Service degraded: the database is unavailable and buffers are full",
    recovering: "Service recovering: replaying the log after a worker restart",
  };
  c.header("Retry-After", refusal === "draining" ? "5" : "1");
  return c.json({ error: messages[refusal], issues: [] }, 503);
}

/** Appends, or answers 503 when the log could not make the events durable (nothing was acknowledged). */
async function appendOr503(
  c: Context,
  log: EventLog,
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
