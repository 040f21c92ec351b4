/**
 * `deno task simulate`: sends deterministic fake TV traffic to a running server and reports what was
 * accepted and which rule hits the server should now show in `GET /compliance/summary`; with
 * `--scenario week`, the anomaly detector's scripted week and the incidents it should open.
 *
 * @module
 */
import { runWeek } from "./_sim_week_run.ts";
import {
  emptyReport,
  ENV_VARS,
  formatReport,
  parseCli,
  progressBar,
  type SendReport,
  type SimOptions,
  USAGE,
} from "./_sim_cli.ts";
import { generateTraffic, type PrivacyRequest } from "./_sim_traffic.ts";

/** How requests are sent: where, how many at once, and how hard to retry. */
export interface SenderOptions {
  url: string;
  batch: number;
  concurrency: number;
  token?: string;
  /** Further attempts after a 503 or a network error, before the items count as undelivered. */
  maxRetries: number;
  /** First backoff after a network error (or a 503 without Retry-After); doubles each time. */
  retryDelayMs: number;
  /** A request (body included) that takes longer is abandoned and counted as a network error. */
  timeoutMs: number;
}

/** Retry and timeout settings of the command line. */
export const DEFAULT_RETRY = { maxRetries: 10, retryDelayMs: 250, timeoutMs: 30_000 };

/** Longest wait a Retry-After header can ask for, so one answer cannot stall the run. */
const MAX_RETRY_AFTER_MS = 60_000;

interface Answer {
  status: number;
  body: unknown;
}

/**
 * Caps the requests in flight: the cap halves on a 503 or a network error (at most once a second)
 * and grows back by one per `cap` answers, never above `--concurrency`, so a busy server sees fewer
 * requests rather than a storm of retries.
 */
class InFlightLimit {
  #value: number;
  #max: number;
  #active = 0;
  #waiters: Array<() => void> = [];
  #cutAtMs = -Infinity;
  lowest: number;

  constructor(max: number) {
    this.#value = this.#max = this.lowest = max;
  }

