import assert from "node:assert/strict";
import { Hono } from "hono";
import { type Kysely, sql } from "kysely";
import { z } from "zod";
import {
  attachRelated,
  createMaintenance,
  openIncident,
  recoverIncident,
  updateIncident,
} from "../db/incidents.ts";
import type { Database } from "../db/schema.ts";
import { startHarness, testOnEveryDatabase } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";
import { makeIncidentReading, T0 } from "../tests/fixtures.ts";
import type { Principal } from "./auth.ts";
import { incidentRoutes } from "./incidents.ts";
import { ROUTE_DOCS, type RouteDoc } from "./openapi.ts";

const DPO: Principal = { name: "dpo", role: "privacy" };
const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString();

/** One test per database (PGlite, and PostgreSQL when configured). */
function onEveryDatabase(name: string, scenario: (db: Kysely<Database>) => Promise<void>): void {
  testOnEveryDatabase("incidents", name, scenario);
}

/** The incident routes as `createApp` mounts them, with `principal` as the caller and T0 as now. */
function appFor(db: Kysely<Database>, principal: Principal = DPO): Hono {
  const app = new Hono();
  app.use("*", async (c, next) => {
    c.set("principal", principal);
    await next();
  });
  app.route("/compliance", incidentRoutes(db, () => T0));
  return app;
}

