import assert from "node:assert/strict";
import { Kysely, PostgresDialect, sql } from "kysely";
// @ts-types="@types/pg"
import pg from "pg";
import { TEST_DATABASE_URL, withFreshPostgres } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";
import { auditRoutes } from "../routes/audit.ts";
import { consentLedgerOf, consentSummary } from "./consent_store.ts";
import { migrateToLatest } from "./migrate.ts";
import { listRequests } from "./privacy_store.ts";
import { getComplianceRegions, getComplianceSummary, listFlags } from "./queries.ts";
import { getEntityRisk, listEntityRisks } from "./risk_queries.ts";
import type { Database } from "./schema.ts";
import { getContentStats, getRegionStats, getSummary } from "./stats_queries.ts";
import { getTimeseries } from "./timeseries.ts";

const DAY = 86_400_000;

/** Tables too small to matter: a scan of them is the right plan at any size. */
const SMALL_TABLES = new Set([
  "stat_counters",
  "aggregate_horizons",
  "risk_weights",
  "shard_checkpoints",
  "app_secrets",
]);

/**
 * Tables a plan reads whole: a sequential scan, or an index scan with no index condition and no
 * limit above it (it walks the whole index, as the planner does when it must avoid a sequential
 * scan).
 */
function fullScans(lines: string[]): string[] {
  const tables: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const seq = /Seq Scan on (\w+)/.exec(lines[i]);
    if (seq !== null) tables.push(seq[1]);
    const index = /Index (?:Only )?Scan(?: Backward)? using \w+ on (\w+)/.exec(lines[i]);
    if (index === null) continue;
    let hasCondition = false;
    for (let j = i + 1; j < lines.length && !lines[j].includes("->"); j++) {
      if (lines[j].includes("Index Cond")) hasCondition = true;
    }
    // Under a Limit, an index walked in its order stops after the page: a top-N read, not a scan.
    const isUnderLimit = lines.slice(0, i).some((line) => /\bLimit\b/.test(line));
    if (!hasCondition && !isUnderLimit) tables.push(index[1]);
  }
  return tables;
}

/**
 * Every documented read's statements, captured as they run, then explained with sequential scans
 * disabled: a plan that still scans a table sequentially has no index it can use. (On the tiny
 * data of a test the planner would scan anyway; with scans disabled it shows what it could use.)
 */
test({
  name: "[postgres] every documented read has an index it uses for every table it reads",
  ignore: TEST_DATABASE_URL === undefined,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, async (url) => {
      const statements: Array<{ sql: string; parameters: readonly unknown[] }> = [];
      let isCapturing = true;
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      const db = new Kysely<Database>({
        dialect: new PostgresDialect({ pool }),
        log: (event) => {
          if (event.level === "query" && isCapturing) {
            statements.push({ sql: event.query.sql, parameters: event.query.parameters });
          }
        },
      });
      try {
        await migrateToLatest(db);
        statements.length = 0;
        const now = Date.UTC(2027, 0, 10, 12);
        const hour = 3_600_000;
        // All-time reads (no range) read every daily row there is, which retention bounds: their
        // plans scan, as they should. Every ranged read must find its rows by index.
        const ranges = [
          { fromMs: now - 7 * DAY - 5 * hour, toMs: now - 3 * hour },
          { fromMs: now - 395 * DAY, toMs: now },
        ];
        for (const range of ranges) {
          await getSummary(db, range);
          await getContentStats(db, "title-1", range);
          await getRegionStats(db, "DE", true, range);
          await getComplianceSummary(db, range);
          await getComplianceRegions(db, () => true, range);
          await consentSummary(db, range);
        }
        const series = { fromMs: now - 7 * DAY, toMs: now, limit: 10 };
        for (const bucket of ["1h", "1d"] as const) {
          for (const metric of ["events", "error_rate", "unique_viewers"] as const) {
            await getTimeseries(db, { ...series, bucket, metric });
            await getTimeseries(db, { ...series, bucket, metric, groupBy: "region" });
            await getTimeseries(db, { ...series, bucket, metric, groupBy: "content_id" });
            await getTimeseries(db, { ...series, bucket, metric, contentId: "title-1" });
          }
          for (const groupBy of ["platform", "app_version", "subscription_plan"] as const) {
            await getTimeseries(db, { ...series, bucket, metric: "events", groupBy });
          }
          await getTimeseries(db, { ...series, bucket, metric: "errors", groupBy: "error_code" });
          await getTimeseries(db, { ...series, bucket, metric: "plays", deviceId: "tv-1" });
        }
        await listFlags(db, { limit: 50 });
        await listFlags(db, {
          limit: 50,
          rule: "privacy",
          range: { fromMs: now - DAY, toMs: now },
        });
        await listFlags(db, { limit: 50, userId: "u-1" });
        await listFlags(db, { limit: 50, status: "open", beforeId: 100 });
        await listEntityRisks(db, { limit: 50 }, now);
        await listEntityRisks(db, { limit: 50, entityType: "user", level: "HIGH" }, now);
        await getEntityRisk(db, "user", "u-1", now);
        await consentLedgerOf(db, "u-1", now);
        await listRequests(db, { limit: 50, status: "received", isOverdue: true }, now);
        const audit = auditRoutes(db);
        assert.equal((await audit.request("http://test/?actor=dpo&limit=10")).status, 200);
        assert.equal(
          (await audit.request(`http://test/?from=${new Date(now - DAY).toISOString()}`)).status,
          200,
        );

        isCapturing = false;
        assert.ok(statements.length > 80, `only ${statements.length} statements were captured`);
        const scans = new Map<string, string>();
        await db.connection().execute(async (conn) => {
          await sql`set enable_seqscan = off`.execute(conn);
          for (const statement of statements) {
            const plan = await conn.executeQuery<{ "QUERY PLAN": string }>({
              sql: `explain ${statement.sql}`,
              parameters: statement.parameters,
              query: { kind: "RawNode" } as never,
              queryId: { queryId: "explain" } as never,
            });
            for (const table of fullScans(plan.rows.map((r) => r["QUERY PLAN"]))) {
              if (!SMALL_TABLES.has(table)) {
                scans.set(table, statement.sql.replace(/\s+/g, " ").slice(0, 200));
              }
            }
          }
        });
        assert.deepEqual(Object.fromEntries(scans), {}, "tables read without an index");
      } finally {
        await db.destroy();
      }
    }),
});
