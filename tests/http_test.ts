import assert from "node:assert/strict";
import { startHarness } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { makeWireEvent } from "./fixtures.ts";
import { test } from "./_permissions.ts";

test("[http] ingest validates input and answers with clear 4xx reasons", async (t) => {
  const h = await startHarness();
  const t0 = recentBase();
  try {
    await t.step("POST /events accepts one event with 202 and its id", async () => {
      const res = await h.post("/events", makeWireEvent({ event_id: "ok-1", atMs: t0 }));
      assert.equal(res.status, 202);
      assert.deepEqual(await res.json(), { accepted: 1, event_id: "ok-1", ignored_fields: [] });
    });

    await t.step("POST /events rejects malformed JSON with 400", async () => {
      const res = await h.post("/events", '{"event_id": ');
      assert.equal(res.status, 400);
      assert.match((await res.json()).error, /^Malformed JSON/);
    });

    await t.step("POST /events rejects a wrong content type with 415", async () => {
      const res = await h.post("/events", "x", { "content-type": "text/plain" });
      assert.equal(res.status, 415);
    });

    await t.step("POST /events rejects schema violations with 422 and every issue", async () => {
      const bad = {
        ...makeWireEvent({ atMs: t0 }),
        event_type: "JUMP AHEAD",
        is_eu: "yes",
        ip_address: "999.1.1.1",
        region: "Germany",
        surprise: 1,
      };
      const res = await h.post("/events", bad);
      assert.equal(res.status, 422);
      const body = await res.json();
      assert.equal(body.error, "Invalid event: see issues");
      const paths = body.issues.map((i: { path: string }) => i.path).sort();
      assert.deepEqual(paths, ["event_type", "ip_address", "is_eu", "region"]);
    });

    await t.step("POST /events requires error_code on ERROR events", async () => {
      const res = await h.post(
        "/events",
        makeWireEvent({ event_type: "ERROR", error_code: null, atMs: t0 }),
      );
      assert.equal(res.status, 422);
      assert.equal((await res.json()).issues[0].path, "error_code");
    });

    await t.step(
      "POST /events rejects timestamps without a zone or far in the future",
      async () => {
        const noZone = { ...makeWireEvent(), timestamp: "2026-11-23T10:00:00" };
        assert.equal((await h.post("/events", noZone)).status, 422);
        const future = makeWireEvent({ atMs: Date.now() + 3_600_000 });
        const res = await h.post("/events", future);
        assert.equal(res.status, 422);
        assert.match((await res.json()).issues[0].message, /in the future/);
      },
    );

    await t.step("POST /events rejects a body over the limit with 413", async () => {
      const huge = makeWireEvent({ atMs: t0, extra_metadata: { blob: "x".repeat(2_000_000) } });
      assert.equal((await h.post("/events", huge)).status, 413);
    });

    await t.step("POST /events/batch keeps valid items and reports rejected ones", async () => {
      const res = await h.post("/events/batch", [
        makeWireEvent({ event_id: "b-1", atMs: t0 }),
        { event_id: "b-2" },
        makeWireEvent({ event_id: "b-3", atMs: t0 }),
      ]);
      assert.equal(res.status, 202);
      const body = await res.json();
      assert.equal(body.accepted, 2);
      assert.deepEqual(body.rejected.map((r: { index: number }) => r.index), [1]);
      assert.ok(body.rejected[0].issues.length > 0);
    });

    await t.step("POST /events/batch takes NDJSON and rejects a broken line alone", async () => {
      const lines = [
        JSON.stringify(makeWireEvent({ event_id: "n-1", atMs: t0 })),
        "{not json",
        JSON.stringify(makeWireEvent({ event_id: "n-2", atMs: t0 })),
      ].join("\n");
      const res = await h.post("/events/batch", lines, { "content-type": "application/x-ndjson" });
      assert.equal(res.status, 202);
      const body = await res.json();
      assert.equal(body.accepted, 2);
      assert.equal(body.rejected[0].index, 1);
      assert.match(body.rejected[0].issues[0].message, /line 2/);
    });

    await t.step("POST /events/batch rejects more than 500 events with 413", async () => {
      const many = Array.from({ length: 501 }, (_, i) => makeWireEvent({ event_id: `m${i}` }));
      assert.equal((await h.post("/events/batch", many)).status, 413);
    });

    await t.step(
      "POST /events/batch answers 422 when nothing is valid, 400 for a non-array",
      async () => {
        assert.equal((await h.post("/events/batch", [{}, { a: 1 }])).status, 422);
        assert.equal((await h.post("/events/batch", [])).status, 422);
        assert.equal((await h.post("/events/batch", { events: [] })).status, 400);
      },
    );

    await t.step("accepted events are counted, rejected ones are not", async () => {
      await h.flush();
      const summary = await h.json("/stats/summary");
      assert.equal(summary.total_events, 5);
    });

    await t.step("raw IP addresses are never stored", async () => {
      const rows = await h.pipeline.db.selectFrom("raw_events").select(["ip_hash", "ip_prefix"])
        .execute();
      assert.equal(rows.length, 5);
      for (const row of rows) {
        assert.equal(row.ip_prefix, "10.0.0.0/24");
        assert.doesNotMatch(row.ip_hash, /10\.0\.0\.1/);
      }
    });

    await t.step(
      "text PostgreSQL cannot store is refused at the door, not at flush time",
      async () => {
        const nul = makeWireEvent({
          event_id: "nul-1",
          atMs: t0,
          extra_metadata: { note: "a\u0000b" },
        });
        assert.equal((await h.post("/events", nul)).status, 422);
        const surrogate = makeWireEvent({ event_id: "bad\ud800id", atMs: t0 });
        assert.equal((await h.post("/events", surrogate)).status, 422);
        assert.equal((await h.get("/stats/content/%00")).status, 400);
        assert.equal((await h.get("/stats/region/%00")).status, 400);
        assert.equal((await h.get("/compliance/events?region=%00")).status, 400);
        assert.equal(
          (await h.post("/privacy/requests", { user_id: "u\u0000", type: "deletion" })).status,
          422,
        );
        // The worker still flushes: a valid event after the bad ones is counted.
        assert.equal(
          (await h.post("/events", makeWireEvent({ event_id: "after-nul", atMs: t0 }))).status,
          202,
        );
        await h.flush();
      },
    );

    await t.step("unknown paths answer 404 in JSON", async () => {
      const res = await h.get("/nope");
      assert.equal(res.status, 404);
      assert.match((await res.json()).error, /Not found/);
    });

    await t.step("POST /privacy/requests validates its body", async () => {
      assert.equal((await h.post("/privacy/requests", "{")).status, 400);
      assert.equal(
        (await h.post("/privacy/requests", { user_id: "u", type: "forget" })).status,
        422,
      );
    });

    await t.step("POST /events drops unknown fields and names them in the 202", async () => {
      const event = { ...makeWireEvent({ event_id: "x-1", atMs: t0 }), plan_x: "gold" };
      const res = await h.post("/events", event);
      assert.equal(res.status, 202);
      assert.deepEqual(await res.json(), {
        accepted: 1,
        event_id: "x-1",
        ignored_fields: ["plan_x"],
      });
    });

    await t.step("POST /events/batch names the dropped fields per accepted item", async () => {
      const res = await h.post("/events/batch", [
        makeWireEvent({ event_id: "x-2", atMs: t0 }),
        { ...makeWireEvent({ event_id: "x-3", atMs: t0 }), plan_x: "gold", tv_model: "QN90" },
        { ...makeWireEvent({ event_id: "x-4", atMs: t0 }), region: "Narnia", plan_x: "gold" },
      ]);
      assert.equal(res.status, 202);
      const body = await res.json();
      assert.equal(body.accepted, 2);
      assert.deepEqual(body.ignored, [{ index: 1, fields: ["plan_x", "tv_model"] }]);
      assert.deepEqual(body.rejected.map((r: { index: number }) => r.index), [2]);
    });

    await t.step(
      "POST /events/batch accepts other event types, optional fields absent",
      async () => {
        const { error_code: _e, is_eu: _i, extra_metadata: _m, ...minimal } = makeWireEvent({
          atMs: t0,
        });
        const res = await h.post("/events/batch", [
          { ...minimal, event_id: "t-1", event_type: "login", subscription_plan: "premium" },
          { ...minimal, event_id: "t-2", event_type: "app_start", extra_metadata: null },
        ]);
        assert.equal(res.status, 202);
        assert.deepEqual(await res.json(), { accepted: 2, rejected: [], ignored: [] });
      },
    );

    await t.step(
      "POST /events/batch refuses hostile metadata nesting for that item only",
      async () => {
        const depth = 100_000;
        const deep = `{"a":${"[".repeat(depth)}${"]".repeat(depth)}}`;
        const good = JSON.stringify(makeWireEvent({ event_id: "d-1", atMs: t0 }));
        const bad = JSON.stringify(makeWireEvent({ event_id: "d-2", atMs: t0 }))
          .replace(/"extra_metadata":\{[^}]*\}/, `"extra_metadata":${deep}`);
        const res = await h.post("/events/batch", `[${good},${bad}]`);
        assert.equal(res.status, 202);
        const body = await res.json();
        assert.equal(body.accepted, 1);
        assert.equal(body.rejected[0].index, 1);
        assert.equal(body.rejected[0].issues[0].path, "extra_metadata");
        assert.match(body.rejected[0].issues[0].message, /levels deep/);
        const single = await h.post("/events", bad);
        assert.equal(single.status, 422);
        await single.body?.cancel();
      },
    );

    await t.step("POST /events refuses an event too old to be counted with 422", async () => {
      const res = await h.post("/events", makeWireEvent({ atMs: Date.now() - 8 * 86_400_000 }));
      assert.equal(res.status, 422);
      const body = await res.json();
      assert.equal(body.issues[0].path, "timestamp");
      assert.match(body.issues[0].message, /too old to be counted/);
    });

    await t.step("POST /privacy/requests refuses a body over the limit with 413", async () => {
      const res = await h.post("/privacy/requests", {
        user_id: "x".repeat(2_000_000),
        type: "deletion",
      });
      assert.equal(res.status, 413);
      assert.deepEqual(await res.json(), {
        error: "Body too large: the limit is 1048576 bytes",
        issues: [],
      });
    });

    await t.step("a body cut off mid-stream answers 400, not 500", async () => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"event_id":'));
          controller.error(new Error("connection reset by peer"));
        },
      });
      const res = await h.pipeline.app.request("http://test/events", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      assert.equal(res.status, 400);
      assert.match((await res.json()).error, /^Cannot read body/);
    });

    await t.step("GET /compliance/events treats empty query parameters as no filter", async () => {
      const res = await h.get("/compliance/events?rule=&level=&region=&cursor=&limit=");
      assert.equal(res.status, 200);
      assert.ok(Array.isArray((await res.json()).items));
      const bad = await h.get("/compliance/events?level=loud&rule=");
      assert.equal(bad.status, 400);
      assert.deepEqual((await bad.json()).issues.map((i: { path: string }) => i.path), ["level"]);
    });

    await t.step("/healthz and /readyz report a healthy pipeline", async () => {
      assert.equal((await h.get("/healthz")).status, 200);
      const ready = await h.get("/readyz");
      assert.equal(ready.status, 200);
      assert.equal((await ready.json()).status, "ready");
    });
  } finally {
    await h.pipeline.stop();
  }
});

