import assert from "node:assert/strict";
import { startHarness } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { makeWireEvent } from "./fixtures.ts";
import { test } from "./_permissions.ts";

const crashingWorker = new URL("./_crashing_worker.ts", import.meta.url);

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("[recovery] a worker that dies is restarted and its shards replayed from the log", async () => {
  const marker = await Deno.makeTempFile({ prefix: "ott-crash-" });
  Deno.env.set("CRASH_MARKER", marker);
  const h = await startHarness({ queue: "postgres", workers: 2 }, { workerUrl: crashingWorker });
  try {
    const t0 = recentBase();
    const wave = (from: number, n: number) =>
      Array.from({ length: n }, (_, i) =>
        makeWireEvent({
          event_id: `w${from + i}`,
          user_id: `viewer${(from + i) % 50}`,
          content_id: `title${(from + i) % 7}`,
          atMs: t0 + from + i,
        }));
    await h.send(wave(0, 300));
    const optOut = await h.post("/privacy/requests", { user_id: "viewer0", type: "deletion" });
    assert.equal(optOut.status, 202);
    await h.flush();
    // Unflushed events in the dying worker's memory must come back from the log.
    await h.send(wave(300, 300));
    await h.send([makeWireEvent({ event_id: "crash-worker", user_id: "viewer0", atMs: t0 + 600 })]);
    await until("the worker restart", () => h.pipeline.region.health().restartedWorkers === 1);
    await until("recovery", () => h.pipeline.region.health().workers.every((w) => !w.isRecovering));
    await h.send(wave(601, 100));
    await h.send([
      // Retention v2 flags events that happened after the request, not merely arrived after it.
      makeWireEvent({ event_id: "after-restart", user_id: "viewer0", atMs: Date.now() + 1_000 }),
    ]);
    await h.flush();
    // The restarted worker still knows the privacy request made before the crash.
    const flagged = await h.json<{ items: Array<{ event_id: string }> }>(
      "/compliance/events?rule=retention&limit=500",
    );
    assert.ok(flagged.items.some((f) => f.event_id === "after-restart"));
    const summary = await h.json("/stats/summary");
    assert.equal(summary.total_events, 702);
    const titles = await h.pipeline.db.selectFrom("event_facts_hourly")
      .select((eb) => eb.fn.sum("events").as("events")).executeTakeFirst();
    assert.equal(Number(titles?.events), 702);
  } finally {
    await h.pipeline.stop();
    Deno.env.delete("CRASH_MARKER");
    await Deno.remove(marker).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
});

test("[recovery] an event sent again after a restart is counted once (QUEUE=postgres)", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-dup-" });
  try {
    const t0 = recentBase();
    const event = makeWireEvent({ event_id: "retry-me", atMs: t0 });
    const first = await startHarness({ dataDir, queue: "postgres" });
    await first.send([event, event]);
    await first.pipeline.stop();
    const second = await startHarness({ dataDir, queue: "postgres" });
    try {
      await second.send([event]);
      await second.flush();
      const summary = await second.json("/stats/summary");
      assert.equal(summary.total_events, 1);
      assert.equal(summary.duplicate_events, 2);
    } finally {
      await second.pipeline.stop();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

test("[recovery] a restart replays nothing when every shard applied the log (QUEUE=postgres)", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-replay-" });
  try {
    const t0 = recentBase();
    // Two users: most of the 64 shards of each family never see an event.
    const events = Array.from(
      { length: 40 },
      (_, i) => makeWireEvent({ event_id: `r${i}`, user_id: `viewer${i % 2}`, atMs: t0 + i }),
    );
    const first = await startHarness({ dataDir, queue: "postgres" });
    await first.send(events);
    await first.flush();
    const last = await first.pipeline.db.selectFrom("raw_events")
      .select((eb) => eb.fn.max("position").as("max")).executeTakeFirst();
    const behind = await first.pipeline.db.selectFrom("shard_checkpoints").select("family")
      .where("position", "<", Number(last?.max)).execute();
    assert.equal(behind.length, 0, "every shard, idle or not, checkpoints the last position");
    await first.pipeline.stop();
    const second = await startHarness({ dataDir, queue: "postgres" });
    try {
      assert.equal(second.pipeline.region.health().replayedEvents, 0);
      await second.send([makeWireEvent({ event_id: "r0", user_id: "viewer0", atMs: t0 })]);
      await second.flush();
      const summary = await second.json("/stats/summary");
      assert.equal(summary.total_events, 40);
      assert.equal(summary.duplicate_events, 1);
    } finally {
      await second.pipeline.stop();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
