/**
 * The memory backend: events are handed straight to the region. A graceful stop loses nothing; a
 * crash loses what was not flushed yet.
 *
 * @module
 */
import type { OptOut } from "../../rules/mod.ts";
import type { IncomingEvent, Refusal, Region } from "../region.ts";
import { AppendError, type EventLog, type LogReadiness, type LogTraits } from "./log.ts";

/** Single-node, in-process log: no durability beyond the workers' flushes. */
export class MemoryLog implements EventLog {
  readonly traits: LogTraits;
  #region: Region;

  constructor(region: Region, traits: LogTraits) {
    this.#region = region;
    this.traits = traits;
  }

  get kind(): string {
    return this.traits.kind;
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

  recordOptOut(userId: string, optOut: OptOut): Promise<void> {
    this.#region.recordOptOut(userId, optOut);
    return Promise.resolve();
  }

  readiness(): LogReadiness {
    return { problems: [], details: {} };
  }

  async drain(drainRegion: () => Promise<void>): Promise<void> {
    await drainRegion();
  }

  close(): void {}

  onShardsLost(): void {}
}
