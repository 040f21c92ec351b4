/**
 * Shard keys: an entity type (the family of actors: user, content, device) and a shard number,
 * written `"user:17"` wherever a string is needed (checkpoint rows, Redis stream and lease names,
 * map keys). Every place that builds or splits one goes through here.
 *
 * @module
 */

/** The kinds of entity the actors keep state for; each has its own shards. */
export const ENTITY_TYPES = ["user", "content", "device"] as const;
/** One of {@link ENTITY_TYPES}. */
export type EntityType = typeof ENTITY_TYPES[number];

/** A shard of one entity type. */
export interface ShardKey {
  entityType: EntityType;
  shard: number;
}

/** `"user:17"` for the user shard 17. */
export function formatShardKey(entityType: EntityType, shard: number): string {
  return `${entityType}:${shard}`;
}

/** Splits `"user:17"`; throws on anything else, naming the key. */
export function parseShardKey(key: string): ShardKey {
  const match = /^(user|content|device):(\d{1,9})$/.exec(key);
  if (match === null) {
    throw new Error(`Cannot parse shard key "${key}": expected <user|content|device>:<shard>`);
  }
  return { entityType: match[1] as EntityType, shard: Number(match[2]) };
}
