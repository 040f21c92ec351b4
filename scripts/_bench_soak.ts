/**
 * Soak: a steady, paced load for a long time against one server on a fresh PostgreSQL database, to
 * see whether memory levels off. Batches of `--batch` events stamped "now" are posted at `--rate`
 * events/s (100 every 20 ms by default); every 20 events come from a new viewer on a new TV, so the
 * number of distinct viewers ever seen grows without bound while, with every window short (see
 * {@link SOAK_ENV}), the live set stays small and constant. Every `--sample-s` it prints the
 * server's RSS (`/proc`, every worker thread included), the main thread's V8 heap and external
 * memory (`/metrics`), the workers' entities and summed V8 heaps (`/readyz`), and the batches' p99
 * latency since the previous sample.
 *
 * At the end it compares RSS at the end with RSS at 10 minutes (or at half the run, when shorter
 * than 20 minutes): the goal is within 10%. It also checks that `/stats/summary` counts every
 * accepted event.
 *
 * Usage: deno task bench soak [--minutes 60] [--rate 5000] [--batch 100] [--events-per-user 20]
 *   [--sample-s 30] [--database-url URL] [--env KEY=VALUE ...] [--json]
 * or alone: deno run -A scripts/_bench_soak.ts [the same options]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { z } from "zod";
import {
  BASE_ENV,
  processMemory,
  type Server,
  serverArgs,
  sleep,
  startProcess,
  stop,
  withDatabase,
} from "./_bench_server.ts";

const CLI = z.object({
  minutes: z.coerce.number().min(0.5).max(24 * 60).default(60),
  rate: z.coerce.number().int().min(100).max(100_000).default(5_000),
  batch: z.coerce.number().int().min(1).max(500).default(100),
  "events-per-user": z.coerce.number().int().min(1).max(10_000).default(20),
  "sample-s": z.coerce.number().min(1).max(600).default(30),
  "database-url": z.string().url().default("postgres://postgres@127.0.0.1:5432/test"),
  env: z.array(z.string().regex(/^[A-Z_][A-Z0-9_]*=/, "must be KEY=VALUE")).default([]),
  json: z.boolean().default(false),
});

type Cli = z.infer<typeof CLI>;

/**
 * Every window that keeps an idle entity in memory, short, so the live set is small and constant
 * from a few minutes on. SHARING_WINDOW_MS and MAX_IDLE_MS alone do not do it: a user whose last
 * playback segment is still open stays for MAX_SEGMENT_MS (4 h by default), and a TV or title until
 * its quality window ends plus ALLOWED_LATENESS_MS (5 min + 2 h), so with the defaults memory grows
 * with every viewer of the last 4 hours (by design, see docs/architecture.md). To watch that, pass
 * `--env MAX_SEGMENT_MS=14400000 --env ALLOWED_LATENESS_MS=7200000 --env QUALITY_WINDOW_MS=300000`.
 */
const SOAK_ENV: Readonly<Record<string, string>> = {
  SHARING_WINDOW_MS: "60000",
  MAX_IDLE_MS: "60000",
  MAX_SEGMENT_MS: "60000",
  QUALITY_WINDOW_MS: "60000",
  ALLOWED_LATENESS_MS: "60000",
};
/** Most batches in flight at once; beyond that a due batch waits (and counts as late). */
const MAX_IN_FLIGHT = 64;
/** Reference point of the verdict, and the goal. */
const REFERENCE_MINUTES = 10;
const GOAL_RATIO = 1.1;

const REGIONS = [["DE", true], ["FR", true], ["US-CA", false], ["GB", false], [
  "JP",
  false,
]] as const;
const TYPES = ["PLAY", "PAUSE", "PLAY", "SEEK", "PLAY", "BUFFER_START", "BUFFER_END", "STOP"];

