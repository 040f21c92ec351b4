import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { insertRawEvents } from "./log_store.ts";
import { pruneExpired, type RetentionSettings } from "./retention.ts";
import type { Database } from "./schema.ts";
import { makeEvent } from "../tests/fixtures.ts";
import { TEST_DATABASE_URL, withMigratedDatabase } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";

const DAY_MS = 86_400_000;
const NOW = Date.UTC(2027, 0, 1, 12, 0, 0);
const SETTINGS: RetentionSettings = {
  rawEventsRetentionDays: 30,
  flagsRetentionDays: 365,
  privacyRequestRetentionDays: 730,
  consentRetentionDays: 1825,
};
const daysAgo = (days: number) => NOW - days * DAY_MS;

type Db = Kysely<Database>;

/** Runs `fn` on a migrated PGlite in memory, or on a fresh PostgreSQL database. */
async function withDatabase(kind: "pglite" | "postgres", fn: (db: Db) => Promise<void>) {
  await withMigratedDatabase(kind === "pglite" ? undefined : TEST_DATABASE_URL!, fn);
}

async function insertRaw(db: Db, rows: Array<{ id: string; position: number; atMs: number }>) {
  await insertRawEvents(
    db,
    rows.map((r) =>
      makeEvent({ eventId: r.id, position: r.position, atMs: r.atMs, receivedAtMs: r.atMs })
    ),
  );
}

async function setCheckpoints(db: Db, positions: number[]) {
  for (const [shard, position] of positions.entries()) {
    await sql`insert into shard_checkpoints (family, shard, position, epoch)
      values ('user', ${shard}, ${position}, 1)`.execute(db);
  }
}

async function insertFlags(db: Db, flags: Array<{ key: string; atMs: number }>) {
  for (const { key, atMs } of flags) {
    const at = new Date(atMs).toISOString();
    await db.insertInto("risk_flags").values({
      flag_key: key,
      rule: "account_sharing",
      rule_version: 1,
      level: "MEDIUM",
      level_rank: 2,
      entity_type: "user",
      entity_id: "user-1",
      event_id: `e-${key}`,
      user_id: "user-1",
      region: "DE",
      is_eu: true,
      occurred_at: at,
      reason: "test",
      evidence: JSON.stringify({}),
      flagged_events: 1,
      raised_at: at,
      updated_at: at,
    }).execute();
  }
}

async function insertRequests(
  db: Db,
  requests: Array<{ user: string; type: string; status: string; atMs: number }>,
) {
  for (const { user, type, status, atMs } of requests) {
    await db.insertInto("privacy_requests").values({
      user_id: user,
      request_type: type,
      source: "api",
      requested_at: new Date(atMs).toISOString(),
      status,
      completed_at: status === "completed" || status === "failed"
        ? new Date(atMs + DAY_MS).toISOString()
        : null,
    }).execute();
  }
}

const sortedIds = async (db: Db) =>
  (await db.selectFrom("raw_events").select("event_id").orderBy("event_id").execute())
    .map((r) => r.event_id);
const flagKeys = async (db: Db) =>
  (await db.selectFrom("risk_flags").select("flag_key").orderBy("flag_key").execute())
    .map((r) => r.flag_key);
const requestUsers = async (db: Db) =>
  (await db.selectFrom("privacy_requests").select("user_id").orderBy("user_id").execute())
    .map((r) => r.user_id);

async function insertLedger(
  db: Db,
  rows: Array<{ user: string; atMs: number; seenMs: number | null }>,
) {
  for (const [i, { user, atMs, seenMs }] of rows.entries()) {
    await db.insertInto("consent_ledger").values({
      user_id: user,
      occurred_at: new Date(atMs).toISOString(),
      event_id: `c-${i}`,
      received_at: new Date(atMs).toISOString(),
      region: "DE",
      state: i,
      source: "has_consent",
      purposes: 0,
      vendor_consent: null,
      has_consent: true,
      is_decoded: true,
      opt_out_sale_share: false,
      cmp_id: null,
      cmp_version: null,
      policy_version: null,
      string_hash: null,
      seen_until: seenMs === null ? null : new Date(seenMs).toISOString(),
    }).execute();
  }
}

