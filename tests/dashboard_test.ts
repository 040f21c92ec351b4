import assert from "node:assert/strict";
import { chromiumPath, launchBrowser } from "./_browser.ts";
import { test } from "./_permissions.ts";
import { recentBase } from "./_scenarios.ts";
import { spawnServer } from "./_server_process.ts";
import { makeWireEvent } from "./fixtures.ts";

const chromium = (() => {
  try {
    return chromiumPath();
  } catch {
    return null; // no permission to look: the test is ignored anyway
  }
})();
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
        "Totals over the range",
        "Events and error rate per hour",
        "Top by errors",
      ]);
      assert.deepEqual(tab.errors, []);
    } finally {
      await browser.close();
      server.kill("SIGTERM");
      await server.exited();
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
