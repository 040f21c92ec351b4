import assert from "node:assert/strict";
import { EVENT_SCHEMA } from "../routes/event_schema.ts";
import {
  emptyReport,
  ENV_VARS,
  FLAGS,
  formatReport,
  parseCli,
  type SimOptions,
  USAGE,
} from "./_sim_cli.ts";
import {
  BAD_DEVICES,
  BAD_TITLES,
  generateTraffic,
  QUALITY,
  SHARING,
  SPAN_MS,
  type Traffic,
  type WireEvent,
} from "./_sim_traffic.ts";
import {
  checkPrivacyAccess,
  type SenderOptions,
  sendItems,
  sendPrivacyRequests,
} from "./simulate.ts";
import { test } from "../tests/_permissions.ts";

const NOW = Date.UTC(2026, 10, 23, 12, 0, 0, 456);
const BIG = generateTraffic(20_000, 42, NOW);

/** The unique valid events in send order (first sightings only), checked by the server's schema. */
function uniqueValid(items: readonly unknown[]): WireEvent[] {
  const seen = new Set<string>();
  return (items as WireEvent[]).filter((e) => {
    if (!EVENT_SCHEMA.safeParse(e).success || seen.has(e.event_id)) return false;
    seen.add(e.event_id);
    return true;
  });
}

/**
 * Recounts every expectation the way the server processes the traffic, in send order: retention
 * (v2) flags an event that happened after its user's opt-out, in event time.
 */
function recount(t: Traffic) {
  const optedOutSinceMs = new Map<string, number>();
  let privacy = 0;
  let retention = 0;
  const places = new Map<string, { regions: Set<string>; ips: Set<string> }>();
  const windows = new Map<string, { n: number; errors: number; devices: Set<string> }>();
  const apply = (e: WireEvent) => {
    const atMs = Date.parse(e.timestamp);
    if (e.is_eu && !e.has_consent) privacy++;
    if (atMs > (optedOutSinceMs.get(e.user_id) ?? Infinity)) retention++;
    if (e.do_not_track === true && !optedOutSinceMs.has(e.user_id)) {
      optedOutSinceMs.set(e.user_id, atMs);
    }
    const p = places.get(e.user_id) ?? { regions: new Set(), ips: new Set() };
    places.set(e.user_id, p);
    p.regions.add(e.region);
    p.ips.add(e.ip_address);
    const w = Math.floor(atMs / QUALITY.windowMs);
    for (const key of [`content:${e.content_id}|${w}`, `device:${e.device_id}|${w}`]) {
      const c = windows.get(key) ?? { n: 0, errors: 0, devices: new Set() };
      windows.set(key, c);
      c.n++;
      if (e.event_type === "ERROR") {
        c.errors++;
        c.devices.add(e.device_id);
      }
    }
  };
  const [phase1, phase2] = [uniqueValid(t.phase1), uniqueValid(t.phase2)];
  phase1.forEach(apply);
  // The requests are filed when the traffic is sent, after every event's time (at most NOW).
  for (const r of t.requests) {
    optedOutSinceMs.set(r.user_id, Math.min(optedOutSinceMs.get(r.user_id) ?? NOW, NOW));
  }
  phase2.forEach(apply);
  const over = [...windows].filter(([key, c]) =>
    c.n >= QUALITY.minEvents && c.errors / c.n > QUALITY.maxErrorRate &&
    (key.startsWith("device:") || c.devices.size >= QUALITY.minDevices)
  ).map(([key]) => key.split("|")[0]);
  const sharers = [...places].filter(([, p]) =>
    p.regions.size > SHARING.maxRegions || p.ips.size > SHARING.maxIps
  );
  return { events: [...phase1, ...phase2], privacy, retention, places, sharers, over };
}

Deno.test("generateTraffic() gives the same traffic for a seed and other traffic for another", () => {
  const a = generateTraffic(3000, 7, NOW);
  assert.deepEqual(generateTraffic(3000, 7, NOW), a);
  const strip = (t: Traffic) =>
    uniqueValid(t.phase1).map(({ event_id: _, ...rest }) => JSON.stringify(rest));
  assert.notDeepEqual(strip(generateTraffic(3000, 8, NOW)), strip(a));
});

