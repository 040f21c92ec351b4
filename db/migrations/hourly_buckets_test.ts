import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { type Migration, Migrator } from "kysely/migration";
import { openDatabase } from "../client.ts";
import { migrateToLatest } from "../migrate.ts";
import { estimateViewers } from "../hll.ts";
import { getSummary } from "../stats_queries.ts";
import type { Database } from "../schema.ts";
import * as initial from "./2026_11_23_0001_initial.ts";
import * as eventLog from "./2026_11_24_0002_event_log.ts";
import { test } from "../../tests/_permissions.ts";

const H8 = "2026-11-20T08:00:00.000Z";
const H9 = "2026-11-20T09:00:00.000Z";
const H10 = "2026-11-20T10:00:00.000Z";
const BEFORE_UPGRADE = "1970-01-01T00:00:00.000Z";

interface OldEvent {
  id: string;
  user: string;
  device: string;
  content: string;
  type: string;
  at: string;
  region: string;
  errorCode?: string;
  isLate?: boolean;
  metadata: Record<string, string>;
}

const TIZEN = { platform: "Tizen", app_version: "5.1" };
const WEBOS = { platform: "webOS", app_version: "2.0" };

/** What the first release stored: 10 events over 3 hours, two of them late. */
const OLD_EVENTS: OldEvent[] = [
  {
    id: "e1",
    user: "u1",
    device: "d1",
    content: "c1",
    type: "LOGIN",
    at: "2026-11-20T08:01:00Z",
    region: "DE",
    metadata: TIZEN,
  },
  {
    id: "e2",
    user: "u1",
    device: "d1",
    content: "c1",
    type: "PLAY",
    at: "2026-11-20T08:02:00Z",
    region: "DE",
    metadata: TIZEN,
  },
  {
    id: "e3",
    user: "u2",
    device: "d2",
    content: "c1",
    type: "PLAY",
    at: "2026-11-20T08:30:00Z",
    region: "DE",
    metadata: WEBOS,
  },
  {
    id: "e4",
    user: "u3",
    device: "d3",
    content: "c2",
    type: "ERROR",
    at: "2026-11-20T08:59:59Z",
    region: "FR",
    errorCode: "E_DRM",
    metadata: WEBOS,
  },
  {
    id: "e5",
    user: "u1",
    device: "d1",
    content: "c1",
    type: "PLAY",
    at: "2026-11-20T09:00:00Z",
    region: "DE",
    metadata: TIZEN,
  },
  {
    id: "e6",
    user: "u4",
    device: "d4",
    content: "c2",
    type: "ERROR",
    at: "2026-11-20T09:10:00Z",
    region: "FR",
    errorCode: "E_NET",
    isLate: true,
    metadata: {},
  },
  {
    id: "e7",
    user: "u4",
    device: "d4",
    content: "c2",
    type: "ERROR",
    at: "2026-11-20T09:20:00Z",
    region: "FR",
    errorCode: "E_NET",
    metadata: {},
  },
  {
    id: "e8",
    user: "u5",
    device: "d5",
    content: "c1",
    type: "PLAY",
    at: "2026-11-20T10:05:00Z",
    region: "US",
    isLate: true,
    metadata: TIZEN,
  },
  {
    id: "e9",
    user: "u2",
    device: "d2",
    content: "c1",
    type: "ERROR",
    at: "2026-11-20T10:40:00Z",
    region: "DE",
    errorCode: "E_DRM",
    metadata: WEBOS,
  },
  // 11:30+01:00 is 10:30Z: the hour is the UTC hour of event time.
  {
    id: "e10",
    user: "u6",
    device: "d1",
    content: "c2",
    type: "LOGIN",
    at: "2026-11-20T11:30:00+01:00",
    region: "US",
    metadata: TIZEN,
  },
];

const iso = (value: Date | string): string => new Date(value).toISOString();

