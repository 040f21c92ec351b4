/**
 * Entity scores under concurrent flag writes (PostgreSQL only: PGlite has one connection): a
 * worker's flush and the `qoe` checker may raise flags on one title at once.
 */
import assert from "node:assert/strict";
import { sql } from "kysely";
import { openDatabase } from "./client.ts";
import { migrateToLatest } from "./migrate.ts";
import { writeFlush } from "./flush.ts";
import { emptyBatch } from "../actors/pending.ts";
import { makeFlag } from "../tests/fixtures.ts";
import { TEST_DATABASE_URL, withFreshPostgres } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";

test({
  name:
    "[postgres] two transactions flagging one title at once both commit, and the score has both",
  ignore: TEST_DATABASE_URL === undefined,
  fn: async () => {
    await withFreshPostgres(TEST_DATABASE_URL!, async (url) => {
      const first = await openDatabase({ databaseUrl: url, dataDir: "memory://" });
      const second = await openDatabase({ databaseUrl: url, dataDir: "memory://" });
      try {
        await migrateToLatest(first.db);
        const flag = (key: string) =>
          makeFlag({ flagKey: key, entityType: "content", entityId: "title-x", level: "MEDIUM" });
        const batchOf = (key: string) => {
          const batch = emptyBatch();
          batch.flags.set(key, flag(key));
          return batch;
        };
        // The first flush holds its transaction open (a slow commit) while the second flushes.
        let release!: () => void;
        const held = new Promise<void>((resolve) => (release = resolve));
        const slow = first.db.transaction().execute(async (trx) => {
          await sql`insert into risk_flags (flag_key, rule, rule_version, level, level_rank,
            entity_type, entity_id, event_id, user_id, region, is_eu, occurred_at, reason,
            evidence, flagged_events)
            values ('slow', 'content_quality', 2, 'MEDIUM', 2, 'content', 'title-x', 'e1', '',
              'DE', false, now(), 'r', '{}'::jsonb, 0)`.execute(trx);
          await held;
        });
        await new Promise((resolve) => setTimeout(resolve, 200));
        const fast = writeFlush(second.db, batchOf("qoe:content:title-x:1"));
        await new Promise((resolve) => setTimeout(resolve, 300));
        release();
        await slow;
        await fast;
        const row = await first.db.selectFrom("entity_scores").select("open_flags")
          .where("entity_type", "=", "content").where("entity_id", "=", "title-x")
          .executeTakeFirstOrThrow();
        assert.equal(Number(row.open_flags), 2, "the score counts both transactions' flags");
      } finally {
        await first.db.destroy();
        await second.db.destroy();
      }
    });
  },
});
