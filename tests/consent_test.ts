import assert from "node:assert/strict";
import { type Harness, testPipelineOnEveryDatabase } from "./_harness.ts";
import { recentBase } from "./_scenarios.ts";
import { gppTcfEu, gppUsNat, tcString } from "./consent_strings.ts";
import { makeWireEvent, type WireEvent } from "./fixtures.ts";

const MINUTE = 60_000;

interface Change {
  at: string;
  event_id: string | null;
  source: string;
  purposes: string[];
  has_consent: boolean;
  cmp_id: number | null;
  string_sha256: string | null;
  carried: boolean;
}

interface Ledger {
  user_id: string;
  source: string;
  changes: Change[];
  current: Change | null;
  state_at?: Change | null;
}

/** An EU viewer's event `i` minutes after `t0`, with a consent signal or only has_consent. */
function eu(
  t0: number,
  i: number,
  user: string,
  consent?: WireEvent["consent"],
  hasConsent?: boolean,
) {
  const event: WireEvent = makeWireEvent({
    event_id: `${user}-${i}`,
    user_id: user,
    device_id: `${user}-tv`,
    region: "DE",
    atMs: t0 + i * MINUTE,
    has_consent: hasConsent ?? true,
  });
  if (consent !== undefined) event.consent = consent;
  if (hasConsent === undefined && consent !== undefined) {
    delete (event as Partial<WireEvent>).has_consent;
  }
  return event;
}

