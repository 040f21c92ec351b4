/**
 * The terminal side of `deno task simulate`: usage text, argument validation with zod, the progress
 * bar, and the final report as a table for people.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import type { Fault } from "./_scenario_week.ts";
import type { Expectations } from "./_sim_traffic.ts";
import type { QoeExpectations } from "./_sim_views.ts";

/** Printed by `--help` and after a usage error. */
export const USAGE = `Usage: deno task simulate [options]

Sends deterministic fake Smart TV traffic to the server and prints what it sent, what the server
answered, the rule hits GET /compliance/summary should now show, and the quality of experience
GET /stats/qoe?cdn=sim-cdn-a (and sim-cdn-b) should show for the QoE views, about 10% of the events.

With --scenario week it sends the anomaly detector's scripted week instead (docs/anomalies.md):
the baseline weeks seeded into the server's PostgreSQL, then the watched days as events ending now,
and prints the incidents GET /compliance/incidents should show.

Options:
  --scenario S      traffic (the default) or week
  --days D          with --scenario week: watched days ending at the start of the current 5-minute
                    window, 0.1..6.5 (default 6.5)
  --database-url U  with --scenario week: the PostgreSQL URL the server uses, to seed the baseline
                    weeks into (default $DATABASE_URL); a server on embedded PGlite cannot be seeded
  --events N        unique valid events to generate, 1..2000000 (default 20000)
  --concurrency C   requests in flight, 1..1000 (default 20)
  --batch K         events per request, 1..500: 1 uses POST /events, more POST /events/batch
                    (default 100)
  --url U           server base URL (default $SIM_URL, else http://127.0.0.1:$PORT, else
                    http://127.0.0.1:8000)
  --seed S          generator seed, 0..4294967295 (default 42, 21 with --scenario week); the same
                    seed and N give the same events and event ids, so send a second run with another
                    seed
  --token T         bearer token with the ingest role (or admin), for events (default $SIM_TOKEN,
                    else none, which only works while the server's auth is off)
  --privacy-token P bearer token with the privacy role (or admin), for POST /privacy/requests;
                    analyst and ingest tokens get 403 (default: --token)
  --dry-run         generate and print the expected rule hits without sending anything (default off)
  --json            print the final report as JSON (default off)
  -h, --help        print this help

Environment:
  SIM_URL           server base URL when --url is not given (default http://127.0.0.1:$PORT)
  SIM_TOKEN         bearer token for events when --token is not given (default none)
  PORT              port of the default URL when neither --url nor SIM_URL is given, read as the
                    server reads it (default 8000)
  DATABASE_URL      the server's PostgreSQL for --scenario week when --database-url is not given
                    (default none; read only when the run may read it)

Before sending any event, the simulator asks GET /privacy/requests with the privacy token and stops
if the server answers 401 or 403, so a wrong token fails at once rather than halfway.

Exit codes: 0 all traffic delivered, 1 something was not delivered or a token was refused,
2 bad arguments (or --scenario week without a PostgreSQL to seed).`;

