/**
 * One node of a cluster sharing Redis and PostgreSQL (`QUEUE=redis`). Membership by heartbeat,
 * placement by rendezvous hashing, ownership by lease (`SET NX PX`) plus a PostgreSQL epoch that
 * fences a stale owner's flush. The node reads the streams of the shards it owns from their
 * checkpoints, hands shards over cooperatively when members change, and trims streams only up to
 * committed checkpoints.
 *
 * @module
 */
import type { Redis } from "ioredis";
import type { Logger } from "../../../logger.ts";
import type { OptOut, TelemetryEvent } from "../../../rules/mod.ts";
import type { DuplicateMark, ShardLease } from "../../protocol.ts";
import type { IncomingEvent, Region } from "../../region.ts";
import { ownerOf } from "./rendezvous.ts";
import { positionOfStreamId, streamIdOfPosition } from "./stream_ids.ts";
import { ENTITY_TYPES, formatShardKey, parseShardKey } from "../../shard_key.ts";

/** Renews the leases this node holds; returns the keys whose lease it no longer holds. */
const RENEW_SCRIPT = `
local lost = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    table.insert(lost, KEYS[i])
  end
end
return lost`;

/** Deletes leases only if this node still holds them. */
const RELEASE_SCRIPT = `
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 0`;

/** What the cluster node needs. */
export interface ClusterOptions {
  nodeId: string;
  keyPrefix: string;
  shards: number;
  leaseMs: number;
  heartbeatMs: number;
  /** Connection for commands. */
  redis: Redis;
  /** Connection reserved for blocking stream reads (a blocking XREAD holds its connection). */
  reader: Redis;
  region: Region;
  /** Takes shards in PostgreSQL (epoch + 1) and returns their checkpoints and epochs. */
  acquire(keys: string[]): Promise<Map<string, ShardLease>>;
  /** Committed checkpoints of the given shards, for trimming. */
  checkpoints(keys: string[]): Promise<Map<string, number>>;
  /** Privacy requests on record, re-sent to workers when they adopt shards. */
  loadOptOuts(): Promise<Array<[string, OptOut]>>;
  /**
   * Receive times (epoch ms) of already stored events among these ids. An entry whose id is stored
   * with another receive time is a retry that arrived after the append script forgot the id
   * (`DEDUPE_TTL_MS`): it is counted as a duplicate, not again.
   */
  storedReceipts(
    events: ReadonlyArray<{ eventId: string; atMs: number }>,
  ): Promise<Map<string, number>>;
  logger: Logger;
}

/** One stream entry, parsed. */
type Entry =
  | { kind: "event"; event: TelemetryEvent }
  | { kind: "duplicate"; mark: DuplicateMark }
  | { kind: "optOut"; userId: string; optOut: OptOut };

interface ReadCursor {
  lastId: string;
  /** Bumped when the cursor is reset, so a read issued before the reset is discarded. */
  generation: number;
}

/** Membership, shard ownership and stream reading of this node. */
export class ClusterNode {
  #o: ClusterOptions;
  /** Shards this node holds a lease on and reads, with their stream cursors. */
  #cursors = new Map<string, ReadCursor>();
  #chain: Promise<void> = Promise.resolve();
  #timer: ReturnType<typeof setInterval> | null = null;
  #reading: Promise<void> | null = null;
  #isStopped = false;
  #ticks = 0;
  #members: string[] = [];
  /** Source of cursor generations; never reused, so a read issued before any reset is recognised. */
  #nextGeneration = 1;

  constructor(options: ClusterOptions) {
    this.#o = options;
  }

  /** Live members as last seen, including this node. */
  get members(): readonly string[] {
    return this.#members;
  }

