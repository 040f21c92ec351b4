import assert from "node:assert/strict";
import type { Kysely } from "kysely";
import { fileRequest, getRequest } from "../db/privacy_store.ts";
import type { Database } from "../db/schema.ts";
import { withMigratedDatabase } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";
import { MemoryLogger, until } from "../tests/_region_fakes.ts";
import { ErasedUsers } from "./erased_users.ts";
import { Eraser, type EraserOptions } from "./erasure.ts";

const DAY_MS = 86_400_000;

/** Reads `read()` until `isDone` holds (or 5 s passed) and returns the last value read. */
async function eventually<T>(read: () => Promise<T>, isDone: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + 5_000;
  let value = await read();
  while (!isDone(value) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    value = await read();
  }
  return value;
}

/** An eraser over `db` whose settle step fails `failures` times, then succeeds. */
function eraserWith(
  db: Kysely<Database>,
  failures: number,
  overrides: Partial<EraserOptions> = {},
): { eraser: Eraser; logger: MemoryLogger; retries: () => number } {
  const logger = new MemoryLogger();
  let left = failures;
  let retries = 0;
  const eraser = new Eraser({
    db,
    erased: new ErasedUsers("test-pseudonym-key-0123456789"),
    recordOptOut: () => {},
    settle: () => {
      if (left-- > 0) {
        return Promise.reject(new Error("Cannot flush workers: database unavailable"));
      }
      return Promise.resolve();
    },
    isLogPositional: true,
    maxEventAgeMs: 7 * DAY_MS,
    logger,
    maxPasses: 1,
    passDelayMs: 1,
    retry: { firstDelayMs: 20, maxDelayMs: 40, giveUpAfterMs: DAY_MS },
    onRetry: () => retries++,
    ...overrides,
  });
  return { eraser, logger, retries: () => retries };
}

async function fileDeletion(db: Kysely<Database>, eraser: Eraser, userId: string, atMs: number) {
  const { request } = await fileRequest(db, {
    userId: eraser.pseudonymOf(userId),
    erasingUserId: userId,
    type: "deletion",
    jurisdiction: "gdpr",
    receivedAtMs: atMs,
    dueAtMs: atMs + 30 * DAY_MS,
  });
  return request.id;
}

test("[privacy] an erasure that fails stays in progress, says when it retries, and completes later", () =>
  withMigratedDatabase(undefined, async (db) => {
    const { eraser, retries } = eraserWith(db, 2);
    const id = await fileDeletion(db, eraser, "alice-7f3", Date.now());
    const { passes } = await eraser.begin(id, "alice-7f3", Date.now());
    await passes;
    const waiting = await getRequest(db, id, Date.now());
    assert.equal(waiting?.status, "in_progress");
    const result = waiting?.result as Record<string, unknown>;
    assert.equal(result.attempts, 1);
    assert.match(String(result.last_error), /database unavailable/);
    assert.ok(Date.parse(String(result.next_try_at)) > Date.now() - 1_000, "a next try is named");
    assert.ok(waiting?.user_id.startsWith("erased-"), "the record names the pseudonym at once");

    await until("two attempts to be retried", () => retries() === 2);
    const done = await eventually(
      () => getRequest(db, id, Date.now()),
      (r) => r?.status === "completed",
    );
    assert.equal(done?.status, "completed", JSON.stringify(done));
    assert.equal((done?.result as Record<string, unknown>).attempts, 3);
    const row = await db.selectFrom("privacy_requests").select("erasing_user_id")
      .where("id", "=", id as never).executeTakeFirstOrThrow();
    assert.equal(row.erasing_user_id, null, "the user's id is forgotten once erased");
    eraser.stop();
  }));

test("[privacy] an erasure still failing a day after the request is marked failed with the reason", () =>
  withMigratedDatabase(undefined, async (db) => {
    const { eraser, retries } = eraserWith(db, 1_000);
    const receivedAtMs = Date.now() - DAY_MS - 1;
    const id = await fileDeletion(db, eraser, "bob-2c1", receivedAtMs);
    const { passes } = await eraser.begin(id, "bob-2c1", receivedAtMs);
    await passes;
    const failed = await getRequest(db, id, Date.now());
    assert.equal(failed?.status, "failed");
    assert.match(String((failed?.result as Record<string, unknown>).error), /database unavailable/);
    assert.equal(retries(), 0);
    eraser.stop();
  }));

test("[privacy] an open erasure resumes after a restart with its attempts counted", () =>
  withMigratedDatabase(undefined, async (db) => {
    const first = eraserWith(db, 1, {
      retry: { firstDelayMs: 60_000, maxDelayMs: 60_000, giveUpAfterMs: DAY_MS },
    });
    const id = await fileDeletion(db, first.eraser, "carol-9", Date.now());
    await (await first.eraser.begin(id, "carol-9", Date.now())).passes;
    first.eraser.stop(); // the process stops before the retry is due

    const second = eraserWith(db, 0);
    await second.eraser.resume();
    await second.eraser.idle();
    const done = await getRequest(db, id, Date.now());
    assert.equal(done?.status, "completed", JSON.stringify(done));
    assert.equal((done?.result as Record<string, unknown>).attempts, 2);
    second.eraser.stop();
  }));
