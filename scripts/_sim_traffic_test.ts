import assert from "node:assert/strict";
import { generateTraffic, QUALITY, type WireEvent } from "./_sim_traffic.ts";
import { sendItems, type SendReport } from "./simulate.ts";

const NOW = Date.UTC(2026, 10, 23, 12, 0, 0);

function valid(items: unknown[]): WireEvent[] {
  const seen = new Set<string>();
  return (items as WireEvent[]).filter((e) => {
    if (typeof e.user_id !== "string" || e.event_id.startsWith("bad-") || seen.has(e.event_id)) {
      return false;
    }
    seen.add(e.event_id);
    return true;
  });
}

Deno.test("generateTraffic() is deterministic for a seed and differs between seeds", () => {
  const a = generateTraffic(3000, 7, NOW);
  assert.deepEqual(generateTraffic(3000, 7, NOW), a);
  assert.notDeepEqual(generateTraffic(3000, 8, NOW).phase1, a.phase1);
});

Deno.test("generateTraffic() sends events in time order, never in the future, phase 2 after phase 1", () => {
  const t = generateTraffic(5000, 42, NOW);
  const times = [...valid(t.phase1), ...valid(t.phase2)].map((e) => Date.parse(e.timestamp));
  assert.deepEqual(times, [...times].sort((x, y) => x - y));
  assert.ok(times.every((ms) => ms <= NOW));
});

Deno.test("generateTraffic() gives ERROR events a code and others none", () => {
  const t = generateTraffic(5000, 42, NOW);
  for (const e of valid([...t.phase1, ...t.phase2])) {
    assert.equal(e.error_code === null, e.event_type !== "ERROR", e.event_id);
  }
});

Deno.test("generateTraffic() exercises every rule and its expectations match a recount", () => {
  const t = generateTraffic(20_000, 42, NOW);
  const events = valid([...t.phase1, ...t.phase2]);
  const x = t.expectations;
  assert.equal(events.length, 20_000);
  assert.equal(x.unique_events, 20_000);
  assert.ok(x.duplicates_sent > 100 && x.malformed_sent > 10);
  assert.equal(x.privacy_events, events.filter((e) => e.is_eu && !e.has_consent).length);
  assert.ok(x.privacy_events > 0 && x.retention_events > 0);
  assert.ok(x.account_sharing_users > 0);
  assert.ok(t.requests.length > 0);
  assert.ok(events.some((e) => e.do_not_track === true));
  // Every quality entity really has a window over the threshold.
  for (const entity of x.quality_entities) {
    const [kind, id] = [
      entity.slice(0, entity.indexOf(":")),
      entity.slice(entity.indexOf(":") + 1),
    ];
    const windows = new Map<number, { n: number; errors: number }>();
    for (const e of events) {
      if ((kind === "content" ? e.content_id : e.device_id) !== id) continue;
      const w = Math.floor(Date.parse(e.timestamp) / QUALITY.windowMs);
      const c = windows.get(w) ?? { n: 0, errors: 0 };
      c.n++;
      if (e.event_type === "ERROR") c.errors++;
      windows.set(w, c);
    }
    assert.ok(
      [...windows.values()].some((c) =>
        c.n >= QUALITY.minEvents && c.errors / c.n > QUALITY.maxErrorRate
      ),
      entity,
    );
  }
  assert.ok(x.quality_entities.some((e) => e.startsWith("content:title-bad")));
  assert.ok(x.quality_entities.some((e) => e.startsWith("device:tv-bad")));
});

Deno.test("sendItems() batches, retries a 503 after Retry-After and counts accepted items", async () => {
  let calls = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const batch = await req.json();
    if (++calls === 1) return new Response("{}", { status: 503, headers: { "retry-after": "0" } });
    return Response.json({ accepted: batch.length, rejected: [] }, { status: 202 });
  });
  try {
    const report: SendReport = {
      sent_events: 0,
      accepted: 0,
      rejected: 0,
      statuses: {},
      network_errors: 0,
      retries_after_503: 0,
      privacy_requests: 0,
      elapsed_s: 0,
      events_per_s: 0,
    };
    const items = Array.from({ length: 250 }, (_, i) => ({ event_id: `e${i}` }));
    await sendItems(
      items,
      {
        url: `http://127.0.0.1:${server.addr.port}`,
        batch: 100,
        concurrency: 2,
      },
      report,
      () => {},
    );
    assert.equal(report.accepted, 250);
    assert.equal(report.sent_events, 250);
    assert.equal(report.retries_after_503, 1);
    assert.deepEqual(report.statuses, { 202: 3, 503: 1 });
  } finally {
    await server.shutdown();
  }
});
