import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import { z } from "zod";
import { type Harness, startHarness } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";
import { knownEvents, recentBase } from "../tests/_scenarios.ts";
import { tcString } from "../tests/consent_strings.ts";
import { makeWireEvent } from "../tests/fixtures.ts";
import { openApiDocument, ROUTE_DOCS, type RouteDoc } from "./openapi.ts";

test("[docs] /openapi.json is a valid OpenAPI 3.1 document", async () => {
  const validator = new Validator();
  const result = await validator.validate(openApiDocument());
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
});

interface Operation {
  description: string;
  summary: string;
  parameters: Array<{ name: string; description?: string }>;
  requestBody?: { content: Record<string, { schema: Record<string, unknown> }> };
}

Deno.test("[docs] every route, tag and the document itself are described", () => {
  const document = openApiDocument() as {
    info: { description: string };
    tags: Array<{ name: string; description?: string }>;
    paths: Record<string, Record<string, Operation>>;
  };
  // The reference lives here, not in the README: what applies to every route, and to each tag.
  for (const topic of ["Authentication", "Errors", "Time ranges", "Pagination", "Origin"]) {
    assert.ok(
      document.info.description.includes(topic),
      `info.description says nothing of ${topic}`,
    );
  }
  for (const tag of document.tags) {
    assert.ok((tag.description ?? "").trim() !== "", `tag ${tag.name} has no description`);
    assert.ok(ROUTE_DOCS.some((r) => r.tag === tag.name), `tag ${tag.name} has no route`);
  }
  for (const route of ROUTE_DOCS) {
    const name = `${route.method.toUpperCase()} ${route.path}`;
    assert.ok(route.description.trim() !== "", `${name} has no description`);
    assert.ok(!route.summary.includes("\n"), `${name}: its summary must be one line`);
    const operation = document.paths[route.path][route.method];
    assert.ok(operation.description.includes(route.description), `${name}: description not served`);
    // Text for a parameter or field the route does not have would describe nothing.
    for (const param of Object.keys(route.parameters ?? {})) {
      const served = operation.parameters.find((p) => p.name === param);
      assert.equal(served?.description, route.parameters![param], `${name}: no parameter ${param}`);
    }
    const body = operation.requestBody?.content["application/json"].schema;
    const item = (body?.type === "array" ? body.items : body) as
      | { properties?: Record<string, { description?: string }> }
      | undefined;
    for (const field of Object.keys(route.fields ?? {})) {
      assert.equal(
        item?.properties?.[field]?.description,
        route.fields![field],
        `${name}: no body field ${field}`,
      );
    }
    // Every parameter of a route with described parameters is described.
    if (route.parameters !== undefined) {
      for (const param of operation.parameters) {
        assert.ok((param.description ?? "") !== "", `${name}: parameter ${param.name} undescribed`);
      }
    }
  }
});

