/**
 * A shard worker that dies once: the real worker, except that a batch holding the event whose id is
 * `crash-worker` for its user family (so only the worker hosting that user) kills it with an
 * uncaught error while the marker file named by `CRASH_MARKER` exists (the file is removed first,
 * so the restarted worker replays the event without dying again).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import "../actors/shard_worker.ts";
import type { ToWorker } from "../actors/protocol.ts";
import { ROLE } from "../actors/event_columns.ts";

const realHandler = self.onmessage;
self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  const marker = Deno.env.get("CRASH_MARKER");
  if (
    message.type === "events" && marker !== undefined &&
    message.events.eventId.some((id, i) =>
      id === "crash-worker" && (message.events.roles[i] & ROLE.user) !== 0
    )
  ) {
    let isArmed = true;
    try {
      Deno.removeSync(marker);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      isArmed = false;
    }
    if (isArmed) {
      setTimeout(() => {
        throw new Error("Injected worker crash");
      });
      return;
    }
  }
  realHandler?.call(self, event);
};
