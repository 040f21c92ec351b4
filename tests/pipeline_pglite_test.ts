import type { Config } from "../config.ts";
import { startHarness } from "./_harness.ts";
import { everyRuleFires, exactAggregates, paginatesFlags } from "./_scenarios.ts";
import { test } from "./_permissions.ts";

for (const queue of ["memory", "postgres"] as const) {
  const start = (overrides: Partial<Config> = {}) =>
    startHarness({ dataDir: "memory://", queue, ...overrides });
  test(`[pglite] a known event set gives exact aggregates (QUEUE=${queue})`, () =>
    exactAggregates(start));
  test(`[pglite] every compliance rule fires with evidence (QUEUE=${queue})`, () =>
    everyRuleFires(start));
}

test("[pglite] /compliance/events pages through every flag once", () =>
  paginatesFlags((overrides = {}) => startHarness({ dataDir: "memory://", ...overrides })));
