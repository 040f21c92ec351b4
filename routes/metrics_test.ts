import assert from "node:assert/strict";
import { type Harness, startHarness } from "../tests/_harness.ts";
import { recentBase } from "../tests/_scenarios.ts";
import { makeWireEvent } from "../tests/fixtures.ts";
import { Hono, type MiddlewareHandler } from "hono";
import type { Config } from "../config.ts";
import { httpMetrics, PipelineMetrics } from "./metrics.ts";
import { HAS_SUITE_PERMISSIONS, test } from "../tests/_permissions.ts";

/** Samples of a Prometheus text exposition, keyed `name{label="value",...}` in the order written. */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^(\S+?(?:\{.*\})?) (\S+)$/.exec(line);
    assert.ok(match !== null, `Cannot parse metrics line: ${line}`);
    samples.set(match[1], Number(match[2]));
  }
  return samples;
}

async function scrape(
  h: Harness,
  headers: Record<string, string> = {},
): Promise<Map<string, number>> {
  const res = await h.get("/metrics", headers);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parseMetrics(await res.text());
}

function ingest(samples: Map<string, number>, result: string): number | undefined {
  return samples.get(`ingest_events_total{result="${result}"}`);
}

Deno.test("PipelineMetrics counts worker flush reports and postgres-log appends", async () => {
  const metrics = new PipelineMetrics(0);
  metrics.observer.onFlushReport?.(1, {
    durationsMs: [12, 3_000],
    failures: 1,
    rows: { rawEvents: 40, flags: 3 },
    flags: { "account_sharing HIGH": 2, "privacy LOW": 1 },
  });
  // a, b (late), a again (a repeat), old (late, already stored): two duplicates.
  metrics.countAppended(
    [{ isLate: false }, { isLate: true }, { isLate: false }, { isLate: true }],
    new Uint8Array([1, 1, 0, 0]),
  );
  const samples = parseMetrics(await metrics.registry.metrics());
  assert.equal(samples.get("flush_duration_seconds_count"), 2);
  assert.equal(samples.get('flush_duration_seconds_bucket{le="0.025"}'), 1);
  assert.equal(samples.get("flush_failures_total"), 1);
  assert.equal(samples.get('flush_rows_total{table="raw_events"}'), 40);
  assert.equal(samples.get('flush_rows_total{table="flags"}'), 3);
  assert.equal(samples.get('flags_raised_total{rule="account_sharing",level="HIGH"}'), 2);
  assert.equal(samples.get('flags_raised_total{rule="privacy",level="LOW"}'), 1);
  // "a" twice: the second is a duplicate; "old" is late but not new: a duplicate, not late.
  assert.equal(samples.get('ingest_events_total{result="accepted"}'), 1);
  assert.equal(samples.get('ingest_events_total{result="late"}'), 1);
  assert.equal(samples.get('ingest_events_total{result="duplicate"}'), 2);
});

test("[metrics] GET /metrics counts accepted, rejected and late events exactly", async () => {
  const h = await startHarness();
  const t0 = recentBase();
  try {
    const before = await scrape(h);
    assert.equal(ingest(before, "accepted"), 0);
    assert.equal(ingest(before, "rejected"), 0);
    const batch = await h.post("/events/batch", [
      makeWireEvent({ event_id: "m-1", user_id: "u-1", atMs: t0 }),
      { event_id: "broken" },
      makeWireEvent({ event_id: "m-2", user_id: "u-2", atMs: t0 + 1_000 }),
      makeWireEvent({ event_id: "m-3", user_id: "u-3", atMs: t0 + 2_000, region: "Germany" }),
    ]);
    assert.equal(batch.status, 202);
    assert.equal((await h.post("/events", { event_id: "bad" })).status, 422);
    // Twenty minutes behind the watermark, with ten allowed: late.
    const late = makeWireEvent({ event_id: "m-late", user_id: "u-4", atMs: t0 - 1_200_000 });
    assert.equal((await h.post("/events", late)).status, 202);
    // A request refused as a whole (malformed JSON) rejects no event it could count.
    assert.equal((await h.post("/events/batch", "[{")).status, 400);

    const after = await scrape(h);
    assert.equal(ingest(after, "accepted"), 2);
    assert.equal(ingest(after, "rejected"), 3);
    assert.equal(ingest(after, "late"), 1);
    assert.equal(ingest(after, "duplicate"), 0);
    assert.equal(
      after.get(
        'http_request_duration_seconds_count{route="/events/batch",method="POST",status="202"}',
      ),
      1,
    );
    assert.equal(
      after.get('http_request_duration_seconds_count{route="/events",method="POST",status="422"}'),
      1,
    );
  } finally {
    await h.pipeline.stop();
  }
});

