/**
 * The postgres log backend: `raw_events` is the log. Appends are group-committed: requests arriving
 * while writes run share the next transaction. Positions are handed out here, in arrival order, when
 * a group forms (this process is the log's only writer), so groups may commit concurrently
 * (`maxConcurrentAppends`) while the region still receives them strictly in position order:
 * a group is dispatched only after every earlier group was dispatched or failed. An event is
 * acknowledged only after its transaction committed and its group was dispatched.
 *
 * @module
 */
import { AppendResult, type PositionedRow } from "../../db/log_store.ts";
import type { Logger } from "../../logger.ts";
import type { TelemetryEvent } from "../../rules/mod.ts";
import type { OptOut } from "../../rules/mod.ts";
import { AppendError, type EventLog, type LogReadiness, type LogTraits } from "./log.ts";
import type { IncomingEvent, Refusal, Region } from "../region.ts";

/** Settings of the postgres log. */
export interface PostgresLogOptions {
  /** Commits rows in one transaction; returns the positions of the new ones (duplicates absent). */
  append: (rows: PositionedRow[]) => Promise<AppendResult>;
  /** First position to hand out: above every stored position and checkpoint. */
  firstPosition: number;
  /** Groups committing at once (1 on PGlite, which has one connection). */
  maxConcurrentAppends?: number;
  /** Events waiting for a commit before appends are refused with 503. */
  maxQueuedEvents: number;
  /** Most events in one append transaction. */
  maxGroupEvents?: number;
  /** Releases what `append` holds (the appender's connection). */
  close?: () => Promise<void> | void;
  logger: Logger;
}

interface Waiting {
  events: IncomingEvent[];
  resolve: () => void;
  reject: (error: Error) => void;
}

/** Durable single-node log on PostgreSQL (or PGlite). */
export class PostgresLog implements EventLog {
  readonly traits: LogTraits;
  #region: Region;
  #o: PostgresLogOptions;
  #queue: Waiting[] = [];
  #queuedEvents = 0;
  #nextPosition: number;
  #appending = 0;
  /** Settles when the newest group formed so far was dispatched (or failed). */
  #lastDispatch: Promise<void> = Promise.resolve();
  #writer: Promise<void> | null = null;
  #isFailing = false;
  #isClosed = false;
  #lastFailureLogMs = 0;

  constructor(region: Region, traits: LogTraits, options: PostgresLogOptions) {
    this.#region = region;
    this.traits = traits;
    this.#o = options;
    this.#nextPosition = options.firstPosition;
  }

  get kind(): string {
    return this.traits.kind;
  }

  refusal(): Refusal | null {
    if (this.#isClosed) return "draining";
    const refusal = this.#region.refusal();
    if (refusal !== null) return refusal;
    if (this.#queuedEvents >= this.#o.maxQueuedEvents) return this.#isFailing ? "degraded" : "busy";
    return null;
  }

  append(events: IncomingEvent[]): Promise<void> {
    if (this.#isClosed) {
      return Promise.reject(new AppendError("Cannot accept events: the server is shutting down"));
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ events, resolve, reject });
      this.#queuedEvents += events.length;
      this.#startGroups();
    });
  }

  /** Refuses new appends and resolves once everything appended before is committed or failed. */
  async stopIntake(): Promise<void> {
    this.#isClosed = true;
    while (this.#writer !== null || this.#appending > 0 || this.#queue.length > 0) {
      await (this.#writer ?? this.#lastDispatch);
    }
  }

  /**
   * Resolves once every append begun before the call has committed or failed. Groups commit and
   * dispatch in order, so an empty append queued now settles only after all of them.
   */
  appendsSettled(): Promise<void> {
    if (this.#queue.length === 0 && this.#appending === 0 && this.#writer === null) {
      return Promise.resolve();
    }
    // A failed group is settled too; after a close nothing new starts and `stopIntake` waits.
    return this.append([]).catch(() => {});
  }

  recordOptOut(userId: string, optOut: OptOut): Promise<void> {
    this.#region.recordOptOut(userId, optOut);
    return Promise.resolve();
  }

  readiness(): LogReadiness {
    return { problems: this.#isFailing ? ["log appends failing"] : [], details: {} };
  }

  async drain(drainRegion: () => Promise<void>): Promise<void> {
    await this.stopIntake();
    await drainRegion();
  }

  async close(): Promise<void> {
    await this.#o.close?.();
  }

  onShardsLost(): void {}

  /** Forms and starts groups while fewer than the allowed number are committing. */
  #startGroups(): void {
    if (this.#writer !== null) return;
    // Let requests that arrive in the same tick join the first group.
    this.#writer = Promise.resolve().then(() => {
      this.#writer = null;
      const maxGroup = this.#o.maxGroupEvents ?? 5_000;
      const maxConcurrent = this.#o.maxConcurrentAppends ?? 1;
      while (this.#queue.length > 0 && this.#appending < maxConcurrent) {
        const group: Waiting[] = [];
        let size = 0;
        while (
          this.#queue.length > 0 &&
          (size === 0 || size + this.#queue[0].events.length <= maxGroup)
        ) {
          const next = this.#queue.shift()!;
          group.push(next);
          size += next.events.length;
        }
        this.#queuedEvents -= size;
        this.#appending++;
        // Positions and lateness are decided here, in arrival order, before any commit.
        const incoming = group.flatMap((w) => w.events);
        const late = this.#region.markLateness(incoming);
        const rows = incoming.map((e, i) => ({
          ...e,
          isLate: late[i],
          position: this.#nextPosition++,
        }));
        const previous = this.#lastDispatch;
        this.#lastDispatch = this.#commit(group, rows, previous)
          .catch((error) => {
            this.#o.logger.error("Log group failed after commit", { error: String(error) });
            for (const w of group) {
              w.reject(new AppendError("Cannot store events", { cause: error }));
            }
          })
          .finally(() => {
            this.#appending--;
            if (this.#queue.length > 0) this.#startGroups();
          });
      }
    });
  }

  async #commit(group: Waiting[], rows: PositionedRow[], previous: Promise<void>): Promise<void> {
    let result: AppendResult;
    try {
      // A group of only `appendsSettled` markers has nothing to write.
      result = rows.length === 0 ? AppendResult.allStored(rows) : await this.#o.append(rows);
    } catch (cause) {
      // Waits for earlier groups so the failure is reported in order too; their positions stay gaps.
      await previous;
      this.#isFailing = true;
      const now = Date.now();
      if (now - this.#lastFailureLogMs > 1_000) {
        this.#lastFailureLogMs = now;
        this.#o.logger.warn(`Cannot append ${rows.length} events to the log: answering 503`, {
          error: cause instanceof Error ? cause.message : String(cause),
        });
      }
      const error = new AppendError("Cannot store events: the database is unavailable", { cause });
      for (const w of group) w.reject(error);
      return;
    }
    // The region must receive positions in order: an earlier group still committing goes first.
    await previous;
    this.#isFailing = false;
    // A row is new when the log stored it at its own position: a duplicate of a stored event is
    // absent, and a repeat inside the group lost its position to the first occurrence. Rows are
    // already in position order.
    const positioned: TelemetryEvent[] = rows.filter((_, i) => result.stored[i] === 1);
    try {
      this.#region.dispatch(positioned);
    } catch (error) {
      // Committed but not dispatched (draining): the next start replays them from the log.
      this.#o.logger.info("Logged events left for replay at next start", {
        events: positioned.length,
        reason: error instanceof Error ? error.message : String(error),
      });
    }
    for (const w of group) w.resolve();
  }
}
