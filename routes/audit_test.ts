import assert from "node:assert/strict";
import { Hono } from "hono";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.ts";
import { createLogger } from "../logger.ts";
import { startHarness, testOnEveryDatabase } from "../tests/_harness.ts";
import {
  auditRoutes,
  auditTrail,
  insertAuditRow,
  pruneAuditLog,
  requestId,
  sanitizeRequestId,
} from "./audit.ts";
import { type ApiToken, authenticate, requireRole } from "./auth.ts";
import { test } from "../tests/_permissions.ts";

const T0 = Date.parse("2026-11-30T10:00:00Z");

const TOKENS: ApiToken[] = [
  { role: "ingest", name: "tv-fleet", secret: "tv-secret-0001" },
  { role: "analyst", name: "ana", secret: "analyst-secret-0002" },
  { role: "privacy", name: "dpo", secret: "privacy-secret-0003" },
  { role: "admin", name: "ops", secret: "admin-secret-0004" },
];
const bearer = (name: string) => ({
  authorization: `Bearer ${TOKENS.find((t) => t.name === name)!.secret}`,
});

/** One test per database (PGlite, and PostgreSQL when configured). */
function onEveryDatabase(name: string, scenario: (db: Kysely<Database>) => Promise<void>): void {
  testOnEveryDatabase("audit", name, scenario);
}

Deno.test("sanitizeRequestId() keeps up to 128 safe characters or gives up", () => {
  assert.equal(sanitizeRequestId("abc-123_x.y"), "abc-123_x.y");
  assert.equal(sanitizeRequestId("a b/c\r\nd<script>"), "abcdscript");
  assert.equal(sanitizeRequestId("x".repeat(300))?.length, 128);
  assert.equal(sanitizeRequestId("///"), undefined);
  assert.equal(sanitizeRequestId(undefined), undefined);
});

