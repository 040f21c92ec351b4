/**
 * Runs a deletion request to its end: the user becomes a keyed hash (so later events arrive under a
 * pseudonym), the actors drop the user's state in log order, the workers flush, and the user's rows
 * are erased in passes until none is left. The request record says how far it got.
 *
 * @module
 */
import type { Kysely } from "kysely";
import {
  eraseUserRows,
  type ErasureCounts,
  openDeletions,
  pruneErasedEvents,
  recordErasedSubject,
  setRequestStatus,
} from "../db/privacy_store.ts";
import type { Database } from "../db/schema.ts";
import type { Logger } from "../logger.ts";
import type { OptOut } from "../rules/mod.ts";
import type { ErasedUsers } from "./erased_users.ts";
import type { ErasedEntries } from "./log/mod.ts";

/** What an erasure needs from the rest of the pipeline. */
export interface EraserOptions {
  db: Kysely<Database>;
  erased: ErasedUsers;
  /** Delivers a privacy request to the user's actor in log order (directly or through the log). */
  recordOptOut(userId: string, optOut: OptOut): Promise<void> | void;
  /** Makes every event applied so far durable (flush the workers; in a cluster, also wait). */
  settle(): Promise<void>;
  /** Deletes the user's entries the log keeps outside `raw_events` (redis streams). */
  eraseLogEntries?: (userId: string) => Promise<ErasedEntries>;
  /** Raw events are the log (memory, postgres): erase only below every shard's checkpoint. */
  isLogPositional: boolean;
  maxEventAgeMs: number;
  logger: Logger;
  now?: () => number;
  /** Erasure passes before the request is marked failed. */
  maxPasses?: number;
  passDelayMs?: number;
}

/** Runs deletion requests, one at a time, in the background of the request that filed them. */
export class Eraser {
  #o: EraserOptions;
  #chain: Promise<void> = Promise.resolve();
  #isStopped = false;

  constructor(options: EraserOptions) {
    this.#o = options;
  }

  /**
   * Starts erasing `userId` for request `requestId`. Once this resolves, every later event of the
   * user is appended under the pseudonym and the user's actor has been told; the erasure passes
   * then run in the background, one request at a time. `passes` resolves when the request ended.
   */
  async begin(
    requestId: string,
    userId: string,
    requestedAtMs: number,
  ): Promise<{ passes: Promise<void> }> {
    const { db, erased } = this.#o;
    const subjectHash = erased.subjectHash(userId);
    const pseudonym = erased.pseudonymOf(subjectHash);
    // Durable before anything is deleted: a restart keeps pseudonymising the user's new events.
    await recordErasedSubject(db, subjectHash, pseudonym, this.#now());
    erased.add(subjectHash);
    await setRequestStatus(db, requestId, "in_progress");
    // In log order with the user's events: the actor forgets the user after the events before it.
    await this.#o.recordOptOut(userId, {
      type: "deletion",
      sinceMs: requestedAtMs,
      source: "api",
      pseudonym,
    });
    await this.#o.recordOptOut(pseudonym, {
      type: "deletion",
      sinceMs: requestedAtMs,
      source: "api",
    });
    const passes = this.#chain.then(() => this.#run(requestId, userId, pseudonym));
    this.#chain = passes;
    return { passes };
  }

  /** Finishes deletions a stop or crash interrupted. */
  async resume(): Promise<void> {
    for (const { id, userId } of await openDeletions(this.#o.db)) {
      this.#o.logger.info(`Resuming erasure of privacy request ${id}`);
      await this.begin(id, userId, this.#now());
    }
  }

  /** Stops starting passes: a request cut short stays in progress and resumes at the next start. */
  stop(): void {
    this.#isStopped = true;
  }

  /** Waits for queued erasures (for a graceful stop and for tests). */
  async idle(): Promise<void> {
    await this.#chain;
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  async #run(requestId: string, userId: string, pseudonym: string): Promise<void> {
    const { db } = this.#o;
    if (this.#isStopped) return;
    try {
      await pruneErasedEvents(db, this.#now(), this.#o.maxEventAgeMs);
      const total: ErasureCounts = {
        raw_events: 0,
        raw_events_left: 0,
        flags_pseudonymised: 0,
        entity_risk: 0,
        privacy_requests: 0,
        audit_rows: 0,
      };
      let streamEntries = 0;
      let entriesLeft = 0;
      const maxPasses = this.#o.maxPasses ?? 20;
      for (let pass = 1; pass <= maxPasses; pass++) {
        if (this.#isStopped) throw new StoppedError();
        await this.#o.settle();
        const counts = await eraseUserRows(db, {
          userId,
          pseudonym,
          isLogPositional: this.#o.isLogPositional,
        });
        for (const key of Object.keys(total) as Array<keyof ErasureCounts>) {
          total[key] = key === "raw_events_left" ? counts[key] : total[key] + counts[key];
        }
        const entries = await this.#o.eraseLogEntries?.(userId) ?? { deleted: 0, left: 0 };
        streamEntries += entries.deleted;
        entriesLeft = entries.left;
        if (counts.raw_events_left === 0 && entries.left === 0) {
          const { raw_events_left: _, ...result } = total;
          await setRequestStatus(
            db,
            requestId,
            "completed",
            {
              ...result,
              ...(this.#o.eraseLogEntries === undefined ? {} : { log_entries: streamEntries }),
              passes: pass,
            },
            this.#now(),
          );
          this.#o.logger.info(`Privacy request ${requestId} completed: user erased`, result);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, this.#o.passDelayMs ?? 500));
      }
      throw new Error(
        `${total.raw_events_left} raw events and ${entriesLeft} log entries are still above a ` +
          `shard checkpoint after ${maxPasses} passes`,
      );
    } catch (error) {
      if (error instanceof StoppedError || this.#isStopped) {
        this.#o.logger.warn(
          `Privacy request ${requestId} interrupted by shutdown; resumes at start`,
        );
        return;
      }
      const message = error instanceof Error ? error.message : String(error);
      this.#o.logger.error(`Cannot complete privacy request ${requestId}: ${message}`);
      await setRequestStatus(db, requestId, "failed", { error: message }, this.#now())
        .catch((cause) =>
          this.#o.logger.error(`Cannot mark privacy request ${requestId} failed`, {
            error: cause instanceof Error ? cause.message : String(cause),
          })
        );
    }
  }
}

/** The server is stopping: the erasure resumes at the next start. */
class StoppedError extends Error {
  override name = "StoppedError";
}
