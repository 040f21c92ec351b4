import assert from "node:assert/strict";
import { TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { type ServerProcess, spawnServer } from "./_server_process.ts";
import { makeWireEvent, type WireEvent } from "./fixtures.ts";
import { test } from "./_permissions.ts";

/** Every IP and e-mail address the test sends; none may appear in the database. */
const SECRETS = {
  ipAddressV4: "203.0.113.77",
  ipAddressV6: "2001:db8:85a3::8a2e:370:7334",
  ipAddressMapped: "::ffff:192.0.2.211",
  forwardedFor: "198.51.100.201",
  metadataV4: "192.0.2.147",
  metadataV6: "fe80::1ff:fe23:4567:890a%eth0",
  nestedV6: "2001:db8:feed::beef",
  nestedMapped: "::ffff:203.0.113.199",
  droppedV4: "198.51.100.173",
  errorV4: "192.0.2.158",
  metadataEmail: "ann.viewer@example.com",
  nestedEmail: "bob+tv@mail.example.org",
  droppedEmail: "carol@example.net",
  errorEmail: "dave@example.co.uk",
  planEmail: "erin@example.io",
  idEmail: "frank@example.com",
} as const;

function events(nowMs: number): WireEvent[] {
  const at = (i: number) => ({ atMs: nowMs - 60_000 + i });
  return [
    makeWireEvent({
      ...at(0),
      event_id: "p-1",
      ip_address: SECRETS.ipAddressV4,
      extra_metadata: {
        platform: `tizen via ${SECRETS.metadataV4}`,
        app_version: "5.2.0",
        model: `owner ${SECRETS.metadataEmail}`,
        cdn: {
          edge: SECRETS.metadataV6,
          hops: [SECRETS.nestedV6, { via: SECRETS.nestedMapped, contact: SECRETS.nestedEmail }],
        },
        owner_ip: SECRETS.droppedV4,
        owner: { mail: SECRETS.droppedEmail },
      },
    }),
    makeWireEvent({
      ...at(1),
      event_id: "p-2",
      event_type: "ERROR",
      ip_address: SECRETS.ipAddressV6,
      error_code: `E_CONN ${SECRETS.errorV4} ${SECRETS.errorEmail}`,
      subscription_plan: `family:${SECRETS.planEmail}`,
    }),
    makeWireEvent({ ...at(2), event_id: "p-3", ip_address: SECRETS.ipAddressMapped }),
  ];
}

async function until(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function post(server: ServerProcess, path: string, body: unknown): Promise<Response> {
  return await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-for": SECRETS.forwardedFor },
    body: JSON.stringify(body),
  });
}

async function pgDump(databaseUrl: string): Promise<string> {
  const output = await new Deno.Command("/usr/bin/pg_dump", {
    args: ["--no-owner", "--no-privileges", databaseUrl],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new Error(`Cannot dump the database: ${decoder.decode(output.stderr)}`);
  }
  return decoder.decode(output.stdout);
}

test({
  name: "[privacy] a pg_dump after ingest holds none of the IP or e-mail addresses clients sent",
  ignore: TEST_DATABASE_URL === undefined,
  fn: () =>
    withFreshPostgres(TEST_DATABASE_URL!, async (databaseUrl) => {
      const server = await spawnServer({
        DATABASE_URL: databaseUrl,
        QUEUE: "postgres",
        WORKERS: "1",
        FLUSH_INTERVAL_MS: "100",
        LOG_LEVEL: "error",
      });
      try {
        const [first, ...rest] = events(Date.now());
        const single = await post(server, "/events", first);
        assert.equal(single.status, 202);
        const body = await single.json();
        assert.deepEqual(body.ignored_fields, ["extra_metadata.owner_ip", "extra_metadata.owner"]);
        const batch = await post(server, "/events/batch", [
          ...rest,
          makeWireEvent({ event_id: "p-4", user_id: SECRETS.idEmail }),
        ]);
        assert.equal(batch.status, 202);
        const outcome = await batch.json();
        assert.equal(outcome.accepted, 2);
        assert.equal(outcome.rejected[0].index, 2);
        assert.match(outcome.rejected[0].issues[0].message, /^ids must be opaque/);

        await until("the 3 accepted events to be counted", async () => {
          const res = await fetch(`${server.url}/stats/summary`);
          const summary = await res.json();
          return res.status === 200 && summary.total_events === 3;
        });
        const dump = await pgDump(databaseUrl);
        // The dump really holds the events, scrubbed: the test would pass vacuously otherwise.
        assert.match(dump, /p-2/);
        assert.match(dump, /E_CONN \[ip\] \[email\]/);
        assert.match(dump, /owner \[email\]/);
        for (const [name, secret] of Object.entries(SECRETS)) {
          const forms = new Set([secret, secret.toLowerCase(), secret.split("%")[0]]);
          if (secret.startsWith("::ffff:")) forms.add(secret.slice("::ffff:".length));
          for (const form of forms) {
            assert.ok(!dump.includes(form), `the dump holds ${name}: ${form}`);
          }
        }
      } finally {
        server.kill("SIGTERM");
        await server.exited();
      }
    }),
});
