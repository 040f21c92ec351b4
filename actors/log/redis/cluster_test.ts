/**
 * Cluster nodes in one process against the real Redis and a migrated PGlite: membership under
 * skewed clocks, stepping down when nothing can commit, and stalled shards reported. The regions
 * are recorders (what a node asked its workers to do); the multi-process fault tests with real
 * workers are `tests/cluster_test.ts` and `tests/cluster_partition_test.ts`.
 */
import assert from "node:assert/strict";
import type { Redis } from "ioredis";
import { isRedisUp, TEST_REDIS_URL, withRedisPrefix } from "../../../tests/_cluster.ts";
import { withMigratedDatabase } from "../../../tests/_harness.ts";
import { test } from "../../../tests/_permissions.ts";
import { acquireShards, loadCheckpoints, storedReceipts } from "../../../db/log_store.ts";
import { createLogger } from "../../../logger.ts";
import type { ShardLease } from "../../protocol.ts";
import { ENTITY_TYPES, formatShardKey } from "../../shard_key.ts";
import { ClusterNode, type ClusterOptions, type ClusterRegion } from "./cluster.ts";
import type { Kysely } from "kysely";
import type { Database } from "../../../db/schema.ts";

type Db = Kysely<Database>;

const ignore = !(await isRedisUp());
const SHARDS = 4;
const ALL_KEYS = ENTITY_TYPES.flatMap((family) =>
  Array.from({ length: SHARDS }, (_, shard) => formatShardKey(family, shard))
).sort();
const HEARTBEAT_MS = 100;
const LEASE_MS = 500;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** What a node asked its workers to do: the shards they own now, and the resets. */
class RecordingRegion implements ClusterRegion {
  owned = new Set<string>();
  resets: string[] = [];
  /** Region time (epoch ms) since which a worker's flush has not committed, or null. */
  flushBlockedSinceMs: number | null = null;

  adoptShards(leases: Map<string, ShardLease>): void {
    for (const key of leases.keys()) this.owned.add(key);
  }
  releaseShards(keys: string[]): Promise<string[]> {
    for (const key of keys) this.owned.delete(key);
    return Promise.resolve([]);
  }
  resetShards(reason: string): void {
    this.owned.clear();
    this.resets.push(reason);
  }
  recordOptOut(): void {}
  refusal() {
    return null;
  }
  markLateness(events: ReadonlyArray<unknown>): boolean[] {
    return events.map(() => false);
  }
  dispatchFamily(): void {}
  health() {
    return { workers: [{ flushBlockedSinceMs: this.flushBlockedSinceMs }] };
  }
}

interface Node {
  id: string;
  node: ClusterNode;
  region: RecordingRegion;
  connections: Redis[];
  /** What the node's ping of PostgreSQL answers. */
  reachable: { value: boolean };
}

async function startNode(
  db: Db,
  prefix: string,
  id: string,
  overrides: Partial<ClusterOptions> = {},
): Promise<Node> {
  const { Redis } = await import("ioredis");
  const redis = new Redis(TEST_REDIS_URL);
  const reader = new Redis(TEST_REDIS_URL);
  const region = new RecordingRegion();
  const reachable = { value: true };
  const node = new ClusterNode({
    nodeId: id,
    keyPrefix: prefix,
    shards: SHARDS,
    leaseMs: LEASE_MS,
    heartbeatMs: HEARTBEAT_MS,
    redis,
    reader,
    region,
    acquire: (keys) => acquireShards(db, keys),
    checkpoints: (keys) => loadCheckpoints(db, keys),
    loadOptOuts: () => Promise.resolve([]),
    storedReceipts: (events) => storedReceipts(db, events),
    canReachDatabase: () => Promise.resolve(reachable.value),
    logger: createLogger("error"),
    ...overrides,
  });
  await node.start();
  return { id, node, region, connections: [redis, reader], reachable };
}

async function stopAll(nodes: Node[]): Promise<void> {
  for (const { node, connections } of nodes) {
    await node.stop(() => Promise.resolve());
    for (const connection of connections) connection.disconnect();
  }
}

