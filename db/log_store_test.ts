import assert from "node:assert/strict";
import { earliestSinceMs } from "./log_store.ts";

Deno.test("earliestSinceMs() takes a million TVs, as a shard read back after a busy day holds", () => {
  // Math.min(...tvs) threw "Maximum call stack size exceeded" here and stopped the server's start.
  const tvs = Array.from({ length: 1_000_000 }, (_, i) => ({ sinceMs: 2_000_000 - i }));
  assert.equal(earliestSinceMs(tvs), 1_000_001);
  assert.equal(earliestSinceMs([]), Infinity);
});