  /** Shards this node owns now. */
  get ownedShards(): string[] {
    return [...this.#cursors.keys()].sort();
  }

  /** Joins the cluster: first ownership round now, then one per heartbeat, and starts reading. */
  async start(): Promise<void> {
    await this.#serialised(() => this.#round());
    this.#timer = setInterval(() => {
      this.#serialised(() => this.#round()).catch((error) =>
        this.#o.logger.error("Cluster round failed", { error: describe(error) })
      );
    }, this.#o.heartbeatMs);
    this.#reading = this.#readLoop().catch((error) =>
      this.#o.logger.error("Stream reader stopped", { error: describe(error) })
    );
  }

  /**
   * Called when a worker lost its shards (fenced flush or restart): shards this node still leases are
   * taken again with a new epoch and read again from their committed checkpoints.
   */
  onShardsLost(keys: string[]): void {
    this.#serialised(async () => {
      const stillOurs = keys.filter((key) => this.#cursors.has(key));
      if (stillOurs.length === 0) return;
      await this.#adopt(stillOurs);
    }).catch((error) =>
      this.#o.logger.error("Cannot re-acquire shards", { keys, error: describe(error) })
    );
  }

  /** Leaves the cluster: stops reading, lets the caller drain, then gives every lease back. */
  async stop(drain: () => Promise<void>): Promise<void> {
    this.#isStopped = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    await this.#chain;
    // Unblock the reader's XREAD BLOCK at once instead of waiting for its timeout.
    this.#o.reader.disconnect();
    await this.#reading;
    await drain();
    const leases = [...this.#cursors.keys()].map((key) => this.#leaseKey(key));
    if (leases.length > 0) {
      await this.#o.redis.eval(RELEASE_SCRIPT, leases.length, ...leases, this.#o.nodeId);
    }
    await this.#o.redis.zrem(this.#key("members"), this.#o.nodeId);
    this.#cursors.clear();
  }

  #serialised(work: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(work);
    // The caller handles `next`'s failure; the chain itself must survive it for the next round.
    this.#chain = next.catch((error) =>
      this.#o.logger.debug("Cluster step failed", { error: describe(error) })
    );
    return next;
  }

  /** One heartbeat: refresh membership, renew, hand over, acquire, and now and then trim. */
  async #round(): Promise<void> {
    if (this.#isStopped) return;
    const redis = this.#o.redis;
    const now = Date.now();
    const membersKey = this.#key("members");
    const deadline = now - 3 * this.#o.heartbeatMs;
    const [, , members] = (await redis.multi()
      .zadd(membersKey, now, this.#o.nodeId)
      .zremrangebyscore(membersKey, "-inf", deadline)
      .zrangebyscore(membersKey, deadline, "+inf")
      .exec())!.map(([error, value]) => {
        if (error !== null) throw error;
        return value;
      }) as [unknown, unknown, string[]];
    members.sort();
    if (members.join() !== this.#members.join()) {
      this.#o.logger.info("Cluster members changed", { members });
    }
    this.#members = members;

    const desired = new Set<string>();
    for (const family of ENTITY_TYPES) {
      for (let shard = 0; shard < this.#o.shards; shard++) {
        const key = formatShardKey(family, shard);
        if (ownerOf(key, members) === this.#o.nodeId) desired.add(key);
      }
    }

    // Renew what we hold; a lease we lost (we were paused) is dropped: our unflushed deltas for it
    // are fenced in PostgreSQL, the worker resets and the new owner replays.
    const held = [...this.#cursors.keys()];
    if (held.length > 0) {
      const lost = await redis.eval(
        RENEW_SCRIPT,
        held.length,
        ...held.map((key) => this.#leaseKey(key)),
        this.#o.nodeId,
        this.#o.leaseMs,
      ) as string[];
      if (lost.length > 0) {
        const keys = lost.map((leaseKey) => leaseKey.slice(this.#key("lease:").length));
        this.#o.logger.warn(`Lost ${keys.length} shard leases (paused too long?)`, { keys });
        for (const key of keys) this.#cursors.delete(key);
        await this.#o.region.releaseShards(keys);
      }
    }

    // Hand over shards that now belong to another node: flush them, then free the lease.
    const handOver = [...this.#cursors.keys()].filter((key) => !desired.has(key));
    if (handOver.length > 0) {
      for (const key of handOver) this.#cursors.delete(key);
      const errors = await this.#o.region.releaseShards(handOver);
      const leases = handOver.map((key) => this.#leaseKey(key));
      await redis.eval(RELEASE_SCRIPT, leases.length, ...leases, this.#o.nodeId);
      this.#o.logger.info(`Handed over ${handOver.length} shards`, { errors });
    }

    // Take shards that belong to us and whose previous owner let go (or whose lease expired).
    const wanted = [...desired].filter((key) => !this.#cursors.has(key));
    if (wanted.length > 0) {
      const pipeline = redis.pipeline();
      for (const key of wanted) {
        pipeline.set(this.#leaseKey(key), this.#o.nodeId, "PX", this.#o.leaseMs, "NX");
      }
      const results = (await pipeline.exec())!;
      const won = wanted.filter((_, i) => results[i][0] === null && results[i][1] === "OK");
      if (won.length > 0) await this.#adopt(won);
    }

    if (++this.#ticks % 10 === 0) await this.#trim();
  }

  /** Takes shards in PostgreSQL and gives them to the workers; reading starts at the checkpoints. */
  async #adopt(keys: string[]): Promise<void> {
    const leases = await this.#o.acquire(keys);
    const optOuts = await this.#o.loadOptOuts();
    for (const [userId, optOut] of optOuts) this.#o.region.recordOptOut(userId, optOut);
    this.#o.region.adoptShards(leases);
    for (const [key, lease] of leases) {
      const generation = this.#nextGeneration++;
      this.#cursors.set(key, { lastId: streamIdOfPosition(lease.position), generation });
    }
    this.#o.logger.info(`Adopted ${keys.length} shards`, { node: this.#o.nodeId });
  }

  /** Trims owned streams up to their committed checkpoints (never further: unread entries stay). */
  async #trim(): Promise<void> {
    const keys = [...this.#cursors.keys()];
    if (keys.length === 0) return;
    const checkpoints = await this.#o.checkpoints(keys);
    const pipeline = this.#o.redis.pipeline();
    for (const [key, position] of checkpoints) {
      if (position > 0) pipeline.xtrim(this.#streamKey(key), "MINID", streamIdOfPosition(position));
    }
    await pipeline.exec();
  }

  async #readLoop(): Promise<void> {
    while (!this.#isStopped) {
      const keys = [...this.#cursors.keys()];
      const refusal = this.#o.region.refusal();
      // Backpressure: while workers hold too much unflushed work (or cannot flush), stop reading;
      // the backlog waits in Redis instead of in memory.
      if (keys.length === 0 || (refusal !== null && refusal !== "draining")) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      const issued = new Map(keys.map((key) => [key, this.#cursors.get(key)!.generation]));
      let result: Array<[string, Array<[string, string[]]>]> | null;
      try {
        result = await this.#o.reader.xread(
          "COUNT",
          2_000,
          "BLOCK",
          200,
          "STREAMS",
          ...keys.map((key) => this.#streamKey(key)),
          ...keys.map((key) => this.#cursors.get(key)!.lastId),
        ) as Array<[string, Array<[string, string[]]>]> | null;
      } catch (error) {
        if (this.#isStopped) return;
        this.#o.logger.warn("Stream read failed; retrying", { error: describe(error) });
        await new Promise((resolve) => setTimeout(resolve, 500));
        continue;
      }
      const pages = (result ?? []).map(([stream, entries]) => ({
        key: stream.slice(this.#key("ev:").length),
        lastId: entries[entries.length - 1][0],
        entries: this.#parse(stream, entries),
      }));
      let stored: Map<string, number>;
      try {
        stored = await this.#o.storedReceipts(
          pages.flatMap((p) => p.entries.flatMap((e) => e.kind === "event" ? [e.event] : [])),
        );
      } catch (error) {
        // Nothing was applied and no cursor moved: the same entries are read again.
        if (this.#isStopped) return;
        this.#o.logger.warn("Cannot check stream entries against stored events; retrying", {
          error: describe(error),
        });
        await new Promise((resolve) => setTimeout(resolve, 500));
        continue;
      }
      for (const page of pages) {
        const cursor = this.#cursors.get(page.key);
        // Released or reset while the read was in flight: these entries are not ours to apply.
        if (cursor === undefined || cursor.generation !== issued.get(page.key)) continue;
        this.#dispatch(page.key, page.entries, stored);
        cursor.lastId = page.lastId;
      }
    }
  }

  #parse(stream: string, entries: Array<[string, string[]]>): Entry[] {
    const parsed: Entry[] = [];
    for (const [id, fields] of entries) {
      try {
        const position = positionOfStreamId(id);
        const [field, value] = fields;
        if (field === "e") {
          const incoming = JSON.parse(value) as IncomingEvent & { isLate: boolean };
          parsed.push({ kind: "event", event: { ...incoming, position } });
        } else if (field === "d") {
          const { userId } = JSON.parse(value) as IncomingEvent;
          parsed.push({ kind: "duplicate", mark: { userId, position } });
        } else if (field === "o") {
          const { userId, optOut } = JSON.parse(value) as { userId: string; optOut: OptOut };
          parsed.push({ kind: "optOut", userId, optOut });
        }
      } catch (error) {
        // One unreadable entry must not stop the shard (or crash every node that takes it over):
        // it is skipped, and said so.
        this.#o.logger.error(`Skipped unreadable entry "${id}" of stream "${stream}"`, {
          error: describe(error),
        });
      }
    }
    return parsed;
  }

  #dispatch(key: string, entries: Entry[], stored: Map<string, number>): void {
    const family = parseShardKey(key).entityType;
    let events: TelemetryEvent[] = [];
    let duplicates: DuplicateMark[] = [];
    const flush = () => {
      this.#o.region.markLateness(events.filter((e) => !e.isLate));
      this.#o.region.dispatchFamily(family, events, duplicates);
      events = [];
      duplicates = [];
    };
    for (const entry of entries) {
      if (entry.kind === "event") {
        const { event } = entry;
        const receivedAtMs = stored.get(event.eventId);
        if (receivedAtMs === undefined || Math.abs(receivedAtMs - event.receivedAtMs) < 1) {
          events.push(event);
        } else if (family === "user") {
          // A retry stored before: the user family counts it as a duplicate, the others skip it.
          duplicates.push({ userId: event.userId, position: event.position });
        }
      } else if (entry.kind === "duplicate") {
        duplicates.push(entry.mark);
      } else {
        // Events before the request must reach the worker first: it flags only what follows.
        flush();
        this.#o.region.recordOptOut(entry.userId, entry.optOut);
      }
    }
    flush();
  }

  #key(name: string): string {
    return `${this.#o.keyPrefix}${name}`;
  }

  #leaseKey(key: string): string {
    return this.#key(`lease:${key}`);
  }

  #streamKey(key: string): string {
    return this.#key(`ev:${key}`);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
