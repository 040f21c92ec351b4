import assert from "node:assert/strict";
import {
  addPacked,
  estimateViewers,
  mergeSketch,
  packedRegister,
  packSketch,
  SKETCH_BITS,
  type SparseSketch,
} from "./hll.ts";

/** Relative standard error of a sketch with 2^SKETCH_BITS registers: 1.6%, so 3 of them ~4.9%. */
const STANDARD_ERROR = 1.04 / Math.sqrt(2 ** SKETCH_BITS);

/** A sparse sketch of `user-<first>` .. `user-<first + count - 1>` (deterministic ids). */
function sketchOfUsers(first: number, count: number): SparseSketch {
  const sketch: SparseSketch = new Map();
  for (let i = first; i < first + count; i++) addPacked(sketch, packedRegister(`user-${i}`));
  return sketch;
}

function assertWithin(estimate: number, actual: number, relativeError: number): void {
  const error = Math.abs(estimate - actual) / actual;
  assert.ok(
    error <= relativeError,
    `estimate ${estimate} of ${actual} is off by ${(error * 100).toFixed(2)}%, ` +
      `allowed ${(relativeError * 100).toFixed(2)}%`,
  );
}

Deno.test("estimateViewers() of no sketch and of an empty sketch is 0", () => {
  assert.equal(estimateViewers([]), 0);
  assert.equal(estimateViewers([packSketch(new Map())]), 0);
});

Deno.test("estimateViewers() of a single viewer is 1", () => {
  assert.equal(estimateViewers([packSketch(sketchOfUsers(0, 1))]), 1);
});

for (const count of [100, 5_000]) {
  Deno.test(`estimateViewers() of ${count} distinct viewers is within 1% (linear counting)`, () => {
    assertWithin(estimateViewers([packSketch(sketchOfUsers(0, count))]), count, 0.01);
  });
}

for (const count of [50_000, 300_000]) {
  Deno.test(`estimateViewers() of ${count} distinct viewers is within 3 standard errors`, () => {
    assertWithin(estimateViewers([packSketch(sketchOfUsers(0, count))]), count, 3 * STANDARD_ERROR);
  });
}

Deno.test("packedRegister() is stable and within the sketch's register range", () => {
  const packed = packedRegister("user-42");
  assert.equal(packedRegister("user-42"), packed);
  assert.ok(packed >> 8 < 2 ** SKETCH_BITS);
  assert.ok((packed & 0xff) >= 1 && (packed & 0xff) <= 32 - SKETCH_BITS + 1);
});

Deno.test("packSketch() lists each set register once, sorted", () => {
  const packed = packSketch(sketchOfUsers(0, 2_000));
  assert.deepEqual(packed, [...packed].sort((a, b) => a - b));
  assert.equal(new Set(packed.map((v) => v >> 8)).size, packed.length);
});

Deno.test("mergeSketch() of two overlapping sets estimates the union, not the sum", () => {
  // users 0..29,999 and 20,000..49,999: union 50,000, sum 60,000.
  const a = sketchOfUsers(0, 30_000);
  const b = sketchOfUsers(20_000, 30_000);
  const merged: SparseSketch = new Map(a);
  mergeSketch(merged, b);
  const estimate = estimateViewers([packSketch(merged)]);
  assertWithin(estimate, 50_000, 3 * STANDARD_ERROR);
  assert.ok(estimate < 55_000, `estimate ${estimate} is closer to the sum than to the union`);
  assert.deepEqual(packSketch(merged), packSketch(sketchOfUsers(0, 50_000)));
});

Deno.test("estimateViewers() of two overlapping packed sketches estimates the union", () => {
  // users 0..2,999 and 2,000..4,999: union 5,000, sum 6,000.
  const a = packSketch(sketchOfUsers(0, 3_000));
  const b = packSketch(sketchOfUsers(2_000, 3_000));
  const estimate = estimateViewers([a, b]);
  assertWithin(estimate, 5_000, 0.01);
  assert.equal(estimate, estimateViewers([packSketch(sketchOfUsers(0, 5_000))]));
});

Deno.test("estimateViewers() of the same sketch twice does not double count", () => {
  const packed = packSketch(sketchOfUsers(0, 1_000));
  assert.equal(estimateViewers([packed, packed]), estimateViewers([packed]));
});

Deno.test("addPacked() of the same viewer twice changes nothing", () => {
  const once = sketchOfUsers(0, 500);
  const twice = sketchOfUsers(0, 500);
  for (let i = 0; i < 500; i++) addPacked(twice, packedRegister(`user-${i}`));
  assert.deepEqual(packSketch(twice), packSketch(once));
  assert.equal(estimateViewers([packSketch(twice)]), estimateViewers([packSketch(once)]));
  const single: SparseSketch = new Map();
  addPacked(single, packedRegister("user-7"));
  addPacked(single, packedRegister("user-7"));
  assert.equal(estimateViewers([packSketch(single)]), 1);
});
