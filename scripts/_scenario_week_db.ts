/**
 * The scripted week against a database: seeds the baseline weeks' hourly rows in bulk, writes each
 * watched window through the flush, steps the detector by watermark after it, and scores the
 * incidents against the injected faults (precision, recall, detection delay). Used by the test
 * (`actors/anomaly_detector_test.ts`) and `deno task bench anomaly`.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import { emptyBatch } from "../actors/pending.ts";
import { AnomalyDetector } from "../actors/anomaly_detector.ts";
import { writeFlush } from "../db/flush.ts";
import { KEY_SEP } from "../db/flush_batch.ts";
import { type Incident, listIncidents } from "../db/incidents.ts";
import type { Database } from "../db/schema.ts";
import { createLogger } from "../logger.ts";
import {
  baselineHours,
  type CubeCell,
  type Fault,
  FAULTS,
  type ScenarioOptions,
  type TitleCell,
  WATCH_START_MS,
  watchedWindows,
  windowRows,
} from "./_scenario_week.ts";

/** Monthly prices of the scenario's plans (EUR). */
export const PRICES = { basic: 7.99, standard: 12.99, premium: 17.99 };

/** Writes the baseline weeks' hourly rows in bulk, as the history bench seeds its tables. */
export async function seedBaseline(db: Kysely<Database>, o: ScenarioOptions): Promise<void> {
  let cube: CubeCell[] = [];
  let titles: TitleCell[] = [];
  const write = async () => {
    if (cube.length > 0) {
      await sql`insert into anomaly_cube_hourly (hour, platform, region, app_version,
          subscription_plan, events, errors, eu_events, eu_consented, viewers)
        select * from unnest(${cube.map((c) => new Date(c.startMs).toISOString())}::timestamptz[],
          ${cube.map((c) => c.platform)}::text[], ${cube.map((c) => c.region)}::text[],
          ${cube.map((c) => c.app_version)}::text[], ${
        cube.map((c) => c.subscription_plan)
      }::text[],
          ${cube.map((c) => c.events)}::bigint[], ${cube.map((c) => c.errors)}::bigint[],
          ${cube.map((c) => c.eu_events)}::bigint[], ${cube.map((c) => c.eu_consented)}::bigint[],
          ${cube.map((c) => c.viewers)}::bigint[])`.execute(db);
    }
    if (titles.length > 0) {
      await sql`insert into anomaly_titles_hourly (hour, content_id, platform, subscription_plan,
          events, errors, viewers)
        select * from unnest(
          ${titles.map((c) => new Date(c.startMs).toISOString())}::timestamptz[],
          ${titles.map((c) => c.content_id)}::text[], ${titles.map((c) => c.platform)}::text[],
          ${titles.map((c) => c.subscription_plan)}::text[],
          ${titles.map((c) => c.events)}::bigint[], ${titles.map((c) => c.errors)}::bigint[],
          ${titles.map((c) => c.viewers)}::bigint[])`.execute(db);
    }
    cube = [];
    titles = [];
  };
  for (const hour of baselineHours(o)) {
    cube.push(...hour.cube);
    titles.push(...hour.titles);
    if (cube.length >= 5_000) await write();
  }
  await write();
}

/** Writes one watched window through the flush, as the workers' batches would. */
async function flushWindow(db: Kysely<Database>, t: number, o: ScenarioOptions): Promise<void> {
  const rows = windowRows(t, o);
  const batch = emptyBatch();
  for (const c of rows.cube) {
    batch.anomalyCube.set(
      [t, c.platform, c.region, c.app_version, c.subscription_plan].join(KEY_SEP),
      [c.events, c.errors, c.eu_events, c.eu_consented, c.viewers],
    );
  }
  for (const c of rows.titles) {
    batch.anomalyTitles.set(
      [t, c.content_id, c.platform, c.subscription_plan].join(KEY_SEP),
      [c.events, c.errors, c.viewers],
    );
  }
  await writeFlush(db, batch);
}

function detectorFor(db: Kysely<Database>, o: ScenarioOptions): AnomalyDetector {
  return new AnomalyDetector({
    db,
    windowMs: o.windowMs,
    minEvents: 25,
    maxSeries: 10_000,
    baselineWeeks: o.baselineWeeks,
    graceMs: 0,
    planPrices: PRICES,
    currency: "EUR",
    watermarkMs: () => 0,
    owner: "test",
    logger: createLogger("error"),
  });
}

/** The incident a fault must open: same series and key, opened within 2 windows, recovered. */
export function matches(incident: Incident, fault: Fault, windowMs: number): boolean {
  const openedAt = Date.parse(incident.opened_at);
  return incident.series === fault.series && incident.key === fault.key &&
    openedAt >= fault.startMs && openedAt <= fault.startMs + 2 * windowMs;
}

/**
 * Steps the detector through the watched days by watermark, one window after its flush, and
 * compares the incidents with the injected faults.
 */
export async function runScenario(db: Kysely<Database>, o: ScenarioOptions) {
  await seedBaseline(db, o);
  const detector = detectorFor(db, o);
  /** Milliseconds the detector took per window. */
  const stepMs: number[] = [];
  for (const t of watchedWindows(o)) {
    await flushWindow(db, t, o);
    const started = performance.now();
    await detector.stepTo(t + o.windowMs);
    stepMs.push(performance.now() - started);
  }
  const incidents = await listIncidents(db, { limit: 500 });
  const faults = FAULTS.filter((f) => f.endMs <= WATCH_START_MS + o.days * 86_400_000);
  const matched = faults.map((f) => incidents.filter((i) => matches(i, f, o.windowMs)));
  return { incidents, faults, matched, stepMs };
}

/** Precision, recall and detection delay of a run. */
export function score(run: Awaited<ReturnType<typeof runScenario>>, windowMs: number) {
  const matchedIds = new Set(run.matched.flat().map((i) => i.id));
  const found = run.matched.filter((m) => m.length > 0).length;
  return {
    incidents: run.incidents.length,
    precision: run.incidents.length === 0 ? 1 : matchedIds.size / run.incidents.length,
    recall: run.faults.length === 0 ? 1 : found / run.faults.length,
    /** Per fault: end of the opening window minus the fault's start, in windows (null: missed). */
    delayWindows: run.faults.map((f, k) => {
      const first = run.matched[k][0];
      return first === undefined
        ? null
        : (Date.parse(first.opened_at) + windowMs - f.startMs) / windowMs;
    }),
    falseIncidents: run.incidents.filter((i) => !matchedIds.has(i.id)),
  };
}
