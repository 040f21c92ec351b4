import assert from "node:assert/strict";
import type { TelemetryEvent } from "../rules/mod.ts";
import { makeEvent, T0 } from "../tests/fixtures.ts";
import { ROLE, type WorkerBatch } from "./event_columns.ts";
import { forEachWorker, replayLog, type ReplayTarget } from "./replay.ts";

/** The `[worker, roles]` visits of {@link forEachWorker}, in order. */
function rolesByWorker(
  event: { userId: string; contentId: string; deviceId: string },
  workerOf: (key: string) => number,
): Array<[number, number]> {
  const visits: Array<[number, number]> = [];
  forEachWorker(event, workerOf, (index, roles) => visits.push([index, roles]));
  return visits;
}

/** A posted batch as the families of the worker see it. */
interface FamilyView {
  user: TelemetryEvent[];
  content: TelemetryEvent[];
  device: TelemetryEvent[];
}

interface Post {
  index: number;
  batch: FamilyView;
  throughPosition: number;
}

function familiesOf(batch: WorkerBatch): FamilyView {
  const of = (role: number) => batch.events.filter((_, i) => (batch.roles[i] & role) !== 0);
  return { user: of(ROLE.user), content: of(ROLE.content), device: of(ROLE.device) };
}

/**
 * A replay target over an in-memory log. Keys name their worker after an "@" (`user@1` is hosted by
 * worker 1). Every call is traced in order; `caughtUp` resolves at once unless `holdCaughtUp` is set,
 * in which case each call waits for the test to release it.
 */
class FakeTarget implements ReplayTarget {
  readonly trace: string[] = [];
  readonly reads: Array<[number, number, number]> = [];
  readonly posts: Post[] = [];
  readonly marked: TelemetryEvent[][] = [];
  readonly held = new Map<number, () => void>();
  holdCaughtUp = false;
  #log: TelemetryEvent[];
  #onRead: (() => void) | null = null;

  constructor(log: TelemetryEvent[]) {
    this.#log = log;
  }

  readLog(after: number, through: number, limit: number): Promise<TelemetryEvent[]> {
    this.trace.push(`read ${after}`);
    this.reads.push([after, through, limit]);
    this.#onRead?.();
    const entries = this.#log.filter((e) => e.position > after && e.position <= through);
    return Promise.resolve(entries.slice(0, limit));
  }

  workerOf(key: string): number {
    const index = Number(key.split("@")[1]);
    assert.ok(Number.isInteger(index), `fixture key "${key}" names no worker`);
    return index;
  }

  markLateness(events: TelemetryEvent[]): void {
    this.trace.push(`mark ${events.length}`);
    this.marked.push(events);
  }

  post(index: number, batch: WorkerBatch, throughPosition: number): void {
    this.trace.push(`post ${index} through ${throughPosition}`);
    this.posts.push({ index, batch: familiesOf(batch), throughPosition });
  }

  caughtUp(index: number): Promise<void> {
    this.trace.push(`caughtUp ${index}`);
    if (!this.holdCaughtUp) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.held.set(index, resolve);
    return promise;
  }

  /** Resolves on the next `readLog` call. */
  nextRead(): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#onRead = () => {
      this.#onRead = null;
      resolve();
    };
    return promise;
  }
}

/** An event at `position` whose user, content and device are hosted by the given workers. */
function logged(position: number, user: number, content: number, device: number, isLate = false) {
  return makeEvent({
    eventId: `e-${position}`,
    userId: `user-${position}@${user}`,
    contentId: `content-${position}@${content}`,
    deviceId: `device-${position}@${device}`,
    atMs: T0 + position * 1_000,
    receivedAtMs: T0 + position * 1_000,
    isLate,
    position,
  });
}

/** Lets every promise continuation that is already due run (no timers involved). */
async function drainMicrotasks(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve();
}

Deno.test("replayLog() reads pages in position order with the page size", async () => {
  const log = [2, 4, 6, 8, 10].map((position) => logged(position, 0, 0, 0));
  const target = new FakeTarget(log);
  const replayed = await replayLog(target, [0], 0, 10, 2);
  assert.equal(replayed, 5);
  assert.deepEqual(target.reads, [[0, 10, 2], [4, 10, 2], [8, 10, 2]]);
  // Each page is posted as it was read: positions in order, nothing twice.
  assert.deepEqual(target.posts.map((p) => p.batch.user.map((e) => e.position)), [
    [2, 4],
    [6, 8],
    [10],
  ]);
});

Deno.test("replayLog() marks each post with the last position of its page", async () => {
  const log = [3, 5, 9, 12, 13].map((position) => logged(position, 0, 1, 0));
  const target = new FakeTarget(log);
  await replayLog(target, [0, 1], 0, 13, 2);
  assert.deepEqual(target.posts.map((p) => [p.index, p.throughPosition]), [
    [0, 5],
    [1, 5],
    [0, 12],
    [1, 12],
    [0, 13],
    [1, 13],
  ]);
});

Deno.test("replayLog() replays only entries after `after` and up to `through`", async () => {
  const log = Array.from({ length: 10 }, (_, i) => logged(i + 1, 0, 0, 0));
  const target = new FakeTarget(log);
  const replayed = await replayLog(target, [0], 3, 8, 100);
  assert.equal(replayed, 5);
  assert.deepEqual(target.reads, [[3, 8, 100]]);
  assert.deepEqual(target.posts[0].batch.user.map((e) => e.position), [4, 5, 6, 7, 8]);
  assert.equal(target.posts[0].throughPosition, 8);
});

