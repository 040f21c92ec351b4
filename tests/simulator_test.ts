import assert from "node:assert/strict";
import { generateTraffic } from "../scripts/_sim_traffic.ts";
import { type QoeExpectations, SIM_CDNS } from "../scripts/_sim_views.ts";
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
    // The QoE views, per CDN, as computed by construction (scripts/_sim_views.ts).
    assert.deepEqual(Object.keys(x.qoe), [...SIM_CDNS]);
    for (const [cdn, expected] of Object.entries(x.qoe)) {
      assert.ok(expected.views > 0, cdn);
      assertQoe(cdn, await h.json(`/stats/qoe?cdn=${cdn}`), expected);
    }
  } finally {
    await h.pipeline.stop();
  }
});

/** The `/stats/qoe` answer in the shape of {@link QoeExpectations}. */
interface QoeAnswer {
  views: number;
  started_views: number;
  video_startup_time_ms: {
    p50: number | null;
    p95: number | null;
    mean: number | null;
    views_measured: number;
    views_not_measured: number;
    relative_error: number;
  };
  exits_before_video_start: { count: number; exits_under_1s_not_counted: number };
  video_start_failures: { business: number; technical: number };
  playback_failures: { count: number };
  rebuffers: number;
  rebuffer_ms: number;
  rebuffer_ratio: number | null;
  seek_stall_ms: number;
  playing_ms: number;
  average_bitrate_kbps: number | null;
  upscale_share: number | null;
  warnings: number;
}

/**
 * Asserts a CDN's `/stats/qoe` answer equals the expectation: exactly, except the startup p50 and
 * p95, which are within the answer's relative error (4.9%) of the exact nearest-rank values (plus
 * 0.5 ms: the answer is rounded to whole milliseconds).
 */
function assertQoe(cdn: string, q: QoeAnswer, x: QoeExpectations): void {
  const startup = q.video_startup_time_ms;
  const { startup_p50_ms: p50, startup_p95_ms: p95, views_by_case: _, ...exact } = x;
  assert.deepEqual(
    {
      views: q.views,
      started_views: q.started_views,
      views_measured: startup.views_measured,
      views_not_measured: startup.views_not_measured,
      startup_mean_ms: startup.mean,
      exits_before_video_start: q.exits_before_video_start.count,
      exits_under_1s_not_counted: q.exits_before_video_start.exits_under_1s_not_counted,
      vsf_business: q.video_start_failures.business,
      vsf_technical: q.video_start_failures.technical,
      playback_failures: q.playback_failures.count,
      rebuffers: q.rebuffers,
      rebuffer_ms: q.rebuffer_ms,
      rebuffer_ratio: q.rebuffer_ratio,
      seek_stall_ms: q.seek_stall_ms,
      playing_ms: q.playing_ms,
      average_bitrate_kbps: q.average_bitrate_kbps,
      upscale_share: q.upscale_share,
      warnings: q.warnings,
    },
    exact,
    cdn,
  );
  assert.equal(startup.relative_error, 0.049);
  for (const [name, actual, exactValue] of [["p50", startup.p50, p50], ["p95", startup.p95, p95]]) {
    assert.ok(actual !== null && exactValue !== null, `${cdn} ${name}`);
    assert.ok(
      Math.abs(Number(actual) - Number(exactValue)) <=
        startup.relative_error * Number(exactValue) + 0.5,
      `${cdn} startup ${name}: ${actual}, exact ${exactValue}`,
    );
  }
}

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
