import assert from "node:assert/strict";
import { generateTraffic } from "../scripts/_sim_traffic.ts";
import { startHarness } from "./_harness.ts";
import { test } from "./_permissions.ts";

test("[simulate] the simulator's traffic makes the server report what it expects", async () => {
  const h = await startHarness();
  try {
    const traffic = generateTraffic(6_000, 42, Math.floor(Date.now() / 1000) * 1000);
    const x = traffic.expectations;
    const sendPhase = async (items: unknown[]) => {
      for (let i = 0; i < items.length; i += 200) {
        const res = await h.post("/events/batch", items.slice(i, i + 200));
        assert.equal(res.status, 202);
        await res.body?.cancel();
      }
    };
    await sendPhase(traffic.phase1);
    for (const request of traffic.requests) {
      const res = await h.post("/privacy/requests", request);
      assert.equal(res.status, 202);
      await res.body?.cancel();
    }
    await sendPhase(traffic.phase2);
    await h.flush();

    const summary = await h.json("/stats/summary");
    assert.equal(summary.total_events, x.unique_events);
    assert.equal(summary.duplicate_events, x.duplicates_sent);
    const compliance = await h.json<{ flagged_events_by_rule: Record<string, number> }>(
      "/compliance/summary",
    );
    assert.equal(compliance.flagged_events_by_rule.privacy, x.privacy_events);
    assert.equal(compliance.flagged_events_by_rule.retention, x.retention_events);
    const sharing = await h.json<{ items: Array<{ entity_id: string }> }>(
      "/compliance/events?rule=account_sharing&limit=500",
    );
    assert.equal(new Set(sharing.items.map((f) => f.entity_id)).size, x.account_sharing_users);
    const quality = await h.json<{ items: Array<{ entity_type: string; entity_id: string }> }>(
      "/compliance/events?rule=content_quality&limit=500",
    );
    const flagged = new Set(quality.items.map((f) => `${f.entity_type}:${f.entity_id}`));
    for (const entity of x.quality_entities) {
      assert.ok(flagged.has(entity), `${entity} not flagged`);
    }
  } finally {
    await h.pipeline.stop();
  }
});
