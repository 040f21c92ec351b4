/**
 * One node of a cluster sharing Redis and PostgreSQL (`QUEUE=redis`). Membership by heartbeat,
 * placement by rendezvous hashing, ownership by lease (`SET NX PX`) plus a PostgreSQL epoch that
 * fences a stale owner's flush. The node reads the streams of the shards its workers own from their
 * checkpoints, hands shards over cooperatively when members change, and trims streams only up to
 * committed checkpoints.
 *
 * What keeps every shard applied by exactly one live node, whatever fails:
 * - The heartbeat (membership and lease renewal) touches Redis only and never waits for
 *   PostgreSQL, so a slow database cannot get a node pruned; member scores and the pruning cut-off
 *   come from Redis's clock (`TIME`), so a node's own clock cannot prune the others or itself.
 * - A lease is held in Redis; a shard is applied only once its lease is held *and* the worker has
 *   taken it with a fresh epoch ("adopted"). A shard whose worker lost it (fenced, reset, restarted)
 *   is adopted again only after its lease is confirmed in Redis, retried every heartbeat until it
 *   works, and not read meanwhile; a lease found lost is let go of.
 * - A node that cannot commit (a worker's flush failing or hanging for `LEASE_MS`, or its own
 *   PostgreSQL calls as long) and whose ping of PostgreSQL gets no answer within `LEASE_MS / 2`
 *   steps down: it leaves the membership, frees its leases and drops its shards, so the others take
 *   them over; it rejoins once PostgreSQL answers again. A slow flush with the database there is
 *   load, not a partition, and keeps the node in.
 * - Lag is measured every few steps: a held shard not adopted, or with entries waiting and its
 *   checkpoint unmoved, for `stallMs` is reported stalled (`/readyz`, `/metrics`).
 *
 * @module
 */
import type { Redis } from "ioredis";
import type { Logger } from "../../../logger.ts";
import type { OptOut, TelemetryEvent } from "../../../rules/mod.ts";
import type { DuplicateMark, ShardLease, WorkerStatus } from "../../protocol.ts";
import type { Refusal } from "../../region.ts";
import type { EntityType } from "../../shard_key.ts";
import { ownerOf } from "./rendezvous.ts";
import { decodeEntry, userIdOfEntry } from "./entry_codec.ts";
import { positionOfStreamId, streamIdOfPosition } from "./stream_ids.ts";
import { ENTITY_TYPES, formatShardKey, parseShardKey } from "../../shard_key.ts";

/**
 * Heartbeat: scores this node with Redis's own clock, prunes members not seen for `ARGV[2]` ms of
 * that clock, and returns the members with the clock (ms) as the last element.
 */