Deno.test("generateTraffic() uses its seeded generator, never Math.random", () => {
  const original = Math.random;
  Math.random = () => {
    throw new Error("Math.random was called");
  };
  try {
    generateTraffic(2000, 1, NOW);
  } finally {
    Math.random = original;
  }
});

Deno.test("generateTraffic() sends events in time order within the span, never after now", () => {
  const { events } = recount(BIG);
  const times = events.map((e) => Date.parse(e.timestamp));
  // The QoE views (_sim_views.ts) are sent out of order on purpose, after the plain phase 1.
  const plain = events.filter((e) => !e.user_id.startsWith("qoe-"))
    .map((e) => Date.parse(e.timestamp));
  assert.deepEqual(plain, [...plain].sort((x, y) => x - y));
  assert.ok(times.every((ms) => ms <= NOW && ms >= NOW - SPAN_MS - 1000));
  assert.ok(times[times.length - 1] - times[0] > SPAN_MS * 0.9);
  // The do-not-track events are exactly the tail of phase 1 that waits for the rest.
  const isDnt = (e: unknown) => (e as WireEvent).do_not_track === true;
  assert.ok(BIG.phase1.slice(BIG.dntFrom).every(isDnt));
  assert.ok(!BIG.phase1.slice(0, BIG.dntFrom).some(isDnt) && !BIG.phase2.some(isDnt));
});

Deno.test("generateTraffic() gives ERROR events a code and other events none", () => {
  const { events } = recount(BIG);
  assert.ok(events.some((e) => e.event_type === "ERROR"));
  for (const e of events) assert.equal(e.error_code === null, e.event_type !== "ERROR", e.event_id);
});

Deno.test("generateTraffic() sends N unique valid events, retried duplicates and malformed ones", () => {
  const all = [...BIG.phase1, ...BIG.phase2] as Record<string, unknown>[];
  assert.equal(recount(BIG).events.length, 20_000);
  const malformed = all.filter((e) => !EVENT_SCHEMA.safeParse(e).success);
  assert.equal(malformed.length, BIG.expectations.malformed_sent);
  assert.ok(malformed.length >= 20);
  assert.ok(malformed.some((e) => !("user_id" in e)));
  assert.ok(malformed.some((e) => e.event_type === "JUMP AHEAD"));
  assert.ok(malformed.some((e) => e.timestamp === "yesterday"));
  assert.ok(malformed.some((e) => e.is_eu === "yes"));
  const firstAt = new Map<unknown, number>();
  let duplicates = 0;
  all.forEach((e, i) => {
    if (!firstAt.has(e.event_id)) return void firstAt.set(e.event_id, i);
    duplicates++;
    const original = all[firstAt.get(e.event_id)!];
    assert.deepEqual(e, original, "a retry repeats the body");
    assert.ok(i - firstAt.get(e.event_id)! <= 25, "a retry comes soon after the original");
  });
  assert.equal(duplicates, BIG.expectations.duplicates_sent);
  assert.ok(duplicates >= 100 && duplicates <= 400);
});

Deno.test("generateTraffic() exercises consent, sharing, opt-outs and bad titles and devices", () => {
  const { events, places, sharers } = recount(BIG);
  const noConsent = new Set(events.filter((e) => e.is_eu && !e.has_consent).map((e) => e.user_id));
  assert.ok(noConsent.size >= 10);
  const consentOf = new Map<string, boolean>();
  for (const e of events) {
    assert.equal(consentOf.get(e.user_id) ?? e.has_consent, e.has_consent, "consent is per user");
    consentOf.set(e.user_id, e.has_consent);
  }
  assert.ok(sharers.length >= 10, "about 2% of 800 viewers share");
  for (const [, p] of sharers) {
    assert.ok(p.regions.size >= 3 && p.regions.size <= 5);
    assert.ok(p.ips.size >= 4 && p.ips.size <= 7);
  }
  for (const [userId, p] of places) {
    if (!sharers.some(([id]) => id === userId)) assert.ok(p.regions.size === 1 && p.ips.size <= 2);
  }
  const types = new Set(BIG.requests.map((r) => r.type));
  assert.ok(BIG.requests.length >= 4 && types.has("deletion") && types.has("do_not_track"));
  assert.ok(events.filter((e) => e.do_not_track === true).length >= 4);
  const rate = (pick: (e: WireEvent) => boolean) => {
    const mine = events.filter(pick);
    return mine.filter((e) => e.event_type === "ERROR").length / mine.length;
  };
  for (const title of BAD_TITLES) assert.ok(rate((e) => e.content_id === title) > 0.3, title);
  for (const device of BAD_DEVICES) assert.ok(rate((e) => e.device_id === device) > 0.3, device);
  const isBad = (e: WireEvent) =>
    BAD_TITLES.includes(e.content_id) || BAD_DEVICES.includes(e.device_id);
  assert.ok(rate((e) => !isBad(e)) < 0.02);
});

