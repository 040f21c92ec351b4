/**
 * The benchmark's load generator, run as its own process: `connections` keep-alive loops POST events
 * to one URL for `seconds` (or until `maxEvents` are sent) and print a JSON summary with latency
 * percentiles. Only for loopback targets; it always stops by itself. Events come from
 * `_bench_events.ts` (random UUID ids, so every run sends new events); `eventsPerRequest` 1 posts one
 * object, more posts a JSON array of that many (the batch body).
 *
 * Usage: _bench_load.ts <url> <path> <eventsPerRequest> <connections> <seconds> <maxEvents>
 *
 * @module
 */
import { benchEvent } from "./_bench_events.ts";

const [url, path, perRequestArg, connectionsArg, secondsArg, maxEventsArg] = Deno.args;
const perRequest = Number(perRequestArg);
const connections = Number(connectionsArg);
const maxEvents = Number(maxEventsArg);
if (!/^http:\/\/(127\.0\.0\.1|localhost)[:/]/.test(url)) {
  throw new Error(`Refusing to load "${url}": the benchmark only targets loopback addresses`);
}
if (!Number.isInteger(perRequest) || perRequest < 1) {
  throw new Error(
    `Cannot load: eventsPerRequest must be a positive integer, got "${perRequestArg}"`,
  );
}

const nowIso = new Date().toISOString();
let sent = 0;
const event = (n: number) => JSON.stringify(benchEvent(n, nowIso));
const bodyOf = (first: number) =>
  perRequest === 1
    ? event(first)
    : `[${Array.from({ length: perRequest }, (_, i) => event(first + i)).join(",")}]`;

/**
 * A run with a known number of events gets its bodies built (and UTF-8 encoded) before the clock
 * starts, so that while it runs the generator only sends: it shares the cores with the server, and
 * building 500 events with fresh UUIDs costs it a few microseconds per event. Open-ended runs build
 * each body as they go.
 */
const PREBUILD_MAX_EVENTS = 2_000_000;
const prebuilt: Uint8Array<ArrayBuffer>[] = [];
if (Number.isFinite(maxEvents) && maxEvents <= PREBUILD_MAX_EVENTS) {
  const encoder = new TextEncoder();
  for (let first = 0; first < maxEvents; first += perRequest) {
    prebuilt.push(encoder.encode(bodyOf(first)));
  }
}
const deadline = performance.now() + Number(secondsArg) * 1000;

const latencies: number[] = [];
const statuses: Record<number, number> = {};
let acceptedEvents = 0;
const started = performance.now();
/** Wall-clock time of the first request, so callers can leave this process's start-up out. */
const startedAtMs = Date.now();
async function loop(): Promise<void> {
  while (performance.now() < deadline && sent < maxEvents) {
    const first = sent;
    sent += perRequest;
    const body = prebuilt.length > 0 ? prebuilt[first / perRequest] : bodyOf(first);
    const t0 = performance.now();
    try {
      const res = await fetch(url + path, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      await res.arrayBuffer();
      latencies.push(performance.now() - t0);
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status === 202) acceptedEvents += perRequest;
      else if (res.status === 503) await new Promise((resolve) => setTimeout(resolve, 20));
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
      statuses[0] = (statuses[0] ?? 0) + 1;
    }
  }
}
await Promise.all(Array.from({ length: connections }, loop));
const seconds = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const at = (q: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
console.log(JSON.stringify({
  requests: latencies.length,
  accepted_events: acceptedEvents,
  seconds,
  started_at_ms: startedAtMs,
  statuses,
  p50_ms: at(0.5),
  p99_ms: at(0.99),
}));
