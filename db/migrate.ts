/**
 * Runs the migrations in `db/migrations/` in order, on PGlite or PostgreSQL alike.
 *
 * @module
 */
import type { Kysely } from "kysely";
import { type Migration, Migrator } from "kysely/migration";
import { syncRiskWeights } from "./risk_queries.ts";
import type { Database } from "./schema.ts";
import * as initial from "./migrations/2026_11_23_0001_initial.ts";
import * as eventLog from "./migrations/2026_11_24_0002_event_log.ts";
import * as hourlyBuckets from "./migrations/2026_11_30_0003_hourly_buckets.ts";
import * as audit from "./migrations/2026_11_30_0004_audit.ts";
import * as privacyOperations from "./migrations/2026_11_30_0005_privacy_operations.ts";
import * as flagReview from "./migrations/2026_11_30_0006_flag_review.ts";
import * as alertOutbox from "./migrations/2026_11_30_0007_alert_outbox.ts";
import * as erasedRetryCheck from "./migrations/2026_12_01_0008_erased_retry_check.ts";
import * as erasingSubject from "./migrations/2026_12_07_0009_erasing_subject.ts";
import * as consentLedger from "./migrations/2026_12_07_0010_consent_ledger.ts";
import * as rawEventsByDay from "./migrations/2026_12_07_0011_raw_events_by_day.ts";
import * as rollups from "./migrations/2026_12_07_0012_rollups.ts";
import * as aggregateHorizons from "./migrations/2026_12_07_0013_aggregate_horizons.ts";
import * as entityScores from "./migrations/2026_12_07_0014_entity_scores.ts";
import * as readIndexes from "./migrations/2026_12_07_0015_read_indexes.ts";
import * as dimensionRollups from "./migrations/2026_12_07_0016_dimension_rollups.ts";
import * as qualityOfExperience from "./migrations/2026_12_07_0017_quality_of_experience.ts";
import * as qoeWindows from "./migrations/2026_12_07_0018_qoe_windows.ts";
import * as entityScoresConcurrent from "./migrations/2026_12_07_0019_entity_scores_concurrent.ts";
import * as anomalies from "./migrations/2026_12_07_0020_anomalies.ts";

/** Every migration by its sortable name; add new ones here. */
export const MIGRATIONS: Record<string, Migration> = {
  "2026_11_23_0001_initial": initial,
  "2026_11_24_0002_event_log": eventLog,
  "2026_11_30_0003_hourly_buckets": hourlyBuckets,
  "2026_11_30_0004_audit": audit,
  "2026_11_30_0005_privacy_operations": privacyOperations,
  "2026_11_30_0006_flag_review": flagReview,
  "2026_11_30_0007_alert_outbox": alertOutbox,
  "2026_12_01_0008_erased_retry_check": erasedRetryCheck,
  "2026_12_07_0009_erasing_subject": erasingSubject,
  "2026_12_07_0010_consent_ledger": consentLedger,
  "2026_12_07_0011_raw_events_by_day": rawEventsByDay,
  "2026_12_07_0012_rollups": rollups,
  "2026_12_07_0013_aggregate_horizons": aggregateHorizons,
  "2026_12_07_0014_entity_scores": entityScores,
  "2026_12_07_0015_read_indexes": readIndexes,
  "2026_12_07_0016_dimension_rollups": dimensionRollups,
  "2026_12_07_0017_quality_of_experience": qualityOfExperience,
  "2026_12_07_0018_qoe_windows": qoeWindows,
  "2026_12_07_0019_entity_scores_concurrent": entityScoresConcurrent,
  "2026_12_07_0020_anomalies": anomalies,
};

/**
 * Brings the schema up to date, then writes the risk weights the score triggers read (recomputing
 * every score when one changed); throws with the failing migration's name on error.
 */
export async function migrateToLatest<T>(db: Kysely<T>): Promise<string[]> {
  const applied = await migrateSchema(db);
  await syncRiskWeights(db as unknown as Kysely<Database>);
  return applied;
}

async function migrateSchema<T>(db: Kysely<T>): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: () => Promise.resolve(MIGRATIONS) },
  });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === "Error");
  if (error !== undefined) {
    throw new Error(
      `Cannot migrate database: migration "${failed?.migrationName ?? "unknown"}" failed`,
      { cause: error },
    );
  }
  return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}

/** Applies the migrations up to and including `name` (tests of an upgrade start from an old schema). */
export async function migrateTo<T>(db: Kysely<T>, name: string): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: () => Promise.resolve(MIGRATIONS) },
  });
  const { error } = await migrator.migrateTo(name);
  if (error !== undefined) {
    throw new Error(`Cannot migrate database to "${name}"`, { cause: error });
  }
}
