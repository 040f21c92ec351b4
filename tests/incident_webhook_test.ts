/**
 * Incident alerts end to end: the anomaly detector's incident changes reach a real local webhook
 * through the alert sender, signed and keyed `incident-<id>:<revision>`, retried after a refusal,
 * and silent while a person muted the incident.
 */
import assert from "node:assert/strict";
import { sql } from "kysely";
import { AlertSender, signatureOf } from "../actors/alert_sender.ts";
import { pendingIncidentAlertCount } from "../db/incident_outbox.ts";
import { openIncident, recoverIncident, reviewIncident, updateIncident } from "../db/incidents.ts";
import type { Logger } from "../logger.ts";
import { type Harness, startHarness, TEST_DATABASE_URL, withFreshPostgres } from "./_harness.ts";
import { test } from "./_permissions.ts";
import { makeIncidentReading, T0 } from "./fixtures.ts";

const SECRET = "webhook-secret-0123456789";
const MINUTE_MS = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();

/** A local receiver answering `state.status`, keeping every request it got. */
function startReceiver() {
  const requests: Array<{ headers: Headers; body: string; status: number }> = [];
  const state = { status: 204 };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const body = await req.text();
    requests.push({ headers: req.headers, body, status: state.status });
    return new Response(state.status === 204 ? null : "answer", { status: state.status });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/alerts`,
    requests,
    /** The requests the receiver accepted. */
    accepted: () => requests.filter((r) => r.status < 300),
    state,
    close: () => server.shutdown(),
  };
}

type Receiver = ReturnType<typeof startReceiver>;

/**
 * Registers a scenario on PGlite and, when TEST_DATABASE_URL is set, on a fresh PostgreSQL database,
 * with alerts going to a local receiver; the sender does not poll: the scenario calls `runOnce`.
 */
function onEveryDatabase(name: string, scenario: (h: Harness, r: Receiver) => Promise<void>): void {
  const run = async (databaseUrl: string | undefined) => {
    const receiver = startReceiver();
    try {
      const h = await startHarness({
        databaseUrl,
        alerts: { url: receiver.url, secret: SECRET, minLevel: "HIGH", isUserIncluded: false },
      }, { isAlertPolling: false });
      try {
        await scenario(h, receiver);
      } finally {
        await h.pipeline.stop();
      }
    } finally {
      await receiver.close();
    }
  };
  test(`[alerts] ${name} (PGlite)`, () => run(undefined));
  test({
    name: `[postgres] ${name}`,
    ignore: TEST_DATABASE_URL === undefined,
    fn: () => withFreshPostgres(TEST_DATABASE_URL!, run),
  });
}

/** The outbox as `[incident id, revision, reason]`, oldest first. */
async function outboxOf(h: Harness): Promise<Array<[string, number, string]>> {
  const result = await sql<{ incident_id: unknown; revision: number; reason: string }>`
    select incident_id, revision, reason from incident_outbox order by incident_id, revision`
    .execute(h.pipeline.db);
  return result.rows.map((r) => [String(r.incident_id), Number(r.revision), r.reason]);
}

onEveryDatabase(
  "an incident's opened and recovered alerts reach the webhook signed, keyed incident-<id>:<revision>",
  async (h, receiver) => {
    const db = h.pipeline.db;
    const alerts = h.pipeline.alerts!;
    const id = await openIncident(db, makeIncidentReading(), T0 - 5 * MINUTE_MS);
    assert.equal(await pendingIncidentAlertCount(db), 1);
    assert.equal(await alerts.runOnce(Date.now()), 1);

    // A further window at the same level within the hour is no alert; the recovery is.
    await updateIncident(
      db,
      id,
      makeIncidentReading({ windowStartMs: T0 + 5 * MINUTE_MS, observed: 290 }),
    );
    assert.equal(await alerts.runOnce(Date.now()), 0);
    await recoverIncident(db, id, T0 + 15 * MINUTE_MS);
    assert.equal(await pendingIncidentAlertCount(db), 1);
    assert.equal(await alerts.runOnce(Date.now()), 1);
    assert.equal(
      await alerts.runOnce(Date.now() + 60_000),
      0,
      "delivered alerts are not sent again",
    );
    assert.equal(await pendingIncidentAlertCount(db), 0);

    const sent = receiver.accepted();
    assert.equal(sent.length, 2);
    for (const { headers, body } of sent) {
      const timestamp = headers.get("x-alert-timestamp")!;
      assert.equal(headers.get("x-alert-signature"), signatureOf(SECRET, timestamp, body));
      assert.equal(headers.get("idempotency-key"), JSON.parse(body).idempotency_key);
    }
    const [opened, recovered] = sent.map((r) => JSON.parse(r.body));
    assert.deepEqual(sent.map((r) => r.headers.get("idempotency-key")), [
      `incident-${id}:1`,
      `incident-${id}:2`,
    ]);
    assert.deepEqual(opened, {
      type: "incident",
      idempotency_key: `incident-${id}:1`,
      reason: "opened",
      incident: {
        id,
        revision: 1,
        series: "volume:platform",
        key: "tizen",
        kind: "count",
        state: "active",
        status: "open",
        level: "LOW",
        started_at: iso(T0 - 5 * MINUTE_MS),
        opened_at: iso(T0),
        last_window: iso(T0),
        recovered_at: null,
        expected: 1200,
        observed: 310,
        band: [1010, 1390],
        z: -9.4,
        windows: 1,
        viewers: 80,
        drill_down: makeIncidentReading().drillDown,
        related: [],
        exposure: makeIncidentReading().exposure,
      },
    });
    assert.equal(recovered.reason, "recovered");
    assert.equal(recovered.incident.revision, 2);
    assert.equal(recovered.incident.state, "recovered");
    assert.equal(recovered.incident.recovered_at, iso(T0 + 15 * MINUTE_MS));
    assert.equal(recovered.incident.last_window, iso(T0 + 5 * MINUTE_MS));
    assert.equal(recovered.incident.observed, 290);
    assert.equal(recovered.incident.windows, 2);

    const metrics = await (await h.get("/metrics")).text();
    assert.match(metrics, /alerts_total\{outcome="delivered"\} 2/);
  },
);

onEveryDatabase(
  "an incident alert the receiver refuses is retried after the backoff, then delivered once",
  async (h, receiver) => {
    const db = h.pipeline.db;
    const warnings: string[] = [];
    const outcomes: string[] = [];
    const logger: Logger = {
      debug: () => {},
      info: () => {},
      warn: (message) => warnings.push(message),
      error: () => {},
      log: () => {},
    };
    // A sender of its own, to read its warnings; it shares the pipeline's database and receiver.
    const alerts = new AlertSender({
      db,
      url: receiver.url,
      secret: SECRET,
      isUserIncluded: false,
      logger,
      onOutcome: (outcome) => outcomes.push(outcome),
    });
    const id = await openIncident(db, makeIncidentReading(), T0);
    const nowMs = Date.now();

    receiver.state.status = 500;
    assert.equal(await alerts.runOnce(nowMs), 0);
    assert.equal(receiver.requests.length, 1);
    assert.deepEqual(warnings, [`Cannot deliver alert incident-${id}:1: retrying in 1000 ms`]);
    const failed = await sql<
      { attempts: number; last_error: string | null; delivered_at: unknown }
    >`
      select attempts, last_error, delivered_at from incident_outbox where incident_id = ${id}`
      .execute(db);
    assert.deepEqual(failed.rows.map((r) => [r.attempts, r.last_error, r.delivered_at]), [
      [1, "receiver answered 500", null],
    ]);
    assert.equal(await alerts.runOnce(nowMs), 0, "not due again before the backoff");
    assert.equal(receiver.requests.length, 1);

    receiver.state.status = 200;
    assert.equal(await alerts.runOnce(nowMs + 5_000), 1);
    assert.equal(await alerts.runOnce(nowMs + 60_000), 0);
    assert.deepEqual(receiver.requests.map((r) => [r.status, r.headers.get("idempotency-key")]), [
      [500, `incident-${id}:1`],
      [200, `incident-${id}:1`],
    ]);
    assert.equal(
      receiver.requests[0].body,
      receiver.requests[1].body,
      "a retry sends the same alert",
    );
    assert.deepEqual(outcomes, ["failed", "delivered"]);
    const delivered = await sql<{ last_error: string | null; delivered_at: unknown }>`
      select last_error, delivered_at from incident_outbox where incident_id = ${id}`.execute(db);
    assert.equal(delivered.rows[0].last_error, null);
    assert.notEqual(delivered.rows[0].delivered_at, null);
    assert.equal(await pendingIncidentAlertCount(db), 0);
  },
);

onEveryDatabase(
  "a muted incident sends no hourly update while an unmuted one does",
  async (h, receiver) => {
    const db = h.pipeline.db;
    const alerts = h.pipeline.alerts!;
    const muted = await openIncident(db, makeIncidentReading(), T0);
    const loud = await openIncident(db, makeIncidentReading({ key: "webos" }), T0);
    assert.equal(await alerts.runOnce(Date.now()), 2);

    const review = await reviewIncident(db, muted, {
      status: "muted",
      mutedUntilMs: T0 + 3 * 60 * MINUTE_MS,
      actor: "ops",
    });
    assert.equal(review?.status, "muted");
    // 61 minutes on at the same level: an hourly update, unless muted.
    const later = T0 + 61 * MINUTE_MS;
    await updateIncident(db, muted, makeIncidentReading({ windowStartMs: later }));
    await updateIncident(db, loud, makeIncidentReading({ key: "webos", windowStartMs: later }));

    assert.deepEqual(await outboxOf(h), [
      [muted, 1, "opened"],
      [loud, 1, "opened"],
      [loud, 2, "update"],
    ]);
    assert.equal(await alerts.runOnce(Date.now()), 1);
    assert.deepEqual(receiver.accepted().map((r) => r.headers.get("idempotency-key")), [
      `incident-${muted}:1`,
      `incident-${loud}:1`,
      `incident-${loud}:2`,
    ]);
    const update = JSON.parse(receiver.accepted()[2].body);
    assert.equal(update.reason, "update");
    assert.equal(update.incident.key, "webos");
    assert.equal(update.incident.last_window, iso(later));
  },
);
