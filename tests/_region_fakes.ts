/**
 * Fakes for the region's collaborators, shared by the region and supervisor tests: a shard store
 * over memory, a logger that keeps its entries, region settings for small test regions, and a wait
 * for what the workers do on their own threads.
 *
 * @module
 */
import type { Logger, LogLevel } from "../logger.ts";
import { DEFAULT_THRESHOLDS, type OptOut, type TelemetryEvent } from "../rules/mod.ts";
import type { ShardLease } from "../actors/protocol.ts";
import type { RegionOptions, ShardStore } from "../actors/region_types.ts";

/** Shard ownership over memory: every key is leased at position 0 under epoch 1. */
export class MemoryShardStore implements ShardStore {
  readonly acquired: string[][] = [];
  readonly log: TelemetryEvent[] = [];
  optOuts: Array<[string, OptOut]> = [];
  /** How many of the next `acquire` calls fail, as while the database is down. */
  failingAcquires = 0;
  /** Set: `readLog` fails with it. */
  readLogError: Error | null = null;

  acquire(keys: string[]): Promise<Map<string, ShardLease>> {
    this.acquired.push(keys);
    if (this.failingAcquires > 0) {
      this.failingAcquires--;
      return Promise.reject(new Error("Cannot acquire shards: database unavailable"));
    }
    return Promise.resolve(new Map(keys.map((key) => [key, { position: 0, epoch: 1 }])));
  }

  readLog(after: number, through: number, limit: number): Promise<TelemetryEvent[]> {
    if (this.readLogError !== null) return Promise.reject(this.readLogError);
    const entries = this.log.filter((e) => e.position > after && e.position <= through);
    return Promise.resolve(entries.slice(0, limit));
  }

  lastPosition(): Promise<number> {
    return Promise.resolve(this.log.at(-1)?.position ?? 0);
  }

  loadOptOuts(): Promise<Array<[string, OptOut]>> {
    return Promise.resolve(this.optOuts);
  }
}

/** A logger that keeps its entries instead of writing them (errors are expected in these tests). */
export class MemoryLogger implements Logger {
  readonly entries: Array<[LogLevel, string]> = [];
  debug = (message: string) => this.log("debug", message);
  info = (message: string) => this.log("info", message);
  warn = (message: string) => this.log("warn", message);
  error = (message: string) => this.log("error", message);
  log(level: LogLevel, message: string): void {
    this.entries.push([level, message]);
  }
  /** Whether an entry of `level` matches `pattern`. */
  has(level: LogLevel, pattern: RegExp): boolean {
    return this.entries.some(([l, m]) => l === level && pattern.test(m));
  }
}

/** Settings of a small test region (memory log, PGlite-style writes) over `store` and `logger`. */
export function testRegionOptions(
  sizes: { workers: number; shards: number },
  store: ShardStore,
  logger: Logger,
): RegionOptions {
  return {
    workers: sizes.workers,
    shards: sizes.shards,
    batchDelayMs: 1,
    maxInFlightBatches: 64,
    maxPendingEvents: 100_000,
    allowedLatenessMs: 600_000,
    maxIdleMs: 60_000,
    maxSegmentMs: 4 * 3_600_000,
    dedupeMaxIds: 100_000,
    thresholds: DEFAULT_THRESHOLDS,
    databaseUrl: undefined,
    writeBatch: () => Promise.resolve(),
    firstPosition: 1,
    shardStore: store,
    isLogDurable: false,
    logger,
  };
}

/** Waits until `check` holds, polling every 10 ms; throws naming `what` after `ms`. */
export async function until(what: string, check: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
