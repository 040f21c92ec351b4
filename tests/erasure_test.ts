import assert from "node:assert/strict";
import { sql } from "kysely";
import pg from "pg";
import {
  type Harness,
  startHarness,
  TEST_DATABASE_URL,
  testPipelineOnEveryDatabase,
  withFreshPostgres,
} from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { makeWireEvent } from "./fixtures.ts";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.ts";
import { test } from "./_permissions.ts";
import { shardOf, workerOfShard } from "../actors/shard_of.ts";

/** Rows of every table whose text holds `needle`, by table: what a `pg_dump` would show. */
async function tracesOf(db: Kysely<Database>, needle: string): Promise<Record<string, number>> {
  const tables = await sql<{ name: string }>`select table_name as name
    from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'`
    .execute(db);
  const found: Record<string, number> = {};
  for (const { name } of tables.rows) {
    const result = await sql<{ n: string | number }>`select count(*) as n from ${sql.table(name)} t
      where t::text like ${"%" + needle + "%"}`.execute(db);
    const n = Number(result.rows[0].n);
    if (n > 0) found[name] = n;
  }
  return found;
}

interface RequestRecord {
  id: string;
  status: string;
  type: string;
  user_id: string;
  due_at: string;
  received_at: string;
  is_repeat?: boolean;
  result: Record<string, number> | null;
}

async function fileRequest(h: Harness, body: unknown): Promise<RequestRecord> {
  const res = await h.post("/privacy/requests", body);
  assert.equal(res.status, 202, await res.clone().text());
  return await res.json();
}

function aliceAndBob(t0: number) {
  const alice = Array.from({ length: 10 }, (_, i) =>
    makeWireEvent({
      event_id: `alice-evt-${i}`,
      user_id: "alice-7f3",
      device_id: "alice-tv",
      content_id: `title${i % 3}`,
      region: ["DE", "FR", "IT", "ES", "PL"][i % 5],
      has_consent: i % 2 === 0,
      ip_address: `198.51.100.${i}`,
      atMs: t0 + i * 1_000,
    }));
  const bob = Array.from({ length: 5 }, (_, i) =>
    makeWireEvent({
      event_id: `bob-evt-${i}`,
      user_id: "bob-2c1",
      device_id: "bob-tv",
      content_id: `title${i % 3}`,
      atMs: t0 + i * 1_000,
    }));
  return { alice, bob };
}

