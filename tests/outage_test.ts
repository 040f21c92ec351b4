import assert from "node:assert/strict";
import { type Harness, startHarness, TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { TcpProxy } from "./_tcp_proxy.ts";
import { makeWireEvent } from "./fixtures.ts";
import { test } from "./_permissions.ts";

const ignore = TEST_DATABASE_URL === undefined;

function viaProxy(url: string, proxy: TcpProxy): string {
  const parsed = new URL(url);
  parsed.hostname = "127.0.0.1";
  parsed.port = String(proxy.port);
  return parsed.toString();
}

async function sendOne(h: Harness, id: string, atMs: number): Promise<number> {
  const res = await h.post("/events", makeWireEvent({ event_id: id, user_id: `v-${id}`, atMs }));
  await res.body?.cancel();
  return res.status;
}

test({
  name:
    "[outage] QUEUE=postgres: database down gives 503 and degraded readiness, totals exact after",
  ignore,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
      const proxy = TcpProxy.start(Number(new URL(databaseUrl).port || 5432));
      const h = await startHarness({
        databaseUrl: viaProxy(databaseUrl, proxy),
        queue: "postgres",
      });
      const t0 = recentBase();
      let acknowledged = 0;
      try {
        for (let i = 0; i < 20; i++) {
          if ((await sendOne(h, `before${i}`, t0 + i)) === 202) acknowledged++;
        }
        assert.equal(acknowledged, 20);
        await proxy.cut();
        const refused = await h.post("/events", makeWireEvent({ event_id: "during", atMs: t0 }));
        assert.equal(refused.status, 503);
        assert.equal(refused.headers.get("retry-after"), "1");
        await refused.body?.cancel();
        const ready = await h.get("/readyz");
        assert.equal(ready.status, 503);
        assert.equal((await ready.json()).status, "degraded");
        proxy.restore();
        for (let i = 0; i < 20; i++) {
          if ((await sendOne(h, `after${i}`, t0 + 100 + i)) === 202) acknowledged++;
        }
        await h.flush();
        assert.equal((await h.json("/stats/summary")).total_events, acknowledged);
        assert.equal((await h.get("/readyz")).status, 200);
      } finally {
        await h.pipeline.stop();
        await proxy.cut();
      }
    }),
});

test({
  name:
    "[outage] QUEUE=memory: flushes retry with backoff, ingest 503s when buffers fill, nothing lost",
  ignore,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
      const proxy = TcpProxy.start(Number(new URL(databaseUrl).port || 5432));
      const h = await startHarness({
        databaseUrl: viaProxy(databaseUrl, proxy),
        queue: "memory",
        workers: 1,
        maxPendingEvents: 30,
      });
      const t0 = recentBase();
      let acknowledged = 0;
      try {
        await proxy.cut();
        // Accepted into memory until the bound, then refused.
        let status = 202;
        for (let i = 0; i < 100 && status === 202; i++) {
          status = await sendOne(h, `m${i}`, t0 + i);
          if (status === 202) acknowledged++;
          const deadline = Date.now() + 2_000;
          while (
            h.pipeline.region.health().workers[0].pendingEvents < acknowledged &&
            Date.now() < deadline
          ) {
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        }
        assert.equal(status, 503);
        assert.equal(acknowledged, 30);
        const errors = await h.pipeline.region.flush();
        assert.equal(errors.length, 1, "flush should fail while the database is away");
        const ready = await h.get("/readyz");
        assert.equal(ready.status, 503);
        assert.match(JSON.stringify(await ready.json()), /flush failing/);
        proxy.restore();
        await h.flush();
        assert.equal((await h.json("/stats/summary")).total_events, acknowledged);
        assert.equal(await sendOne(h, "recovered", t0 + 500), 202);
      } finally {
        await h.pipeline.stop();
        await proxy.cut();
      }
    }),
});
