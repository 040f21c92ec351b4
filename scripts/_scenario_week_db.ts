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
import { ALERT_ALL, type Incident, listIncidents } from "../db/incidents.ts";
import type { Database } from "../db/schema.ts";
import { createLogger } from "../logger.ts";
import { CUBE_MEASURES, QOE_SERIES_MEASURES, TITLE_MEASURES } from "../rules/anomaly_series.ts";
import {
  baselineHours,
  type CubeCell,
  type Fault,
  FAULTS,
  type QoeCell,
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
  let pending: { cube: CubeCell[]; titles: TitleCell[]; qoe: QoeCell[] } = {
    cube: [],
    titles: [],
    qoe: [],
  };
  const write = async () => {
    await insertHourly(db, "anomaly_cube_hourly", CUBE_DIMS, CUBE_MEASURES, pending.cube);
    await insertHourly(db, "anomaly_titles_hourly", TITLE_DIMS, TITLE_MEASURES, pending.titles);
    await insertHourly(db, "anomaly_qoe_hourly", QOE_DIMS, QOE_SERIES_MEASURES, pending.qoe);
    pending = { cube: [], titles: [], qoe: [] };
  };
  for (const hour of baselineHours(o)) {
    pending.cube.push(...hour.cube);
    pending.titles.push(...hour.titles);
    pending.qoe.push(...hour.qoe);
    if (pending.cube.length >= 5_000) await write();
  }
  await write();
}

const CUBE_DIMS = ["platform", "region", "app_version", "subscription_plan"];
const TITLE_DIMS = ["content_id", "platform", "subscription_plan"];
const QOE_DIMS = ["content_id", "cdn", "subscription_plan"];

async function insertHourly(
  db: Kysely<Database>,
  table: string,
  dims: readonly string[],
  measures: readonly string[],
  cells: ReadonlyArray<{ startMs: number }>,
): Promise<void> {
  if (cells.length === 0) return;
  const rows = cells as ReadonlyArray<Record<string, unknown>>;
  const arrays = [
    sql`${cells.map((c) => new Date(c.startMs).toISOString())}::timestamptz[]`,
    ...dims.map((d) => sql`${rows.map((r) => r[d])}::text[]`),
    // A measure the scenario does not model (sharing flags) is 0.
    ...measures.map((m) => sql`${rows.map((r) => r[m] ?? 0)}::bigint[]`),
  ];
  await sql`insert into ${sql.table(table)}
      (${sql.join(["hour", ...dims, ...measures].map((c) => sql.ref(c)))})
    select * from unnest(${sql.join(arrays)})`.execute(db);
}

/** Writes one watched window through the flush, as the workers' batches would. */
async function flushWindow(db: Kysely<Database>, t: number, o: ScenarioOptions): Promise<void> {
  const rows = windowRows(t, o);
  const batch = emptyBatch();
  const put = (
    into: Map<string, number[]>,
    cells: ReadonlyArray<Record<string, unknown>>,
    dims: readonly string[],
    measures: readonly string[],
  ) => {
    for (const c of cells) {
      into.set(
        [t, ...dims.map((d) => c[d])].join(KEY_SEP),
        measures.map((m) => (c[m] as number | undefined) ?? 0),
      );
    }
  };
  const cells = (list: readonly object[]) => list as ReadonlyArray<Record<string, unknown>>;
  put(batch.anomalyCube, cells(rows.cube), CUBE_DIMS, CUBE_MEASURES);
  put(batch.anomalyTitles, cells(rows.titles), TITLE_DIMS, TITLE_MEASURES);
  put(batch.anomalyQoe, cells(rows.qoe), QOE_DIMS, QOE_SERIES_MEASURES);
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
    alerts: ALERT_ALL,
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
  return { incidents, faults, matched, stepMs, trackedKeys: detector.trackedKeys };
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