test("[audit] reads of compliance data and refusals are written, never a secret; /audit is admin only", async () => {
  const h = await startHarness({ apiTokens: TOKENS });
  try {
    const compliance = await h.get("/compliance/summary?user_id=u-7", {
      ...bearer("dpo"),
      "x-request-id": "trace-1/abc",
    });
    assert.equal(compliance.status, 200);
    assert.equal(compliance.headers.get("x-request-id"), "trace-1abc");
    await compliance.body?.cancel();
    const privacy = await h.post(
      "/privacy/requests",
      { user_id: "u-42", type: "do_not_track" },
      bearer("dpo"),
    );
    assert.match(privacy.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
    await privacy.body?.cancel();
    const notAudited = [
      await h.get("/stats/summary", bearer("ana")),
      await h.get("/healthz"),
    ];
    assert.deepEqual(notAudited.map((r) => r.status), [200, 200]);
    const forbidden = await h.get("/stats/summary", bearer("tv-fleet"));
    assert.equal(forbidden.status, 403);
    const unknown = await h.get("/stats/summary?token=leaked", {
      authorization: "Bearer wrong-secret-9999",
    });
    assert.equal(unknown.status, 401);
    for (const res of [...notAudited, forbidden, unknown]) await res.body?.cancel();

    const rows = await h.pipeline.db.selectFrom("audit_log").selectAll().orderBy("id").execute();
    assert.deepEqual(
      rows.map((r) => [
        r.method,
        r.path,
        r.query,
        r.status,
        r.actor_name,
        r.actor_role,
        r.subject_user_id,
        r.source,
        Number(r.count),
      ]),
      [
        ["GET", "/compliance/summary", "user_id=u-7", 200, "dpo", "privacy", "u-7", "unknown", 1],
        ["POST", "/privacy/requests", "", privacy.status, "dpo", "privacy", "u-42", "unknown", 1],
        ["GET", "/stats/summary", "", 403, "tv-fleet", "ingest", null, "unknown", 1],
        [
          "GET",
          "/stats/summary",
          "token=%5Bredacted%5D",
          401,
          "unauthenticated",
          "none",
          null,
          "unknown",
          1,
        ],
      ],
    );
    assert.equal(rows[0].request_id, "trace-1abc");
    assert.equal(rows[1].request_id, privacy.headers.get("x-request-id"));
    const stored = JSON.stringify(rows);
    for (const secret of [...TOKENS.map((t) => t.secret), "wrong-secret-9999", "leaked"]) {
      assert.ok(!stored.includes(secret), `audit_log holds "${secret}"`);
    }
    assert.doesNotMatch(stored, /bearer/i);

    const refused = await h.get("/audit", bearer("dpo"));
    assert.equal(refused.status, 403);
    assert.match((await refused.json()).error, /needs one of the roles admin/);
    const page = await (await h.get("/audit?limit=2", bearer("ops"))).json();
    // Newest first: the refused /audit read above is the newest row.
    assert.deepEqual(
      page.entries.map((e: { path: string; status: number }) => `${e.path} ${e.status}`),
      ["/audit 403", "/stats/summary 401"],
    );
    assert.equal(typeof page.next_cursor, "string");
  } finally {
    await h.pipeline.stop();
  }
});

onEveryDatabase("identical refusals within one UTC minute fold into one row", async (db) => {
  let nowMs = T0 + 5_000;
  const app = new Hono();
  app.use("*", requestId());
  app.use("*", auditTrail(db, createLogger("error"), () => nowMs));
  app.use("*", authenticate({ apiTokens: TOKENS, ingestTokens: [], readTokens: [] }));
  app.use("/stats/*", requireRole(["analyst"]));
  app.get("/stats/summary", (c) => c.json({}));
  const get = async (headers: Record<string, string> = {}) => {
    const res = await app.request("http://test/stats/summary", { headers });
    await res.body?.cancel();
    return res.status;
  };
  for (const at of [5_000, 30_000, 59_999]) {
    nowMs = T0 + at;
    assert.equal(await get(), 401);
  }
  assert.equal(await get(bearer("tv-fleet")), 403);
  assert.equal(await get(bearer("tv-fleet")), 403);
  assert.equal(await get(bearer("ana")), 200);
  nowMs = T0 + 60_000;
  assert.equal(await get(), 401);

  const rows = await db.selectFrom("audit_log").selectAll().orderBy("id").execute();
  assert.deepEqual(
    rows.map((r) => [new Date(r.at).toISOString(), r.status, r.actor_name, Number(r.count)]),
    [
      ["2026-11-30T10:00:05.000Z", 401, "unauthenticated", 3],
      ["2026-11-30T10:00:59.999Z", 403, "tv-fleet", 2],
      ["2026-11-30T10:01:00.000Z", 401, "unauthenticated", 1],
    ],
  );
});

onEveryDatabase("GET /audit pages newest first with a keyset cursor and filters", async (db) => {
  const row = (actor: string, atMs: number, path: string) => ({
    at: new Date(atMs).toISOString(),
    request_id: path,
    actor_name: actor,
    actor_role: "privacy",
    method: "GET",
    path,
    query: "",
    status: 200,
    subject_user_id: null,
    source: "unknown",
    fold_key: null,
  });
  // Two rows share a timestamp: the cursor must break the tie by id, losing and repeating nothing.
  const times = [0, 1_000, 2_000, 2_000, 3_000, 4_000, 5_000];
  for (const [i, offset] of times.entries()) {
    await insertAuditRow(db, row("bob", T0 + offset, `/compliance/b${i}`));
    await insertAuditRow(db, row("eve", T0 + offset, `/compliance/e${i}`));
  }
  const app = new Hono().route("/audit", auditRoutes(db));
  const get = async (query: string) => {
    const res = await app.request(`http://test/audit?${query}`);
    return { status: res.status, body: await res.json() };
  };

  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const after: string = cursor === null ? "" : `&cursor=${cursor}`;
    const { status, body } = await get(`actor=bob&limit=3${after}`);
    assert.equal(status, 200);
    assert.ok(body.entries.length <= 3);
    seen.push(...body.entries.map((e: { path: string }) => e.path));
    cursor = body.next_cursor;
    pages++;
  } while (cursor !== null && pages < 10);
  assert.deepEqual(seen, [
    "/compliance/b6",
    "/compliance/b5",
    "/compliance/b4",
    "/compliance/b3",
    "/compliance/b2",
    "/compliance/b1",
    "/compliance/b0",
  ]);
  assert.equal(pages, 3);

  const ranged = await get(
    `from=${new Date(T0 + 2_000).toISOString()}&to=${new Date(T0 + 4_000).toISOString()}`,
  );
  assert.deepEqual(
    ranged.body.entries.map((e: { path: string }) => e.path),
    ["e4", "b4", "e3", "b3", "e2", "b2"].map((p) => `/compliance/${p}`),
  );
  assert.equal((await get("")).body.entries.length, 14);

  for (
    const bad of ["limit=0", "limit=1001", "limit=ten", "from=yesterday", "cursor=zzz", "who=bob"]
  ) {
    const { status, body } = await get(bad);
    assert.equal(status, 400, bad);
    assert.equal(body.error, "Invalid audit query: see issues");
  }
});

