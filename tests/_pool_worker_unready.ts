/**
 * A worker for pool tests that never starts: it acknowledges the init with a log line (so a test
 * knows it runs) but never reports "ready".
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { FromWorker, ToWorker } from "../actors/protocol.ts";

self.onmessage = (event: MessageEvent<ToWorker>) => {
  if (event.data.type === "init") {
    self.postMessage(
      { type: "log", level: "info", message: "init received, never ready" } satisfies FromWorker,
    );
  }
};
