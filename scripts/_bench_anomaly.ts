/**
 * `deno task bench anomaly [--days 6.5] [--titles 12]`: the scripted week (`_scenario_week.ts`)
 * (with more than 12 titles, a flat audience of 40 events per title and window: the cap bench)
 * through the flush and the detector on a fresh database (PGlite in memory, or PostgreSQL when
 * TEST_DATABASE_URL is set), printing precision, recall, detection delay per fault and the
 * detector's time per window (p50, p95, max).
 *
 * @module
 */
import { withMigratedDatabase } from "../tests/_harness.ts";
import { READ_SLICE_ROWS, sliceTimes } from "../db/anomaly_series.ts";
import { WEEK } from "./_scenario_week.ts";
import { runScenario, score } from "./_scenario_week_db.ts";

/** Runs the bench; resolves to true when every fault was found with at most one false incident. */
export async function anomalyMain(args: string[]): Promise<boolean> {
  const option = (name: string, fallback: number) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args[i + 1]) : fallback;
  };
  const titleCount = option("titles", 12);
  const o = {
    ...WEEK,
    days: option("days", WEEK.days),
    titleCount,
    // Many titles: every one alike and big enough to be watched (the cap bench).
    titleAudience: titleCount > 12 ? "flat" as const : "zipf" as const,
    eventsPerWindow: Math.max(WEEK.eventsPerWindow, titleCount * 40),
  };
  const url = Deno.env.get("TEST_DATABASE_URL");
  let ok = false;
  await withMigratedDatabase(url, async (db) => {
    const started = performance.now();
    const run = await runScenario(db, o);
    const s = score(run, o.windowMs);
    const sorted = [...run.stepMs].sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    console.log(`database: ${url === undefined ? "pglite (memory)" : "postgres"}`);
    console.log(
      `watched days: ${o.days}, windows: ${run.stepMs.length}, titles: ${o.titleCount}, ` +
        `tracked keys: ${run.trackedKeys}`,
    );
    console.log(
      `incidents: ${s.incidents}, precision: ${s.precision.toFixed(3)}, ` +
        `recall: ${s.recall.toFixed(3)}`,
    );
    for (const [k, f] of run.faults.entries()) {
      console.log(`  ${f.name}: delay ${s.delayWindows[k]} windows`);
    }
    for (const i of s.falseIncidents) {
      console.log(
        `  false: ${i.series}=${i.key} at ${i.opened_at} (${i.drill_down[0]?.text ?? ""})`,
      );
    }
    console.log(
      `detector per window: p50 ${at(0.5).toFixed(1)} ms, p95 ${at(0.95).toFixed(1)} ms, ` +
        `max ${sorted[sorted.length - 1].toFixed(1)} ms`,
    );
    const slices = [...sliceTimes].sort((a, b) => a - b);
    const slice = (q: number) => slices[Math.min(slices.length - 1, Math.floor(q * slices.length))];
    console.log(
      `detector reads: ${slices.length} slices of at most ${READ_SLICE_ROWS} rows, ` +
        `p50 ${slice(0.5).toFixed(1)} ms, p95 ${slice(0.95).toFixed(1)} ms, ` +
        `max ${slices[slices.length - 1].toFixed(1)} ms`,
    );
    console.log(`total: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    ok = s.recall === 1 && s.falseIncidents.length <= 1;
  });
  return ok;
}
