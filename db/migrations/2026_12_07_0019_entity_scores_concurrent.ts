/**
 * Entity scores refreshed by two transactions at once: a worker's flush and the `qoe` checker (or
 * a person's review) may both touch the flags of one title. The refresh deleted the entity's row
 * and inserted it again, so the second transaction's insert hit the first one's row (duplicate
 * key: the flush failed and was retried) or computed the score without the other's flags. Now each
 * refresh first takes a transaction lock per entity, in one order, so it computes the score with
 * every committed flag, and inserts over a row that appeared meanwhile.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

const BODY = (locked: boolean) => `
  ${
  locked
    ? `select count(pg_advisory_xact_lock(k)) from (
    select distinct hashtextextended(t.entity_type || ':' || t.entity_id, 0) as k
    from unnest(types, ids) as t(entity_type, entity_id) order by k) l;`
    : ""
}
  delete from entity_scores s
  using unnest(types, ids) as t(entity_type, entity_id)
  where s.entity_type = t.entity_type and s.entity_id = t.entity_id;
  insert into entity_scores (entity_type, entity_id, weighted, open_flags, flags_by_rule,
    flags_by_status, first_flag_at, last_flag_at)
  select f.entity_type, f.entity_id,
    coalesce(sum(case when f.status in ('dismissed', 'resolved') then 0::float8
      else coalesce(r.weight, 1) * coalesce(l.weight, 1) * power(2::float8,
        extract(epoch from (f.occurred_at - '2026-01-01T00:00:00Z'::timestamptz))
          / (30 * 86400)) end), 0),
    count(*) filter (where f.status not in ('dismissed', 'resolved')),
    (select jsonb_object_agg(rule, n) from (select rule, count(*) as n from risk_flags x
      where x.entity_type = f.entity_type and x.entity_id = f.entity_id group by rule) g),
    (select jsonb_object_agg(status, n) from (select status, count(*) as n from risk_flags x
      where x.entity_type = f.entity_type and x.entity_id = f.entity_id group by status) g),
    min(f.occurred_at), max(f.occurred_at)
  from (select distinct entity_type, entity_id from unnest(types, ids)
    as t(entity_type, entity_id)) t
  join risk_flags f on f.entity_type = t.entity_type and f.entity_id = t.entity_id
  left join risk_weights r on r.kind = 'rule' and r.name = f.rule
  left join risk_weights l on l.kind = 'level' and l.name = f.level
  group by f.entity_type, f.entity_id
  ${
  locked
    ? `on conflict (entity_type, entity_id) do update set weighted = excluded.weighted,
    open_flags = excluded.open_flags, flags_by_rule = excluded.flags_by_rule,
    flags_by_status = excluded.flags_by_status, first_flag_at = excluded.first_flag_at,
    last_flag_at = excluded.last_flag_at`
    : ""
};`;

/** Replaces the refresh with the locking one. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql.raw(`create or replace function refresh_entity_scores(types text[], ids text[])
    returns void language sql as $$${BODY(true)}$$`).execute(db);
}

/** Puts the previous refresh back. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql.raw(`create or replace function refresh_entity_scores(types text[], ids text[])
    returns void language sql as $$${BODY(false)}$$`).execute(db);
}
