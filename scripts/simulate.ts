/**
 * `deno task simulate`: sends deterministic fake TV traffic to a running server and reports what was
 * accepted and which rule hits the server should now show in `GET /compliance/summary`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import { type Expectations, generateTraffic } from "./_sim_traffic.ts";

const USAGE = `Usage: deno task simulate [--events N] [--concurrency C] [--batch K] [--url U]
                          [--seed S] [--token T] [--dry-run] [--json]

  --events N       unique valid events to generate (default 20000)
  --concurrency C  requests in flight (default 20)
  --batch K        events per request: 1 uses POST /events, more POST /events/batch (default 100, max 500)
  --url U          server base URL (default $SIM_URL or http://127.0.0.1:8000)
  --seed S         seed of the generator; the same seed gives the same traffic (default 42)
  --token T        bearer token for ingest and privacy requests (default $SIM_TOKEN)
  --dry-run        generate and print the expectations without sending anything
  --json           print the final report as JSON`;

const ARGS = z.object({
  events: z.coerce.number().int().min(1).max(10_000_000).default(20_000),
  concurrency: z.coerce.number().int().min(1).max(1_000).default(20),
  batch: z.coerce.number().int().min(1).max(500).default(100),
  url: z.string().url().default(Deno.env.get("SIM_URL") ?? "http://127.0.0.1:8000"),
  seed: z.coerce.number().int().min(0).max(2 ** 31).default(42),
  token: z.string().min(1).optional(),
  "dry-run": z.boolean().default(false),
  json: z.boolean().default(false),
});

/** Counters of one run. */
export interface SendReport {
  sent_events: number;
  accepted: number;
  rejected: number;
  statuses: Record<string, number>;
  network_errors: number;
  retries_after_503: number;
  privacy_requests: number;
  elapsed_s: number;
  events_per_s: number;
}

/** Sends one phase's items as requests, `concurrency` at a time, in order. */
export async function sendItems(
  items: unknown[],
  options: { url: string; batch: number; concurrency: number; token?: string },
  report: SendReport,
  onProgress: (sentItems: number) => void,
): Promise<void> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  const chunks: unknown[][] = [];
  for (let i = 0; i < items.length; i += options.batch) {
    chunks.push(items.slice(i, i + options.batch));
  }
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < chunks.length) {
      const chunk = chunks[next++];
      const isSingle = options.batch === 1;
      const path = isSingle ? "/events" : "/events/batch";
      const body = JSON.stringify(isSingle ? chunk[0] : chunk);
      for (let attempt = 0; attempt < 20; attempt++) {
        let res: Response;
        try {
          res = await fetch(`${options.url}${path}`, { method: "POST", headers, body });
        } catch (error) {
          if (!(error instanceof TypeError)) throw error;
          report.network_errors++;
          await sleep(500);
          continue;
        }
        report.statuses[res.status] = (report.statuses[res.status] ?? 0) + 1;
        if (res.status === 503) {
          await res.body?.cancel();
          report.retries_after_503++;
          await sleep(1000 * Number(res.headers.get("retry-after") ?? "1"));
          continue;
        }
        const answer = await res.json().catch(() => ({}));
        if (res.status === 202) {
          report.accepted += answer.accepted ?? 0;
          report.rejected += answer.rejected?.length ?? 0;
        } else {
          report.rejected += chunk.length;
        }
        break;
      }
      report.sent_events += chunk.length;
      done += chunk.length;
      onProgress(done);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function progressBar(total: number): (done: number) => void {
  const isTty = Deno.stderr.isTerminal();
  const encoder = new TextEncoder();
  let lastDecile = -1;
  return (done) => {
    const ratio = total === 0 ? 1 : done / total;
    if (isTty) {
      const width = 30;
      const filled = Math.round(ratio * width);
      const bar = `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total}`;
      Deno.stderr.writeSync(encoder.encode(`\r${bar}${ratio >= 1 ? "\n" : ""}`));
    } else if (Math.floor(ratio * 10) > lastDecile) {
      lastDecile = Math.floor(ratio * 10);
      Deno.stderr.writeSync(encoder.encode(`sent ${done}/${total}\n`));
    }
  };
}

function printReport(report: SendReport | null, expected: Expectations): void {
  const rows: Array<[string, string | number]> = [];
  if (report !== null) {
    rows.push(
      ["events sent (incl. retries and malformed)", report.sent_events],
      ["accepted (202)", report.accepted],
      ["rejected items", report.rejected],
      ["HTTP statuses", JSON.stringify(report.statuses)],
      ["503 retries / network errors", `${report.retries_after_503} / ${report.network_errors}`],
      ["privacy requests filed", report.privacy_requests],
      ["elapsed", `${report.elapsed_s.toFixed(1)} s`],
      ["rate", `${Math.round(report.events_per_s)} events/s`],
    );
  }
  rows.push(
    ["unique valid events generated", expected.unique_events],
    ["duplicates sent on purpose", expected.duplicates_sent],
    ["malformed sent on purpose", expected.malformed_sent],
    ["expected privacy flagged events", expected.privacy_events],
    ["expected retention flagged events", expected.retention_events],
    ["expected account_sharing users (>= 1 flag each)", expected.account_sharing_users],
    ["expected content_quality entities (>= 1 flag each)", expected.content_quality_entities],
  );
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [key, value] of rows) console.log(`${key.padEnd(width)}  ${value}`);
  console.log("\nCompare with: GET /stats/summary and GET /compliance/summary");
}