  async acquire(): Promise<void> {
    while (this.#active >= Math.floor(this.#value)) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    this.#active++;
  }

  release(isBusy: boolean): void {
    this.#active--;
    if (!isBusy) {
      this.#value = Math.min(this.#max, this.#value + 1 / this.#value);
    } else if (performance.now() - this.#cutAtMs >= 1000) {
      this.#cutAtMs = performance.now();
      this.#value = Math.max(1, this.#value / 2);
      this.lowest = Math.min(this.lowest, Math.floor(this.#value));
    }
    for (let i = this.#active; i < Math.floor(this.#value) && this.#waiters.length > 0; i++) {
      this.#waiters.shift()!();
    }
  }
}

/**
 * Sends items as `POST /events` (batch 1) or `POST /events/batch` requests from a queue, with
 * `concurrency` requests in flight, and returns once every request was answered or given up. The
 * items are read as they are sent, so a generator can stream more than memory holds.
 */
export async function sendItems(
  items: Iterable<unknown>,
  o: SenderOptions,
  report: SendReport,
  onProgress: (doneItems: number) => void = () => {},
): Promise<void> {
  const isSingle = o.batch === 1;
  const url = `${o.url}${isSingle ? "/events" : "/events/batch"}`;
  const limit = new InFlightLimit(o.concurrency);
  const source = items[Symbol.iterator]();
  let isExhausted = false;
  const nextChunk = (): unknown[] => {
    const chunk: unknown[] = [];
    while (!isExhausted && chunk.length < o.batch) {
      const item = source.next();
      if (item.done === true) isExhausted = true;
      else chunk.push(item.value);
    }
    return chunk;
  };
  let done = 0;
  const worker = async () => {
    // Chunks are taken in order, so at most `concurrency` chunks are out of timestamp order.
    while (report.aborted === null) {
      const chunk = nextChunk();
      if (chunk.length === 0) return;
      const body = JSON.stringify(isSingle ? chunk[0] : chunk);
      const answer = await post(url, body, o, report, limit);
      report.events_sent += chunk.length;
      if (answer === null) {
        report.undelivered += chunk.length;
      } else if (answer.status === 202) {
        const counts = answer.body as { accepted?: unknown };
        const rejected = rejectedItems(answer.body);
        report.accepted += typeof counts.accepted === "number"
          ? counts.accepted
          : chunk.length - rejected.length;
        report.rejected += rejected.length;
        report.rejected_in_batches += rejected.length;
        countFields(report, rejected);
      } else {
        report.rejected += chunk.length;
        const statuses = report.rejected_by_status;
        statuses[answer.status] = (statuses[answer.status] ?? 0) + chunk.length;
        countFields(report, isSingle ? [issuesOf(answer.body)] : rejectedItems(answer.body));
        if (answer.status === 401 || answer.status === 403) {
          report.aborted = `the server answered ${answer.status} to events${refusal(answer)}: ` +
            "pass a token with the ingest role (or admin) as --token or SIM_TOKEN";
        }
      }
      done += chunk.length;
      onProgress(done);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  report.lowest_concurrency = Math.min(report.lowest_concurrency ?? Infinity, limit.lowest);
}

/** Files the privacy requests one after the other, each answered before the next is sent. */
export async function sendPrivacyRequests(
  requests: readonly PrivacyRequest[],
  o: SenderOptions,
  report: SendReport,
): Promise<void> {
  for (const request of requests) {
    if (report.aborted !== null) return;
    report.privacy_requests_sent++;
    const answer = await post(`${o.url}/privacy/requests`, JSON.stringify(request), o, report);
    if (answer === null) continue;
    if (answer.status === 202 || answer.status === 201 || answer.status === 200) {
      report.privacy_requests_recorded++;
    } else if (answer.status === 401 || answer.status === 403) {
      report.aborted = `the server answered ${answer.status} to a privacy request` +
        `${refusal(answer)}: ${PRIVACY_TOKEN_HINT}`;
    }
  }
}

const PRIVACY_TOKEN_HINT = "pass a token with the privacy role (or admin) as --privacy-token";

/**
 * Asks `GET /privacy/requests` with the privacy token before any event is sent, and returns why the
 * run cannot file its privacy requests (the server answered 401 or 403), or null when it can.
 */
export async function checkPrivacyAccess(url: string, token?: string): Promise<string | null> {
  const headers: Record<string, string> = {};
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  let answer: Answer;
  try {
    const res = await fetch(`${url}/privacy/requests?limit=1`, {
      headers,
      signal: AbortSignal.timeout(DEFAULT_RETRY.timeoutMs),
    });
    answer = { status: res.status, body: parseJson(await res.text()) };
  } catch {
    // Unreachable now: the run's own retries and report deal with it.
    return null;
  }
  if (answer.status !== 401 && answer.status !== 403) return null;
  return `Cannot file privacy requests: the server answered ${answer.status} to ` +
    `GET /privacy/requests${refusal(answer)}; ${PRIVACY_TOKEN_HINT}. No event was sent.`;
}

/** The issues of each item a batch answer lists as rejected (`{rejected: [{index, issues}]}`). */
function rejectedItems(body: unknown): unknown[][] {
  const rejected = (body as { rejected?: unknown }).rejected;
  return Array.isArray(rejected) ? rejected.map(issuesOf) : [];
}

function issuesOf(item: unknown): unknown[] {
  const issues = (item as { issues?: unknown } | null)?.issues;
  return Array.isArray(issues) ? issues : [];
}

/** Counts each rejected item once per field its issues name (`(unknown)` when they name none). */
function countFields(report: SendReport, items: unknown[][]): void {
  for (const issues of items) {
    const paths = issues.map((i) => (i as { path?: unknown } | null)?.path)
      .filter((path): path is string => typeof path === "string" && path !== "");
    for (const field of paths.length === 0 ? ["(unknown)"] : new Set(paths)) {
      report.rejected_by_field[field] = (report.rejected_by_field[field] ?? 0) + 1;
    }
  }
}

/** The server's own reason for a refusal, as ` (error text)`, or "" when it gave none. */
function refusal(answer: Answer): string {
  const error = (answer.body as { error?: unknown } | null)?.error;
  return typeof error === "string" && error !== "" ? ` (${error})` : "";
}

/** Posts JSON, retrying 503 (after Retry-After) and network errors; null once it gave up. */
async function post(
  url: string,
  body: string,
  o: SenderOptions,
  report: SendReport,
  limit?: InFlightLimit,
): Promise<Answer | null> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  for (let attempt = 0;; attempt++) {
    const backoffMs = Math.min(10_000, o.retryDelayMs * 2 ** attempt);
    let waitMs = backoffMs;
    await limit?.acquire();
    const controller = new AbortController();
    const timer: ReturnType<typeof setTimeout> = setTimeout(() => controller.abort(), o.timeoutMs);
    let isBusy = false;
    report.http_requests++;
    try {
      const res = await fetch(url, { method: "POST", headers, body, signal: controller.signal });
      const text = await res.text();
      const statuses = report.responses_by_status;
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status !== 503) return { status: res.status, body: parseJson(text) };
      isBusy = true;
      waitMs = retryAfterMs(res.headers.get("retry-after")) ?? backoffMs;
    } catch (error) {
      // Connection refused or reset, DNS, timeout: counted with the last message, then retried.
      report.network_errors++;
      isBusy = true;
      report.last_network_error = `POST ${url}: ${(error as Error).message ?? String(error)}`;
    } finally {
      clearTimeout(timer);
      limit?.release(isBusy);
    }
    if (attempt >= o.maxRetries) return null;
    report.retries++;
    await sleep(waitMs);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    // Not JSON (a proxy's error page, say): the status alone decides.
    return {};
  }
}

/** Milliseconds a Retry-After header asks for (seconds or an HTTP date), or null if absent or bad. */
function retryAfterMs(header: string | null): number | null {
  if (header === null || header.trim() === "") return null;
  const seconds = Number(header);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(header) - Date.now();
  return Number.isNaN(ms) ? null : Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

async function run(options: SimOptions): Promise<number> {
  const nowMs = Math.floor(Date.now() / 1000) * 1000;
  const traffic = generateTraffic(options.events, options.seed, nowMs);
  const expected = traffic.expectations;
  const { token: _, privacyToken: __, ...shown } = options;
  if (options.isDryRun) {
    console.log(
      options.isJson
        ? JSON.stringify({ options: shown, expected }, null, 2)
        : formatReport(options, null, expected),
    );
    return 0;
  }
  const { url, batch, concurrency, token } = options;
  const unreachable = await probe(url);
  if (unreachable !== null) {
    console.error(`Cannot reach ${url}: is the server running? (${unreachable})`);
    return 1;
  }
  if (traffic.requests.length > 0) {
    const refused = await checkPrivacyAccess(url, options.privacyToken);
    if (refused !== null) {
      console.error(refused);
      return 1;
    }
  }
  const o: SenderOptions = { url, batch, concurrency, token, ...DEFAULT_RETRY };
  const report = emptyReport();
  const total = traffic.phase1.length + traffic.phase2.length;
  const progress = progressBar(total);
  const startedMs = performance.now();
  // Each step is answered before the next starts: phase 1, then the do-not-track events (after
  // every earlier event of their users), then the privacy requests, then phase 2.
  await sendItems(traffic.phase1.slice(0, traffic.dntFrom), o, report, progress.update);
  await sendItems(
    traffic.phase1.slice(traffic.dntFrom),
    o,
    report,
    (done) => progress.update(traffic.dntFrom + done),
  );
  await sendPrivacyRequests(traffic.requests, { ...o, token: options.privacyToken }, report);
  await sendItems(
    traffic.phase2,
    o,
    report,
    (done) => progress.update(traffic.phase1.length + done),
  );
  progress.end();
  report.elapsed_s = (performance.now() - startedMs) / 1000;
  report.events_per_s = report.events_sent / Math.max(0.001, report.elapsed_s);
  console.log(
    options.isJson
      ? JSON.stringify({ options: shown, report, expected }, null, 2)
      : formatReport(options, report, expected),
  );
  const failedRequests = traffic.requests.length - report.privacy_requests_recorded;
  const problem = report.aborted !== null
    ? `stopped early: ${report.aborted}`
    : report.accepted === 0
    ? `no event was accepted: is the server running at ${options.url}?`
    : report.undelivered > 0
    ? `${report.undelivered} events were not delivered`
    : failedRequests > 0
    ? `${failedRequests} privacy requests were not recorded`
    : null;
  if (problem === null) return 0;
  console.error(`Expectations do not hold: ${problem}`);
  return 1;
}

/** Asks `/healthz` once, so a simulator pointed at nothing fails at once instead of retrying. */
export async function probe(url: string): Promise<string | null> {
  try {
    const res = await fetch(new URL("/healthz", url), { signal: AbortSignal.timeout(3_000) });
    await res.body?.cancel();
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

async function main(): Promise<number> {
  const names = [...ENV_VARS, "DATABASE_URL"].filter((variable) =>
    Deno.permissions.querySync({ name: "env", variable }).state === "granted"
  );
  const request = parseCli(
    Deno.args,
    Object.fromEntries(names.map((name) => [name, Deno.env.get(name)])),
  );
  if (request.kind === "help") {
    console.log(USAGE);
    return 0;
  }
  if (request.kind === "error") {
    console.error(`${request.message}\n\n${USAGE}`);
    return 2;
  }
  if (request.kind === "week") return await runWeek(request.options);
  return await run(request.options);
}

if (import.meta.main) Deno.exit(await main());
