import assert from "node:assert/strict";
import type { Flag } from "../rules/mod.ts";
import { makeEvent, T0, testConfig } from "../tests/fixtures.ts";
import { emptyBatch } from "./pending.ts";
import { type QualityEvent, QualityFamily, type QualityFamilyOptions } from "./quality_family.ts";
import { shardOf } from "./shard_of.ts";

const SHARDS = 8;
const WINDOW = 300_000;
const NOW = 1_000;

/**
 * A content family that judges windows of at least 4 events with more than 50% errors; errors from
 * one device are enough unless `qualityMinDevices` is given.
 */
function family(
  overrides: Partial<QualityFamilyOptions> = {},
  qualityMinDevices = 1,
): QualityFamily {
  return new QualityFamily({
    family: "content",
    shardCount: SHARDS,
    dedupeIdsPerShard: 1000,
    thresholds: {
      ...testConfig().thresholds,
      qualityMinEvents: 4,
      qualityMaxErrorRate: 0.5,
      qualityMinDevices,
    },
    onRuleError: (rule, event, error) => {
      throw new Error(`Rule "${rule}" failed on "${event.eventId}"`, { cause: error });
    },
    ...overrides,
  });
}

let seq = 0;
function play(overrides: Partial<QualityEvent> = {}): QualityEvent {
  seq++;
  return makeEvent({ eventId: `q-${seq}`, position: seq, type: "PLAY", ...overrides });
}

function error(overrides: Partial<QualityEvent> = {}): QualityEvent {
  return play({ type: "ERROR", errorCode: "DRM_LICENSE_FAILED", ...overrides });
}

function onlyFlag(batch: ReturnType<typeof emptyBatch>): Flag {
  assert.equal(batch.flags.size, 1);
  return [...batch.flags.values()][0];
}

Deno.test("QualityFamily.apply() does not flag a window below the minimum events", () => {
  const contents = family();
  const batch = emptyBatch();
  for (let i = 0; i < 3; i++) contents.apply(error({ atMs: T0 + i }), NOW, batch);
  assert.equal(batch.flags.size, 0);
});

Deno.test("QualityFamily.apply() flags once the minimum is reached with a rate above threshold", () => {
  const contents = family();
  const batch = emptyBatch();
  contents.apply(error({ atMs: T0 }), NOW, batch);
  contents.apply(error({ atMs: T0 + 1, errorCode: null }), NOW, batch);
  contents.apply(play({ atMs: T0 + 2 }), NOW, batch);
  assert.equal(batch.flags.size, 0);
  const fourth = error({ atMs: T0 + 3 });
  contents.apply(fourth, NOW, batch);
  const flag = onlyFlag(batch);
  assert.equal(flag.flagKey, `content_quality:content:content-1:${T0}`);
  assert.equal(flag.level, "HIGH");
  assert.equal(flag.eventId, fourth.eventId);
  assert.deepEqual(flag.evidence.observed, {
    events: 4,
    errors: 3,
    error_rate: 0.75,
    errors_by_code: { DRM_LICENSE_FAILED: 2, UNKNOWN: 1 },
    error_devices: 1,
  });
  assert.equal(flag.evidence.event_ids.length, 3);
  assert.equal(flag.evidence.event_ids[2], fourth.eventId);
});

Deno.test("QualityFamily.apply() counts further events over the threshold into the same flag", () => {
  const contents = family();
  const batch = emptyBatch();
  for (let i = 0; i < 3; i++) contents.apply(error({ atMs: T0 + i }), NOW, batch);
  contents.apply(play({ atMs: T0 + 3 }), NOW, batch); // 3/4 errors
  contents.apply(play({ atMs: T0 + 4 }), NOW, batch); // 3/5 errors
  contents.apply(play({ atMs: T0 + 5 }), NOW, batch); // 3/6 = threshold: no longer over it
  const flag = onlyFlag(batch);
  assert.equal(flag.flaggedEventCount, 2);
  assert.equal(flag.evidence.observed["events"], 5, "the evidence is the latest snapshot");
});