async function main(): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args: Deno.args,
      options: {
        events: { type: "string" },
        concurrency: { type: "string" },
        batch: { type: "string" },
        url: { type: "string" },
        seed: { type: "string" },
        token: { type: "string" },
        "dry-run": { type: "boolean" },
        json: { type: "boolean" },
        help: { type: "boolean" },
      },
    }).values;
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const parsed = ARGS.safeParse({ ...values, token: values.token ?? Deno.env.get("SIM_TOKEN") });
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `--${i.path.join(".")}: ${i.message}`).join("\n");
    console.error(`Invalid arguments:\n${detail}\n\n${USAGE}`);
    return 2;
  }
  const args = parsed.data;
  const nowMs = Math.floor(Date.now() / 1000) * 1000;
  const traffic = generateTraffic(args.events, args.seed, nowMs);
  if (args["dry-run"]) {
    if (args.json) console.log(JSON.stringify({ expected: traffic.expectations }, null, 2));
    else printReport(null, traffic.expectations);
    return 0;
  }
  const report: SendReport = {
    sent_events: 0,
    accepted: 0,
    rejected: 0,
    statuses: {},
    network_errors: 0,
    retries_after_503: 0,
    privacy_requests: 0,
    elapsed_s: 0,
    events_per_s: 0,
  };
  const total = traffic.phase1.length + traffic.phase2.length;
  const progress = progressBar(total);
  const options = { ...args, url: args.url.replace(/\/$/, "") };
  const started = performance.now();
  await sendItems(traffic.phase1, options, report, progress);
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (args.token !== undefined) headers.authorization = `Bearer ${args.token}`;
  for (const request of traffic.requests) {
    try {
      const res = await fetch(`${options.url}/privacy/requests`, {
        method: "POST",
        headers,
        body: JSON.stringify(request),
      });
      await res.body?.cancel();
      if (res.status === 201 || res.status === 200) report.privacy_requests++;
      else console.error(`Privacy request for "${request.user_id}" answered ${res.status}`);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
      report.network_errors++;
    }
  }
  await sendItems(
    traffic.phase2,
    options,
    report,
    (done) => progress(traffic.phase1.length + done),
  );
  report.elapsed_s = (performance.now() - started) / 1000;
  report.events_per_s = report.sent_events / report.elapsed_s;
  if (args.json) console.log(JSON.stringify({ report, expected: traffic.expectations }, null, 2));
  else printReport(report, traffic.expectations);
  if (report.accepted === 0) {
    console.error(`No event was accepted: is the server running at ${options.url}?`);
    return 1;
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main());