/** Opens an in-memory database at the schema of the second release (before the hourly buckets). */
async function openOldDatabase(): Promise<Kysely<Database>> {
  const { db } = await openDatabase({ databaseUrl: undefined, dataDir: "memory://" });
  try {
    const migrations: Record<string, Migration> = {
      "2026_11_23_0001_initial": initial,
      "2026_11_24_0002_event_log": eventLog,
    };
    const migrator = new Migrator({
      db,
      provider: { getMigrations: () => Promise.resolve(migrations) },
    });
    const { error } = await migrator.migrateToLatest();
    if (error !== undefined) throw error;
    await insertOldRows(db);
  } catch (error) {
    await db.destroy();
    throw error;
  }
  return db;
}

async function insertOldRows(db: Kysely<Database>): Promise<void> {
  for (const [i, e] of OLD_EVENTS.entries()) {
    await sql`insert into raw_events (event_id, position, user_id, device_id, content_id, event_type,
        occurred_at, received_at, region, is_eu, has_consent, ip_hash, ip_prefix, error_code,
        do_not_track, is_late, extra_metadata)
      values (${e.id}, ${i + 1}, ${e.user}, ${e.device}, ${e.content}, ${e.type}, ${e.at},
        ${"2026-11-20T12:00:00Z"}, ${e.region}, ${e.region !== "US"}, true, ${"hash"},
        ${"10.0.0.0/24"}, ${e.errorCode ?? null}, false, ${e.isLate ?? false},
        ${JSON.stringify(e.metadata)}::jsonb)`.execute(db);
  }
  // The old all-time totals (late events left out), which the upgrade must not trust for counts.
  await sql`insert into content_stats (content_id, events, plays, errors, watch_time_ms)
    values ('c1', 5, 3, 1, 5000)`.execute(db);
  await sql`insert into content_region_stats (content_id, region, events, plays, errors, watch_time_ms)
    values ('c1', 'DE', 5, 3, 1, 5000), ('c2', 'FR', 2, 0, 2, 0)`.execute(db);
  await sql`insert into region_stats (region, is_eu, events) values ('DE', true, 5)`.execute(db);
  await sql`insert into region_error_codes (region, error_code, errors) values ('FR', 'E_NET', 1)`
    .execute(db);
  await sql`insert into region_platforms (region, platform, events) values ('DE', 'tizen', 3)`
    .execute(db);
  await sql`insert into device_stats (device_id, events) values ('d1', 3)`.execute(db);
  await sql`insert into risk_flags (flag_key, rule, rule_version, level, level_rank, entity_type,
      entity_id, event_id, user_id, region, is_eu, occurred_at, reason, evidence, flagged_events)
    values
      ('k1', 'error_burst', 1, 'high', 3, 'device', 'd4', 'e6', 'u4', 'FR', true,
        '2026-11-20T09:10:00Z', 'burst', '{}'::jsonb, 4),
      ('k2', 'error_burst', 1, 'medium', 2, 'device', 'd4', 'e7', 'u4', 'FR', true,
        '2026-11-20T09:20:00Z', 'burst', '{}'::jsonb, 3),
      ('k3', 'error_burst', 1, 'low', 1, 'device', 'd2', 'e9', 'u2', 'DE', true,
        '2026-11-20T10:40:00Z', 'burst', '{}'::jsonb, 2)`.execute(db);
  await sql`insert into stat_counters (name, value)
    values ('events:PLAY', 4), ('events:ERROR', 3), ('duplicate_events', 3)`.execute(db);
}

/** Opens the old database, upgrades it, and runs `check`; always closes the database. */
async function withUpgraded(check: (db: Kysely<Database>) => Promise<void>): Promise<void> {
  const db = await openOldDatabase();
  try {
    // The upgrade runs first; the migrations after it apply to the upgraded schema as well.
    assert.equal((await migrateToLatest(db))[0], "2026_11_30_0003_hourly_buckets");
    await check(db);
  } finally {
    await db.destroy();
  }
}

