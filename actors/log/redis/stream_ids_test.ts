import assert from "node:assert/strict";
import { positionOfStreamId, streamIdOfPosition } from "./stream_ids.ts";

Deno.test("positionOfStreamId() orders like stream ids and round-trips", () => {
  const ids = [
    "0-0",
    "1795477059862-0",
    "1795477059862-1",
    "1795477059862-4095",
    "1795477059863-0",
  ];
  const positions = ids.map(positionOfStreamId);
  assert.deepEqual([...positions].sort((a, b) => a - b), positions);
  assert.deepEqual(positions.map(streamIdOfPosition), ids);
});

Deno.test("positionOfStreamId() rejects ids it cannot encode exactly", () => {
  assert.throws(() => positionOfStreamId("1795477059862-4096"), /Cannot use stream id/);
  assert.throws(() => positionOfStreamId("nonsense"), /Cannot use stream id "nonsense"/);
});
