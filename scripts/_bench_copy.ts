/**
 * The benchmark's COPY ceiling: how fast PostgreSQL itself stores the benchmark's events as
 * `raw_events` rows, with nothing of the pipeline in the way. In a fresh database it runs the
 * project's migrations (`scripts/migrate.ts`), creates `ceiling_events (like raw_events including
 * all)` (same columns, defaults, keys and indexes), writes the rows the pipeline would store for
 * `rows` benchmark events into two CSV files, and times two parallel `psql \copy` processes.
 *
 * @module
 */
import { benchEvent } from "./_bench_events.ts";
import { DEFAULT_GDPR_REGIONS, isGdprRegion } from "../routes/gdpr_regions.ts";
import { IpAnonymizer } from "../routes/ip_anonymizer.ts";

/** The columns the pipeline writes (`db/log_store.ts`); `position` comes from the table's sequence. */
const COLUMNS = [
  "event_id",
  "user_id",
  "device_id",
  "content_id",
  "event_type",
  "occurred_at",
  "received_at",
  "region",
  "is_eu",
  "has_consent",
  "ip_hash",
  "ip_prefix",
  "error_code",
  "do_not_track",
  "is_late",
  "extra_metadata",
  "client_is_eu",
  "subscription_plan",
];

/** What the ceiling run measured. */
export interface CopyCeiling {
  rows: number;
  seconds: number;
  rowsPerS: number;
  /** Bytes of CSV loaded. */
  bytes: number;
}

const root = new URL("..", import.meta.url).pathname;

/** Runs `psql` with `args` against `databaseUrl`; throws with its stderr when it fails. */
async function psql(databaseUrl: string, args: string[]): Promise<string> {
  const out = await new Deno.Command("psql", {
    args: [databaseUrl, "-X", "-q", "-v", "ON_ERROR_STOP=1", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(`Cannot measure the COPY ceiling: psql failed: ${decoder.decode(out.stderr)}`);
  }
  return decoder.decode(out.stdout);
}

/** True when `psql` can be started. */
export async function hasPsql(): Promise<boolean> {
  try {
    const out = await new Deno.Command("psql", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Brings the (fresh) database at `databaseUrl` to the latest schema with the project's migrate script. */
export async function migrate(databaseUrl: string): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys",
      `${root}scripts/migrate.ts`,
    ],
    cwd: root,
    env: { DATABASE_URL: databaseUrl, LOG_LEVEL: "warn" },
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `Cannot migrate the benchmark database: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
}

const csvQuote = (s: string) => `"${s.replaceAll('"', '""')}"`;

/**
 * Writes the `raw_events` rows of benchmark events `first` to `first + count - 1` as CSV (NULL as an
 * empty unquoted field), the same values the pipeline stores for them; returns the bytes written.
 */
async function writeCsv(
  path: string,
  first: number,
  count: number,
  ipHashSecret: string,
): Promise<number> {
  const anonymizer = new IpAnonymizer(ipHashSecret);
  const now = new Date().toISOString();
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const encoder = new TextEncoder();
  let bytes = 0;
  try {
    let lines: string[] = [];
    const flush = async () => {
      const chunk = encoder.encode(lines.join(""));
      bytes += chunk.byteLength;
      for (let written = 0; written < chunk.byteLength;) {
        written += await file.write(chunk.subarray(written));
      }
      lines = [];
    };
    for (let n = first; n < first + count; n++) {
      const e = benchEvent(n, now);
      const { hash, prefix } = anonymizer.anonymize(e.ip_address);
      lines.push(
        [
          e.event_id,
          e.user_id,
          e.device_id,
          e.content_id,
          e.event_type,
          e.timestamp,
          now,
          e.region,
          isGdprRegion(e.region, DEFAULT_GDPR_REGIONS),
          e.has_consent,
          hash,
          prefix,
          e.error_code ?? "",
          false,
          false,
          csvQuote(JSON.stringify(e.extra_metadata)),
          e.is_eu,
          "",
        ].join(",") + "\n",
      );
      if (lines.length >= 10_000) await flush();
    }
    await flush();
  } finally {
    file.close();
  }
  return bytes;
}

/**
 * Measures the COPY ceiling in the fresh, empty database at `databaseUrl`: `rows` rows loaded by two
 * parallel `psql \copy`, timed from the start of both processes to the end of the last (the CSV is
 * written before the clock starts).
 */
export async function copyCeiling(
  databaseUrl: string,
  rows: number,
  ipHashSecret: string,
): Promise<CopyCeiling> {
  await migrate(databaseUrl);
  await psql(databaseUrl, ["-c", "create table ceiling_events (like raw_events including all)"]);
  const dir = await Deno.makeTempDir({ prefix: "ott-bench-copy-" });
  try {
    const half = Math.ceil(rows / 2);
    const parts = [
      { path: `${dir}/part-1.csv`, first: 0, count: half },
      { path: `${dir}/part-2.csv`, first: half, count: rows - half },
    ];
    let bytes = 0;
    for (const part of parts) {
      bytes += await writeCsv(part.path, part.first, part.count, ipHashSecret);
    }
    const started = performance.now();
    await Promise.all(parts.map((part) =>
      psql(databaseUrl, [
        "-c",
        `\\copy ceiling_events(${COLUMNS.join(", ")}) from '${part.path}' csv`,
      ])
    ));
    const seconds = (performance.now() - started) / 1000;
    const counted = Number(
      (await psql(databaseUrl, ["-At", "-c", "select count(*) from ceiling_events"])).trim(),
    );
    if (counted !== rows) {
      throw new Error(`Cannot measure the COPY ceiling: ${counted} of ${rows} rows were loaded`);
    }
    return { rows, seconds, rowsPerS: rows / seconds, bytes };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
