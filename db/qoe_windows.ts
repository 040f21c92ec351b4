/**
 * The `qoe` rule's windows in the database: each flush adds its views' window deltas
 * (`qoe_windows`, in the flush's transaction, bumping the row's revision), and the checker reads the
 * windows that changed, totals each title, CDN and region in them, and records what it judged.
 *
 * @module
 */
import { type Kysely, sql, type Transaction } from "kysely";
import { type FlushBatch, KEY_SEP } from "./flush_batch.ts";
import type { Database } from "./schema.ts";
import {
  MAX_EVIDENCE_VIEWS,
  type QoeEntityType,
  type QoeWindowTotals,
  WINDOW_MEASURES,
} from "../rules/qoe_rule.ts";

const MEASURES = WINDOW_MEASURES.map((m) => sql.ref(m));

/** Adds the batch's window deltas, in key order (lock order). */
export async function upsertQoeWindows(
  trx: Transaction<Database>,
  batch: FlushBatch,
): Promise<void> {
  if (batch.qoeWindows.size === 0) return;
  const rows = [...batch.qoeWindows]
    .filter(([key, d]) => d.some((v) => v !== 0) || batch.qoeWindowViews.has(key))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, d]) => [...key.split(KEY_SEP), d, batch.qoeWindowViews.get(key) ?? []]);
  if (rows.length === 0) return;
  const measures = WINDOW_MEASURES.map((m, i) =>
    sql`(e->4->>${sql.lit(i)})::bigint as ${sql.ref(m)}`
  );
  await sql`
    insert into qoe_windows (window_start, content_id, cdn, region, ${sql.join(MEASURES)},
      view_refs)
    select to_timestamp((e->>0)::float8 / 1000), e->>1, e->>2, e->>3, ${sql.join(measures)},
      array(select json_array_elements_text(e->5))
    from json_array_elements(${JSON.stringify(rows)}::json) as e
    on conflict (window_start, content_id, cdn, region) do update set
      ${
    sql.join(
      WINDOW_MEASURES.map((m) =>
        sql`${sql.ref(m)} = qoe_windows.${sql.ref(m)} + excluded.${sql.ref(m)}`
      ),
    )
  },
      view_refs = case when cardinality(qoe_windows.view_refs) >= ${MAX_EVIDENCE_VIEWS}
        then qoe_windows.view_refs
        else (qoe_windows.view_refs || excluded.view_refs)[1:${MAX_EVIDENCE_VIEWS}] end,
      revision = qoe_windows.revision + 1`.execute(trx);
}

/** Windows (start ms) with rows changed since the rule last judged them, oldest first. */
export async function changedWindows(db: Kysely<Database>, limit: number): Promise<number[]> {
  const result = await sql<{ ms: number | string }>`
    select distinct extract(epoch from window_start) * 1000 as ms from qoe_windows
    where revision > checked_revision order by ms limit ${limit}`.execute(db);
  return result.rows.map((r) => Number(r.ms));
}

/** What the checker read of one window: each entity's totals and the rows' revisions it saw. */
export interface WindowReading {
  totals: QoeWindowTotals[];
  /** `[content, cdn, region, revision]` of every row read, to mark them judged. */
  seen: Array<[string, string, string, number]>;
}

/** Every title's, CDN's and region's totals in the window starting at `startMs`. */
export async function readWindow(db: Kysely<Database>, startMs: number): Promise<WindowReading> {
  const at = new Date(startMs).toISOString();
  const rows = await sql<Record<string, string | number | string[]>>`
    select content_id, cdn, region, ${sql.join(MEASURES)}, view_refs, revision
    from qoe_windows where window_start = ${at}::timestamptz`.execute(db);
  const totals = new Map<string, QoeWindowTotals>();
  const add = (entityType: QoeEntityType, entityId: string, row: Record<string, unknown>) => {
    const key = entityType + KEY_SEP + entityId;
    let t = totals.get(key);
    if (t === undefined) {
      t = {
        entityType,
        entityId,
        windowStartMs: startMs,
        counts: new Array<number>(WINDOW_MEASURES.length).fill(0),
        viewRefs: [],
      };
      totals.set(key, t);
    }
    WINDOW_MEASURES.forEach((m, i) => t.counts[i] += Number(row[m]));
    for (const ref of row.view_refs as string[]) {
      if (t.viewRefs.length < MAX_EVIDENCE_VIEWS && !t.viewRefs.includes(ref)) t.viewRefs.push(ref);
    }
  };
  const seen: WindowReading["seen"] = [];
  for (const row of rows.rows) {
    add("content", String(row.content_id), row);
    add("cdn", String(row.cdn), row);
    add("region", String(row.region), row);
    seen.push([String(row.content_id), String(row.cdn), String(row.region), Number(row.revision)]);
  }
  return { totals: [...totals.values()], seen };
}

/** Marks the rows read as judged, unless a flush changed them since (they stay changed). */
export async function markJudged(
  trx: Transaction<Database>,
  startMs: number,
  seen: WindowReading["seen"],
): Promise<void> {
  if (seen.length === 0) return;
  await sql`
    update qoe_windows w set checked_revision = s.revision
    from unnest(${seen.map((s) => s[0])}::text[], ${seen.map((s) => s[1])}::text[],
      ${seen.map((s) => s[2])}::text[], ${seen.map((s) => s[3])}::bigint[])
      as s(content_id, cdn, region, revision)
    where w.window_start = ${new Date(startMs).toISOString()}::timestamptz
      and w.content_id = s.content_id and w.cdn = s.cdn and w.region = s.region
      and w.revision = s.revision`.execute(trx);
}