Deno.test("replayLog() stops at the end of the log when it ends before `through`", async () => {
  const log = Array.from({ length: 5 }, (_, i) => logged(i + 1, 0, 0, 0));
  const target = new FakeTarget(log);
  const replayed = await replayLog(target, [0], 0, 100, 3);
  assert.equal(replayed, 5);
  assert.deepEqual(target.reads, [[0, 100, 3], [3, 100, 3], [5, 100, 3]]);
  assert.equal(target.posts.length, 2);
});

Deno.test("replayLog() on an empty log reads once, posts nothing and returns 0", async () => {
  const target = new FakeTarget([]);
  assert.equal(await replayLog(target, [0, 1], 0, 50), 0);
  assert.deepEqual(target.trace, ["read 0"]);
  assert.deepEqual(target.posts, []);
  assert.deepEqual(target.marked, []);
});

Deno.test("replayLog() with nothing between `after` and `through` does not read the log", async () => {
  const target = new FakeTarget([logged(1, 0, 0, 0)]);
  assert.equal(await replayLog(target, [0], 7, 7), 0);
  assert.equal(await replayLog(target, [0], 9, 7), 0);
  assert.deepEqual(target.trace, []);
});

Deno.test("replayLog() sends each event to the workers of its user, content and device", async () => {
  // Three workers, of which 0 and 2 are replayed (1 kept running and already has its events).
  const log = [
    logged(1, 0, 1, 2),
    logged(2, 1, 1, 1),
    logged(3, 2, 0, 0),
    logged(4, 2, 2, 2),
  ];
  const target = new FakeTarget(log);
  const replayed = await replayLog(target, [0, 2], 0, 4);
  assert.equal(replayed, 4);
  const byIndex = new Map(target.posts.map((p) => [p.index, p.batch]));
  assert.deepEqual([...byIndex.keys()], [0, 2]);
  assert.deepEqual(byIndex.get(0), {
    user: [log[0]],
    content: [log[2]],
    device: [log[2]],
  });
  assert.deepEqual(byIndex.get(2), {
    user: [log[2], log[3]],
    content: [log[3]],
    device: [log[0], log[3]],
  });
  // An event travels once per worker, whichever of its families that worker hosts.
  assert.equal(byIndex.get(0)!.user[0], log[0]);
  assert.equal(byIndex.get(2)!.user[1], byIndex.get(2)!.device[1]);
});

Deno.test("replayLog() posts to every replayed worker each page, even one with no events in it", async () => {
  const target = new FakeTarget([logged(1, 0, 0, 0), logged(2, 0, 0, 0)]);
  await replayLog(target, [0, 1], 0, 2);
  assert.deepEqual(target.posts, [
    {
      index: 0,
      batch: {
        user: [logged(1, 0, 0, 0), logged(2, 0, 0, 0)],
        content: [logged(1, 0, 0, 0), logged(2, 0, 0, 0)],
        device: [logged(1, 0, 0, 0), logged(2, 0, 0, 0)],
      },
      throughPosition: 2,
    },
    // Worker 1 hosts none of these events, but learns that it has everything up to position 2.
    { index: 1, batch: { user: [], content: [], device: [] }, throughPosition: 2 },
  ]);
});

Deno.test("replayLog() reads the next page only after every worker caught up", async () => {
  const log = Array.from({ length: 4 }, (_, i) => logged(i + 1, 0, 1, 1));
  const target = new FakeTarget(log);
  target.holdCaughtUp = true;
  const firstRead = target.nextRead();
  const replaying = replayLog(target, [0, 1], 0, 4, 2);
  await firstRead;
  await drainMicrotasks();
  assert.deepEqual(target.trace, [
    "read 0",
    "mark 2",
    "post 0 through 2",
    "post 1 through 2",
    "caughtUp 0",
    "caughtUp 1",
  ]);

  // One worker caught up is not enough.
  target.held.get(0)!();
  await drainMicrotasks();
  assert.equal(target.reads.length, 1);

  const secondRead = target.nextRead();
  target.held.get(1)!();
  await secondRead;
  assert.deepEqual(target.reads, [[0, 4, 2], [2, 4, 2]]);

  await drainMicrotasks();
  target.held.get(0)!();
  target.held.get(1)!();
  assert.equal(await replaying, 4);
  assert.deepEqual(target.trace.slice(6), [
    "read 2",
    "mark 2",
    "post 0 through 4",
    "post 1 through 4",
    "caughtUp 0",
    "caughtUp 1",
  ]);
});

Deno.test("replayLog() lets the lateness marker see only events that were not late", async () => {
  const log = [
    logged(1, 0, 0, 0),
    logged(2, 0, 0, 0, true),
    logged(3, 0, 0, 0),
    logged(4, 0, 0, 0, true),
    logged(5, 0, 0, 0, true),
  ];
  const target = new FakeTarget(log);
  await replayLog(target, [0], 0, 5, 3);
  assert.deepEqual(target.marked, [[log[0], log[2]], []]);
  // Late events are still replayed: they were counted before the restart.
  assert.deepEqual(target.posts.flatMap((p) => p.batch.user), log);
});

Deno.test("forEachWorker() sends an event once per worker with the families it hosts there", () => {
  const workerOf = (key: string) => Number(key.split("@")[1]);
  const event = (u: number, c: number, d: number) => ({
    userId: `u@${u}`,
    contentId: `c@${c}`,
    deviceId: `d@${d}`,
  });
  assert.deepEqual(rolesByWorker(event(0, 0, 0), workerOf), [[0, 7]]);
  assert.deepEqual(rolesByWorker(event(0, 1, 0), workerOf), [[0, 5], [1, 2]]);
  assert.deepEqual(rolesByWorker(event(0, 1, 1), workerOf), [[0, 1], [1, 6]]);
  assert.deepEqual(rolesByWorker(event(0, 1, 2), workerOf), [[0, 1], [1, 2], [2, 4]]);
});
