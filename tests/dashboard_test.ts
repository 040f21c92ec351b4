import assert from "node:assert/strict";
import { chromiumPath, launchBrowser } from "./_browser.ts";
import { test } from "./_permissions.ts";
import { recentBase } from "./_scenarios.ts";
import { spawnServer } from "./_server_process.ts";
import { makeWireEvent, type WireEvent } from "./fixtures.ts";

const chromium = (() => {
  try {
    return chromiumPath();
  } catch {
    return null; // no permission to look: the test is ignored anyway
  }
})();
/**
 * QoE views (one TV each): "title-fail" on "cdn-bad" only fails to start (technical); "title-bad" on
 * "cdn-bad" fails once in two and stalls 2 s; "title-good" on "cdn-good" starts in 1-2 s and stalls
 * 1 s once. So the worst title is "title-fail" (VSF-T 100%, nothing to measure: "–"), then
 * "title-bad" (50%); the worst CDN is "cdn-bad" (2 of 3 views).
 */
function qoeViews(t0: number): WireEvent[] {
  let n = 0;
  const view = (id: string, title: string, cdn: string, steps: Array<[number, string, object?]>) =>
    steps.map(([ms, type, more]) =>
      makeWireEvent({
        event_id: `dash-qoe-${++n}`,
        user_id: `viewer-${id}`,
        device_id: `tv-${id}`,
        content_id: title,
        event_type: type,
        view_id: id,
        cdn,
        atMs: t0 + ms,
        extra_metadata: { platform: "tizen", app_version: "7.1" },
        ...more,
      })
    );
  return [
    ...view("f1", "title-fail", "cdn-bad", [
      [0, "PLAY_REQUEST"],
      [2_000, "ERROR", { error_code: "DRM_LICENSE_FAILED" }],
    ]),
    ...view("b1", "title-bad", "cdn-bad", [
      [0, "PLAY_REQUEST"],
      [3_000, "ERROR", { error_code: "MANIFEST_TIMEOUT" }],
    ]),
    ...view("b2", "title-bad", "cdn-bad", [
      [0, "PLAY_REQUEST"],
      [4_000, "FIRST_FRAME", { bitrate_kbps: 3_000 }],
      [10_000, "REBUFFER_START"],
      [12_000, "REBUFFER_END"],
      [30_000, "STOP"],
    ]),
    ...view("g1", "title-good", "cdn-good", [
      [0, "PLAY_REQUEST"],
      [1_000, "FIRST_FRAME", { bitrate_kbps: 6_000 }],
      [41_000, "STOP"],
    ]),
    ...view("g2", "title-good", "cdn-good", [
      [0, "PLAY_REQUEST"],
      [2_000, "FIRST_FRAME", { bitrate_kbps: 6_000 }],
      [20_000, "REBUFFER_START"],
      [21_000, "REBUFFER_END"],
      [42_000, "STOP"],
    ]),
  ];
}

const TOKENS = {
  ingest: "tv-ingest-secret-0001",
  analyst: "bi-analyst-secret-0002",
  admin: "ops-admin-secret-00003",
};

