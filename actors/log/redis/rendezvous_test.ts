import assert from "node:assert/strict";
import { ownerOf } from "./rendezvous.ts";

const KEYS = Array.from(
  { length: 192 },
  (_, i) => `${["user", "content", "device"][i % 3]}:${i % 64}`,
);

Deno.test("ownerOf() spreads shards over nodes", () => {
  const nodes = ["node-a", "node-b", "node-c"];
  const counts = new Map<string, number>();
  for (const key of KEYS) {
    counts.set(ownerOf(key, nodes)!, (counts.get(ownerOf(key, nodes)!) ?? 0) + 1);
  }
  for (const node of nodes) assert.ok((counts.get(node) ?? 0) > 40, `${node}: ${counts.get(node)}`);
});

Deno.test("ownerOf() moves only the leaving node's shards", () => {
  const before = KEYS.map((k) => ownerOf(k, ["node-a", "node-b", "node-c"]));
  const after = KEYS.map((k) => ownerOf(k, ["node-a", "node-c"]));
  KEYS.forEach((_, i) => {
    if (before[i] !== "node-b") assert.equal(after[i], before[i]);
    else assert.notEqual(after[i], "node-b");
  });
});

Deno.test("ownerOf() is the same whatever the order of the member list", () => {
  for (const key of KEYS) {
    assert.equal(ownerOf(key, ["x", "y", "z"]), ownerOf(key, ["z", "x", "y"]));
  }
  assert.equal(ownerOf("user:1", []), undefined);
});