for (const kind of ["pglite", "postgres"] as const) {
  const ignore = kind === "postgres" && TEST_DATABASE_URL === undefined;

  test({
    name: `[db] pruneExpired() on ${kind} keeps a consent state still seen, however old its change`,
    ignore,
    fn: () =>
      withDatabase(kind, async (db) => {
        await insertLedger(db, [
          { user: "gone", atMs: daysAgo(2_000), seenMs: daysAgo(1_900) },
          { user: "loyal", atMs: daysAgo(2_000), seenMs: daysAgo(3) },
          { user: "recent", atMs: daysAgo(10), seenMs: null },
          { user: "old-unseen", atMs: daysAgo(1_826), seenMs: null },
        ]);
        const counts = await pruneExpired(db, NOW, SETTINGS);
        assert.equal(counts.consent_ledger, 2);
        const users = await db.selectFrom("consent_ledger").select("user_id").orderBy("user_id")
          .execute();
        assert.deepEqual(users.map((r) => r.user_id), ["loyal", "recent"]);
      }),
  });

  test({
    name:
      `[db] pruneExpired() on ${kind} deletes expired rows, keeping the log above the lowest checkpoint`,
    ignore,
    fn: () =>
      withDatabase(kind, async (db) => {
        await setCheckpoints(db, [20, 10, 30]);
        await insertRaw(db, [
          ...[1, 2, 3].map((p) => ({ id: `old-${p}`, position: p, atMs: daysAgo(45) })),
          ...[4, 5].map((p) => ({ id: `old-${p}`, position: p, atMs: daysAgo(35) })),
          { id: "old-at-checkpoint", position: 10, atMs: daysAgo(40) },
          { id: "old-above-checkpoint", position: 11, atMs: daysAgo(40) },
          { id: "old-above-all", position: 35, atMs: daysAgo(50) },
          { id: "new", position: 6, atMs: daysAgo(29) },
          // The day that holds the cutoff is not wholly past retention yet: it stays.
          { id: "at-cutoff", position: 7, atMs: daysAgo(30) },
        ]);
        await insertFlags(db, [
          ...["old-1", "old-2", "old-3"].map((key) => ({ key, atMs: daysAgo(366) })),
          { key: "new", atMs: daysAgo(10) },
          { key: "at-cutoff", atMs: daysAgo(365) },
        ]);
        await sql`insert into flag_history (flag_id, actor_name, actor_role, from_status, to_status)
          select id, 'dpo', 'privacy', 'open', 'acknowledged' from risk_flags`.execute(db);
        await insertRequests(db, [
          { user: "access-done-old", type: "access", status: "completed", atMs: daysAgo(731) },
          { user: "access-failed-old", type: "access", status: "failed", atMs: daysAgo(800) },
          { user: "access-open-old", type: "access", status: "in_progress", atMs: daysAgo(800) },
          { user: "access-done-new", type: "access", status: "completed", atMs: daysAgo(700) },
          {
            user: "sale-opt-out-old",
            type: "opt_out_sale_share",
            status: "completed",
            atMs: daysAgo(800),
          },
          { user: "deletion-old", type: "deletion", status: "completed", atMs: daysAgo(800) },
          { user: "dnt-old", type: "do_not_track", status: "completed", atMs: daysAgo(800) },
        ]);

        const counts = await pruneExpired(db, NOW, SETTINGS, { batchSize: 2 });

        // Two whole days dropped; the days with a position above the lowest checkpoint stay whole.
        assert.deepEqual(counts, {
          raw_events: 0,
          raw_event_days: 2,
          risk_flags: 3,
          privacy_requests: 2,
          consent_ledger: 0,
        });
        assert.deepEqual(await sortedIds(db), [
          "at-cutoff",
          "new",
          "old-above-all",
          "old-above-checkpoint",
          "old-at-checkpoint",
        ]);
        assert.deepEqual(await flagKeys(db), ["at-cutoff", "new"]);
        const history = await sql<{ flag_key: string }>`select f.flag_key from flag_history h
          left join risk_flags f on f.id = h.flag_id order by f.flag_key`.execute(db);
        assert.deepEqual(history.rows.map((r) => r.flag_key), ["at-cutoff", "new"]);
        assert.deepEqual(await requestUsers(db), [
          "access-done-new",
          "access-open-old",
          "deletion-old",
          "dnt-old",
          "sale-opt-out-old",
        ]);
        assert.deepEqual(
          await pruneExpired(db, NOW, SETTINGS, { batchSize: 2 }),
          {
            raw_events: 0,
            raw_event_days: 0,
            risk_flags: 0,
            privacy_requests: 0,
            consent_ledger: 0,
          },
        );
      }),
  });

  test({
    name: `[db] pruneExpired() on ${kind} deletes at most maxBatches batches per table per run`,
    ignore,
    fn: () =>
      withDatabase(kind, async (db) => {
        await setCheckpoints(db, [100]);
        await insertRaw(
          db,
          [1, 2, 3, 4, 5].map((p) => ({ id: `old-${p}`, position: p, atMs: daysAgo(31) })),
        );
        await insertFlags(
          db,
          ["a", "b", "c", "d", "e"].map((key) => ({ key, atMs: daysAgo(400) })),
        );
        const limits = { batchSize: 2, maxBatches: 2 };

        // A whole day goes at once, however many rows; rows are still deleted in batches.
        assert.deepEqual(await pruneExpired(db, NOW, SETTINGS, limits), {
          raw_events: 0,
          raw_event_days: 1,
          risk_flags: 4,
          privacy_requests: 0,
          consent_ledger: 0,
        });
        assert.equal((await sortedIds(db)).length, 0);
        assert.equal((await flagKeys(db)).length, 1);
        assert.deepEqual(await pruneExpired(db, NOW, SETTINGS, limits), {
          raw_events: 0,
          raw_event_days: 0,
          risk_flags: 1,
          privacy_requests: 0,
          consent_ledger: 0,
        });
      }),
  });

  test({
    name: `[db] pruneExpired() on ${kind} keeps every raw event before any shard has a checkpoint`,
    ignore,
    fn: () =>
      withDatabase(kind, async (db) => {
        await insertRaw(db, [{ id: "old", position: 1, atMs: daysAgo(365) }]);
        assert.equal((await pruneExpired(db, NOW, SETTINGS)).raw_event_days, 0);
        assert.deepEqual(await sortedIds(db), ["old"]);
      }),
  });

  test({
    name:
      `[db] pruneExpired() on ${kind} with the redis queue deletes expired rows whatever the checkpoints`,
    ignore,
    fn: () =>
      withDatabase(kind, async (db) => {
        // A stream no event reached keeps checkpoint 0; the redis queue's raw rows are all applied.
        await setCheckpoints(db, [0, 7_000_000_000_000_000]);
        await insertRaw(db, [
          { id: "old", position: 1, atMs: daysAgo(31) },
          { id: "new", position: 2, atMs: daysAgo(1) },
        ]);
        const settings = { ...SETTINGS, isLogPositional: false };
        assert.equal((await pruneExpired(db, NOW, settings)).raw_event_days, 1);
        assert.deepEqual(await sortedIds(db), ["new"]);
      }),
  });
}

test("[db] pruneExpired() deletes nothing once its signal is aborted (shutdown)", () =>
  withDatabase("pglite", async (db) => {
    await setCheckpoints(db, [10]);
    await insertRaw(db, [{ id: "old", position: 1, atMs: daysAgo(365) }]);
    await insertFlags(db, [{ key: "old", atMs: daysAgo(400) }]);
    const counts = await pruneExpired(db, NOW, SETTINGS, { signal: AbortSignal.abort() });
    assert.deepEqual(counts, {
      raw_events: 0,
      raw_event_days: 0,
      risk_flags: 0,
      privacy_requests: 0,
      consent_ledger: 0,
    });
    assert.deepEqual(await sortedIds(db), ["old"]);
  }));