Deno.test("QualityFamily.apply() gives the next window its own counts and flag key", () => {
  const contents = family();
  const batch = emptyBatch();
  for (let i = 0; i < 4; i++) contents.apply(error({ atMs: T0 + i }), NOW, batch);
  for (let i = 0; i < 3; i++) contents.apply(error({ atMs: T0 + WINDOW + i }), NOW, batch);
  assert.equal(batch.flags.size, 1, "3 events in the second window are below the minimum");
  contents.apply(error({ atMs: T0 + 2 * WINDOW - 1 }), NOW, batch);
  const keys = [...batch.flags.keys()].sort();
  assert.deepEqual(keys, [
    `content_quality:content:content-1:${T0}`,
    `content_quality:content:content-1:${T0 + WINDOW}`,
  ]);
  const second = batch.flags.get(`content_quality:content:content-1:${T0 + WINDOW}`);
  assert.deepEqual(second?.evidence.window, {
    start: "2026-11-23T12:05:00.000Z",
    end: "2026-11-23T12:10:00.000Z",
  });
});

Deno.test("QualityFamily.apply() keeps separate windows per content", () => {
  const contents = family();
  const batch = emptyBatch();
  for (let i = 0; i < 2; i++) contents.apply(error({ contentId: "a", atMs: T0 + i }), NOW, batch);
  for (let i = 0; i < 2; i++) contents.apply(error({ contentId: "b", atMs: T0 + i }), NOW, batch);
  assert.equal(batch.flags.size, 0);
});

Deno.test("QualityFamily.apply() keys a device family by device id", () => {
  const devices = family({ family: "device" });
  const batch = emptyBatch();
  for (let i = 0; i < 4; i++) {
    devices.apply(error({ deviceId: "tv-9", contentId: `c-${i}`, atMs: T0 + i }), NOW, batch);
  }
  const flag = onlyFlag(batch);
  assert.equal(flag.flagKey, `content_quality:device:tv-9:${T0}`);
  assert.equal(flag.entityType, "device");
  assert.equal(flag.entityId, "tv-9");
  assert.equal(batch.checkpoints.get(`device:${shardOf("tv-9", SHARDS)}`), seq);
});

Deno.test("QualityFamily.apply() ignores late events", () => {
  const contents = family();
  const batch = emptyBatch();
  for (let i = 0; i < 3; i++) contents.apply(error({ atMs: T0 + i }), NOW, batch);
  contents.apply(error({ atMs: T0 + 3, isLate: true }), NOW, batch);
  assert.equal(batch.flags.size, 0);
  contents.apply(error({ atMs: T0 + 4 }), NOW, batch);
  assert.equal(onlyFlag(batch).evidence.observed["events"], 4);
});

Deno.test("QualityFamily.apply() ignores duplicate event ids", () => {
  const contents = family();
  const batch = emptyBatch();
  const event = error({ atMs: T0 });
  for (let i = 0; i < 4; i++) contents.apply({ ...event }, NOW, batch);
  assert.equal(batch.flags.size, 0);
});

Deno.test("QualityFamily.apply() advances the content shard checkpoint to the highest position", () => {
  const contents = family();
  const batch = emptyBatch();
  contents.apply(play({ eventId: "a", position: 7 }), NOW, batch);
  contents.apply(play({ eventId: "b", position: 4 }), NOW, batch);
  contents.apply(play({ eventId: "a", position: 11 }), NOW, batch);
  assert.deepEqual(batch.checkpoints, new Map([[`content:${shardOf("content-1", SHARDS)}`, 11]]));
});

Deno.test("QualityFamily.prune() drops windows that ended before the horizon", () => {
  const pruned = family();
  const kept = family();
  for (const contents of [pruned, kept]) {
    for (let i = 0; i < 3; i++) contents.apply(error({ atMs: T0 + i }), NOW, emptyBatch());
  }
  pruned.prune(T0 + WINDOW + 1);
  kept.prune(T0);
  const afterPrune = emptyBatch();
  const afterKeep = emptyBatch();
  pruned.apply(error({ atMs: T0 + 10 }), NOW, afterPrune);
  kept.apply(error({ atMs: T0 + 10 }), NOW, afterKeep);
  assert.equal(afterPrune.flags.size, 0, "counts restarted at 1 after the window was pruned");
  assert.equal(onlyFlag(afterKeep).evidence.observed["events"], 4);
});

Deno.test("QualityFamily.prune() keeps windows that end after the horizon", () => {
  const contents = family();
  for (let i = 0; i < 3; i++) contents.apply(error({ atMs: T0 + i }), NOW, emptyBatch());
  contents.prune(T0 + WINDOW - 1);
  const batch = emptyBatch();
  contents.apply(error({ atMs: T0 + 10 }), NOW, batch);
  assert.equal(onlyFlag(batch).evidence.observed["events"], 4);
});