test({
  name: "[dashboard] a real browser shows the API's numbers, per role, with no console errors",
  ignore: chromium === null,
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "ott-dashboard-" });
    const server = await spawnServer({
      DATA_DIR: dataDir,
      FLUSH_INTERVAL_MS: "200",
      API_TOKENS: Object.entries(TOKENS).map(([role, secret]) => `${role}:${role}-1:${secret}`)
        .join(","),
    });
    const browser = await launchBrowser(chromium!);
    try {
      const t0 = recentBase();
      const events = Array.from({ length: 40 }, (_, i) =>
        makeWireEvent({
          event_id: `dash-${i}`,
          user_id: `viewer${i % 9}`,
          content_id: `title${i % 4}`,
          event_type: i % 5 === 0 ? "ERROR" : "PLAY",
          error_code: i % 5 === 0 ? "DRM_FAIL" : null,
          has_consent: i % 7 !== 0,
          atMs: t0 + i * 1_000,
        }));
      // A TV with do-not-track on files an open privacy request that has no deadline (due_at null).
      events.push(makeWireEvent({
        event_id: "dash-dnt",
        user_id: "viewer-dnt",
        do_not_track: true,
        atMs: t0 + 40_000,
      }));
      events.push(...qoeViews(t0));
      const sent = await fetch(`${server.url}/events/batch`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${TOKENS.ingest}` },
        body: JSON.stringify(events),
      });
      assert.equal(sent.status, 202, await sent.text());
      const read = async (path: string, token: string) =>
        await (await fetch(`${server.url}${path}`, {
          headers: { authorization: `Bearer ${token}` },
        })).json();
      const deadline = Date.now() + 15_000;
      let summary = await read("/stats/summary", TOKENS.admin);
      while (summary.total_events < events.length && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        summary = await read("/stats/summary", TOKENS.admin);
      }
      assert.equal(summary.total_events, events.length);
      const noDeadline = (await read("/privacy/requests?status=received", TOKENS.admin)).items
        .find((r: { user_id: string }) => r.user_id === "viewer-dnt");
      assert.equal(noDeadline?.type, "do_not_track");
      assert.equal(noDeadline.due_at, null);
      // The QoE rows are written beside the counts: wait for the five views.
      let qoe = await read("/stats/qoe?cdn=cdn-bad", TOKENS.admin);
      while (qoe.views < 3 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        qoe = await read("/stats/qoe?cdn=cdn-bad", TOKENS.admin);
      }
      assert.equal(qoe.views, 3);
      assert.equal((await read("/stats/qoe?cdn=cdn-good", TOKENS.admin)).views, 2);

      const { tab } = browser;
      const loadMs = await tab.open(`${server.url}/dashboard`);
      console.log(`[dashboard] page loaded in ${loadMs.toFixed(0)} ms`);
      await tab.waitFor(`!document.getElementById("login").hidden`);
      await tab.evaluate(`(() => {
        document.getElementById("token").value = ${JSON.stringify(TOKENS.admin)};
        document.getElementById("login").requestSubmit();
      })()`);
      await tab.waitFor(`document.getElementById("total-events").textContent !== "–"`);
      await tab.waitFor(`document.querySelectorAll("#compliance tbody tr").length > 0`);
      await tab.waitFor(`document.getElementById("updated").textContent !== ""`);
      // Forty events in a fresh database open no incident.
      assert.equal(
        await tab.evaluate(`document.getElementById("incidents-empty").hidden ? null :
          document.getElementById("incidents-empty").textContent`),
        "No open incidents",
      );
      // A panel that throws is reported in the page, not on the console: both must stay clean.
      assert.match(
        await tab.evaluate(`document.getElementById("updated").textContent`),
        /^Updated/,
      );
      // The page's range is the last 24 hours, which holds every event sent.
      assert.equal(
        await tab.evaluate(`document.getElementById("total-events").textContent`),
        String(events.length),
      );
      assert.equal(
        await tab.evaluate(`document.getElementById("total-viewers").textContent`),
        String(summary.unique_viewers),
      );
      const compliance = await read("/compliance/summary", TOKENS.admin);
      const shown = await tab.evaluate<string[][]>(`[...document.querySelectorAll(
        "#compliance tbody tr")].map((tr) => [...tr.cells].map((td) => td.textContent))`);
      for (const [rule, flagged] of shown) {
        assert.equal(flagged, String(compliance.flagged_events_by_rule[rule]), rule);
      }
      assert.deepEqual(
        await tab.evaluate(`[...document.querySelectorAll("#requests tbody tr")].map((tr) =>
          [...tr.cells].map((td) => td.textContent))`),
        [[noDeadline.id, "do_not_track", "received", "no deadline"]],
      );
      // The QoE panel: worst titles and CDNs as the API ranks them, nulls as "–", startup drawn.
      const rows = (id: string) =>
        tab.evaluate<string[][]>(`[...document.querySelectorAll("#${id} tbody tr")].map((tr) =>
          [...tr.cells].map((td) => td.textContent))`);
      await tab.waitFor(`document.querySelectorAll("#qoe-worst-cdn tbody tr").length >= 2`);
      const titles = await rows("qoe-worst-content_id");
      assert.deepEqual(titles[0], ["title-fail", "1", "–", "100.00%", "–"]);
      assert.deepEqual(titles[1].slice(0, 2), ["title-bad", "2"]);
      assert.equal(titles[1][3], "50.00%");
      const bad = await read("/stats/qoe?content_id=title-bad", TOKENS.admin);
      assert.equal(titles[1][2], `${bad.video_startup_time_ms.p95.toLocaleString("en-US")} ms`);
      assert.equal(titles[1][4], `${(bad.rebuffer_ratio * 100).toFixed(2)}%`);
      const cdns = await rows("qoe-worst-cdn");
      // "unknown": the views of the old-client events above, which send no CDN.
      assert.deepEqual(cdns.map((row) => row[0]).sort(), ["cdn-bad", "cdn-good", "unknown"]);
      assert.equal(cdns[0][0], "cdn-bad");
      assert.deepEqual(cdns[0].slice(1, 4), [
        "3",
        `${bad.video_startup_time_ms.p95.toLocaleString("en-US")} ms`,
        "66.67%",
      ]);
      assert.equal(cdns.find((row) => row[0] === "cdn-good")?.[3], "0.00%");
      const startup = await tab.evaluate<{ p50: number[]; p95: number[]; canvas: boolean }>(`({
        p50: qoeStartupChart.data[1].filter((v) => v !== null),
        p95: qoeStartupChart.data[2].filter((v) => v !== null),
        canvas: document.querySelector("#qoe-startup-chart canvas") !== null,
      })`);
      assert.ok(startup.canvas, "the startup chart is drawn");
      assert.equal(startup.p50.length, 1, "one hour holds every view");
      assert.ok(startup.p50[0] >= 1_000 && startup.p95[0] <= 4_200, JSON.stringify(startup));
      const rates = await tab.evaluate<number[][]>(
        `qoeRatesChart.data.slice(1).map((s) => s.filter((v) => v !== null))`,
      );
      assert.deepEqual(rates.map((s) => s.length), [1, 1, 1], "rebuffer, VSF and EBVS rates");
      // Every view started in one hour: its points are /stats/qoe's over the range, in percent.
      const all = await read("/stats/qoe", TOKENS.admin);
      assert.equal(all.video_start_failures.technical, 2, "title-fail's and title-bad's");
      const expected = [
        all.rebuffer_ratio,
        all.video_start_failures.rate,
        all.exits_before_video_start.rate,
      ];
      rates.forEach(([value], i) =>
        assert.ok(Math.abs(value - expected[i] * 100) < 1e-9, `${value} vs ${expected[i]}`)
      );
      assert.equal(
        await tab.evaluate(`document.getElementById("who").textContent`),
        "admin-1 (admin)",
      );
      assert.equal(
        await tab.evaluate(`location.href.includes(${JSON.stringify(TOKENS.admin)})`),
        false,
      );
      const shot = new URL("../artifacts/dashboard.png", import.meta.url);
      await Deno.mkdir(new URL("../artifacts/", import.meta.url), { recursive: true });
      await Deno.writeFile(shot, await tab.screenshot());
      console.log(`[dashboard] screenshot: ${shot.pathname}`);
      assert.deepEqual(tab.errors, []);

      // uPlot draws axis labels on a canvas, so no DOM text can be checked: instead give the chart
      // hourly counts of 20,000 and check the room left of the plot (its overlay's offset) holds
      // the tick, the gap and the widest label "20,000" in the axis font.
      const axis = await tab.evaluate<{ max: number; room: number; needed: number }>(`(async () => {
        chart.setData([chart.data[0], chart.data[0].map(() => 20000), chart.data[2]]);
        await new Promise((resolve) => requestAnimationFrame(resolve));
        const y = chart.axes[1];
        const context = document.createElement("canvas").getContext("2d");
        context.font = y.font[0];
        const label = new Intl.NumberFormat(navigator.language).format(20000);
        const labelWidth = context.measureText(label).width / devicePixelRatio;
        return {
          max: chart.scales.y.max,
          room: chart.over.offsetLeft,
          needed: y.ticks.size + y.gap + labelWidth,
        };
      })()`);
      assert.ok(axis.max >= 20_000, `the y scale ends at ${axis.max}`);
      assert.ok(axis.room >= axis.needed, `y-axis labels need ${axis.needed} px, got ${axis.room}`);

      // A reviewer acknowledges the newest HIGH flag from the page; the API agrees.
      const newest = (await read("/compliance/events?level=HIGH&limit=1", TOKENS.admin)).items[0];
      await tab.evaluate(`[...document.querySelectorAll("#flags button")]
        .find((b) => b.textContent === "Acknowledge").click()`);
      await tab.waitFor(`document.querySelector("#flags tbody tr").cells[3].textContent ===
        "acknowledged"`);
      const reviewed = await read(`/compliance/flags/${newest.id}`, TOKENS.admin);
      assert.equal(reviewed.status, "acknowledged");
      assert.equal(reviewed.history.at(-1).actor_name, "admin-1");
      assert.deepEqual(tab.errors, []);

      // An analyst sees the analytics panels only, and the page asks for nothing it may not read.
      await tab.evaluate(`sessionStorage.clear()`);
      await tab.open(`${server.url}/dashboard`);
      await tab.waitFor(`!document.getElementById("login").hidden`);
      await tab.evaluate(`(() => {
        document.getElementById("token").value = ${JSON.stringify(TOKENS.analyst)};
        document.getElementById("login").requestSubmit();
      })()`);
      await tab.waitFor(`document.getElementById("total-events").textContent !== "–"`);
      await tab.waitFor(`document.getElementById("updated").textContent.startsWith("Updated")`);
      const visible = await tab.evaluate<string[]>(`[...document.querySelectorAll(
        "section[data-roles]")].filter((s) => !s.hidden).map((s) => s.querySelector("h2").textContent)`);
      assert.deepEqual(visible, [
        "Open incidents",
        "Totals over the range",
        "Events and error rate per hour",
        "Top by errors",
        "Quality of experience per hour",
      ]);
      // Analysts may read incidents too; none is open, and one given to the panel reads in full.
      await tab.waitFor(`!document.getElementById("incidents-empty").hidden`);
      assert.equal(
        await tab.evaluate(`document.getElementById("incidents-empty").textContent`),
        "No open incidents",
      );
      const startedAt = "2026-01-05T10:15:00Z";
      const incidentRows = await tab.evaluate<{ rows: string[][]; since: string }>(`(() => {
        const incident = (over) => ({
          level: "LOW", series: "volume:platform", key: "webos", kind: "count",
          started_at: ${JSON.stringify(startedAt)}, expected: 1200.4, observed: 310, viewers: 890,
          drill_down: [{ text: "region eu-west: 100% of the drop" }], exposure: null, ...over,
        });
        showIncidents([
          incident({
            level: "HIGH", kind: "rate", series: "errors:platform", key: "tizen",
            expected: 0.001, observed: 0.15, drill_down: [], viewers: 1500,
            exposure: { currency: "EUR", monthly_revenue: 4495.5, viewers_by_plan: {}, unpriced_plans: [] },
          }),
          incident({}),
        ]);
        return {
          rows: [...document.querySelectorAll("#incidents tbody tr")].map((tr) =>
            [...tr.cells].map((td) => td.textContent)),
          since: new Date(${JSON.stringify(startedAt)}).toLocaleString(),
        };
      })()`);
      assert.deepEqual(incidentRows.rows, [
        [
          "HIGH",
          "errors:platform = tizen",
          incidentRows.since,
          "15.00% vs 0.10% expected",
          "–",
          "1,500",
          "4,495.5 EUR/month exposed",
        ],
        [
          "LOW",
          "volume:platform = webos",
          incidentRows.since,
          "310 vs 1,200 expected",
          "region eu-west: 100% of the drop",
          "890",
          "–",
        ],
      ]);
      assert.equal(await tab.evaluate(`document.getElementById("incidents-empty").hidden`), true);
      assert.deepEqual(tab.errors, []);
    } finally {
      await browser.close();
      server.kill("SIGTERM");
      await server.exited();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
