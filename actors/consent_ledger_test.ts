import assert from "node:assert/strict";
import type { Kysely } from "kysely";
import { consentLedgerOf } from "../db/consent_store.ts";
import { writeFlush } from "../db/flush.ts";
import type { FlushBatch } from "../db/flush_batch.ts";
import type { Database } from "../db/schema.ts";
import { type ConsentSignal, purposeMask, type TelemetryEvent } from "../rules/mod.ts";
import { withMigratedDatabase } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";
import { makeEvent, T0, testConfig } from "../tests/fixtures.ts";
import { emptyBatch } from "./pending.ts";
import { UserFamily } from "./user_family.ts";

const MINUTE = 60_000;

function family(): UserFamily {
  return new UserFamily({
    shardCount: 4,
    dedupeIdsPerShard: 1_000,
    maxSegmentMs: 4 * 3_600_000,
    thresholds: testConfig().thresholds,
    onRuleError: (rule, _event, error) => {
      throw new Error(`Rule "${rule}" failed`, { cause: error });
    },
  });
}

function tcf(purposes: number[], cmpId = 31): ConsentSignal {
  return {
    source: "tcf",
    purposes: purposeMask(purposes),
    vendorConsent: null,
    isDecoded: true,
    cmpId,
    cmpVersion: 2,
    policyVersion: 5,
    stringHash: `hash-${purposes.join("-")}-${cmpId}`,
    isOptOutSaleShare: false,
  };
}

/** Event `i` of user u1 at T0 + i minutes, with a signal (or only has_consent). */
function at(i: number, consent: ConsentSignal | null, hasConsent = true): TelemetryEvent {
  return makeEvent({
    eventId: `c-${i}`,
    userId: "u1",
    atMs: T0 + i * MINUTE,
    receivedAtMs: T0 + 60 * MINUTE,
    position: i + 1,
    hasConsent: consent === null ? hasConsent : (consent.purposes & 129) === 129,
    ...(consent === null ? {} : { consent }),
  });
}

/** Writes a batch as a flush would, without shard checkpoints (no shard is leased here). */
async function write(db: Kysely<Database>, batch: FlushBatch): Promise<void> {
  batch.checkpoints.clear();
  await writeFlush(db, batch);
}

/** Applies events in the given order, flushing after every `perFlush` of them (a new worker when `isFresh`). */
async function ledgerAfter(
  db: Kysely<Database>,
  events: TelemetryEvent[],
  options: { perFlush?: number; freshEvery?: number } = {},
) {
  let users = family();
  let batch = emptyBatch();
  for (const [i, event] of events.entries()) {
    if (options.freshEvery !== undefined && i > 0 && i % options.freshEvery === 0) {
      users = family(); // the user was passivated, or the worker restarted: nothing in memory
    }
    users.apply(event, T0, batch);
    if ((i + 1) % (options.perFlush ?? 1) === 0) {
      await write(db, batch);
      batch = emptyBatch();
    }
  }
  await write(db, batch);
  return (await consentLedgerOf(db, "u1")).changes.map((c) => [c.event_id, c.source, c.purposes]);
}

const TIMELINE = [
  at(0, null, true),
  at(1, tcf([1, 8])),
  at(2, tcf([1, 8])),
  at(3, tcf([1])),
  at(4, tcf([1])),
  at(5, tcf([1, 8], 12)),
  at(6, null, false),
];

/** The changes of {@link TIMELINE} in event-time order. */
const EXPECTED = [
  ["c-0", "has_consent", ["storage", "measurement"]],
  ["c-1", "tcf", ["storage", "measurement"]],
  ["c-3", "tcf", ["storage"]],
  ["c-5", "tcf", ["storage", "measurement"]],
  ["c-6", "has_consent", []],
];

/** A fixed shuffle (no randomness in tests). */
const SHUFFLED = [3, 6, 0, 5, 1, 4, 2].map((i) => TIMELINE[i]);

for (
  const [name, events, options] of [
    ["in event-time order", TIMELINE, {}],
    ["newest first", TIMELINE.toReversed(), {}],
    ["shuffled, flushed in pairs", SHUFFLED, { perFlush: 2 }],
    ["shuffled, with the user forgotten every 2 events", SHUFFLED, { freshEvery: 2 }],
  ] as const
) {
  test(`[consent] the ledger records each change at event time whatever the arrival: ${name}`, () =>
    withMigratedDatabase(undefined, async (db) => {
      assert.deepEqual(await ledgerAfter(db, [...events], options), EXPECTED);
    }));
}

test("[consent] a late event of another state inside a run is a change, and the run's state comes back after it", () =>
  withMigratedDatabase(undefined, async (db) => {
    // A at 0, A at 4 (the latest), then B at 2 arrives late: A from 0, B from 2, A again by 4.
    const events = [at(0, tcf([1, 8])), at(4, tcf([1, 8])), at(2, tcf([1]))];
    const changes = await ledgerAfter(db, events);
    assert.deepEqual(changes.map(([, , purposes]) => purposes), [
      ["storage", "measurement"],
      ["storage"],
      ["storage", "measurement"],
    ]);
    const { stateAt } = await consentLedgerOf(db, "u1", T0 + 3 * MINUTE);
    assert.deepEqual(stateAt?.purposes, ["storage"]);
    const after = await consentLedgerOf(db, "u1", T0 + 4 * MINUTE);
    assert.deepEqual(after.stateAt?.purposes, ["storage", "measurement"]);
    assert.equal(after.stateAt?.string_sha256, "hash-1-8-31", "the carried state keeps its proof");
  }));

test("[consent] a replay adds no ledger row, and one into fresh memory gives the same ledger", () =>
  withMigratedDatabase(undefined, async (db) => {
    const count = async () =>
      Number(
        (await db.selectFrom("consent_ledger").select((eb) => eb.fn.countAll().as("n"))
          .executeTakeFirstOrThrow()).n,
      );
    assert.deepEqual(await ledgerAfter(db, SHUFFLED), EXPECTED);
    const before = await count();
    // A restarted worker replays the log from an old checkpoint: the same events, in log order.
    assert.deepEqual(await ledgerAfter(db, SHUFFLED), EXPECTED);
    assert.equal(await count(), before);
    // The same events with the user forgotten in between (passivated): the same changes.
    assert.deepEqual(await ledgerAfter(db, SHUFFLED, { freshEvery: 3 }), EXPECTED);
  }));
