import assert from "node:assert/strict";
import { deepFreeze, makeEvent, T0 } from "../tests/fixtures.ts";
import {
  dntOnSince,
  type DntSetting,
  dntSettingOf,
  type OptOut,
  optOutInForce,
  RETENTION_RULE_VERSION,
  retentionRule,
  withDntSetting,
} from "./retention.ts";

const DNT: OptOut = { type: "do_not_track", sinceMs: T0, source: "event" };
const SECOND = 1_000;

Deno.test("retentionRule() does not flag a user with no opt-out on record", () => {
  assert.equal(retentionRule(makeEvent(), undefined), null);
});

Deno.test("retentionRule() flags an event after a do-not-track request as HIGH with evidence", () => {
  const event = makeEvent({
    eventId: "e-5",
    userId: "user-3",
    region: "US-CA",
    isEu: false,
    atMs: T0 + SECOND,
  });
  const flag = retentionRule(event, DNT);
  assert.ok(flag !== null);
  assert.equal(flag.flagKey, "retention:e-5");
  assert.equal(flag.rule, "retention");
  assert.equal(flag.ruleVersion, RETENTION_RULE_VERSION);
  assert.equal(flag.level, "HIGH");
  assert.equal(flag.entityType, "user");
  assert.equal(flag.entityId, "user-3");
  assert.equal(flag.region, "US-CA");
  assert.equal(flag.isEu, false);
  assert.equal(flag.flaggedEventCount, 1);
  assert.equal(RETENTION_RULE_VERSION, 2);
  assert.match(flag.reason, /"e-5".*"user-3".*happened after a do-not-track request/);
  assert.deepEqual(flag.evidence, {
    rule: "retention",
    rule_version: RETENTION_RULE_VERSION,
    thresholds: {},
    window: null,
    observed: {
      request_type: "do_not_track",
      request_source: "event",
      request_since: "2026-11-23T12:00:00.000Z",
      event_at: "2026-11-23T12:00:01.000Z",
    },
    event_ids: ["e-5"],
  });
});

Deno.test("retentionRule() names a deletion request from the API in reason and evidence", () => {
  const deletion: OptOut = { type: "deletion", sinceMs: T0 + 60_000, source: "api" };
  const flag = retentionRule(makeEvent({ eventId: "e-6", atMs: T0 + 90_000 }), deletion);
  assert.ok(flag !== null);
  assert.match(flag.reason, /after a deletion request/);
  assert.deepEqual(flag.evidence.observed, {
    request_type: "deletion",
    request_source: "api",
    request_since: "2026-11-23T12:01:00.000Z",
    event_at: "2026-11-23T12:01:30.000Z",
  });
});

Deno.test("retentionRule() keys flags per event", () => {
  const first = retentionRule(makeEvent({ eventId: "e-1", atMs: T0 + 1 }), DNT);
  const second = retentionRule(makeEvent({ eventId: "e-2", atMs: T0 + 2 }), DNT);
  assert.ok(first !== null && second !== null);
  assert.equal(first.flagKey, "retention:e-1");
  assert.equal(second.flagKey, "retention:e-2");
});

Deno.test("retentionRule() does not mutate a deep-frozen event or opt-out", () => {
  const event = deepFreeze(makeEvent({ atMs: T0 + 1 }));
  const optOut = deepFreeze({ ...DNT });
  const before = structuredClone({ event, optOut });
  assert.ok(retentionRule(event, optOut) !== null);
  assert.deepEqual({ event, optOut }, before);
});

Deno.test("retentionRule() flags by event time: not an event from before the request, however late", () => {
  const request: OptOut = { type: "deletion", sinceMs: T0 + 60 * SECOND, source: "api" };
  // A TV that was offline delivers, after the request, events it recorded before it.
  const offline = makeEvent({ eventId: "old", atMs: T0, receivedAtMs: T0 + 3_600_000 });
  const atRequest = makeEvent({ eventId: "same", atMs: T0 + 60 * SECOND });
  const after = makeEvent({ eventId: "new", atMs: T0 + 61 * SECOND, receivedAtMs: T0 });
  assert.equal(retentionRule(offline, request), null);
  assert.equal(retentionRule(atRequest, request), null);
  assert.equal(retentionRule(after, request)?.flagKey, "retention:new");
});

