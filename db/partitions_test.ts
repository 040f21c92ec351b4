import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
// @ts-types="@types/pg"
import pg from "pg";
import { makeEvent, T0 } from "../tests/fixtures.ts";
import {
  startHarness,
  TEST_DATABASE_URL,
  withEmptyDatabase,
  withFreshPostgres,
} from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";
import { openDatabase } from "./client.ts";
import { appendToLog, insertRawEvents, readLog } from "./log_store.ts";
import { migrateTo, migrateToLatest } from "./migrate.ts";
import {
  dailyName,
  DAY_MS,
  dayOf,
  dropPartitionsBefore,
  ensureDays,
  ensureDaysAhead,
  LEGACY_PARTITION,
  listPartitions,
} from "./partitions.ts";
import { pruneExpired } from "./retention.ts";
import type { Database } from "./schema.ts";

const SETTINGS = {
  rawEventsRetentionDays: 30,
  flagsRetentionDays: 365,
  privacyRequestRetentionDays: 730,
  consentRetentionDays: 1825,
};

const count = async (db: Kysely<Database>, table: string) =>
  Number(
    (await sql<{ n: string | number }>`select count(*) as n from ${sql.table(table)}`
      .execute(db)).rows[0].n,
  );

for (const kind of ["pglite", "postgres"] as const) {
  const ignore = kind === "postgres" && TEST_DATABASE_URL === undefined;

  test({
    name: `[db] the upgrade to daily partitions keeps today's rows as a legacy partition (${kind})`,
    ignore,
    fn: () =>
      withEmptyDatabase(kind === "pglite" ? undefined : TEST_DATABASE_URL, async (db) => {
        await migrateTo(db, "2026_12_07_0010_consent_ledger");
        const old = Array.from({ length: 50 }, (_, i) =>
          makeEvent({ eventId: `old-${i}`, atMs: T0 - (i % 5) * DAY_MS, position: i + 1 }));
        // Stored as the schema before the upgrade stored them (primary key event_id alone).
        for (const e of old) {
          await sql`insert into raw_events (event_id, position, user_id, device_id, content_id,
            event_type, occurred_at, received_at, region, is_eu, has_consent, ip_hash, ip_prefix,
            do_not_track, is_late, extra_metadata)
            values (${e.eventId}, ${e.position}, ${e.userId}, ${e.deviceId}, ${e.contentId},
              ${e.type}, ${new Date(e.atMs).toISOString()}, ${
            new Date(e.receivedAtMs).toISOString()
          },
              ${e.region}, true, true, ${e.ipHash}, ${e.ipPrefix}, false, false, '{}')`.execute(db);
        }
        await migrateToLatest(db);

        const partitions = await listPartitions(db);
        assert.deepEqual(partitions.map((p) => [p.name, p.fromMs]), [[LEGACY_PARTITION, null]]);
        const bound = partitions[0].toMs;
        assert.equal(bound, Math.max(dayOf(Date.now()), dayOf(T0)) + DAY_MS, "the day after now");
        // The log reads back in position order, and a retry of an old event is still a duplicate.
        assert.deepEqual(
          (await readLog(db, 0, 1_000, 100)).map((e) =>
            e.eventId
          ),
          old.map((e) => e.eventId),
        );
        const retry = { ...old[3], position: 100 };
        const fresh = makeEvent({ eventId: "new-1", atMs: bound + 1_000, position: 101 });
        await ensureDays(db, bound, bound);
        const result = await appendToLog(db, [retry, fresh]);
        assert.deepEqual([...result.stored], [0, 1]);
        assert.equal(await count(db, LEGACY_PARTITION), 50);
        assert.equal(await count(db, dailyName(dayOf(bound))), 1);
        // Retention deletes the legacy partition's expired rows one by one, and drops it whole
        // once its bound has passed.
        const later = bound + 40 * DAY_MS;
        const pruned = await pruneExpired(db, later, SETTINGS);
        assert.equal(pruned.raw_event_days, 0, "no checkpoint yet: nothing is applied");
        await sql`insert into shard_checkpoints (family, shard, position, epoch)
          values ('user', 0, 1000, 1)`.execute(db);
        const dropped = await pruneExpired(db, later, SETTINGS);
        assert.equal(dropped.raw_event_days, 2, "the legacy partition and the day after it");
        assert.equal((await listPartitions(db)).length, 0);
      }),
  });

  test({
    name:
      `[db] days are created ahead and on demand, and a day a shard has not applied stays (${kind})`,
    ignore,
    fn: () =>
      withEmptyDatabase(kind === "pglite" ? undefined : TEST_DATABASE_URL, async (db) => {
        await migrateToLatest(db);
        const now = Date.UTC(2027, 0, 10, 15, 0, 0);
        await ensureDaysAhead(db, now, 7 * DAY_MS);
        const days = (await listPartitions(db)).map((p) => p.fromMs);
        assert.equal(days.length, 10, "7 days back, today and 2 ahead");
        assert.equal(days[0], dayOf(now) - 7 * DAY_MS);
        assert.equal(days.at(-1), dayOf(now) + 2 * DAY_MS);
        // An event of a day with no partition is still stored: its day is made on demand.
        const farAway = makeEvent({ eventId: "far", atMs: now - 40 * DAY_MS, position: 1 });
        await insertRawEvents(db, [farAway]);
        assert.equal(await count(db, dailyName(dayOf(farAway.atMs))), 1);
        await sql`insert into shard_checkpoints (family, shard, position, epoch)
          values ('user', 0, 0, 1)`.execute(db);
        // Lagging checkpoint: the expired day holds position 1 > 0, so it stays.
        const kept = await dropPartitionsBefore(db, now - 30 * DAY_MS, true);
        assert.deepEqual(kept, [{
          name: dailyName(dayOf(farAway.atMs)),
          isDropped: false,
          keptBecause: "checkpoint",
        }]);
        await sql`update shard_checkpoints set position = 1`.execute(db);
        const dropped = await dropPartitionsBefore(db, now - 30 * DAY_MS, true);
        assert.deepEqual(dropped.map((d) => d.isDropped), [true]);
      }),
  });
}

