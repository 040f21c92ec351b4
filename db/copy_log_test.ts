import assert from "node:assert/strict";
import { OPTIONAL_FIELDS } from "../rules/fields.ts";
import { type Kysely, sql } from "kysely";
// @ts-types="@types/pg"
import pg from "pg";
import { type AppendPath, CopyLogWriter, copyText, iso, RecentFingerprints } from "./copy_log.ts";
import { openDatabase } from "./client.ts";
import { appendToLog, type PositionedRow, readLog } from "./log_store.ts";
import { migrateToLatest } from "./migrate.ts";
import { DAY_MS, ensureDays } from "./partitions.ts";
import type { Database } from "./schema.ts";
import { makeEvent, T0 } from "../tests/fixtures.ts";
import { TEST_DATABASE_URL, withFreshPostgres } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";

/**
 * A pool that, like the server's, listens for connection errors: a connection a failed COPY closed
 * may still be closing when the test drops its database.
 */
function testPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  const ignore = () => {};
  pool.on("error", ignore);
  pool.on("connect", (client) => client.on("error", ignore));
  return pool;
}

interface Setup {
  db: Kysely<Database>;
  writer: CopyLogWriter;
  paths: AppendPath[];
}

/** A fresh migrated PostgreSQL database and a writer on it; `recentIds` sizes its fingerprints. */
async function withWriter(
  fn: (s: Setup) => Promise<void>,
  recentIds = 1_000,
  connections = 1,
): Promise<void> {
  await withFreshPostgres(TEST_DATABASE_URL!, async (url) => {
    const { db } = await openDatabase({ databaseUrl: url, dataDir: "" });
    const paths: AppendPath[] = [];
    const writer = new CopyLogWriter({
      pool: testPool(url, connections),
      insert: (rows) => appendToLog(db, rows),
      recentIds,
      onPath: (path) => paths.push(path),
    });
    try {
      await migrateToLatest(db);
      // The log's appender creates its days' partitions before appending (see actors/log/mod.ts).
      await ensureDays(db, T0 - 2 * DAY_MS, T0 + 2 * DAY_MS);
      await fn({ db, writer, paths });
    } finally {
      await writer.close();
      await db.destroy();
    }
  });
}

let nextPosition = 1;

/** An event's timestamp, the same each time its id is sent: a retry repeats its event. */
function timeOf(eventId: string): number {
  let h = 0;
  for (let i = 0; i < eventId.length; i++) h = (h * 31 + eventId.charCodeAt(i)) % 86_400;
  return T0 + h * 1_000;
}

/** Rows with the next free positions, as the postgres log hands them out. */
function rows(ids: string[]): PositionedRow[] {
  return ids.map((eventId, i) =>
    makeEvent({ eventId, userId: `u-${i % 7}`, atMs: timeOf(eventId), position: nextPosition++ })
  );
}

async function duplicateCounter(db: Kysely<Database>): Promise<number> {
  const row = await db.selectFrom("stat_counters").select("value")
    .where("name", "=", "duplicate_events").executeTakeFirst();
  return Number(row?.value ?? 0);
}

async function storedCount(db: Kysely<Database>): Promise<number> {
  const row = await sql<{ n: number }>`select count(*)::int as n from raw_events`.execute(db);
  return row.rows[0].n;
}

const onPostgres = { ignore: TEST_DATABASE_URL === undefined };

