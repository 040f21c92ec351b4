/**
 * The redis log backend: every event is appended to the stream of its user, content and device shard
 * (`ev:{family}:{shard}`) by one Lua script, which also recognises retries (an id seen within
 * `DEDUPE_TTL_MS`) and appends a duplicate mark instead. The 202 is sent once Redis ran the script,
 * and with `REDIS_WAIT_REPLICAS` set, once that many replicas acknowledged it (`WAIT`).
 *
 * Appends use a connection of their own: `WAIT` blocks the connection it runs on. They are refused
 * (503) while that connection is down and, after every (re)connect, until the stream floors are
 * set: a promoted replica, or a restarted Redis, must hand out stream ids above the committed
 * checkpoints, or owners reading from those checkpoints would skip the new entries.
 *
 * @module
 */
import type { Redis } from "ioredis";
import type { Logger } from "../../../logger.ts";
import type { OptOut } from "../../../rules/mod.ts";
import { type Appender, AppendError } from "../log.ts";
import type { IncomingEvent, Refusal, Region } from "../../region.ts";
import { shardOf } from "../../shard_of.ts";
import { ENTITY_TYPES, formatShardKey } from "../../shard_key.ts";
import { streamIdOfPosition } from "./stream_ids.ts";
import { encodeEntry } from "./entry_codec.ts";

/**
 * Appends a batch atomically. The `#!lua` header makes Redis refuse the whole script up front when
 * it is out of memory (noeviction), so a full Redis answers 503 instead of storing half a batch.
 * ARGV: prefix, dedupe TTL, then per event: id, user shard, content shard, device shard, JSON.
 */
const APPEND_SCRIPT = `#!lua
local prefix = ARGV[1]
local ttl = ARGV[2]
local added = 0
for i = 3, #ARGV, 5 do
  local id = ARGV[i]
  local user = prefix .. 'ev:user:' .. ARGV[i + 1]
  if redis.call('SET', prefix .. 'seen:' .. id, '1', 'NX', 'PX', ttl) then
    redis.call('XADD', user, '*', 'e', ARGV[i + 4])
    redis.call('XADD', prefix .. 'ev:content:' .. ARGV[i + 2], '*', 'e', ARGV[i + 4])
    redis.call('XADD', prefix .. 'ev:device:' .. ARGV[i + 3], '*', 'e', ARGV[i + 4])
    added = added + 1
  else
    redis.call('XADD', user, '*', 'd', ARGV[i + 4])
  end
end
return added`;

/**
 * Raises each stream's last id to at least its floor (ARGV, same order as KEYS), creating the
 * stream if it is gone: `XADD` at the floor then `XDEL`, so nothing is left to read. Returns how
 * many streams it raised.
 */
const FLOOR_SCRIPT = `
local raised = 0
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
for i = 1, #KEYS do
  local fms, fseq = parse(ARGV[i])
  if fms > 0 or fseq > 0 then
    if redis.call('EXISTS', KEYS[i]) == 0 then
      redis.call('XDEL', KEYS[i], redis.call('XADD', KEYS[i], ARGV[i], 'f', ''))
      raised = raised + 1
    else
      local info = redis.call('XINFO', 'STREAM', KEYS[i])
      local last
      for j = 1, #info, 2 do
        if info[j] == 'last-generated-id' then last = info[j + 1] end
      end
      local lms, lseq = parse(last)
      if lms < fms or (lms == fms and lseq < fseq) then
        redis.call('XSETID', KEYS[i], ARGV[i])
        raised = raised + 1
      end
    end
  end
end
return raised`;

/** What appending asks of the region: whether to refuse, and which events are late. */
export type AppendRegion = Pick<Region, "refusal" | "markLateness">;

/** Settings of the redis log. */
export interface RedisLogOptions {
  /** The appends' own connection, opened with `enableOfflineQueue: false`. */
  redis: Redis;
  keyPrefix: string;
  shards: number;
  dedupeTtlMs: number;
  /** Replicas that must acknowledge an append before its 202 (`WAIT`); 0 does not wait. */
  waitReplicas: number;
  waitTimeoutMs: number;
  /** Committed checkpoint (a stream position) of every shard stream, `family:shard` keys. */
  checkpoints(): Promise<Map<string, number>>;
  /** A different Redis server answers than before (failover or restart): start over. */
  onServerChanged(runId: string): void;
  logger: Logger;
}

/** A write Redis ran but fewer replicas than `REDIS_WAIT_REPLICAS` acknowledged in time. */
export class NotReplicatedError extends Error {
  override name = "NotReplicatedError";
}

/** Appends to Redis Streams; owners read the streams (see `ClusterNode`). */
export class RedisLog implements Appender {
  readonly kind = "redis";
  #region: AppendRegion;
  #o: RedisLogOptions;
  #isFailing = false;
  #lastFailureLogMs = 0;
  /** The connection is up and the stream floors are set since it came up. */
  #isOpen = false;
  #runId: string | null = null;
  /** Writes sent on the connection so far, and the last `WAIT` with how many writes it covers. */
  #writes = 0;
  #lastWait: { covers: number; acked: Promise<number> } | null = null;