Deno.test("dntSettingOf() tells an explicit false from a field the TV did not send", () => {
  assert.equal(dntSettingOf({ doNotTrack: true }), true);
  assert.equal(dntSettingOf({ doNotTrack: true, hasDoNotTrack: true }), true);
  assert.equal(dntSettingOf({ doNotTrack: false, hasDoNotTrack: true }), false);
  assert.equal(dntSettingOf({ doNotTrack: false, hasDoNotTrack: false }), null);
  assert.equal(dntSettingOf({ doNotTrack: false }), null, "read back from the postgres log");
});

const on = (atMs: number): DntSetting => ({ atMs, isOn: true });
const off = (atMs: number): DntSetting => ({ atMs, isOn: false });

/** Folds settings in arrival order. */
function historyOf(...settings: DntSetting[]): DntSetting[] {
  return settings.reduce<DntSetting[]>((h, s) => withDntSetting(h, s), []);
}

Deno.test("withDntSetting() keeps settings sorted by event time and only the ends of a run", () => {
  assert.deepEqual(historyOf(on(10), on(20), on(30), on(40)), [on(10), on(40)]);
  assert.deepEqual(historyOf(on(10), off(20), on(30)), [on(10), off(20), on(30)]);
  assert.deepEqual(historyOf(off(20), on(10)), [on(10), off(20)], "a late setting is sorted in");
  assert.deepEqual(historyOf(on(10), on(40), off(20)), [on(10), off(20), on(40)]);
  assert.deepEqual(historyOf(off(10), on(10)), [on(10)], "at equal times on wins");
  assert.deepEqual(historyOf(on(10), off(10)), [on(10)]);
  const capped = [on(1), off(2), on(3), off(4)].reduce<DntSetting[]>(
    (h, s) => withDntSetting(h, s, 3),
    [],
  );
  assert.deepEqual(capped, [off(2), on(3), off(4)], "the oldest setting goes first");
});

Deno.test("withDntSetting() does not mutate its deep-frozen history", () => {
  const history = deepFreeze([on(10), off(20)]);
  const next = withDntSetting(history, on(15));
  assert.deepEqual(history, [on(10), off(20)]);
  assert.deepEqual(next, [on(10), on(15), off(20)]);
  assert.notEqual(next, history);
});

Deno.test("dntOnSince() gives the start of the run in force at a time, or null when off", () => {
  const history = historyOf(on(10), on(20), off(30), on(40));
  assert.equal(dntOnSince(history, 5), null);
  assert.equal(dntOnSince(history, 10), 10);
  assert.equal(dntOnSince(history, 25), 10);
  assert.equal(dntOnSince(history, 30), null, "the setting that turns it off is in force at once");
  assert.equal(dntOnSince(history, 35), null);
  assert.equal(dntOnSince(history, 99), 40);
  assert.equal(dntOnSince([], 99), null);
});

Deno.test("optOutInForce() turns do-not-track from events on and off by event time", () => {
  const history = historyOf(on(T0), off(T0 + 10 * SECOND));
  assert.equal(optOutInForce(T0, undefined, history), undefined, "not the event that turned it on");
  assert.deepEqual(optOutInForce(T0 + SECOND, undefined, history), DNT);
  assert.equal(optOutInForce(T0 + 10 * SECOND, undefined, history), undefined);
  assert.equal(optOutInForce(T0 + 11 * SECOND, undefined, history), undefined);
});

Deno.test("optOutInForce() keeps an API request in force whatever events say later", () => {
  const api: OptOut = { type: "do_not_track", sinceMs: T0 + 5 * SECOND, source: "api" };
  const history = historyOf(on(T0), off(T0 + 10 * SECOND));
  assert.deepEqual(optOutInForce(T0 + 2 * SECOND, api, history), DNT, "events' DNT came first");
  assert.deepEqual(optOutInForce(T0 + 6 * SECOND, api, history), DNT, "the earlier one is named");
  assert.equal(optOutInForce(T0 + 20 * SECOND, api, history), api, "events cannot turn it off");
  assert.equal(optOutInForce(T0 + 5 * SECOND, api, []), undefined, "not at the request's time");
  const early: OptOut = { ...api, sinceMs: T0 - SECOND };
  assert.equal(optOutInForce(T0 + 2 * SECOND, early, history), early);
});
