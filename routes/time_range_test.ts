import assert from "node:assert/strict";
import { parseRange } from "./time_range.ts";

const DAY_MS = 86_400_000;

/** The error of a refused range; fails the test if the range was accepted. */
function errorOf(result: ReturnType<typeof parseRange>): string {
  assert.equal(result.ok, false, `expected a refusal, got ${JSON.stringify(result)}`);
  return result.ok ? "" : result.error;
}

Deno.test("parseRange() of absent or empty bounds is an open range", () => {
  assert.deepEqual(parseRange(undefined, undefined), { ok: true, range: {} });
  assert.deepEqual(parseRange("", ""), { ok: true, range: {} });
  assert.deepEqual(parseRange("  ", undefined), { ok: true, range: {} });
});

Deno.test("parseRange() accepts a from-only and a to-only range", () => {
  assert.deepEqual(parseRange("2026-11-30T10:00:00Z", undefined), {
    ok: true,
    range: { fromMs: Date.UTC(2026, 10, 30, 10) },
  });
  assert.deepEqual(parseRange("", "2026-11-30T11:00:00Z"), {
    ok: true,
    range: { toMs: Date.UTC(2026, 10, 30, 11) },
  });
});

Deno.test("parseRange() accepts aligned UTC hours given with Z and with a +01:00 offset", () => {
  assert.deepEqual(parseRange("2026-11-30T10:00:00Z", "2026-11-30T12:00:00.000Z"), {
    ok: true,
    range: { fromMs: Date.UTC(2026, 10, 30, 10), toMs: Date.UTC(2026, 10, 30, 12) },
  });
  // 11:00+01:00 is 10:00Z.
  assert.deepEqual(parseRange("2026-11-30T11:00:00+01:00", "2026-11-30T13:00+01:00"), {
    ok: true,
    range: { fromMs: Date.UTC(2026, 10, 30, 10), toMs: Date.UTC(2026, 10, 30, 12) },
  });
});

Deno.test("parseRange() refuses an offset that moves the hour off a UTC boundary", () => {
  const error = errorOf(parseRange("2026-11-30T10:00:00+05:30", undefined));
  assert.match(error, /2026-11-30T04:00:00\.000Z/);
  assert.match(error, /2026-11-30T05:00:00\.000Z/);
});

Deno.test("parseRange() reads a date-only value as midnight UTC", () => {
  assert.deepEqual(parseRange("2026-11-30", "2026-12-01"), {
    ok: true,
    range: { fromMs: Date.UTC(2026, 10, 30), toMs: Date.UTC(2026, 11, 1) },
  });
});

Deno.test("parseRange() refuses an unaligned bound naming the aligned hours around it", () => {
  const error = errorOf(parseRange("2026-11-30T10:15:00Z", undefined));
  assert.ok(error.includes("2026-11-30T10:00:00.000Z"), error);
  assert.ok(error.includes("2026-11-30T11:00:00.000Z"), error);
  assert.ok(error.includes('"2026-11-30T10:15:00Z"'), error);
  assert.match(error, /^Invalid from:/);
  assert.match(errorOf(parseRange(undefined, "2026-11-30T10:00:01Z")), /^Invalid to:.*UTC hour/);
});

Deno.test("parseRange() with a day bucket accepts midnights and refuses other hours", () => {
  assert.deepEqual(parseRange("2026-11-29", "2026-11-30T00:00:00Z", DAY_MS), {
    ok: true,
    range: { fromMs: Date.UTC(2026, 10, 29), toMs: Date.UTC(2026, 10, 30) },
  });
  const error = errorOf(parseRange("2026-11-30T10:00:00Z", undefined, DAY_MS));
  assert.ok(error.includes("UTC day"), error);
  assert.ok(error.includes("2026-11-30T00:00:00.000Z"), error);
  assert.ok(error.includes("2026-12-01T00:00:00.000Z"), error);
});

Deno.test("parseRange() refuses garbage and zone-less date-times", () => {
  for (
    const value of [
      "yesterday",
      "1732960800000",
      "2026-11-30T10:00:00",
      "2026-13-01",
      "2026-11-30T25:00:00Z",
      "30/11/2026",
    ]
  ) {
    const error = errorOf(parseRange(value, undefined));
    assert.match(error, /^Invalid from: expected an ISO-8601 date-time/, value);
    assert.ok(error.includes(`"${value}"`), error);
  }
  assert.match(errorOf(parseRange(undefined, "soon")), /^Invalid to:/);
});

Deno.test("parseRange() refuses from equal to or after to", () => {
  assert.match(
    errorOf(parseRange("2026-11-30T10:00:00Z", "2026-11-30T10:00:00Z")),
    /from must be before to/,
  );
  assert.match(
    errorOf(parseRange("2026-11-30T11:00:00Z", "2026-11-30T10:00:00Z")),
    /from must be before to/,
  );
  assert.equal(parseRange("2026-11-30T10:00:00Z", "2026-11-30T11:00:00Z").ok, true);
});

Deno.test("parseRange() refuses calendar dates that do not exist instead of rolling them over", () => {
  // Date.parse() reads 2026-02-30 as 2026-03-02 and 2026-11-31 as 2026-12-01: a silent shift.
  for (const value of ["2026-02-30", "2026-11-31T10:00:00Z"]) {
    assert.match(errorOf(parseRange(value, undefined)), /^Invalid from:/, value);
  }
});

Deno.test("parseRange() refuses years PostgreSQL cannot store and reads years 1-99 as written", () => {
  for (const value of ["0000-01-01", "0000-12-31T23:00:00Z", "0001-01-01T00:00:00+01:00"]) {
    const error = errorOf(parseRange(value, undefined));
    assert.match(error, /^Invalid from: must be from 0001-01-01T00:00:00Z to 9999-12-31/, value);
    assert.ok(error.includes(`"${value}"`), error);
  }
  assert.match(errorOf(parseRange(undefined, "9999-12-31T23:00:00-01:00")), /^Invalid to: must/);
  assert.deepEqual(parseRange("0001-01-01", "9999-12-31T23:00:00Z"), {
    ok: true,
    range: { fromMs: Date.parse("0001-01-01T00:00:00Z"), toMs: Date.UTC(9999, 11, 31, 23) },
  });
  // 0048 is a leap year; Date.UTC(48, ...) would have checked 1948 instead.
  assert.equal(parseRange("0048-02-29", undefined).ok, true);
  assert.equal(parseRange("0100-02-29", undefined).ok, false);
});

Deno.test("parseRange() quotes a refused value JSON-escaped and names the parameter", () => {
  const result = parseRange("2026\u0000", undefined);
  assert.deepEqual(result, {
    ok: false,
    error: "Invalid from: expected an ISO-8601 date-time such as 2026-11-30T10:00:00Z, " +
      'received "2026\\u0000"',
    param: "from",
  });
  assert.equal(errorOf(parseRange(undefined, "x".repeat(1000))).length < 200, true);
  const order = parseRange("2026-11-30T11:00:00Z", "2026-11-30T10:00:00Z");
  assert.equal(!order.ok && order.param, "to");
});
