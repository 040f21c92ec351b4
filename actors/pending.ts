/**
 * Building and merging {@link FlushBatch}es: the deltas a worker accumulates between flushes.
 *
 * @module
 */
import { type CountDelta, type FlushBatch, hourOf, KEY_SEP } from "../db/flush_batch.ts";
import { mergeSketch, type SparseSketch } from "../db/hll.ts";
import { type Flag, LEVEL_RANK, mergeFlag } from "../rules/mod.ts";
import { type EntityType, formatShardKey } from "./shard_key.ts";
import { MAX_EVIDENCE_VIEWS } from "../rules/qoe_rule.ts";

/** A batch with nothing in it. */
export function emptyBatch(): FlushBatch {
  return {
    rawEvents: [],
    counters: new Map(),
    facts: new Map(),
    types: new Map(),
    errorCodes: new Map(),
    devices: new Map(),
    viewers: new Map(),
    flaggedEvents: new Map(),
    flags: new Map(),
    risks: new Map(),
    optOuts: [],
    consentLedger: [],
    consentSeen: new Map(),
    consentFacts: new Map(),
    qoe: new Map(),
    qoeStartup: new Map(),
    qoeWindows: new Map(),
    qoeWindowViews: new Map(),
    anomalyCube: new Map(),
    anomalyTitles: new Map(),
    anomalyQoe: new Map(),
    openViews: new Map(),
    checkpoints: new Map(),
    epochs: new Map(),
  };
}

/** True when flushing the batch would write nothing. */
export function isEmptyBatch(b: FlushBatch): boolean {
  return b.rawEvents.length === 0 && b.counters.size === 0 && b.types.size === 0 &&
    b.flags.size === 0 && b.checkpoints.size === 0 && b.optOuts.length === 0 &&
    b.consentLedger.length === 0 && b.consentSeen.size === 0 && b.consentFacts.size === 0 &&
    b.qoe.size === 0 && b.qoeStartup.size === 0 && b.openViews.size === 0 &&
    b.anomalyCube.size === 0 && b.anomalyTitles.size === 0 && b.anomalyQoe.size === 0;
}

/** Adds `n` to a named counter. */
export function addCounter(map: Map<string, number>, key: string, n: number): void {
  map.set(key, (map.get(key) ?? 0) + n);
}

/** Adds a delta to the counters of one key. */
export function addCounts<T extends CountDelta>(
  map: Map<string, T>,
  key: string,
  delta: CountDelta,
  init: () => T,
): void {
  let row = map.get(key);
  if (row === undefined) {
    row = init();
    map.set(key, row);
  }
  row.events += delta.events;
  row.plays += delta.plays;
  row.errors += delta.errors;
  row.watchTimeMs += delta.watchTimeMs;
}

/** A zeroed delta. */
export function zeroCounts(): CountDelta {
  return { events: 0, plays: 0, errors: 0, watchTimeMs: 0 };
}

/** Records a flag, its flagged events in their hour, and the risk level it implies for its entity. */
export function addFlag(b: FlushBatch, flag: Flag): void {
  addCounter(
    b.flaggedEvents,
    hourOf(flag.atMs) + KEY_SEP + flag.rule + KEY_SEP + flag.region,
    flag.flaggedEventCount,
  );
  const existing = b.flags.get(flag.flagKey);
  b.flags.set(flag.flagKey, existing === undefined ? flag : mergeFlag(existing, flag));
  const riskKey = `${flag.entityType}:${flag.entityId}`;
  const risk = b.risks.get(riskKey);
  if (risk === undefined) {
    b.risks.set(riskKey, {
      entityType: flag.entityType,
      entityId: flag.entityId,
      level: flag.level,
      flagCount: 1,
    });
  } else {
    risk.flagCount += 1;
    if (LEVEL_RANK[flag.level] > LEVEL_RANK[risk.level]) risk.level = flag.level;
  }
}

/** Raises a checkpoint to `position` (checkpoints only move forward). */
export function advanceCheckpoint(
  b: FlushBatch,
  family: EntityType,
  shard: number,
  position: number,
): void {
  const key = formatShardKey(family, shard);
  if ((b.checkpoints.get(key) ?? -1) < position) b.checkpoints.set(key, position);
}

