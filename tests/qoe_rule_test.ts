/**
 * The `qoe` rule end to end: views sent through the pipeline, their windows flushed by the workers
 * of every user shard, and the checker's flags per title, CDN and region read back from the
 * compliance API, with evidence a reviewer can follow.
 */
import assert from "node:assert/strict";
import { testPipelineOnEveryDatabase } from "./_harness.ts";
import { makeWireEvent, type WireEvent } from "./fixtures.ts";
import { recentBase } from "./_scenarios.ts";

let n = 0;

interface Where {
  title: string;
  cdn: string;
  region: string;
}

/** One view: requested, then started 1 s later and stopped a minute on, or failed with `error`. */
function view(t0: number, id: string, at: Where, error?: string): WireEvent[] {
  const ev = (ms: number, type: string, more: Partial<WireEvent> = {}) =>
    makeWireEvent({
      event_id: `qr${++n}`,
      user_id: `u-${id}`,
      device_id: `tv-${id}`,
      content_id: at.title,
      region: at.region,
      event_type: type,
      atMs: t0 + ms,
      view_id: id,
      cdn: at.cdn,
      ...more,
    });
  if (error !== undefined) {
    return [ev(0, "PLAY_REQUEST"), ev(3_000, "ERROR", { error_code: error })];
  }
  return [ev(0, "PLAY_REQUEST"), ev(1_000, "FIRST_FRAME"), ev(61_000, "STOP")];
}

/** `count` views at `at`, the first `failing` of them failing with `error`. */
function views(t0: number, prefix: string, at: Where, count: number, failing = 0, error = "X") {
  return Array.from(
    { length: count },
    (_, i) => view(t0 + i * 1_000, `${prefix}${i}`, at, i < failing ? error : undefined),
  ).flat();
}

interface QoeFlag {
  id: number;
  entity_type: string;
  entity_id: string;
  level: string;
  reason: string;
  revision: number;
  evidence: { observed: Record<string, unknown>; window: { start: string } };
}

testPipelineOnEveryDatabase(
  "qoe",
  "the qoe rule flags the title, CDN and region whose views fail to start, with evidence",
  {},
  async (h) => {
    const t0 = recentBase();
    const bad = { title: "title-bad", cdn: "cdn-bad", region: "BR" };
    const fine = { title: "title-fine", cdn: "cdn-good", region: "US" };
    const few = { title: "title-few", cdn: "cdn-few", region: "CA" };
    await h.send([
      // 30 views, 3 technical start failures, 2 geo-blocked (business): 3 of 32 = 9.4%.
      ...views(t0, "bad-", bad, 30, 3, "DECODER_FAILED"),
      ...views(t0 + 60_000, "geo-", bad, 2, 2, "GEO_BLOCKED"),
      // 40 views of which 10 geo-blocked: business failures never raise a quality flag.
      ...views(t0, "fine-", fine, 40, 10, "GEO_BLOCKED"),
      // Every view fails, but 10 views are below QOE_MIN_VIEWS (25).
      ...views(t0, "few-", few, 10, 10, "DECODER_FAILED"),
    ]);
    await h.flush();
    const list = async () =>
      (await h.json<{ items: QoeFlag[] }>("/compliance/events?rule=qoe&limit=50")).items;
    const flags = await list();
    assert.deepEqual(
      flags.map((f) => `${f.entity_type}:${f.entity_id}:${f.level}`).sort(),
      ["cdn:cdn-bad:MEDIUM", "content:title-bad:MEDIUM", "region:BR:MEDIUM"],
    );
    const title = flags.find((f) => f.entity_type === "content")!;
    assert.equal(title.evidence.observed.views, 32);
    assert.equal(title.evidence.observed.technical_start_failures, 3);
    assert.equal(title.evidence.observed.technical_vsf_rate, 0.0938);
    assert.deepEqual(
      [...(title.evidence.observed.view_ids as string[])].sort(),
      ["bad-0", "bad-1", "bad-2"],
      "the failing views, for a person to look up",
    );
    assert.equal(title.evidence.window.start, new Date(t0).toISOString());
    assert.match(title.reason, /technical start failures 3 of 32 views/);
    const scores = await h.json<{ items: Array<{ entity_type: string; entity_id: string }> }>(
      "/compliance/risk?entity_type=cdn",
    );
    assert.ok(scores.items.some((s) => s.entity_id === "cdn-bad"), JSON.stringify(scores));

    // Two more technical failures: 5 of 34 (14.7%) is over twice 5%, HIGH.
    await h.send(views(t0 + 120_000, "late-", bad, 2, 2, "DECODER_FAILED"));
    await h.flush();
    const after = await list();
    const escalated = after.find((f) => f.entity_type === "content")!;
    assert.equal(escalated.id, title.id, "the same window's flag, escalated");
    assert.equal(escalated.level, "HIGH");
    assert.equal(escalated.evidence.observed.technical_start_failures, 5);
    assert.equal(after.length, 3);
  },
);
