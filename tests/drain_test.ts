import assert from "node:assert/strict";
import { startHarness } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { makeWireEvent } from "./fixtures.ts";
import { test } from "./_permissions.ts";

test("[drain] a graceful stop flushes every acknowledged event and later requests get 503", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-drain-" });
  try {
    const t0 = recentBase();
    const first = await startHarness({ dataDir, flushIntervalMs: 600_000 });
    const events = Array.from({ length: 1200 }, (_, i) =>
      makeWireEvent({
        event_id: `d${i}`,
        user_id: `viewer${i % 97}`,
        content_id: `title${i % 13}`,
        atMs: t0 + i,
      }));
    // No flush before stop: everything acknowledged sits in worker memory until the drain.
    await first.send(events);
    const stopping = first.pipeline.stop();
    const during = await first.post("/events", makeWireEvent({ event_id: "late-comer", atMs: t0 }));
    assert.equal(during.status, 503);
    assert.equal(during.headers.get("retry-after"), "5");
    await stopping;

    const second = await startHarness({ dataDir });
    try {
      const summary = await second.json("/stats/summary");
      assert.equal(summary.total_events, 1200);
      assert.equal(summary.plays, 1200);
      // Log positions continue after the checkpoints of the first run.
      await second.send([makeWireEvent({ event_id: "after-restart", atMs: t0 + 5_000 })]);
      await second.flush();
      const rows = await second.pipeline.db.selectFrom("raw_events").select("position")
        .where("event_id", "=", "after-restart").execute();
      assert.ok(Number(rows[0].position) > 1200);
    } finally {
      await second.pipeline.stop();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
