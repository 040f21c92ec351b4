import assert from "node:assert/strict";
import {
  countSince,
  keysSince,
  noSightings,
  see,
  SightingsColumns,
  tagsSince,
} from "./last_seen.ts";

Deno.test("sightings keep each value's latest time and tag, whatever order events come in", () => {
  let regions = noSightings<string, string>();
  regions = see(regions, "DE", 2_000, "e2", 8);
  regions = see(regions, "FR", 3_000, "e3", 8);
  regions = see(regions, "DE", 1_000, "e1", 8); // late: older than what DE already has
  regions = see(regions, "DE", 4_000, "e4", 8);
  assert.deepEqual(keysSince(regions, 0), ["DE", "FR"]);
  assert.deepEqual(keysSince(regions, 3_500), ["DE"]);
  assert.equal(countSince(regions, 3_000), 2);
  assert.deepEqual(tagsSince(regions, 0), ["e3", "e4"], "oldest sighting first");
  assert.equal(noSightings().length, 0, "the shared empty array was never written into");
});

Deno.test("sightings count only the given tag, and forget the stalest value past capacity", () => {
  let networks = noSightings<number, number>();
  networks = see(networks, 11, 1_000, 0, 2);
  networks = see(networks, 12, 2_000, 1, 2);
  assert.equal(countSince(networks, 0, 0), 1);
  assert.equal(countSince(networks, 0, 1), 1);
  assert.equal(countSince(networks, 0), 2);
  networks = see(networks, 13, 3_000, 1, 2);
  assert.deepEqual(keysSince(networks, 0), [12, 13], "11 was the stalest");
});

Deno.test("sightings in columns answer as the flat sightings do, whatever the order of events", () => {
  // A small deterministic generator, so a failure can be replayed.
  let state = 42;
  const next = (n: number) => {
    state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
    return state % n;
  };
  const capacity = 4;
  const columns = new SightingsColumns<string, string>(capacity);
  const flat: Array<ReturnType<typeof noSightings<string, string>>> = [];
  for (let slot = 0; slot < 8; slot++) {
    columns.reset(slot);
    flat[slot] = noSightings();
  }
  for (let step = 0; step < 5_000; step++) {
    const slot = next(8);
    if (next(100) === 0) {
      columns.reset(slot); // as when a user is forgotten and the slot goes to another
      flat[slot] = noSightings();
      continue;
    }
    // Few values, so most owners see one and some spill; times out of order.
    const value = `r${next(slot < 4 ? 1 : 7)}`;
    const atMs = next(10_000);
    const tag = `e${step}`;
    columns.see(slot, value, atMs, tag);
    flat[slot] = see(flat[slot], value, atMs, tag, capacity);
    const sinceMs = next(10_000);
    const context = `step ${step}, slot ${slot}`;
    assert.deepEqual(columns.keysSince(slot, sinceMs), keysSince(flat[slot], sinceMs), context);
    assert.equal(columns.countSince(slot, sinceMs), countSince(flat[slot], sinceMs), context);
    assert.equal(columns.countSince(slot, 0, tag), countSince(flat[slot], 0, tag), context);
    assert.deepEqual(columns.tagsSince(slot, sinceMs), tagsSince(flat[slot], sinceMs), context);
  }
});