Deno.test("generateTraffic() expectations match a recount in send order", () => {
  for (const t of [BIG, generateTraffic(1, 3, NOW), generateTraffic(300, 3, NOW)]) {
    const x = t.expectations;
    const r = recount(t);
    assert.equal(x.unique_events, r.events.length);
    assert.equal(x.privacy_events, r.privacy);
    assert.equal(x.retention_events, r.retention);
    assert.deepEqual(x.account_sharing_user_ids, r.sharers.map(([id]) => id).sort());
    assert.equal(x.account_sharing_users, r.sharers.length);
    assert.equal(x.content_quality_windows, r.over.length);
    assert.deepEqual(x.quality_entities, [...new Set(r.over)].sort());
    assert.equal(x.content_quality_entities, x.quality_entities.length);
  }
  const x = BIG.expectations;
  assert.ok(x.privacy_events > 0 && x.retention_events > 0 && x.account_sharing_users > 0);
  for (
    const entity of [
      ...BAD_TITLES.map((t) => `content:${t}`),
      ...BAD_DEVICES.map((d) => `device:${d}`),
    ]
  ) {
    assert.ok(x.quality_entities.includes(entity), entity);
  }
});

Deno.test("parseCli() applies defaults and env, and refuses bad arguments", () => {
  const run = parseCli([], { SIM_TOKEN: "t0k" });
  assert.deepEqual(run, {
    kind: "run",
    options: {
      events: 20_000,
      concurrency: 20,
      batch: 100,
      url: "http://127.0.0.1:8000",
      seed: 42,
      token: "t0k",
      privacyToken: "t0k",
      isDryRun: false,
      isJson: false,
    },
  });
  const custom = parseCli(
    ["--events", "500", "--batch=1", "--url", "http://h:9/", "--dry-run", "--json"],
    { SIM_URL: "http://ignored:1" },
  );
  assert.equal(custom.kind, "run");
  if (custom.kind === "run") {
    assert.equal(custom.options.url, "http://h:9");
    assert.equal(custom.options.batch, 1);
    assert.ok(custom.options.isDryRun && custom.options.isJson);
  }
  const fromEnv = parseCli(["--token", "i", "--privacy-token", "r"], {
    SIM_URL: "http://sim:8080",
  });
  assert.ok(fromEnv.kind === "run" && fromEnv.options.url === "http://sim:8080");
  assert.ok(fromEnv.options.token === "i" && fromEnv.options.privacyToken === "r");
  assert.equal(parseCli(["--help"], {}).kind, "help");
  for (
    const bad of [["--batch", "501"], ["--events", "ten"], ["--url", "ftp://x"], ["--nope"], ["x"]]
  ) {
    const result = parseCli(bad, {});
    assert.equal(result.kind, "error", bad.join(" "));
  }
  const error = parseCli(["--concurrency", "0"], {});
  assert.ok(error.kind === "error" && error.message.includes("--concurrency"));
});

Deno.test("parseCli() defaults to the server's PORT without --url and SIM_URL", () => {
  const urlOf = (args: string[], env: Record<string, string>) => {
    const result = parseCli(args, env);
    return result.kind === "run" ? result.options.url : JSON.stringify(result);
  };
  assert.equal(urlOf([], { PORT: "8123" }), "http://127.0.0.1:8123");
  assert.equal(urlOf([], { PORT: "" }), "http://127.0.0.1:8000");
  assert.equal(urlOf([], { PORT: "8123", SIM_URL: "http://sim:1" }), "http://sim:1");
  assert.equal(urlOf(["--url", "http://h:2"], { PORT: "8123" }), "http://h:2");
  assert.equal(urlOf(["--url", "http://h:2"], { PORT: "nope" }), "http://h:2");
  for (const port of ["nope", "0", "65536", "80.5"]) {
    assert.match(urlOf([], { PORT: port }), /PORT: must be a port number/, port);
  }
});

