/**
 * Opening the database: PostgreSQL through `pg` when a URL is given, otherwise embedded PGlite under
 * the data directory. Both speak the same SQL through the same Kysely schema.
 *
 * @module
 */
import { Kysely, PostgresDialect } from "kysely";
// @ts-types="@types/pg"
import pg from "pg";
import type { Database } from "./schema.ts";
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

/** Opens PostgreSQL (URL given) or PGlite (no URL). PGlite must have exactly one owner thread. */
export async function openDatabase(options: OpenOptions): Promise<OpenDatabase> {
  if (options.databaseUrl !== undefined) {
    const pool = new pg.Pool({
      connectionString: options.databaseUrl,
      max: options.poolSize ?? 4,
      connectionTimeoutMillis: 5_000,
      idleTimeoutMillis: 30_000,
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
  const { PGlite } = await import("@electric-sql/pglite");
  if (!options.dataDir.startsWith("memory://")) {
    await Deno.mkdir(options.dataDir, { recursive: true });
  }
  const pglite = await PGlite.create(
    options.dataDir.startsWith("memory://") ? undefined : `${options.dataDir}/pglite`,
  );
  const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
  return { db, kind: "pglite", location: options.dataDir };
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