test("[privacy] a deletion erases the user everywhere, keeps aggregates, and survives a restart", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-erasure-" });
  const config = { queue: "postgres" as const, dataDir };
  let h = await startHarness(config);
  try {
    const t0 = recentBase();
    const { alice, bob } = aliceAndBob(t0);
    await h.send([...alice, ...bob]);
    await h.flush();
    const before = await h.json<{ total_events: number }>("/stats/summary");
    assert.equal(before.total_events, 15);
    assert.ok(Object.keys(await tracesOf(h.pipeline.db, "alice-7f3")).length > 0);

    const request = await fileRequest(h, { user_id: "alice-7f3", type: "deletion" });
    assert.equal(request.type, "deletion");
    // GDPR: one calendar month to answer.
    const due = new Date(request.received_at);
    due.setUTCMonth(due.getUTCMonth() + 1);
    assert.equal(Date.parse(request.due_at), due.getTime());

    // After the 202: a new event, and a TV retrying an event that is being erased.
    await h.send([
      makeWireEvent({ event_id: "alice-after", user_id: "alice-7f3", atMs: Date.now() + 1_000 }),
      alice[0],
    ]);
    await h.pipeline.eraser.idle();
    const done = await h.json<RequestRecord>(`/privacy/requests/${request.id}`);
    assert.equal(done.status, "completed", JSON.stringify(done));
    assert.equal(done.result?.raw_events, 10);
    assert.ok(done.user_id.startsWith("erased-"), done.user_id);
    await h.flush();

    assert.deepEqual(await tracesOf(h.pipeline.db, "alice-7f3"), {});
    assert.deepEqual(await tracesOf(h.pipeline.db, "alice-tv"), {});
    assert.deepEqual(await tracesOf(h.pipeline.db, "198.51.100."), {});
    assert.ok(Object.keys(await tracesOf(h.pipeline.db, "bob-2c1")).length > 0);

    // Anonymous aggregates stay; the new event counts once, the retried erased one is a duplicate.
    const after = await h.json<{ total_events: number; duplicate_events: number }>(
      "/stats/summary",
    );
    assert.equal(after.total_events, 16);
    assert.ok(after.duplicate_events >= 1);
    // The event after the request is flagged under the pseudonym, not the id.
    const retention = await h.json<{ items: Array<{ user_id: string; event_id: string }> }>(
      "/compliance/events?rule=retention",
    );
    assert.deepEqual(retention.items.map((f) => [f.user_id, f.event_id]), [
      [done.user_id, "alice-after"],
    ]);

    // A repeat is answered with the first record.
    const repeat = await fileRequest(h, { user_id: "alice-7f3", type: "deletion" });
    assert.equal(repeat.id, request.id);
    assert.equal(repeat.is_repeat, true);

    // Restart: the log replays, and nothing about the user comes back.
    await h.pipeline.stop();
    h = await startHarness(config);
    await h.send([
      makeWireEvent({ event_id: "alice-later", user_id: "alice-7f3", atMs: Date.now() + 1_000 }),
    ]);
    await h.flush();
    assert.deepEqual(await tracesOf(h.pipeline.db, "alice-7f3"), {});
    const restarted = await h.json<{ total_events: number }>("/stats/summary");
    assert.equal(restarted.total_events, 17);
    const flagged = await h.json<{ items: Array<{ user_id: string; event_id: string }> }>(
      "/compliance/events?rule=retention",
    );
    assert.ok(
      flagged.items.some((f) => f.event_id === "alice-later" && f.user_id === done.user_id),
    );
  } finally {
    await h.pipeline.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});

test("[privacy] an access request exports exactly one user's data", async () => {
  const h = await startHarness({ queue: "postgres" });
  try {
    const { alice, bob } = aliceAndBob(recentBase());
    await h.send([...alice, ...bob]);
    await h.flush();
    // A reviewer's decision about one of her flags is hers to see too.
    const herFlags = await h.json<{ items: Array<{ id: number }> }>(
      "/compliance/events?user_id=alice-7f3",
    );
    const reviewed = await h.pipeline.app.request(
      `http://test/compliance/flags/${herFlags.items[0].id}`,
      {
        method: "PATCH",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ status: "acknowledged" }),
      },
    );
    assert.equal(reviewed.status, 200, await reviewed.clone().text());
    const request = await fileRequest(h, {
      user_id: "alice-7f3",
      type: "access",
      jurisdiction: "ccpa",
    });
    assert.equal(request.status, "completed");
    assert.equal(Date.parse(request.due_at) - Date.parse(request.received_at), 45 * 86_400_000);
    const exported = await h.json<{
      data: { events: Array<{ event_id: string }>; flags: unknown[]; requests: unknown[] };
    }>(`/privacy/requests/${request.id}/export`);
    assert.deepEqual(
      exported.data.events.map((e) => e.event_id).sort(),
      alice.map((e) => e.event_id).sort(),
    );
    assert.ok(exported.data.flags.length > 0, "alice's privacy flags are hers");
    const decided = (exported.data.flags as Array<{ history: Array<{ to_status: string }> }>)
      .flatMap((f) => f.history.map((entry) => entry.to_status));
    assert.deepEqual(decided, ["acknowledged"]);
    assert.equal(exported.data.requests.length, 1);
    assert.ok(!JSON.stringify(exported).includes("bob"));
    // An access request is answered anew each time; a deletion's export does not exist.
    const second = await fileRequest(h, { user_id: "alice-7f3", type: "access" });
    assert.notEqual(second.id, request.id);
    const deletion = await fileRequest(h, { user_id: "bob-2c1", type: "deletion" });
    assert.equal((await h.get(`/privacy/requests/${deletion.id}/export`)).status, 404);
  } finally {
    await h.pipeline.stop();
  }
});