const HEARTBEAT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local members = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
table.insert(members, tostring(now))
return members`;

/**
 * Entries read per stream at a time (up to 192k entries a read with 64 shards). 2,000 held 3.3 GB
 * at peak in the bench; 300 and 500 read no faster than 1,000 and cost more round trips.
 */
const READ_COUNT = 1_000;

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

/** What the cluster node asks of the region (the router of this node's workers). */
export interface ClusterRegion {
  adoptShards(leases: Map<string, ShardLease>): void;
  releaseShards(keys: string[]): Promise<string[]>;
  resetShards(reason: string): void;
  recordOptOut(userId: string, optOut: OptOut): void;
  refusal(): Refusal | null;
  markLateness(events: ReadonlyArray<{ atMs: number; receivedAtMs: number }>): boolean[];
  dispatchFamily(family: EntityType, events: TelemetryEvent[], duplicates?: DuplicateMark[]): void;
  health(): { workers: ReadonlyArray<Pick<WorkerStatus, "flushBlockedSinceMs">> };
}

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
  region: ClusterRegion;
  /** Takes shards in PostgreSQL (epoch + 1) and returns their checkpoints and epochs. */
  acquire(keys: string[]): Promise<Map<string, ShardLease>>;
  /** Committed checkpoints of the given shards, for trimming and lag. */
  checkpoints(keys: string[]): Promise<Map<string, number>>;
  /** Privacy requests on record, re-sent to workers when they adopt shards. */
  loadOptOuts(): Promise<Array<[string, OptOut]>>;
  /**
   * Receive times (epoch ms) of already stored events among these. An entry whose event is
   * stored with another receive time is a retry that arrived after the append script forgot the
   * id (`DEDUPE_TTL_MS`): it is counted as a duplicate, not again.
   */
  storedReceipts(
    events: ReadonlyArray<{ eventId: string; atMs: number }>,
  ): Promise<Map<string, number>>;
  /** Resolves true when PostgreSQL answers soon enough (the caller bounds it: LEASE_MS / 2). */
  canReachDatabase(): Promise<boolean>;
  /**
   * This node's clock, for its own durations only (how long flushes have failed, how long a
   * shard has not moved): membership never reads it. Tests skew it.
   */
  clock?: () => number;
  /** A shard whose checkpoint has not moved for this long while its stream has entries is stalled. */
  stallMs?: number;
  logger: Logger;
}

/** One entry of a stream, parsed. */
type Entry =
  | { kind: "event"; event: TelemetryEvent }
  | { kind: "duplicate"; mark: DuplicateMark }
  | { kind: "optOut"; userId: string; optOut: OptOut };

/** What one XREAD brought: per stream, the entries after `fromId` through `lastId`. */
interface StreamRead {
  pages: Array<{
    key: string;
    /** The shard's generation when the read was issued. */
    generation: number;
    fromId: string;
    lastId: string;
    entries: Entry[];
  }>;
}

/** A shard whose lease this node holds. */
interface Held {
  lastId: string;
  /** Bumped when the cursor is reset, so a read issued before the reset is discarded. */
  generation: number;
  /** The worker has taken it with the current epoch: its stream is read and applied. */
  isAdopted: boolean;
  /** This node's time when the shard became held but not adopted (null while adopted). */
  unadoptedSinceMs: number | null;
}

/** Lag of the shards this node holds, as `/readyz` and `/metrics` report it. */
export interface ClusterLag {
  /** Entries left in held streams (above the trimmed checkpoints). */
  lagEvents: number;
  /**
   * Held shards that are not being applied: not adopted for `stallMs`, or with entries left and a
   * checkpoint unmoved for `stallMs`.
   */
  stalledShards: string[];
}

/** Membership, shard ownership and stream reading of this node. */
export class ClusterNode {
  #o: ClusterOptions;
  #held = new Map<string, Held>();
  /** Ownership work (PostgreSQL, workers), one step at a time, apart from the heartbeat. */
  #chain: Promise<void> = Promise.resolve();
  #isOwnershipRunning = false;
  #timer: ReturnType<typeof setInterval> | null = null;
  #isBeating = false;
  #reading: Promise<void> | null = null;
  #isStopped = false;
  #ticks = 0;
  #members: string[] = [];
  #nextGeneration = 1;
  /** Stepped down because it cannot flush: no heartbeat, no leases, until PostgreSQL answers. */
  #isSteppedDown = false;
  /** This node's time of the first of the PostgreSQL calls in a row that failed, or null. */
  #dbFailingSinceMs: number | null = null;
  /** Start times (this node's) of the PostgreSQL calls still running. */
  #dbCalls = new Set<{ startedMs: number }>();
  #isWatching = false;
  #lag: ClusterLag = { lagEvents: 0, stalledShards: [] };
  /** Per held shard: the checkpoint last seen and since when (this node's time). */
  #progress = new Map<string, { position: number; sinceMs: number }>();

  constructor(options: ClusterOptions) {
    this.#o = options;
  }

  /** Live members as last seen, including this node (empty while stepped down). */
  get members(): readonly string[] {
    return this.#members;
  }

  /** Shards this node holds a lease on now. */
  get ownedShards(): string[] {
    return [...this.#held.keys()].sort();
  }

  /** True while the node has stepped down because it cannot flush. */
  get isSteppedDown(): boolean {
    return this.#isSteppedDown;
  }

  /** Lag and stalled shards as of the last check (every few heartbeats). */
  get lag(): ClusterLag {
    return this.#lag;
  }

  #now(): number {
    return (this.#o.clock ?? Date.now)();
  }

  /** Joins the cluster: first heartbeat and ownership step now, then every heartbeat. */
  async start(): Promise<void> {
    await this.#heartbeat();
    await this.#enqueueOwnership();
    this.#timer = setInterval(() => {
      this.#heartbeat().then(() => this.#enqueueOwnership()).catch((error) =>
        this.#o.logger.warn("Cluster heartbeat failed", { error: describe(error) })
      );
      // Apart from the ownership steps, which can hang on a silent database themselves.
      void this.#watchFlushes();
    }, this.#o.heartbeatMs);
    this.#reading = this.#readLoop().catch((error) =>
      this.#o.logger.error("Stream reader stopped", { error: describe(error) })
    );
  }

  /**
   * A worker lost shards (fenced flush, reset, restart): they are no longer applied here. Those
   * still held are adopted again by the next ownership step, once their lease is confirmed.
   */
  onShardsLost(keys: string[]): void {
    const nowMs = this.#now();
    for (const key of keys) {
      const held = this.#held.get(key);
      if (held === undefined || !held.isAdopted) continue;
      held.isAdopted = false;
      held.unadoptedSinceMs = nowMs;
      // A read issued before is not ours to apply any more.
      held.generation = this.#nextGeneration++;
    }
    void this.#enqueueOwnership();
  }

  /**
   * Redis is another server now (a promoted replica, a restart): what the workers applied may rest
   * on entries that are gone. They drop every shard unflushed, and each held shard is adopted
   * again from its committed checkpoint.
   */
  startOver(reason: string): void {
    const nowMs = this.#now();
    for (const held of this.#held.values()) {
      held.isAdopted = false;
      held.unadoptedSinceMs = nowMs;
      held.generation = this.#nextGeneration++;
    }
    this.#o.region.resetShards(reason);
    void this.#enqueueOwnership();
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
    await this.#releaseLeases([...this.#held.keys()]);
    this.#held.clear();
    await this.#o.redis.zrem(this.#key("members"), this.#o.nodeId);
  }

  /**
   * Membership and lease renewal, Redis only. Renewal keeps every held lease; one found lost is
   * let go of (its worker state is fenced in PostgreSQL anyway).
   */
  async #heartbeat(): Promise<void> {
    if (this.#isStopped || this.#isBeating) return;
    this.#isBeating = true;
    try {
      if (this.#isSteppedDown) {
        this.#members = [];
        return;
      }
      const reply = await this.#o.redis.eval(
        HEARTBEAT_SCRIPT,
        1,
        this.#key("members"),
        this.#o.nodeId,
        3 * this.#o.heartbeatMs,
        "1",
      ) as string[];
      const members = reply.slice(0, -1).sort();
      if (members.join() !== this.#members.join()) {
        this.#o.logger.info("Cluster members changed", { members });
      }
      this.#members = members;
      const held = [...this.#held.keys()];
      if (held.length === 0) return;
      const lost = await this.#o.redis.eval(
        RENEW_SCRIPT,
        held.length,
        ...held.map((key) => this.#leaseKey(key)),
        this.#o.nodeId,
        this.#o.leaseMs,
      ) as string[];
      if (lost.length > 0) {
        const keys = lost.map((leaseKey) => leaseKey.slice(this.#key("lease:").length));
        this.#o.logger.warn(`Lost ${keys.length} shard leases (paused or cut off too long?)`, {
          keys,
        });
        this.#forget(keys);
      }
    } finally {
      this.#isBeating = false;
    }
  }

  /** Drops held shards: not read any more, and the workers let go of them. */
  #forget(keys: string[]): void {
    const adopted = keys.filter((key) => this.#held.get(key)?.isAdopted === true);
    for (const key of keys) {
      this.#held.delete(key);
      this.#progress.delete(key);
    }
    if (adopted.length > 0) {
      // The worker flushes what it has; if another owner took the shard, that flush is fenced.
      this.#o.region.releaseShards(adopted).catch((error) =>
        this.#o.logger.warn("Cannot release lost shards", { error: describe(error) })
      );
    }
  }

  /** Runs one ownership step after the current one, unless one is already waiting. */
  #enqueueOwnership(): Promise<void> {
    if (this.#isOwnershipRunning) return this.#chain;
    this.#isOwnershipRunning = true;
    this.#chain = this.#chain.then(() => this.#ownership()).catch((error) =>
      this.#o.logger.warn("Cluster ownership step failed", { error: describe(error) })
    ).finally(() => (this.#isOwnershipRunning = false));
    return this.#chain;
  }

  /**
   * One ownership step: step down or rejoin; hand over shards that belong to another member; take
   * the ones that belong here (lease first, then PostgreSQL); adopt again what a worker lost; and
   * now and then trim the streams and measure the lag.
   */
  async #ownership(): Promise<void> {
    if (this.#isStopped) return;
    if (this.#isSteppedDown) {
      if (await this.#o.canReachDatabase()) {
        this.#isSteppedDown = false;
        this.#dbFailingSinceMs = null;
        this.#o.logger.info("PostgreSQL answers again: rejoining the cluster");
      }
      return;
    }
    const members = this.#members;
    if (!members.includes(this.#o.nodeId)) return;
    const desired = new Set<string>();
    for (const family of ENTITY_TYPES) {
      for (let shard = 0; shard < this.#o.shards; shard++) {
        const key = formatShardKey(family, shard);
        if (ownerOf(key, members) === this.#o.nodeId) desired.add(key);
      }
    }
    // Hand over shards that now belong to another node: flush them, then free the lease.
    const handOver = [...this.#held.keys()].filter((key) => !desired.has(key));
    if (handOver.length > 0) {
      const adopted = handOver.filter((key) => this.#held.get(key)!.isAdopted);
      for (const key of handOver) {
        this.#held.delete(key);
        this.#progress.delete(key);
      }
      const errors = adopted.length === 0 ? [] : await this.#o.region.releaseShards(adopted);
      await this.#releaseLeases(handOver);
      this.#o.logger.info(`Handed over ${handOver.length} shards`, { errors });
    }
    // Take the shards that belong here whose previous owner let go (or whose lease expired).
    const wanted = [...desired].filter((key) => !this.#held.has(key));
    if (wanted.length > 0) {
      const pipeline = this.#o.redis.pipeline();
      for (const key of wanted) {
        pipeline.set(this.#leaseKey(key), this.#o.nodeId, "PX", this.#o.leaseMs, "NX");
      }
      const results = (await pipeline.exec())!;
      const nowMs = this.#now();
      for (const [i, key] of wanted.entries()) {
        if (results[i][0] !== null || results[i][1] !== "OK") continue;
        this.#held.set(key, {
          lastId: "0-0",
          generation: this.#nextGeneration++,
          isAdopted: false,
          unadoptedSinceMs: nowMs,
        });
      }
    }
    await this.#adoptHeld();
    if (++this.#ticks % 4 === 0) await this.#trimAndMeasure();
  }

  /**
   * Adopts every held shard its worker does not own: confirms the leases in Redis (renewing
   * them), then takes them in PostgreSQL with a new epoch and hands them to the workers. A
   * failure leaves them unadopted for the next step; nothing is read from them meanwhile.
   */
  async #adoptHeld(): Promise<void> {
    const unadopted = [...this.#held.entries()].filter(([, h]) => !h.isAdopted).map(([k]) => k);
    if (unadopted.length === 0) return;
    const lost = await this.#o.redis.eval(
      RENEW_SCRIPT,
      unadopted.length,
      ...unadopted.map((key) => this.#leaseKey(key)),
      this.#o.nodeId,
      this.#o.leaseMs,
    ) as string[];
    const lostKeys = new Set(lost.map((leaseKey) => leaseKey.slice(this.#key("lease:").length)));
    if (lostKeys.size > 0) this.#forget([...lostKeys]);
    const keys = unadopted.filter((key) => !lostKeys.has(key));
    if (keys.length === 0) return;
    let leases: Map<string, ShardLease>;
    let optOuts: Array<[string, OptOut]>;
    try {
      leases = await this.#db(() => this.#o.acquire(keys));
      optOuts = await this.#db(() => this.#o.loadOptOuts());
    } catch (error) {
      this.#o.logger.warn(`Cannot take ${keys.length} shards in PostgreSQL; retrying`, {
        error: describe(error),
      });
      return;
    }
    for (const [userId, optOut] of optOuts) this.#o.region.recordOptOut(userId, optOut);
    // A lease lost while PostgreSQL answered is not adopted: the next heartbeat lets it go.
    const stillHeld = new Map([...leases].filter(([key]) => this.#held.has(key)));
    this.#o.region.adoptShards(stillHeld);
    for (const [key, lease] of stillHeld) {
      this.#held.set(key, {
        lastId: streamIdOfPosition(lease.position),
        generation: this.#nextGeneration++,
        isAdopted: true,
        unadoptedSinceMs: null,
      });
    }
    this.#o.logger.info(`Adopted ${stillHeld.size} shards`, { node: this.#o.nodeId });
  }

  /** Runs a PostgreSQL call, keeping track of how long calls have been failing or hanging. */
  async #db<T>(call: () => Promise<T>): Promise<T> {
    const running = { startedMs: this.#now() };
    this.#dbCalls.add(running);
    try {
      const result = await call();
      this.#dbFailingSinceMs = null;
      return result;
    } catch (error) {
      this.#dbFailingSinceMs ??= running.startedMs;
      throw error;
    } finally {
      this.#dbCalls.delete(running);
    }
  }

  /** Since when PostgreSQL calls have been failing or hanging (the earliest), or null. */
  #dbBlockedSinceMs(): number | null {
    let since = this.#dbFailingSinceMs;
    for (const { startedMs } of this.#dbCalls) since = Math.min(since ?? startedMs, startedMs);
    return since;
  }

  /**
   * Steps down when nothing has committed for `LEASE_MS` (a worker's flushes failing or hanging,
   * or PostgreSQL failing or hanging in the ownership steps) and PostgreSQL does not answer a
   * ping within `LEASE_MS` either: a slow flush under load, with the database there, is no reason.
   */
  async #watchFlushes(): Promise<void> {
    if (this.#isStopped || this.#isSteppedDown || this.#isWatching) return;
    const nowMs = this.#now();
    const blockedFor = (since: number | null) => since !== null && nowMs - since >= this.#o.leaseMs;
    const isBlocked = blockedFor(this.#dbBlockedSinceMs()) ||
      this.#o.region.health().workers.some((w) => blockedFor(w.flushBlockedSinceMs));
    if (!isBlocked) return;
    this.#isWatching = true;
    try {
      if (!(await this.#o.canReachDatabase()) && !this.#isStopped) await this.#stepDown();
    } catch (error) {
      this.#o.logger.warn("Cannot step down", { error: describe(error) });
    } finally {
      this.#isWatching = false;
    }
  }

  /**
   * Leaves the membership and frees every lease at once, and the workers drop their shards
   * without flushing: the members left take the shards over from the committed checkpoints,
   * instead of waiting for this node's database to come back.
   */
  async #stepDown(): Promise<void> {
    this.#o.logger.warn(
      `Cannot flush for ${this.#o.leaseMs} ms: leaving the cluster until PostgreSQL answers`,
      { shards: this.#held.size },
    );
    this.#isSteppedDown = true;
    const keys = [...this.#held.keys()];
    this.#held.clear();
    this.#progress.clear();
    this.#members = [];
    this.#o.region.resetShards("stepping down: cannot flush");
    await this.#o.redis.zrem(this.#key("members"), this.#o.nodeId);
    await this.#releaseLeases(keys);
  }

  async #releaseLeases(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    const leases = keys.map((key) => this.#leaseKey(key));
    await this.#o.redis.eval(RELEASE_SCRIPT, leases.length, ...leases, this.#o.nodeId);
  }

  /**
   * Trims held streams up to their committed checkpoints (never further: unread entries stay),
   * then measures what is left in them and which shards are not moving.
   */
  async #trimAndMeasure(): Promise<void> {
    const keys = [...this.#held.keys()];
    const nowMs = this.#now();
    const stallMs = this.#o.stallMs ?? 5 * this.#o.leaseMs;
    if (keys.length === 0) {
      this.#lag = { lagEvents: 0, stalledShards: [] };
      return;
    }
    const checkpoints = await this.#db(() => this.#o.checkpoints(keys));
    const pipeline = this.#o.redis.pipeline();
    for (const key of keys) {
      const position = checkpoints.get(key) ?? 0;
      // MINID keeps ids at or above it: the checkpointed entry itself is applied, so it goes too.
      if (position > 0) {
        pipeline.xtrim(this.#streamKey(key), "MINID", streamIdOfPosition(position + 1));
      }
      pipeline.xlen(this.#streamKey(key));
    }
    const results = (await pipeline.exec())!;
    let index = 0;
    let lagEvents = 0;
    const stalled: string[] = [];
    for (const key of keys) {
      const position = checkpoints.get(key) ?? 0;
      // Each key queued an XTRIM when its checkpoint is above 0, then always an XLEN.
      if (position > 0) index++;
      const length = Number(results[index++]?.[1] ?? 0);
      lagEvents += length;
      const held = this.#held.get(key);
      if (held === undefined) continue;
      const seen = this.#progress.get(key);
      if (seen === undefined || seen.position !== position) {
        this.#progress.set(key, { position, sinceMs: nowMs });
      } else if (length > 0 && nowMs - seen.sinceMs >= stallMs) {
        stalled.push(key);
        continue;
      }
      if (!held.isAdopted && nowMs - (held.unadoptedSinceMs ?? nowMs) >= stallMs) stalled.push(key);
    }
    this.#lag = { lagEvents, stalledShards: stalled.sort() };
  }

  /**
   * Reads the adopted shards' streams and hands their entries to the workers, two reads deep: the
   * next page is read from Redis while the current one's events are looked up in PostgreSQL. A
   * page is applied only if it starts where its shard's cursor is now, so a page read ahead of a
   * failed lookup, a hand-over or a re-adoption is dropped and read again.
   */
  async #readLoop(): Promise<void> {
    let ahead: Promise<StreamRead | null> | null = null;
    while (!this.#isStopped) {
      const read = await (ahead ?? this.#read(new Map()));
      ahead = null;
      if (read === null) continue;
      ahead = this.#read(new Map(read.pages.map((page) => [page.key, page.lastId])));
      let stored: Map<string, number>;
      try {
        // An event sits in its user, title and TV streams: look each one up once.
        const events = new Map<string, TelemetryEvent>();
        for (const page of read.pages) {
          for (const e of page.entries) {
            if (e.kind === "event") events.set(e.event.eventId, e.event);
          }
        }
        stored = await this.#db(() => this.#o.storedReceipts([...events.values()]));
      } catch (error) {
        // Nothing was applied and no cursor moved: the same entries are read again.
        await ahead;
        ahead = null;
        if (this.#isStopped) return;
        this.#o.logger.warn("Cannot check stream entries against stored events; retrying", {
          error: describe(error),
        });
        await new Promise((resolve) => setTimeout(resolve, 500));
        continue;
      }
      for (const page of read.pages) {
        const held = this.#held.get(page.key);
        // Let go of, lost by its worker, re-adopted or not continuing the cursor: not ours.
        if (
          held === undefined || !held.isAdopted || held.generation !== page.generation ||
          held.lastId !== page.fromId
        ) continue;
        this.#dispatch(page.key, page.entries, stored);
        held.lastId = page.lastId;
      }
    }
  }

  /**
   * One XREAD of every adopted shard, from `from` where given (the page read before this one
   * ends there), else from its cursor; null when there is nothing to read or the workers are too
   * far behind (after a short wait).
   */
  async #read(from: Map<string, string>): Promise<StreamRead | null> {
    // Only shards the workers own: a held but unadopted shard's entries wait in Redis.
    const keys = [...this.#held.entries()].filter(([, h]) => h.isAdopted).map(([k]) => k);
    const refusal = this.#o.region.refusal();
    // Backpressure: while workers hold too much unflushed work (or cannot flush), stop reading;
    // the backlog waits in Redis instead of in memory.
    if (keys.length === 0 || (refusal !== null && refusal !== "draining")) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      return null;
    }
    const cursors = keys.map((key) => {
      const held = this.#held.get(key)!;
      return { key, generation: held.generation, fromId: from.get(key) ?? held.lastId };
    });
    let result: Array<[string, Array<[string, string[]]>]> | null;
    try {
      result = await this.#o.reader.xread(
        "COUNT",
        READ_COUNT,
        "BLOCK",
        200,
        "STREAMS",
        ...cursors.map((c) => this.#streamKey(c.key)),
        ...cursors.map((c) => c.fromId),
      ) as Array<[string, Array<[string, string[]]>]> | null;
    } catch (error) {
      if (this.#isStopped) return null;
      this.#o.logger.warn("Stream read failed; retrying", { error: describe(error) });
      await new Promise((resolve) => setTimeout(resolve, 500));
      return null;
    }
    const byKey = new Map(cursors.map((c) => [c.key, c]));
    return {
      pages: (result ?? []).map(([stream, entries]) => {
        const key = stream.slice(this.#key("ev:").length);
        const cursor = byKey.get(key)!;
        return {
          key,
          generation: cursor.generation,
          fromId: cursor.fromId,
          lastId: entries[entries.length - 1][0],
          entries: this.#parse(stream, entries),
        };
      }),
    };
  }

  #parse(stream: string, entries: Array<[string, string[]]>): Entry[] {
    const parsed: Entry[] = [];
    for (const [id, fields] of entries) {
      try {
        const position = positionOfStreamId(id);
        const [field, value] = fields;
        if (field === "e") {
          parsed.push({ kind: "event", event: decodeEntry(value, position) });
        } else if (field === "d") {
          const userId = userIdOfEntry(value);
          if (userId === undefined) throw new TypeError("a duplicate mark without a user id");
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