onEveryDatabase(
  "pruneAuditLog() deletes rows older than the cutoff in bounded batches",
  async (db) => {
    for (let i = 0; i < 7; i++) {
      await insertAuditRow(db, {
        at: new Date(T0 + i * 86_400_000).toISOString(),
        request_id: `r${i}`,
        actor_name: "ops",
        actor_role: "admin",
        method: "GET",
        path: "/audit",
        query: "",
        status: 200,
        subject_user_id: null,
        source: "unknown",
        fold_key: null,
      });
    }
    // Five rows are older than day 5; batches of two, at most two batches: four go now.
    assert.equal(await pruneAuditLog(db, T0 + 5 * 86_400_000, 2, 2), 4);
    assert.equal(await pruneAuditLog(db, T0 + 5 * 86_400_000, 2, 2), 1);
    const left = await db.selectFrom("audit_log").select("request_id").orderBy("id").execute();
    assert.deepEqual(left.map((r) => r.request_id), ["r5", "r6"]);
  },
);

/** A small app with the audit trail, auth and a few compliance routes, as `createApp` orders them. */
function complianceApp(db: Kysely<Database>, now: () => number): Hono {
  const app = new Hono();
  app.use("*", requestId());
  app.use("*", auditTrail(db, createLogger("error"), now));
  app.use("*", authenticate({ apiTokens: TOKENS, ingestTokens: [], readTokens: [] }));
  app.use("/compliance/*", requireRole(["privacy"]));
  const compliance = new Hono();
  compliance.get("/summary", (c) => c.json({}));
  compliance.get("/flags/:id", (c) => c.json({ id: c.req.param("id") }));
  app.route("/compliance", compliance);
  return app;
}

onEveryDatabase(
  "refusals to ever-different paths fold by route pattern, storing the pattern",
  async (db) => {
    const app = complianceApp(db, () => T0 + 5_000);
    const get = async (path: string, headers: Record<string, string> = {}) => {
      const res = await app.request(`http://test${path}`, { headers });
      await res.body?.cancel();
      return res.status;
    };
    for (let i = 0; i < 150; i++) {
      assert.equal(await get(`/compliance/flags/f${i}`), 401);
      // No route serves these paths: they fold under the prefix's middleware pattern.
      assert.equal(await get(`/compliance/summary/x${i}`), 401);
      assert.equal(await get(`/compliance/flags/g${i}?n=${i}`, bearer("ana")), 403);
    }
    assert.equal(await get("/compliance/flags/mine", bearer("dpo")), 200);

    const rows = await db.selectFrom("audit_log").selectAll().orderBy("id").execute();
    assert.deepEqual(
      rows.map((r) => [r.path, r.query, r.status, r.actor_name, Number(r.count)]),
      [
        ["/compliance/flags/:id", "", 401, "unauthenticated", 150],
        ["/compliance/*", "", 401, "unauthenticated", 150],
        ["/compliance/flags/:id", "n=0", 403, "ana", 150],
        ["/compliance/flags/mine", "", 200, "dpo", 1],
      ],
    );
  },
);

