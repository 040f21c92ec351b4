import assert from "node:assert/strict";
import { RecentIds, RecentIdsByShard } from "./recent_ids.ts";

Deno.test("RecentIds.add() reports a repeated id as a duplicate", () => {
  const ids = new RecentIds(10);
  assert.equal(ids.add("e1", 1000), true);
  assert.equal(ids.add("e1", 1000), false);
  assert.equal(ids.add("e2", 1001), true);
});

Deno.test("RecentIds stays within its capacity by evicting the oldest", () => {
  const ids = new RecentIds(3);
  for (let i = 0; i < 10; i++) ids.add(`e${i}`, i);
  assert.equal(ids.size, 3);
  assert.equal(ids.add("e9", 9), false);
  assert.equal(ids.add("e0", 0), true);
});

Deno.test("RecentIds.prune() forgets ids older than the horizon", () => {
  const ids = new RecentIds(100);
  ids.add("old", 1000);
  ids.add("new", 5000);
  ids.prune(2000);
  assert.equal(ids.size, 1);
  assert.equal(ids.add("old", 1000), true);
});

Deno.test("RecentIdsByShard with capacity 0 remembers nothing: every id is new", () => {
  const ids = new RecentIdsByShard(0);
  assert.equal(ids.add(1, "e1", 1_000), true);
  assert.equal(ids.add(1, "e1", 1_000), true);
});
