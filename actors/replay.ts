/**
 * Replay: reading the durable log back into workers that start or restart, page by page, each event
 * to the workers of its user, content and device. A page is read only once the workers have taken
 * the previous one, so memory stays bounded by a page however long the log is.
 *
 * @module
 */
import type { TelemetryEvent } from "../rules/mod.ts";
import type { QualityEvent } from "./quality_family.ts";

/** Events of one worker, per family, as one message carries them. */
export interface FamilyBatch {
  user: TelemetryEvent[];
  content: QualityEvent[];
  device: QualityEvent[];
}

/** What a replay needs from the log and from the region. */
export interface ReplayTarget {
  /** Log entries with `after < position <= through`, in position order, at most `limit`. */
  readLog(after: number, through: number, limit: number): Promise<TelemetryEvent[]>;
  /** The worker that hosts a key's shard. */
  workerOf(key: string): number;
  /** Lets the watermark see replayed events, so lateness after a restart matches before it. */
  markLateness(events: TelemetryEvent[]): void;
  /** Posts one worker's part of a page; every event at or below `throughPosition` is in it. */
  post(index: number, batch: FamilyBatch, throughPosition: number): void;
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
    const batches = new Map<number, FamilyBatch>(
      indexes.map((i) => [i, { user: [], content: [], device: [] }]),
    );
    for (const event of events) {
      const quality = toQualityEvent(event);
      const byUser = target.workerOf(event.userId);
      const byContent = target.workerOf(event.contentId);
      const byDevice = target.workerOf(event.deviceId);
      if (owned.has(byUser)) batches.get(byUser)!.user.push(event);
      if (owned.has(byContent)) batches.get(byContent)!.content.push(quality);
      if (owned.has(byDevice)) batches.get(byDevice)!.device.push(quality);
    }
    const pageEnd = events[events.length - 1].position;
    for (const [index, batch] of batches) target.post(index, batch, pageEnd);
    replayed += events.length;
    after = pageEnd;
    await Promise.all(indexes.map((i) => target.caughtUp(i)));
  }
  return replayed;
}

/** The fields the content and device families read: a smaller message than the whole event. */
export function toQualityEvent(event: TelemetryEvent): QualityEvent {
  return {
    eventId: event.eventId,
    userId: event.userId,
    deviceId: event.deviceId,
    contentId: event.contentId,
    type: event.type,
    atMs: event.atMs,
    region: event.region,
    isEu: event.isEu,
    errorCode: event.errorCode,
    isLate: event.isLate,
    position: event.position,
  };
}
