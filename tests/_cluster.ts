/**
 * Helpers for tests against a real Redis: a unique key prefix per test and cleanup of its keys.
 *
 * @module
 */
import { HAS_SUITE_PERMISSIONS } from "./_permissions.ts";

// ioredis is imported where used, not at the top: loading it reads the whole environment (its
// `debug` dependency does), which throws at module load under plain `deno test`.

/** Redis URL for the cluster tests (the local server CI starts). */
export const TEST_REDIS_URL =
  (HAS_SUITE_PERMISSIONS ? Deno.env.get("TEST_REDIS_URL") : undefined) ??
    "redis://127.0.0.1:6379";

/**
 * True when a Redis server answers at {@link TEST_REDIS_URL}; false without the suite's permissions
 * (plain `deno test`), where the probe could neither load ioredis nor connect.
 */
export async function isRedisUp(): Promise<boolean> {
  if (!HAS_SUITE_PERMISSIONS) return false;
  const { Redis } = await import("ioredis");
  const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0 });
  redis.on("error", () => {}); // the probe's own failure is the answer, reported by the return value
  try {
    await redis.connect();
    return (await redis.ping()) === "PONG";
  } catch (error) {
    if (error instanceof Error) return false;
    throw error;
  } finally {
    redis.disconnect();
  }
}

/** Runs `fn` with a fresh key prefix and deletes every key under it afterwards. */
export async function withRedisPrefix(fn: (prefix: string) => Promise<void>): Promise<void> {
  const prefix = `ott-test-${crypto.randomUUID().slice(0, 8)}:`;
  try {
    await fn(prefix);
  } finally {
    const { Redis } = await import("ioredis");
    const redis = new Redis(TEST_REDIS_URL);
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== "0");
    redis.disconnect();
  }
}
