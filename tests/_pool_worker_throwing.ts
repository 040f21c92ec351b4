/**
 * A failing worker for pool tests: reports ready on init, then throws an uncaught error on the first
 * flush request, which the pool sees as the worker's death.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { FromWorker, ToWorker } from "../actors/protocol.ts";

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === "init") self.postMessage({ type: "ready" } satisfies FromWorker);
  if (message.type === "flush") throw new Error(`Injected failure on flush ${message.requestId}`);
};