/** The command-line flags, as `parseArgs` reads them. */
export const FLAGS = {
  scenario: { type: "string" },
  days: { type: "string" },
  "database-url": { type: "string" },
  events: { type: "string" },
  concurrency: { type: "string" },
  batch: { type: "string" },
  url: { type: "string" },
  seed: { type: "string" },
  token: { type: "string" },
  "privacy-token": { type: "string" },
  "dry-run": { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** The environment variables the simulator reads (and `deno task simulate` may read). */
export const ENV_VARS = ["SIM_URL", "SIM_TOKEN", "PORT"] as const;

/** Values of {@link ENV_VARS} (and `DATABASE_URL` when readable), unset ones undefined. */
export type SimEnv = Partial<Record<(typeof ENV_VARS)[number] | "DATABASE_URL", string>>;

/** The scripted week's own seed (`WEEK.seed`), the one the detector's test and bench use. */
const WEEK_SEED = 21;

const count = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

const ARGS = z.strictObject({
  scenario: z.enum(["traffic", "week"]).default("traffic"),
  days: z.coerce.number().min(0.1).max(6.5).default(6.5),
  "database-url": z.url({
    protocol: /^postgres(ql)?$/,
    message: "must be a postgres:// or postgresql:// URL",
  }).optional(),
  events: count(1, 2_000_000, 20_000),
  concurrency: count(1, 1_000, 20),
  batch: count(1, 500, 100),
  url: z.url({ protocol: /^https?$/, message: "must be an http:// or https:// URL" }),
  seed: count(0, 2 ** 32 - 1, 42),
  token: z.string().min(1, "must not be empty").optional(),
  "privacy-token": z.string().min(1, "must not be empty").optional(),
  "dry-run": z.boolean().default(false),
  json: z.boolean().default(false),
});

/** Resolved options of one run, with every default applied. */
export interface SimOptions {
  events: number;
  concurrency: number;
  batch: number;
  /** Base URL without a trailing slash. */
  url: string;
  seed: number;
  token?: string;
  /** Token for privacy requests, which need the privacy (or admin) role when auth is on. */
  privacyToken?: string;
  isDryRun: boolean;
  isJson: boolean;
}

/** Resolved options of a `--scenario week` run, with every default applied. */
export interface WeekOptions {
  /** Watched days, ending at the start of the current window. */
  days: number;
  concurrency: number;
  batch: number;
  /** Base URL without a trailing slash. */
  url: string;
  seed: number;
  token?: string;
  /** The server's PostgreSQL, where the baseline weeks are seeded; required unless a dry run. */
  databaseUrl?: string;
  isDryRun: boolean;
  isJson: boolean;
}

/** Flags that only one scenario reads. */
const WEEK_ONLY = ["days", "database-url"];
const TRAFFIC_ONLY = ["events", "privacy-token"];

/** What the command line asks for: a run, the help text, or a usage error (exit code 2). */
export type CliRequest =
  | { kind: "run"; options: SimOptions }
  | { kind: "week"; options: WeekOptions }
  | { kind: "help" }
  | { kind: "error"; message: string };

/** Parses and validates the arguments; `env` supplies the SIM_URL, SIM_TOKEN and PORT defaults. */
export function parseCli(args: string[], env: SimEnv): CliRequest {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args, strict: true, options: FLAGS }).values;
  } catch (error) {
    return { kind: "error", message: `Cannot parse arguments: ${(error as Error).message}` };
  }
  if (values.help === true) return { kind: "help" };
  const { help: _, ...rest } = values;
  const port = env.PORT || "8000";
  const isPortUsed = values.url === undefined && !env.SIM_URL;
  if (isPortUsed && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65_535)) {
    return {
      kind: "error",
      message: "Cannot run with these arguments:\n" +
        "  PORT: must be a port number, 1..65535 (or set SIM_URL or pass --url)",
    };
  }
  const parsed = ARGS.safeParse({
    ...rest,
    url: values.url ?? (env.SIM_URL || `http://127.0.0.1:${port}`),
    token: values.token ?? (env.SIM_TOKEN || undefined),
  });
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `  --${i.path.join(".")}: ${i.message}`);
    return { kind: "error", message: `Cannot run with these arguments:\n${issues.join("\n")}` };
  }
  const a = parsed.data;
  const isWeek = a.scenario === "week";
  const misplaced = (isWeek ? TRAFFIC_ONLY : WEEK_ONLY).filter((f) => values[f] !== undefined);
  if (misplaced.length > 0) {
    const issues = misplaced.map((f) =>
      `  --${f}: only with --scenario ${isWeek ? "traffic" : "week"}`
    );
    return { kind: "error", message: `Cannot run with these arguments:\n${issues.join("\n")}` };
  }
  if (isWeek) {
    return {
      kind: "week",
      options: {
        days: a.days,
        concurrency: a.concurrency,
        batch: a.batch,
        url: a.url.replace(/\/+$/, ""),
        seed: values.seed === undefined ? WEEK_SEED : a.seed,
        token: a.token,
        databaseUrl: a["database-url"] ?? (env.DATABASE_URL || undefined),
        isDryRun: a["dry-run"],
        isJson: a.json,
      },
    };
  }
  return {
    kind: "run",
    options: {
      events: a.events,
      concurrency: a.concurrency,
      batch: a.batch,
      url: a.url.replace(/\/+$/, ""),
      seed: a.seed,
      token: a.token,
      privacyToken: a["privacy-token"] ?? a.token,
      isDryRun: a["dry-run"],
      isJson: a.json,
    },
  };
}