test("[http] bearer auth separates ingest and read roles", async () => {
  const h = await startHarness({ ingestTokens: ["tv-token"], readTokens: ["analyst-token"] });
  try {
    const event = makeWireEvent({ atMs: recentBase() });
    assert.equal((await h.post("/events", event)).status, 401);
    assert.equal((await h.post("/events", event, { authorization: "Bearer nope" })).status, 401);
    assert.equal(
      (await h.post("/events", event, { authorization: "Bearer analyst-token" })).status,
      403,
    );
    assert.equal(
      (await h.post("/events", event, { authorization: "Bearer tv-token" })).status,
      202,
    );
    assert.equal((await h.get("/stats/summary")).status, 401);
    assert.equal((await h.get("/stats/summary", { authorization: "Bearer tv-token" })).status, 403);
    assert.equal(
      (await h.get("/compliance/summary", { authorization: "Bearer analyst-token" })).status,
      200,
    );
    assert.equal((await h.get("/healthz")).status, 200);
  } finally {
    await h.pipeline.stop();
  }
});

test("[http] ingest answers 503 with Retry-After when workers hold too many unflushed events", async () => {
  const h = await startHarness({ maxPendingEvents: 20, workers: 1 });
  try {
    const t0 = recentBase();
    const batch = Array.from(
      { length: 25 },
      (_, i) => makeWireEvent({ event_id: `bp${i}`, atMs: t0 }),
    );
    assert.equal((await h.post("/events/batch", batch)).status, 202);
    // Wait for the worker's acknowledgement, which reports its pending events.
    const deadline = Date.now() + 5_000;
    while (h.pipeline.region.health().workers[0].pendingEvents < 25 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const refused = await h.post("/events", makeWireEvent({ event_id: "bp-x", atMs: t0 }));
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "1");
    await h.flush();
    assert.equal(
      (await h.post("/events", makeWireEvent({ event_id: "bp-y", atMs: t0 }))).status,
      202,
    );
  } finally {
    await h.pipeline.stop();
  }
});

