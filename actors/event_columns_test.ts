import assert from "node:assert/strict";
import { makeEvent, T0 } from "../tests/fixtures.ts";
import { columnCount, eventAt, ROLE, toColumns } from "./event_columns.ts";
import { AGGREGATED_METADATA_KEYS } from "./user_family.ts";

Deno.test("toColumns() and eventAt() give back every field of every event, through a clone", () => {
  const events = [
    makeEvent({ eventId: "a", position: 1 }),
    makeEvent({
      eventId: "b",
      userId: "user-2",
      deviceId: "tv-2",
      contentId: "title-2",
      type: "ERROR",
      atMs: T0 + 1.5,
      region: "US-CA",
      isEu: false,
      clientIsEu: null,
      subscriptionPlan: "premium",
      hasConsent: false,
      ipHash: "k1:ff",
      ipPrefix: "10.1.2.0/24",
      errorCode: "E42",
      doNotTrack: true,
      hasDoNotTrack: true,
      metadata: { app_version: "5.1", nested: { x: [1, 2] } },
      receivedAtMs: T0 + 99,
      isLate: true,
      position: 2,
    }),
    makeEvent({ eventId: "c", clientIsEu: false, hasDoNotTrack: false, position: 3 }),
  ];
  const roles = [ROLE.user, ROLE.content | ROLE.device, ROLE.user | ROLE.device];
  const cloned = structuredClone(toColumns(events, roles));
  assert.equal(columnCount(cloned), 3);
  assert.deepEqual(events.map((_, i) => eventAt(cloned, i)), events);
  assert.deepEqual([...cloned.roles], roles);
});

Deno.test("toColumns() without metadata keeps only the keys the aggregates read", () => {
  const events = [
    makeEvent({ metadata: { platform: "tizen", app_version: "5.1", model: "QN90" } }),
    makeEvent({ metadata: { model: "x" } }),
  ];
  const cloned = structuredClone(
    toColumns(events, [ROLE.user, ROLE.user], AGGREGATED_METADATA_KEYS),
  );
  assert.equal(cloned.metadata, undefined);
  assert.deepEqual(eventAt(cloned, 0).metadata, { platform: "tizen", app_version: "5.1" });
  assert.deepEqual(eventAt(cloned, 1).metadata, {});
});
