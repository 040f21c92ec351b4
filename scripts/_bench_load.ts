/**
 * The benchmark's load generator, run as its own process: `connections` keep-alive loops POST events
 * to one URL for `seconds` (or until `maxEvents` are sent) and print a JSON summary with latency
 * percentiles. Only for loopback targets; it always stops by itself.
 *
 * Usage: _bench_load.ts <url> <path> <eventsPerRequest> <connections> <seconds> <maxEvents> <prefix>
 *
 * @module
 */
const [url, path, perRequestArg, connectionsArg, secondsArg, maxEventsArg, prefix] = Deno.args;
const perRequest = Number(perRequestArg);
const connections = Number(connectionsArg);
const deadline = performance.now() + Number(secondsArg) * 1000;
const maxEvents = Number(maxEventsArg);
if (!/^http:\/\/(127\.0\.0\.1|localhost)[:/]/.test(url)) {
  throw new Error(`Refusing to load "${url}": the benchmark only targets loopback addresses`);
}

const regions = [["DE", true], ["FR", true], ["US-CA", false], ["GB", false], [
  "JP",
  false,
]] as const;
const nowIso = new Date().toISOString();
let sent = 0;
/** Realistic traffic: each viewer keeps one region, network and TV; 2% errors, some EU without consent. */
function event(n: number): string {
  const user = n % 5000;
  const [region, isEu] = regions[user % regions.length];
  const isError = n % 50 === 0;
  return JSON.stringify({
    event_id: `${prefix}-${n}`,
    user_id: `bench-user-${user}`,
    device_id: `bench-tv-${user}`,
    content_id: `bench-title-${n % 200}`,
    event_type: isError ? "ERROR" : n % 3 === 0 ? "PAUSE" : "PLAY",
    timestamp: nowIso,
    region,
    is_eu: isEu,
    has_consent: user % 20 !== 0,
    ip_address: `10.0.${user >> 8}.${user & 255}`,
    error_code: isError ? "NETWORK_TIMEOUT" : null,
    extra_metadata: { platform: "tizen", app_version: "5.2.0" },
  });
}

const latencies: number[] = [];
const statuses: Record<number, number> = {};
let acceptedEvents = 0;
const started = performance.now();
async function loop(): Promise<void> {
  while (performance.now() < deadline && sent < maxEvents) {
    const first = sent;
    sent += perRequest;
    const body = perRequest === 1
      ? event(first)
      : `[${Array.from({ length: perRequest }, (_, i) => event(first + i)).join(",")}]`;
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
  statuses,
  p50_ms: at(0.5),
  p99_ms: at(0.99),
}));