test("[docs] every route the app serves is documented, and every documented route exists", async () => {
  const h = await startHarness({ metricsToken: undefined });
  try {
    // Hono lists middleware too (method ALL); the handlers are the routes.
    const served = new Set(
      h.pipeline.app.routes.filter((r) => r.method !== "ALL")
        .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, "{$1}").replace(/(.)\/$/, "$1")}`),
    );
    const documented = new Set(ROUTE_DOCS.map((r) => `${r.method.toUpperCase()} ${r.path}`));
    assert.deepEqual([...served].filter((r) => !documented.has(r)), [], "served, not documented");
    assert.deepEqual([...documented].filter((r) => !served.has(r)), [], "documented, not served");
  } finally {
    await h.pipeline.stop();
  }
});

test("[docs] the document and the reference page are served with their assets, no CDN", async () => {
  const h = await startHarness();
  try {
    const document = await h.json<{ openapi: string; paths: Record<string, unknown> }>(
      "/openapi.json",
    );
    assert.equal(document.openapi, "3.1.0");
    assert.ok("/events/batch" in document.paths);
    const page = await (await h.get("/docs")).text();
    const sources = [...page.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
    assert.ok(sources.length >= 2);
    for (const source of sources) {
      assert.ok(source.startsWith("/"), `${source} must be served by the server itself`);
      const asset = await h.get(source);
      assert.equal(asset.status, 200, source);
      assert.ok((await asset.arrayBuffer()).byteLength > 10_000, source);
    }
    assert.equal((await h.get("/docs/assets/../../deno.json")).status, 404);
  } finally {
    await h.pipeline.stop();
  }
});

/** The documented schema of one response; an untyped record would accept anything, so it must be an
 * object schema naming its fields. */
function documentedSchema(method: RouteDoc["method"], path: string, status: number): z.ZodObject {
  const route = ROUTE_DOCS.find((r) => r.method === method && r.path === path);
  assert.ok(route !== undefined, `${method.toUpperCase()} ${path} is not documented`);
  const schema = route.responses[status]?.schema;
  assert.ok(
    schema instanceof z.ZodObject,
    `${method.toUpperCase()} ${path} documents no object schema for ${status}`,
  );
  return schema;
}

/**
 * Calls `url` and checks the status and that the body parses with the schema `ROUTE_DOCS` documents
 * for `method docPath` (extra fields pass; a missing or mistyped field fails); returns the body.
 */
async function expectDocumented<T = Record<string, unknown>>(
  h: Harness,
  method: RouteDoc["method"],
  docPath: string,
  url: string,
  options: { body?: unknown; status?: number } = {},
): Promise<T> {
  const status = options.status ?? 200;
  const res = await h.pipeline.app.request(`http://test${url}`, {
    method: method.toUpperCase(),
    ...(options.body === undefined ? {} : {
      headers: { "content-type": "application/json" },
      body: JSON.stringify(options.body),
    }),
  });
  const text = await res.text();
  assert.equal(res.status, status, `${method.toUpperCase()} ${url}: ${text}`);
  const body = JSON.parse(text);
  const parsed = documentedSchema(method, docPath, status).safeParse(body);
  assert.ok(
    parsed.success,
    `${method.toUpperCase()} ${url} does not match the documented ${status} schema of ${docPath}:\n` +
      `${parsed.success ? "" : z.prettifyError(parsed.error)}\nbody: ${text}`,
  );
  return body as T;
}

