/**
 * A well-behaved worker for pool tests: reports ready on init, answers every flush at once with a
 * successful "flushed", echoes ticks as a log line, and stops (posting "stopped") when asked.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { FromWorker, ToWorker } from "../actors/protocol.ts";

function send(message: FromWorker): void {
  self.postMessage(message);
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "init":
      send({ type: "ready" });
      return;
    case "flush":
      send({
        type: "flushed",
        requestId: message.requestId,
        error: null,
        flushedEvents: 0,
        status: {
          pendingEvents: 0,
          entities: 0,
          heapUsedBytes: 0,
          isFlushFailing: false,
          lastFlushError: null,
          flushBlockedSinceMs: null,
        },
      });
      return;
    case "tick":
      send({ type: "log", level: "info", message: `tick ${message.nowMs}` });
      return;
    case "stop":
      send({ type: "stopped" });
      self.close();
      return;
  }
};