Deno.test("copyText() escapes COPY's special characters and writes \\N for nulls", () => {
  const [row] = rows(["e\t1"]);
  const text = copyText([
    { ...row, position: 7, errorCode: "a\\b\nc", metadata: { note: "x\ty" } },
  ]);
  const fields = text.slice(0, -1).split("\t");
  // 22 columns, then one per optional field (rules/fields.ts), all \N here.
  assert.equal(fields.length, 22 + OPTIONAL_FIELDS.length);
  assert.deepEqual(fields.slice(22), OPTIONAL_FIELDS.map(() => "\\N"));
  assert.equal(fields[0], "e\\t1");
  assert.equal(fields[1], "7");
  assert.equal(fields[13], "a\\\\b\\nc");
  // platform and app_version have columns of their own; the other keys stay JSON.
  assert.deepEqual(fields.slice(16, 19), ["\\N", "\\N", '{"note":"x\\\\ty"}']);
  assert.equal(fields[20], "\\N");
  assert.equal(fields[21], "\\N", "no consent signal");
  const [withConsent] = copyText([{
    ...row,
    position: 8,
    consent: { source: "purposes", purposes: 129 } as never,
  }]).slice(0, -1).split("\t").slice(21);
  assert.deepEqual(JSON.parse(withConsent), { source: "purposes", purposes: 129 });
  const dims = copyText([{ ...row, metadata: { platform: "tizen", app_version: "5.2" } }])
    .slice(0, -1).split("\t");
  assert.deepEqual(dims.slice(16, 19), ["tizen", "5.2", "\\N"], "no JSON for the usual two keys");
});

Deno.test("iso() writes what Date#toISOString writes", () => {
  const times = [0, 1, 999, 86_399_999, Date.UTC(2026, 10, 30, 23, 59, 59, 999), T0 + 12_345];
  for (let i = 0; i < 2_000; i++) times.push(T0 + i * 7_919_123);
  for (const ms of times) assert.equal(iso(ms), new Date(ms).toISOString(), String(ms));
});

Deno.test("RecentFingerprints tells 100,000 similar ids apart from ids it never saw", () => {
  const recent = new RecentFingerprints(200_000);
  for (let i = 0; i < 100_000; i++) recent.add(`e-${i}`);
  for (let i = 0; i < 100_000; i++) assert.equal(recent.has(`e-${i}`), true);
  let falseHits = 0;
  for (let i = 0; i < 100_000; i++) if (recent.has(`f-${i}`)) falseHits++;
  assert.equal(falseHits, 0);
});

Deno.test("RecentFingerprints forgets the oldest generation once the newest is full", () => {
  const recent = new RecentFingerprints(4);
  for (const id of ["a", "b"]) recent.add(id);
  for (const id of ["c", "d"]) recent.add(id);
  assert.equal(recent.has("a") && recent.has("d"), true);
  recent.add("e");
  assert.equal(recent.has("a") || recent.has("b"), false);
  assert.equal(recent.has("c") && recent.has("d") && recent.has("e"), true);
});

test({
  name: "[postgres] CopyLogWriter COPYs new events with contiguous positions, read back intact",
  ...onPostgres,
  fn: () =>
    withWriter(async ({ db, writer, paths }) => {
      const group = rows(["a", "b", "c"]);
      group[1] = { ...group[1], errorCode: "E\t42\\x", metadata: { app_version: "1.2\n3" } };
      const result = await writer.append(group);
      assert.deepEqual(paths, ["copy"]);
      const positions = ["a", "b", "c"].map((id) => result.positions.get(id)!);
      assert.deepEqual(positions, [positions[0], positions[0] + 1, positions[0] + 2]);
      const back = await readLog(db, 0, 1_000, 10);
      assert.deepEqual(back.map((e) => e.eventId), ["a", "b", "c"]);
      assert.equal(back[1].errorCode, "E\t42\\x");
      assert.deepEqual(back[1].metadata, { app_version: "1.2\n3" });
      assert.equal(back[0].atMs, group[0].atMs);
      assert.equal(back[0].receivedAtMs, group[0].receivedAtMs);
    }),
});

test({
  name: "[postgres] CopyLogWriter counts a repeat inside a group once and stores the event once",
  ...onPostgres,
  fn: () =>
    withWriter(async ({ db, writer, paths }) => {
      const result = await writer.append(rows(["a", "b", "a"]));
      assert.deepEqual(paths, ["copy"]);
      assert.equal(result.duplicates, 1);
      assert.equal(await storedCount(db), 2);
      assert.equal(await duplicateCounter(db), 1);
    }),
});