test("[privacy] requests are listed newest first with filters, and bad filters get 400", async () => {
  const h = await startHarness({ queue: "postgres" });
  try {
    for (
      const [user, type] of [["u1", "do_not_track"], ["u2", "opt_out_sale_share"], ["u3", "access"]]
    ) {
      const record = await fileRequest(h, { user_id: user, type });
      assert.equal(record.status, "completed");
    }
    const all = await h.json<{ items: RequestRecord[]; next_cursor: string | null }>(
      "/privacy/requests?limit=2",
    );
    assert.deepEqual(all.items.map((r) => r.user_id), ["u3", "u2"]);
    const rest = await h.json<{ items: RequestRecord[]; next_cursor: string | null }>(
      `/privacy/requests?limit=2&cursor=${all.next_cursor}`,
    );
    assert.deepEqual(rest.items.map((r) => r.user_id), ["u1"]);
    assert.equal(rest.next_cursor, null);
    const dnt = await h.json<{ items: RequestRecord[] }>(
      "/privacy/requests?type=do_not_track&status=",
    );
    assert.deepEqual(dnt.items.map((r) => r.user_id), ["u1"]);
    const overdue = await h.json<{ items: RequestRecord[] }>("/privacy/requests?overdue=true");
    assert.equal(overdue.items.length, 0);
    assert.equal((await h.get("/privacy/requests?status=lost")).status, 400);
    assert.equal((await h.get("/privacy/requests/999999")).status, 404);
    assert.equal((await h.get("/privacy/requests/abc")).status, 400, "not an id at all");
  } finally {
    await h.pipeline.stop();
  }
});

test("[privacy] a do-not-track filed through the API after a TV's setting stays in force", async () => {
  const h = await startHarness({ queue: "postgres" });
  try {
    const now = Date.now();
    await h.send([
      makeWireEvent({
        event_id: "d1",
        user_id: "dnt-user",
        do_not_track: true,
        atMs: now - 60_000,
      }),
    ]);
    await h.flush();
    const record = await fileRequest(h, { user_id: "dnt-user", type: "do_not_track" });
    assert.equal(record.is_repeat, true);
    assert.equal((record as unknown as { source: string }).source, "api");
    // The TV turns its setting off; the person's request still holds.
    await h.send([
      makeWireEvent({ event_id: "d2", user_id: "dnt-user", do_not_track: false, atMs: now + 500 }),
      makeWireEvent({ event_id: "d3", user_id: "dnt-user", atMs: now + 1_000 }),
    ]);
    await h.flush();
    const flagged = await h.json<{ items: Array<{ event_id: string }> }>(
      "/compliance/events?rule=retention",
    );
    assert.ok(flagged.items.some((f) => f.event_id === "d3"), JSON.stringify(flagged.items));
  } finally {
    await h.pipeline.stop();
  }
});

