/**
 * The benchmark's events, shared by the load generator and the freshness run's background load (as
 * JSON bodies) and the COPY ceiling (as the `raw_events` rows the pipeline would store for them): each
 * viewer keeps one region, network and TV; 2% errors, some EU viewers without consent; event ids are
 * random UUIDs, as TVs send them.
 *
 * @module
 */
import type { WireEvent } from "./_sim_traffic.ts";

const REGIONS = [["DE", true], ["FR", true], ["US-CA", false], ["GB", false], [
  "JP",
  false,
]] as const;

/** Number of distinct viewers (and TVs, and IP addresses). */
export const BENCH_USERS = 5000;

/** The `n`-th benchmark event, stamped `timestamp` (ISO-8601), with a fresh random UUID. */
export function benchEvent(n: number, timestamp: string): WireEvent {
  const user = n % BENCH_USERS;
  const [region, isEu] = REGIONS[user % REGIONS.length];
  const isError = n % 50 === 0;
  return {
    event_id: crypto.randomUUID(),
    user_id: `bench-user-${user}`,
    device_id: `bench-tv-${user}`,
    content_id: `bench-title-${n % 200}`,
    event_type: isError ? "ERROR" : n % 3 === 0 ? "PAUSE" : "PLAY",
    timestamp,
    region,
    is_eu: isEu,
    has_consent: user % 20 !== 0,
    ip_address: `10.0.${user >> 8}.${user & 255}`,
    error_code: isError ? "NETWORK_TIMEOUT" : null,
    extra_metadata: { platform: "tizen", app_version: "5.2.0" },
  };
}