/** Waits until `check` holds, or fails with `describe()` after `ms`. */
async function eventually(check: () => boolean, ms: number, describe: () => string) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${describe()}`);
    await delay(20);
  }
}

/** Every shard owned by exactly one node's workers, and held by that node only. */
function isPartitioned(nodes: Node[]): boolean {
  const owners = ALL_KEYS.map((key) => nodes.filter((n) => n.region.owned.has(key)).length);
  const held = ALL_KEYS.map((key) => nodes.filter((n) => n.node.ownedShards.includes(key)).length);
  return owners.every((n) => n === 1) && held.every((n) => n === 1);
}

function describeNodes(nodes: Node[]): string {
  return JSON.stringify(nodes.map((n) => ({
    id: n.id,
    members: n.node.members,
    held: n.node.ownedShards.length,
    owned: n.region.owned.size,
    steppedDown: n.node.isSteppedDown,
  })));
}

test({
  name: "[cluster] nodes with clocks 10 s behind and ahead keep one membership and stable shards",
  ignore,
  fn: () =>
    withMigratedDatabase(undefined, (db) =>
      withRedisPrefix(async (prefix) => {
        const skew = (offsetMs: number) => ({ clock: () => Date.now() + offsetMs });
        const nodes = [
          await startNode(db, prefix, "behind", skew(-10_000)),
          await startNode(db, prefix, "on-time"),
          await startNode(db, prefix, "ahead", skew(10_000)),
        ];
        try {
          await eventually(
            () => nodes.every((n) => n.node.members.length === 3) && isPartitioned(nodes),
            5_000,
            () => describeNodes(nodes),
          );
          const settled = nodes.map((n) => n.node.ownedShards.join());
          // Thirty heartbeats: no member drops out, no shard moves.
          for (let i = 0; i < 30; i++) {
            await delay(HEARTBEAT_MS);
            for (const n of nodes) {
              assert.deepEqual(
                n.node.members,
                ["ahead", "behind", "on-time"],
                describeNodes(nodes),
              );
            }
          }
          assert.deepEqual(nodes.map((n) => n.node.ownedShards.join()), settled);
          assert.ok(isPartitioned(nodes), describeNodes(nodes));
          for (const n of nodes) assert.ok(n.node.ownedShards.length > 0, describeNodes(nodes));
        } finally {
          await stopAll(nodes);
        }
      })),
});

test({
  name: "[cluster] a node whose flushes hang and whose database does not answer gives its shards " +
    "up, and takes them back once it answers",
  ignore,
  fn: () =>
    withMigratedDatabase(undefined, (db) =>
      withRedisPrefix(async (prefix) => {
        const nodes = [await startNode(db, prefix, "a"), await startNode(db, prefix, "b")];
        const [a, b] = nodes;
        try {
          await eventually(() => isPartitioned(nodes), 5_000, () => describeNodes(nodes));
          // A slow flush while the database answers pings is load, not a partition: stay.
          a.region.flushBlockedSinceMs = Date.now() - 2 * LEASE_MS;
          await delay(10 * HEARTBEAT_MS);
          assert.equal(a.node.isSteppedDown, false, describeNodes(nodes));
          assert.ok(a.node.ownedShards.length > 0);
          // Now the database does not answer either: a leaves, b takes every shard.
          a.reachable.value = false;
          await eventually(
            () => a.node.isSteppedDown && b.region.owned.size === ALL_KEYS.length,
            LEASE_MS + 20 * HEARTBEAT_MS,
            () => describeNodes(nodes),
          );
          assert.equal(a.node.ownedShards.length, 0);
          assert.equal(a.region.owned.size, 0, "a's workers dropped their shards");
          assert.match(a.region.resets.join(), /stepping down/);
          assert.deepEqual(b.node.members, ["b"]);
          // The database answers again and a's flushes commit: a rejoins and gets shards back.
          a.reachable.value = true;
          a.region.flushBlockedSinceMs = null;
          await eventually(
            () =>
              !a.node.isSteppedDown && a.region.owned.size > 0 && isPartitioned(nodes) &&
              b.node.members.length === 2,
            5_000,
            () => describeNodes(nodes),
          );
        } finally {
          await stopAll(nodes);
        }
      })),
});

test({
  name:
    "[cluster] shards held but not taken in PostgreSQL are reported stalled until they are taken",
  ignore,
  fn: () =>
    withMigratedDatabase(undefined, (db) =>
      withRedisPrefix(async (prefix) => {
        const failing = { value: true };
        const node = await startNode(db, prefix, "solo", {
          acquire: (keys) =>
            failing.value
              ? Promise.reject(new Error("injected: shard_checkpoints locked"))
              : acquireShards(db, keys),
          stallMs: 3 * HEARTBEAT_MS,
        });
        try {
          await eventually(
            () => node.node.lag.stalledShards.length === ALL_KEYS.length,
            5_000,
            () => JSON.stringify(node.node.lag),
          );
          assert.equal(node.region.owned.size, 0);
          assert.equal(node.node.isSteppedDown, false, "the database answers pings: no step-down");
          failing.value = false;
          await eventually(
            () => node.region.owned.size === ALL_KEYS.length,
            5_000,
            () => describeNodes([node]),
          );
          await eventually(
            () => node.node.lag.stalledShards.length === 0,
            5_000,
            () => JSON.stringify(node.node.lag),
          );
        } finally {
          await stopAll([node]);
        }
      })),
});
