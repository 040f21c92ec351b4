import assert from "node:assert/strict";
import { parseConfig } from "../config.ts";
import { startHarness } from "../tests/_harness.ts";
import { recentBase } from "../tests/_scenarios.ts";
import { makeWireEvent } from "../tests/fixtures.ts";
import {
  type ApiToken,
  digestOf,
  findToken,
  isAuthEnabled,
  isEqualConstantTime,
  parseApiTokens,
  resolveTokens,
} from "./auth.ts";
import { test } from "../tests/_permissions.ts";

Deno.test("parseApiTokens() reads role:name:secret entries, the secret keeping its colons", () => {
  const parsed = parseApiTokens(" ingest:tv-fleet:s1 , admin:ops:a:b:c,,analyst:ana:s3 ");
  assert.deepEqual(parsed, {
    ok: true,
    tokens: [
      { role: "ingest", name: "tv-fleet", secret: "s1" },
      { role: "admin", name: "ops", secret: "a:b:c" },
      { role: "analyst", name: "ana", secret: "s3" },
    ],
  });
});

Deno.test("parseApiTokens() lists every bad entry by position and never echoes a secret", () => {
  const parsed = parseApiTokens(
    "root:bob:hunter2-a,admin:hunter2-b,privacy:p:,analyst:a:hunter2-c,admin:x:hunter2-c,ingest:b@d:s",
  );
  assert.equal(parsed.ok, false);
  if (parsed.ok) return;
  assert.deepEqual(parsed.problems, [
    'entry 1 has unknown role "root": use ingest, analyst, privacy, admin',
    "entry 2 is not role:name:secret",
    'entry 3 ("p") has an empty secret',
    'entry 5 ("x") repeats the secret of an earlier entry',
    "entry 6 needs a name of 1-64 letters, digits, _ . -",
  ]);
  assert.doesNotMatch(parsed.problems.join(" "), /hunter2/);
});

test("parseConfig() reads API_TOKENS and AUDIT_RETENTION_DAYS, refusing bad entries", () => {
  const config = parseConfig({ API_TOKENS: "privacy:dpo:s-1", AUDIT_RETENTION_DAYS: "30" }, 2);
  assert.deepEqual(config.apiTokens, [{ role: "privacy", name: "dpo", secret: "s-1" }]);
  assert.equal(config.auditRetentionDays, 30);
  assert.equal(parseConfig({}, 2).auditRetentionDays, 365);
  assert.deepEqual(parseConfig({}, 2).apiTokens, []);
  assert.throws(
    () => parseConfig({ API_TOKENS: "boss:x:top-secret" }, 2),
    (error: Error) =>
      /^Cannot start: invalid configuration: API_TOKENS: entry 1 has unknown role/.test(
        error.message,
      ) && !error.message.includes("top-secret"),
  );
  assert.throws(() => parseConfig({ API_TOKENS: "admin:only-two" }, 2), /API_TOKENS: entry 1/);
  assert.throws(
    () => parseConfig({ API_TOKENS: "admin:a:s,analyst:b:s" }, 2),
    /API_TOKENS: entry 2 \("b"\) repeats the secret/,
  );
  assert.throws(
    () => parseConfig({ API_TOKENS: "admin:a:shared", INGEST_TOKENS: "shared" }, 2),
    /a bearer token appears twice across API_TOKENS, INGEST_TOKENS and READ_TOKENS/,
  );
  assert.throws(() => parseConfig({ AUDIT_RETENTION_DAYS: "0" }, 2), /AUDIT_RETENTION_DAYS/);
});

Deno.test("resolveTokens() names legacy tokens ingest-N and read-N; read keeps stats and privacy", () => {
  const config = {
    apiTokens: [{ role: "admin", name: "ops", secret: "a" }] as ApiToken[],
    ingestTokens: ["i1", "i2"],
    readTokens: ["r1"],
  };
  assert.deepEqual(resolveTokens(config).map((t) => `${t.role}:${t.name}:${t.secret}`), [
    "admin:ops:a",
    "ingest:ingest-1:i1",
    "ingest:ingest-2:i2",
    "privacy:read-1:r1",
  ]);
  assert.equal(isAuthEnabled(config), true);
  assert.equal(isAuthEnabled({ apiTokens: [], ingestTokens: [], readTokens: [] }), false);
  assert.equal(isAuthEnabled({ apiTokens: [], ingestTokens: [], readTokens: ["r"] }), true);
});

Deno.test("isEqualConstantTime() compares whole byte strings; digests hide secret lengths", () => {
  const bytes = (...values: number[]) => new Uint8Array(values);
  assert.equal(isEqualConstantTime(bytes(1, 2, 3), bytes(1, 2, 3)), true);
  assert.equal(isEqualConstantTime(bytes(1, 2, 3), bytes(1, 2, 4)), false);
  assert.equal(isEqualConstantTime(bytes(9, 2, 3), bytes(1, 2, 3)), false);
  assert.equal(isEqualConstantTime(bytes(1, 2), bytes(1, 2, 0)), false);
  assert.equal(isEqualConstantTime(bytes(), bytes()), true);
  assert.equal(digestOf("x").length, 32);
  assert.equal(digestOf("x".repeat(1000)).length, 32);
});

Deno.test("findToken() finds the holder of a secret among every token, or nobody", () => {
  const tokens = ["alpha", "beta", "gamma"].map((secret) => ({
    digest: digestOf(secret),
    principal: { name: `n-${secret}`, role: "analyst" as const },
  }));
  assert.deepEqual(findToken(tokens, "beta"), { name: "n-beta", role: "analyst" });
  assert.deepEqual(findToken(tokens, "gamma"), { name: "n-gamma", role: "analyst" });
  assert.equal(findToken(tokens, "bet"), undefined);
  assert.equal(findToken(tokens, "betaa"), undefined);
  assert.equal(findToken(tokens, ""), undefined);
});