test({
  name:
    "[postgres] CopyLogWriter marks the first of each repeated id stored and the rest duplicates",
  ...onPostgres,
  fn: () =>
    withWriter(async ({ db, writer, paths }) => {
      const group = rows(["x", "y", "x", "z", "y", "x"]);
      const result = await writer.append(group);
      assert.deepEqual(paths, ["copy"]);
      assert.deepEqual([...result.stored], [1, 1, 0, 1, 0, 0]);
      assert.equal(result.duplicates, 3);
      assert.deepEqual(
        (await readLog(db, 0, 1_000, 10)).map((e) => [e.eventId, e.position]),
        [["x", group[0].position], ["y", group[1].position], ["z", group[3].position]],
      );
      assert.equal(await duplicateCounter(db), 3);
    }),
});

test({
  name: "[postgres] CopyLogWriter falls back to the exact insert for retries, recent or old",
  ...onPostgres,
  fn: () =>
    withWriter(async ({ db, writer, paths }) => {
      await writer.append(rows(["a", "b"]));
      // Recent: the fingerprint sends the group to the insert path at once.
      const recent = await writer.append(rows(["a", "c"]));
      assert.equal(recent.duplicates, 1);
      assert.deepEqual(paths, ["copy", "insert"]);
      // Old (forgotten by a writer that remembers 1 id): COPY fails on the key, the insert decides.
      await withWriterOn(db, async (forgetful, forgetfulPaths) => {
        const old = await forgetful.append(rows(["b", "d"]));
        assert.equal(old.duplicates, 1);
        assert.deepEqual(forgetfulPaths, ["insert"]);
      });
      assert.equal(await storedCount(db), 4);
      assert.equal(await duplicateCounter(db), 2);
    }),
});

test({
  name:
    "[postgres] appendToLog stores new events and counts every kind of duplicate, in one statement",
  ...onPostgres,
  fn: () =>
    withWriter(async ({ db }) => {
      await sql`insert into erased_events (event_hash, erased_at) values (md5('gone'), now())`
        .execute(db);
      const first = await appendToLog(db, rows(["a", "b", "a"]));
      assert.deepEqual([...first.positions.keys()], ["a", "b"]);
      assert.equal(first.duplicates, 1);
      // A retry of a stored event and of an erased one: nothing stored, both counted.
      const second = await appendToLog(db, rows(["b", "gone", "c"]));
      assert.deepEqual([...second.positions.keys()], ["c"]);
      assert.equal(second.duplicates, 2);
      assert.equal(await storedCount(db), 3);
      assert.equal(await duplicateCounter(db), 3);
      const back = await readLog(db, 0, 1_000, 10);
      assert.deepEqual(back.map((e) => e.position), [
        first.positions.get("a"),
        first.positions.get("b"),
        second.positions.get("c"),
      ]);
    }),
});

test({
  name: "[postgres] CopyLogWriter treats the retry of an erased event as a duplicate",
  ...onPostgres,
  fn: () =>
    withWriter(async ({ db, writer }) => {
      await sql`insert into erased_events (event_hash, erased_at) values (md5('gone'), now())`
        .execute(db);
      const fresh = await writer.append(rows(["x", "y"]));
      assert.equal(fresh.duplicates, 0);
      const retry = await writer.append(rows(["gone", "z"]));
      assert.equal(retry.positions.has("gone"), false);
      assert.equal(retry.duplicates, 1);
      assert.equal(await storedCount(db), 3);
    }),
});

