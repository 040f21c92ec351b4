/**
 * `GET /healthz` (the process answers) and `GET /readyz` (database reachable, workers alive, flushes
 * succeeding, intake open), for load balancers and orchestrators.
 *
 * @module
 */
import { Hono } from "hono";
import type { Kysely } from "kysely";
import type { Region } from "../actors/region.ts";
import { pingDatabase } from "../db/queries.ts";
import type { Database } from "../db/schema.ts";

/** The health sub-app. */
export function healthRoutes(
  db: Kysely<Database>,
  region: Region,
  queue: string,
  extra?: () => { problems: string[]; details: Record<string, unknown> },
): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const problems: string[] = [];
    try {
      await withTimeout(pingDatabase(db), 2_000);
    } catch (error) {
      problems.push(`database unreachable: ${(error as Error).message}`);
    }
    const health = region.health();
    if (health.isDraining) problems.push("draining");
    for (const w of health.workers) {
      if (!w.isAlive) problems.push(`worker ${w.index} is not alive`);
      if (w.restartFailures > 0) {
        problems.push(`worker ${w.index} restart failed ${w.restartFailures} times, retrying`);
      }
      if (w.isFlushFailing) problems.push(`worker ${w.index} flush failing: ${w.lastFlushError}`);
    }
    const more = extra?.();
    problems.push(...(more?.problems ?? []));
    const body = {
      status: problems.length === 0 ? "ready" : "degraded",
      ...more?.details,
      problems,
      queue,
      watermark: health.watermarkMs === 0 ? null : new Date(health.watermarkMs).toISOString(),
      workers: health.workers.map((w) => ({
        index: w.index,
        alive: w.isAlive,
        batches_in_flight: w.inFlight,
        pending_events: w.pendingEvents,
        entities: w.entities,
        // MB, one decimal.
        heap_used_mb: Math.round(w.heapUsedBytes / 2 ** 20 * 10) / 10,
      })),
    };
    return c.json(body, problems.length === 0 ? 200 : 503);
  });
  return app;
}

async function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
