import assert from "node:assert/strict";
import { clusterBatches, isRedisUp, TEST_REDIS_URL, withRedisPrefix } from "./_cluster.ts";
import { makeWireEvent } from "./fixtures.ts";
import { assertExactlyOnce } from "./_exactly_once.ts";
import { TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { type LoadResult, sendLoad, type ServerProcess, spawnServer } from "./_server_process.ts";
import { test } from "./_permissions.ts";

const ignore = TEST_DATABASE_URL === undefined || !(await isRedisUp());
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `nodes` servers sharing Redis and PostgreSQL under load sent to all of them, applies `fault`
 * to node 1 after a while, keeps the load on the others, then stops everything gracefully and checks
 * that every acknowledged event was counted exactly once.
 */
async function clusterScenario(
  nodes: number,
  fault: (victim: ServerProcess) => Promise<void>,
  check: (victimLog: string) => void,
) {
  await withRedisPrefix((prefix) =>
    withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
      const env = (id: string) => ({
        DATABASE_URL: databaseUrl,
        QUEUE: "redis",
        REDIS_URL: TEST_REDIS_URL,
        REDIS_KEY_PREFIX: prefix,
        NODE_ID: id,
        HEARTBEAT_MS: "200",
        LEASE_MS: "1000",
        FLUSH_INTERVAL_MS: "300",
        WORKERS: "1",
      });
      const servers: ServerProcess[] = [];
      for (let i = 0; i < nodes; i++) servers.push(await spawnServer(env(`node${i}`)));
      const victim = servers[1];
      let targets = servers.map((s) => s.url);
      let next = 0;
      let load: Promise<LoadResult> | undefined;
      try {
        await delay(1_000); // let ownership settle across the members
        let stopLoad!: () => void;
        load = sendLoad({
          url: () => targets[next++ % targets.length],
          makeBatch: clusterBatches(recentBase(), {
            idPrefix: "c",
            users: 307,
            titles: 23,
            tvs: 131,
          }),
          connections: 6,
          maxBatches: 3_000,
          stop: new Promise((resolve) => (stopLoad = resolve)),
        });
        await delay(1_500);
        targets = targets.filter((url) => url !== victim.url);
        await fault(victim);
        await delay(2_500);
        stopLoad();
        const result = await load;
        assert.ok(result.acknowledged.size > 1_000, `too little load: ${result.acknowledged.size}`);
        // Acknowledged events wait in Redis until their owners read them; let the cluster catch up
        // before stopping it (a stopped cluster keeps its backlog in Redis, which this check would
        // not see).
        const deadline = Date.now() + 30_000;
        while (Date.now() < deadline) {
          const summary = await (await fetch(`${servers[0].url}/stats/summary`)).json();
          if (summary.total_events >= result.acknowledged.size) break;
          await delay(200);
        }
        const logs = await Promise.all(servers.map(async (server) => {
          server.kill("SIGTERM");
          return await server.exited();
        }));
        check(logs[1]);
        for (const [i, log] of logs.entries()) {
          if (servers[i] !== victim) assert.match(log, /Stopped cleanly/, `node${i}: ${log}`);
        }
        await assertExactlyOnce({ databaseUrl }, result.acknowledged, result.sent);
      } finally {
        for (const server of servers) server.kill("SIGKILL");
        await Promise.all(servers.map((server) => server.exited()));
        await load;
      }
    })
  );
}

test({
  name: "[cluster] a node killed under load: its shards move and totals stay exact",
  ignore,
  fn: () =>
    clusterScenario(3, (victim) => {
      victim.kill("SIGKILL");
      return Promise.resolve();
    }, () => {}),
});

test({
  name: "[cluster] a node paused past its lease is fenced: its late flushes are rejected",
  ignore,
  fn: () =>
    clusterScenario(2, async (victim) => {
      victim.kill("SIGSTOP");
      await delay(3_000);
      victim.kill("SIGCONT");
    }, (victimLog) => {
      assert.match(victimLog, /Lost \d+ shard leases|newer epoch/);
    }),
});

