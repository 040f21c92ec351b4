/**
 * `deno task migrate`: brings the configured database (DATABASE_URL, or the embedded PGlite under
 * DATA_DIR) up to the latest schema and exits. The server also migrates at start.
 *
 * @module
 */
import { loadConfig } from "../config.ts";
import { openDatabase } from "../db/client.ts";
import { migrateToLatest } from "../db/migrate.ts";

if (import.meta.main) {
  const config = loadConfig();
  const { db, kind, location } = await openDatabase(config);
  try {
    const applied = await migrateToLatest(db);
    console.log(
      applied.length === 0
        ? `Database ${kind} at ${location} is up to date`
        : `Applied ${applied.length} migrations to ${kind} at ${location}: ${applied.join(", ")}`,
    );
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    if (error instanceof Error && error.cause !== undefined) console.error("Cause:", error.cause);
    Deno.exitCode = 1;
  } finally {
    await db.destroy();
  }
}