test("[http] STRICT_SCHEMA refuses unknown fields and a slow body answers 408", async (t) => {
  const h = await startHarness({ isStrictSchema: true, bodyReadTimeoutMs: 100 });
  try {
    const t0 = recentBase();
    await t.step("POST /events refuses an unknown field with 422 naming it", async () => {
      const res = await h.post("/events", { ...makeWireEvent({ atMs: t0 }), plan_x: "gold" });
      assert.equal(res.status, 422);
      assert.deepEqual((await res.json()).issues, [
        { path: "plan_x", message: "is not a known field" },
      ]);
    });

    await t.step("POST /events/batch refuses only the item with an unknown field", async () => {
      const res = await h.post("/events/batch", [
        makeWireEvent({ event_id: "s-1", atMs: t0 }),
        { ...makeWireEvent({ event_id: "s-2", atMs: t0 }), plan_x: "gold" },
      ]);
      assert.equal(res.status, 202);
      const body = await res.json();
      assert.equal(body.accepted, 1);
      assert.deepEqual(body.ignored, []);
      assert.equal(body.rejected[0].index, 1);
    });

    await t.step("a body that stops arriving answers 408 after BODY_READ_TIMEOUT_MS", async () => {
      let isCancelled = false;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"event_id":'));
        },
        cancel() {
          isCancelled = true;
        },
      });
      const res = await h.pipeline.app.request("http://test/privacy/requests", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      assert.equal(res.status, 408);
      assert.deepEqual(await res.json(), {
        error: "Request timeout: the body did not arrive within 100 ms",
        issues: [],
      });
      assert.ok(isCancelled, "the body stream was cancelled");
    });

    await t.step("a body shorter than its content-length answers 408 too", async () => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"user_id":'));
        },
      });
      const res = await h.pipeline.app.request("http://test/privacy/requests", {
        method: "POST",
        headers: { "content-type": "application/json", "content-length": "500" },
        body,
      });
      assert.equal(res.status, 408);
      await res.body?.cancel();
    });
  } finally {
    await h.pipeline.stop();
  }
});