test("[db] upgrading to hourly buckets counts every raw event, late ones included, in its hour", async () => {
  await withUpgraded(async (db) => {
    const rows = await db.selectFrom("event_types_hourly").selectAll().execute();
    const total = rows.reduce((sum, r) => sum + Number(r.events), 0);
    assert.equal(total, OLD_EVENTS.length);
    const byHourType = Object.fromEntries(
      rows.map((
        r,
      ) => [`${iso(r.hour)} ${r.event_type}`, [Number(r.events), Number(r.late_events)]]),
    );
    assert.deepEqual(byHourType, {
      [`${H8} LOGIN`]: [1, 0],
      [`${H8} PLAY`]: [2, 0],
      [`${H8} ERROR`]: [1, 0],
      [`${H9} PLAY`]: [1, 0],
      [`${H9} ERROR`]: [2, 1],
      [`${H10} PLAY`]: [1, 1],
      [`${H10} ERROR`]: [1, 0],
      [`${H10} LOGIN`]: [1, 0],
    });
  });
});

test("[db] upgrading to hourly buckets keeps event totals and old watch time in the 1970 bucket", async () => {
  await withUpgraded(async (db) => {
    const rows = await db.selectFrom("event_facts_hourly").selectAll().execute();
    const sum = (pick: (r: typeof rows[number]) => unknown) =>
      rows.reduce((total, r) => total + Number(pick(r)), 0);
    assert.equal(sum((r) => r.events), 10);
    assert.equal(sum((r) => r.plays), 4);
    assert.equal(sum((r) => r.errors), 4);
    assert.equal(sum((r) => r.watch_time_ms), 5000);
    const watched = rows.filter((r) => Number(r.watch_time_ms) > 0);
    assert.equal(watched.length, 1);
    assert.equal(iso(watched[0].hour), BEFORE_UPGRADE);
    assert.equal(watched[0].content_id, "c1");
    assert.equal(watched[0].region, "DE");
    assert.equal(Number(watched[0].watch_time_ms), 5000);
    assert.equal(Number(watched[0].events), 0);

    const perHour = new Map<string, number>();
    for (const r of rows) {
      perHour.set(iso(r.hour), (perHour.get(iso(r.hour)) ?? 0) + Number(r.events));
    }
    assert.deepEqual(Object.fromEntries(perHour), {
      [BEFORE_UPGRADE]: 0,
      [H8]: 4,
      [H9]: 3,
      [H10]: 3,
    });

    const platforms = new Map<string, number>();
    for (const r of rows) {
      const key = `${r.platform}/${r.app_version}/${r.subscription_plan}`;
      platforms.set(key, (platforms.get(key) ?? 0) + Number(r.events));
    }
    assert.deepEqual(Object.fromEntries(platforms), {
      "tizen/5.1/unknown": 5,
      "webos/2.0/unknown": 3,
      "unknown/unknown/unknown": 2,
    });
  });
});

test("[db] upgrading to hourly buckets keeps error codes, device counts and flagged events", async () => {
  await withUpgraded(async (db) => {
    const codes = await db.selectFrom("error_codes_hourly").selectAll().execute();
    assert.deepEqual(
      codes.map((c) => `${iso(c.hour)} ${c.region} ${c.error_code} ${Number(c.errors)}`).sort(),
      [`${H8} FR E_DRM 1`, `${H9} FR E_NET 2`, `${H10} DE E_DRM 1`],
    );

    const devices = await db.selectFrom("device_facts_hourly").selectAll().execute();
    const byDevice = new Map<string, number[]>();
    for (const d of devices) {
      const [events, plays, errors] = byDevice.get(d.device_id) ?? [0, 0, 0];
      byDevice.set(d.device_id, [
        events + Number(d.events),
        plays + Number(d.plays),
        errors + Number(d.errors),
      ]);
    }
    assert.deepEqual(Object.fromEntries(byDevice), {
      d1: [4, 2, 0],
      d2: [2, 1, 1],
      d3: [1, 0, 1],
      d4: [2, 0, 2],
      d5: [1, 1, 0],
    });
    assert.equal(devices.filter((d) => d.device_id === "d1").length, 3);

    const flagged = await db.selectFrom("flagged_events_hourly").selectAll().execute();
    assert.deepEqual(
      flagged.map((f) => `${iso(f.hour)} ${f.rule} ${f.region} ${Number(f.flagged_events)}`).sort(),
      [`${H10} error_burst DE 2`, `${H9} error_burst FR 7`].sort(),
    );
  });
});

