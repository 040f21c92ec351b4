/**
 * Composition root: config -> database (migrated) -> actor system -> Hono app -> `Deno.serve`, and a
 * drain on SIGINT/SIGTERM that stops intake, flushes everything and closes.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Hono } from "hono";
import type { Kysely } from "kysely";
import { type EventLog, MemoryLog } from "./actors/event_log.ts";
import { Region } from "./actors/region.ts";
import { type Config, loadConfig } from "./config.ts";
import { openDatabase } from "./db/client.ts";
import { writeFlush } from "./db/flush.ts";
import { migrateToLatest } from "./db/migrate.ts";
import { loadOptOuts, nextLogPosition } from "./db/queries.ts";
import {
  acquireShards,
  appendToLog,
  lastLogPosition,
  readLog,
  syncLogSequence,
} from "./db/log_store.ts";
import { PostgresLog } from "./actors/postgres_log.ts";
import type { Database } from "./db/schema.ts";
import { createLogger, type Logger } from "./log.ts";
import { createApp } from "./routes/app.ts";
import { isAuthEnabled } from "./routes/auth.ts";
import { IpAnonymizer } from "./routes/ip_anonymizer.ts";

/** A running pipeline without its HTTP listener: what tests and the server share. */
export interface Pipeline {
  app: Hono;
  region: Region;
  log: EventLog;
  db: Kysely<Database>;
  /** Lets wall-clock time in: workers prune, passivate and flush when due. */
  tick(nowMs?: number): void;
  /** Stops intake, flushes everything, stops workers and closes the database. */
  stop(): Promise<void>;
}

/** Options of {@link startPipeline} that are not configuration. */
export interface PipelineOptions {
  /** Module of the shard worker; tests substitute a wrapper that can crash. */
  workerUrl?: URL;
}

/** Opens and migrates the database, starts the workers and builds the app. */
export async function startPipeline(
  config: Config,
  logger: Logger,
  options: PipelineOptions = {},
): Promise<Pipeline> {
  const opened = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    onIdleError: (error) =>
      logger.warn("Idle database connection failed", { error: error.message }),
  });
  const db = opened.db;
  logger.info(`Database: ${opened.kind} at ${opened.location}`);
  try {
    const applied = await migrateToLatest(db);
    if (applied.length > 0) logger.info("Applied migrations", { applied });
    const isLogDurable = config.queue === "postgres";
    if (isLogDurable) await syncLogSequence(db);
    const [optOuts, firstPosition] = await Promise.all([loadOptOuts(db), nextLogPosition(db)]);
    const region = await Region.start({
      ...config,
      writeBatch: (batch) => writeFlush(db, batch),
      firstPosition,
      optOuts,
      isLogDurable,
      workerUrl: options.workerUrl,
      shardStore: {
        acquire: (keys) => acquireShards(db, keys),
        readLog: (after, through, limit) => readLog(db, after, through, limit),
        lastPosition: () => lastLogPosition(db),
      },
      logger,
    });
    const log: EventLog = isLogDurable
      ? new PostgresLog(region, {
        append: (rows) => appendToLog(db, rows),
        maxQueuedEvents: config.maxPendingEvents,
        logger,
      })
      : new MemoryLog(region);
    const app = createApp({
      db,
      region,
      log,
      anonymizer: new IpAnonymizer(config.ipHashSecret),
      auth: config,
      maxBodyBytes: config.maxBodyBytes,
      maxBatchEvents: config.maxBatchEvents,
      maxFutureSkewMs: config.maxFutureSkewMs,
      logger,
    });
    let isStopped = false;
    return {
      app,
      region,
      log,
      db,
      tick: (nowMs = Date.now()) => region.tick(nowMs),
      stop: async () => {
        if (isStopped) return;
        isStopped = true;
        if (log instanceof PostgresLog) await log.idle();
        const errors = await region.drain();
        if (errors.length > 0) {
          logger.error("Drain could not flush everything; unflushed events are lost", { errors });
        }
        await db.destroy();
      },
    };
  } catch (error) {
    await db.destroy();
    throw error;
  }
}

/** Runs the server until SIGINT or SIGTERM. */
async function serve(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { port: { type: "string" }, "node-id": { type: "string" } },
  });
  if (values.port !== undefined) Deno.env.set("PORT", values.port);
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  if (!isAuthEnabled(config)) {
    logger.warn(
      "Auth is OFF: anyone can send events and read compliance data. Set INGEST_TOKENS and READ_TOKENS",
    );
  }
  if (config.isIpHashSecretGenerated) {
    logger.warn(
      "IP_HASH_SECRET is not set: using a random key for this run, so IP hashes change on restart",
    );
  }
  const pipeline = await startPipeline(config, logger);
  const ticker = setInterval(() => pipeline.tick(), config.flushIntervalMs);
  const server = Deno.serve({
    port: config.port,
    hostname: config.hostname,
    onListen: ({ hostname, port }) =>
      logger.info(`Listening on http://${hostname}:${port}`, {
        queue: config.queue,
        workers: config.workers,
        shards: config.shards,
        flush_interval_ms: config.flushIntervalMs,
        node_id: values["node-id"] ?? null,
      }),
  }, pipeline.app.fetch);

  let isShuttingDown = false;
  const shutdown = async (signal: string) => {
    if (isShuttingDown) return;
    isShuttingDown = true;
    logger.info(`Received ${signal}: draining (new events get 503), flushing, then exiting`);
    clearInterval(ticker);
    await pipeline.stop();
    await server.shutdown();
    logger.info("Stopped cleanly");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => void shutdown("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => void shutdown("SIGTERM"));
  await server.finished;
}

if (import.meta.main) {
  try {
    await serve();
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    if (error instanceof Error && error.cause !== undefined) console.error("Cause:", error.cause);
    Deno.exit(1);
  }
}
