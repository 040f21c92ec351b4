import assert from "node:assert/strict";
import { Hono } from "hono";
import type { Kysely } from "kysely";
import { emptyBatch } from "../actors/pending.ts";
import { writeFlush } from "../db/flush.ts";
import type { Database } from "../db/schema.ts";
import type { Flag, Level } from "../rules/mod.ts";
import { testOnEveryDatabase } from "../tests/_harness.ts";
import { makeFlag, T0 } from "../tests/fixtures.ts";
import type { Principal } from "./auth.ts";
import { complianceRoutes } from "./compliance.ts";

const DPO: Principal = { name: "dpo", role: "privacy" };

/** One test per database (PGlite, and PostgreSQL when configured). */
function onEveryDatabase(name: string, scenario: (db: Kysely<Database>) => Promise<void>): void {
  testOnEveryDatabase("compliance", name, scenario);
}

/** The compliance routes as `createApp` mounts them, with `principal` as the caller. */
function appFor(db: Kysely<Database>, principal: Principal = DPO): Hono {
  const app = new Hono();
  app.use("*", async (c, next) => {
    c.set("principal", principal);
    await next();
  });
  app.route("/compliance", complianceRoutes(db, (region) => region === "DE"));
  return app;
}

/** Flushes the flags as a worker would: one batch, one transaction. */
async function raise(db: Kysely<Database>, ...flags: Flag[]): Promise<void> {
  const batch = emptyBatch();
  for (const flag of flags) batch.flags.set(flag.flagKey, flag);
  await writeFlush(db, batch);
}

/** A sighting of the default flag at `level`, raised by `eventId`. */
const sighting = (level: Level, eventId: string, overrides: Partial<Flag> = {}) =>
  makeFlag({
    level,
    eventId,
    reason: `${level} because of "${eventId}"`,
    ...overrides,
  });

interface HistoryRow {
  actor_name: string;
  actor_role: string;
  from_status: string;
  to_status: string;
  reason: string | null;
  assignee: string | null;
  level: string | null;
  evidence: { event_ids: string[] } | null;
}

interface FlagDetail {
  id: number;
  level: string;
  status: string;
  assignee: string | null;
  revision: number;
  reason: string;
  flagged_events: number;
  evidence: { event_ids: string[] };
  history: HistoryRow[];
}

