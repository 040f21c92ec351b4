import assert from "node:assert/strict";
import { type Harness, startHarness } from "./_harness.ts";
import { test } from "./_permissions.ts";
import { recentBase } from "./_scenarios.ts";
import { makeWireEvent } from "./fixtures.ts";

const utf8 = new TextEncoder();

/** The JSON of `value` with the placeholder `@` replaced by a raw byte (invalid UTF-8 for >= 0x80). */
function withByte(value: unknown, byte: number): Uint8Array<ArrayBuffer> {
  const [before, after] = JSON.stringify(value).split("@");
  return new Uint8Array([...utf8.encode(before), byte, ...utf8.encode(after)]);
}

/** Posts raw bytes as JSON, bypassing the harness's `JSON.stringify`. */
async function postBytes(
  h: Harness,
  path: string,
  body: Uint8Array<ArrayBuffer>,
): Promise<Response> {
  return await h.pipeline.app.request(`http://test${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  });
}

test("[http] events whose ids differ only in an invalid UTF-8 byte are refused, never merged", async () => {
  const h = await startHarness({ queue: "postgres" });
  try {
    const t0 = recentBase();
    for (const byte of [0xfe, 0xff, 0x80]) {
      const body = withByte(makeWireEvent({ event_id: "evt-@", atMs: t0 }), byte);
      for (const path of ["/events", "/events/batch"]) {
        const payload = path === "/events" ? body : new Uint8Array([0x5b, ...body, 0x5d]);
        const res = await postBytes(h, path, payload);
        assert.equal(res.status, 400, `${path} with byte ${byte}: ${await res.clone().text()}`);
        assert.match((await res.json()).error, /not UTF-8/);
      }
    }
    // The same bytes without a declared length (chunked) are refused the same way.
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(withByte(makeWireEvent({ event_id: "evt-@", atMs: t0 }), 0xff));
        controller.close();
      },
    });
    const res = await h.pipeline.app.request("http://test/events", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chunked,
    });
    assert.equal(res.status, 400);
    // Valid UTF-8 beyond ASCII still works, and the refused events were never counted.
    await h.send([makeWireEvent({ event_id: "evt-é-ü-ß", atMs: t0 })]);
    await h.flush();
    const summary = await h.json<{ total_events: number; duplicate_events: number }>(
      "/stats/summary",
    );
    assert.deepEqual([summary.total_events, summary.duplicate_events], [1, 0]);
    // Every route that reads a body decodes it strictly.
    const privacy = await postBytes(
      h,
      "/privacy/requests",
      withByte({ user_id: "u-@", type: "access" }, 0xfe),
    );
    assert.equal(privacy.status, 400);
  } finally {
    await h.pipeline.stop();
  }
});

test("[http] a body route refuses a non-JSON content type with 415, so a form or text/plain fetch cannot reach it", async () => {
  const h = await startHarness();
  try {
    const body = JSON.stringify({ user_id: "victim-1", type: "deletion" });
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]) {
      const res = await h.post("/privacy/requests", body, { "content-type": type });
      assert.equal(res.status, 415, type);
      assert.match((await res.json()).error, /send application\/json/);
    }
    const patch = await h.pipeline.app.request("http://test/compliance/flags/1", {
      method: "PATCH",
      headers: { "content-type": "text/plain" },
      body: JSON.stringify({ status: "dismissed", reason: "x" }),
    });
    assert.equal(patch.status, 415);
    const requests = await h.json<{ items: unknown[] }>("/privacy/requests");
    assert.deepEqual(requests.items, [], "nothing was filed");
  } finally {
    await h.pipeline.stop();
  }
});

test("[http] with auth off, privacy and review actions refuse another site's Origin; ingest and own origin pass", async () => {
  const h = await startHarness();
  try {
    const evil = { origin: "https://evil.example" };
    const filed = await h.post(
      "/privacy/requests",
      { user_id: "victim-1", type: "deletion" },
      evil,
    );
    assert.equal(filed.status, 403);
    assert.match((await filed.json()).error, /Cross-site request refused/);
    assert.equal((await h.get("/privacy/requests", evil)).status, 403);
    const patch = await h.pipeline.app.request("http://test/compliance/flags/1", {
      method: "PATCH",
      headers: { "content-type": "application/json", ...evil },
      body: JSON.stringify({ status: "dismissed", reason: "x" }),
    });
    assert.equal(patch.status, 403);
    // Reads of compliance data by GET are not actions; TV web apps send an Origin to ingest.
    assert.equal((await h.get("/compliance/summary", evil)).status, 200);
    const ingest = await h.post("/events", makeWireEvent({ atMs: recentBase() }), evil);
    assert.equal(ingest.status, 202);
    // The dashboard on the server's own origin, and tools that send no Origin, pass.
    const own = await h.post("/privacy/requests", { user_id: "u-own", type: "access" }, {
      origin: "http://test",
    });
    assert.equal(own.status, 202);
    assert.equal(
      (await h.post("/privacy/requests", { user_id: "u-curl", type: "access" })).status,
      202,
    );
  } finally {
    await h.pipeline.stop();
  }
});

test("[http] with auth on, a foreign Origin is no reason to refuse: the bearer token is the proof", async () => {
  const h = await startHarness({
    apiTokens: [{ role: "privacy", name: "dpo", secret: "privacy-secret-0123456789" }],
  });
  try {
    const res = await h.post("/privacy/requests", { user_id: "u-1", type: "access" }, {
      origin: "https://privacy-portal.example",
      authorization: "Bearer privacy-secret-0123456789",
    });
    assert.equal(res.status, 202);
  } finally {
    await h.pipeline.stop();
  }
});

test("[privacy] an event cannot claim an erased user's pseudonym and add to their history", async () => {
  const h = await startHarness({ queue: "postgres" });
  try {
    const t0 = recentBase();
    await h.send([makeWireEvent({ event_id: "a-1", user_id: "alice-7f3", atMs: t0 })]);
    const res = await h.post("/privacy/requests", { user_id: "alice-7f3", type: "deletion" });
    const { user_id: pseudonym } = await res.json();
    await h.pipeline.eraser.idle();
    for (const field of ["user_id", "device_id"]) {
      const claimed = await h.post(
        "/events",
        makeWireEvent({
          event_id: `claim-${field}`,
          [field]: pseudonym,
          has_consent: false,
          atMs: t0,
        }),
      );
      assert.equal(claimed.status, 422, field);
      assert.match(JSON.stringify(await claimed.json()), /erased user's pseudonym/);
    }
  } finally {
    await h.pipeline.stop();
  }
});

test("[http] asset names that are object keys are 404, and no answer reveals the server's path", async () => {
  const h = await startHarness();
  try {
    for (const name of ["constructor", "toString", "valueOf", "__proto__", "hasOwnProperty"]) {
      for (const prefix of ["/dashboard/assets/", "/docs/assets/"]) {
        const res = await h.get(prefix + name);
        const text = await res.text();
        assert.equal(res.status, 404, `${prefix}${name}: ${text}`);
        assert.ok(!text.includes(Deno.cwd()), `${prefix}${name} names the server's path`);
      }
    }
    assert.equal((await h.get("/dashboard/assets/app.js")).status, 200);
    assert.equal((await h.get("/docs/assets/swagger-ui.css")).status, 200);
  } finally {
    await h.pipeline.stop();
  }
});