/** Counters of one run: what was sent and how the server answered. */
export interface SendReport {
  /** Items posted once each (valid, duplicates and malformed), whatever the retries. */
  events_sent: number;
  accepted: number;
  /** Items the server refused: `rejected_in_batches` plus those in `rejected_by_status`. */
  rejected: number;
  /** Items listed as rejected in a 202 batch answer, which accepted the rest of the batch. */
  rejected_in_batches: number;
  /** Items of requests refused whole (a 422 batch with no valid event, a 401), by answer status. */
  rejected_by_status: Record<string, number>;
  /** Rejected items by the field their issues name (an item naming two fields counts twice). */
  rejected_by_field: Record<string, number>;
  /** Items given up after the retries (503 or network errors): the expectations then do not hold. */
  undelivered: number;
  http_requests: number;
  responses_by_status: Record<string, number>;
  retries: number;
  /** Lowest in-flight limit the sender fell back to after 503 answers (null before sending). */
  lowest_concurrency: number | null;
  network_errors: number;
  last_network_error: string | null;
  privacy_requests_sent: number;
  privacy_requests_recorded: number;
  /** Why the run stopped early (for example the token was refused), or null. */
  aborted: string | null;
  elapsed_s: number;
  events_per_s: number;
}

/** A report with every counter at zero. */
export function emptyReport(): SendReport {
  return {
    events_sent: 0,
    accepted: 0,
    rejected: 0,
    rejected_in_batches: 0,
    rejected_by_status: {},
    rejected_by_field: {},
    undelivered: 0,
    http_requests: 0,
    responses_by_status: {},
    retries: 0,
    lowest_concurrency: null,
    network_errors: 0,
    last_network_error: null,
    privacy_requests_sent: 0,
    privacy_requests_recorded: 0,
    aborted: null,
    elapsed_s: 0,
    events_per_s: 0,
  };
}

