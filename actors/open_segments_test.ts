import assert from "node:assert/strict";
import { OpenSegments } from "./open_segments.ts";

Deno.test("OpenSegments starts, restarts and ends segments by key", () => {
  const segments = new OpenSegments(4);
  assert.equal(segments.get("tv|a"), undefined);
  segments.start("tv|a", 1_000);
  segments.start("tv|b", 2_000);
  segments.start("tv|a", 3_000);
  assert.equal(segments.get("tv|a"), 3_000);
  segments.end("tv|a");
  assert.equal(segments.get("tv|a"), undefined);
  assert.equal(segments.get("tv|b"), 2_000);
  assert.equal(segments.hasStartedSince(2_000), true);
  assert.equal(segments.hasStartedSince(2_001), false);
});

Deno.test("OpenSegments drops the earliest-started segment past its capacity", () => {
  const segments = new OpenSegments(2);
  segments.start("a", 5_000);
  segments.start("b", 1_000);
  segments.start("c", 9_000);
  assert.equal(segments.get("b"), undefined);
  assert.equal(segments.get("a"), 5_000);
  assert.equal(segments.get("c"), 9_000);
});
