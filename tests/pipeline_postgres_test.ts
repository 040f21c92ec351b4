import type { Config } from "../config.ts";
import { startHarness, TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { everyRuleFires, exactAggregates, paginatesFlags, type Start } from "./_scenarios.ts";
import { test } from "./_permissions.ts";

const ignore = TEST_DATABASE_URL === undefined;

function onFreshDatabase(
  scenario: (start: Start) => Promise<void>,
  queue: Config["queue"],
): () => Promise<void> {
  return () =>
    withFreshPostgres(
      TEST_DATABASE_URL!,
      (databaseUrl) =>
        scenario((overrides: Partial<Config> = {}) =>
          startHarness({ databaseUrl, queue, ...overrides })
        ),
    );
}

for (const queue of ["memory", "postgres"] as const) {
  test({
    name: `[postgres] a known event set gives exact aggregates (QUEUE=${queue})`,
    ignore,
    fn: onFreshDatabase(exactAggregates, queue),
  });
  test({
    name: `[postgres] every compliance rule fires with evidence (QUEUE=${queue})`,
    ignore,
    fn: onFreshDatabase(everyRuleFires, queue),
  });
}

test({
  name: "[postgres] /compliance/events pages through every flag once",
  ignore,
  fn: onFreshDatabase(paginatesFlags, "memory"),
});
