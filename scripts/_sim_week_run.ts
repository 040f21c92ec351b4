/**
 * `deno task simulate --scenario week`: seeds the baseline weeks into the server's PostgreSQL, sends
 * the watched days in event-time order, waiting for each window's flush before the detector may
 * judge it, and prints the faults the incidents should match (see docs/simulator.md).
 *
 * @module
 */
import { sql } from "kysely";
import { openDatabase } from "../db/client.ts";
import { DAY_MS, WEEK } from "./_scenario_week.ts";
import { seedBaseline } from "./_scenario_week_db.ts";
import { faultsWatched, weekTotals, type WeekWindow, weekWindows } from "./_sim_week.ts";
import {
  emptyReport,
  formatWeekReport,
  progressBar,
  type SendReport,
  type WeekOptions,
  type WeekSummary,
} from "./_sim_cli.ts";
import { DEFAULT_RETRY, probe, type SenderOptions, sendItems } from "./simulate.ts";

/**
 * `--scenario week`: seeds the baseline weeks into the server's PostgreSQL, sends the watched days
 * (ending at the start of the current window) in event-time order, and prints the faults.
 */
export async function runWeek(options: WeekOptions): Promise<number> {
  const windowMs = WEEK.windowMs;
  const endMs = Math.floor(Date.now() / windowMs) * windowMs;
  const watchStartMs = Math.floor((endMs - options.days * DAY_MS) / windowMs) * windowMs;
  const o = { ...WEEK, days: options.days, watchStartMs, seed: options.seed };
  const totals = weekTotals(o);
  const summary: WeekSummary = {
    watchStartMs,
    watchEndMs: watchStartMs + Math.ceil(options.days * DAY_MS / windowMs) * windowMs,
    ...totals,
    faults: faultsWatched(o),
  };
  const { token: _, databaseUrl: __, ...shown } = options;
  const print = (report: SendReport | null) =>
    console.log(
      options.isJson
        ? JSON.stringify({ options: shown, report, scenario: summary }, null, 2)
        : formatWeekReport(options, report, summary),
    );
  if (options.isDryRun) {
    print(null);
    return 0;
  }
  if (options.databaseUrl === undefined) {
    console.error(
      "Cannot run --scenario week without the server's PostgreSQL: pass --database-url (or set " +
        "DATABASE_URL) with the URL the server was started with. A server on embedded PGlite owns " +
        "its data directory and cannot be seeded from here: start it with DATABASE_URL",
    );
    return 2;
  }
  if (Deno.permissions.querySync({ name: "env" }).state !== "granted") {
    console.error(
      "Cannot seed the baseline weeks: the PostgreSQL client reads the PG* environment " +
        "variables, which this run may not read: run deno run --allow-net --allow-env " +
        "scripts/simulate.ts --scenario week ...",
    );
    return 2;
  }
  const unreachable = await probe(options.url);
  if (unreachable !== null) {
    console.error(`Cannot reach ${options.url}: is the server running? (${unreachable})`);
    return 1;
  }
  const { db } = await openDatabase({ databaseUrl: options.databaseUrl, dataDir: "" });
  try {
    const held = await sql<{ hours: boolean; windows: boolean }>`select
        exists(select 1 from anomaly_cube_hourly) as hours,
        exists(select 1 from anomaly_cube) as windows`.execute(db);
    if (held.rows[0].hours || held.rows[0].windows) {
      console.error(
        "Cannot seed the baseline weeks: the database already holds anomaly series; run the " +
          "week against a server on a fresh database",
      );
      return 1;
    }
    const seededAt = performance.now();
    await seedBaseline(db, o);
    console.error(
      `Seeded ${o.baselineWeeks} baseline weeks in ` +
        `${((performance.now() - seededAt) / 1000).toFixed(1)} s`,
    );
    const sender: SenderOptions = { ...options, ...DEFAULT_RETRY };
    const report = emptyReport();
    const progress = progressBar(summary.events);
    const startedMs = performance.now();
    let sent = 0;
    const send = async (events: readonly unknown[]) => {
      await sendItems(events, sender, report, (done) => progress.update(sent + done));
      sent += events.length;
    };
    let previous: WeekWindow | null = null;
    for (const window of weekWindows(o)) {
      if (report.aborted !== null) break;
      // The detector judges the previous window once the watermark is ANOMALY_GRACE_MS past its
      // end: its rows must all be flushed by then, however fast the week is replayed.
      const cutMs = window.startMs + GRACE_MS;
      const split = window.events.findIndex((e) => Date.parse(e.timestamp) >= cutMs);
      const at = split === -1 ? window.events.length : split;
      await send(window.events.slice(0, at));
      if (previous !== null) await untilFlushed(db, previous, report);
      await send(window.events.slice(at));
      // Once the watermark is in the week, the detector is rewound to it.
      if (previous === null) await rewindDetector(db);
      previous = window;
    }
    progress.end();
    report.elapsed_s = (performance.now() - startedMs) / 1000;
    report.events_per_s = report.events_sent / Math.max(0.001, report.elapsed_s);
    print(report);
    const problem = report.aborted !== null
      ? `stopped early: ${report.aborted}`
      : report.undelivered > 0
      ? `${report.undelivered} events were not delivered`
      : report.rejected > 0
      ? `${report.rejected} events were rejected`
      : null;
    if (problem === null) return 0;
    console.error(`Expectations do not hold: ${problem}`);
    return 1;
  } finally {
    await db.destroy();
  }
}

/** `ANOMALY_GRACE_MS` by default: how far past a window's end the watermark goes before judging. */
const GRACE_MS = 120_000;
/** Longest wait for a window's rows to be flushed before the run goes on (and says so). */
const FLUSH_WAIT_MS = 60_000;

/** Waits until the server's flushes wrote all of a window's events into `anomaly_cube`. */
async function untilFlushed(
  db: Awaited<ReturnType<typeof openDatabase>>["db"],
  window: WeekWindow,
  report: SendReport,
): Promise<void> {
  const deadline = performance.now() + FLUSH_WAIT_MS;
  const at = new Date(window.startMs).toISOString();
  while (report.aborted === null) {
    const result = await sql<{ events: string | number }>`select coalesce(sum(events), 0) as events
      from anomaly_cube where window_start = ${at}::timestamptz`.execute(db);
    if (Number(result.rows[0].events) >= window.events.length) return;
    if (performance.now() > deadline) {
      console.error(`\nWindow ${at} is not flushed after ${FLUSH_WAIT_MS / 1000} s: going on`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Makes the detector start over at the watermark: a server that ran idle has judged up to the wall
 * clock already (with no events the clock steps it), so the backdated windows would never be judged.
 * Clearing its progress and releasing its lease makes its next pass start cold at the window the
 * watermark reached, as a detector on a new server sees its first events.
 */
async function rewindDetector(db: Awaited<ReturnType<typeof openDatabase>>["db"]): Promise<void> {
  await sql`update anomaly_detector set judged_until = null, owner = 'simulate',
    lease_until = now() - interval '1 second' where id = 1`.execute(db);
}