test("[docs] the read routes answer with the bodies their 200 schemas document", async (t) => {
  const h = await startHarness();
  try {
    const t0 = recentBase();
    const { events } = knownEvents(t0);
    // Three regions within the hour: an account-sharing flag, on top of u3's privacy flag.
    const sharing = ["DE", "FR", "IT"].map((region, i) =>
      makeWireEvent({ event_id: `share-${i}`, user_id: "sharer", region, atMs: t0 + i * 1_000 })
    );
    // A viewer whose TV sends a TC string: the consent reads then show a signal with its proof.
    const consenting = [
      {
        ...makeWireEvent({ event_id: "tc-1", user_id: "u1", atMs: t0 + 5_000 }),
        consent: { tcf: tcString([1, 8]) },
      },
    ];
    await h.send([...events, ...sharing, ...consenting]);
    await h.flush();

    await t.step("stats", async () => {
      const summary = await expectDocumented<{ total_events: number }>(
        h,
        "get",
        "/stats/summary",
        "/stats/summary",
      );
      assert.equal(summary.total_events, events.length + sharing.length + consenting.length);
      // The schema is not vacuous: a body missing a required field is refused.
      const schema = documentedSchema("get", "/stats/summary", 200);
      assert.equal(schema.safeParse({ ...summary, total_events: undefined }).success, false);
      assert.equal(schema.safeParse({ ...summary, from: 0 }).success, false);

      await expectDocumented(h, "get", "/stats/content/{contentId}", "/stats/content/c1");
      const region = await expectDocumented<{ device_mix: unknown[] }>(
        h,
        "get",
        "/stats/region/{region}",
        "/stats/region/US-CA",
      );
      assert.ok(region.device_mix.length > 0);
      const hour = Math.floor(t0 / 3_600_000) * 3_600_000;
      const range = `from=${new Date(hour).toISOString()}&to=${
        new Date(hour + 2 * 3_600_000).toISOString()
      }`;
      await expectDocumented(
        h,
        "get",
        "/stats/timeseries",
        `/stats/timeseries?metric=plays&${range}&group_by=region`,
      );
      await expectDocumented(
        h,
        "get",
        "/stats/timeseries",
        `/stats/timeseries?metric=unique_viewers&bucket=1d&from=${
          new Date(Math.floor(t0 / 86_400_000) * 86_400_000).toISOString()
        }&to=${new Date(Math.floor(t0 / 86_400_000) * 86_400_000 + 86_400_000).toISOString()}`,
      );
    });

    await t.step("compliance", async () => {
      await expectDocumented(h, "get", "/compliance/summary", "/compliance/summary");
      await expectDocumented(h, "get", "/compliance/regions", "/compliance/regions");
      const consent = await expectDocumented<{ regions: unknown[] }>(
        h,
        "get",
        "/compliance/consent/summary",
        "/compliance/consent/summary",
      );
      assert.ok(consent.regions.length > 0);
      const page = await expectDocumented<{ items: Array<{ id: number; rule: string }> }>(
        h,
        "get",
        "/compliance/events",
        "/compliance/events",
      );
      assert.deepEqual(page.items.map((f) => f.rule).sort(), ["account_sharing", "privacy"]);
      const id = page.items.find((f) => f.rule === "account_sharing")!.id;
      await expectDocumented(h, "patch", "/compliance/flags/{id}", `/compliance/flags/${id}`, {
        body: { status: "acknowledged", reason: "Looking into it" },
      });
      const flag = await expectDocumented<{ history: unknown[] }>(
        h,
        "get",
        "/compliance/flags/{id}",
        `/compliance/flags/${id}`,
      );
      assert.equal(flag.history.length, 1);
      await expectDocumented(h, "get", "/compliance/risk", "/compliance/risk");
      await expectDocumented(
        h,
        "get",
        "/compliance/risk/{entity_type}/{id}",
        "/compliance/risk/user/sharer",
      );
    });

    await t.step("privacy", async () => {
      const filed = await expectDocumented<{ id: string }>(
        h,
        "post",
        "/privacy/requests",
        "/privacy/requests",
        { body: { user_id: "u1", type: "access" }, status: 202 },
      );
      await expectDocumented(h, "post", "/privacy/requests", "/privacy/requests", {
        body: { user_id: "u2", type: "do_not_track", jurisdiction: "ccpa" },
        status: 202,
      });
      const list = await expectDocumented<{ items: unknown[] }>(
        h,
        "get",
        "/privacy/requests",
        "/privacy/requests",
      );
      assert.equal(list.items.length, 2);
      await expectDocumented(
        h,
        "get",
        "/privacy/requests/{id}",
        `/privacy/requests/${filed.id}`,
      );
      const exported = await expectDocumented<{ data: { events: unknown[] } }>(
        h,
        "get",
        "/privacy/requests/{id}/export",
        `/privacy/requests/${filed.id}/export`,
      );
      assert.ok(exported.data.events.length > 0);
      await expectDocumented(
        h,
        "get",
        "/privacy/users/{user_id}/consent",
        "/privacy/users/u3/consent",
      );
      const ledger = await expectDocumented<{ changes: Array<{ source: string }> }>(
        h,
        "get",
        "/privacy/users/{user_id}/consent",
        `/privacy/users/u1/consent?at=${encodeURIComponent(new Date(t0 + 6_000).toISOString())}`,
      );
      assert.ok(ledger.changes.some((c) => c.source === "tcf"));
    });

    await t.step("operations", async () => {
      const audit = await expectDocumented<{ entries: unknown[] }>(h, "get", "/audit", "/audit");
      assert.ok(audit.entries.length > 0);
      await expectDocumented(h, "get", "/auth/whoami", "/auth/whoami");
      await expectDocumented(h, "get", "/auth/status", "/auth/status");
      await expectDocumented(h, "get", "/healthz", "/healthz");
      await expectDocumented(h, "get", "/readyz", "/readyz");
      await expectDocumented(h, "get", "/openapi.json", "/openapi.json");
    });
  } finally {
    await h.pipeline.stop();
  }
});
