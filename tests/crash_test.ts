import assert from "node:assert/strict";
import { sql } from "kysely";
import { openDatabase } from "../db/client.ts";
import { TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { sendLoad, spawnServer } from "./_server_process.ts";
import { makeWireEvent } from "./fixtures.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function makeBatch(t0: number, prefix: string) {
  return (n: number) =>
    Array.from({ length: 50 }, (_, i) => {
      const k = n * 50 + i;
      return makeWireEvent({
        event_id: `${prefix}${k}`,
        user_id: `viewer${k % 211}`,
        content_id: `title${k % 17}`,
        device_id: `tv${k % 101}`,
        event_type: k % 10 === 0 ? "ERROR" : "PLAY",
        error_code: k % 10 === 0 ? "DECODER_ERROR" : null,
        atMs: t0 + k,
      });
    });
}

/**
 * Loads a server, kills it with SIGKILL mid-load, restarts it on the same database, sends more (and
 * re-sends acknowledged events), stops it gracefully, then checks the database: every acknowledged
 * event is stored once, and the aggregates count exactly the stored events.
 */
async function killNineScenario(env: Record<string, string>, databaseUrl: string | undefined) {
  const t0 = recentBase();
  const first = await spawnServer(env);
  const killed = delay(1_500).then(() => first.kill("SIGKILL"));
  const load1 = await sendLoad({
    url: first.url,
    makeBatch: makeBatch(t0, "k"),
    connections: 8,
    maxBatches: 4_000,
    stop: killed.then(() => delay(200)),
  });
  await first.exited();
  assert.ok(
    load1.acknowledged.size > 500,
    `too little load before the kill: ${load1.acknowledged.size}`,
  );

  const second = await spawnServer(env);
  const load2 = await sendLoad({
    url: second.url,
    makeBatch: makeBatch(t0 + 1_000_000, "r"),
    connections: 4,
    maxBatches: 20,
    stop: new Promise(() => {}),
  });
  // A client retrying events the first server acknowledged: counted once.
  const retried = [...load1.acknowledged].slice(0, 40).map((id) =>
    makeWireEvent({ event_id: id, atMs: t0 })
  );
  const retry = await fetch(`${second.url}/events/batch`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(retried),
  });
  assert.equal(retry.status, 202);
  await retry.body?.cancel();
  second.kill("SIGTERM");
  const stderr = await second.exited();
  assert.match(stderr, /Stopped cleanly/);
  // The kill left acknowledged but unflushed events: the restart must have replayed them.
  assert.match(stderr, /Replayed \d+ logged events/);

  const { db } = await openDatabase({ databaseUrl, dataDir: env.DATA_DIR ?? "" });
  try {
    const stored = new Set(
      (await db.selectFrom("raw_events").select("event_id").execute()).map((r) => r.event_id),
    );
    for (const id of [...load1.acknowledged, ...load2.acknowledged]) {
      assert.ok(stored.has(id), `acknowledged event "${id}" is missing`);
    }
    for (const id of stored) assert.ok(load1.sent.has(id) || load2.sent.has(id), `unknown "${id}"`);
    const counts = await sql<{ raw: string; totals: string; titles: string; devices: string }>`
      select
        (select count(*) from raw_events where not is_late) as raw,
        (select coalesce(sum(value), 0) from stat_counters where name like 'events:%') as totals,
        (select coalesce(sum(events), 0) from content_stats) as titles,
        (select coalesce(sum(events), 0) from device_stats) as devices`.execute(db);
    const row = counts.rows[0];
    assert.equal(Number(row.totals), Number(row.raw), "summary total differs from the log");
    assert.equal(Number(row.titles), Number(row.raw), "per-title events differ from the log");
    assert.equal(Number(row.devices), Number(row.raw), "per-device events differ from the log");
    assert.equal(
      stored.size,
      load1.acknowledged.size + load2.acknowledged.size +
        [...stored].filter((id) => !load1.acknowledged.has(id) && !load2.acknowledged.has(id))
          .length,
    );
  } finally {
    await db.destroy();
  }
}

Deno.test({
  name: "[crash] kill -9 under load loses no acknowledged event and counts none twice (PostgreSQL)",
  ignore: TEST_DATABASE_URL === undefined,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, (databaseUrl) =>
      killNineScenario(
        { DATABASE_URL: databaseUrl, QUEUE: "postgres", FLUSH_INTERVAL_MS: "1000", WORKERS: "2" },
        databaseUrl,
      )),
});

Deno.test("[crash] kill -9 under load loses no acknowledged event and counts none twice (PGlite)", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-kill9-" });
  try {
    await killNineScenario(
      { DATA_DIR: dataDir, QUEUE: "postgres", FLUSH_INTERVAL_MS: "1000", WORKERS: "2" },
      undefined,
    );
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