/** Formats the run (null for a dry run) and the expected rule hits as an aligned table. */
export function formatReport(
  options: SimOptions,
  report: SendReport | null,
  x: Expectations,
): string {
  const n = (value: number) => value.toLocaleString("en-US");
  const byStatus = (counts: Record<string, number>) =>
    Object.entries(counts).map(([status, c]) => `${status}: ${n(c)}`).join(", ") || "-";
  const byCount = (counts: Record<string, number>) =>
    Object.entries(counts).sort(([a, x], [b, y]) => y - x || a.localeCompare(b))
      .map(([key, c]) => `${key} ${n(c)}`).join(", ") || "-";
  const rows: Array<[string, string, string] | string> = [
    `Traffic: seed ${options.seed}, ${n(options.events)} events` +
    (report === null ? " (dry run: nothing sent)" : ""),
    ["unique valid events", n(x.unique_events), ""],
    ["duplicates sent on purpose", n(x.duplicates_sent), "same event_id and body, soon after"],
    ["malformed sent on purpose", n(x.malformed_sent), "should all be rejected"],
    ["privacy requests", n(x.privacy_requests), "POST /privacy/requests between the phases"],
    ["do_not_track events", n(x.do_not_track_events), "opt-outs carried by an event"],
  ];
  if (report !== null) {
    rows.push(
      "",
      `Run: ${options.url}, batch ${options.batch}, concurrency ${options.concurrency}`,
      ["events sent", n(report.events_sent), "unique + duplicates + malformed"],
      ["accepted", n(report.accepted), "duplicates are accepted, then counted"],
      ["rejected", n(report.rejected), `expected ${n(x.malformed_sent)}: the malformed ones`],
      [
        "  inside accepted batches",
        n(report.rejected_in_batches),
        "listed as rejected in 202 batch answers",
      ],
      [
        "  in refused requests",
        n(report.rejected - report.rejected_in_batches),
        `whole request refused, by status: ${byStatus(report.rejected_by_status)}`,
      ],
      ["  by field", "", byCount(report.rejected_by_field)],
      ["undelivered", n(report.undelivered), "given up after retries"],
      [
        "privacy requests recorded",
        n(report.privacy_requests_recorded),
        "202 (200/201 from older servers)",
      ],
      ["HTTP requests", n(report.http_requests), byStatus(report.responses_by_status)],
      [
        "retries",
        n(report.retries),
        `network errors: ${n(report.network_errors)}, ` +
        `lowest concurrency after 503: ${report.lowest_concurrency ?? "-"}`,
      ],
      ["elapsed", `${report.elapsed_s.toFixed(1)} s`, ""],
      ["throughput", `${n(Math.round(report.events_per_s))} events/s`, ""],
    );
    if (report.aborted !== null) rows.push(`Stopped early: ${report.aborted}`);
    if (report.last_network_error !== null) {
      rows.push(`Last network error: ${report.last_network_error}`);
    }
  }
  const sharers = `${n(x.account_sharing_high_users)} of them HIGH, each flagged at least once`;
  const shown = x.quality_entities.slice(0, 6).join(", ") || "none";
  const more = x.quality_entities.length - 6;
  const entities = more > 0 ? `${shown} and ${more} more (see --json)` : shown;
  rows.push(
    "",
    `Expected (compare with GET /stats/summary and GET /compliance/summary):`,
    ["total_events", n(x.unique_events), "stats"],
    ["duplicate_events", n(x.duplicates_sent), "stats"],
    ["privacy", n(x.privacy_events), "flagged events: EU, no consent"],
    ["retention", n(x.retention_events), "flagged events: after the user's opt-out"],
    ["account_sharing users", n(x.account_sharing_users), sharers],
    ["content_quality entities", n(x.content_quality_entities), entities],
    ["content_quality windows", n(x.content_quality_windows), "flags, at least"],
  );
  for (const [cdn, q] of Object.entries(x.qoe)) rows.push("", ...qoeRows(cdn, q));
  const width = Math.max(...rows.map((r) => typeof r === "string" ? 0 : r[0].length));
  const valueWidth = Math.max(...rows.map((r) => typeof r === "string" ? 0 : r[1].length));
  return rows.map((r) =>
    typeof r === "string"
      ? r
      : `  ${r[0].padEnd(width)}  ${r[1].padStart(valueWidth)}  ${r[2]}`.trimEnd()
  ).join("\n");
}

/** The expected `GET /stats/qoe?cdn=<cdn>` answer as report rows. */
function qoeRows(cdn: string, q: QoeExpectations): Array<[string, string, string] | string> {
  const n = (value: number | null) => value === null ? "-" : value.toLocaleString("en-US");
  return [
    `Expected QoE (compare with GET /stats/qoe?cdn=${cdn}):`,
    ["views", n(q.views), `started ${n(q.started_views)}`],
    [
      "video_startup_time_ms",
      n(q.startup_mean_ms),
      `mean of ${n(q.views_measured)} measured (${n(q.views_not_measured)} not); ` +
      `p50 ${n(q.startup_p50_ms)}, p95 ${n(q.startup_p95_ms)}, within 4.9%`,
    ],
    [
      "exits_before_video_start",
      n(q.exits_before_video_start),
      `plus ${n(q.exits_under_1s_not_counted)} under 1 s, not counted`,
    ],
    [
      "video_start_failures",
      n(q.vsf_business + q.vsf_technical),
      `business ${n(q.vsf_business)}, technical ${n(q.vsf_technical)}`,
    ],
    ["playback_failures", n(q.playback_failures), ""],
    [
      "rebuffers",
      n(q.rebuffers),
      `${n(q.rebuffer_ms)} ms (ratio ${n(q.rebuffer_ratio)}); ` +
      `seek stalls ${n(q.seek_stall_ms)} ms, not rebuffering`,
    ],
    [
      "playing_ms",
      n(q.playing_ms),
      `average bitrate ${n(q.average_bitrate_kbps)} kbps, upscale share ${n(q.upscale_share)}`,
    ],
    ["warnings", n(q.warnings), "ERROR events with fatal: false"],
  ];
}

