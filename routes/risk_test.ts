import assert from "node:assert/strict";
import { Hono } from "hono";
import type { Kysely } from "kysely";
import { emptyBatch } from "../actors/pending.ts";
import { writeFlush } from "../db/flush.ts";
import { decodeRiskCursor, encodeRiskCursor, type EntityRisk } from "../db/risk_queries.ts";
import type { Database } from "../db/schema.ts";
import type { EntityType, Flag, Level, RuleId } from "../rules/mod.ts";
import { testOnEveryDatabase } from "../tests/_harness.ts";
import { makeFlag, T0 } from "../tests/fixtures.ts";
import { complianceRoutes } from "./compliance.ts";

const DAY_MS = 86_400_000;
/** The clock of every test: scores decay from the flags' event time to here. */
const NOW = T0 + 90 * DAY_MS;

/** One test per database (PGlite, and PostgreSQL when configured). */
function onEveryDatabase(name: string, scenario: (db: Kysely<Database>) => Promise<void>): void {
  testOnEveryDatabase("risk", name, scenario);
}

/** The compliance routes as `createApp` mounts them, with the clock stopped at `NOW`. */
function appFor(db: Kysely<Database>): Hono {
  const app = new Hono();
  app.route("/compliance", complianceRoutes(db, (region) => region === "DE", () => NOW));
  return app;
}

/** Flushes the flags as a worker would: one batch, one transaction. */
async function raise(db: Kysely<Database>, ...flags: Flag[]): Promise<void> {
  const batch = emptyBatch();
  for (const flag of flags) batch.flags.set(flag.flagKey, flag);
  await writeFlush(db, batch);
}

let flagCount = 0;

/** A flag of `rule` at `level` on an entity, occurred `ageDays` before `NOW`. */
function flagOn(
  entityType: EntityType,
  entityId: string,
  rule: RuleId,
  level: Level,
  ageDays: number,
): Flag {
  flagCount += 1;
  return makeFlag({
    flagKey: `${rule}:${entityId}:${flagCount}`,
    rule,
    level,
    entityType,
    entityId,
    eventId: `e-${flagCount}`,
    atMs: NOW - ageDays * DAY_MS,
  });
}

async function getJson<T>(app: Hono, path: string): Promise<T> {
  const res = await app.request(`http://test${path}`);
  assert.equal(res.status, 200, await res.clone().text());
  return await res.json();
}

type Page = { items: EntityRisk[]; next_cursor: string | null };

const ranking = async (app: Hono, query = ""): Promise<string[]> =>
  (await getJson<Page>(app, `/compliance/risk?${query}`)).items
    .map((r) => `${r.entity_type}/${r.entity_id}:${r.score}`);

onEveryDatabase(
  "GET /compliance/risk/{type}/{id} scores weight × level × half-life decay, rounded",
  async (db) => {
    const app = appFor(db);
    await raise(
      db,
      flagOn("user", "u-1", "account_sharing", "HIGH", 15),
      flagOn("user", "u-1", "retention", "MEDIUM", 60),
    );
    const risk = await getJson<EntityRisk>(app, "/compliance/risk/user/u-1");
    // 1 × 10 × 0.5^(15/30) + 1.5 × 3 × 0.5^(60/30) = 7.0711 + 1.125 = 8.1961
    assert.deepEqual(risk, {
      entity_type: "user",
      entity_id: "u-1",
      score: 8.2,
      level: "MEDIUM",
      flags_by_rule: { privacy: 0, retention: 1, account_sharing: 1, content_quality: 0, qoe: 0 },
      flags_by_status: { open: 2, acknowledged: 0, escalated: 0, dismissed: 0, resolved: 0 },
      first_flag_at: new Date(NOW - 60 * DAY_MS).toISOString(),
      last_flag_at: new Date(NOW - 15 * DAY_MS).toISOString(),
      open_flags: 2,
    });
    // A flag dated a little after the clock (a TV ahead of it, within MAX_FUTURE_SKEW_MS) counts
    // as new: its weight, to the rounding of the score.
    await raise(db, flagOn("device", "d-1", "content_quality", "LOW", -5 / 1_440));
    assert.equal((await getJson<EntityRisk>(app, "/compliance/risk/device/d-1")).score, 1);
  },
);

