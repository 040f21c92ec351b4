/**
 * The redis backend as one {@link EventLog}: appends through the Lua script (`log.ts`), shard
 * ownership and stream reading by the cluster node (`cluster.ts`), over two Redis connections (one
 * for commands, one reserved for blocking reads).
 *
 * @module
 */
import type { Redis } from "ioredis";
import type { Config } from "../../../config.ts";
import { acquireShards, loadCheckpoints, storedReceipts } from "../../../db/log_store.ts";
import { loadOptOuts, pingDatabase } from "../../../db/queries.ts";
import type { OptOut } from "../../../rules/mod.ts";
import type { IncomingEvent, Refusal } from "../../region.ts";
import type { ErasedEntries, EventLog, LogDeps, LogReadiness, LogTraits } from "../log.ts";
import { ENTITY_TYPES, formatShardKey } from "../../shard_key.ts";
import { ClusterNode } from "./cluster.ts";
import { positionOfStreamId } from "./stream_ids.ts";
import { userIdOfEntry } from "./entry_codec.ts";
import { RedisLog } from "./append.ts";

/** A node of a cluster sharing Redis and PostgreSQL. */
class SharedLog implements EventLog {
  readonly traits: LogTraits;
  #appender: RedisLog;
  #cluster: ClusterNode;
  #connections: Redis[];
  #nodeId: string;

  #eraseEntries: (userId: string) => Promise<ErasedEntries>;

  get kind(): string {
    return this.traits.kind;
  }

  constructor(
    traits: LogTraits,
    appender: RedisLog,
    cluster: ClusterNode,
    connections: Redis[],
    nodeId: string,
    eraseEntries: (userId: string) => Promise<ErasedEntries>,
  ) {
    this.traits = traits;
    this.#appender = appender;
    this.#cluster = cluster;
    this.#connections = connections;
    this.#nodeId = nodeId;
    this.#eraseEntries = eraseEntries;
  }

  eraseUser(userId: string): Promise<ErasedEntries> {
    return this.#eraseEntries(userId);
  }

  refusal(): Refusal | null {
    return this.#appender.refusal();
  }

  append(events: IncomingEvent[]): Promise<void> {
    return this.#appender.append(events);
  }

  recordOptOut(userId: string, optOut: OptOut): Promise<void> {
    return this.#appender.recordOptOut(userId, optOut);
  }