/** One row of the table. */
export interface SoakSample {
  minute: number;
  rssMb: number;
  /** Main thread's V8 heap in use and external (ArrayBuffers, ...) memory, from `/metrics`. */
  mainHeapMb: number | null;
  mainExternalMb: number | null;
  /** Sum over workers, from `/readyz`. */
  workerHeapMb: number;
  entities: number;
  /** Distinct viewers (and TVs) sent so far. */
  viewers: number;
  acceptedEvents: number;
  /** Batches posted since the previous sample, their p99 latency and how many were late. */
  batches: number;
  p99Ms: number;
  late: number;
  /** Answers other than 202 since the start, by status ("0": network error). */
  failures: Record<string, number>;
}

/** What {@link soak} measured. */
export interface SoakResult {
  settings: Record<string, string | number>;
  samples: SoakSample[];
  /** RSS at the reference sample (10 min, or half a shorter run) and at the end. */
  referenceMinute: number;
  referenceRssMb: number;
  endRssMb: number;
  ratio: number;
  met: boolean;
  /** Least-squares RSS slope after the reference, MB per minute. */
  slopeMbPerMin: number;
  acceptedEvents: number;
  countedEvents: number | null;
}

function event(run: string, n: number, perUser: number, timestamp: string): string {
  const user = Math.floor(n / perUser);
  const [region, isEu] = REGIONS[user % REGIONS.length];
  const step = n % perUser;
  const type = step === 0 ? "PLAY" : n % 97 === 0 ? "ERROR" : TYPES[step % TYPES.length];
  return JSON.stringify({
    event_id: `${run}-${n}`,
    user_id: `soak-${run}-user-${user}`,
    device_id: `soak-${run}-tv-${user}`,
    content_id: `soak-title-${user % 300}`,
    event_type: type,
    timestamp,
    region,
    is_eu: isEu,
    has_consent: user % 20 !== 0,
    ip_address: `10.${(user >> 16) & 255}.${(user >> 8) & 255}.${user & 255}`,
    error_code: type === "ERROR" ? "NETWORK_TIMEOUT" : null,
    extra_metadata: { platform: "tizen", app_version: "5.2.0" },
  });
}

async function metricsOf(
  url: string,
): Promise<{ heapMb: number | null; externalMb: number | null }> {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    const read = (name: string) => {
      const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
      return m === null ? null : Math.round(Number(m[1]) / 104_857.6) / 10;
    };
    return {
      heapMb: read("process_heap_used_bytes"),
      externalMb: read("process_external_memory_bytes"),
    };
  } catch {
    return { heapMb: null, externalMb: null };
  }
}

async function workersOf(url: string): Promise<{ entities: number; heapMb: number }> {
  try {
    const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(10_000) });
    const body = await res.json() as { workers?: { entities: number; heap_used_mb: number }[] };
    const workers = body.workers ?? [];
    return {
      entities: workers.reduce((s, w) => s + w.entities, 0),
      heapMb: Math.round(workers.reduce((s, w) => s + w.heap_used_mb, 0) * 10) / 10,
    };
  } catch {
    return { entities: -1, heapMb: -1 };
  }
}

