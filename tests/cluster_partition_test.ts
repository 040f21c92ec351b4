import assert from "node:assert/strict";
import {
  clusterBatches,
  isRedisUp,
  leasesHeldBy,
  TEST_REDIS_URL,
  withRedisPrefix,
} from "./_cluster.ts";
import { assertExactlyOnce } from "./_exactly_once.ts";
import { TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { type LoadResult, sendLoad, type ServerProcess, spawnServer } from "./_server_process.ts";
import { TcpProxy } from "./_tcp_proxy.ts";
import { test } from "./_permissions.ts";

const ignore = TEST_DATABASE_URL === undefined || !(await isRedisUp());
/** `STRESS=1 deno task test tests/cluster_partition_test.ts` repeats each partition five times. */
const STRESS_RUNS = (await isStress()) ? 5 : 0;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const LEASE_MS = 2_000;

async function isStress(): Promise<boolean> {
  const permission = await Deno.permissions.query({ name: "env", variable: "STRESS" });
  return permission.state === "granted" && Deno.env.get("STRESS") === "1";
}

function viaProxy(url: string, proxy: TcpProxy): string {
  const parsed = new URL(url);
  parsed.hostname = "127.0.0.1";
  parsed.port = String(proxy.port);
  return parsed.toString();
}

/** `/readyz` of a node (its body whether ready or not), or null if it does not answer. */
async function readinessOf(server: ServerProcess) {
  try {
    const res = await fetch(`${server.url}/readyz`, { signal: AbortSignal.timeout(5_000) });
    return await res.json();
  } catch {
    return null;
  }
}

/**
 * Three nodes under load from six senders spread over all of them. Node 0 reaches Redis through a
 * proxy that fails for 8 s (`mode`: connections cut, or silently black-holed); 5 s after it heals,
 * node 1 loses PostgreSQL the same way for 8 s: it must give its shards up while cut, and take
 * some back after. Every acknowledged event must be counted within LEASE_MS + 10 s of the last
 * heal, exactly once, with no node reporting a stalled shard.
 */
async function partitionScenario(mode: "cut" | "blackhole"): Promise<void> {
  await withRedisPrefix((prefix) =>
    withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
      const redisProxy = TcpProxy.start(Number(new URL(TEST_REDIS_URL).port || 6379));
      const pgProxy = TcpProxy.start(Number(new URL(databaseUrl).port || 5432));
      const env = (id: string, overrides: Record<string, string> = {}) => ({
        DATABASE_URL: databaseUrl,
        QUEUE: "redis",
        REDIS_URL: TEST_REDIS_URL,
        REDIS_KEY_PREFIX: prefix,
        NODE_ID: id,
        HEARTBEAT_MS: "500",
        LEASE_MS: String(LEASE_MS),
        FLUSH_INTERVAL_MS: "500",
        WORKERS: "1",
        ...overrides,
      });
      const servers: ServerProcess[] = [
        await spawnServer(
          env("cut-from-redis", { REDIS_URL: viaProxy(TEST_REDIS_URL, redisProxy) }),
        ),
        await spawnServer(env("cut-from-pg", { DATABASE_URL: viaProxy(databaseUrl, pgProxy) })),
        await spawnServer(env("steady")),
      ];
      let next = 0;
      let load: Promise<LoadResult> | undefined;
      const fail = (proxy: TcpProxy) => (mode === "cut" ? proxy.cut() : proxy.blackhole());
      try {
        await delay(2_000); // let ownership settle across the members
        let stopLoad!: () => void;
        load = sendLoad({
          url: () => servers[next++ % servers.length].url,
          makeBatch: clusterBatches(recentBase(), {
            idPrefix: "p",
            users: 509,
            titles: 29,
            tvs: 211,
          }),
          connections: 6,
          maxBatches: 100_000,
          stop: new Promise((resolve) => (stopLoad = resolve)),
        });
        await delay(2_000);
        await fail(redisProxy);
        await delay(8_000);
        redisProxy.restore();
        await delay(5_000);
        await fail(pgProxy);
        // The node cut from PostgreSQL lets its leases go: after LEASE_MS without a commit and a
        // ping that gets no answer within LEASE_MS / 2.
        const cutAt = Date.now();
        let gaveUpAfterMs: number | null = null;
        while (Date.now() < cutAt + 8_000) {
          if (gaveUpAfterMs === null && await leasesHeldBy(prefix, "cut-from-pg") === 0) {
            gaveUpAfterMs = Date.now() - cutAt;
          }
          await delay(100);
        }
        pgProxy.restore();
        await delay(2_000);
        stopLoad();
        const result = await load;
        const healedAt = Date.now() - 2_000;
        assert.ok(result.acknowledged.size > 1_000, `too little load: ${result.acknowledged.size}`);
        let counted = 0;
        while (Date.now() < healedAt + LEASE_MS + 10_000) {
          const res = await fetch(`${servers[2].url}/stats/summary`);
          counted = (await res.json()).total_events;
          if (counted >= result.acknowledged.size) break;
          await delay(250);
        }
        const readiness = await Promise.all(servers.map(readinessOf));
        assert.ok(
          gaveUpAfterMs !== null && gaveUpAfterMs <= 2 * LEASE_MS + 1_000,
          `the node cut from PostgreSQL kept its shards: gave up after ${gaveUpAfterMs} ms ` +
            `(cut at ${new Date(cutAt).toISOString()}); ` +
            servers[1].logSoFar().slice(-6_000),
        );
        assert.ok(
          await leasesHeldBy(prefix, "cut-from-pg") > 0,
          `the node cut from PostgreSQL did not take shards back: ${JSON.stringify(readiness[1])}`,
        );
        for (const [i, ready] of readiness.entries()) {
          assert.deepEqual(
            ready.stalled_shards,
            [],
            `node ${i}: ${JSON.stringify(ready)}\n${servers[i].logSoFar().slice(-4_000)}`,
          );
        }
        assert.ok(
          counted >= result.acknowledged.size,
          `${result.acknowledged.size - counted} acknowledged events not counted ${
            LEASE_MS + 10_000
          } ms ` +
            `after healing; readiness: ${JSON.stringify(readiness)}\n` +
            servers.map((s, i) => `node ${i}:\n${s.logSoFar().slice(-3_000)}`).join("\n"),
        );
        const logs = await Promise.all(servers.map(async (server) => {
          server.kill("SIGTERM");
          return await server.exited();
        }));
        for (const [i, log] of logs.entries()) {
          assert.match(log, /Stopped cleanly/, `node ${i}: ${log}`);
        }
        await assertExactlyOnce({ databaseUrl }, result.acknowledged, result.sent);
      } finally {
        for (const server of servers) {
          server.kill("SIGKILL");
        }
        await Promise.all(servers.map((server) => server.exited()));
        await load;
        await redisProxy.close();
        await pgProxy.close();
      }
    })
  );
}

for (const mode of ["cut", "blackhole"] as const) {
  test({
    name: `[cluster] a node cut from Redis, then one cut from PostgreSQL (${mode}): every ` +
      "acknowledged event counted once within LEASE_MS + 10 s of healing",
    ignore,
    fn: () => partitionScenario(mode),
  });
  for (let run = 1; run <= STRESS_RUNS; run++) {
    test({
      name: `[cluster] stress ${run}/${STRESS_RUNS}: partition (${mode})`,
      ignore,
      fn: () => partitionScenario(mode),
    });
  }
}