  readiness(): LogReadiness {
    const { lagEvents, stalledShards } = this.#cluster.lag;
    const isSteppedDown = this.#cluster.isSteppedDown;
    const problems: string[] = [];
    if (this.#appender.isFailing) problems.push("redis appends failing");
    if (isSteppedDown) problems.push("stepped down from the cluster: cannot reach PostgreSQL");
    if (stalledShards.length > 0) {
      problems.push(`${stalledShards.length} held shards not moving: ${stalledShards.join(", ")}`);
    }
    return {
      problems,
      details: {
        node_id: this.#nodeId,
        members: this.#cluster.members,
        owned_shards: this.#cluster.ownedShards.length,
        lag_events: lagEvents,
        stalled_shards: stalledShards,
      },
      cluster: { lagEvents, stalledShards: stalledShards.length, isSteppedDown },
    };
  }

  async drain(drainRegion: () => Promise<void>): Promise<void> {
    await this.#cluster.stop(drainRegion);
  }

  close(): void {
    for (const connection of this.#connections) connection.disconnect();
  }

  onShardsLost(keys: string[]): void {
    this.#cluster.onShardsLost(keys);
  }
}

/** Connects to Redis and joins the cluster; resolves once this node took its first shards. */
export async function openRedisLog(
  config: Config,
  deps: LogDeps,
  traits: LogTraits,
): Promise<EventLog> {
  const { db, region, logger } = deps;
  const { Redis } = await import("ioredis");
  const connect = async (options: { enableOfflineQueue?: boolean } = {}) => {
    const connection = new Redis(config.redis.url, {
      lazyConnect: true,
      maxRetriesPerRequest: 2,
      ...options,
    });
    connection.on(
      "error",
      (error: Error) => logger.warn("Redis connection error", { error: error.message }),
    );
    await connection.connect();
    return connection;
  };
  const redis = await connect();
  const reader = await connect();
  // Appends fail at once (503) while Redis is away, instead of queueing behind a reconnect.
  const appends = await connect({ enableOfflineQueue: false });
  const allKeys = ENTITY_TYPES.flatMap((type) =>
    Array.from({ length: config.shards }, (_, shard) => formatShardKey(type, shard))
  );
  // The appender is built before the cluster node it may have to restart, so it reaches it late.
  const late: { cluster?: ClusterNode } = {};
  const appender = new RedisLog(region, {
    redis: appends,
    keyPrefix: config.redis.keyPrefix,
    shards: config.shards,
    dedupeTtlMs: config.redis.dedupeTtlMs,
    waitReplicas: config.redis.waitReplicas,
    waitTimeoutMs: config.redis.waitTimeoutMs,
    checkpoints: () => loadCheckpoints(db, allKeys),
    onServerChanged: (runId) => late.cluster?.startOver(`Redis is another server now (${runId})`),
    logger,
  });
  await appender.start();
  const cluster = new ClusterNode({
    nodeId: config.redis.nodeId,
    keyPrefix: config.redis.keyPrefix,
    shards: config.shards,
    leaseMs: config.redis.leaseMs,
    heartbeatMs: config.redis.heartbeatMs,
    redis,
    reader,
    region,
    acquire: (keys) => acquireShards(db, keys),
    checkpoints: (keys) => loadCheckpoints(db, keys),
    loadOptOuts: () => loadOptOuts(db),
    storedReceipts: (ids) => storedReceipts(db, ids),
    canReachDatabase: () => answersWithin(pingDatabase(db), config.redis.leaseMs / 2),
    logger,
  });
  late.cluster = cluster;
  await cluster.start();
  logger.info(`Joined the cluster as "${config.redis.nodeId}"`, {
    members: cluster.members,
    owned_shards: cluster.ownedShards.length,
  });
  const eraseEntries = (userId: string) =>
    eraseStreamEntries(
      redis,
      config.redis.keyPrefix,
      config.shards,
      userId,
      (keys) => loadCheckpoints(db, keys),
    );
  return new SharedLog(
    traits,
    appender,
    cluster,
    [redis, reader, appends],
    config.redis.nodeId,
    eraseEntries,
  );
}

/**
 * Deletes a user's entries (events, duplicate marks, privacy requests) from every shard stream,
 * wherever the shard is owned. Events and duplicate marks go only at or below the stream's
 * checkpoint: above it they are not applied yet by their shard, and stay for the next pass.
 */
export async function eraseStreamEntries(
  redis: Redis,
  keyPrefix: string,
  shards: number,
  userId: string,
  checkpointsOf: (keys: string[]) => Promise<Map<string, number>>,
): Promise<ErasedEntries> {
  const keys = ENTITY_TYPES.flatMap((type) =>
    Array.from({ length: shards }, (_, shard) => formatShardKey(type, shard))
  );
  const checkpoints = await checkpointsOf(keys);
  let deleted = 0;
  let left = 0;
  for (const key of keys) {
    const stream = `${keyPrefix}ev:${key}`;
    const checkpoint = checkpoints.get(key) ?? 0;
    let start = "-";
    for (;;) {
      const page = await redis.xrange(stream, start, "+", "COUNT", 1_000);
      const mine: string[] = [];
      for (const [id, fields] of page) {
        if (!isUsersEntry(fields, userId)) continue;
        // A privacy request entry carries no counts and never moves a checkpoint: once the
        // erasure's passes run (after the owners had time to read it), it goes at once.
        if (fields[0] === "o" || positionOfStreamId(id) <= checkpoint) mine.push(id);
        else left++;
      }
      if (mine.length > 0) deleted += await redis.xdel(stream, ...mine);
      if (page.length < 1_000) break;
      start = `(${page[page.length - 1][0]}`;
    }
  }
  return { deleted, left };
}

/** True when `work` resolves within `ms`; false when it fails or takes longer. */
async function answersWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([work.then(() => true, () => false), late]);
  } finally {
    clearTimeout(timer);
  }
}

function isUsersEntry(fields: string[], userId: string): boolean {
  const value = fields[1];
  // Cheap test first: most entries do not even contain the id.
  if (value === undefined || !value.includes(JSON.stringify(userId).slice(1, -1))) return false;
  try {
    return userIdOfEntry(value) === userId;
  } catch {
    return false; // an unreadable entry is skipped by readers too
  }
}
