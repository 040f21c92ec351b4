/**
 * Runs a deletion request to its end: the user becomes a keyed hash (so later events arrive under a
 * pseudonym), the actors drop the user's state in log order, the workers flush, and the user's rows
 * are erased in passes until none is left. An attempt that cannot finish is run again with backoff
 * (the request stays in progress, its result says the attempts and the next try) until it has been
 * failing for a day. The request record says how far it got.
 *
 * @module
 */
import type { Kysely } from "kysely";
import {
  endErasure,
  eraseUserRows,
  type ErasureCounts,
  markErasing,
  openDeletions,
  pruneErasedEvents,
  recordErasedSubject,
} from "../db/privacy_store.ts";
import type { Database } from "../db/schema.ts";
import type { Logger } from "../logger.ts";
import type { OptOut } from "../rules/mod.ts";
import type { ErasedUsers } from "./erased_users.ts";
import type { ErasedEntries } from "./log/log.ts";

/** When an erasure that could not finish runs again, and when it is given up. */
export interface ErasureRetry {
  /** Wait before the second attempt; each later wait doubles. */
  firstDelayMs: number;
  /** Longest wait between two attempts. */
  maxDelayMs: number;
  /** The request is marked failed once it has been this long since it was received. */
  giveUpAfterMs: number;
}

/** Default schedule: 30 s, doubling to 30 min, for at most a day. */
export const DEFAULT_ERASURE_RETRY: ErasureRetry = {
  firstDelayMs: 30_000,
  maxDelayMs: 30 * 60_000,
  giveUpAfterMs: 24 * 3_600_000,
};

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
  /** Erasure passes in one attempt. */
  maxPasses?: number;
  passDelayMs?: number;
  retry?: ErasureRetry;
  /** Called each time an attempt ends unfinished and another is scheduled (a metric). */
  onRetry?: () => void;
}

/** One deletion being erased. */
interface Erasure {
  requestId: string;
  userId: string;
  pseudonym: string;
  requestedAtMs: number;
  /** Attempts that ended unfinished before this one. */
  attempts: number;
}

/** Runs deletion requests, one at a time, in the background of the request that filed them. */
export class Eraser {
  #o: EraserOptions;
  #chain: Promise<void> = Promise.resolve();
  #isStopped = false;
  #retryTimers = new Set<ReturnType<typeof setTimeout>>();

  constructor(options: EraserOptions) {
    this.#o = options;
  }

  /** The pseudonym a deletion of `userId` names the user by, from the moment it is filed. */
  pseudonymOf(userId: string): string {
    return this.#o.erased.pseudonymOf(this.#o.erased.subjectHash(userId));
  }

  /**
   * Starts erasing `userId` for request `requestId`. Once this resolves, every later event of the
   * user is appended under the pseudonym and the user's actor has been told; the erasure passes
   * then run in the background, one request at a time. `passes` resolves when the first attempt
   * ended (a request that could not finish runs again later).
   */
  async begin(
    requestId: string,
    userId: string,
    requestedAtMs: number,
    attempts = 0,
  ): Promise<{ passes: Promise<void> }> {
    const { db, erased } = this.#o;
    const subjectHash = erased.subjectHash(userId);
    const pseudonym = erased.pseudonymOf(subjectHash);
    // Durable before anything is deleted: a restart keeps pseudonymising the user's new events.
    await recordErasedSubject(db, subjectHash, pseudonym, this.#now());
    erased.add(subjectHash);
    await markErasing(
      db,
      requestId,
      { userId, pseudonym },
      attempts === 0 ? null : { attempts },
    );
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
    return { passes: this.#enqueue({ requestId, userId, pseudonym, requestedAtMs, attempts }) };
  }

  /** Finishes deletions a stop, a crash or a failed attempt left open. */
  async resume(): Promise<void> {
    for (const open of await openDeletions(this.#o.db)) {
      this.#o.logger.info(`Resuming erasure of privacy request ${open.id}`, {
        attempts: open.attempts,
      });
      await this.begin(open.id, open.userId, open.requestedAtMs, open.attempts);
    }
  }

  /** Stops starting passes: a request cut short stays in progress and resumes at the next start. */
  stop(): void {
    this.#isStopped = true;
    for (const timer of this.#retryTimers) clearTimeout(timer);
    this.#retryTimers.clear();
  }

  /** Waits for the erasures running or queued now (not the retries scheduled for later). */
  async idle(): Promise<void> {
    await this.#chain;
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  #enqueue(erasure: Erasure): Promise<void> {
    const run = this.#chain.then(() => this.#run(erasure));
    this.#chain = run;
    return run;
  }

  async #run(erasure: Erasure): Promise<void> {
    const { requestId, userId, pseudonym } = erasure;
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
        consent_ledger: 0,
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
          await endErasure(db, requestId, "completed", {
            ...result,
            ...(this.#o.eraseLogEntries === undefined ? {} : { log_entries: streamEntries }),
            passes: pass,
            attempts: erasure.attempts + 1,
          }, this.#now());
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
      await this.#retryLater(erasure, error instanceof Error ? error.message : String(error))
        .catch((cause) =>
          this.#o.logger.error(`Cannot record the failed attempt of privacy request ${requestId}`, {
            error: cause instanceof Error ? cause.message : String(cause),
          })
        );
    }
  }

  /** Schedules the next attempt with backoff, or marks the request failed once a day has passed. */
  async #retryLater(erasure: Erasure, reason: string): Promise<void> {
    const { requestId } = erasure;
    const retry = this.#o.retry ?? DEFAULT_ERASURE_RETRY;
    const attempts = erasure.attempts + 1;
    const nowMs = this.#now();
    if (nowMs - erasure.requestedAtMs >= retry.giveUpAfterMs) {
      this.#o.logger.error(
        `Cannot complete privacy request ${requestId}: giving up after ${attempts} attempts: ${reason}`,
      );
      await endErasure(this.#o.db, requestId, "failed", { error: reason, attempts }, nowMs);
      return;
    }
    const delayMs = Math.min(retry.maxDelayMs, retry.firstDelayMs * 2 ** (attempts - 1));
    const nextTryAt = new Date(nowMs + delayMs).toISOString();
    this.#o.logger.warn(
      `Cannot complete privacy request ${requestId} yet: retrying at ${nextTryAt}: ${reason}`,
      { attempts },
    );
    await markErasing(this.#o.db, requestId, erasure, {
      attempts,
      next_try_at: nextTryAt,
      last_error: reason,
    });
    this.#o.onRetry?.();
    if (this.#isStopped) return;
    const timer = setTimeout(() => {
      this.#retryTimers.delete(timer);
      this.#enqueue({ ...erasure, attempts });
    }, delayMs);
    this.#retryTimers.add(timer);
  }
}

/** The server is stopping: the erasure resumes at the next start. */
class StoppedError extends Error {
  override name = "StoppedError";
}
