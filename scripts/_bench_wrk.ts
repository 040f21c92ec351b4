/**
 * The benchmark's single-event load with `wrk` (C, so the generator costs far less CPU than a Deno
 * one): `wrk -t2 -c<connections> -d<seconds>s --latency -s <lua>` POSTs one realistic event per
 * request, each with its own UUID-shaped `event_id` (a random run tag, the wrk thread id set in
 * `setup`, and a per-thread counter), and an `Authorization: Bearer` header when a token is given.
 *
 * @module
 */

/** The request generator; arguments after `--`: run tag (8 hex digits), bearer token, timestamp. */
export const WRK_LUA = `-- Written by scripts/_bench_wrk.ts for one benchmark run.
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local counter = 0
local tag, stamp
local regions = { { "DE", "true" }, { "FR", "true" }, { "US-CA", "false" }, { "GB", "false" },
  { "JP", "false" } }

function init(args)
  tag = args[1]
  stamp = args[3]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[2] ~= nil and args[2] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  end
end

function request()
  counter = counter + 1
  local n = counter
  local user = (tid * 7919 + n) % 5000
  local region = regions[user % 5 + 1]
  local kind, code = "PLAY", "null"
  if n % 50 == 0 then
    kind, code = "ERROR", '"NETWORK_TIMEOUT"'
  elseif n % 3 == 0 then
    kind = "PAUSE"
  end
  local consent = "true"
  if user % 20 == 0 then consent = "false" end
  local body = string.format(
    '{"event_id":"%s-%04x-4000-8000-%012x","user_id":"bench-user-%d","device_id":"bench-tv-%d",' ..
    '"content_id":"bench-title-%d","event_type":"%s","timestamp":"%s","region":"%s",' ..
    '"is_eu":%s,"has_consent":%s,"ip_address":"10.0.%d.%d","error_code":%s,' ..
    '"extra_metadata":{"platform":"tizen","app_version":"5.2.0"}}',
    tag, tid, n, user, user, n % 200, kind, stamp, region[1], region[2], consent,
    math.floor(user / 256), user % 256, code)
  return wrk.format(nil, nil, nil, body)
end
`;

/** What one wrk run measured. */
export interface WrkResult {
  requestsPerS: number;
  requests: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  /** Responses outside 2xx and 3xx (wrk's "Non-2xx or 3xx responses"). */
  non2xx: number;
  /** connect + read + write + timeout socket errors. */
  socketErrors: number;
}

/** True when `wrk` can be started. */
export async function hasWrk(): Promise<boolean> {
  try {
    const out = await new Deno.Command("wrk", { args: ["-v"], stdout: "null", stderr: "null" })
      .output();
    // wrk -v prints its version and exits 1.
    return out.code === 0 || out.code === 1;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses wrk's report (printed with `--latency`); throws when a required figure is missing. */
export function parseWrk(text: string): WrkResult {
  const need = (pattern: RegExp, what: string): RegExpExecArray => {
    const match = pattern.exec(text);
    if (match === null) throw new Error(`Cannot read wrk's report: no ${what} in:\n${text}`);
    return match;
  };
  const latency = (quantile: string) => {
    const [, value, unit] = need(
      new RegExp(`^\\s+${quantile}%\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, "m"),
      `${quantile}% latency`,
    );
    return Number(value) * UNIT_MS[unit];
  };
  const [, requests, duration, durationUnit] = need(
    /(\d+) requests in ([\d.]+)(us|ms|s|m|h),/,
    "request count",
  );
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    requestsPerS: Number(need(/Requests\/sec:\s+([\d.]+)/, "Requests/sec")[1]),
    requests: Number(requests),
    seconds: Number(duration) * UNIT_MS[durationUnit] / 1000,
    p50Ms: latency("50"),
    p99Ms: latency("99"),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0),
    socketErrors: socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0),
  };
}

/** Options of {@link runWrk}. */
export interface WrkOptions {
  /** Loopback URL of the endpoint, e.g. `http://127.0.0.1:8000/events`. */
  url: string;
  seconds: number;
  connections: number;
  /** Bearer token sent with every request; empty sends none. */
  token: string;
  /** Directory for the Lua script. */
  dir: string;
}

/** Runs wrk once against `options.url` and returns its parsed report. */
export async function runWrk(options: WrkOptions): Promise<WrkResult> {
  if (!/^http:\/\/(127\.0\.0\.1|localhost)[:/]/.test(options.url)) {
    throw new Error(`Refusing to load "${options.url}": the benchmark only targets loopback`);
  }
  const script = `${options.dir}/bench.lua`;
  await Deno.writeTextFile(script, WRK_LUA);
  const tag = crypto.randomUUID().slice(0, 8);
  const threads = Math.min(2, options.connections);
  const out = await new Deno.Command("wrk", {
    args: [
      `-t${threads}`,
      `-c${options.connections}`,
      `-d${options.seconds}s`,
      "--timeout",
      "10s",
      "--latency",
      "-s",
      script,
      options.url,
      "--",
      tag,
      options.token,
      new Date().toISOString(),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `Cannot run wrk against ${options.url}: ${new TextDecoder().decode(out.stderr)}${text}`,
    );
  }
  return parseWrk(text);
}
