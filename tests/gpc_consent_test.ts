import assert from "node:assert/strict";
import { ErasedUsers } from "../actors/erased_users.ts";
import { privacyRoutes } from "../routes/privacy.ts";
import { type Harness, startHarness } from "./_harness.ts";
import { test } from "./_permissions.ts";
import { recentBase } from "./_scenarios.ts";
import { makeWireEvent } from "./fixtures.ts";

const GPC = { "Sec-GPC": "1" };

/** The opt-outs of sale and sharing on record, by user. */
async function optOuts(h: Harness) {
  const rows = await h.pipeline.db.selectFrom("privacy_requests").selectAll()
    .where("request_type", "=", "opt_out_sale_share").orderBy("user_id").execute();
  return rows.map((r) => ({
    user_id: r.user_id,
    source: r.source,
    status: r.status,
    jurisdiction: r.jurisdiction,
    isDueAtReceipt: new Date(r.due_at!).getTime() === new Date(r.requested_at).getTime(),
  }));
}

function gpcRecord(userId: string) {
  return {
    user_id: userId,
    source: "gpc",
    status: "completed",
    jurisdiction: "ccpa",
    isDueAtReceipt: true,
  };
}

test("[privacy] Sec-GPC on ingest records one opt-out of sale and sharing per user", async () => {
  const h = await startHarness();
  try {
    const t0 = recentBase();
    const batch = [
      makeWireEvent({ event_id: "g1", user_id: "gpc-a", atMs: t0 }),
      makeWireEvent({ event_id: "g2", user_id: "gpc-a", atMs: t0 + 1_000 }),
      makeWireEvent({ event_id: "g3", user_id: "gpc-b", atMs: t0 + 2_000 }),
      { ...makeWireEvent({ event_id: "g4", user_id: "gpc-invalid" }), timestamp: "not a time" },
    ];
    const res = await h.post("/events/batch", batch, GPC);
    const body = await res.json();
    assert.equal(res.status, 202, JSON.stringify(body));
    assert.equal(body.gpc, true);
    assert.equal(body.accepted, 3);
    // The rejected event's user sent no accepted event: no opt-out is recorded for them.
    assert.deepEqual(await optOuts(h), [gpcRecord("gpc-a"), gpcRecord("gpc-b")]);

    // Users already recorded cost no insert: with their rows gone, a repeat does not restore them.
    await h.pipeline.db.deleteFrom("privacy_requests").execute();
    const repeat = await h.post("/events/batch", [
      makeWireEvent({ event_id: "g5", user_id: "gpc-a", atMs: t0 + 3_000 }),
      makeWireEvent({ event_id: "g6", user_id: "gpc-c", atMs: t0 + 4_000 }),
    ], GPC);
    assert.equal(repeat.status, 202);
    assert.equal((await repeat.json()).gpc, true);
    assert.deepEqual(await optOuts(h), [gpcRecord("gpc-c")]);

    // Without the header nothing is recorded, and the answer says nothing about GPC.
    const plain = await h.post("/events/batch", [
      makeWireEvent({ event_id: "g7", user_id: "gpc-d", atMs: t0 + 5_000 }),
    ]);
    assert.equal(plain.status, 202);
    assert.equal((await plain.json()).gpc, undefined);
    const single = await h.post(
      "/events",
      makeWireEvent({ event_id: "g8", user_id: "gpc-e", atMs: t0 + 6_000 }),
      { "Sec-GPC": "0" },
    );
    assert.equal(single.status, 202);
    assert.deepEqual(await optOuts(h), [gpcRecord("gpc-c")]);
  } finally {
    await h.pipeline.stop();
  }
});

test("[privacy] Sec-GPC on one event records it, and keeps an API opt-out on record", async () => {
  const h = await startHarness();
  try {
    const filed = await h.post("/privacy/requests", {
      user_id: "gpc-api",
      type: "opt_out_sale_share",
      jurisdiction: "gdpr",
    });
    assert.equal(filed.status, 202);
    const t0 = recentBase();
    for (const [eventId, userId] of [["s1", "gpc-api"], ["s2", "gpc-single"]]) {
      const res = await h.post(
        "/events",
        makeWireEvent({ event_id: eventId, user_id: userId, atMs: t0 }),
        GPC,
      );
      const body = await res.json();
      assert.equal(res.status, 202, JSON.stringify(body));
      assert.deepEqual([body.accepted, body.gpc], [1, true]);
    }
    assert.deepEqual(await optOuts(h), [
      {
        user_id: "gpc-api",
        source: "api",
        status: "completed",
        jurisdiction: "gdpr",
        isDueAtReceipt: false,
      },
      gpcRecord("gpc-single"),
    ]);
  } finally {
    await h.pipeline.stop();
  }
});

interface ConsentHistory {
  user_id: string;
  changes: Array<{ at: string; has_consent: boolean; event_id: string; source: string }>;
  current: { has_consent: boolean } | null;
  source: string;
  retained_days: number | null;
}

test("[privacy] the consent history lists the changes at event time from the ledger", async () => {
  const h = await startHarness();
  try {
    const t0 = recentBase();
    const events = [true, true, false, false, true].map((hasConsent, i) =>
      makeWireEvent({
        event_id: `consent-${i}`,
        user_id: "consent-user",
        has_consent: hasConsent,
        atMs: t0 + i * 1_000,
      })
    );
    // Sent newest first: the history follows event time, not arrival.
    await h.send(events.toReversed());
    await h.send([
      makeWireEvent({ event_id: "other", user_id: "other-user", has_consent: false, atMs: t0 }),
    ]);
    await h.flush();
    const history = await h.json<ConsentHistory>("/privacy/users/consent-user/consent");
    assert.deepEqual(
      history.changes.map(({ at, has_consent, event_id, source }) => ({
        at,
        has_consent,
        event_id,
        source,
      })),
      [
        { at: new Date(t0).toISOString(), has_consent: true, event_id: "consent-0" },
        { at: new Date(t0 + 2_000).toISOString(), has_consent: false, event_id: "consent-2" },
        { at: new Date(t0 + 4_000).toISOString(), has_consent: true, event_id: "consent-4" },
      ].map((change) => ({ ...change, source: "has_consent" })),
    );
    assert.equal(history.current?.has_consent, true);
    assert.equal(history.user_id, "consent-user");
    assert.equal(history.source, "ledger");
    // The read is audited with the user as subject, so an erasure pseudonymises the row.
    const audited = await h.pipeline.db.selectFrom("audit_log").select("subject_user_id")
      .where("path", "=", "/privacy/users/consent-user/consent").execute();
    assert.deepEqual(audited, [{ subject_user_id: "consent-user" }]);

    const unknown = await h.json<ConsentHistory>("/privacy/users/nobody/consent");
    assert.deepEqual([unknown.changes, unknown.current], [[], null]);
    const tooLong = await h.get(`/privacy/users/${"x".repeat(129)}/consent`);
    assert.equal(tooLong.status, 400);
  } finally {
    await h.pipeline.stop();
  }
});

test("[privacy] the consent history says how long the ledger keeps a state", async () => {
  const h = await startHarness();
  try {
    const app = privacyRoutes({
      db: h.pipeline.db,
      recordOptOut: () => {},
      eraser: h.pipeline.eraser,
      erased: new ErasedUsers("test-key"),
      defaultJurisdiction: "gdpr",
      consentRetentionDays: 1825,
    });
    const res = await app.request("http://test/users/nobody/consent");
    assert.equal(res.status, 200);
    assert.equal((await res.json()).retained_days, 1825);
  } finally {
    await h.pipeline.stop();
  }
});
