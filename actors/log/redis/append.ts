/**
 * The redis log backend: every event is appended to the stream of its user, content and device shard
 * (`ev:{family}:{shard}`) by one Lua script, which also recognises retries (an id seen within
 * `DEDUPE_TTL_MS`) and appends a duplicate mark instead. The 202 is sent once Redis ran the script.
 *
 * @module
 */
import type { Redis } from "ioredis";
import type { Logger } from "../../../logger.ts";
import type { OptOut } from "../../../rules/mod.ts";
import { type Appender, AppendError } from "../log.ts";
import type { IncomingEvent, Refusal, Region } from "../../region.ts";
import { shardOf } from "../../shard_of.ts";

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

/** Settings of the redis log. */
export interface RedisLogOptions {
  redis: Redis;
  keyPrefix: string;
  shards: number;
  dedupeTtlMs: number;
  logger: Logger;
}

/** Appends to Redis Streams; owners read the streams (see `ClusterNode`). */
export class RedisLog implements Appender {
  readonly kind = "redis";
  #region: Region;
  #o: RedisLogOptions;
  #isFailing = false;
  #lastFailureLogMs = 0;

  constructor(region: Region, options: RedisLogOptions) {
    this.#region = region;
    this.#o = options;
  }

  refusal(): Refusal | null {
    return this.#region.refusal();
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
        JSON.stringify({ ...event, isLate: late[i] }),
      );
    });
    try {
      await this.#o.redis.eval(APPEND_SCRIPT, 0, ...args);
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
      throw new AppendError("Cannot store events: the log (Redis) is unavailable or full", {
        cause,
      });
    }
  }

  /**
   * Puts a privacy request into the user's stream, so the owner applies it in order with that user's
   * events wherever the owner runs.
   */
  async recordOptOut(userId: string, optOut: OptOut): Promise<void> {
    const stream = `${this.#o.keyPrefix}ev:user:${shardOf(userId, this.#o.shards)}`;
    await this.#o.redis.xadd(stream, "*", "o", JSON.stringify({ userId, optOut }));
  }
}