test({
  name: "[privacy] a deletion waits for an event of the user that was still committing",
  ignore: TEST_DATABASE_URL === undefined,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
      const h = await startHarness({ queue: "postgres", databaseUrl });
      const blocker = new pg.Client({ connectionString: databaseUrl });
      await blocker.connect();
      try {
        const { alice } = aliceAndBob(recentBase());
        await h.send(alice);
        await h.flush();
        // Hold the next append in its COPY: an uncommitted row with the event id it will write.
        await blocker.query("begin");
        await blocker.query(`create temp table held as
          select * from raw_events where event_id = 'alice-evt-0'`);
        await blocker.query(
          `update held set event_id = 'alice-late', position = position + 1000000`,
        );
        await blocker.query("insert into raw_events select * from held");
        const late = h.post("/events/batch", [
          makeWireEvent({ event_id: "alice-late", user_id: "alice-7f3", atMs: recentBase() }),
        ]);
        await new Promise((resolve) => setTimeout(resolve, 300)); // the append is waiting now
        const request = await fileRequest(h, { user_id: "alice-7f3", type: "deletion" });
        // Long enough for every erasure pass that does not wait for the append.
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        await blocker.query("rollback");
        assert.equal((await late).status, 202, "the event was accepted before the deletion");
        await h.pipeline.eraser.idle();
        const done = await h.json<RequestRecord>(`/privacy/requests/${request.id}`);
        assert.equal(done.status, "completed", JSON.stringify(done));
        assert.equal(done.result?.raw_events, 11, "the late event was erased with the others");
        assert.deepEqual(await tracesOf(h.pipeline.db, "alice-7f3"), {});
      } finally {
        await blocker.end();
        await h.pipeline.stop();
      }
    }),
});

/** The first `count` ids `prefix-0`, `prefix-1`, ... whose shard lives in worker 0 of 2. */
function idsOnWorkerZero(prefix: string, count: number, shards: number): string[] {
  const ids: string[] = [];
  for (let i = 0; ids.length < count; i++) {
    if (workerOfShard(shardOf(`${prefix}-${i}`, shards), 2) === 0) ids.push(`${prefix}-${i}`);
  }
  return ids;
}

/**
 * 40 events of two users whose users, titles and TVs all live in worker 0, then no traffic: worker
 * 1 sees no event at all, and its checkpoints must still follow the log.
 */
async function deletionOnQuietServer(h: Harness): Promise<void> {
  const [alice, bob] = idsOnWorkerZero("quiet-user", 2, h.config.shards);
  const [title] = idsOnWorkerZero("quiet-title", 1, h.config.shards);
  const [aliceTv, bobTv] = idsOnWorkerZero("quiet-tv", 2, h.config.shards);
  const t0 = recentBase();
  await h.send(Array.from({ length: 40 }, (_, i) =>
    makeWireEvent({
      event_id: `quiet-${i}`,
      user_id: i % 2 === 0 ? alice : bob,
      device_id: i % 2 === 0 ? aliceTv : bobTv,
      content_id: title,
      atMs: t0 + i * 1_000,
    })));
  const request = await fileRequest(h, { user_id: alice, type: "deletion" });
  await h.pipeline.eraser.idle();
  const done = await h.json<RequestRecord>(`/privacy/requests/${request.id}`);
  assert.equal(done.status, "completed", JSON.stringify(done));
  assert.equal(done.result?.raw_events, 20);
  assert.deepEqual(await tracesOf(h.pipeline.db, alice), {});
}

testPipelineOnEveryDatabase(
  "privacy",
  "a deletion completes on a quiet server whose second worker saw no event",
  { queue: "postgres" },
  deletionOnQuietServer,
);

test("[privacy] requests about an erased user are filed under the pseudonym, never in clear", async () => {
  const h = await startHarness({ queue: "postgres" });
  try {
    const { alice } = aliceAndBob(recentBase());
    await h.send(alice);
    const deletion = await fileRequest(h, { user_id: "alice-7f3", type: "deletion" });
    assert.ok(deletion.user_id.startsWith("erased-"), "the deletion names the pseudonym at once");
    await h.pipeline.eraser.idle();
    const later = [];
    for (const type of ["access", "do_not_track", "opt_out_sale_share"]) {
      later.push(await fileRequest(h, { user_id: "alice-7f3", type }));
    }
    assert.deepEqual(later.map((r) => r.user_id), later.map(() => deletion.user_id));
    assert.deepEqual(await tracesOf(h.pipeline.db, "alice-7f3"), {});
  } finally {
    await h.pipeline.stop();
  }
});
