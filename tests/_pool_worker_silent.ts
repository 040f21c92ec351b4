/**
 * A hung worker for pool tests: reports ready on init, then ignores everything, flush requests and
 * "stop" included, as a worker stuck behind a hung database would.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { FromWorker, ToWorker } from "../actors/protocol.ts";

self.onmessage = (event: MessageEvent<ToWorker>) => {
  if (event.data.type === "init") self.postMessage({ type: "ready" } satisfies FromWorker);
};
