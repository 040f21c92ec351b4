import assert from "node:assert/strict";
import { countSince, keysSince, noSightings, see, tagsSince } from "./last_seen.ts";

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
