/**
 * Redis failover with `REDIS_WAIT_REPLICAS=1`: two nodes under load on a primary + replica pair of
 * their own (started here, never the shared Redis); the replica falls behind, the primary is killed
 * with SIGKILL, the replica promoted (`REPLICAOF NO ONE`) and the nodes' address moved to it, as a
 * virtual IP or a managed Redis endpoint would move. No acknowledged event may be lost or counted
 * twice. (With `REDIS_WAIT_REPLICAS=0` the same run loses what the primary acknowledged while the
 * replica was behind.)
 */
import assert from "node:assert/strict";
import { clusterBatches } from "./_cluster.ts";
import { assertExactlyOnce } from "./_exactly_once.ts";
import { TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { HAS_SUITE_PERMISSIONS, test } from "./_permissions.ts";
import { recentBase } from "./_scenarios.ts";
import {
  freePort,
  type LoadResult,
  sendLoad,
  type ServerProcess,
  spawnServer,
} from "./_server_process.ts";
import { TcpProxy } from "./_tcp_proxy.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function hasRedisServer(): Promise<boolean> {
  if (!HAS_SUITE_PERMISSIONS) return false;
  try {
    const out = await new Deno.Command("redis-server", { args: ["--version"] }).output();
    return out.success;
  } catch {
    return false;
  }
}

const ignore = TEST_DATABASE_URL === undefined || !(await hasRedisServer());

/** A redis-server process of the test's own, without persistence. */
class RedisProcess {
  readonly port = freePort();
  #child: Deno.ChildProcess;
  /** Its working directory: a replica's full sync writes an RDB file there. */
  #dir = Deno.makeTempDirSync({ prefix: "ott-redis-" });

  constructor(extra: string[] = []) {
    this.#child = new Deno.Command("redis-server", {
      args: [
        "--port",
        String(this.port),
        "--dir",
        this.#dir,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        ...extra,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
  }

  /** Runs one command with redis-cli and returns its output. */
  async cli(...args: string[]): Promise<string> {
    const out = await new Deno.Command("redis-cli", {
      args: ["-p", String(this.port), ...args],
      stderr: "null",
    }).output();
    return new TextDecoder().decode(out.stdout).trim();
  }

  /** Waits until `check` holds on this server's answers (PING, replication link up, ...). */
  async until(check: () => Promise<boolean>, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!(await check().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`redis on ${this.port}: not ${what} in 10 s`);
      await delay(50);
    }
  }

  async ready(): Promise<void> {
    await this.until(async () => (await this.cli("PING")) === "PONG", "answering");
  }

  async synced(): Promise<void> {
    await this.until(
      async () => (await this.cli("INFO", "replication")).includes("master_link_status:up"),
      "in sync with its primary",
    );
  }

  /** Sends the process a signal (SIGSTOP / SIGCONT: a replica falling behind, then back). */
  signal(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // already exited
    }
  }

  async stopped(): Promise<void> {
    this.kill();
    await this.#child.status;
    await Deno.remove(this.#dir, { recursive: true });
  }
}

test({
  name: "[cluster] Redis primary killed and its replica promoted, REDIS_WAIT_REPLICAS=1: every " +
    "acknowledged event counted once",
  ignore,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
      const primary = new RedisProcess();
      await primary.ready();
      const replica = new RedisProcess();
      await replica.ready();
      await replica.cli("REPLICAOF", "127.0.0.1", String(primary.port));
      await replica.synced();
      let newReplica: RedisProcess | null = null;
      const address = TcpProxy.start(primary.port);
      const env = (id: string) => ({
        DATABASE_URL: databaseUrl,
        QUEUE: "redis",
        REDIS_URL: `redis://127.0.0.1:${address.port}`,
        REDIS_WAIT_REPLICAS: "1",
        REDIS_WAIT_TIMEOUT_MS: "500",
        NODE_ID: id,
        HEARTBEAT_MS: "500",
        LEASE_MS: "2000",
        FLUSH_INTERVAL_MS: "500",
        WORKERS: "1",
      });
      const servers: ServerProcess[] = [];
      let load: Promise<LoadResult> | undefined;
      try {
        servers.push(await spawnServer(env("a")), await spawnServer(env("b")));
        await delay(1_500); // ownership settles
        let next = 0;
        let stopLoad!: () => void;
        load = sendLoad({
          url: () => servers[next++ % servers.length].url,
          makeBatch: clusterBatches(recentBase(), {
            idPrefix: "f",
            users: 401,
            titles: 19,
            tvs: 173,
          }),
          connections: 4,
          maxBatches: 100_000,
          stop: new Promise((resolve) => (stopLoad = resolve)),
          retries: true,
        });
        await delay(3_000);
        // The replica falls behind for 1.5 s (stopped), then the primary dies: without WAIT, what
        // the primary acknowledged meanwhile is gone. The replica is promoted, the address moves
        // to it, and a new replica of it starts (until then WAIT cannot be satisfied: 503).
        replica.signal("SIGSTOP");
        await delay(1_500);
        primary.kill();
        replica.signal("SIGCONT");
        await replica.cli("REPLICAOF", "NO", "ONE");
        address.retarget(replica.port);
        newReplica = new RedisProcess(["--replicaof", "127.0.0.1", String(replica.port)]);
        await newReplica.synced();
        await delay(4_000);
        stopLoad();
        const result = await load;
        assert.ok(result.acknowledged.size > 1_000, `too little load: ${result.acknowledged.size}`);
        assert.ok((result.statuses[503] ?? 0) + (result.statuses[0] ?? 0) > 0, "no failover seen");
        let counted = 0;
        const deadline = Date.now() + 20_000;
        while (Date.now() < deadline) {
          const res = await fetch(`${servers[0].url}/stats/summary`);
          counted = (await res.json()).total_events;
          if (counted >= result.acknowledged.size) break;
          await delay(250);
        }
        assert.ok(
          counted >= result.acknowledged.size,
          `${result.acknowledged.size - counted} acknowledged events not counted 20 s after the ` +
            `failover; statuses ${JSON.stringify(result.statuses)}; node a: ` +
            servers[0].logSoFar().slice(-5_000) + "\nnode b: " +
            servers[1].logSoFar().slice(-5_000),
        );
        const logs = await Promise.all(servers.map(async (server) => {
          server.kill("SIGTERM");
          return await server.exited();
        }));
        for (const [i, log] of logs.entries()) {
          assert.match(log, /Another Redis server answers/, `node ${i} did not see the failover`);
          assert.match(log, /Stopped cleanly/, `node ${i}: ${log}`);
        }
        await assertExactlyOnce({ databaseUrl }, result.acknowledged, result.sent);
      } finally {
        for (const server of servers) server.kill("SIGKILL");
        await Promise.all(servers.map((server) => server.exited()));
        await load;
        await address.close();
        await Promise.all([primary, replica, newReplica].map((r) => r?.stopped()));
      }
    }),
});
