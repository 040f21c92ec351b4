import assert from "node:assert/strict";
import { makeEvent } from "../../../tests/fixtures.ts";
import { decodeEntry, encodeEntry, userIdOfEntry } from "./entry_codec.ts";

const event = {
  ...makeEvent({
    eventId: "e-7",
    userId: "viewer-7",
    metadata: { platform: "tizen", app_version: "5.2.1", screen: "4k" },
    clientIsEu: null,
    errorCode: "E42",
  }),
  receivedAtMs: 1_765_000_000_123,
  hasDoNotTrack: true,
};

Deno.test("stream entries: an event survives encoding whole, at the position it is read at", () => {
  const { position: _, ...appended } = event;
  const decoded = decodeEntry(encodeEntry({ ...appended, isLate: true }), 99);
  assert.deepEqual(decoded, { ...appended, isLate: true, position: 99 });
});

Deno.test("stream entries: the array form is at most two thirds of the object form", () => {
  const { position: _, ...appended } = event;
  const compact = encodeEntry({ ...appended, isLate: false });
  const named = JSON.stringify({ ...appended, isLate: false });
  assert.ok(compact.length <= named.length * 2 / 3, `${compact.length} vs ${named.length}`);
});

Deno.test("stream entries: entries written as objects by earlier versions are still read", () => {
  const { position: _, ...appended } = event;
  const old = JSON.stringify({ ...appended, isLate: false });
  assert.deepEqual(decodeEntry(old, 5), { ...appended, isLate: false, position: 5 });
  assert.equal(userIdOfEntry(old), "viewer-7");
  assert.equal(userIdOfEntry(JSON.stringify({ userId: "viewer-8", optOut: {} })), "viewer-8");
});

Deno.test("stream entries: an unknown format is refused, not read as something else", () => {
  assert.throws(() => decodeEntry('[9,"e"]', 1), /unknown entry format 9/);
  assert.throws(() => decodeEntry("42", 1), /not an event entry/);
  assert.equal(userIdOfEntry('[1,"e",7]'), undefined);
});
