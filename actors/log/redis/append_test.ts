/**
 * The redis appender against the real Redis: stream floors after a (re)connect, and
 * `REDIS_WAIT_REPLICAS` refusing an append no replica acknowledged (the test Redis has none).
 */
import assert from "node:assert/strict";
import type { Redis } from "ioredis";
import { isRedisUp, TEST_REDIS_URL, withRedisPrefix } from "../../../tests/_cluster.ts";
import { makeEvent } from "../../../tests/fixtures.ts";
import { test } from "../../../tests/_permissions.ts";
import { createLogger } from "../../../logger.ts";
import { AppendError } from "../log.ts";
import { type AppendRegion, RedisLog, type RedisLogOptions } from "./append.ts";
import { positionOfStreamId, streamIdOfPosition } from "./stream_ids.ts";

const ignore = !(await isRedisUp());

const region: AppendRegion = {
  refusal: () => null,
  markLateness: (events) => events.map(() => false),
};

async function withAppender(
  overrides: Partial<RedisLogOptions>,
  fn: (log: RedisLog, redis: Redis, prefix: string) => Promise<void>,
): Promise<void> {
  await withRedisPrefix(async (prefix) => {
    const { Redis } = await import("ioredis");
    const redis = new Redis(TEST_REDIS_URL, { enableOfflineQueue: false, lazyConnect: true });
    await redis.connect();
    try {
      const log = new RedisLog(region, {
        redis,
        keyPrefix: prefix,
        shards: 2,
        dedupeTtlMs: 60_000,
        waitReplicas: 0,
        waitTimeoutMs: 100,
        checkpoints: () => Promise.resolve(new Map()),
        onServerChanged: () => assert.fail("the same server answers"),
        logger: createLogger("error"),
        ...overrides,
      });
      await fn(log, redis, prefix);
    } finally {
      redis.disconnect();
    }
  });
}

test({
  name: "[cluster] after a connect, new stream ids are above the committed checkpoints",
  ignore,
  fn: async () => {
    // A promoted replica whose clock is an hour behind the old primary's: checkpoints are ahead.
    const checkpointMs = Date.now() + 3_600_000;
    const checkpoint = positionOfStreamId(`${checkpointMs}-5`);
    await withAppender({
      checkpoints: () =>
        Promise.resolve(new Map([["user:0", checkpoint], ["content:1", checkpoint]])),
    }, async (log, redis, prefix) => {
      await redis.xadd(`${prefix}ev:user:0`, "1000-0", "e", "{}"); // exists, below its floor
      const above = `${checkpointMs + 60_000}-0`;
      await redis.xadd(`${prefix}ev:user:1`, above, "e", "{}"); // exists, above: left alone
      await log.start();
      assert.equal(log.refusal(), null, "appends open once the floors are set");
      for (const key of ["user:0", "content:1"]) {
        const id = await redis.xadd(`${prefix}ev:${key}`, "*", "e", "{}");
        assert.ok(
          positionOfStreamId(id!) > checkpoint,
          `${key}: ${id} is not above the checkpoint`,
        );
      }
      // The stream created for its floor holds only the entry just added.
      assert.equal(await redis.xlen(`${prefix}ev:content:1`), 1);
      const next = await redis.xadd(`${prefix}ev:user:1`, "*", "e", "{}");
      assert.ok(positionOfStreamId(next!) > positionOfStreamId(above));
      assert.equal(streamIdOfPosition(checkpoint), `${checkpointMs}-5`);
    });
  },
});

test({
  name:
    "[cluster] REDIS_WAIT_REPLICAS=1 without a replica answers 503, and the retry is a duplicate",
  ignore,
  fn: async () => {
    await withAppender({ waitReplicas: 1 }, async (log, redis, prefix) => {
      await log.start();
      const event = { ...makeEvent({ eventId: "w-1" }), receivedAtMs: Date.now() };
      await assert.rejects(
        log.append([event]),
        (error: Error) =>
          error instanceof AppendError && /0 of 1 Redis replicas acknowledged/.test(error.message),
      );
      // Redis ran the script: the event is in the log, so a retry is marked a duplicate.
      assert.equal(await redis.exists(`${prefix}seen:w-1`), 1);
      await assert.rejects(log.append([event]), AppendError);
      const entries = await redis.xrange(`${prefix}ev:user:${0}`, "-", "+");
      const all = [...entries, ...await redis.xrange(`${prefix}ev:user:1`, "-", "+")];
      assert.deepEqual(all.map(([, fields]) => fields[0]).sort(), ["d", "e"]);
    });
  },
});
