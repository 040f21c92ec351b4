import { DEFAULT_QOE_RULE } from "../rules/qoe_rule.ts";
import assert from "node:assert/strict";
import { emptyBatch } from "./pending.ts";
import { ViewTracker } from "./view_tracker.ts";
import { makeEvent } from "../tests/fixtures.ts";
import { QOE } from "../rules/qoe.ts";

const T0 = Date.UTC(2026, 11, 7, 10);

function tracker(maxEvents = 1_000) {
  return new ViewTracker({
    idleMs: 1_800_000,
    allowedLatenessMs: 600_000,
    isBusinessError: () => false,
    maxEventsPerTv: 100,
    maxEvents,
    qoeRule: DEFAULT_QOE_RULE,
    dimsOf: (e) => ({
      contentId: e.contentId,
      region: e.region,
      platform: "tizen",
      appVersion: "7.1",
      plan: "premium",
      cdn: "cdn-a",
    }),
  });
}

const ev = (tv: number, ms: number, type: string) =>
  makeEvent({
    eventId: `tv${tv}-${ms}-${type}`,
    userId: `user-${tv}`,
    deviceId: `tv-${tv}`,
    type,
    atMs: T0 + ms,
    position: ms,
  });

/** The views counted in a batch (sum of the `views` measure over its rows). */
const views = (batch: ReturnType<typeof emptyBatch>) =>
  [...batch.qoe.values()].reduce((n, row) => n + row[QOE.views], 0);

Deno.test("ViewTracker: a TV's views are counted once per flush, and not again unchanged", () => {
  const t = tracker();
  const batch = emptyBatch();
  t.apply(ev(1, 0, "PLAY_REQUEST"), 0, batch);
  t.apply(ev(1, 1_000, "FIRST_FRAME"), 0, batch);
  t.flush(T0 + 1_000, batch);
  assert.equal(views(batch), 1);
  const next = emptyBatch();
  t.flush(T0 + 2_000, next);
  assert.equal(next.qoe.size, 0, "nothing changed, nothing counted");
  assert.equal(next.openViews.size, 0, "nothing to store either");
});

Deno.test("ViewTracker: memory is bounded: past maxEvents the longest-held TV is let go", () => {
  const t = tracker(10);
  const batch = emptyBatch();
  for (let tv = 0; tv < 10; tv++) {
    t.apply(ev(tv, 0, "PLAY_REQUEST"), 0, batch);
    t.apply(ev(tv, 500, "STOP"), 0, batch);
  }
  assert.ok(t.eventCount <= 10, `${t.eventCount} events held`);
  assert.ok(t.tvCount <= 5);
  assert.equal(batch.counters.get("qoe_tvs_evicted"), 5);
  t.flush(T0 + 1_000, batch);
  // Every view is counted once: the evicted ones when let go, the others at the flush.
  assert.equal(views(batch), 10);
  // The evicted TVs' views are final: their rows go; the others' are stored.
  assert.equal([...batch.openViews.values()].filter((r) => r.outcome === null).length, 5);
  assert.equal([...batch.openViews.values()].filter((r) => r.outcome !== null).length, 5);
});

Deno.test("ViewTracker: a view left open is ended by the watermark and counted as an exit", () => {
  const t = tracker();
  const batch = emptyBatch();
  t.apply(ev(1, 0, "PLAY_REQUEST"), 0, batch);
  t.apply(ev(1, 5_000, "HEARTBEAT"), 0, batch); // no rendition fields: ignored
  t.apply(ev(1, 6_000, "PAUSE"), 0, batch);
  t.flush(T0 + 10_000, batch);
  const ebvs = (b: ReturnType<typeof emptyBatch>) =>
    [...b.qoe.values()].reduce((n, row) => n + row[QOE.ebvs], 0);
  assert.equal(ebvs(batch), 0, "still open");
  const later = emptyBatch();
  t.flush(T0 + 6_000 + 1_800_001, later);
  assert.equal(ebvs(later), 1, "idle past VIEW_IDLE_MS: an exit before video start");
  assert.equal(views(later), 0, "the view itself was counted already");
});

Deno.test("ViewTracker: a TV read back from its view rows and events carries on exactly", () => {
  const first = tracker();
  const batch = emptyBatch();
  const sent = [ev(1, 0, "PLAY_REQUEST"), ev(1, 30_000, "STOP"), ev(1, 40_000, "PLAY")];
  for (const e of sent) first.apply(e, 0, batch);
  first.flush(T0 + 60_000, batch);
  // An exit before start (30 s, no first frame) and an open view started by PLAY.
  assert.equal(views(batch), 2);
  const rows = [...batch.openViews.values()];
  assert.equal(rows.length, 2, "one row per view");

  // Another worker takes the shard: the rows plus the TV's stored events (any order, and one the
  // log will replay).
  const second = tracker();
  second.load(rows, [...sent].reverse());
  assert.equal(second.eventCount, 3);
  const after = emptyBatch();
  second.apply(sent[2], 0, after); // replayed: no news
  second.flush(T0 + 60_000, after);
  assert.equal(after.qoe.size, 0, "nothing is counted twice");
  assert.equal(after.openViews.size, 0, "and nothing is rewritten");

  // A late FIRST_FRAME turns the exit into a start: the exit is retracted, the start added.
  second.apply(ev(1, 2_000, "FIRST_FRAME"), 0, after);
  second.flush(T0 + 61_000, after);
  const row = [...after.qoe.values()][0];
  assert.equal(row[QOE.views], 0, "same view: retracted and added again");
  assert.equal(row[QOE.ebvs], -1);
  assert.equal(row[QOE.startedViews], 1);
  assert.equal(after.openViews.size, 1, "only the changed view's row is written");
});
