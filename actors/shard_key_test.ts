import assert from "node:assert/strict";
import { formatShardKey, parseShardKey } from "./shard_key.ts";

Deno.test("formatShardKey() and parseShardKey() round-trip every entity type", () => {
  for (const entityType of ["user", "content", "device"] as const) {
    assert.deepEqual(parseShardKey(formatShardKey(entityType, 17)), { entityType, shard: 17 });
  }
});

Deno.test("parseShardKey() refuses keys that are not entity type and shard", () => {
  for (const key of ["user", "user:", "viewer:3", "user:-1", "user:1.5", ":3"]) {
    assert.throws(() => parseShardKey(key), /Cannot parse shard key/, key);
  }
});
