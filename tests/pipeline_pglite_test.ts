import type { Config } from "../config.ts";
import { startHarness } from "./_harness.ts";
import { everyRuleFires, exactAggregates, paginatesFlags } from "./_scenarios.ts";

for (const queue of ["memory", "postgres"] as const) {
  const start = (overrides: Partial<Config> = {}) =>
    startHarness({ dataDir: "memory://", queue, ...overrides });
  Deno.test(`[pglite] a known event set gives exact aggregates (QUEUE=${queue})`, () =>
    exactAggregates(start));
  Deno.test(`[pglite] every compliance rule fires with evidence (QUEUE=${queue})`, () =>
    everyRuleFires(start));
}

Deno.test("[pglite] /compliance/events pages through every flag once", () =>
  paginatesFlags((overrides = {}) => startHarness({ dataDir: "memory://", ...overrides })));
