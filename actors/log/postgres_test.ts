import assert from "node:assert/strict";
import { AppendResult, type PositionedRow } from "../../db/log_store.ts";
import type { TelemetryEvent } from "../../rules/mod.ts";
import { makeEvent } from "../../tests/fixtures.ts";
import { createLogger } from "../../logger.ts";
import type { Region } from "../region.ts";
import { PostgresLog } from "./postgres.ts";
import { logTraits } from "./mod.ts";

/** The region surface the log uses, recording what it is handed. */
function fakeRegion(dispatched: TelemetryEvent[][]): Region {
  return {
    refusal: () => null,
    markLateness: (events: unknown[]) => events.map(() => false),
    dispatch: (events: TelemetryEvent[]) => dispatched.push(events),
  } as unknown as Region;
}

function incoming(id: string) {
  const { position: _, isLate: __, ...event } = makeEvent({ eventId: id });
  return event;
}

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * A log whose appends each wait for their own gate (`gates[i]`, in call order) before they store
 * every row; what it appended and dispatched is recorded.
 */
function gatedLog(firstPosition: number, maxConcurrentAppends: number) {
  const dispatched: TelemetryEvent[][] = [];
  const gates: Array<ReturnType<typeof deferred>> = [];
  const appended: PositionedRow[][] = [];
  const log = new PostgresLog(fakeRegion(dispatched), logTraits("postgres"), {
    append: async (rows): Promise<AppendResult> => {
      appended.push(rows);
      const gate = deferred();
      gates.push(gate);
      await gate.promise;
      return AppendResult.allStored(rows);
    },
    firstPosition,
    maxConcurrentAppends,
    maxQueuedEvents: 1_000,
    logger: createLogger("error"),
  });
  return { log, dispatched, gates, appended };
}

Deno.test("PostgresLog dispatches concurrent groups in position order, whichever commits first", async () => {
  const { log, dispatched, gates, appended } = gatedLog(100, 2);
  const first = log.append([incoming("a"), incoming("b")]);
  await new Promise((r) => setTimeout(r, 0));
  const second = log.append([incoming("c")]);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(appended.length, 2, "both groups commit at once");
  assert.deepEqual(appended.map((g) => g.map((r) => r.position)), [[100, 101], [102]]);
  let isSecondDone = false;
  second.then(() => (isSecondDone = true));
  gates[1].resolve();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(dispatched.length, 0, "the later group waits for the earlier one");
  assert.equal(isSecondDone, false);
  gates[0].resolve();
  await Promise.all([first, second]);
  assert.deepEqual(dispatched.map((g) => g.map((e) => e.position)), [[100, 101], [102]]);
  await log.stopIntake();
});

Deno.test("PostgresLog rejects a failed group, leaves its positions as a gap and goes on", async () => {
  const dispatched: TelemetryEvent[][] = [];
  let calls = 0;
  const log = new PostgresLog(fakeRegion(dispatched), logTraits("postgres"), {
    append: (rows): Promise<AppendResult> => {
      calls++;
      if (calls === 1) return Promise.reject(new Error("database down"));
      return Promise.resolve(AppendResult.allStored(rows));
    },
    firstPosition: 1,
    maxConcurrentAppends: 2,
    maxQueuedEvents: 1_000,
    logger: createLogger("error"),
  });
  await assert.rejects(log.append([incoming("a")]), /database is unavailable/);
  await log.append([incoming("b")]);
  assert.deepEqual(dispatched.map((g) => g.map((e) => [e.eventId, e.position])), [[["b", 2]]]);
  await log.stopIntake();
});

Deno.test("PostgresLog.appendsSettled() waits for every append begun before it", async () => {
  const { log, dispatched, gates, appended } = gatedLog(1, 1);
  await log.appendsSettled(); // nothing in flight: at once
  const first = log.append([incoming("a")]);
  await new Promise((r) => setTimeout(r, 0));
  const second = log.append([incoming("b")]); // queued behind the first group
  let isSettled = false;
  const settled = log.appendsSettled().then(() => (isSettled = true));
  gates[0].resolve();
  await first;
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(isSettled, false, "the append queued before it has not committed yet");
  gates[1].resolve();
  await Promise.all([second, settled]);
  assert.deepEqual(appended.map((rows) => rows.map((r) => r.eventId)), [["a"], ["b"]]);
  assert.deepEqual(dispatched.flat().map((e) => e.eventId), ["a", "b"], "the marker is no event");
  await log.stopIntake();
});
