import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import { startHarness } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";
import { openApiDocument, ROUTE_DOCS } from "./openapi.ts";

test("[docs] /openapi.json is a valid OpenAPI 3.1 document", async () => {
  const validator = new Validator();
  const result = await validator.validate(openApiDocument());
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
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