test("[metrics] the durable log counts duplicates, and a late duplicate as a duplicate", async () => {
  const h = await startHarness({ queue: "postgres" });
  const t0 = recentBase();
  try {
    await h.send([
      makeWireEvent({ event_id: "d-1", user_id: "u-1", atMs: t0 }),
      makeWireEvent({ event_id: "d-old", user_id: "u-2", atMs: t0 - 1_200_000 }),
    ]);
    await h.send([
      makeWireEvent({ event_id: "d-1", user_id: "u-1", atMs: t0 }),
      makeWireEvent({ event_id: "d-old", user_id: "u-2", atMs: t0 - 1_200_000 }),
      makeWireEvent({ event_id: "d-2", user_id: "u-3", atMs: t0 }),
    ]);
    const samples = await scrape(h);
    assert.equal(ingest(samples, "accepted"), 2);
    assert.equal(ingest(samples, "late"), 1);
    assert.equal(ingest(samples, "duplicate"), 2);
    assert.equal(ingest(samples, "rejected"), 0);
  } finally {
    await h.pipeline.stop();
  }
});

test("[metrics] routes are labelled by pattern, workers by index, flushes reported", async () => {
  const h = await startHarness();
  const t0 = recentBase();
  try {
    await h.send([
      makeWireEvent({ event_id: "f-1", user_id: "u-1", atMs: t0 }),
      makeWireEvent({ event_id: "f-2", user_id: "u-2", atMs: t0 + 1 }),
      makeWireEvent({ event_id: "f-3", user_id: "u-3", atMs: t0 + 2 }),
    ]);
    await h.flush();
    const unknown = await h.get("/stats/content/content-4711");
    assert.equal(unknown.status, 404);
    await unknown.body?.cancel();
    const res = await h.get("/metrics");
    const text = await res.text();
    assert.ok(!text.includes("content-4711"), "a raw path with an id leaked into a label");
    const samples = parseMetrics(text);
    assert.equal(
      samples.get(
        'http_request_duration_seconds_count{route="/stats/content/:contentId",method="GET",status="404"}',
      ),
      1,
    );
    for (const worker of ["0", "1"]) {
      assert.equal(samples.get(`worker_pending_events{worker="${worker}"}`), 0);
      assert.equal(samples.get(`worker_batches_in_flight{worker="${worker}"}`), 0);
      assert.equal(samples.get(`worker_flush_failing{worker="${worker}"}`), 0);
      assert.ok((samples.get(`worker_heap_used_bytes{worker="${worker}"}`) ?? 0) > 0);
    }
    // Three users, one title, one TV; each family lives in the worker that owns its shard.
    const entities = ["0", "1"].map((w) => samples.get(`worker_entities{worker="${w}"}`) ?? 0);
    assert.equal(entities[0] + entities[1], 5);
    assert.equal(samples.get("log_lag_events"), 0);
    // The memory log leaves raw events to the flushes: every accepted event is one row.
    assert.equal(samples.get('flush_rows_total{table="raw_events"}'), 3);
    assert.ok((samples.get("flush_duration_seconds_count") ?? 0) >= 1);
    assert.equal(samples.get("flush_failures_total"), 0);
    assert.ok((samples.get("process_resident_memory_bytes") ?? 0) > 0);
    assert.ok((samples.get("process_heap_used_bytes") ?? 0) > 0);
    assert.ok((samples.get("process_uptime_seconds") ?? -1) >= 0);
  } finally {
    await h.pipeline.stop();
  }
});

