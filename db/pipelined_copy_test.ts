import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { copyInOneTrip, oneTripMessage } from "./pipelined_copy.ts";
import { TEST_DATABASE_URL, withFreshPostgres } from "../tests/_harness.ts";
import { test } from "../tests/_permissions.ts";

const onPostgres = { ignore: TEST_DATABASE_URL === undefined };
const bytes = (text: string) => new TextEncoder().encode(text);

/** A fresh database with `t (id text primary key)` and a connected client. */
async function withTable(fn: (client: pg.Client) => Promise<void>): Promise<void> {
  await withFreshPostgres(TEST_DATABASE_URL!, async (url) => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query("create table t (id text primary key)");
      await fn(client);
    } finally {
      await client.end();
    }
  });
}

const ids = async (client: pg.Client) =>
  (await client.query<{ id: string }>("select id from t order by id")).rows.map((r) => r.id);

Deno.test("oneTripMessage() frames Query, CopyData (UTF-8) and CopyDone back to back", () => {
  const query = [0x51, 0, 0, 0, 22, ...bytes("copy t from stdin"), 0];
  const data = [0x64, 0, 0, 0, 7, ...bytes("é\n")];
  const done = [0x63, 0, 0, 0, 4];
  assert.deepEqual([...oneTripMessage("copy t from stdin", "é\n")], [...query, ...data, ...done]);
});

test({
  name: "[postgres] copyInOneTrip() stores the rows and answers every statement's tag",
  ...onPostgres,
  fn: () =>
    withTable(async (client) => {
      const tags = await copyInOneTrip(client, "copy t (id) from stdin; select 1", "a\nb\n");
      assert.deepEqual(tags, ["COPY 2", "SELECT 1"]);
      assert.deepEqual(await ids(client), ["a", "b"]);
    }),
});

test({
  name: "[postgres] copyInOneTrip(): a failing later statement undoes the COPY; the client goes on",
  ...onPostgres,
  fn: () =>
    withTable(async (client) => {
      await assert.rejects(
        copyInOneTrip(client, "copy t (id) from stdin; select 1 / 0", "a\n"),
        (error: { code?: string }) => error.code === "22012",
      );
      // A duplicate key fails the COPY itself, before the data that was already sent is read.
      await copyInOneTrip(client, "copy t (id) from stdin", "b\n");
      await assert.rejects(
        copyInOneTrip(client, "copy t (id) from stdin", "c\nb\n"),
        (error: { code?: string }) => error.code === "23505",
      );
      assert.deepEqual(await ids(client), ["b"]);
      assert.deepEqual(await copyInOneTrip(client, "copy t (id) from stdin", "d\n"), [
        "COPY 1",
      ]);
      assert.deepEqual(await ids(client), ["b", "d"]);
    }),
});