async function totalEvents(url: string): Promise<number> {
  const res = await fetch(`${url}/stats/summary`);
  if (!res.ok) throw new Error(`GET /stats/summary answered ${res.status}: ${await res.text()}`);
  return (await res.json() as { total_events: number }).total_events;
}

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, p) => s + p[0], 0) / n;
  const my = points.reduce((s, p) => s + p[1], 0) / n;
  const sxy = points.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0);
  const sxx = points.reduce((s, p) => s + (p[0] - mx) ** 2, 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

const f1 = (n: number | null) => (n === null ? "-" : n.toFixed(1));

function header(): string {
  return "| min | RSS MB | main heap MB | main external MB | worker heaps MB | entities | " +
    "viewers | accepted | batches | p99 ms | late | failures |\n" +
    "|---|---|---|---|---|---|---|---|---|---|---|---|";
}

function line(s: SoakSample): string {
  const failures = Object.entries(s.failures).map(([k, v]) => `${k}:${v}`).join(" ");
  return `| ${s.minute.toFixed(1)} | ${f1(s.rssMb)} | ${f1(s.mainHeapMb)} | ${
    f1(s.mainExternalMb)
  } | ${f1(s.workerHeapMb)} | ${s.entities} | ${s.viewers} | ${s.acceptedEvents} | ${s.batches} | ${
    s.p99Ms.toFixed(1)
  } | ${s.late} | ${failures} |`;
}

/** Runs the paced load against `server` for `minutes`, sampling as it goes. */
async function drive(server: Server, cli: Cli, onSample: (s: SoakSample) => void) {
  const run = crypto.randomUUID().slice(0, 8);
  const intervalMs = (cli.batch / cli.rate) * 1000;
  const perUser = cli["events-per-user"];
  const started = performance.now();
  const endAt = started + cli.minutes * 60_000;
  let sentEvents = 0;
  let acceptedEvents = 0;
  let inFlight = 0;
  let late = 0;
  let latencies: number[] = [];
  const failures: Record<string, number> = {};
  const samples: SoakSample[] = [];
  const pending = new Set<Promise<void>>();

  const post = async (body: string, events: number) => {
    const t0 = performance.now();
    try {
      const res = await fetch(`${server.url}/events/batch`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      await res.arrayBuffer();
      latencies.push(performance.now() - t0);
      if (res.status === 202) acceptedEvents += events;
      else failures[res.status] = (failures[res.status] ?? 0) + 1;
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
      failures["0"] = (failures["0"] ?? 0) + 1;
    }
  };

  const sampler = (async () => {
    let next = started + cli["sample-s"] * 1000;
    while (next <= endAt + 1) {
      await sleep(Math.max(0, next - performance.now()));
      next += cli["sample-s"] * 1000;
      const memory = await processMemory(server.child.pid);
      if (memory === null) throw new Error(`Server process ${server.child.pid} is gone`);
      const [metrics, workers] = await Promise.all([metricsOf(server.url), workersOf(server.url)]);
      const window = latencies;
      latencies = [];
      window.sort((a, b) => a - b);
      const sample: SoakSample = {
        minute: (performance.now() - started) / 60_000,
        rssMb: Math.round(memory.rssKb / 102.4) / 10,
        mainHeapMb: metrics.heapMb,
        mainExternalMb: metrics.externalMb,
        workerHeapMb: workers.heapMb,
        entities: workers.entities,
        viewers: Math.ceil(sentEvents / perUser),
        acceptedEvents,
        batches: window.length,
        p99Ms: window[Math.min(window.length - 1, Math.floor(window.length * 0.99))] ?? 0,
        late,
        failures: { ...failures },
      };
      late = 0;
      samples.push(sample);
      onSample(sample);
    }
  })();

  // Batch k is due at started + k * intervalMs; a late loop sends every due batch at once.
  let k = 0;
  while (performance.now() < endAt) {
    const due = Math.floor((performance.now() - started) / intervalMs);
    while (k <= due) {
      if (inFlight >= MAX_IN_FLIGHT) {
        late++;
        await Promise.race(pending);
        continue;
      }
      const timestamp = new Date().toISOString();
      const events: string[] = [];
      for (let i = 0; i < cli.batch; i++) {
        events.push(event(run, sentEvents + i, perUser, timestamp));
      }
      sentEvents += cli.batch;
      k++;
      inFlight++;
      const p = post(`[${events.join(",")}]`, cli.batch).finally(() => {
        inFlight--;
        pending.delete(p);
      });
      pending.add(p);
    }
    await sleep(Math.max(0, started + k * intervalMs - performance.now()));
  }
  await Promise.all(pending);
  await sampler;
  return { samples, acceptedEvents, sentEvents };
}

/** Starts a server on a fresh database of `cli["database-url"]`, soaks it, stops it. */
export async function soak(
  cli: Cli,
  log: (text: string) => void = console.log,
): Promise<SoakResult> {
  const extra = Object.fromEntries(cli.env.map((kv) => {
    const at = kv.indexOf("=");
    return [kv.slice(0, at), kv.slice(at + 1)];
  }));
  const env: Record<string, string> = {
    ...BASE_ENV,
    // Blank counts as unset: a caller's own tokens or queue cannot leak in.
    QUEUE: "",
    API_TOKENS: "",
    INGEST_TOKENS: "",
    READ_TOKENS: "",
    ...SOAK_ENV,
    ...extra,
  };
  return await withDatabase(cli["database-url"], "soak", async (databaseUrl) => {
    const server = await startProcess(serverArgs(), { ...env, DATABASE_URL: databaseUrl });
    try {
      log(
        `Soak: ${cli.rate} events/s in batches of ${cli.batch}, a new viewer and TV every ` +
          `${cli["events-per-user"]} events, ${cli.minutes} min, pid ${server.child.pid}, ` +
          Object.entries({ ...SOAK_ENV, ...extra }).map(([k, v]) => `${k}=${v}`).join(" "),
      );
      log(header());
      const { samples, acceptedEvents } = await drive(server, cli, (s) => log(line(s)));
      // Every accepted event must reach the summary.
      let counted: number | null = null;
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        counted = await totalEvents(server.url);
        if (counted >= acceptedEvents) break;
        await sleep(500);
      }
      const referenceMinute = cli.minutes >= 2 * REFERENCE_MINUTES
        ? REFERENCE_MINUTES
        : cli.minutes / 2;
      const reference = samples.find((s) => s.minute >= referenceMinute - 0.01) ??
        samples[0];
      const end = samples[samples.length - 1];
      const after = samples.filter((s) => s.minute >= reference.minute);
      const ratio = end.rssMb / reference.rssMb;
      return {
        settings: {
          minutes: cli.minutes,
          rate: cli.rate,
          batch: cli.batch,
          eventsPerUser: cli["events-per-user"],
          ...SOAK_ENV,
          ...extra,
        },
        samples,
        referenceMinute: reference.minute,
        referenceRssMb: reference.rssMb,
        endRssMb: end.rssMb,
        ratio,
        met: ratio <= GOAL_RATIO,
        slopeMbPerMin: slope(after.map((s) => [s.minute, s.rssMb])),
        acceptedEvents,
        countedEvents: counted,
      };
    } finally {
      await stop(server);
    }
  });
}

/** Parses `argv` (the arguments after `soak`), runs the soak and prints the verdict. */
export async function soakMain(argv: string[]): Promise<boolean> {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {
    json: { type: "boolean" },
    env: { type: "string", multiple: true },
  };
  for (const name of Object.keys(CLI.shape)) options[name] ??= { type: "string" };
  const { values } = parseArgs({ args: argv, options });
  const parsed = CLI.safeParse(values);
  if (!parsed.success) {
    console.error(parsed.error.issues.map((i) => `--${i.path.join(".")}: ${i.message}`).join("\n"));
    Deno.exit(2);
  }
  const cli = parsed.data;
  // With --json the table goes to stderr, the result to stdout.
  const result = await soak(cli, cli.json ? console.error : console.log);
  if (cli.json) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    console.log(
      `\nRSS ${result.referenceRssMb} MB at ${result.referenceMinute.toFixed(1)} min, ` +
        `${result.endRssMb} MB at the end: x${result.ratio.toFixed(3)} (goal <= x${GOAL_RATIO}): ` +
        `${result.met ? "met" : "NOT met"}; slope after the reference ` +
        `${result.slopeMbPerMin.toFixed(2)} MB/min; ${result.acceptedEvents} events accepted, ` +
        `${result.countedEvents} counted by /stats/summary`,
    );
  }
  return result.met && result.countedEvents !== null &&
    result.countedEvents >= result.acceptedEvents;
}

if (import.meta.main) {
  Deno.exit(await soakMain(Deno.args) ? 0 : 1);
}