test("[db] upgrading to hourly buckets builds viewer sketches that count the distinct users", async () => {
  await withUpgraded(async (db) => {
    const sketches = await db.selectFrom("viewer_sketches_hourly").selectAll().execute();
    const all = sketches.filter((s) => s.scope === "");
    assert.deepEqual(all.map((s) => iso(s.hour)).sort(), [H10, H8, H9].sort());
    const distinctUsers = new Set(OLD_EVENTS.map((e) => e.user)).size;
    assert.equal(distinctUsers, 6);
    const estimate = estimateViewers(all.map((s) => s.registers));
    assert.ok(Math.abs(estimate - distinctUsers) <= 1, `estimated ${estimate} viewers of 6`);

    const hour8 = all.find((s) => iso(s.hour) === H8);
    assert.ok(hour8 !== undefined);
    assert.ok(Math.abs(estimateViewers([hour8.registers]) - 3) <= 1);
    const c2 = sketches.filter((s) => s.scope === "c:c2").map((s) => s.registers);
    assert.ok(Math.abs(estimateViewers(c2) - 3) <= 1, "c2 was watched by u3, u4 and u6");
    const fr = sketches.filter((s) => s.scope === "r:FR").map((s) => s.registers);
    assert.ok(Math.abs(estimateViewers(fr) - 2) <= 1, "FR had u3 and u4");
  });
});

test("[db] upgrading to hourly buckets keeps only the duplicate counter and drops the all-time tables", async () => {
  await withUpgraded(async (db) => {
    const counters = await db.selectFrom("stat_counters").selectAll().execute();
    assert.deepEqual(counters.map((c) => [c.name, Number(c.value)]), [["duplicate_events", 3]]);

    const tables = await sql<
      { table_name: string }
    >`select table_name from information_schema.tables
      where table_schema = 'public'`.execute(db);
    const names = new Set(tables.rows.map((r) => r.table_name));
    for (
      const gone of [
        "content_stats",
        "content_region_stats",
        "region_stats",
        "region_error_codes",
        "region_platforms",
        "device_stats",
      ]
    ) {
      assert.ok(!names.has(gone), `${gone} should be dropped`);
    }
    for (const kept of ["raw_events", "risk_flags", "stat_counters", "event_facts_hourly"]) {
      assert.ok(names.has(kept), `${kept} should exist`);
    }
    const raw = await db.selectFrom("raw_events").select((eb) => eb.fn.countAll().as("n"))
      .executeTakeFirstOrThrow();
    assert.equal(Number(raw.n), OLD_EVENTS.length);
  });
});

test("[db] getSummary() after upgrading to hourly buckets reports the old numbers", async () => {
  await withUpgraded(async (db) => {
    const summary = await getSummary(db);
    assert.equal(summary.total_events, 10);
    assert.equal(summary.watch_time_ms, 5000);
    assert.equal(summary.plays, 4);
    assert.equal(summary.errors, 4);
    assert.equal(summary.late_events, 2);
    assert.equal(summary.duplicate_events, 3);
    assert.equal(summary.events_by_type.LOGIN, 2);
    assert.ok(
      Math.abs(summary.unique_viewers - 6) <= 1,
      `unique_viewers ${summary.unique_viewers}`,
    );

    // A ranged read leaves the undated "before upgrade" watch time out.
    const hour9 = await getSummary(db, { fromMs: Date.parse(H9), toMs: Date.parse(H10) });
    assert.equal(hour9.total_events, 3);
    assert.equal(hour9.watch_time_ms, 0);
    assert.equal(hour9.late_events, 1);
    assert.ok(Math.abs(hour9.unique_viewers - 2) <= 1, `unique_viewers ${hour9.unique_viewers}`);
  });
});
