/**
 * The exactly-once check of the fault tests, made on the database after the servers stopped: every
 * acknowledged event is stored once, nothing unknown is stored, and the aggregates count exactly the
 * stored on-time events (no loss, no double count).
 *
 * @module
 */
import assert from "node:assert/strict";
import { sql } from "kysely";
import { openDatabase } from "../db/client.ts";

/** Asserts exactly-once counting; `dataDir` is the PGlite directory when `databaseUrl` is absent. */
export async function assertExactlyOnce(
  where: { databaseUrl?: string; dataDir?: string },
  acknowledged: Iterable<string>,
  sent: Set<string>,
): Promise<{ stored: number }> {
  const { db } = await openDatabase({
    databaseUrl: where.databaseUrl,
    dataDir: where.dataDir ?? "",
  });
  try {
    const stored = new Set(
      (await db.selectFrom("raw_events").select("event_id").execute()).map((r) => r.event_id),
    );
    for (const id of acknowledged) {
      assert.ok(stored.has(id), `acknowledged event "${id}" is missing`);
    }
    for (const id of stored) assert.ok(sent.has(id), `stored event "${id}" was never sent`);
    const counts = await sql<{ raw: string; totals: string; titles: string; devices: string }>`
      select
        (select count(*) from raw_events) as raw,
        (select coalesce(sum(events), 0) from event_types_hourly) as totals,
        (select coalesce(sum(events), 0) from event_facts_hourly) as titles,
        (select coalesce(sum(events), 0) from device_facts_hourly) as devices`.execute(db);
    const row = counts.rows[0];
    assert.equal(Number(row.totals), Number(row.raw), "summary total differs from stored events");
    assert.equal(Number(row.titles), Number(row.raw), "per-title events differ from stored events");
    assert.equal(
      Number(row.devices),
      Number(row.raw),
      "per-device events differ from stored events",
    );
    return { stored: stored.size };
  } finally {
    await db.destroy();
  }
}