async function patch(app: Hono, id: number | string, body: unknown): Promise<Response> {
  return await app.request(`http://test/compliance/flags/${id}`, {
    method: "PATCH",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function getJson<T>(app: Hono, path: string): Promise<T> {
  const res = await app.request(`http://test${path}`);
  assert.equal(res.status, 200, await res.clone().text());
  return await res.json();
}

async function onlyFlagId(app: Hono): Promise<number> {
  const list = await getJson<{ items: Array<{ id: number }> }>(app, "/compliance/events");
  assert.equal(list.items.length, 1);
  return list.items[0].id;
}

onEveryDatabase(
  "PATCH /compliance/flags/{id} records each decision and its actor in history",
  async (db) => {
    const app = appFor(db);
    await raise(db, sighting("MEDIUM", "e-1"));
    const id = await onlyFlagId(app);
    const fresh = await getJson<FlagDetail>(app, `/compliance/flags/${id}`);
    assert.deepEqual([fresh.status, fresh.assignee, fresh.revision, fresh.history], [
      "open",
      null,
      1,
      [],
    ]);

    const acknowledged = await patch(app, id, { status: "acknowledged", assignee: "ana" });
    assert.equal(acknowledged.status, 200, await acknowledged.clone().text());
    const afterAck: FlagDetail = await acknowledged.json();
    assert.deepEqual([afterAck.status, afterAck.assignee], ["acknowledged", "ana"]);
    // Without `assignee` the assignee stays; `null` clears it.
    const escalated = await patch(app, id, { status: "escalated", reason: "Needs legal" });
    assert.equal(((await escalated.json()) as FlagDetail).assignee, "ana");
    const resolved = await patch(app, id, {
      status: "resolved",
      reason: "Household confirmed by support ticket 7",
      assignee: null,
    });
    assert.equal(resolved.status, 200);

    const detail = await getJson<FlagDetail>(app, `/compliance/flags/${id}`);
    assert.deepEqual([detail.status, detail.assignee, detail.revision], ["resolved", null, 1]);
    assert.deepEqual(
      detail.history.map((h) => [h.actor_name, h.actor_role, h.from_status, h.to_status, h.reason]),
      [
        ["dpo", "privacy", "open", "acknowledged", null],
        ["dpo", "privacy", "acknowledged", "escalated", "Needs legal"],
        ["dpo", "privacy", "escalated", "resolved", "Household confirmed by support ticket 7"],
      ],
    );
    assert.deepEqual(detail.history.map((h) => [h.assignee, h.level]), [
      ["ana", "MEDIUM"],
      ["ana", "MEDIUM"],
      [null, "MEDIUM"],
    ]);
    const listed = await getJson<{ items: Array<{ status: string; assignee: string | null }> }>(
      app,
      "/compliance/events",
    );
    assert.deepEqual(listed.items.map((f) => [f.status, f.assignee]), [["resolved", null]]);
  },
);

onEveryDatabase(
  "PATCH /compliance/flags/{id} refuses a closing decision without a reason, bad input and unknown ids",
  async (db) => {
    const app = appFor(db);
    await raise(db, sighting("MEDIUM", "e-1"));
    const id = await onlyFlagId(app);
    for (const status of ["dismissed", "resolved"]) {
      for (const body of [{ status }, { status, reason: "   " }]) {
        const res = await patch(app, id, body);
        assert.equal(res.status, 422, JSON.stringify(body));
        const answer = await res.json();
        assert.deepEqual(answer.issues.map((i: { path: string }) => i.path), ["reason"]);
      }
    }
    const refused = [
      await patch(app, id, { status: "closed" }),
      await patch(app, id, { status: "acknowledged", note: "extra field" }),
      await patch(app, id, { status: "acknowledged", assignee: "" }),
    ];
    assert.deepEqual(refused.map((r) => r.status), [422, 422, 422]);
    for (const res of refused) await res.body?.cancel();
    const malformed = await patch(app, id, "{not json");
    assert.equal(malformed.status, 400);
    await malformed.body?.cancel();

    const nonNumeric = [
      await patch(app, "abc", { status: "acknowledged" }),
      await app.request("http://test/compliance/flags/1e3"),
    ];
    assert.deepEqual(nonNumeric.map((r) => r.status), [400, 400]);
    assert.match((await nonNumeric[0].json()).error, /^Invalid flag id: .*"abc"$/);
    await nonNumeric[1].body?.cancel();
    const unknown = [
      await patch(app, id + 1000, { status: "acknowledged" }),
      await app.request(`http://test/compliance/flags/${id + 1000}`),
    ];
    assert.deepEqual(unknown.map((r) => r.status), [404, 404]);
    for (const res of unknown) await res.body?.cancel();

    const untouched = await getJson<FlagDetail>(app, `/compliance/flags/${id}`);
    assert.deepEqual([untouched.status, untouched.history.length], ["open", 0]);
  },
);

onEveryDatabase(
  "an escalation re-opens a dismissed flag and keeps the replaced evidence in history",
  async (db) => {
    const app = appFor(db);
    await raise(db, sighting("MEDIUM", "e-1"));
    const id = await onlyFlagId(app);
    // Same level: the evidence is the latest snapshot, with no history row and no new revision.
    await raise(db, sighting("MEDIUM", "e-2"));
    let detail = await getJson<FlagDetail>(app, `/compliance/flags/${id}`);
    assert.deepEqual(detail.evidence.event_ids, ["e-2"]);
    assert.deepEqual([detail.reason, detail.revision, detail.history.length], [
      'MEDIUM because of "e-2"',
      1,
      0,
    ]);

    const dismissed = await patch(app, id, { status: "dismissed", reason: "Family travelling" });
    assert.equal(dismissed.status, 200);
    await dismissed.body?.cancel();
    // A dismissed flag stays dismissed at the same level (while its evidence keeps up).
    await raise(db, sighting("MEDIUM", "e-3"));
    detail = await getJson<FlagDetail>(app, `/compliance/flags/${id}`);
    assert.deepEqual([detail.status, detail.evidence.event_ids], ["dismissed", ["e-3"]]);

    await raise(db, sighting("HIGH", "e-4"));
    detail = await getJson<FlagDetail>(app, `/compliance/flags/${id}`);
    assert.deepEqual(
      [detail.status, detail.level, detail.revision, detail.flagged_events, detail.reason],
      ["open", "HIGH", 2, 4, 'HIGH because of "e-4"'],
    );
    assert.deepEqual(detail.evidence.event_ids, ["e-4"]);
    assert.deepEqual(
      detail.history.map((h) => [h.actor_name, h.from_status, h.to_status, h.reason, h.level]),
      [
        ["dpo", "open", "dismissed", "Family travelling", "MEDIUM"],
        ["pipeline", "dismissed", "open", "escalated to HIGH", "MEDIUM"],
      ],
    );
    assert.deepEqual(detail.history[1].evidence?.event_ids, ["e-3"]);
    assert.equal(detail.history[0].evidence, null);

    // A lower level adds its events but does not replace the evidence of the higher one.
    await raise(db, sighting("LOW", "e-5"));
    detail = await getJson<FlagDetail>(app, `/compliance/flags/${id}`);
    assert.deepEqual(
      [detail.level, detail.revision, detail.flagged_events, detail.history.length],
      ["HIGH", 2, 5, 2],
    );
    assert.deepEqual(detail.evidence.event_ids, ["e-4"]);
  },
);

onEveryDatabase(
  "an escalation keeps a flag under review in its status, and a stale review is refused",
  async (db) => {
    const app = appFor(db);
    await raise(db, sighting("LOW", "e-1"));
    const id = await onlyFlagId(app);
    const acknowledged = await patch(app, id, { status: "acknowledged", revision: 1 });
    assert.equal(acknowledged.status, 200);
    await acknowledged.body?.cancel();
    await raise(db, sighting("MEDIUM", "e-2"));
    // The reviewer saw revision 1: deciding on it now would ignore the new evidence.
    const stale = await patch(app, id, { status: "dismissed", reason: "Seen", revision: 1 });
    assert.equal(stale.status, 409);
    assert.match((await stale.json()).error, /at revision 2, received 1/);
    const detail = await getJson<FlagDetail>(app, `/compliance/flags/${id}`);
    assert.deepEqual([detail.status, detail.level, detail.revision], ["acknowledged", "MEDIUM", 2]);
    assert.deepEqual(detail.history.map((h) => [h.actor_name, h.from_status, h.to_status]), [
      ["dpo", "open", "acknowledged"],
      ["pipeline", "acknowledged", "acknowledged"],
    ]);
  },
);

onEveryDatabase(
  "/compliance/events filters by status, user, entity and event time; summary counts statuses",
  async (db) => {
    const app = appFor(db);
    const at = (hours: number) => T0 + hours * 3_600_000;
    await raise(
      db,
      sighting("MEDIUM", "a", { flagKey: "k-a", userId: "u-1", entityId: "u-1", atMs: at(0) }),
      sighting("HIGH", "b", { flagKey: "k-b", userId: "u-1", entityId: "d-9", atMs: at(1) }),
      sighting("LOW", "c", { flagKey: "k-c", userId: "u-2", entityId: "u-2", atMs: at(2) }),
    );
    type Listed = { items: Array<{ id: number; event_id: string; status: string }> };
    const ids = async (query: string) =>
      (await getJson<Listed>(app, `/compliance/events?${query}`)).items.map((f) => f.event_id);
    const all = await getJson<Listed>(app, "/compliance/events");
    const idOf = (eventId: string) => all.items.find((f) => f.event_id === eventId)!.id;
    const dismissed = await patch(app, idOf("b"), { status: "dismissed", reason: "Test device" });
    assert.equal(dismissed.status, 200);
    await dismissed.body?.cancel();

    assert.deepEqual(await ids("status=dismissed"), ["b"]);
    assert.deepEqual(await ids("status=open"), ["c", "a"]);
    assert.deepEqual(await ids("user_id=u-1"), ["b", "a"]);
    assert.deepEqual(await ids("entity_id=d-9"), ["b"]);
    assert.deepEqual(await ids(`from=${new Date(at(1)).toISOString()}`), ["c", "b"]);
    assert.deepEqual(await ids(`to=${new Date(at(1)).toISOString()}`), ["a"]);
    assert.deepEqual(await ids("status=&user_id=&entity_id=&from=&to="), ["c", "b", "a"]);
    assert.deepEqual(await ids("status=open&user_id=u-1"), ["a"]);

    const refused = [
      await app.request("http://test/compliance/events?status=closed"),
      await app.request("http://test/compliance/events?from=2026-11-23T12:30:00Z"),
    ];
    assert.deepEqual(refused.map((r) => r.status), [400, 400]);
    assert.match((await refused[1].json()).error, /not on a UTC hour boundary/);
    await refused[0].body?.cancel();

    const summary = await getJson<{ flags_by_status: Record<string, number> }>(
      app,
      "/compliance/summary",
    );
    assert.deepEqual(summary.flags_by_status, {
      open: 2,
      acknowledged: 0,
      escalated: 0,
      dismissed: 1,
      resolved: 0,
    });
    const ranged = await getJson<{ flags_by_status: Record<string, number> }>(
      app,
      `/compliance/summary?from=${new Date(at(2)).toISOString()}`,
    );
    assert.equal(ranged.flags_by_status.open, 1);
    assert.equal(ranged.flags_by_status.dismissed, 0);
  },
);
