/**
 * Replay: reading the durable log back into workers that start or restart, page by page, each event
 * to the workers of its user, content and device. A page is read only once the workers have taken
 * the previous one, so memory stays bounded by a page however long the log is.
 *
 * @module
 */
import type { TelemetryEvent } from "../rules/mod.ts";
import { ROLE, WorkerBatch } from "./event_columns.ts";

/** What a replay needs from the log and from the region. */
export interface ReplayTarget {
  /** Log entries with `after < position <= through`, in position order, at most `limit`. */
  readLog(after: number, through: number, limit: number): Promise<TelemetryEvent[]>;
  /** The worker that hosts a key's shard. */
  workerOf(key: string): number;
  /** Lets the watermark see replayed events, so lateness after a restart matches before it. */
  markLateness(events: TelemetryEvent[]): void;
  /** Posts one worker's part of a page; every event at or below `throughPosition` is in it. */
  post(index: number, batch: WorkerBatch, throughPosition: number): void;
  /** Resolves once the worker has taken what was posted (or died). */
  caughtUp(index: number): Promise<void>;
}

/** Entries read per page. */
export const REPLAY_PAGE = 5_000;

/**
 * Posts every logged event with `after < position <= through` to the workers `indexes` that host its
 * user, content or device; returns the number of entries read.
 */
export async function replayLog(
  target: ReplayTarget,
  indexes: number[],
  after: number,
  through: number,
  pageSize = REPLAY_PAGE,
): Promise<number> {
  const owned = new Set(indexes);
  let replayed = 0;
  while (after < through) {
    const events = await target.readLog(after, through, pageSize);
    if (events.length === 0) break;
    target.markLateness(events.filter((e) => !e.isLate));
    const batches = new Map<number, WorkerBatch>(indexes.map((i) => [i, new WorkerBatch()]));
    for (const event of events) {
      forEachWorker(event, target.workerOf, (index, roles) => {
        if (owned.has(index)) batches.get(index)!.push(event, roles);
      });
    }
    const pageEnd = events[events.length - 1].position;
    for (const [index, batch] of batches) target.post(index, batch, pageEnd);
    replayed += events.length;
    after = pageEnd;
    await Promise.all(indexes.map((i) => target.caughtUp(i)));
  }
  return replayed;
}

/**
 * Calls `visit` for each worker an event goes to, with the families it is for there: up to three
 * calls, fewer when its user, content and device live in the same worker (it then travels once).
 * Allocates nothing: the region calls it for every event.
 */
export function forEachWorker(
  event: Pick<TelemetryEvent, "userId" | "contentId" | "deviceId">,
  workerOf: (key: string) => number,
  visit: (index: number, roles: number) => void,
): void {
  const byUser = workerOf(event.userId);
  const byContent = workerOf(event.contentId);
  const byDevice = workerOf(event.deviceId);
  let userRoles = ROLE.user;
  let contentRoles = ROLE.content;
  if (byContent === byUser) userRoles |= ROLE.content;
  if (byDevice === byUser) userRoles |= ROLE.device;
  else if (byDevice === byContent) contentRoles |= ROLE.device;
  visit(byUser, userRoles);
  if (byContent !== byUser) visit(byContent, contentRoles);
  if (byDevice !== byUser && byDevice !== byContent) visit(byDevice, ROLE.device);
}
