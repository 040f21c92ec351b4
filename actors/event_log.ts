/**
 * The log seam: where the ingest route hands accepted events over. Backends differ in when they
 * acknowledge (see the README's delivery guarantees); actors and flushes do not change with them.
 *
 * @module
 */
import type { IncomingEvent, Refusal, Region } from "./region.ts";

/** Accepts events for processing; an event is acknowledged once `append` resolves. */
export interface EventLog {
  /** Which backend this is, for logs and `/readyz`. */
  readonly kind: string;
  /** Why appends would be refused right now, or null. */
  refusal(): Refusal | null;
  /** Appends the events; resolving means they are the pipeline's responsibility. */
  append(events: IncomingEvent[]): Promise<void>;
}

/** An append that could not be made durable; the route answers 503 and the client retries. */
export class AppendError extends Error {
  override name = "AppendError";
}

/**
 * The memory backend: events are handed straight to the region. A graceful stop loses nothing; a
 * crash loses what was not flushed yet.
 */
export class MemoryLog implements EventLog {
  readonly kind = "memory";
  #region: Region;

  constructor(region: Region) {
    this.#region = region;
  }

  refusal(): Refusal | null {
    return this.#region.refusal();
  }

  append(events: IncomingEvent[]): Promise<void> {
    // A drain may have begun while the request body was read: refuse rather than fail with a 500.
    if (this.#region.refusal() === "draining") {
      return Promise.reject(new AppendError("Cannot accept events: the server is shutting down"));
    }
    this.#region.route(events);
    return Promise.resolve();
  }
}
