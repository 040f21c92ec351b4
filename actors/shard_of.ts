/**
 * Stable key-to-shard hashing.
 *
 * @module
 */

/**
 * Maps a key to a shard in `[0, shardCount)` with FNV-1a over UTF-16 code units and a murmur3 fmix32
 * finaliser (FNV-1a alone clusters similar keys).
 *
 * Hazard: shards are persisted (checkpoints, and later log partitions). Changing this function or the
 * shard count moves keys between shards and is a data migration, not a refactor.
 */
export function shardOf(key: string, shardCount: number): number {
  if (!Number.isInteger(shardCount) || shardCount <= 0) {
    throw new RangeError(
      `Cannot route key "${key}": shard count must be a positive integer, received ${shardCount}`,
    );
  }
  return hash32(key) % shardCount;
}

/**
 * FNV-1a over UTF-16 code units with a murmur3 fmix32 finaliser, as an unsigned 32-bit integer.
 * Hazard: shard placement and the unique-viewer sketches (`db/hll.ts`) persist what it returns;
 * changing it is a data migration.
 */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Which worker hosts a shard: shards are dealt round-robin so each worker gets a fair share. */
export function workerOfShard(shard: number, workerCount: number): number {
  return shard % workerCount;
}
