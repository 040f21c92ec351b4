/**
 * Rendezvous (highest random weight) placement of shards on nodes: every node computes the same owner
 * from the same member list, and a join or leave moves only the shards of that node.
 *
 * @module
 */
import { shardOf } from "../../shard_of.ts";

const FULL_RANGE = 0x1_0000_0000;

/** The node that should own `key` among `nodes` (ties broken by node id); undefined if none. */
export function ownerOf(key: string, nodes: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const node of nodes) {
    // shardOf's hash has an fmix32 finaliser: FNV-1a alone put every shard on one node.
    const score = shardOf(`${node}|${key}`, FULL_RANGE);
    if (score > bestScore || (score === bestScore && best !== undefined && node < best)) {
      best = node;
      bestScore = score;
    }
  }
  return best;
}
