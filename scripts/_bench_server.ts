/**
 * Helpers the benchmark modules share: start the server (or any script) as a child process on a free
 * loopback port and wait until it answers, stop it (or run a function against a server started and
 * stopped around it), read its memory from `/proc`, make a throwaway PostgreSQL database, and parse a
 * benchmark script's command line against its zod schema.
 *
 * @module
 */
import { parseArgs } from "node:util";
// @ts-types="@types/pg"
import pg from "pg";
import { z } from "zod";

const root = new URL("..", import.meta.url).pathname;

/** A free TCP port on the loopback interface (closed again before returning). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A started child process and the base URL it serves. */
export interface Server {
  url: string;
  child: Deno.ChildProcess;
}

/** Arguments that run `main.ts` with the permissions it needs; `{port}` is filled in at start. */
export function serverArgs(): string[] {
  return [
    "run",
    "--allow-net",
    "--allow-env",
    "--allow-read",
    "--allow-write",
    "--allow-sys",
    `${root}main.ts`,
    "--port",
    "{port}",
  ];
}

/** Environment every benchmark server shares: quiet logs, loopback only, a fixed IP key. */
export const BASE_ENV: Readonly<Record<string, string>> = {
  // As `deno task start` runs the server (see the README's _Memory_ notes).
  MALLOC_MMAP_THRESHOLD_: "131072",
  LOG_LEVEL: "warn",
  LISTEN_HOST: "127.0.0.1",
  IP_HASH_SECRET: "bench-secret-0123456789abcdef",
};

const STDERR_TAIL_BYTES = 4096;

/**
 * Thrown by {@link startProcess} when the child exits or does not answer in time: `summary` is the
 * one-line reason, `message` adds the end of the child's stderr.
 */
export class StartError extends Error {
  constructor(readonly summary: string, readonly stderr: string) {
    super(summary + (stderr === "" ? "" : `; its stderr ended with:\n${stderr}`));
  }
}

/**
 * Spawns `deno <args>` (`{port}` replaced by a free port) and waits until `GET /healthz` answers below
 * 500. Throws with the exit status and the end of its stderr when it exits or does not answer in time.
 * The child's stderr is passed through to ours.
 */
export async function startProcess(
  args: string[],
  env: Record<string, string>,
  timeoutMs = 60_000,
): Promise<Server> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: args.map((a) => a.replace("{port}", String(port))),
    env,
    cwd: root,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let tail = new Uint8Array(0);
  const pump = (async () => {
    for await (const chunk of child.stderr) {
      await Deno.stderr.write(chunk);
      const joined = new Uint8Array(tail.length + chunk.length);
      joined.set(tail);
      joined.set(chunk, tail.length);
      tail = joined.slice(Math.max(0, joined.length - STDERR_TAIL_BYTES));
    }
  })().catch(() => undefined);
  const state: { exit: Deno.CommandStatus | null } = { exit: null };
  child.status.then((status) => (state.exit = status));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  const failure = (why: string) =>
    new StartError(
      `Cannot benchmark: "deno ${args.join(" ")}" ${why}`,
      new TextDecoder().decode(tail).trim(),
    );
  while (Date.now() < deadline) {
    if (state.exit !== null) {
      await pump;
      throw failure(`exited with code ${state.exit.code} before answering`);
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      await res.body?.cancel();
      if (res.status < 500) return { url, child };
    } catch (error) {
      if (!(error instanceof TypeError) && !(error instanceof DOMException)) throw error;
    }
    await sleep(200);
  }
  await kill(child);
  await pump;
  throw failure(`did not answer GET /healthz within ${timeoutMs / 1000} s`);
}

/** Stops a server: SIGTERM (it drains and flushes), SIGKILL if it has not exited after `graceMs`. */
export async function stop(server: Server, graceMs = 30_000): Promise<void> {
  try {
    server.child.kill("SIGTERM");
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), graceMs);
  });
  const result = await Promise.race([server.child.status, timedOut]);
  clearTimeout(timer);
  if (result === "timeout") await kill(server.child);
}

