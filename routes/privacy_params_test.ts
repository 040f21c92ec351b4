import assert from "node:assert/strict";
import { Hono } from "hono";
import type { Kysely } from "kysely";
import type { ErasedUsers } from "../actors/erased_users.ts";
import type { Eraser } from "../actors/erasure.ts";
import { fileRequest } from "../db/privacy_store.ts";
import type { Database } from "../db/schema.ts";
import { testOnEveryDatabase } from "../tests/_harness.ts";
import { privacyRoutes } from "./privacy.ts";

const T0 = Date.parse("2026-11-30T10:00:00Z");

interface Refusal {
  error: string;
  issues: Array<{ path: string; message: string }>;
}

/** One test per database (PGlite, and PostgreSQL when configured). */
function onEveryDatabase(
  name: string,
  scenario: (app: Hono, db: Kysely<Database>) => Promise<void>,
): void {
  testOnEveryDatabase("privacy params", name, (db) => scenario(appFor(db), db));
}

/** The privacy reads as `createApp` mounts them, with errors surfacing as 500; nothing is filed. */
function appFor(db: Kysely<Database>): Hono {
  const app = new Hono();
  app.route(
    "/privacy",
    privacyRoutes({
      db,
      recordOptOut: () => {},
      eraser: {} as Eraser,
      erased: {} as ErasedUsers,
      defaultJurisdiction: "gdpr",
      now: () => T0,
    }),
  );
  app.onError((error, c) => c.json({ error: `Crashed: ${error.message}`, issues: [] }, 500));
  return app;
}

/** The answer to `GET path`, asserted to be a 400 with a reason. */
async function refusalOf(app: Hono, path: string): Promise<Refusal> {
  const res = await app.request(`http://test${path}`);
  const body = await res.json();
  assert.equal(res.status, 400, `${path}: ${JSON.stringify(body)}`);
  assert.ok(body.error.length > 0, path);
  assert.ok(Array.isArray(body.issues), path);
  return body;
}

/** The message of the issue at `path`; fails if the refusal has none. */
function issueAt(refusal: Refusal, path: string): string {
  const issue = refusal.issues.find((i) => i.path === path);
  assert.ok(issue !== undefined, `no issue at ${path}: ${JSON.stringify(refusal)}`);
  return issue.message;
}

/** Files an access request for `userId` straight into the store; returns its id. */
async function fileAccess(db: Kysely<Database>, userId: string): Promise<string> {
  const { request } = await fileRequest(db, {
    userId,
    type: "access",
    jurisdiction: "gdpr",
    receivedAtMs: T0,
    dueAtMs: T0 + 30 * 86_400_000,
  });
  return request.id;
}

onEveryDatabase("a malformed request id is refused with 400, quoted", async (app) => {
  for (const suffix of ["", "/export"]) {
    for (
      const [raw, quoted] of [
        ["1%00", '"1\\u0000"'],
        ["abc", '"abc"'],
        ["-1", '"-1"'],
        ["1".repeat(19), `"${"1".repeat(19)}"`],
        ["%E2%80%AE1", '"\u202e1"'],
      ]
    ) {
      const path = `/privacy/requests/${raw}${suffix}`;
      const refusal = await refusalOf(app, path);
      const message =
        `Invalid request id: expected the numeric id of a privacy request (1-18 digits), received ${quoted}`;
      assert.equal(refusal.error, message, path);
      assert.deepEqual(refusal.issues, [{ path: "id", message }], path);
    }
  }
});

onEveryDatabase("a well-formed request id that does not exist stays 404", async (app, db) => {
  const id = await fileAccess(db, "u-1");
  const found = await app.request(`http://test/privacy/requests/${id}`);
  assert.equal(found.status, 200, await found.clone().text());
  assert.equal((await found.json()).id, id);
  const exported = await app.request(`http://test/privacy/requests/${id}/export`);
  assert.equal(exported.status, 200, await exported.clone().text());
  await exported.body?.cancel();

  const missing = await app.request("http://test/privacy/requests/999999999999999999");
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error, 'Not found: privacy request "999999999999999999"');
  const noExport = await app.request("http://test/privacy/requests/999999999999999999/export");
  assert.equal(noExport.status, 404);
  assert.equal(
    (await noExport.json()).error,
    'Not found: access request "999999999999999999" (exports exist for access requests)',
  );
});

onEveryDatabase("list filters are refused with plain messages listing the choices", async (app) => {
  const refusal = await refusalOf(
    app,
    "/privacy/requests?status=x&type=y%00&overdue=z&limit=abc&cursor=1%00",
  );
  assert.equal(refusal.error, "Invalid query: see issues");
  assert.equal(
    issueAt(refusal, "status"),
    'Invalid status: expected one of received, in_progress, completed or failed, received "x"',
  );
  assert.equal(
    issueAt(refusal, "type"),
    "Invalid type: expected one of deletion, access, do_not_track or opt_out_sale_share, " +
      'received "y\\u0000"',
  );
  assert.equal(
    issueAt(refusal, "overdue"),
    'Invalid overdue: expected one of true or false, received "z"',
  );
  assert.equal(issueAt(refusal, "limit"), "Invalid limit: expected a whole number from 1 to 500");
  assert.equal(
    issueAt(refusal, "cursor"),
    'Invalid cursor: must be a next_cursor value from a previous page, received "1\\u0000"',
  );
  for (const limit of ["0", "501", "1.5"]) {
    const bad = await refusalOf(app, `/privacy/requests?limit=${limit}`);
    assert.equal(issueAt(bad, "limit"), "Invalid limit: expected a whole number from 1 to 500");
  }
  assert.doesNotMatch(JSON.stringify(refusal), /expected number|received NaN|Invalid option/);
});

onEveryDatabase("good list filters and blank ones still list", async (app, db) => {
  await fileAccess(db, "u-1");
  await fileAccess(db, "u-2");
  const res = await app.request(
    "http://test/privacy/requests?status=received&type=access&overdue=false&limit=1&cursor=",
  );
  assert.equal(res.status, 200, await res.clone().text());
  const page = await res.json();
  assert.deepEqual(page.items.map((r: { user_id: string }) => r.user_id), ["u-2"]);
  const rest = await app.request(`http://test/privacy/requests?limit=1&cursor=${page.next_cursor}`);
  assert.deepEqual((await rest.json()).items.map((r: { user_id: string }) => r.user_id), ["u-1"]);
});
