import assert from "node:assert/strict";
import { signatureOf } from "../actors/alert_sender.ts";
import { startHarness } from "./_harness.ts";
import { test } from "./_permissions.ts";
import { recentBase } from "./_scenarios.ts";
import { makeWireEvent } from "./fixtures.ts";

const SECRET = "webhook-secret-0123456789";

/** A local receiver that answers 503 while `isDown`, and keeps what it accepted. */
function startReceiver() {
  const received: Array<{ headers: Headers; body: string }> = [];
  const state = { isDown: false, attempts: 0 };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    state.attempts++;
    const body = await req.text();
    if (state.isDown) return new Response("down", { status: 503 });
    received.push({ headers: req.headers, body });
    return new Response(null, { status: 204 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/alerts`,
    received,
    state,
    close: () => server.shutdown(),
  };
}

test("[alerts] a HIGH flag is delivered once, signed, without the user, after the receiver comes back", async () => {
  const receiver = startReceiver();
  const h = await startHarness(
    {
      queue: "postgres",
      alerts: { url: receiver.url, secret: SECRET, minLevel: "HIGH", isUserIncluded: false },
    },
    { isAlertPolling: false },
  );
  try {
    const t0 = recentBase();
    // EU without consent: a HIGH privacy flag for each event; a consenting one raises nothing.
    await h.send([
      makeWireEvent({ event_id: "a1", user_id: "viewer-secret-1", has_consent: false, atMs: t0 }),
      makeWireEvent({ event_id: "a2", user_id: "viewer-secret-2", has_consent: false, atMs: t0 }),
      makeWireEvent({ event_id: "ok", user_id: "viewer-3", has_consent: true, atMs: t0 }),
    ]);
    await h.flush();
    const alerts = h.pipeline.alerts!;

    // The receiver is down: nothing is delivered, and the alerts wait with a backoff.
    receiver.state.isDown = true;
    assert.equal(await alerts.runOnce(Date.now()), 0);
    assert.equal(receiver.state.attempts, 2);
    assert.equal(await alerts.runOnce(Date.now()), 0, "not due again before the backoff");
    assert.equal(receiver.state.attempts, 2);

    // Back up: after the backoff both are delivered, once.
    receiver.state.isDown = false;
    assert.equal(await alerts.runOnce(Date.now() + 5_000), 2);
    assert.equal(await alerts.runOnce(Date.now() + 60_000), 0);
    // The same flags raised again at the same level are not new alerts.
    await h.send([
      makeWireEvent({ event_id: "a1", user_id: "viewer-secret-1", has_consent: false, atMs: t0 }),
    ]);
    await h.flush();
    assert.equal(await alerts.runOnce(Date.now() + 120_000), 0);

    assert.equal(receiver.received.length, 2);
    const keys = new Set<string>();
    for (const { headers, body } of receiver.received) {
      const timestamp = headers.get("x-alert-timestamp")!;
      assert.equal(headers.get("x-alert-signature"), signatureOf(SECRET, timestamp, body));
      const alert = JSON.parse(body);
      assert.equal(alert.level, "HIGH");
      assert.equal(alert.rule, "privacy");
      assert.equal(headers.get("idempotency-key"), alert.idempotency_key);
      keys.add(alert.idempotency_key);
      assert.ok(!body.includes("viewer-secret"), `no user id in ${body}`);
    }
    assert.equal(keys.size, 2);
    const metrics = await (await h.get("/metrics")).text();
    assert.match(metrics, /alerts_total\{outcome="delivered"\} 2/);
    assert.match(metrics, /alerts_total\{outcome="failed"\} 2/);
    assert.match(metrics, /alert_outbox_pending 0/);
  } finally {
    await h.pipeline.stop();
    await receiver.close();
  }
});