Deno.test("QualityFamily.passivate() evicts idle entities only", () => {
  const contents = family();
  contents.apply(play({ contentId: "idle" }), 1_000, emptyBatch());
  contents.apply(play({ contentId: "busy" }), 5_000, emptyBatch());
  assert.equal(contents.entityCount, 2);
  assert.equal(contents.passivate(2_000), 0, "open windows keep entities");
  contents.prune(T0 + 3_600_000);
  assert.equal(contents.passivate(2_000), 1);
  assert.equal(contents.entityCount, 1);
  assert.equal(contents.passivate(2_000), 0);
});

Deno.test("QualityFamily.passivate() forgets an evicted entity's window counts", () => {
  const contents = family();
  for (let i = 0; i < 3; i++) contents.apply(error({ atMs: T0 + i }), 1_000, emptyBatch());
  contents.prune(T0 + 3_600_000);
  assert.equal(contents.passivate(2_000), 1);
  const batch = emptyBatch();
  contents.apply(error({ atMs: T0 + 10 }), 3_000, batch);
  assert.equal(batch.flags.size, 0);
  assert.equal(contents.entityCount, 1);
});

Deno.test("QualityFamily.apply() leaves non-playback events such as LOGIN out of the window", () => {
  const contents = family();
  const batch = emptyBatch();
  for (let i = 0; i < 3; i++) contents.apply(error({ atMs: T0 + i }), NOW, batch);
  for (let i = 0; i < 5; i++) {
    contents.apply(play({ type: "LOGIN", atMs: T0 + 10 + i }), NOW, batch);
  }
  assert.equal(batch.flags.size, 0, "3 playback events are below the minimum of 4");
  contents.apply(error({ atMs: T0 + 20 }), NOW, batch);
  assert.deepEqual(onlyFlag(batch).evidence.observed, {
    events: 4,
    errors: 4,
    error_rate: 1,
    errors_by_code: { DRM_LICENSE_FAILED: 4 },
    error_devices: 1,
  });
});

Deno.test("QualityFamily.apply() does not count a PLAY that carries an error code as an error", () => {
  const contents = family();
  const batch = emptyBatch();
  contents.apply(error({ atMs: T0 }), NOW, batch);
  contents.apply(error({ atMs: T0 + 1 }), NOW, batch);
  for (let i = 0; i < 2; i++) {
    contents.apply(play({ errorCode: "BUFFERING", atMs: T0 + 2 + i }), NOW, batch);
  }
  assert.equal(batch.flags.size, 0, "2 errors in 4 events is not above 50%");
  contents.apply(error({ atMs: T0 + 10 }), NOW, batch);
  assert.deepEqual(onlyFlag(batch).evidence.observed["errors_by_code"], { DRM_LICENSE_FAILED: 3 });
});

Deno.test("QualityFamily.apply() does not flag a content whose errors come from 2 devices", () => {
  const contents = family({}, 3);
  const batch = emptyBatch();
  for (let i = 0; i < 6; i++) {
    contents.apply(
      error({ deviceId: `tv-${i % 2}`, userId: `viewer-${i}`, atMs: T0 + i }),
      NOW,
      batch,
    );
  }
  assert.equal(batch.flags.size, 0, "one or two broken TVs are the device flag's business");
});

Deno.test("QualityFamily.apply() flags a content once errors come from 3 devices, naming no viewer", () => {
  const contents = family({}, 3);
  const batch = emptyBatch();
  contents.apply(error({ deviceId: "tv-a", userId: "viewer-a", atMs: T0 }), NOW, batch);
  contents.apply(error({ deviceId: "tv-a", userId: "viewer-a", atMs: T0 + 1 }), NOW, batch);
  contents.apply(play({ deviceId: "tv-c", userId: "viewer-c", atMs: T0 + 2 }), NOW, batch);
  contents.apply(error({ deviceId: "tv-b", userId: "viewer-b", atMs: T0 + 3 }), NOW, batch);
  assert.equal(batch.flags.size, 0, "4 events, 3 errors, but only 2 devices");
  const third = error({ deviceId: "tv-c", userId: "viewer-c", region: "IT", atMs: T0 + 4 });
  contents.apply(third, NOW, batch);
  contents.apply(error({ deviceId: "tv-d", userId: "viewer-d", atMs: T0 + 5 }), NOW, batch);
  const flag = onlyFlag(batch);
  assert.equal(flag.eventId, third.eventId);
  assert.equal(flag.userId, "");
  assert.equal(flag.region, "");
  assert.equal(flag.isEu, false);
  assert.equal(flag.ruleVersion, 2);
  assert.equal(flag.flaggedEventCount, 2);
  assert.equal(flag.evidence.observed["error_devices"], 3, "counting stops at the threshold");
  assert.equal(flag.evidence.thresholds["min_devices"], 3);
});

