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
import { loadOptOuts } from "../../../db/queries.ts";
import type { OptOut } from "../../../rules/mod.ts";
import type { IncomingEvent, Refusal } from "../../region.ts";
import type { EventLog, LogDeps, LogReadiness } from "../mod.ts";
import { ClusterNode } from "./cluster.ts";
import { RedisLog } from "./append.ts";

/** A node of a cluster sharing Redis and PostgreSQL. */
class SharedLog implements EventLog {
  readonly kind = "redis";
  readonly isShared = true;
  #appender: RedisLog;
  #cluster: ClusterNode;
  #connections: Redis[];
  #nodeId: string;

  constructor(appender: RedisLog, cluster: ClusterNode, connections: Redis[], nodeId: string) {
    this.#appender = appender;
    this.#cluster = cluster;
    this.#connections = connections;
    this.#nodeId = nodeId;
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
    return {
      problems: this.#appender.isFailing ? ["redis appends failing"] : [],
      details: {
        node_id: this.#nodeId,
        members: this.#cluster.members,
        owned_shards: this.#cluster.ownedShards.length,
      },
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
export async function openRedisLog(config: Config, deps: LogDeps): Promise<EventLog> {
  const { db, region, logger } = deps;
  const { Redis } = await import("ioredis");
  const connect = async () => {
    const connection = new Redis(config.redis.url, { lazyConnect: true, maxRetriesPerRequest: 2 });
    connection.on(
      "error",
      (error: Error) => logger.warn("Redis connection error", { error: error.message }),
    );
    await connection.connect();
    return connection;
  };
  const redis = await connect();
  const reader = await connect();
  const appender = new RedisLog(region, {
    redis,
    keyPrefix: config.redis.keyPrefix,
    shards: config.shards,
    dedupeTtlMs: config.redis.dedupeTtlMs,
    logger,
  });
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
    logger,
  });
  await cluster.start();
  logger.info(`Joined the cluster as "${config.redis.nodeId}"`, {
    members: cluster.members,
    owned_shards: cluster.ownedShards.length,
  });
  return new SharedLog(appender, cluster, [redis, reader], config.redis.nodeId);
}