async function send(app: Hono, method: string, path: string, body: unknown): Promise<Response> {
  return await app.request(`http://test${path}`, {
    method,
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function getJson<T>(app: Hono, path: string): Promise<T> {
  const res = await app.request(`http://test${path}`);
  assert.equal(res.status, 200, await res.clone().text());
  return await res.json();
}

/** The 422 answer's issue paths. */
async function refusedPaths(res: Response): Promise<string[]> {
  const text = await res.text();
  assert.equal(res.status, 422, text);
  return (JSON.parse(text).issues as { path: string }[]).map((i) => i.path);
}

/** Parses `body` with the schema ROUTE_DOCS documents, so the reference cannot drift. */
function assertDocumented(method: RouteDoc["method"], path: string, status: number, body: unknown) {
  const schema = ROUTE_DOCS.find((r) => r.method === method && r.path === path)?.responses[status]
    ?.schema;
  assert.ok(schema !== undefined, `${method} ${path} documents no ${status} schema`);
  const parsed = schema.safeParse(body);
  assert.ok(parsed.success, parsed.success ? "" : z.prettifyError(parsed.error));
}

interface Listed {
  incidents: Array<{ id: string; key: string; state: string; status: string }>;
}

interface Detail {
  id: string;
  state: string;
  status: string;
  level: string;
  revision: number;
  windows: number;
  viewers: number;
  recovered_at: string | null;
  muted_until: string | null;
  reason: string | null;
  related: Array<{ series: string; key: string }>;
  history: Array<{ revision: number; actor: string; change: Record<string, unknown> }>;
}

onEveryDatabase(
  "GET /compliance/incidents filters by state, status, series and time, newest first",
  async (db) => {
    const app = appFor(db);
    const tizen = await openIncident(db, makeIncidentReading(), T0 - 5 * MINUTE_MS);
    await recoverIncident(db, tizen, T0 + 20 * MINUTE_MS);
    const webos = await openIncident(
      db,
      makeIncidentReading({
        series: "errors:platform",
        key: "webos",
        kind: "rate",
        windowStartMs: T0 + 5 * MINUTE_MS,
      }),
      T0,
    );
    const acknowledged = await send(app, "PATCH", `/compliance/incidents/${webos}`, {
      status: "acknowledged",
    });
    assert.equal(acknowledged.status, 200, await acknowledged.clone().text());
    await acknowledged.body?.cancel();
    await openIncident(
      db,
      makeIncidentReading({
        series: "consent:region",
        key: "DE",
        kind: "share",
        windowStartMs: T0 + 10 * MINUTE_MS,
      }),
      T0 + 5 * MINUTE_MS,
    );

    const keys = async (query: string) =>
      (await getJson<Listed>(app, `/compliance/incidents?${query}`)).incidents.map((i) => i.key);
    assert.deepEqual(await keys(""), ["DE", "webos", "tizen"]);
    assert.deepEqual(await keys("state=active"), ["DE", "webos"]);
    assert.deepEqual(await keys("state=recovered"), ["tizen"]);
    assert.deepEqual(await keys("status=acknowledged"), ["webos"]);
    assert.deepEqual(await keys("status=open"), ["DE", "tizen"]);
    assert.deepEqual(await keys("series=volume:platform"), ["tizen"]);
    assert.deepEqual(await keys("state=active&status=open"), ["DE"]);
    // Overlap: started before `to`, still active or recovered at or after `from`.
    assert.deepEqual(await keys(`to=${iso(T0)}`), ["tizen"]);
    assert.deepEqual(await keys(`from=${iso(T0 + 30 * MINUTE_MS)}`), ["DE", "webos"]);
    assert.deepEqual(await keys(`from=${iso(T0 + 7 * MINUTE_MS)}`), ["DE", "webos", "tizen"]);
    assert.deepEqual(await keys("limit=1"), ["DE"]);
    assert.deepEqual(await keys("state=&status=&series=&from=&to="), ["DE", "webos", "tizen"]);
    assertDocumented(
      "get",
      "/compliance/incidents",
      200,
      await getJson(app, "/compliance/incidents"),
    );

    const refused = await Promise.all(
      [
        "state=closed",
        "status=escalated",
        "series=volume:nothing",
        "limit=0",
        "limit=501",
        "from=yesterday",
        `from=${iso(T0)}&to=${iso(T0)}`,
        "cursor=1",
      ].map((q) => app.request(`http://test/compliance/incidents?${q}`)),
    );
    assert.deepEqual(refused.map((r) => r.status), [400, 400, 400, 400, 400, 400, 400, 400]);
    const [state, , , , , from] = await Promise.all(refused.map((r) => r.json()));
    assert.deepEqual(state.issues.map((i: { path: string }) => i.path), ["state"]);
    assert.match(state.issues[0].message, /^Invalid state: expected one of active or recovered/);
    assert.match(from.error, /^Invalid from: expected an ISO-8601 date-time/);
  },
);

onEveryDatabase(
  "GET /compliance/incidents/{id} shows each revision in history and writes outbox rows for alerts only",
  async (db) => {
    const app = appFor(db);
    const id = await openIncident(db, makeIncidentReading(), T0 - 5 * MINUTE_MS);
    const window = (n: number) => T0 + n * 5 * MINUTE_MS;
    // A level change alerts; the same level within the hour does not.
    await updateIncident(
      db,
      id,
      makeIncidentReading({ level: "MEDIUM", windowStartMs: window(1), viewers: 150 }),
    );
    await updateIncident(
      db,
      id,
      makeIncidentReading({ level: "MEDIUM", windowStartMs: window(2), viewers: 90 }),
    );
    await attachRelated(db, id, {
      series: "volume:app_version",
      key: "7.1",
      opened_at: iso(window(1)),
      expected: 700,
      observed: 20,
    });
    await recoverIncident(db, id, window(6));
    const acknowledged = await send(app, "PATCH", `/compliance/incidents/${id}`, {
      status: "acknowledged",
      reason: "Store rollout of 7.1 paused",
    });
    assert.equal(acknowledged.status, 200, await acknowledged.clone().text());
    const answer: Detail = await acknowledged.json();
    assert.deepEqual([answer.status, answer.state, answer.revision], [
      "acknowledged",
      "recovered",
      4,
    ]);
    assertDocumented("patch", "/compliance/incidents/{id}", 200, answer);

    const detail = await getJson<Detail>(app, `/compliance/incidents/${id}`);
    assertDocumented("get", "/compliance/incidents/{id}", 200, detail);
    assert.deepEqual(
      [detail.state, detail.status, detail.level, detail.windows, detail.viewers, detail.reason],
      ["recovered", "acknowledged", "MEDIUM", 3, 150, "Store rollout of 7.1 paused"],
    );
    assert.equal(detail.recovered_at, iso(window(6)));
    assert.deepEqual(detail.related.map((r) => [r.series, r.key]), [["volume:app_version", "7.1"]]);
    assert.deepEqual(
      detail.history.map((h) => [h.revision, h.actor, h.change.event]),
      [[1, "detector", "opened"], [2, "detector", "level"], [3, "detector", "recovered"], [
        4,
        "dpo",
        "review",
      ]],
    );
    assert.deepEqual(detail.history[3].change, {
      event: "review",
      status: "acknowledged",
      reason: "Store rollout of 7.1 paused",
      muted_until: null,
    });

    const outbox = await sql<{ incident_id: unknown; revision: number; reason: string }>`
      select incident_id, revision, reason from incident_outbox order by revision`.execute(db);
    assert.deepEqual(
      outbox.rows.map((r) => [String(r.incident_id), Number(r.revision), r.reason]),
      [[id, 1, "opened"], [id, 2, "level"], [id, 3, "recovered"]],
    );
  },
);

onEveryDatabase(
  "PATCH /compliance/incidents/{id} needs a reason to resolve and a future muted_until to mute",
  async (db) => {
    const app = appFor(db);
    const id = await openIncident(db, makeIncidentReading(), T0 - 5 * MINUTE_MS);
    const patch = (body: unknown) => send(app, "PATCH", `/compliance/incidents/${id}`, body);

    assert.deepEqual(await refusedPaths(await patch({ status: "resolved" })), ["reason"]);
    assert.deepEqual(await refusedPaths(await patch({ status: "resolved", reason: "  " })), [
      "reason",
    ]);
    assert.deepEqual(
      await refusedPaths(await patch({ status: "resolved", reason: "x".repeat(501) })),
      [
        "reason",
      ],
    );
    assert.deepEqual(await refusedPaths(await patch({ status: "muted" })), ["muted_until"]);
    assert.deepEqual(
      await refusedPaths(await patch({ status: "muted", muted_until: iso(T0 - MINUTE_MS) })),
      ["muted_until"],
    );
    assert.deepEqual(
      await refusedPaths(await patch({ status: "muted", muted_until: "tomorrow" })),
      ["muted_until"],
    );
    assert.deepEqual(
      await refusedPaths(await patch({ status: "acknowledged", muted_until: iso(T0 + DAY_MS) })),
      ["muted_until"],
    );
    assert.deepEqual(await refusedPaths(await patch({ status: "closed" })), ["status"]);
    assert.deepEqual(await refusedPaths(await patch({ status: "open", note: "extra" })), [
      "(root)",
    ]);
    const malformed = await patch("{not json");
    assert.equal(malformed.status, 400);
    await malformed.body?.cancel();

    const past = await (await patch({ status: "muted", muted_until: iso(T0 - MINUTE_MS) })).json();
    assert.match(past.error, /^Invalid incident review: see issues$/);
    assert.match(past.issues[0].message, /must be after now \(2026-11-23T12:00:00\.000Z\)/);

    const untouched = await getJson<Detail>(app, `/compliance/incidents/${id}`);
    assert.deepEqual([untouched.status, untouched.revision, untouched.history.length], [
      "open",
      1,
      1,
    ]);

    const muted = await patch({ status: "muted", muted_until: "2026-11-23T15:00:00+01:00" });
    assert.equal(muted.status, 200, await muted.clone().text());
    assert.equal(((await muted.json()) as Detail).muted_until, "2026-11-23T14:00:00.000Z");
    const resolved = await patch({ status: "resolved", reason: "Fixed in 7.1.1" });
    assert.equal(resolved.status, 200);
    const detail: Detail = await resolved.json();
    assert.deepEqual([detail.status, detail.muted_until, detail.reason], [
      "resolved",
      null,
      "Fixed in 7.1.1",
    ]);
    assert.deepEqual(detail.history.map((h) => [h.actor, h.change.status]), [
      ["detector", undefined],
      ["dpo", "muted"],
      ["dpo", "resolved"],
    ]);
  },
);

onEveryDatabase("unknown and non-numeric incident ids answer 404", async (db) => {
  const app = appFor(db);
  const id = await openIncident(db, makeIncidentReading(), T0);
  const unknown = String(Number(id) + 1000);
  const answers = [
    await app.request(`http://test/compliance/incidents/${unknown}`),
    await app.request("http://test/compliance/incidents/abc"),
    await app.request("http://test/compliance/incidents/1e3"),
    await send(app, "PATCH", `/compliance/incidents/${unknown}`, { status: "acknowledged" }),
    await send(app, "PATCH", "/compliance/incidents/abc", { status: "acknowledged" }),
  ];
  assert.deepEqual(answers.map((r) => r.status), [404, 404, 404, 404, 404]);
  const bodies = await Promise.all(answers.map((r) => r.json()));
  assert.deepEqual(bodies[1], { error: 'Not found: incident "abc"', issues: [] });
});

onEveryDatabase("POST /compliance/maintenance validates a window and GET lists it", async (db) => {
  const app = appFor(db);
  const post = (body: unknown) => send(app, "POST", "/compliance/maintenance", body);
  const window = {
    starts_at: iso(T0 + DAY_MS),
    ends_at: iso(T0 + DAY_MS + 2 * 3_600_000),
    series: "volume:platform",
    key: "webos",
    reason: "webOS store update",
  };

  assert.deepEqual(await refusedPaths(await post({ ...window, ends_at: iso(T0) })), ["ends_at"]);
  assert.deepEqual(await refusedPaths(await post({ ...window, ends_at: window.starts_at })), [
    "ends_at",
  ]);
  assert.deepEqual(
    await refusedPaths(await post({ ...window, ends_at: iso(T0 + 33 * DAY_MS) })),
    ["ends_at"],
  );
  assert.deepEqual(await refusedPaths(await post({ ...window, series: undefined })), ["key"]);
  assert.deepEqual(await refusedPaths(await post({ ...window, series: "volume:nothing" })), [
    "series",
  ]);
  assert.deepEqual(await refusedPaths(await post({ ...window, reason: "" })), ["reason"]);
  assert.deepEqual(await refusedPaths(await post({ ...window, starts_at: "soon" })), [
    "starts_at",
  ]);

  const created = await post(window);
  assert.equal(created.status, 201, await created.clone().text());
  const body = await created.json();
  assertDocumented("post", "/compliance/maintenance", 201, body);
  assert.deepEqual({ ...body, id: undefined }, {
    ...window,
    id: undefined,
    created_by: "dpo",
  });
  const everything = await post({ ...window, series: undefined, key: undefined });
  assert.equal(everything.status, 201);
  assert.deepEqual([(await everything.json()).series], [null]);
  // Beyond the default range (30 days ahead of now).
  await createMaintenance(
    db,
    { startsAtMs: T0 + 40 * DAY_MS, endsAtMs: T0 + 41 * DAY_MS, reason: "Later" },
    "ops",
  );

  type Windows = { from: string; to: string; windows: Array<{ reason: string; key: string }> };
  const listed = await getJson<Windows>(app, "/compliance/maintenance");
  assertDocumented("get", "/compliance/maintenance", 200, listed);
  assert.deepEqual([listed.from, listed.to], [iso(T0 - 7 * DAY_MS), iso(T0 + 30 * DAY_MS)]);
  assert.deepEqual(listed.windows.map((w) => [w.reason, w.key]), [
    ["webOS store update", "webos"],
    ["webOS store update", null],
  ]);
  const reasons = async (query: string) =>
    (await getJson<Windows>(app, `/compliance/maintenance?${query}`)).windows.map((w) => w.reason);
  assert.deepEqual(await reasons(`to=${iso(T0 + DAY_MS)}`), []);
  assert.deepEqual(
    await reasons(`from=${iso(T0 + DAY_MS + MINUTE_MS)}&to=${iso(T0 + 50 * DAY_MS)}`),
    [
      "webOS store update",
      "webOS store update",
      "Later",
    ],
  );
  const refused = [
    await app.request(`http://test/compliance/maintenance?from=${iso(T0 + 31 * DAY_MS)}`),
    await app.request("http://test/compliance/maintenance?from=soon"),
    await app.request("http://test/compliance/maintenance?series=volume:platform"),
  ];
  assert.deepEqual(refused.map((r) => r.status), [400, 400, 400]);
  for (const res of refused) await res.body?.cancel();
});

test("[http] analysts read incidents and maintenance; reviews and the rest of /compliance need privacy", async () => {
  const h = await startHarness({
    apiTokens: [
      { role: "analyst", name: "ana", secret: "analyst-secret" },
      { role: "privacy", name: "dpo", secret: "privacy-secret" },
    ],
  });
  try {
    const id = await openIncident(
      h.pipeline.db,
      makeIncidentReading({ windowStartMs: Date.now() }),
      Date.now(),
    );
    const call = async (token: string, method: string, path: string, body?: unknown) => {
      const res = await h.pipeline.app.request(`http://test${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      await res.body?.cancel();
      return `${method} ${path} ${res.status}`;
    };
    const future = iso(Date.now() + DAY_MS);
    const window = { starts_at: future, ends_at: iso(Date.now() + 2 * DAY_MS), reason: "Upgrade" };
    assert.deepEqual(
      [
        await call("analyst-secret", "GET", "/compliance/incidents"),
        await call("analyst-secret", "GET", `/compliance/incidents/${id}`),
        await call("analyst-secret", "GET", "/compliance/maintenance"),
        await call("analyst-secret", "PATCH", `/compliance/incidents/${id}`, { status: "open" }),
        await call("analyst-secret", "POST", "/compliance/maintenance", window),
        await call("analyst-secret", "GET", "/compliance/summary"),
        await call("privacy-secret", "PATCH", `/compliance/incidents/${id}`, {
          status: "acknowledged",
        }),
        await call("privacy-secret", "POST", "/compliance/maintenance", window),
      ],
      [
        "GET /compliance/incidents 200",
        `GET /compliance/incidents/${id} 200`,
        "GET /compliance/maintenance 200",
        `PATCH /compliance/incidents/${id} 403`,
        "POST /compliance/maintenance 403",
        "GET /compliance/summary 403",
        `PATCH /compliance/incidents/${id} 200`,
        "POST /compliance/maintenance 201",
      ],
    );
  } finally {
    await h.pipeline.stop();
  }
});