onEveryDatabase("a stored path or query holds at most 256 characters", async (db) => {
  const app = complianceApp(db, () => T0);
  const long = "a".repeat(3_000);
  for (const headers of [bearer("dpo"), {}]) {
    const res = await app.request(`http://test/compliance/flags/${long}?q=${long}`, { headers });
    await res.body?.cancel();
  }
  const rows = await db.selectFrom("audit_log").selectAll().orderBy("id").execute();
  assert.deepEqual(rows.map((r) => [r.status, r.path.length, r.query.length]), [
    [200, 256, 256],
    [401, "/compliance/flags/:id".length, 256],
  ]);
  assert.ok(rows[0].path.startsWith("/compliance/flags/aaa"));
  assert.ok(rows[1].query.startsWith("q=aaa"));
});

onEveryDatabase(
  "GET /audit refuses bounds and cursors PostgreSQL cannot hold, naming them",
  async (db) => {
    const app = new Hono().route("/audit", auditRoutes(db));
    app.onError((error, c) => c.json({ error: `Crashed: ${error.message}`, issues: [] }, 500));
    const issueOf = async (query: string, param: string) => {
      const res = await app.request(`http://test/audit?${query}`);
      const body = await res.json();
      assert.equal(res.status, 400, `${query}: ${JSON.stringify(body)}`);
      assert.equal(body.error, "Invalid audit query: see issues");
      assert.equal(body.issues.length, 1, `${query}: ${JSON.stringify(body)}`);
      assert.equal(body.issues[0].path, param, query);
      return body.issues[0].message as string;
    };
    const range = "must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z";
    assert.equal(
      await issueOf("from=0000-01-01T00:00:00Z", "from"),
      `Invalid from: ${range}, received "0000-01-01T00:00:00Z"`,
    );
    assert.equal(
      await issueOf("to=0000-01-01T00:00:00Z", "to"),
      `Invalid to: ${range}, received "0000-01-01T00:00:00Z"`,
    );
    // In range as written, out of range in UTC.
    assert.match(
      await issueOf("from=0001-01-01T00:30:00%2B01:00", "from"),
      /^Invalid from: must be/,
    );
    assert.match(await issueOf("to=9999-12-31T23:00:00-02:00", "to"), /^Invalid to: must be/);
    assert.equal(
      await issueOf("from=a%00b", "from"),
      'Invalid from: expected an ISO-8601 date-time such as 2026-11-30T10:00:00Z, received "a\\u0000b"',
    );

    const cursor = (value: string) =>
      `Invalid cursor: must be a next_cursor value from a previous page, received "${value}"`;
    // Past year 9999, and an id past the largest bigint.
    assert.equal(await issueOf("cursor=999999999999999-1", "cursor"), cursor("999999999999999-1"));
    assert.equal(
      await issueOf("cursor=1-9999999999999999999", "cursor"),
      cursor("1-9999999999999999999"),
    );
    assert.equal(
      await issueOf("cursor=1-9223372036854775808", "cursor"),
      cursor("1-9223372036854775808"),
    );
    assert.equal(await issueOf("cursor=1-2%00", "cursor"), cursor("1-2\\u0000"));

    assert.equal(
      await issueOf("limit=abc", "limit"),
      "Invalid limit: expected a whole number from 1 to 1000",
    );
    assert.equal(
      await issueOf("actor=a%00", "actor"),
      'Invalid actor: expected a token name of 1-64 letters, digits, _ . or -, received "a\\u0000"',
    );

    // The edges themselves reach the database and answer.
    for (
      const query of [
        "from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59.999Z",
        "from=0001-01-01T01:00:00%2B01:00&to=9999-12-31T21:59:59-02:00",
        "cursor=253402300799999-9223372036854775807",
        "cursor=0-0",
      ]
    ) {
      const res = await app.request(`http://test/audit?${query}`);
      assert.equal(res.status, 200, `${query}: ${await res.clone().text()}`);
      assert.deepEqual((await res.json()).entries, [], query);
    }
  },
);
