import assert from "node:assert/strict";
import { startHarness } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { makeWireEvent } from "./fixtures.ts";
import { test } from "./_permissions.ts";

interface Sharing {
  id: number;
  level: string;
  status: string;
  revision: number;
  evidence: { observed: { distinct_regions: number }; event_ids: string[] };
  history: Array<{
    actor_name: string;
    actor_role: string;
    from_status: string;
    to_status: string;
    reason: string;
    level: string | null;
    evidence: { observed: { distinct_regions: number } } | null;
  }>;
}

test("[compliance] a dismissed sharing flag follows the latest evidence and re-opens when it escalates", async () => {
  const h = await startHarness();
  try {
    const t0 = recentBase();
    const seen = (i: number, region: string) =>
      makeWireEvent({ event_id: `share-${i}`, user_id: "sharer", region, atMs: t0 + i * 1_000 });
    // Three regions within the hour: MEDIUM (more than 2).
    await h.send([seen(0, "DE"), seen(1, "FR"), seen(2, "IT")]);
    await h.flush();
    const listed = await h.json<{ items: Array<{ id: number; level: string; status: string }> }>(
      "/compliance/events?rule=account_sharing&user_id=sharer&status=open",
    );
    assert.deepEqual(listed.items.map((f) => [f.level, f.status]), [["MEDIUM", "open"]]);
    const path = `/compliance/flags/${listed.items[0].id}`;
    const res = await h.pipeline.app.request(`http://test${path}`, {
      method: "PATCH",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ status: "dismissed", reason: "Travelling family, ticket 12" }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    await res.body?.cancel();

    // Same level again: still dismissed, and the evidence is the newest snapshot.
    await h.send([seen(3, "DE")]);
    await h.flush();
    let flag = await h.json<Sharing>(path);
    assert.equal(flag.status, "dismissed");
    assert.ok(flag.evidence.event_ids.includes("share-3"), JSON.stringify(flag.evidence));

    // Five regions: HIGH (more than 4) re-opens it, and the MEDIUM evidence goes to history.
    await h.send([seen(4, "ES"), seen(5, "PL")]);
    await h.flush();
    flag = await h.json<Sharing>(path);
    assert.deepEqual([flag.level, flag.status, flag.revision], ["HIGH", "open", 2]);
    assert.equal(flag.evidence.observed.distinct_regions, 5);
    assert.deepEqual(
      flag.history.map((e) => [e.actor_name, e.actor_role, e.from_status, e.to_status, e.reason]),
      [
        ["anonymous", "admin", "open", "dismissed", "Travelling family, ticket 12"],
        ["pipeline", "pipeline", "dismissed", "open", "escalated to HIGH"],
      ],
    );
    assert.equal(flag.history[1].level, "MEDIUM");
    assert.equal(flag.history[1].evidence?.observed.distinct_regions, 3);
  } finally {
    await h.pipeline.stop();
  }
});
