/**
 * Helpers for tests against a real Redis: a unique key prefix per test and cleanup of its keys.
 *
 * @module
 */
import { HAS_SUITE_PERMISSIONS } from "./_permissions.ts";
import { makeWireEvent } from "./fixtures.ts";

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

/** How many shard leases under `prefix` name `nodeId` as their holder right now. */
export async function leasesHeldBy(
  prefix: string,
  nodeId: string,
  shards = 64,
): Promise<number> {
  const { Redis } = await import("ioredis");
  const redis = new Redis(TEST_REDIS_URL);
  try {
    // The lease keys are known: a SCAN would walk every key in Redis (millions of dedupe keys after
    // a bench), seconds per call, and the test would miss the moment the leases go.
    const keys = ["user", "content", "device"].flatMap((family) =>
      Array.from({ length: shards }, (_, shard) => `${prefix}lease:${family}:${shard}`)
    );
    return (await redis.mget(...keys)).filter((v) => v === nodeId).length;
  } finally {
    redis.disconnect();
  }
}

/**
 * Batch `n` of 40 distinct events from `t0` on, ids `<idPrefix><k>`, spread over `users` viewers,
 * `titles` titles and `tvs` TVs (prime counts, so the three cycles do not line up).
 */
export function clusterBatches(
  t0: number,
  { idPrefix, users, titles, tvs }: {
    idPrefix: string;
    users: number;
    titles: number;
    tvs: number;
  },
) {
  return (n: number) =>
    Array.from({ length: 40 }, (_, i) => {
      const k = n * 40 + i;
      return makeWireEvent({
        event_id: `${idPrefix}${k}`,
        user_id: `viewer${k % users}`,
        // A viewer watches one title for 8 of their events, then the next: switching title at
        // every event would make each event a view of its own (a stored row per event), which no
        // traffic does.
        content_id: `title${(k % users + Math.floor(k / (users * 8))) % titles}`,
        // Each viewer watches on one TV (a TV may have several viewers), as households do: a
        // viewer on hundreds of TVs would hold a view open per pair (QoE), which no traffic does.
        device_id: `tv${(k % users) % tvs}`,
        atMs: t0 + k,
      });
    });
}
