/**
 * Opening the database: PostgreSQL through `pg` when a URL is given, otherwise embedded PGlite under
 * the data directory. Both speak the same SQL through the same Kysely schema.
 *
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { Kysely, type KyselyConfig, PostgresDialect } from "kysely";
// @ts-types="@types/pg"
import pg from "pg";
import type { Database } from "./schema.ts";
import { lockDataDir } from "./data_dir_lock.ts";
import { PGliteDialect } from "./pglite_dialect.ts";

/** Which engine is behind a {@link Kysely} instance. */
export type DatabaseKind = "postgres" | "pglite";

/** An open database with its kind, closed by `db.destroy()`. */
export interface OpenDatabase {
  db: Kysely<Database>;
  kind: DatabaseKind;
  /** Human-readable location with any password removed, safe to log. */
  location: string;
}

/** Options for {@link openDatabase}. */
export interface OpenOptions {
  databaseUrl: string | undefined;
  /** PGlite data directory; `memory://` keeps everything in memory (tests). */
  dataDir: string;
  /** Connections in the pg pool. */
  poolSize?: number;
  /** Told about connection errors outside a query (e.g. a server restart); the next query retries. */
  onIdleError?: (error: Error) => void;
}

/**
 * Opens PostgreSQL (URL given) or PGlite (no URL). PGlite must have exactly one owner thread, so a
 * directory's PGlite is only opened under its exclusive lock (see `data_dir_lock.ts`); a second
 * opener gets a `DataDirInUseError` at once, and `db.destroy()` releases the lock.
 */
export async function openDatabase(options: OpenOptions): Promise<OpenDatabase> {
  if (options.databaseUrl !== undefined) {
    const pool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: options.poolSize ?? 4,
      // Connections are opened once and kept: a pool this small (2-4 per thread) gains nothing from
      // closing idle ones, and every reconnect is a handshake that must run on the thread's event
      // loop. On a CPU-saturated worker that handshake once missed a 5 s deadline and failed a flush
      // ("Connection terminated due to connection timeout"). So: no idle reaping (0 = keep forever,
      // which also makes pg-pool's `min` moot), and 30 s to connect when a new connection is needed
      // (first use, or after the server dropped one). Dead connections are still detected: pg
      // removes a client on its 'error', TCP keepalive finds silent peers, query_timeout bounds a
      // black-holed query.
      connectionTimeoutMillis: 30_000,
      idleTimeoutMillis: 0,
      // A black-holed connection must fail (and be retried) rather than hang flushes and drains.
      query_timeout: 30_000,
      keepAlive: true,
    });
    // A connection's error (server restart, network cut) must not crash the thread: pg emits it as an
    // 'error' event, which is fatal without a listener, both on idle clients (the pool's "error") and
    // on clients checked out between queries. The query in progress, if any, rejects on its own.
    const report = (error: Error) => options.onIdleError?.(error);
    pool.on("error", report);
    pool.on("connect", (client) => client.on("error", report));
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { db, kind: "postgres", location: redactUrl(options.databaseUrl) };
  }
  if (options.dataDir.startsWith("memory://")) {
    const { PGlite } = await import("@electric-sql/pglite");
    const pglite = await PGlite.create();
    const db = new PGliteKysely({ dialect: new PGliteDialect(pglite) }, async () => {
      if (!pglite.closed) await pglite.close();
    });
    return { db, kind: "pglite", location: options.dataDir };
  }
  // The lock comes first: PGlite must not touch the files while another process owns them.
  const lock = await lockDataDir(options.dataDir);
  let pglite: PGlite;
  try {
    const { PGlite } = await import("@electric-sql/pglite");
    pglite = await PGlite.create(`${options.dataDir}/pglite`);
  } catch (error) {
    lock.release();
    throw error;
  }
  const db = new PGliteKysely({ dialect: new PGliteDialect(pglite) }, async () => {
    try {
      if (!pglite.closed) await pglite.close();
    } finally {
      // Only after PGlite has closed (or failed to: this owner is done with the files either way).
      lock.release();
    }
  });
  return { db, kind: "pglite", location: options.dataDir };
}

/**
 * Kysely over PGlite whose `destroy()` always closes PGlite and releases the directory lock. Kysely
 * skips the driver's destroy when no query ever ran, which would leave both held.
 */
class PGliteKysely extends Kysely<Database> {
  #onDestroy: () => Promise<void>;

  constructor(config: KyselyConfig, onDestroy: () => Promise<void>) {
    super(config);
    this.#onDestroy = onDestroy;
  }

  override async destroy(): Promise<void> {
    try {
      await super.destroy();
    } finally {
      await this.#onDestroy();
    }
  }
}

/** Removes the password from a connection URL so it can be logged. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparseable DATABASE_URL)";
  }
}

/**
 * A pool of its own for the postgres log's appender, one connection per concurrent append; a
 * dropped connection fails the append in progress (answered 503 and retried), never the process.
 */
export function openAppenderPool(
  databaseUrl: string,
  size: number,
  onError: (error: Error) => void,
): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: size,
    connectionTimeoutMillis: 30_000,
    idleTimeoutMillis: 0,
    query_timeout: 30_000,
    keepAlive: true,
  });
  pool.on("error", onError);
  pool.on("connect", (client) => client.on("error", onError));
  return pool;
}

/** Advisory lock key held by the one process that writes a database's log. */
const LOG_WRITER_LOCK = 720_117_002;

/** The log writer's lock, held on a connection of its own until released. */
export interface WriterLock {
  release(): Promise<void>;
}

/**
 * Takes the log writer's lock on PostgreSQL (a session advisory lock on a connection of its own),
 * or throws at once when another process holds it: two servers appending to one log would hand
 * out the same positions. PGlite's data directory lock does the same for the embedded database.
 */
export async function lockLogWriter(
  databaseUrl: string,
  onLost: (error: Error) => void,
): Promise<WriterLock> {
  const client = new pg.Client({ connectionString: databaseUrl, keepAlive: true });
  await client.connect();
  // A dropped connection loses the lock (and must not crash the process): say so in the log.
  client.on("error", onLost);
  try {
    const result = await client.query<{ locked: boolean }>(
      "select pg_try_advisory_lock($1) as locked",
      [LOG_WRITER_LOCK],
    );
    if (!result.rows[0].locked) {
      throw new Error(
        "Cannot start: another server writes this database's event log (it holds PostgreSQL " +
          `advisory lock ${LOG_WRITER_LOCK}); stop it, or run several nodes with QUEUE=redis`,
      );
    }
  } catch (error) {
    await client.end();
    throw error;
  }
  return { release: () => client.end() };
}