test({
  name: "[postgres] a partition drop waits at most its lock timeout, and appends go on meanwhile",
  ignore: TEST_DATABASE_URL === undefined,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, async (url) => {
      const { db } = await openDatabase({ databaseUrl: url, dataDir: "" });
      const holder = new pg.Client({ connectionString: url });
      await holder.connect();
      try {
        await migrateToLatest(db);
        const old = dayOf(T0) - 60 * DAY_MS;
        await insertRawEvents(db, [makeEvent({ eventId: "old", atMs: old, position: 1 })]);
        await ensureDays(db, dayOf(T0), dayOf(T0));
        // An open append transaction holds raw_events (ROW EXCLUSIVE) while retention runs.
        await holder.query("begin");
        await holder.query(`insert into raw_events (event_id, position, user_id, device_id,
          content_id, event_type, occurred_at, received_at, region, is_eu, has_consent, ip_hash,
          ip_prefix, do_not_track, is_late, extra_metadata)
          values ('held', 2, 'u', 'd', 'c', 'PLAY', '${new Date(T0).toISOString()}', now(), 'DE',
            true, true, 'h', 'p', false, false, '{}')`);
        const started = Date.now();
        const result = await dropPartitionsBefore(db, T0 - 30 * DAY_MS, false, {
          lockTimeoutMs: 300,
        });
        assert.deepEqual(result.map((r) => r.keptBecause), ["busy"]);
        assert.ok(Date.now() - started < 3_000, "gave up after its lock timeout");
        // Another append is not stuck behind the drop that gave up.
        await appendToLog(db, [makeEvent({ eventId: "after", atMs: T0, position: 3 })]);
        await holder.query("commit");
        const retried = await dropPartitionsBefore(db, T0 - 30 * DAY_MS, false);
        assert.deepEqual(retried.map((r) => r.isDropped), [true]);
      } finally {
        await holder.end();
        await db.destroy();
      }
    }),
});

test({
  name: "[postgres] a second server on the same database is refused at start",
  ignore: TEST_DATABASE_URL === undefined,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
      const first = await startHarness({ queue: "postgres", databaseUrl });
      try {
        await assert.rejects(
          startHarness({ queue: "postgres", databaseUrl }),
          /another server writes this database's event log/,
        );
        // The first one keeps serving.
        assert.equal((await first.get("/healthz")).status, 200);
      } finally {
        await first.pipeline.stop();
      }
      // Once it stopped, the lock is free again.
      const next = await startHarness({ queue: "postgres", databaseUrl });
      await next.pipeline.stop();
    }),
});