test({
  name: "[postgres] CopyLogWriter under load: 40 groups with old retries mixed in, each event once",
  ...onPostgres,
  fn: () =>
    withWriter(async ({ db, writer, paths }) => {
      let expectedDuplicates = 0;
      const stored = new Set<string>();
      for (let g = 0; g < 40; g++) {
        const ids = Array.from({ length: 500 }, (_, i) => `g${g}-${i}`);
        // Every fourth group retries an event of a group long gone from the writer's memory.
        if (g % 4 === 3) {
          ids[250] = "g0-7";
          expectedDuplicates++;
        }
        const result = await writer.append(rows(ids));
        for (const id of result.positions.keys()) stored.add(id);
      }
      assert.equal(await storedCount(db), stored.size);
      assert.equal(stored.size, 40 * 500 - expectedDuplicates);
      assert.equal(await duplicateCounter(db), expectedDuplicates);
      assert.ok(paths.includes("copy") && paths.includes("insert"), paths.join(","));
      const positions = await sql<{ n: number; distinct_n: number }>`
        select count(*)::int as n, count(distinct position)::int as distinct_n from raw_events`
        .execute(db);
      assert.equal(positions.rows[0].n, positions.rows[0].distinct_n);
    }, 100),
});

/** A second writer on the same database that remembers almost nothing. */
async function withWriterOn(
  db: Kysely<Database>,
  fn: (writer: CopyLogWriter, paths: AppendPath[]) => Promise<void>,
): Promise<void> {
  const url = (await sql<{ db: string }>`select current_database() as db`.execute(db)).rows[0].db;
  const server = new URL(TEST_DATABASE_URL!);
  server.pathname = `/${url}`;
  const paths: AppendPath[] = [];
  const writer = new CopyLogWriter({
    pool: testPool(server.toString(), 1),
    insert: (rows) => appendToLog(db, rows),
    recentIds: 1,
    onPath: (path) => paths.push(path),
  });
  try {
    await fn(writer, paths);
  } finally {
    await writer.close();
  }
}

test({
  name: "[postgres] CopyLogWriter: concurrent groups sharing ids store each id once",
  ...onPostgres,
  fn: () =>
    withWriter(
      async ({ db, writer }) => {
        // Four groups at once, each holding ids of the others in a different order: key conflicts
        // and deadlocks between them must end with every id stored once and the rest counted.
        const ids = Array.from({ length: 40 }, (_, i) => `shared-${i}`);
        const groups = [0, 1, 2, 3].map((g) =>
          rows([...ids.slice(g * 10), ...ids.slice(0, g * 10)].concat([`own-${g}`]))
        );
        const results = await Promise.allSettled(groups.map((g) => writer.append(g)));
        const stored = new Set<string>();
        let duplicates = 0;
        for (const r of results) {
          if (r.status === "rejected") continue;
          for (const id of r.value.positions.keys()) {
            assert.equal(stored.has(id), false, `${id} stored twice`);
            stored.add(id);
          }
          duplicates += r.value.duplicates;
        }
        assert.equal(await storedCount(db), stored.size);
        assert.equal(await duplicateCounter(db), duplicates);
        assert.ok(results.some((r) => r.status === "fulfilled"));
      },
      1_000,
      4,
    ),
});

test({
  name:
    "[postgres] a retry days later counts once; the same id with another day's timestamp is another event",
  ...onPostgres,
  fn: () =>
    withWriter(async ({ db, writer }) => {
      const [first] = rows(["tv-evt-1"]);
      assert.equal((await writer.append([first])).stored[0], 1);
      // Three days later the TV retries it (same timestamp) amid events of other days: a duplicate.
      const later = rows(["day-2-a", "day-2-b"]).map((r) => ({ ...r, atMs: T0 + 2 * DAY_MS }));
      const retry = { ...first, position: nextPosition++, receivedAtMs: T0 + 3 * DAY_MS };
      const result = await writer.append([later[0], retry, later[1]]);
      assert.deepEqual([...result.stored], [1, 0, 1]);
      assert.equal(await duplicateCounter(db), 1);
      // A TV that reuses the id for a new event the next day: stored, and counted as an event.
      const reused = { ...first, position: nextPosition++, atMs: first.atMs + DAY_MS };
      assert.deepEqual([...(await writer.append([reused])).stored], [1]);
      assert.equal(await storedCount(db), 4);
      assert.equal(await duplicateCounter(db), 1);
    }),
});