/**
 * Folds the newer batch `from` into the older batch `into` (used to put back a batch whose flush
 * failed, so nothing is lost and nothing is counted twice: the failed transaction wrote nothing).
 * Arrays are appended one element at a time: spreading a large array into `push` overflows the stack.
 */
export function mergeBatch(into: FlushBatch, from: FlushBatch): void {
  for (const row of from.rawEvents) into.rawEvents.push(row);
  for (const [k, n] of from.counters) addCounter(into.counters, k, n);
  for (const [k, d] of from.facts) addCounts(into.facts, k, d, zeroCounts);
  for (const [k, d] of from.types) {
    const row = into.types.get(k);
    if (row === undefined) into.types.set(k, { ...d });
    else {
      row.events += d.events;
      row.lateEvents += d.lateEvents;
    }
  }
  for (const [k, n] of from.errorCodes) addCounter(into.errorCodes, k, n);
  for (const [k, d] of from.devices) addCounts(into.devices, k, d, zeroCounts);
  for (const [k, sketch] of from.viewers) {
    let target = into.viewers.get(k);
    if (target === undefined) into.viewers.set(k, target = new Map() as SparseSketch);
    mergeSketch(target, sketch);
  }
  for (const [k, n] of from.flaggedEvents) addCounter(into.flaggedEvents, k, n);
  for (const flag of from.flags.values()) {
    const existing = into.flags.get(flag.flagKey);
    into.flags.set(flag.flagKey, existing === undefined ? flag : mergeFlag(existing, flag));
  }
  for (const [k, r] of from.risks) {
    const risk = into.risks.get(k);
    if (risk === undefined) into.risks.set(k, { ...r });
    else {
      risk.flagCount += r.flagCount;
      if (LEVEL_RANK[r.level] > LEVEL_RANK[risk.level]) risk.level = r.level;
    }
  }
  for (const optOut of from.optOuts) into.optOuts.push(optOut);
  addRows(into.qoe, from.qoe);
  for (const [k, n] of from.qoeStartup) addCounter(into.qoeStartup, k, n);
  // A failed flush must not lose the qoe rule's window counts or their evidence.
  addRows(into.qoeWindows, from.qoeWindows);
  for (const [k, refs] of from.qoeWindowViews) {
    const held = into.qoeWindowViews.get(k) ?? [];
    for (const ref of refs) {
      if (held.length < MAX_EVIDENCE_VIEWS && !held.includes(ref)) held.push(ref);
    }
    into.qoeWindowViews.set(k, held);
  }
  addRows(into.anomalyCube, from.anomalyCube);
  addRows(into.anomalyTitles, from.anomalyTitles);
  addRows(into.anomalyQoe, from.anomalyQoe);
  // The newer state of a TV replaces the older.
  for (const [k, row] of from.openViews) into.openViews.set(k, row);
  for (const row of from.consentLedger) into.consentLedger.push(row);
  for (const [userId, atMs] of from.consentSeen) {
    if ((into.consentSeen.get(userId) ?? -Infinity) < atMs) into.consentSeen.set(userId, atMs);
  }
  for (const [k, d] of from.consentFacts) {
    const row = into.consentFacts.get(k);
    if (row === undefined) into.consentFacts.set(k, { ...d });
    else {
      row.events += d.events;
      row.signalEvents += d.signalEvents;
    }
  }
  for (const [k, p] of from.checkpoints) {
    if ((into.checkpoints.get(k) ?? -1) < p) into.checkpoints.set(k, p);
  }
  for (const [k, e] of from.epochs) into.epochs.set(k, e);
}

/** Adds rows of numbers measure by measure (QoE, `qoe` rule and anomaly deltas). */
function addRows(into: Map<string, number[]>, from: ReadonlyMap<string, number[]>): void {
  for (const [k, d] of from) {
    const row = into.get(k);
    if (row === undefined) into.set(k, [...d]);
    else for (let i = 0; i < d.length; i++) row[i] += d[i];
  }
}
