/**
 * Composition root: config -> database (migrated) -> actor system -> Hono app -> `Deno.serve`, and a
 * drain on SIGINT/SIGTERM that stops intake, flushes everything and closes.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Hono } from "hono";
import type { Kysely } from "kysely";
import { type EventLog, logTraits, openLog } from "./actors/log/mod.ts";
import { Region } from "./actors/region.ts";
import { type Config, loadConfig } from "./config.ts";
import { lockLogWriter, openDatabase, type WriterLock } from "./db/client.ts";
import { ensureDaysAhead } from "./db/partitions.ts";
import { writeFlush } from "./db/flush.ts";
import { migrateToLatest } from "./db/migrate.ts";
import { startRetentionPruner } from "./db/retention.ts";
import { loadOptOuts, nextLogPosition } from "./db/queries.ts";
import { acquireShards, lastLogPosition, readLog, syncLogSequence } from "./db/log_store.ts";
import type { Database } from "./db/schema.ts";
import { createLogger, type Logger } from "./logger.ts";
import { createApp } from "./routes/app.ts";
import { ErasedUsers, ErasingLog } from "./actors/erased_users.ts";
import { Eraser } from "./actors/erasure.ts";
import {
  loadErasedHashes,
  overdueRequestCount,
  pseudonymKey,
  requestCountsByStatus,
} from "./db/privacy_store.ts";
import { pendingAlertCount } from "./db/alert_outbox.ts";
import { pendingIncidentAlertCount } from "./db/incident_outbox.ts";
import { LEVEL_RANK, type OptOut } from "./rules/mod.ts";
import { AlertSender } from "./actors/alert_sender.ts";
import { QoeChecker } from "./actors/qoe_checker.ts";
import { AnomalyDetector } from "./actors/anomaly_detector.ts";

/** How often the anomaly detector looks for windows the watermark has passed. */
const ANOMALY_PASS_MS = 10_000;
import { startAuditPruner } from "./routes/audit.ts";
import { isAuthEnabled } from "./routes/auth.ts";
import { IpAnonymizer } from "./routes/ip_anonymizer.ts";
import { ConsentDecoder } from "./routes/consent_decoder.ts";
import { countAcknowledged, PipelineMetrics } from "./routes/metrics.ts";

/** A running pipeline without its HTTP listener: what tests and the server share. */
export interface Pipeline {
  app: Hono;
  region: Region;
  log: EventLog;
  db: Kysely<Database>;
  /** Delivers alert webhooks, when `ALERT_WEBHOOK_URL` is set. */
  alerts: AlertSender | undefined;
  /** Runs the `qoe` rule over the QoE windows flushes changed (every flush interval). */
  qoeChecker: QoeChecker;
  /** Judges the anomaly series' windows and keeps incidents (`ANOMALY_DETECTION`). */
  anomalies: AnomalyDetector;
  /** Runs deletion requests; `idle()` waits for the running ones. */
  eraser: Eraser;
  /** Lets wall-clock time in: workers prune, passivate and flush when due. */
  tick(nowMs?: number): void;
  /** Stops intake (503), flushes everything and stops the workers; reads keep working. */
  drain(): Promise<void>;
  /** Closes the database and Redis connections (after {@link Pipeline.drain}). */
  close(): Promise<void>;
  /** `drain()` then `close()`. */
  stop(): Promise<void>;
}

