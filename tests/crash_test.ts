import assert from "node:assert/strict";
import { isRedisUp, TEST_REDIS_URL, withRedisPrefix } from "./_cluster.ts";
import { assertExactlyOnce } from "./_exactly_once.ts";
import { TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { sendLoad, spawnServer } from "./_server_process.ts";
import { makeWireEvent } from "./fixtures.ts";
import { test } from "./_permissions.ts";

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
  // With the redis log a restarted node first waits for its previous leases to expire: wait until
  // it has applied everything acknowledged before stopping it.
  const acknowledged = new Set([...load1.acknowledged, ...load2.acknowledged]).size;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const summary = await (await fetch(`${second.url}/stats/summary`)).json();
    if (summary.total_events >= acknowledged) break;
    await delay(200);
  }
  second.kill("SIGTERM");
  const stderr = await second.exited();
  assert.match(stderr, /Stopped cleanly/);
  if (env.QUEUE === "postgres") {
    // The kill left acknowledged but unflushed events: the restart must have replayed them.
    assert.match(stderr, /Replayed \d+ logged events/);
  }

  await assertExactlyOnce(
    { databaseUrl, dataDir: env.DATA_DIR },
    [...load1.acknowledged, ...load2.acknowledged],
    new Set([...load1.sent, ...load2.sent]),
  );
}

test({
  name: "[crash] kill -9 under load loses no acknowledged event and counts none twice (PostgreSQL)",
  ignore: TEST_DATABASE_URL === undefined,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, (databaseUrl) =>
      killNineScenario(
        { DATABASE_URL: databaseUrl, QUEUE: "postgres", FLUSH_INTERVAL_MS: "1000", WORKERS: "2" },
        databaseUrl,
      )),
});

test("[crash] kill -9 under load loses no acknowledged event and counts none twice (PGlite)", async () => {
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

test({
  name:
    "[crash] kill -9 under load loses no acknowledged event and counts none twice (QUEUE=redis)",
  ignore: TEST_DATABASE_URL === undefined || !(await isRedisUp()),
  fn: () =>
    withRedisPrefix((prefix) =>
      withFreshPostgres(TEST_DATABASE_URL!, (databaseUrl) =>
        killNineScenario({
          DATABASE_URL: databaseUrl,
          QUEUE: "redis",
          REDIS_URL: TEST_REDIS_URL,
          REDIS_KEY_PREFIX: prefix,
          NODE_ID: "solo",
          HEARTBEAT_MS: "200",
          LEASE_MS: "1000",
          FLUSH_INTERVAL_MS: "1000",
          WORKERS: "2",
        }, databaseUrl))
    ),
});
