import { startHarness } from "./_harness.ts";
import { everyRuleFires, exactAggregates, paginatesFlags } from "./_scenarios.ts";

const start = (overrides = {}) => startHarness({ dataDir: "memory://", ...overrides });

Deno.test("[pglite] a known event set gives exact aggregates", () => exactAggregates(start));
Deno.test("[pglite] every compliance rule fires with evidence", () => everyRuleFires(start));
Deno.test("[pglite] /compliance/events pages through every flag once", () => paginatesFlags(start));
