/**
 * Storing QoE: the additive deltas of views (`qoe_hourly`, `qoe_daily` and the startup histograms
 * beside them, a retracted view subtracting what it added) and the TVs' open views (`open_views`),
 * in the flush's transaction; and loading the open views of user shards a worker takes over.
 *
 * @module
 */
import { type Kysely, sql, type Transaction } from "kysely";
import { type FlushBatch, KEY_SEP, type OpenViewsRow } from "./flush_batch.ts";
import type { Database } from "./schema.ts";
import { QOE_COLUMNS } from "./qoe_queries.ts";

const DAY_MS = 86_400_000;
const DIMS = ["content_id", "region", "platform", "app_version", "subscription_plan", "cdn"];

/** Adds the batch's QoE deltas to the hourly and daily rows, in key order (lock order). */
export async function upsertQoe(trx: Transaction<Database>, batch: FlushBatch): Promise<void> {
  if (batch.qoe.size > 0) {
    for (const [table, period, toPeriod] of periods()) {
      const rows = new Map<string, number[]>();
      for (const [key, delta] of batch.qoe) {
        if (delta.every((v) => v === 0)) continue;
        const parts = key.split(KEY_SEP);
        const periodKey = [toPeriod(Number(parts[0])), ...parts.slice(1)].join(KEY_SEP);
        const row = rows.get(periodKey);
        if (row === undefined) rows.set(periodKey, [...delta]);
        else for (let i = 0; i < delta.length; i++) row[i] += delta[i];
      }
      if (rows.size === 0) continue;
      const json = JSON.stringify(
        [...rows].sort(([a], [b]) => (a < b ? -1 : 1)).map((
          [key, d],
        ) => [...key.split(KEY_SEP), d]),
      );
      const measures = QOE_COLUMNS.map((c, i) =>
        sql`(e->7->>${sql.lit(i)})::bigint as ${sql.ref(c)}`
      );
      await sql`
        insert into ${sql.table(table)} (${sql.ref(period)}, ${
        sql.join(DIMS.map((c) => sql.ref(c)))
      },
          ${sql.join(QOE_COLUMNS.map((c) => sql.ref(c)))})
        select to_timestamp((e->>0)::float8 / 1000), e->>1, e->>2, e->>3, e->>4, e->>5, e->>6,
          ${sql.join(measures)}
        from json_array_elements(${json}::json) as e
        on conflict (${sql.ref(period)}, ${sql.join(DIMS.map((c) => sql.ref(c)))}) do update set
          ${
        sql.join(
          QOE_COLUMNS.map((c) =>
            sql`${sql.ref(c)} = ${sql.ref(`${table}.${c}`)} + excluded.${sql.ref(c)}`
          ),
        )
      }`.execute(trx);
    }
  }
  if (batch.qoeStartup.size > 0) {
    for (const [base, period, toPeriod] of periods()) {
      const table = base.replace("qoe_", "qoe_startup_");
      const rows = new Map<string, number>();
      for (const [key, n] of batch.qoeStartup) {
        if (n === 0) continue;
        const parts = key.split(KEY_SEP);
        const periodKey = [toPeriod(Number(parts[0])), ...parts.slice(1)].join(KEY_SEP);
        rows.set(periodKey, (rows.get(periodKey) ?? 0) + n);
      }
      if (rows.size === 0) continue;
      const json = JSON.stringify(
        [...rows].sort(([a], [b]) => (a < b ? -1 : 1)).map((
          [key, n],
        ) => [...key.split(KEY_SEP), n]),
      );
      await sql`
        insert into ${sql.table(table)} (${sql.ref(period)}, ${
        sql.join(DIMS.map((c) => sql.ref(c)))
      },
          bucket, views)
        select to_timestamp((e->>0)::float8 / 1000), e->>1, e->>2, e->>3, e->>4, e->>5, e->>6,
          (e->>7)::smallint, (e->>8)::bigint
        from json_array_elements(${json}::json) as e
        on conflict (${sql.ref(period)}, ${sql.join(DIMS.map((c) => sql.ref(c)))}, bucket)
          do update set views = ${sql.ref(`${table}.views`)} + excluded.views`.execute(trx);
    }
  }
}

function periods(): Array<[string, string, (hourMs: number) => number]> {
  return [
    ["qoe_hourly", "hour", (h) => h],
    ["qoe_daily", "day", (h) => Math.floor(h / DAY_MS) * DAY_MS],
  ];
}

/** Stores what the batch's views were counted as, a row per view; a null outcome deletes it. */
export async function writeOpenViews(
  trx: Transaction<Database>,
  batch: FlushBatch,
): Promise<void> {
  if (batch.openViews.size === 0) return;
  const rows = [...batch.openViews].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, row]) => row);
  const gone = rows.filter((r) => r.outcome === null);
  const kept = rows.filter((r) => r.outcome !== null);
  if (gone.length > 0) {
    await sql`
      delete from open_views o using unnest(${gone.map((r) => r.shard)}::int[],
        ${gone.map((r) => r.userId)}::text[], ${gone.map((r) => r.deviceId)}::text[],
        ${gone.map((r) => r.viewKey)}::text[])
        as g(shard, user_id, device_id, view_key)
      where o.user_shard = g.shard and o.user_id = g.user_id and o.device_id = g.device_id
        and o.view_key = g.view_key`.execute(trx);
  }
  if (kept.length > 0) {
    const json = JSON.stringify(
      kept.map((r) => [r.shard, r.userId, r.deviceId, r.viewKey, r.outcome]),
    );
    await sql`
      insert into open_views (user_shard, user_id, device_id, view_key, outcome)
      select (e->>0)::int, e->>1, e->>2, e->>3, e->4 from json_array_elements(${json}::json) as e
      on conflict (user_shard, user_id, device_id, view_key)
        do update set outcome = excluded.outcome, updated_at = now()`.execute(trx);
  }
}

/** The stored views of these user shards. */
export async function loadOpenViews(
  db: Kysely<Database>,
  shards: number[],
): Promise<OpenViewsRow[]> {
  if (shards.length === 0) return [];
  const result = await sql<
    { user_shard: number; user_id: string; device_id: string; view_key: string; outcome: unknown[] }
  >`
    select user_shard, user_id, device_id, view_key, outcome from open_views
    where user_shard = any(${shards}::int[])`.execute(db);
  return result.rows.map((r) => ({
    shard: r.user_shard,
    userId: r.user_id,
    deviceId: r.device_id,
    viewKey: r.view_key,
    outcome: r.outcome,
  }));
}