test("[metrics] GET /metrics needs an admin token or the METRICS_TOKEN once auth is on", async (t) => {
  const metricsToken = "scrape-0123456789abcdef";
  const tokens: Partial<Config> = {
    apiTokens: [
      { role: "admin", name: "ops", secret: "admin-secret-0123456789" },
      { role: "analyst", name: "bi", secret: "analyst-secret-0123456789" },
    ],
    metricsToken,
  };
  const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });

  await t.step("open while no token is configured", async () => {
    const h = await startHarness();
    try {
      assert.equal((await h.get("/metrics")).status, 200);
    } finally {
      await h.pipeline.stop();
    }
  });

  await t.step(
    "401 without a token, 403 for analysts, 200 for admin and METRICS_TOKEN",
    async () => {
      const h = await startHarness(tokens);
      try {
        const missing = await h.get("/metrics");
        assert.equal(missing.status, 401);
        await missing.body?.cancel();
        const analyst = await h.get("/metrics", bearer("analyst-secret-0123456789"));
        assert.equal(analyst.status, 403);
        await analyst.body?.cancel();
        await scrape(h, bearer("admin-secret-0123456789"));
        await scrape(h, bearer(metricsToken));
        // The metrics token opens nothing else.
        const stats = await h.get("/stats/summary", bearer(metricsToken));
        assert.equal(stats.status, 401);
        await stats.body?.cancel();
      } finally {
        await h.pipeline.stop();
      }
    },
  );

  await t.step("a METRICS_TOKEN alone still protects metrics", async () => {
    const h = await startHarness({ metricsToken });
    try {
      const missing = await h.get("/metrics");
      assert.equal(missing.status, 401);
      await missing.body?.cancel();
      await scrape(h, bearer(metricsToken));
    } finally {
      await h.pipeline.stop();
    }
  });
});

/**
 * Overhead of the metrics middleware: in-process POSTs of a 100-event batch through the pipeline's
 * app behind one more middleware, either the timing one or one doing nothing, in blocks whose order
 * rotates. End-to-end times on shared cores move with the workers' background work, so the timing
 * middleware's own time (its wall time minus the handlers it awaits) is measured too.
 * Run with `METRICS_BENCH=1` (`METRICS_BENCH_ROUNDS`, `METRICS_BENCH_BLOCK`); it prints the ratios.
 */
test({
  name: "[metrics] bench: timing requests costs little on a 100-event batch",
  ignore: !HAS_SUITE_PERMISSIONS || Deno.env.get("METRICS_BENCH") === undefined,
  fn: async () => {
    const h = await startHarness({ maxPendingEvents: 100_000_000, maxInFlightBatches: 1_000_000 });
    try {
      const behind = (middleware: MiddlewareHandler) => {
        const app = new Hono();
        app.use("*", middleware);
        app.route("/", h.pipeline.app);
        return app;
      };
      const timing = httpMetrics(new PipelineMetrics());
      let ownMs = 0;
      const measured: MiddlewareHandler = async (c, next) => {
        let downstreamMs = 0;
        const started = performance.now();
        await timing(c, async () => {
          const downstreamStarted = performance.now();
          await next();
          downstreamMs += performance.now() - downstreamStarted;
        });
        ownMs += performance.now() - started - downstreamMs;
      };
      const apps = {
        plain: behind(async (_c, next) => await next()),
        timed: behind(measured),
      };
      const kinds = ["plain", "timed"] as const;
      const t0 = recentBase();
      let next = 0;
      const body = () =>
        JSON.stringify(Array.from({ length: 100 }, () => {
          const n = next++;
          return makeWireEvent({
            event_id: `b-${n}`,
            user_id: `u-${n % 5000}`,
            atMs: t0 + n % 1000,
          });
        }));
      const rounds = Number(Deno.env.get("METRICS_BENCH_ROUNDS") ?? 12);
      const block = Number(Deno.env.get("METRICS_BENCH_BLOCK") ?? 50);
      const totals = { plain: 0, timed: 0 };
      // Round 0 warms up and is not counted; each round runs one block per app, order alternating.
      for (let round = 0; round <= rounds; round++) {
        if (round === 1) ownMs = 0;
        for (let k = 0; k < kinds.length; k++) {
          const kind = kinds[(k + round) % kinds.length];
          const bodies = Array.from({ length: block }, body);
          const started = performance.now();
          for (const text of bodies) {
            const res = await apps[kind].request("http://test/events/batch", {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: text,
            });
            if (res.status !== 202) {
              throw new Error(`Bench POST failed: ${res.status} ${await res.text()}`);
            }
            await res.body?.cancel();
          }
          if (round > 0) totals[kind] += performance.now() - started;
        }
        h.pipeline.tick();
        await h.flush();
      }
      const requests = rounds * block;
      const plainMs = totals.plain / requests;
      console.log(
        `${requests} requests per app: ${plainMs.toFixed(3)} ms plain, ` +
          `${(totals.timed / requests).toFixed(3)} ms timed (ratio ` +
          `${(totals.timed / totals.plain).toFixed(4)}); the middleware's own time ` +
          `${(ownMs / requests * 1000).toFixed(1)} µs/request = ` +
          `${(ownMs / requests / plainMs * 100).toFixed(2)}% of a plain request`,
      );
    } finally {
      await h.pipeline.stop();
    }
  },
});