onEveryDatabase(
  "GET /compliance/risk ranks entities by score, filters by type and level, pages by cursor",
  async (db) => {
    const app = appFor(db);
    await raise(
      db,
      flagOn("user", "u-high", "account_sharing", "HIGH", 0),
      flagOn("user", "u-high", "privacy", "HIGH", 0),
      flagOn("user", "u-high", "privacy", "LOW", 30),
      flagOn("device", "d-mid", "content_quality", "HIGH", 30),
      flagOn("content", "c-mid", "content_quality", "MEDIUM", 0),
      flagOn("user", "u-tie-b", "privacy", "MEDIUM", 0),
      flagOn("user", "u-tie-a", "privacy", "MEDIUM", 0),
      flagOn("user", "u-old", "retention", "HIGH", 300),
    );
    const all = [
      "user/u-high:20.5",
      "device/d-mid:5",
      "content/c-mid:3",
      "user/u-tie-a:3",
      "user/u-tie-b:3",
      "user/u-old:0.01",
    ];
    assert.deepEqual(await ranking(app), all);
    assert.deepEqual(await ranking(app, "entity_type=user"), [
      "user/u-high:20.5",
      "user/u-tie-a:3",
      "user/u-tie-b:3",
      "user/u-old:0.01",
    ]);
    assert.deepEqual(await ranking(app, "level=high"), ["user/u-high:20.5"]);
    assert.deepEqual(await ranking(app, "level=MEDIUM"), ["device/d-mid:5"]);
    assert.deepEqual(await ranking(app, "level=LOW&entity_type=content"), ["content/c-mid:3"]);
    assert.deepEqual(await ranking(app, "entity_type=&level=&limit=&cursor="), all);
    const levels = (await getJson<Page>(app, "/compliance/risk")).items.map((r) => r.level);
    assert.deepEqual(levels, ["HIGH", "MEDIUM", "LOW", "LOW", "LOW", "LOW"]);

    // Walking two at a time visits every entity once, in the same order, across tied scores.
    const walked: string[] = [];
    let cursor: string | null = "";
    let pages = 0;
    while (cursor !== null) {
      const page: Page = await getJson<Page>(app, `/compliance/risk?limit=2&cursor=${cursor}`);
      walked.push(...page.items.map((r) => `${r.entity_type}/${r.entity_id}:${r.score}`));
      cursor = page.next_cursor;
      pages += 1;
    }
    assert.deepEqual([walked, pages], [all, 3]);
  },
);

onEveryDatabase(
  "a dismissed or resolved flag stops counting at once, and the entity stays listed",
  async (db) => {
    const app = appFor(db);
    await raise(
      db,
      flagOn("user", "u-1", "account_sharing", "HIGH", 0),
      flagOn("user", "u-1", "privacy", "MEDIUM", 0),
      flagOn("user", "u-2", "privacy", "HIGH", 0),
    );
    assert.deepEqual(await ranking(app), ["user/u-1:13", "user/u-2:10"]);
    await db.updateTable("risk_flags").set({ status: "dismissed" })
      .where("entity_id", "=", "u-1").where("rule", "=", "account_sharing").execute();
    await db.updateTable("risk_flags").set({ status: "acknowledged" })
      .where("entity_id", "=", "u-1").where("rule", "=", "privacy").execute();
    assert.deepEqual(await ranking(app), ["user/u-2:10", "user/u-1:3"]);
    const risk = await getJson<EntityRisk>(app, "/compliance/risk/user/u-1");
    assert.deepEqual([risk.level, risk.open_flags, risk.flags_by_status], ["LOW", 1, {
      open: 0,
      acknowledged: 1,
      escalated: 0,
      dismissed: 1,
      resolved: 0,
    }]);

    await db.updateTable("risk_flags").set({ status: "resolved" })
      .where("entity_id", "=", "u-2").execute();
    const handled = await getJson<EntityRisk>(app, "/compliance/risk/user/u-2");
    assert.deepEqual([handled.score, handled.level, handled.open_flags], [0, "LOW", 0]);
    assert.deepEqual(await ranking(app), ["user/u-1:3", "user/u-2:0"]);
  },
);

onEveryDatabase(
  "/compliance/risk answers 404 for an unflagged entity and 400 for bad input",
  async (db) => {
    const app = appFor(db);
    await raise(db, flagOn("user", "u-1", "privacy", "LOW", 0));
    const unknown = [
      await app.request("http://test/compliance/risk/user/u-2"),
      // Same id, other kind of entity.
      await app.request("http://test/compliance/risk/device/u-1"),
    ];
    assert.deepEqual(unknown.map((r) => r.status), [404, 404]);
    assert.equal((await unknown[0].json()).error, 'Not found: no flag on user "u-2"');
    await unknown[1].body?.cancel();

    const badPath = await app.request("http://test/compliance/risk/robot/u-1");
    assert.equal(badPath.status, 400);
    assert.match((await badPath.json()).error, /^Invalid entity type: .*"robot"$/);

    const truncated = encodeRiskCursor({ score: "1.00", entityType: "user", entityId: "x" })
      .slice(0, -2);
    for (
      const query of [
        "entity_type=robot",
        "level=CRITICAL",
        "limit=0",
        "limit=201",
        "limit=ten",
        "cursor=not-a-cursor",
        `cursor=${truncated}`,
        "sort=score",
      ]
    ) {
      const res = await app.request(`http://test/compliance/risk?${query}`);
      assert.equal(res.status, 400, query);
      const answer = await res.json();
      assert.equal(answer.error, "Invalid query: see issues");
      assert.ok(answer.issues.length > 0, query);
    }
    assert.equal((await getJson<Page>(app, "/compliance/risk?limit=200")).items.length, 1);
  },
);

Deno.test("encodeRiskCursor() round-trips an id with separators and non-ASCII characters", () => {
  const cursor = { score: "12.50", entityType: "content", entityId: "c|1/ü+é" };
  assert.deepEqual(decodeRiskCursor(encodeRiskCursor(cursor)), cursor);
  const unpadded = (text: string) => btoa(text).replace(/=+$/, "");
  assert.deepEqual(decodeRiskCursor(unpadded("0.50|user|u-1")), {
    score: "0.50",
    entityType: "user",
    entityId: "u-1",
  });
  for (
    const text of ["-12.5|user|u-1", "x|user|u-1", "1.00|robot|u-1", "1.00|user|", "1.00|user"]
  ) {
    assert.equal(decodeRiskCursor(unpadded(text)), null, text);
  }
});