test({
  name: "[cluster] a retry after DEDUPE_TTL_MS and a restart is counted once, not twice",
  ignore,
  fn: () =>
    withRedisPrefix((prefix) =>
      withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
        const env = {
          DATABASE_URL: databaseUrl,
          QUEUE: "redis",
          REDIS_URL: TEST_REDIS_URL,
          REDIS_KEY_PREFIX: prefix,
          NODE_ID: "solo",
          HEARTBEAT_MS: "200",
          LEASE_MS: "1000",
          FLUSH_INTERVAL_MS: "200",
          DEDUPE_TTL_MS: "1000",
          WORKERS: "1",
        };
        const t0 = recentBase();
        const events = Array.from({ length: 60 }, (_, i) =>
          makeWireEvent({
            event_id: `retry${i}`,
            user_id: `viewer${i % 7}`,
            content_id: `title${i % 3}`,
            device_id: `tv${i % 5}`,
            atMs: t0 + i,
          }));
        const summaryOf = async (url: string) => await (await fetch(`${url}/stats/summary`)).json();
        const post = async (url: string) => {
          const response = await fetch(`${url}/events/batch`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(events),
          });
          assert.equal(response.status, 202, await response.text());
        };
        const waitFor = async (url: string, check: (s: Record<string, number>) => boolean) => {
          const deadline = Date.now() + 15_000;
          let summary = await summaryOf(url);
          while (!check(summary) && Date.now() < deadline) {
            await delay(100);
            summary = await summaryOf(url);
          }
          return summary;
        };
        let server = await spawnServer(env);
        try {
          await delay(600); // the node takes its shards
          await post(server.url);
          await waitFor(server.url, (s) => s.total_events >= 60);
          server.kill("SIGTERM");
          assert.match(await server.exited(), /Stopped cleanly/);
          // The append script has forgotten the ids; the restarted worker has no memory of them.
          await delay(1_200);
          server = await spawnServer(env);
          await delay(600);
          await post(server.url);
          const summary = await waitFor(server.url, (s) => s.duplicate_events >= 60);
          await delay(800); // one more flush: a double count would show now
          const after = await summaryOf(server.url);
          assert.equal(summary.duplicate_events, 60);
          assert.equal(after.total_events, 60);
          const titles = await Promise.all(
            ["title0", "title1", "title2"].map(async (id) =>
              (await (await fetch(`${server.url}/stats/content/${id}`)).json()).events
            ),
          );
          assert.deepEqual(titles, [20, 20, 20]);
        } finally {
          server.kill("SIGKILL");
          await server.exited();
        }
      })
    ),
});

test({
  name: "[cluster] a deletion removes the user's stream entries and rows, and keeps the others'",
  ignore,
  fn: () =>
    withRedisPrefix((prefix) =>
      withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
        const server = await spawnServer({
          DATABASE_URL: databaseUrl,
          QUEUE: "redis",
          REDIS_URL: TEST_REDIS_URL,
          REDIS_KEY_PREFIX: prefix,
          NODE_ID: "solo",
          // Long heartbeats: the periodic trim (every 10) must not be what removes the entries.
          HEARTBEAT_MS: "2000",
          LEASE_MS: "6000",
          FLUSH_INTERVAL_MS: "200",
          WORKERS: "1",
          SHARDS: "8",
        });
        const { Redis } = await import("ioredis");
        const redis = new Redis(TEST_REDIS_URL);
        try {
          await delay(500);
          const t0 = recentBase();
          const events = ["erin-9z", "frank-4q"].flatMap((user) =>
            Array.from({ length: 5 }, (_, i) =>
              makeWireEvent({
                event_id: `${user}-e${i}`,
                user_id: user,
                content_id: `title${i}`,
                atMs: t0 + i,
              }))
          );
          const sent = await fetch(`${server.url}/events/batch`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(events),
          });
          assert.equal(sent.status, 202);
          const streamsHolding = async (needle: string) => {
            let found = 0;
            for (const key of await redis.keys(`${prefix}ev:*`)) {
              for (const [, fields] of await redis.xrange(key, "-", "+")) {
                if (fields[1].includes(needle)) found++;
              }
            }
            return found;
          };
          // Each event is in its user, content and device stream.
          assert.equal(await streamsHolding("erin-9z"), 15);
          const filed = await fetch(`${server.url}/privacy/requests`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ user_id: "erin-9z", type: "deletion" }),
          });
          assert.equal(filed.status, 202);
          const { id } = await filed.json();
          const deadline = Date.now() + 20_000;
          let request = await (await fetch(`${server.url}/privacy/requests/${id}`)).json();
          while (request.status !== "completed" && Date.now() < deadline) {
            await delay(100);
            request = await (await fetch(`${server.url}/privacy/requests/${id}`)).json();
          }
          assert.equal(request.status, "completed", JSON.stringify(request));
          assert.equal(await streamsHolding("erin-9z"), 0);
          assert.equal(await streamsHolding("frank-4q"), 15);
          assert.ok(request.result.log_entries >= 15, JSON.stringify(request.result));
          const summary = await (await fetch(`${server.url}/stats/summary`)).json();
          assert.equal(summary.total_events, 10);
        } finally {
          redis.disconnect();
          server.kill("SIGTERM");
          await server.exited();
        }
      })
    ),
});