/** Progress on stderr: a redrawn bar on a terminal, otherwise one line every 10%. */
export function progressBar(total: number): { update(done: number): void; end(): void } {
  const isTerminal = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  const write = (text: string) => Deno.stderr.writeSync(encoder.encode(text));
  const startedMs = performance.now();
  let lastDrawMs = -Infinity;
  let lastTenth = 0;
  let current = 0;
  const draw = () => {
    const ratio = total === 0 ? 1 : current / total;
    const filled = Math.round(ratio * 30);
    const rate = Math.round(current / Math.max(0.001, (performance.now() - startedMs) / 1000));
    write(
      `\r[${"#".repeat(filled)}${".".repeat(30 - filled)}] ${(ratio * 100).toFixed(0)}% ` +
        `${current}/${total} events, ${rate} events/s `,
    );
  };
  return {
    update(done) {
      current = done;
      if (isTerminal) {
        if (performance.now() - lastDrawMs < 100) return;
        lastDrawMs = performance.now();
        draw();
      } else if (total > 0 && Math.floor((done / total) * 10) > lastTenth) {
        lastTenth = Math.floor((done / total) * 10);
        write(`sent ${done}/${total} events (${lastTenth * 10}%)\n`);
      }
    },
    end() {
      if (isTerminal) {
        draw();
        write("\n");
      }
    },
  };
}

/** What a `--scenario week` run sent or would send, and the faults it injected. */
export interface WeekSummary {
  watchStartMs: number;
  watchEndMs: number;
  windows: number;
  events: number;
  views: number;
  /** The faults injected in the watched days: the incidents to expect. */
  faults: Fault[];
}

/** Formats a week run (null report for a dry run) and the incidents to expect, for people. */
export function formatWeekReport(
  options: WeekOptions,
  report: SendReport | null,
  w: WeekSummary,
): string {
  const n = (value: number) => value.toLocaleString("en-US");
  const at = (ms: number) => new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  const lines = [
    `Scenario week: seed ${options.seed}, ${options.days} days watched, ${at(w.watchStartMs)} to ` +
    `${at(w.watchEndMs)} UTC` + (report === null ? " (dry run: nothing seeded or sent)" : ""),
    `  ${n(w.windows)} windows, ${n(w.events)} events, ${n(w.views)} QoE views`,
  ];
  if (report !== null) {
    const statuses = Object.entries(report.responses_by_status).map(([s, c]) => `${s}: ${n(c)}`);
    lines.push(
      "",
      `Run: ${options.url}, batch ${options.batch}, concurrency ${options.concurrency}`,
      `  events sent   ${n(report.events_sent)}`,
      `  accepted      ${n(report.accepted)}`,
      `  rejected      ${n(report.rejected)} (expected 0)`,
      `  undelivered   ${n(report.undelivered)}`,
      `  HTTP requests ${n(report.http_requests)} (${statuses.join(", ") || "-"}), ` +
        `retries ${n(report.retries)}, network errors ${n(report.network_errors)}`,
      `  elapsed       ${report.elapsed_s.toFixed(1)} s, ` +
        `${n(Math.round(report.events_per_s))} events/s`,
    );
    if (report.aborted !== null) lines.push(`Stopped early: ${report.aborted}`);
    if (report.last_network_error !== null) {
      lines.push(`Last network error: ${report.last_network_error}`);
    }
  }
  lines.push(
    "",
    `Expected incidents (GET /compliance/incidents), one per fault, opened within 2 windows of` +
      ` its start:`,
  );
  if (w.faults.length === 0) {
    lines.push(
      "  none: the first fault starts 1 day 20 hours into the week (watch 2 days or more)",
    );
  }
  for (const f of w.faults) {
    lines.push(
      `  ${f.series} ${f.key}: ${at(f.startMs)} to ${at(f.endMs)} UTC` +
        (f.drillDown === undefined ? "" : `, drill-down ${f.drillDown}`),
      `    ${f.name}`,
    );
  }
  lines.push(
    "",
    "The detector judges a window once the watermark has passed its end by ANOMALY_GRACE_MS",
    "(2 minutes): every fault's windows were judged while later events arrived. The last window",
    "waits for newer events, or for the wall clock, which steps the watermark after two windows",
    "(about 10 minutes) without events and then also judges the silence since the week ended as",
    "a drop of every volume series: read the incidents before that, or keep traffic flowing.",
  );
  return lines.join("\n");
}
