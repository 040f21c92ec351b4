import assert from "node:assert/strict";
import {
  endSegment,
  hasStartedSince,
  noSegments,
  segmentStart,
  startSegment,
} from "./open_segments.ts";

Deno.test("open segments start, restart and end by key", () => {
  let segments = noSegments();
  assert.equal(segmentStart(segments, "tv|a"), undefined);
  segments = startSegment(segments, "tv|a", 1_000, 4);
  segments = startSegment(segments, "tv|b", 2_000, 4);
  segments = startSegment(segments, "tv|a", 3_000, 4);
  assert.equal(segmentStart(segments, "tv|a"), 3_000);
  segments = endSegment(segments, "tv|a");
  assert.equal(segmentStart(segments, "tv|a"), undefined);
  assert.equal(segmentStart(segments, "tv|b"), 2_000);
  assert.equal(hasStartedSince(segments, 2_000), true);
  assert.equal(hasStartedSince(segments, 2_001), false);
  segments = endSegment(segments, "tv|b");
  assert.equal(segments, noSegments(), "the last end goes back to the shared empty array");
  assert.equal(noSegments().length, 0, "the shared empty array was never written into");
});

Deno.test("open segments drop the earliest-started one past their capacity", () => {
  let segments = noSegments();
  segments = startSegment(segments, "a", 5_000, 2);
  segments = startSegment(segments, "b", 1_000, 2);
  segments = startSegment(segments, "c", 9_000, 2);
  assert.equal(segmentStart(segments, "b"), undefined);
  assert.equal(segmentStart(segments, "a"), 5_000);
  assert.equal(segmentStart(segments, "c"), 9_000);
});
