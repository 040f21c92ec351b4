import assert from "node:assert/strict";
import { generateTraffic } from "../scripts/_sim_traffic.ts";
import { type Harness, startHarness } from "./_harness.ts";
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

const TOKENS = [
  { role: "ingest" as const, name: "tv", secret: "ingest-secret" },
  { role: "analyst" as const, name: "analyst", secret: "analyst-secret" },
  { role: "privacy" as const, name: "dpo", secret: "privacy-secret" },
];

/** Serves the harness's app on a loopback port, runs `deno task simulate` with `args` and `env`. */
async function simulate(h: Harness, args: string[], env: Record<string, string>) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => h.pipeline.app.fetch(req),
  );
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["task", "-q", "simulate", ...args],
      cwd: new URL("..", import.meta.url).pathname,
      env: { SIM_URL: "", SIM_TOKEN: "", PORT: String(server.addr.port), ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
  } finally {
    await server.shutdown();
  }
}

test("[simulate] the simulator finds the server by PORT and counts rejects in 202s", async () => {
  const h = await startHarness({ apiTokens: TOKENS });
  try {
    const run = await simulate(
      h,
      ["--events", "2000", "--seed", "7", "--privacy-token", "privacy-secret", "--json"],
      { SIM_TOKEN: "ingest-secret" },
    );
    assert.equal(run.code, 0, run.stderr);
    const { report, expected } = JSON.parse(run.stdout);
    assert.ok(expected.malformed_sent > 0 && expected.privacy_requests > 0);
    assert.equal(report.rejected, expected.malformed_sent);
    assert.equal(report.rejected_in_batches, expected.malformed_sent);
    assert.deepEqual(report.rejected_by_status, {});
    const fields = Object.values(report.rejected_by_field as Record<string, number>);
    assert.ok(fields.reduce((a, b) => a + b, 0) >= expected.malformed_sent);
    assert.equal(report.privacy_requests_recorded, expected.privacy_requests);
  } finally {
    await h.pipeline.stop();
  }
});

test("[simulate] a token without the privacy role stops the run before any event", async () => {
  const h = await startHarness({ apiTokens: TOKENS });
  try {
    const run = await simulate(
      h,
      ["--events", "2000", "--token", "ingest-secret", "--privacy-token", "analyst-secret"],
      {},
    );
    assert.equal(run.code, 1);
    assert.equal(run.stdout, "");
    assert.match(run.stderr, /^Cannot file privacy requests: the server answered 403 /);
    assert.match(run.stderr, /has role analyst/);
    assert.match(run.stderr, /pass a token with the privacy role \(or admin\) as --privacy-token/);
    await h.flush();
    const res = await h.get("/stats/summary", { authorization: "Bearer analyst-secret" });
    assert.equal(res.status, 200);
    assert.equal((await res.json()).total_events, 0, "no event was sent");
  } finally {
    await h.pipeline.stop();
  }
});