Deno.test("USAGE lists every flag and environment variable with its default", () => {
  const lines = USAGE.split("\n");
  for (const flag of Object.keys(FLAGS)) {
    assert.ok(lines.some((l) => l.includes(`--${flag}`)), `--${flag} is not in the help`);
  }
  assert.deepEqual([...ENV_VARS].sort(), ["PORT", "SIM_TOKEN", "SIM_URL"]);
  for (const name of ENV_VARS) {
    const at = lines.findIndex((l) => l.startsWith(`  ${name} `));
    assert.ok(at >= 0, `${name} has no line of its own in the help`);
    assert.match(`${lines[at]} ${lines[at + 1]}`, /\(default [^)]+\)/, name);
  }
  assert.match(USAGE, /--privacy-token P bearer token with the privacy role/);
  assert.doesNotMatch(USAGE, /read role/);
});

Deno.test("formatReport() shows the expectations to compare with the server", () => {
  const options = (parseCli([], {}) as { options: SimOptions }).options;
  const text = formatReport(options, emptyReport(), BIG.expectations);
  assert.match(
    text,
    new RegExp(`privacy +${BIG.expectations.privacy_events.toLocaleString("en-US")} `),
  );
  assert.match(text, /rejected +0/);
  assert.match(text, /Expected QoE \(compare with GET \/stats\/qoe\?cdn=sim-cdn-a\)/);
  assert.match(text, new RegExp(`views +${BIG.expectations.qoe["sim-cdn-b"].views} `));
});

Deno.test("formatReport() tells items rejected inside 202 batches from refused requests", () => {
  const options = (parseCli([], {}) as { options: SimOptions }).options;
  const report = {
    ...emptyReport(),
    rejected: 41,
    rejected_in_batches: 39,
    rejected_by_status: { 422: 2 },
    rejected_by_field: { timestamp: 12, user_id: 10, event_type: 10, is_eu: 9 },
  };
  const text = formatReport(options, report, BIG.expectations);
  const malformed = BIG.expectations.malformed_sent;
  assert.match(text, new RegExp(`rejected +41 +expected ${malformed}: the malformed ones\n`));
  assert.match(text, /inside accepted batches +39 +listed as rejected in 202 batch answers/);
  assert.match(text, /in refused requests +2 +whole request refused, by status: 422: 2/);
  assert.match(text, /by field +timestamp 12, event_type 10, user_id 10, is_eu 9/);
  assert.doesNotMatch(text, /202: 39/);
});

const FAST: Omit<SenderOptions, "url"> = {
  batch: 100,
  concurrency: 2,
  token: "secret",
  maxRetries: 2,
  retryDelayMs: 1,
  timeoutMs: 5_000,
};

test("sendItems() batches, retries a 503 after Retry-After and counts rejected items", async () => {
  const seen: Array<{ path: string; size: number; auth: string | null }> = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const body = await req.json();
    seen.push({
      path: new URL(req.url).pathname,
      size: body.length,
      auth: req.headers.get("authorization"),
    });
    if (seen.length === 1) {
      return new Response("busy", { status: 503, headers: { "retry-after": "0" } });
    }
    if (body[0].event_id === "e200") {
      const rejected = body.map((_: unknown, index: number) => ({
        index,
        issues: [{ path: "timestamp", message: "late" }, { path: "timestamp", message: "bad" }],
      }));
      return Response.json({ error: "none valid", issues: [], rejected }, { status: 422 });
    }
    const rejected = body[0].event_id === "e0"
      ? [{ index: 3, issues: [{ path: "user_id", message: "Invalid input" }] }]
      : [];
    return Response.json({ accepted: body.length - rejected.length, rejected }, { status: 202 });
  });
  try {
    const report = emptyReport();
    const items = Array.from({ length: 250 }, (_, i) => ({ event_id: `e${i}` }));
    const url = `http://127.0.0.1:${server.addr.port}`;
    await sendItems(items, { ...FAST, url }, report);
    assert.equal(report.events_sent, 250);
    assert.equal(report.accepted, 199);
    assert.equal(report.rejected, 51);
    assert.equal(report.rejected_in_batches, 1);
    assert.deepEqual(report.rejected_by_status, { 422: 50 });
    assert.deepEqual(report.rejected_by_field, { user_id: 1, timestamp: 50 });
    assert.equal(report.retries, 1);
    assert.deepEqual(report.responses_by_status, { 202: 2, 422: 1, 503: 1 });
    assert.deepEqual(seen.map((s) => s.size).sort(), [100, 100, 100, 50]);
    assert.ok(seen.every((s) => s.path === "/events/batch" && s.auth === "Bearer secret"));
  } finally {
    await server.shutdown();
  }
});

