/**
 * Risk scores as a maintained table, so `/compliance/risk` ranks from one row per entity instead
 * of every flag. A flag's weight halves every 30 days after its event time; so that a stored sum
 * stays right as time passes, each entity keeps `weighted = Σ weight × 2^((t − 2026-01-01) / 30 d)`
 * over its open flags, and a read multiplies it by `2^(−(now − 2026-01-01) / 30 d)`: the order of
 * the entities is the order of `weighted`, at any time. Statement triggers on `risk_flags` refresh
 * the entities a statement touched (flushes, reviews, erasures, retention, any SQL), reading the
 * rule and level weights from `risk_weights`, which the server fills at start (changing a weight
 * recomputes every entity there).
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

/** Creates `risk_weights`, `entity_scores` and the triggers that keep the scores. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`create table risk_weights (
    kind text not null,
    name text not null,
    weight float8 not null,
    primary key (kind, name)
  )`.execute(db);
  await sql`create table entity_scores (
    entity_type text not null,
    entity_id text not null,
    weighted float8 not null,
    open_flags integer not null,
    flags_by_rule jsonb not null,
    flags_by_status jsonb not null,
    first_flag_at timestamptz not null,
    last_flag_at timestamptz not null,
    primary key (entity_type, entity_id)
  )`.execute(db);
  await sql`create index entity_scores_rank_idx
    on entity_scores (weighted desc, entity_type, entity_id)`.execute(db);
  await sql`create index entity_scores_type_rank_idx
    on entity_scores (entity_type, weighted desc, entity_id)`.execute(db);
  await sql`create index risk_flags_entity_idx on risk_flags (entity_type, entity_id)`.execute(db);
  // Recomputes the given entities from their flags (and forgets those without flags).
  await sql`create function refresh_entity_scores(types text[], ids text[]) returns void
    language sql as $$
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
      group by f.entity_type, f.entity_id;
    $$`.execute(db);
  await sql`create function risk_flags_changed() returns trigger language plpgsql as $$
    begin
      if tg_op = 'INSERT' then
        perform refresh_entity_scores(array_agg(entity_type), array_agg(entity_id))
          from (select distinct entity_type, entity_id from changed) c;
      elsif tg_op = 'UPDATE' then
        perform refresh_entity_scores(array_agg(entity_type), array_agg(entity_id))
          from (select entity_type, entity_id from changed
            union select entity_type, entity_id from previous) c;
      else
        perform refresh_entity_scores(array_agg(entity_type), array_agg(entity_id))
          from (select distinct entity_type, entity_id from previous) c;
      end if;
      return null;
    end $$`.execute(db);
  await sql`create trigger risk_flags_inserted after insert on risk_flags
    referencing new table as changed for each statement
    execute function risk_flags_changed()`.execute(db);
  await sql`create trigger risk_flags_updated after update on risk_flags
    referencing old table as previous new table as changed for each statement
    execute function risk_flags_changed()`.execute(db);
  await sql`create trigger risk_flags_deleted after delete on risk_flags
    referencing old table as previous for each statement
    execute function risk_flags_changed()`.execute(db);
}

/** Drops the triggers and tables. */
export async function down(db: Kysely<unknown>): Promise<void> {
  for (const trigger of ["risk_flags_inserted", "risk_flags_updated", "risk_flags_deleted"]) {
    await sql`drop trigger ${sql.id(trigger)} on risk_flags`.execute(db);
  }
  await sql`drop function risk_flags_changed()`.execute(db);
  await sql`drop function refresh_entity_scores(text[], text[])`.execute(db);
  await sql`drop index risk_flags_entity_idx`.execute(db);
  await sql`drop table entity_scores`.execute(db);
  await sql`drop table risk_weights`.execute(db);
}
