/**
 * Entry point of a shard worker (a Deno Web Worker). Wires the message port to a {@link ShardHost} and
 * picks the flush sink: its own PostgreSQL pool, or the main thread when the database is PGlite (PGlite
 * has exactly one owner thread).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { Kysely } from "kysely";
import { openDatabase } from "../db/client.ts";
import type { FlushBatch } from "../db/flush_batch.ts";
import { writeFlush } from "../db/flush.ts";
import type { Database } from "../db/schema.ts";
import type { FromWorker, ToWorker } from "./protocol.ts";
import { describe, type FlushSink, ShardHost } from "./shard_host.ts";

let host: ShardHost | null = null;
let db: Kysely<Database> | null = null;
let nextRequestId = 1;
const awaitingMain = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
/** Messages are handled strictly in arrival order, even while a flush awaits the database. */
let mailbox: Promise<void> = Promise.resolve();

function send(message: FromWorker): void {
  self.postMessage(message);
}

function sinkViaMain(batch: FlushBatch): Promise<void> {
  const requestId = nextRequestId++;
  return new Promise((resolve, reject) => {
    awaitingMain.set(requestId, { resolve, reject });
    send({ type: "db_write", requestId, batch });
  });
}

async function start(message: Extract<ToWorker, { type: "init" }>): Promise<void> {
  let sink: FlushSink = sinkViaMain;
  if (message.init.databaseUrl !== undefined) {
    const opened = await openDatabase({
      databaseUrl: message.init.databaseUrl,
      dataDir: "",
      poolSize: 2,
      onIdleError: (error) =>
        send({ type: "log", level: "warn", message: `Idle database connection failed: ${error}` }),
    });
    const workerDb = opened.db;
    db = workerDb;
    const alertMinRank = message.init.alertMinRank;
    sink = (batch) => writeFlush(workerDb, batch, { alertMinRank });
  }
  host = new ShardHost(message.init, send, sink);
  send({ type: "ready" });
}

async function handle(message: ToWorker): Promise<void> {
  if (message.type === "init") return await start(message);
  if (message.type === "stop") {
    await db?.destroy();
    send({ type: "stopped" });
    self.close();
    return;
  }
  if (host === null) throw new Error(`Cannot handle "${message.type}": worker not initialised`);
  // Events are applied synchronously; only flushes wait, and they run in the background so a slow
  // database never blocks intake (ShardHost chains flushes so only one runs at a time).
  const work = host.handle(message);
  if (message.type === "events" || message.type === "opt_out" || message.type === "adopt") {
    await work;
  } else {
    work.catch((error) =>
      send({ type: "log", level: "error", message: `Flush failed: ${describe(error)}` })
    );
  }
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === "db_done") {
    // Settled at once, not queued behind the mailbox: the flush awaiting it may be ahead in line.
    const waiter = awaitingMain.get(message.requestId);
    awaitingMain.delete(message.requestId);
    if (message.error === null) waiter?.resolve();
    else {
      const error = new Error(message.error);
      if (message.isFenced) error.name = "FencedError";
      waiter?.reject(error);
    }
    return;
  }
  mailbox = mailbox.then(() => handle(message)).catch((error) =>
    send({
      type: "log",
      level: "error",
      message: `Message "${message.type}" failed: ${describe(error)}`,
    })
  );
};