/** Options of {@link startPipeline} that are not configuration. */
export interface PipelineOptions {
  /** Module of the shard worker; tests substitute a wrapper that can crash. */
  workerUrl?: URL;
  /** Poll the alert outbox every second (default); tests drive `alerts.runOnce` instead. */
  isAlertPolling?: boolean;
  /** Run the `qoe` rule every flush interval (default); tests call `qoeChecker.runOnce`. */
  isQoeChecking?: boolean;
  /** Run the anomaly detector every 10 s (default when enabled); tests call `anomalies.stepTo`. */
  isAnomalyDetecting?: boolean;
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
  let writerLock: WriterLock | undefined;
  try {
    const applied = await migrateToLatest(db);
    if (applied.length > 0) logger.info("Applied migrations", { applied });
    const traits = logTraits(config.queue);
    if (traits.isSingleWriter && config.databaseUrl !== undefined) {
      writerLock = await lockLogWriter(
        config.databaseUrl,
        (error) => logger.error("Lost the log writer's lock connection", { error: error.message }),
      );
    }
    // Raw events live in daily partitions: every day an event can still be accepted for, and ahead.
    await ensureDaysAhead(db, Date.now(), config.maxEventAgeMs);
    // Durable and redis logs number raw events with the sequence; a memory log before them did not.
    if (traits.usesPositionSequence) await syncLogSequence(db);
    const firstPosition = await nextLogPosition(db);
    const alertMinRank = config.alerts.url === undefined
      ? undefined
      : LEVEL_RANK[config.alerts.minLevel];
    // The region starts before the log (the log needs it); shards it loses go to the log.
    const logRef: { current?: EventLog } = {};
    const metrics = new PipelineMetrics();
    const region = await Region.start({
      observer: metrics.observer,
      // Only what the region uses, named: the rest of the configuration is not its business.
      workers: config.workers,
      shards: config.shards,
      batchDelayMs: config.batchDelayMs,
      maxBatchEvents: config.maxBatchEvents,
      maxInFlightBatches: config.maxInFlightBatches,
      maxPendingEvents: config.maxPendingEvents,
      allowedLatenessMs: config.allowedLatenessMs,
      maxIdleMs: config.maxIdleMs,
      maxSegmentMs: config.maxSegmentMs,
      dedupeMaxIds: config.dedupeMaxIds,
      thresholds: config.thresholds,
      databaseUrl: config.databaseUrl,
      alertMinRank,
      writeBatch: (batch) => writeFlush(db, batch, { alertMinRank }),
      firstPosition,
      isLogDurable: traits.isRawEventsLog,
      workerUrl: options.workerUrl,
      cluster: traits.isShared
        ? { onShardsLost: (keys) => logRef.current?.onShardsLost(keys) }
        : undefined,
      shardStore: {
        acquire: (keys) => acquireShards(db, keys),
        readLog: (after, through, limit) => readLog(db, after, through, limit),
        lastPosition: () => lastLogPosition(db),
        loadOptOuts: () => loadOptOuts(db),
      },
      logger,
    });
    const opened = await openLog(config, {
      firstPosition,
      db,
      region,
      logger,
      onAppended: (rows, result) => metrics.countAppended(rows, result.stored, result.reusedIds),
      onAppendPath: (path) => metrics.countAppendPath(path),
    });
    logRef.current = opened;
    const recordOptOut = (userId: string, optOut: OptOut) => opened.recordOptOut(userId, optOut);
    const erased = new ErasedUsers(
      await pseudonymKey(db, config.pseudonymSecret),
      await loadErasedHashes(db),
    );
    // In a cluster, other nodes erase users too: learn their hashes within a few heartbeats.
    const erasedRefresh = !traits.isShared ? undefined : setInterval(() => {
      loadErasedHashes(db).then((hashes) => hashes.forEach((hash) => erased.add(hash)))
        .catch((error) =>
          logger.warn("Cannot refresh erased users", { error: (error as Error).message })
        );
    }, 3 * config.redis.heartbeatMs);
    const eraser = new Eraser({
      db,
      erased,
      recordOptOut,
      settle: async () => {
        // Appends accepted before the user was marked erased carry the id: let them commit first.
        await opened.appendsSettled?.();
        const errors = await region.flush();
        if (errors.length > 0) throw new Error(`Cannot flush workers: ${errors.join("; ")}`);
        // Other nodes own other shards: give them a few flush intervals to apply and commit.
        if (traits.isShared) {
          await new Promise((resolve) => setTimeout(resolve, 3 * config.flushIntervalMs));
        }
      },
      isLogPositional: traits.isPositional,
      eraseLogEntries: opened.eraseUser === undefined
        ? undefined
        : (userId) => opened.eraseUser!(userId),
      maxEventAgeMs: config.maxEventAgeMs,
      logger,
      onRetry: () => metrics.countErasureRetry(),
    });
    const app = createApp({
      db,
      region,
      // The memory and postgres logs are counted where they decide lateness and duplicates.
      // Events of erased users are appended under their pseudonym, whatever the backend.
      log: new ErasingLog(
        traits.countsOutcomes ? opened : countAcknowledged(opened, metrics),
        erased,
      ),
      metrics,
      metricsToken: config.metricsToken,
      anonymizer: new IpAnonymizer(config.ipHashSecret, config.ipHashKeyId),
      auth: config,
      maxBodyBytes: config.maxBodyBytes,
      bodyReadTimeoutMs: config.bodyReadTimeoutMs,
      maxBatchEvents: config.maxBatchEvents,
      maxFutureSkewMs: config.maxFutureSkewMs,
      maxEventAgeMs: config.maxEventAgeMs,
      gdprRegions: config.gdprRegions,
      isStrictSchema: config.isStrictSchema,
      metadataKeys: config.metadataKeys,
      consentDecoder: new ConsentDecoder(config.consentVendorId),
      consentPurposeMask: config.thresholds.consentPurposeMask,
      logger,
      recordOptOut,
      eraser,
      erased,
      privacyJurisdiction: config.privacyJurisdiction,
      consentRetentionDays: config.consentRetentionDays,
      readiness: () => opened.readiness(),
    });
    let draining: Promise<void> | null = null;
    let closing: Promise<void> | null = null;
    const drain = () =>
      draining ??= (async () => {
        // An erasure cut short stays in progress and resumes at the next start.
        eraser.stop();
        clearInterval(erasedRefresh);
        const drainRegion = async () => {
          const errors = await region.drain();
          if (errors.length > 0) {
            logger.error(
              traits.isDurable
                ? "Drain could not flush everything; the log keeps the events for the next start"
                : "Drain could not flush everything; unflushed events are lost",
              { errors },
            );
          }
        };
        await opened.drain(drainRegion);
      })();
    const close = () =>
      closing ??= (async () => {
        await drain();
        await qoeChecker.stop();
        await anomalies.stop();
        await alerts?.stop();
        await opened.close();
        await writerLock?.release();
        await db.destroy();
      })();
    await eraser.resume();
    if (opened.readiness().cluster !== undefined) {
      metrics.watchCluster(() => opened.readiness().cluster);
    }
    metrics.watchDatabase({
      requestsByStatus: () => requestCountsByStatus(db),
      overdueRequests: () => overdueRequestCount(db, Date.now()),
      // Flag and incident alerts: both are queued only while a webhook is configured.
      pendingAlerts: async () =>
        (await pendingAlertCount(db)) + (await pendingIncidentAlertCount(db)),
    });
    let alerts: AlertSender | undefined;
    if (config.alerts.url !== undefined) {
      alerts = new AlertSender({
        db,
        url: config.alerts.url,
        secret: config.alerts.secret,
        isUserIncluded: config.alerts.isUserIncluded,
        logger,
        onOutcome: (outcome) => metrics.countAlert(outcome),
      });
      if (config.alerts.secret === undefined) {
        logger.warn("ALERT_WEBHOOK_SECRET is not set: alerts are sent unsigned");
      }
      if (options.isAlertPolling !== false) alerts.start(1_000);
    }
    const qoeChecker = new QoeChecker({
      db,
      thresholds: config.thresholds.qoe,
      alertMinRank,
      logger,
    });
    if (options.isQoeChecking !== false) qoeChecker.start(config.flushIntervalMs);
    const anomalies = new AnomalyDetector({
      db,
      windowMs: config.thresholds.anomalyWindowMs,
      ...config.anomaly,
      watermarkMs: () => region.watermarkMs,
      owner: config.redis.nodeId,
      alerts: { minRank: alertMinRank ?? null },
      logger,
    });
    if (config.anomaly.isEnabled && options.isAnomalyDetecting !== false) {
      anomalies.start(ANOMALY_PASS_MS);
    }
    return {
      alerts,
      qoeChecker,
      anomalies,
      app,
      region,
      log: opened,
      db,
      eraser,
      tick: (nowMs = Date.now()) => region.tick(nowMs),
      drain,
      close,
      stop: close,
    };
  } catch (error) {
    await writerLock?.release();
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
  if (values["node-id"] !== undefined) Deno.env.set("NODE_ID", values["node-id"]);
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  if (!isAuthEnabled(config)) {
    logger.warn(
      "Auth is OFF: anyone can send events and read compliance data. Set API_TOKENS (role:name:secret)",
    );
  }
  if (config.readTokens.length > 0) {
    logger.warn("READ_TOKENS is deprecated: use API_TOKENS with the analyst or privacy role");
  }
  if (config.isIpHashSecretGenerated) {
    logger.warn(
      "IP_HASH_SECRET is not set: using a random key for this run, so IP hashes change on restart",
    );
  }
  const pipeline = await startPipeline(config, logger);
  const ticker = setInterval(() => pipeline.tick(), config.flushIntervalMs);
  const stopAuditPruner = startAuditPruner(pipeline.db, config.auditRetentionDays, logger);
  const stopRetentionPruner = startRetentionPruner(pipeline.db, {
    ...config,
    isLogPositional: pipeline.log.traits.isPositional,
    aggregates: config,
  }, logger);
  const server = Deno.serve({
    port: config.port,
    hostname: config.hostname,
    onListen: ({ hostname, port }) =>
      logger.info(`Listening on http://${hostname}:${port}`, {
        queue: config.queue,
        workers: config.workers,
        shards: config.shards,
        flush_interval_ms: config.flushIntervalMs,
        node_id: pipeline.log.traits.isShared ? config.redis.nodeId : null,
      }),
  }, pipeline.app.fetch);

  let isShuttingDown = false;
  const shutdown = async (signal: string) => {
    if (isShuttingDown) return;
    isShuttingDown = true;
    logger.info(`Received ${signal}: draining (new events get 503), flushing, then exiting`);
    clearInterval(ticker);
    stopAuditPruner();
    await stopRetentionPruner();
    await pipeline.drain();
    // Stop listening before the database closes, so late reads are not answered with 500.
    await server.shutdown();
    await pipeline.close();
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