  constructor(region: AppendRegion, options: RedisLogOptions) {
    this.#region = region;
    this.#o = options;
  }

  /** Sets the stream floors once the connection is ready; resolves when appends are open. */
  async #open(): Promise<void> {
    const info = await this.#o.redis.info("server");
    const runId = /run_id:(\w+)/.exec(info)?.[1] ?? "unknown";
    if (this.#runId !== null && runId !== this.#runId) {
      this.#o.logger.warn("Another Redis server answers (failover or restart): starting over", {
        run_id: runId,
      });
      this.#o.onServerChanged(runId);
    }
    this.#runId = runId;
    const checkpoints = await this.#o.checkpoints();
    const keys: string[] = [];
    const floors: string[] = [];
    for (const family of ENTITY_TYPES) {
      for (let shard = 0; shard < this.#o.shards; shard++) {
        keys.push(`${this.#o.keyPrefix}ev:${family}:${shard}`);
        floors.push(streamIdOfPosition(checkpoints.get(formatShardKey(family, shard)) ?? 0));
      }
    }
    const raised = await this.#o.redis.eval(FLOOR_SCRIPT, keys.length, ...keys, ...floors);
    if (Number(raised) > 0) {
      this.#o.logger.warn(`Raised ${raised} stream ids to their committed checkpoints`);
    }
    this.#isOpen = this.#o.redis.status === "ready";
  }

  /** Opens appends now, and again after every reconnect. */
  async start(): Promise<void> {
    await this.#open();
    this.#o.redis.on("close", () => (this.#isOpen = false));
    this.#o.redis.on("ready", () => {
      this.#open().catch((error) =>
        this.#o.logger.warn("Cannot set the stream floors; appends wait for the next connect", {
          error: error instanceof Error ? error.message : String(error),
        })
      );
    });
  }

  refusal(): Refusal | null {
    return this.#isOpen ? this.#region.refusal() : "log_unavailable";
  }

  /** Whether the last append failed (Redis down or full), for readiness. */
  get isFailing(): boolean {
    return this.#isFailing;
  }

  async append(events: IncomingEvent[]): Promise<void> {
    const late = this.#region.markLateness(events);
    const args: Array<string | number> = [this.#o.keyPrefix, this.#o.dedupeTtlMs];
    events.forEach((event, i) => {
      args.push(
        event.eventId,
        shardOf(event.userId, this.#o.shards),
        shardOf(event.contentId, this.#o.shards),
        shardOf(event.deviceId, this.#o.shards),
        encodeEntry({ ...event, isLate: late[i] }),
      );
    });
    try {
      if (!this.#isOpen) throw new Error("the Redis connection is not open");
      await this.#write(() => this.#o.redis.eval(APPEND_SCRIPT, 0, ...args));
      this.#isFailing = false;
    } catch (cause) {
      this.#isFailing = true;
      const now = Date.now();
      if (now - this.#lastFailureLogMs > 1_000) {
        this.#lastFailureLogMs = now;
        this.#o.logger.warn(`Cannot append ${events.length} events to Redis: answering 503`, {
          error: cause instanceof Error ? cause.message : String(cause),
        });
      }
      throw new AppendError(
        cause instanceof NotReplicatedError
          ? `Cannot store events: ${cause.message}`
          : "Cannot store events: the log (Redis) is unavailable or full",
        { cause },
      );
    }
  }

  /**
   * Runs one write, then waits for the replicas when asked to. One `WAIT` covers every write sent
   * before it on this connection, so concurrent appends share it.
   */
  async #write(write: () => Promise<unknown>): Promise<void> {
    const mine = ++this.#writes;
    await write();
    const n = this.#o.waitReplicas;
    if (n === 0) return;
    let wait = this.#lastWait;
    if (wait === null || wait.covers < mine) {
      wait = {
        covers: this.#writes,
        acked: this.#o.redis.wait(n, this.#o.waitTimeoutMs) as Promise<number>,
      };
      this.#lastWait = wait;
    }
    const acked = await wait.acked;
    if (acked < n) {
      throw new NotReplicatedError(
        `${acked} of ${n} Redis replicas acknowledged within ${this.#o.waitTimeoutMs} ms ` +
          "(REDIS_WAIT_REPLICAS)",
      );
    }
  }

  /**
   * Puts a privacy request into the user's stream, so the owner applies it in order with that user's
   * events wherever the owner runs.
   */
  async recordOptOut(userId: string, optOut: OptOut): Promise<void> {
    const stream = `${this.#o.keyPrefix}ev:user:${shardOf(userId, this.#o.shards)}`;
    if (!this.#isOpen) throw new AppendError("Cannot record the request: Redis is not connected");
    await this.#write(() =>
      this.#o.redis.xadd(stream, "*", "o", JSON.stringify({ userId, optOut }))
    );
  }
}
