import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { AnomalyDetector, incidentLevel } from "./anomaly_detector.ts";
import { emptyBatch } from "./pending.ts";
import { writeFlush } from "../db/flush.ts";
import { KEY_SEP } from "../db/flush_batch.ts";
import { ALERT_ALL, createMaintenance } from "../db/incidents.ts";
import { createLogger } from "../logger.ts";
import type { Database } from "../db/schema.ts";
import { testOnEveryDatabase } from "../tests/_harness.ts";
import { FAULTS, type ScenarioOptions, WEEK } from "../scripts/_scenario_week.ts";
import { runScenario, score } from "../scripts/_scenario_week_db.ts";

testOnEveryDatabase(
  "anomaly",
  "the scripted days: each fault opens one incident within 2 windows, drills down to its cause, and recovers",
  async (db) => {
    // Five watched days hold every fault; the 6.5-day week runs in `deno task bench anomaly`.
    const o: ScenarioOptions = { ...WEEK, days: 5 };
    const { incidents, faults, matched } = await runScenario(db, o);
    // (Delay: the opening window ends at most 2 windows after the fault's first full window.)
    const summary = incidents.map((i) =>
      `${i.series}=${i.key} ${i.opened_at} -> ${i.recovered_at} ${i.drill_down[0]?.text ?? ""}`
    ).join("\n");
    for (const [k, fault] of faults.entries()) {
      assert.equal(matched[k].length, 1, `${fault.name}: one incident\n${summary}`);
      const incident = matched[k][0];
      assert.equal(incident.state, "recovered", `${fault.name}: recovered\n${summary}`);
      assert.ok(Date.parse(incident.recovered_at!) >= fault.endMs, `${fault.name}: after it ends`);
      assert.ok(
        Date.parse(incident.recovered_at!) <= fault.endMs + 6 * o.windowMs,
        `${fault.name}: recovered within 6 windows of its end (${incident.recovered_at})`,
      );
      if (fault.drillDown !== undefined) {
        const [dimension, value] = fault.drillDown.split("=");
        const top = incident.drill_down[0];
        assert.equal(top?.dimensions[dimension], value, `${fault.name}: ${JSON.stringify(top)}`);
        assert.ok(top.share >= 0.8, `${fault.name}: the cause explains most: ${top.text}`);
      }
      assert.ok(incident.viewers > 0, `${fault.name}: viewers affected`);
      assert.equal(incident.exposure?.currency, "EUR");
      assert.ok(incident.exposure!.monthly_revenue > 0, `${fault.name}: revenue exposed`);
    }
    // The CDN stall shows on the biggest titles it serves: they attach to its incident.
    const stall = matched[2][0];
    assert.equal(stall.series, "rebuffer:cdn");
    assert.ok(
      stall.related.some((r) => r.series === "rebuffer:content_id" && r.key === "title-01"),
      `titles stalled by cdn-b are related: ${JSON.stringify(stall.related)}`,
    );
    // The outage: viewers missing by plan, priced.
    const outage = matched[0][0];
    const byPlan = outage.exposure!.viewers_by_plan;
    assert.deepEqual(Object.keys(byPlan).sort(), ["basic", "premium", "standard"]);
    const revenue = byPlan.basic * 7.99 + byPlan.standard * 12.99 + byPlan.premium * 17.99;
    assert.ok(Math.abs(outage.exposure!.monthly_revenue - revenue) < 0.01);
    const scored = score({ incidents, faults, matched, stepMs: [], trackedKeys: 0 }, o.windowMs);
    assert.equal(scored.recall, 1);
    assert.ok(scored.falseIncidents.length <= 1, `at most one false incident:\n${summary}`);
    for (const delay of scored.delayWindows) assert.ok(delay !== null && delay <= 3, `${delay}`);
    // Alerts: one outbox row per opening and recovery (and level changes), none for related keys.
    const outbox = await sql<{ n: number | string }>`
      select count(*) as n from incident_outbox where reason in ('opened', 'recovered')`
      .execute(db);
    assert.equal(Number(outbox.rows[0].n), 2 * incidents.length);
  },
);

testOnEveryDatabase(
  "anomaly",
  "a maintenance window over the outage opens no incident, and its hours stay out of baselines",
  async (db) => {
    const o: ScenarioOptions = { ...WEEK, days: 2 };
    const [outage] = FAULTS;
    await createMaintenance(db, {
      startsAtMs: outage.startMs - 600_000,
      endsAtMs: outage.endMs + 600_000,
      series: "volume:platform",
      key: "webos",
      reason: "webOS backend migration",
    }, "ops");
    const { incidents } = await runScenario(db, o);
    assert.deepEqual(
      incidents.filter((i) => i.series === "volume:platform" && i.key === "webos"),
      [],
    );
  },
);

Deno.test("anomaly: an incident's level grows with its length and the viewers it touches", () => {
  assert.equal(incidentLevel(2, 10), "LOW");
  assert.equal(incidentLevel(6, 10), "MEDIUM");
  assert.equal(incidentLevel(2, 100), "MEDIUM");
  assert.equal(incidentLevel(24, 0), "HIGH");
  assert.equal(incidentLevel(2, 1_000), "HIGH");
});

testOnEveryDatabase(
  "anomaly",
  "a title nobody watches for a day loses its trackers; one still watched keeps them",
  async (db) => {
    const W = 300_000;
    const start = Date.UTC(2026, 10, 2);
    const detector = testDetector(db, 10_000);
    const windows = 25 * 12 + 1;
    for (let i = 0; i < windows; i++) {
      const t = start + i * W;
      const batch = emptyBatch();
      const titles = i < 12 ? ["title-gone", "title-kept"] : ["title-kept"];
      for (const title of titles) {
        batch.anomalyTitles.set([t, title, "tizen", "basic"].join(KEY_SEP), [100, 1, 30]);
      }
      await writeFlush(db, batch);
      await detector.stepTo(t + W);
      // Errors by title, and volume/errors/consent keys of nothing: only title keys are tracked.
      if (i === 11) assert.equal(detector.trackedKeys, 2);
    }
    assert.equal(detector.trackedKeys, 1, "title-gone's tracker is dropped after a day");
  },
);

testOnEveryDatabase(
  "anomaly",
  "at ANOMALY_MAX_SERIES new keys wait for tracked ones to go",
  async (db) => {
    const W = 300_000;
    const t = Date.UTC(2026, 10, 2);
    const detector = testDetector(db, 3);
    // Window 1: a, b, c are the busiest; window 2: d, e, f. Tracked keys stay at the cap.
    for (const [k, titles] of [["a", "b", "c"], ["d", "e", "f"]].entries()) {
      const batch = emptyBatch();
      for (const title of titles) {
        batch.anomalyTitles.set([t + k * W, title, "tizen", "basic"].join(KEY_SEP), [100, 1, 30]);
      }
      await writeFlush(db, batch);
      await detector.stepTo(t + (k + 1) * W);
    }
    assert.equal(detector.trackedKeys, 3);
  },
);

/** A detector on 5-minute windows with no grace, no prices, judging every key it may track. */
function testDetector(db: Kysely<Database>, maxSeries: number): AnomalyDetector {
  return new AnomalyDetector({
    db,
    windowMs: 300_000,
    minEvents: 25,
    maxSeries,
    baselineWeeks: 4,
    graceMs: 0,
    planPrices: null,
    currency: "USD",
    watermarkMs: () => 0,
    owner: "test",
    alerts: ALERT_ALL,
    logger: createLogger("error"),
  });
}
