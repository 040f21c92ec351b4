/**
 * Starting a real pipeline (real Workers, real PGlite or PostgreSQL) for tests, and talking to it
 * through `app.request()` with no server.
 *
 * @module
 */
// @ts-types="@types/pg"
import pg from "pg";
import type { Config } from "../config.ts";
import { createLogger } from "../logger.ts";
import { type Pipeline, type PipelineOptions, startPipeline } from "../main.ts";
import { HAS_SUITE_PERMISSIONS } from "./_permissions.ts";
import { testConfig, type WireEvent } from "./fixtures.ts";
import type { Kysely } from "kysely";
import { openDatabase } from "../db/client.ts";
import { migrateToLatest } from "../db/migrate.ts";
import type { Database } from "../db/schema.ts";
import { test } from "./_permissions.ts";

/**
 * PostgreSQL URL for the database tests, or undefined to skip them (also without env permission,
 * as under plain `deno test`, where reading it would throw).
 */
export const TEST_DATABASE_URL = HAS_SUITE_PERMISSIONS
  ? Deno.env.get("TEST_DATABASE_URL") || undefined
  : undefined;

/** A started pipeline plus request helpers. */
export interface Harness {
  pipeline: Pipeline;
  config: Config;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
  get(path: string, headers?: Record<string, string>): Promise<Response>;
  /** Sends wire events as one JSON batch and asserts nothing was rejected. */
  send(events: WireEvent[]): Promise<void>;
  /** Flushes every worker (and runs the `qoe` rule) and fails the test if a flush failed. */
  flush(): Promise<void>;
  json<T = Record<string, unknown>>(path: string): Promise<T>;
}

/** Starts a pipeline with the test config plus overrides. Call `pipeline.stop()` when done. */
export async function startHarness(
  overrides: Partial<Config> = {},
  options: PipelineOptions = {},
): Promise<Harness> {
  const config = testConfig(overrides);
  // The qoe rule runs at each `flush()`, not on a timer: a test sees its flags when it flushes.
  const pipeline = await startPipeline(config, createLogger("error"), {
    isQoeChecking: false,
    isAnomalyDetecting: false,
    ...options,
  });
  const request = async (path: string, init: RequestInit): Promise<Response> =>
    await pipeline.app.request(`http://test${path}`, init);
  const harness: Harness = {
    pipeline,
    config,
    post: (path, body, headers = {}) =>
      request(path, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    get: (path, headers = {}) => request(path, { headers }),
    send: async (events) => {
      for (let i = 0; i < events.length; i += 500) {
        const res = await harness.post("/events/batch", events.slice(i, i + 500));
        const body = await res.json();
        if (res.status !== 202 || body.rejected.length > 0) {
          throw new Error(`Batch not fully accepted: ${res.status} ${JSON.stringify(body)}`);
        }
      }
    },
    flush: async () => {
      const errors = await pipeline.region.flush();
      if (errors.length > 0) throw new Error(`Flush failed: ${errors.join("; ")}`);
      await pipeline.qoeChecker.runOnce();
    },
    json: async (path) => {
      const res = await harness.get(path);
      if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
      return await res.json();
    },
  };
  return harness;
}

/**
 * Runs `fn` with the URL of a fresh, empty PostgreSQL database created on the test server, and drops
 * the database afterwards, so test runs never see each other's rows.
 */
export async function withFreshPostgres(
  serverUrl: string,
  fn: (url: string) => Promise<void>,
): Promise<void> {
  const name = `ott_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
    const url = new URL(serverUrl);
    url.pathname = `/${name}`;
    await fn(url.toString());
  } finally {
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
}

/** Runs `fn` on an empty PGlite in memory (no URL) or on a fresh, empty PostgreSQL database. */
export async function withEmptyDatabase(
  databaseUrl: string | undefined,
  fn: (db: Kysely<Database>) => Promise<void>,
): Promise<void> {
  const run = async (url: string | undefined) => {
    const { db } = await openDatabase({ databaseUrl: url, dataDir: "memory://" });
    try {
      await fn(db);
    } finally {
      await db.destroy();
    }
  };
  if (databaseUrl === undefined) await run(undefined);
  else await withFreshPostgres(databaseUrl, run);
}

/** Runs `fn` on a migrated PGlite in memory (no URL) or on a fresh PostgreSQL database. */
export async function withMigratedDatabase(
  databaseUrl: string | undefined,
  fn: (db: Kysely<Database>) => Promise<void>,
): Promise<void> {
  await withEmptyDatabase(databaseUrl, async (db) => {
    await migrateToLatest(db);
    await fn(db);
  });
}

/**
 * Registers one test per database: `[area] name (pglite)` always, `[postgres] name` when
 * TEST_DATABASE_URL is set; each gets a fresh migrated database.
 */
export function testOnEveryDatabase(
  area: string,
  name: string,
  scenario: (db: Kysely<Database>) => Promise<void>,
): void {
  test(`[${area}] ${name} (pglite)`, () => withMigratedDatabase(undefined, scenario));
  test({
    name: `[postgres] ${name}`,
    ignore: TEST_DATABASE_URL === undefined,
    fn: () => withMigratedDatabase(TEST_DATABASE_URL, scenario),
  });
}

/**
 * Registers a pipeline scenario twice: `[area] name (PGlite)` on embedded PGlite, and
 * `[postgres] name` on a fresh PostgreSQL database when TEST_DATABASE_URL is set.
 */
export function testPipelineOnEveryDatabase(
  area: string,
  name: string,
  overrides: Partial<Config>,
  scenario: (h: Harness) => Promise<void>,
): void {
  const run = async (databaseUrl: string | undefined) => {
    const h = await startHarness({ ...overrides, databaseUrl });
    try {
      await scenario(h);
    } finally {
      await h.pipeline.stop();
    }
  };
  test(`[${area}] ${name} (PGlite)`, () => run(undefined));
  test({
    name: `[postgres] ${name}`,
    ignore: TEST_DATABASE_URL === undefined,
    fn: () => withFreshPostgres(TEST_DATABASE_URL!, run),
  });
}
