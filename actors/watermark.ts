/**
 * Event-time progress and lateness, decided in one place: the region asks it for every event it
 * routes or a log appends, so the user, content and device sides agree, and a durable log stores
 * the decision with the event.
 *
 * @module
 */

/**
 * The watermark is the newest event time seen, each event's time capped at the moment the server
 * received it: a TV whose clock runs ahead (up to the accepted future skew) cannot push it past the
 * server's clock and make everyone else late. An event is late when it happened more than
 * `allowedLatenessMs` before the watermark.
 */
export class Watermark {
  #ms = 0;
  #allowedLatenessMs: number;

  constructor(allowedLatenessMs: number) {
    this.#allowedLatenessMs = allowedLatenessMs;
  }

  /** The watermark in epoch ms (0 before any event). */
  get ms(): number {
    return this.#ms;
  }

  /** Oldest event time windows still accept. */
  get horizonMs(): number {
    return this.#ms - this.#allowedLatenessMs;
  }

  /** Advances over the events in order and tells, for each, whether it is late. */
  advance(events: ReadonlyArray<{ atMs: number; receivedAtMs: number }>): boolean[] {
    return events.map((event) => {
      const boundedMs = Math.min(event.atMs, event.receivedAtMs);
      if (boundedMs > this.#ms) this.#ms = boundedMs;
      return event.atMs < this.horizonMs;
    });
  }
}