test("sendItems() posts single events, and a refused token stops the run", async () => {
  const paths: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    paths.push(new URL(req.url).pathname);
    const event = await req.json();
    if (new URL(req.url).pathname === "/privacy/requests") {
      return Response.json({}, { status: 201 });
    }
    if (event.event_id === "e2") return Response.json({ error: "no" }, { status: 401 });
    return Response.json({ accepted: 1, event_id: event.event_id }, { status: 202 });
  });
  try {
    const url = `http://127.0.0.1:${server.addr.port}`;
    const report = emptyReport();
    await sendPrivacyRequests([{ user_id: "u1", type: "deletion" }], { ...FAST, url }, report);
    assert.equal(report.privacy_requests_recorded, 1);
    const items = Array.from({ length: 10 }, (_, i) => ({ event_id: `e${i}` }));
    await sendItems(items, { ...FAST, url, batch: 1, concurrency: 1 }, report);
    assert.deepEqual(paths, ["/privacy/requests", "/events", "/events", "/events"]);
    assert.equal(report.accepted, 2);
    assert.deepEqual(report.rejected_by_status, { 401: 1 });
    assert.match(report.aborted ?? "", /401 .*ingest role/);
  } finally {
    await server.shutdown();
  }
});

test("sendItems() counts a batch answer without accepted as the items not rejected", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => Response.json({ rejected: [{ index: 0, issues: [] }] }, { status: 202 }),
  );
  try {
    const report = emptyReport();
    const items = Array.from({ length: 5 }, (_, i) => ({ event_id: `e${i}` }));
    await sendItems(items, { ...FAST, url: `http://127.0.0.1:${server.addr.port}` }, report);
    assert.equal(report.accepted, 4);
    assert.equal(report.rejected_in_batches, 1);
    assert.deepEqual(report.rejected_by_field, { "(unknown)": 1 });
  } finally {
    await server.shutdown();
  }
});

test("checkPrivacyAccess() names the privacy role when the server refuses the token", async () => {
  const seen: Array<string | null> = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const auth = req.headers.get("authorization");
    seen.push(`${req.method} ${new URL(req.url).pathname} ${auth}`);
    if (auth === "Bearer privacy") return Response.json({ items: [] });
    return Response.json(
      { error: 'needs one of the roles privacy, admin; token "a" has role analyst', issues: [] },
      { status: 403 },
    );
  });
  try {
    const url = `http://127.0.0.1:${server.addr.port}`;
    assert.equal(await checkPrivacyAccess(url, "privacy"), null);
    const refused = await checkPrivacyAccess(url, "analyst");
    assert.match(refused ?? "", /^Cannot file privacy requests: the server answered 403 /);
    assert.match(refused ?? "", /has role analyst/);
    assert.match(refused ?? "", /token with the privacy role .*--privacy-token/);
    assert.deepEqual(seen, [
      "GET /privacy/requests Bearer privacy",
      "GET /privacy/requests Bearer analyst",
    ]);
    const report = emptyReport();
    const requests = [{ user_id: "u1", type: "deletion" as const }];
    await sendPrivacyRequests(requests, { ...FAST, url, token: "analyst" }, report);
    assert.match(report.aborted ?? "", /403 .*privacy role/);
  } finally {
    await server.shutdown();
  }
});

test("sendItems() counts network errors and undelivered events instead of crashing", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(),
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  await server.shutdown();
  const report = emptyReport();
  await sendItems([{ event_id: "e1" }, { event_id: "e2" }], { ...FAST, url, batch: 1 }, report);
  assert.equal(report.undelivered, 2);
  assert.equal(report.accepted, 0);
  assert.equal(report.network_errors, 2 * (FAST.maxRetries + 1));
  assert.match(report.last_network_error ?? "", /POST http:\/\/127\.0\.0\.1/);
});