const CALLERS = {
  ingest: "ingest-secret-1",
  analyst: "analyst-secret-1",
  privacy: "privacy-secret-1",
  admin: "admin-secret-1",
  "legacy ingest": "legacy-tv",
  "legacy read": "legacy-reader",
} as const;
type Caller = keyof typeof CALLERS;

/** Every route prefix, a request that succeeds there, and the callers allowed in. */
const ROUTES: { prefix: string; allowed: Caller[]; send: (n: number) => [string, RequestInit] }[] =
  [
    {
      prefix: "POST /events",
      allowed: ["ingest", "admin", "legacy ingest"],
      send: (n) => post("/events", makeWireEvent({ event_id: `m-${n}`, atMs: recentBase() })),
    },
    {
      prefix: "POST /events/batch",
      allowed: ["ingest", "admin", "legacy ingest"],
      send: (n) =>
        post("/events/batch", [makeWireEvent({ event_id: `mb-${n}`, atMs: recentBase() })]),
    },
    {
      prefix: "GET /stats/*",
      allowed: ["analyst", "privacy", "admin", "legacy read"],
      send: () => ["/stats/summary", {}],
    },
    {
      prefix: "GET /compliance/*",
      allowed: ["privacy", "admin", "legacy read"],
      send: () => ["/compliance/summary", {}],
    },
    {
      prefix: "POST /privacy/*",
      allowed: ["privacy", "admin", "legacy read"],
      send: (n) => post("/privacy/requests", { user_id: `u-${n}`, type: "do_not_track" }),
    },
    { prefix: "GET /audit", allowed: ["admin"], send: () => ["/audit", {}] },
    // Metrics are mounted only with a registry: admin gets past auth (200 or 404), others get 403.
    { prefix: "GET /metrics", allowed: ["admin"], send: () => ["/metrics", {}] },
    {
      prefix: "GET /auth/whoami",
      allowed: Object.keys(CALLERS) as Caller[],
      send: () => ["/auth/whoami", {}],
    },
  ];

function post(path: string, body: unknown): [string, RequestInit] {
  return [path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  }];
}

function withToken([path, init]: [string, RequestInit], token?: string): [string, RequestInit] {
  const headers = new Headers(init.headers);
  if (token !== undefined) headers.set("authorization", `Bearer ${token}`);
  return [`http://test${path}`, { ...init, headers }];
}

test("[http] every route prefix admits exactly its roles: 2xx inside, 403 outside, 401 without", async () => {
  const h = await startHarness({
    apiTokens: [
      { role: "ingest", name: "tv-fleet", secret: CALLERS.ingest },
      { role: "analyst", name: "ana", secret: CALLERS.analyst },
      { role: "privacy", name: "dpo", secret: CALLERS.privacy },
      { role: "admin", name: "ops", secret: CALLERS.admin },
    ],
    ingestTokens: [CALLERS["legacy ingest"]],
    readTokens: [CALLERS["legacy read"]],
  });
  try {
    let n = 0;
    const failures: string[] = [];
    for (const route of ROUTES) {
      for (const caller of Object.keys(CALLERS) as Caller[]) {
        const res = await h.pipeline.app.request(...withToken(route.send(n++), CALLERS[caller]));
        const text = await res.text();
        const isJson = res.headers.get("content-type")?.includes("json") ?? false;
        const body: { error?: string } = isJson ? JSON.parse(text) : {};
        const isAllowed = route.allowed.includes(caller);
        const isOk = isAllowed
          ? res.status !== 401 && res.status !== 403 &&
            (route.prefix === "GET /metrics" || (res.status >= 200 && res.status < 300))
          : res.status === 403 && /needs one of the roles/.test(body.error ?? "");
        if (!isOk) failures.push(`${route.prefix} as ${caller}: ${res.status} ${body.error ?? ""}`);
      }
      for (const token of [undefined, "not-a-token"]) {
        const res = await h.pipeline.app.request(...withToken(route.send(n++), token));
        await res.body?.cancel();
        if (res.status !== 401) failures.push(`${route.prefix} with ${token}: ${res.status}`);
      }
    }
    assert.deepEqual(failures, []);
    const healthz = await h.pipeline.app.request(...withToken(["/healthz", {}]));
    assert.equal(healthz.status, 200);
  } finally {
    await h.pipeline.stop();
  }
});

test("[http] GET /auth/whoami names the caller, and the anonymous admin while auth is off", async () => {
  const on = await startHarness({
    apiTokens: [{ role: "privacy", name: "dpo", secret: "dpo-secret" }],
    readTokens: ["old-reader"],
  });
  try {
    const ask = async (token: string) =>
      await (await on.get("/auth/whoami", { authorization: `Bearer ${token}` })).json();
    assert.deepEqual(await ask("dpo-secret"), { name: "dpo", role: "privacy", auth: "on" });
    assert.deepEqual(await ask("old-reader"), { name: "read-1", role: "privacy", auth: "on" });
    const refused = await on.get("/auth/whoami", { authorization: "Bearer dpo-secreT" });
    assert.equal(refused.status, 401);
    assert.equal((await refused.json()).error, "Unknown bearer token");
  } finally {
    await on.pipeline.stop();
  }
  const off = await startHarness();
  try {
    const res = await off.get("/auth/whoami");
    assert.deepEqual(await res.json(), { name: "anonymous", role: "admin", auth: "off" });
    assert.equal((await off.get("/audit")).status, 200);
  } finally {
    await off.pipeline.stop();
  }
});
