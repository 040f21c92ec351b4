import assert from "node:assert/strict";
import {
  DEFAULT_QOE_RULE,
  evaluateQoeWindow,
  type QoeWindowTotals,
  windowCountsOf,
} from "./qoe_rule.ts";
import { QOE, QOE_MEASURES, type ViewOutcome } from "./qoe.ts";

const T = DEFAULT_QOE_RULE;

/** A window of `views` views of title t1 (counts in WINDOW_MEASURES order). */
function totals(counts: Partial<Record<string, number>>): QoeWindowTotals {
  return {
    entityType: "content",
    entityId: "t1",
    windowStartMs: Date.UTC(2026, 11, 7, 10, 5),
    counts: [
      counts.views ?? 0,
      counts.vsf ?? 0,
      counts.rebufferMs ?? 0,
      counts.playingMs ?? 0,
      counts.measured ?? 0,
      counts.slow ?? 0,
      counts.verySlow ?? 0,
    ],
    viewRefs: ["v1", "event:e9"],
  };
}

Deno.test("qoe rule: below QOE_MIN_VIEWS nothing is flagged, however bad", () => {
  assert.equal(evaluateQoeWindow(totals({ views: 24, vsf: 24 }), T), null);
});

Deno.test("qoe rule: technical VSF above 5% is MEDIUM, above 10% HIGH, 5% exactly is not", () => {
  assert.equal(evaluateQoeWindow(totals({ views: 40, vsf: 2 }), T), null, "2/40 = 5%");
  const medium = evaluateQoeWindow(totals({ views: 40, vsf: 3 }), T)!;
  assert.equal(medium.level, "MEDIUM");
  assert.equal(medium.flagKey, `qoe:content:t1:${Date.UTC(2026, 11, 7, 10, 5)}`);
  assert.equal(medium.evidence.observed.technical_vsf_rate, 0.075);
  assert.deepEqual(medium.evidence.window, {
    start: "2026-12-07T10:05:00.000Z",
    end: "2026-12-07T10:10:00.000Z",
  });
  assert.deepEqual(medium.evidence.observed.view_ids, ["v1", "event:e9"]);
  assert.match(medium.reason, /technical start failures 3 of 40 views \(7\.5% > 5\.0%\)/);
  assert.equal(evaluateQoeWindow(totals({ views: 40, vsf: 5 }), T)!.level, "HIGH");
});

Deno.test("qoe rule: rebuffer ratio is stall time over playing plus stall time", () => {
  // 2 s stalled of 102 s watched: 1.96%, under 2%.
  assert.equal(
    evaluateQoeWindow(totals({ views: 30, rebufferMs: 2_000, playingMs: 100_000 }), T),
    null,
  );
  const f = evaluateQoeWindow(totals({ views: 30, rebufferMs: 3_000, playingMs: 97_000 }), T)!;
  assert.equal(f.level, "MEDIUM");
  assert.equal(f.evidence.observed.rebuffer_ratio, 0.03);
  const high = evaluateQoeWindow(totals({ views: 30, rebufferMs: 5_000, playingMs: 95_000 }), T)!;
  assert.equal(high.level, "HIGH", "5% is more than twice 2%");
});

Deno.test("qoe rule: startup p95 over the threshold is more than 5% of startups over it", () => {
  // 40 measured: p95 is the 38th value, so 2 slow startups leave it under, 3 put it over.
  assert.equal(evaluateQoeWindow(totals({ views: 40, measured: 40, slow: 2 }), T), null);
  const f = evaluateQoeWindow(totals({ views: 40, measured: 40, slow: 3 }), T)!;
  assert.equal(f.level, "MEDIUM");
  assert.equal(f.evidence.observed.startup_p95_over_threshold, true);
  assert.equal(
    evaluateQoeWindow(totals({ views: 40, measured: 40, slow: 3, verySlow: 3 }), T)!.level,
    "HIGH",
  );
  // Views without a measured startup do not count for it.
  assert.equal(evaluateQoeWindow(totals({ views: 40, measured: 0 }), T), null);
});

Deno.test("qoe rule: a view counts business failures and warnings nowhere in its window", () => {
  const counts = new Array<number>(QOE_MEASURES).fill(0);
  counts[QOE.views] = 1;
  counts[QOE.vsfBusiness] = 1;
  counts[QOE.warnings] = 2;
  const o: ViewOutcome = {
    counts,
    startupBucket: -1,
    hourMs: 0,
    dims: {
      contentId: "t1",
      region: "DE",
      platform: "tizen",
      appVersion: "1",
      plan: "basic",
      cdn: "c",
    },
    startMs: 0,
    ref: "v1",
  };
  assert.deepEqual(windowCountsOf(o, T), [1, 0, 0, 0, 0, 0, 0]);
  counts[QOE.startupViews] = 1;
  counts[QOE.startupMs] = 17_000;
  assert.deepEqual(windowCountsOf(o, T), [1, 0, 0, 0, 1, 1, 1], "17 s is over 8 s and 16 s");
});
