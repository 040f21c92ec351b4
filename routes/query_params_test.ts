import assert from "node:assert/strict";
import { Hono } from "hono";
import type { Kysely } from "kysely";
import { encodeRiskCursor } from "../db/risk_queries.ts";
import type { Database } from "../db/schema.ts";
import { testOnEveryDatabase } from "../tests/_harness.ts";
import { complianceRoutes } from "./compliance.ts";
import { quote, textRefusal } from "./query_params.ts";
import { statsRoutes } from "./stats.ts";

const RANGE = "from=2026-11-30T10:00:00Z&to=2026-11-30T12:00:00Z";
const SERIES = `/stats/timeseries?metric=events&${RANGE}`;

interface Refusal {
  error: string;
  issues: Array<{ path: string; message: string }>;
}

/** One test per database (PGlite, and PostgreSQL when configured). */
function onEveryDatabase(name: string, scenario: (app: Hono) => Promise<void>): void {
  testOnEveryDatabase("params", name, (db) => scenario(appFor(db)));
}

/** The stats and compliance routes as `createApp` mounts them, with errors surfacing as 500. */
function appFor(db: Kysely<Database>): Hono {
  const app = new Hono();
  app.route("/stats", statsRoutes(db, (region) => region === "DE"));
  app.route("/compliance", complianceRoutes(db, (region) => region === "DE"));
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

onEveryDatabase("a NUL in platform is refused, not sent to the database", async (app) => {
  const alone = await refusalOf(app, `${SERIES}&platform=%00`);
  assert.equal(
    issueAt(alone, "platform"),
    'Invalid platform: must not contain control characters, received "\\u0000"',
  );
  const grouped = await refusalOf(app, `${SERIES}&platform=a%00b&group_by=platform`);
  assert.equal(
    issueAt(grouped, "platform"),
    'Invalid platform: must not contain control characters, received "a\\u0000b"',
  );
  // A plain platform still filters.
  const res = await app.request(`http://test${SERIES}&platform=WebOS&group_by=platform`);
  assert.equal(res.status, 200, await res.clone().text());
});

onEveryDatabase("a NUL in a series filter is refused naming the filter", async (app) => {
  for (const param of ["content_id", "device_id"]) {
    const refusal = await refusalOf(app, `${SERIES}&${param}=c%001`);
    assert.match(issueAt(refusal, param), new RegExp(`^Invalid ${param}: .*"c\\\\u00001"$`));
  }
  const grouped = await refusalOf(app, `${SERIES}&group_by=%00`);
  assert.match(issueAt(grouped, "group_by"), /^Invalid group_by: expected one of region, /);
  const long = await refusalOf(app, `${SERIES}&platform=${"p".repeat(33)}`);
  assert.match(issueAt(long, "platform"), /at most 32 characters/);
});

onEveryDatabase("a series without from, to or metric is told what to send", async (app) => {
  const noFrom = await refusalOf(app, "/stats/timeseries?metric=events&to=2026-11-30T12:00:00Z");
  assert.match(
    issueAt(noFrom, "from"),
    /^from is required: an ISO-8601 date-time on a UTC hour such as 2026-11-30T10:00:00Z/,
  );
  const blankFrom = await refusalOf(
    app,
    "/stats/timeseries?metric=events&from=&to=2026-11-30T12:00:00Z",
  );
  assert.match(blankFrom.error, /^from is required: /);
  assert.match(issueAt(blankFrom, "from"), /^from is required: /);
  const noTo = await refusalOf(app, "/stats/timeseries?metric=events&from=2026-11-30T10:00:00Z");
  assert.match(issueAt(noTo, "to"), /^to is required: an ISO-8601 date-time/);
  const noMetric = await refusalOf(app, `/stats/timeseries?${RANGE}`);
  assert.equal(
    issueAt(noMetric, "metric"),
    "metric is required: one of events, plays, errors, error_rate, watch_time_ms, unique_viewers, " +
      "views, startup_p50, startup_p95, ebvs_rate, vsf_rate, vpf_rate, rebuffer_ratio or avg_bitrate_kbps",
  );
  for (const refusal of [noFrom, noTo, noMetric]) {
    assert.doesNotMatch(JSON.stringify(refusal), /received undefined/);
  }
});

onEveryDatabase("a NUL in a path id is refused naming the id", async (app) => {
  const content = await refusalOf(app, "/stats/content/a%00b");
  assert.equal(
    content.error,
    'Invalid content id: must not contain control characters, received "a\\u0000b"',
  );
  assert.equal(issueAt(content, "contentId"), content.error);
  const region = await refusalOf(app, "/stats/region/%00");
  assert.match(issueAt(region, "region"), /^Invalid region: .*"\\u0000"$/);
  const flag = await refusalOf(app, "/compliance/flags/1%00");
  assert.match(issueAt(flag, "id"), /^Invalid flag id: .*"1\\u0000"$/);
  const entity = await refusalOf(app, "/compliance/risk/user/u%00");
  assert.match(issueAt(entity, "id"), /^Invalid entity id: .*"u\\u0000"$/);
  const type = await refusalOf(app, "/compliance/risk/us%00er/u-1");
  assert.match(issueAt(type, "entity_type"), /^Invalid entity type: .*"us\\u0000er"$/);
});

onEveryDatabase("a NUL in a compliance filter or cursor is refused naming it", async (app) => {
  for (const param of ["user_id", "entity_id"]) {
    const refusal = await refusalOf(app, `/compliance/events?${param}=u%00`);
    assert.match(issueAt(refusal, param), new RegExp(`^Invalid ${param}: .*"u\\\\u0000"$`));
  }
  const status = await refusalOf(app, "/compliance/events?status=open%00");
  assert.match(issueAt(status, "status"), /^Invalid status: expected one of open, /);
  const cursor = await refusalOf(app, "/compliance/events?cursor=1%00");
  assert.match(issueAt(cursor, "cursor"), /^Invalid cursor: /);
  // A well-formed risk cursor whose id PostgreSQL cannot compare with.
  const nul = encodeRiskCursor({ score: "1.00", entityType: "user", entityId: "a\u0000b" });
  const risk = await refusalOf(app, `/compliance/risk?cursor=${nul}`);
  assert.match(issueAt(risk, "cursor"), /^Invalid cursor: must be a next_cursor value/);
  const range = await refusalOf(app, "/compliance/events?from=a%00b");
  assert.match(issueAt(range, "from"), /^Invalid from: .*"a\\u0000b"$/);
});

onEveryDatabase("a bound before year 1 is refused, not sent to the database", async (app) => {
  for (
    const path of [
      "/stats/summary?from=0000-01-01",
      "/stats/summary?to=0001-01-01T00:00:00%2B01:00",
      "/compliance/summary?from=0000-12-31T23:00:00Z",
      "/compliance/regions?from=0000-01-01",
    ]
  ) {
    const refusal = await refusalOf(app, path);
    assert.match(refusal.error, /^Invalid (from|to): must be from 0001-01-01T00:00:00Z/, path);
  }
});

Deno.test("quote() escapes control characters and cuts long values", () => {
  assert.equal(quote("a\u0000b"), '"a\\u0000b"');
  assert.equal(quote("x".repeat(200)), `"${"x".repeat(64)}"... (200 characters)`);
});

Deno.test("textRefusal() holds text to the rules of event ids", () => {
  assert.equal(textRefusal("platform", "webOS"), null);
  assert.equal(textRefusal("platform", "ü|/ +"), null);
  assert.match(textRefusal("platform", "")!, /^Invalid platform: must not be empty/);
  assert.match(textRefusal("platform", "x".repeat(129))!, /at most 128 characters/);
  assert.match(textRefusal("platform", "a\tb")!, /control characters, received "a\\tb"$/);
  assert.match(textRefusal("platform", "a\u007f")!, /control characters/);
  assert.match(textRefusal("platform", "a\ud800")!, /well-formed Unicode, received "a\\ud800"$/);
  assert.match(textRefusal("platform", "abc", 2)!, /at most 2 characters/);
});
