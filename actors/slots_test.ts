import assert from "node:assert/strict";
import { Slots } from "./slots.ts";

Deno.test("Slots hands out dense slots and takes a released one before a new one", () => {
  const slots = new Slots(() => {});
  assert.deepEqual(["a", "b", "c"].map((key) => slots.acquire(key)), [0, 1, 2]);
  assert.equal(slots.acquire("b"), 1, "a key that holds a slot keeps it");
  assert.equal(slots.release("b"), true);
  assert.equal(slots.release("b"), false, "a key holds one slot, released once");
  assert.equal(slots.get("b"), undefined);
  assert.equal(slots.acquire("d"), 1, "the freed slot, so the columns never grow holes");
  assert.equal(slots.acquire("e"), 3);
  assert.equal(slots.size, 4);
  const held: Array<[string, number]> = [];
  slots.forEach((slot, key) => held.push([key, slot]));
  assert.deepEqual(held.sort(), [["a", 0], ["c", 2], ["d", 1], ["e", 3]]);
});

Deno.test("Slots empties a slot when it is taken and when it is released", () => {
  const column: Array<string | null> = [];
  const slots = new Slots((slot) => column[slot] = null);
  column[slots.acquire("a")] = "a's state";
  column[slots.acquire("b")] = "b's state";
  assert.deepEqual(column, ["a's state", "b's state"]);
  slots.release("a");
  assert.deepEqual(column, [null, "b's state"], "a free slot keeps nothing alive");
  column[0] = "left behind";
  assert.equal(slots.acquire("c"), 0);
  assert.deepEqual(column, [null, "b's state"], "a reused slot starts empty");
});

Deno.test("Slots lets the current key go while iterating", () => {
  const slots = new Slots(() => {});
  for (let i = 0; i < 100; i++) slots.acquire(`k${i}`);
  let visited = 0;
  slots.forEach((slot, key) => {
    visited++;
    if (slot % 2 === 0) slots.release(key);
  });
  assert.equal(visited, 100, "every key visited once, released ones included");
  assert.equal(slots.size, 50);
  slots.forEach((slot) => assert.equal(slot % 2, 1));
});

Deno.test("Slots remembers when each slot was last touched, and forgets it on release", () => {
  const slots = new Slots(() => {});
  const a = slots.touch("a", 1_000);
  assert.equal(slots.touch("a", 5_000), a, "touching again keeps the slot");
  assert.equal(slots.touchedMs(a), 5_000);
  slots.release("a");
  assert.equal(slots.touchedMs(a), 0);
  assert.equal(
    slots.touchedMs(slots.acquire("b")),
    0,
    "acquired without a touch: 0, whoever held it before",
  );
});