Deno.test("QualityFamily.apply() flags a lone broken device in the device family", () => {
  const devices = family({ family: "device" }, 3);
  const batch = emptyBatch();
  for (let i = 0; i < 4; i++) {
    devices.apply(error({ deviceId: "tv-9", userId: "viewer-9", atMs: T0 + i }), NOW, batch);
  }
  const flag = onlyFlag(batch);
  assert.equal(flag.entityType, "device");
  assert.equal(flag.userId, "viewer-9");
});

Deno.test("QualityFamily counts the plays before a window's first error, as objects or in columns", () => {
  const contents = family();
  const batch = emptyBatch();
  contents.apply(play({ atMs: T0 }), NOW, batch);
  contents.apply(play({ atMs: T0 + WINDOW }), NOW, batch); // a second window
  contents.apply(play({ atMs: T0 + WINDOW + 1 }), NOW, batch);
  contents.prune(T0 + WINDOW + 1); // the first window is gone; one window without errors is left
  contents.apply(error({ atMs: T0 + WINDOW + 2 }), NOW, batch);
  assert.equal(batch.flags.size, 0, "3 events are below the minimum");
  contents.apply(error({ atMs: T0 + WINDOW + 3 }), NOW, batch);
  assert.equal(batch.flags.size, 0, "2 errors of 4 events are not above the 50% threshold");
  contents.apply(error({ atMs: T0 + WINDOW + 4 }), NOW, batch);
  assert.deepEqual(
    [onlyFlag(batch).evidence.observed["events"], onlyFlag(batch).evidence.observed["errors"]],
    [5, 3],
  );
});

Deno.test("QualityFamily gives a title that takes an evicted title's place none of its counts", () => {
  const contents = family();
  for (let i = 0; i < 3; i++) {
    contents.apply(error({ contentId: "gone", atMs: T0 + i }), 1_000, emptyBatch());
  }
  contents.prune(T0 + 3_600_000);
  assert.equal(contents.passivate(2_000), 1);
  const batch = emptyBatch();
  contents.apply(error({ contentId: "new", atMs: T0 + 3_600_000 }), 3_000, batch);
  assert.equal(batch.flags.size, 0, "one error of one event is below the minimum of 4");
  for (let i = 1; i < 4; i++) {
    contents.apply(error({ contentId: "new", atMs: T0 + 3_600_000 + i }), 3_000, batch);
  }
  assert.equal(onlyFlag(batch).evidence.observed["events"], 4);
});

Deno.test("QualityFamily gives a title taking the place of one whose shard was dropped none of its counts", () => {
  const contents = family();
  for (let i = 0; i < 3; i++) {
    contents.apply(error({ contentId: "moved", atMs: T0 + i }), NOW, emptyBatch());
  }
  contents.dropShard(shardOf("moved", SHARDS)); // windows still open, with errors
  assert.equal(contents.entityCount, 0);
  const batch = emptyBatch();
  contents.apply(error({ contentId: "other", atMs: T0 + 10 }), NOW, batch);
  assert.equal(batch.flags.size, 0, "one error of one event is below the minimum of 4");
  for (let i = 11; i < 14; i++) {
    contents.apply(error({ contentId: "other", atMs: T0 + i }), NOW, batch);
  }
  assert.equal(onlyFlag(batch).evidence.observed["events"], 4);
});

Deno.test("QualityFamily starts a title's next window at one event once the last one is pruned", () => {
  const contents = family();
  for (let i = 0; i < 3; i++) contents.apply(play({ atMs: T0 + i }), NOW, emptyBatch());
  contents.prune(T0 + WINDOW + 1); // the plays' window, kept in the columns, is gone
  const batch = emptyBatch();
  contents.apply(play({ atMs: T0 + WINDOW + 2 }), NOW, batch);
  for (let i = 3; i < 6; i++) contents.apply(error({ atMs: T0 + WINDOW + i }), NOW, batch);
  assert.deepEqual(
    [onlyFlag(batch).evidence.observed["events"], onlyFlag(batch).evidence.observed["errors"]],
    [4, 3],
  );
});
