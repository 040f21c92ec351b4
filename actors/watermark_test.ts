import assert from "node:assert/strict";
import { Watermark } from "./watermark.ts";

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 30, 12);

Deno.test("Watermark marks events older than the allowed lateness behind the newest as late", () => {
  const watermark = new Watermark(2 * HOUR);
  const late = watermark.advance([
    { atMs: T0, receivedAtMs: T0 },
    { atMs: T0 - HOUR, receivedAtMs: T0 },
    { atMs: T0 - 3 * HOUR, receivedAtMs: T0 },
  ]);
  assert.deepEqual(late, [false, false, true]);
  assert.equal(watermark.ms, T0);
  assert.equal(watermark.horizonMs, T0 - 2 * HOUR);
});

Deno.test("Watermark is capped at receive time, so a TV with a fast clock makes nobody late", () => {
  const watermark = new Watermark(HOUR);
  watermark.advance([{ atMs: T0 + 5 * 60_000, receivedAtMs: T0 }]);
  assert.equal(watermark.ms, T0);
  assert.deepEqual(watermark.advance([{ atMs: T0 - 50 * 60_000, receivedAtMs: T0 }]), [false]);
});