async function kill(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
  }
  await child.status;
}

/** Options of {@link withServer}. */
export interface WithServerOptions {
  /** Prefix of the temp DATA_DIR made when `env` has neither DATABASE_URL nor DATA_DIR. */
  tempPrefix?: string;
  /** When given, a start failure is rethrown as "Cannot <purpose>: the server did not start: ...". */
  purpose?: string;
}

/**
 * Starts the server with {@link BASE_ENV} and `env`, runs `fn` against it and stops it. Without
 * DATABASE_URL or DATA_DIR in `env` it gets a temp DATA_DIR (embedded PGlite), removed afterwards.
 */
export async function withServer<T>(
  env: Record<string, string>,
  fn: (server: Server) => Promise<T>,
  options: WithServerOptions = {},
): Promise<T> {
  const full: Record<string, string> = { ...BASE_ENV, ...env };
  let dataDir: string | undefined;
  if (full.DATABASE_URL === undefined && full.DATA_DIR === undefined) {
    dataDir = await Deno.makeTempDir({ prefix: options.tempPrefix ?? "ott-bench-" });
    full.DATA_DIR = dataDir;
  }
  try {
    let server: Server;
    try {
      server = await startProcess(serverArgs(), full);
    } catch (error) {
      if (options.purpose === undefined) throw error;
      throw new Error(
        `Cannot ${options.purpose}: the server did not start: ${(error as Error).message}`,
        { cause: error },
      );
    }
    try {
      return await fn(server);
    } finally {
      await stop(server);
    }
  } finally {
    if (dataDir !== undefined) await Deno.remove(dataDir, { recursive: true });
  }
}

/** Resident and peak resident memory of a process, in kB (`null` once it is gone). */
export interface ProcessMemory {
  rssKb: number;
  hwmKb: number;
}

/**
 * Reads VmRSS and VmHWM of a process with `cat`, since Deno guards `/proc` behind `--allow-all`. Deno
 * workers are threads, so the server's pid covers every worker.
 */
export async function processMemory(pid: number): Promise<ProcessMemory | null> {
  const out = await new Deno.Command("cat", {
    args: [`/proc/${pid}/status`],
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) return null;
  const text = new TextDecoder().decode(out.stdout);
  const rss = /VmRSS:\s+(\d+) kB/.exec(text);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(text);
  if (rss === null || hwm === null) return null;
  return { rssKb: Number(rss[1]), hwmKb: Number(hwm[1]) };
}

/** Creates database `ott_<prefix>_<random>` on the server of `adminUrl`, runs `fn`, drops it. */
export async function withDatabase<T>(
  adminUrl: string,
  prefix: string,
  fn: (databaseUrl: string) => Promise<T>,
): Promise<T> {
  const name = `ott_${prefix}_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    return await fn(url.toString());
  } finally {
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Parses `Deno.args` as the options named by the keys of `schema` (`--name value`; booleans as bare
 * flags, arrays as repeatable options) and validates them with it. On invalid input it prints each
 * issue as `--name: message` to stderr and exits with status 2.
 */
export function parseCli<T extends z.ZodObject>(schema: T): z.infer<T> {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {};
  for (const [name, field] of Object.entries(schema.shape)) {
    let type: z.ZodType = field;
    while (type instanceof z.ZodDefault || type instanceof z.ZodOptional) {
      type = type.unwrap() as z.ZodType;
    }
    options[name] = type instanceof z.ZodBoolean
      ? { type: "boolean" }
      : type instanceof z.ZodArray
      ? { type: "string", multiple: true }
      : { type: "string" };
  }
  const { values } = parseArgs({ args: Deno.args, options });
  const parsed = schema.safeParse(values);
  if (!parsed.success) {
    console.error(parsed.error.issues.map((i) => `--${i.path.join(".")}: ${i.message}`).join("\n"));
    Deno.exit(2);
  }
  return parsed.data;
}