async function consentScenario(h: Harness): Promise<void> {
  const t0 = recentBase() - 60 * MINUTE;
  const full = tcString([1, 8], { cmpId: 31 });
  const storageOnly = tcString([1], { cmpId: 31 });
  const events = [
    eu(t0, 0, "ana", undefined, true),
    eu(t0, 1, "ana", { tcf: full }),
    eu(t0, 2, "ana", { tcf: full }),
    eu(t0, 3, "ana", { tcf: storageOnly }),
    eu(t0, 4, "ana", { tcf: storageOnly }),
    eu(t0, 5, "ana", { purposes: { storage: true, measurement: true } }),
  ];
  // Out of event-time order, in two batches: the ledger follows event time.
  const first = await h.post("/events/batch", [events[3], events[5], events[0]]);
  assert.equal(first.status, 202, await first.clone().text());
  const second = await h.post("/events/batch", [events[1], events[4], events[2]]);
  assert.equal(second.status, 202);
  // The decoded signal wins over has_consent, and the answer says so; a bad string grants nothing.
  const both = await h.post("/events", eu(t0, 6, "ana", { tcf: storageOnly }, true));
  assert.deepEqual((await both.json()).consent_notes, [
    "has_consent is ignored: the decoded consent signal decides",
  ]);
  const garbage = await h.post("/events", eu(t0, 7, "bo", { tcf: "not-a-tc-string" }));
  assert.equal(garbage.status, 202);
  assert.match(
    (await garbage.json()).consent_notes[0],
    /^consent\.tcf does not decode: .*treated as no consent$/,
  );
  const missing = await h.post("/events", { ...eu(t0, 8, "cy"), has_consent: undefined });
  assert.equal(missing.status, 422, "has_consent is still required without a signal");
  // A Californian whose GPP string says "opted out of sale": one record, never withdrawn.
  await h.send([
    {
      ...makeWireEvent({ event_id: "ca-1", user_id: "cal", region: "US-CA", atMs: t0 }),
      consent: { gpp: gppUsNat({ saleOptOut: true }), gpp_sid: [7] },
    },
    {
      ...makeWireEvent({ event_id: "ca-2", user_id: "cal", region: "US-CA", atMs: t0 + MINUTE }),
      consent: { gpp: gppUsNat({ saleOptOut: true }), gpp_sid: [7] },
    },
    {
      ...makeWireEvent({
        event_id: "ca-3",
        user_id: "cal",
        region: "US-CA",
        atMs: t0 + 2 * MINUTE,
      }),
      consent: { gpp: gppUsNat(), gpp_sid: [7] },
    },
    {
      ...makeWireEvent({ event_id: "gp-1", user_id: "gus", region: "FR", atMs: t0 }),
      consent: { gpp: gppTcfEu([1, 8], 12), gpp_sid: [2] },
    },
  ]);
  await h.flush();

  const ledger = await h.json<Ledger>("/privacy/users/ana/consent");
  assert.equal(ledger.source, "ledger");
  assert.deepEqual(ledger.changes.map((c) => [c.event_id, c.source, c.purposes.join("+")]), [
    ["ana-0", "has_consent", "storage+measurement"],
    ["ana-1", "tcf", "storage+measurement"],
    ["ana-3", "tcf", "storage"],
    ["ana-5", "purposes", "storage+measurement"],
    ["ana-6", "tcf", "storage"],
  ]);
  const proof = ledger.changes[1];
  assert.equal(proof.cmp_id, 31);
  assert.match(proof.string_sha256 ?? "", /^[0-9a-f]{32}$/);
  const stored = JSON.stringify(
    await h.pipeline.db.selectFrom("consent_ledger").selectAll().execute(),
  ) + JSON.stringify(await h.pipeline.db.selectFrom("raw_events").select("consent").execute());
  assert.ok(!stored.includes(full) && !stored.includes(storageOnly), "strings are never stored");
  const at = await h.json<Ledger>(
    `/privacy/users/ana/consent?at=${
      encodeURIComponent(new Date(t0 + 3.5 * MINUTE).toISOString())
    }`,
  );
  assert.deepEqual(at.state_at?.purposes, ["storage"]);
  assert.equal(at.state_at?.event_id, "ana-3");

  // The privacy rule asks the needed purposes: storage alone is not consent to measurement.
  const flagged = await h.json<
    { items: Array<{ user_id: string; evidence: { event_ids: string[] } }> }
  >(
    "/compliance/events?rule=privacy",
  );
  const anaFlagged = flagged.items.filter((f) => f.user_id === "ana").flatMap((f) =>
    f.evidence.event_ids
  );
  assert.deepEqual(anaFlagged.toSorted(), ["ana-3", "ana-4", "ana-6"]);
  assert.ok(flagged.items.some((f) => f.user_id === "bo"), "an undecodable string is no consent");
  assert.ok(!flagged.items.some((f) => f.user_id === "gus"), "GPP's EU section grants 1 and 8");

  const optOuts = await h.pipeline.db.selectFrom("privacy_requests").selectAll()
    .where("request_type", "=", "opt_out_sale_share").execute();
  assert.deepEqual(optOuts.map((r) => [r.user_id, r.source, r.status]), [[
    "cal",
    "gpp",
    "completed",
  ]]);
  const cal = await h.json<Ledger>("/privacy/users/cal/consent");
  assert.deepEqual(
    cal.changes.map((c) => (c as unknown as { opt_out_sale_share: boolean }).opt_out_sale_share),
    [true, false],
  );

  const summary = await h.json<{
    required_purposes: string[];
    regions: Array<
      {
        region: string;
        users: number;
        events: number;
        signal_events: number;
        consent_share: number;
        purposes: Record<string, { users: number }>;
      }
    >;
  }>("/compliance/consent/summary");
  assert.deepEqual(summary.required_purposes, ["storage", "measurement"]);
  const de = summary.regions.find((r) => r.region === "DE")!;
  // ana (storage only, latest) and bo (nothing): nobody in DE grants measurement now.
  assert.deepEqual([de.users, de.purposes.storage.users, de.purposes.measurement.users], [2, 1, 0]);
  assert.deepEqual([de.events, de.signal_events], [8, 7]);
  assert.equal(de.consent_share, 0);
  const fr = summary.regions.find((r) => r.region === "FR")!;
  assert.deepEqual([fr.users, fr.consent_share, fr.signal_events], [1, 1, 1]);

  // The access export holds the ledger; an erasure keeps the proof under the pseudonym.
  const access = await h.post("/privacy/requests", { user_id: "ana", type: "access" });
  const { id } = await access.json();
  const exported = await h.json<{ data: { consent_ledger: Change[] } }>(
    `/privacy/requests/${id}/export`,
  );
  assert.equal(exported.data.consent_ledger.length, 5);
  const deletion = await (await h.post("/privacy/requests", { user_id: "ana", type: "deletion" }))
    .json();
  await h.pipeline.eraser.idle();
  const kept = await h.pipeline.db.selectFrom("consent_ledger").selectAll()
    .where("user_id", "=", deletion.user_id).execute();
  assert.equal(kept.length >= 5, true, "the proof that consent existed stays");
  assert.ok(kept.every((r) => r.event_id.startsWith("erased:")));
  assert.equal(
    (await h.pipeline.db.selectFrom("consent_ledger").select("user_id").where("user_id", "=", "ana")
      .execute()).length,
    0,
  );
  const erased = await h.json<Ledger>("/privacy/users/ana/consent");
  assert.equal(erased.user_id, deletion.user_id);
  assert.equal(erased.changes.length, 5);
}

testPipelineOnEveryDatabase(
  "consent",
  "TCF, GPP and named purposes decide consent, and the ledger proves it",
  { queue: "postgres" },
  consentScenario,
);
