/**
 * Risk scores of users, contents and devices, computed from `risk_flags` at read time so a review
 * decision counts at once (`entity_risk`, written by flushes, keeps the highest level reached).
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";
import { FLAG_STATUSES } from "./queries.ts";
import { type EntityType, type Level, RULE_IDS, RULE_WEIGHTS } from "../rules/mod.ts";

type Db = Kysely<Database>;

/** Kinds of entity a score is about, as flags name them. */
export const ENTITY_TYPES = ["user", "content", "device"] as const satisfies readonly EntityType[];

/** Weight of each flag level in a score. */
export const LEVEL_WEIGHTS: Readonly<Record<Level, number>> = { LOW: 1, MEDIUM: 3, HIGH: 10 };

/** A flag's weight halves every this many days after the event time it occurred at. */
export const RISK_HALF_LIFE_DAYS = 30;

/** Lowest score of an entity at each level: HIGH from 20, MEDIUM from 5, LOW below. */
export const RISK_LEVEL_MIN_SCORES = { HIGH: 20, MEDIUM: 5 } as const;

/** Review statuses that close a flag (dismissed: not a risk; resolved: handled): they score 0. */
export const CLOSED_STATUSES = ["dismissed", "resolved"] as const;

/** One entity's risk as the `/compliance/risk` routes serve it. */
export interface EntityRisk {
  entity_type: string;
  entity_id: string;
  score: number;
  level: Level;
  flags_by_rule: Record<string, number>;
  flags_by_status: Record<string, number>;
  first_flag_at: string;
  last_flag_at: string;
  /** Flags not closed yet (open, acknowledged or escalated): the ones the score counts. */
  open_flags: number;
}

/** Where a page of scores starts: after this entity in (score desc, type, id) order. */
export interface RiskCursor {
  /** The score with two decimals, as the cursor carries it (exact, unlike a float). */
  score: string;
  entityType: string;
  entityId: string;
}

/** Filters and keyset cursor of `/compliance/risk`. */
export interface RiskQuery {
  entityType?: EntityType;
  level?: Level;
  limit: number;
  after?: RiskCursor;
}

const SCORE_TEXT = /^\d{1,15}\.\d{2}$/;

/** The opaque `next_cursor` of a page ending at this entity (base64url of `score|type|id`). */
export function encodeRiskCursor(cursor: RiskCursor): string {
  const text = `${cursor.score}|${cursor.entityType}|${cursor.entityId}`;
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

/** The position a `next_cursor` stands for, or null when it is not one. */
export function decodeRiskCursor(text: string): RiskCursor | null {
  // Base64url without padding never leaves one character over a group of four.
  if (!/^[A-Za-z0-9_-]{1,1000}$/.test(text) || text.length % 4 === 1) return null;
  const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  const decoded = new TextDecoder().decode(bytes);
  // Invalid UTF-8 decodes to U+FFFD, which does not encode back to the same bytes.
  const again = new TextEncoder().encode(decoded);
  if (again.length !== bytes.length || again.some((b, i) => b !== bytes[i])) return null;
  // The id may itself contain "|": split at the first two only.
  const first = decoded.indexOf("|");
  const second = decoded.indexOf("|", first + 1);
  if (first < 0 || second < 0) return null;
  const [score, entityType, entityId] = [
    decoded.slice(0, first),
    decoded.slice(first + 1, second),
    decoded.slice(second + 1),
  ];
  if (!SCORE_TEXT.test(score) || !(ENTITY_TYPES as readonly string[]).includes(entityType)) {
    return null;
  }
  if (entityId === "") return null;
  return { score, entityType, entityId };
}

interface ScoredRow {
  entity_type: string;
  entity_id: string;
  score: string | number;
  level: Level;
  open_flags: string | number;
  first_flag_at: Date | string;
  last_flag_at: Date | string;
  [count: string]: unknown;
}

const byRule = (i: number) => sql.ref(`by_rule_${i}`);
const byStatus = (i: number) => sql.ref(`by_status_${i}`);

/**
 * Scores of the flagged entities that match, highest first:
 * `score = Σ RULE_WEIGHTS[rule] × LEVEL_WEIGHTS[level] × 0.5^(age_days / 30)` over the entity's flags
 * that are not dismissed or resolved, `age_days` from the flag's `occurred_at` to `nowMs` (0 for a
 * flag in the future), rounded to 2 decimals. Entities whose flags are all closed score 0.
 */
async function scoreEntities(
  db: Db,
  nowMs: number,
  where: { entityType?: string; entityId?: string; level?: Level; after?: RiskCursor },
  limit: number,
): Promise<EntityRisk[]> {
  const now = new Date(nowMs).toISOString();
  const ruleWeight = sql`case rule ${
    sql.join(RULE_IDS.map((r) => sql`when ${r} then ${RULE_WEIGHTS[r]}::float8`), sql` `)
  } else 1::float8 end`;
  const levelWeight = sql`case level ${
    sql.join(
      (["LOW", "MEDIUM", "HIGH"] as const).map((l) =>
        sql`when ${l} then ${LEVEL_WEIGHTS[l]}::float8`
      ),
      sql` `,
    )
  } else 1::float8 end`;
  const ageDays = sql`greatest(0::float8,
    extract(epoch from (${now}::timestamptz - occurred_at))::float8 / 86400)`;
  // Clamped: float8 exp() raises "underflow" instead of returning 0 for a flag a century old.
  const decay = sql`exp(greatest(ln(0.5::float8) * ${ageDays} / ${RISK_HALF_LIFE_DAYS}::float8,
    -700::float8))`;
  const filters = [sql`true`];
  if (where.entityType !== undefined) filters.push(sql`entity_type = ${where.entityType}`);
  if (where.entityId !== undefined) filters.push(sql`entity_id = ${where.entityId}`);
  const outer = [sql`true`];
  if (where.level !== undefined) outer.push(sql`level = ${where.level}`);
  if (where.after !== undefined) {
    const { score, entityType, entityId } = where.after;
    outer.push(sql`(score < ${score}::numeric or (score = ${score}::numeric
      and (entity_type, entity_id) > (${entityType}::text, ${entityId}::text)))`);
  }
  const { rows } = await sql<ScoredRow>`
    with weighted as (
      select entity_type, entity_id, rule, status, occurred_at,
        case when status in (${sql.join([...CLOSED_STATUSES])}) then 0::float8
          else ${ruleWeight} * ${levelWeight} * ${decay} end as weight
      from risk_flags where ${sql.join(filters, sql` and `)}
    ), scored as (
      select entity_type, entity_id, round(sum(weight)::numeric, 2) as score,
        count(*) filter (where status not in (${sql.join([...CLOSED_STATUSES])})) as open_flags,
        min(occurred_at) as first_flag_at, max(occurred_at) as last_flag_at,
        ${
    sql.join(RULE_IDS.map((r, i) => sql`count(*) filter (where rule = ${r}) as ${byRule(i)}`))
  },
        ${
    sql.join(
      FLAG_STATUSES.map((s, i) => sql`count(*) filter (where status = ${s}) as ${byStatus(i)}`),
    )
  }
      from weighted group by entity_type, entity_id
    ), leveled as (
      select *, case when score >= ${RISK_LEVEL_MIN_SCORES.HIGH}::numeric then 'HIGH'
        when score >= ${RISK_LEVEL_MIN_SCORES.MEDIUM}::numeric then 'MEDIUM' else 'LOW' end as level
      from scored
    )
    select * from leveled where ${sql.join(outer, sql` and `)}
    order by score desc, entity_type, entity_id
    limit ${limit}`.execute(db);
  return rows.map((row) => ({
    entity_type: row.entity_type,
    entity_id: row.entity_id,
    score: Number(row.score),
    level: row.level,
    flags_by_rule: Object.fromEntries(RULE_IDS.map((r, i) => [r, Number(row[`by_rule_${i}`])])),
    flags_by_status: Object.fromEntries(
      FLAG_STATUSES.map((s, i) => [s, Number(row[`by_status_${i}`])]),
    ),
    first_flag_at: new Date(row.first_flag_at).toISOString(),
    last_flag_at: new Date(row.last_flag_at).toISOString(),
    open_flags: Number(row.open_flags),
  }));
}

/**
 * Flagged entities highest score first (ties by type and id), one page at a time, with the cursor of
 * the next page (or null); see {@link scoreEntities} for the formula.
 */
export async function listEntityRisks(
  db: Db,
  q: RiskQuery,
  nowMs: number,
): Promise<{ items: EntityRisk[]; next_cursor: string | null }> {
  const rows = await scoreEntities(db, nowMs, q, q.limit + 1);
  const items = rows.slice(0, q.limit);
  const last = items[items.length - 1];
  return {
    items,
    next_cursor: rows.length > q.limit
      ? encodeRiskCursor({
        score: last.score.toFixed(2),
        entityType: last.entity_type,
        entityId: last.entity_id,
      })
      : null,
  };
}

/** One entity's risk at `nowMs`; null when it has no flag at all (a closed flag still counts). */
export async function getEntityRisk(
  db: Db,
  entityType: EntityType,
  entityId: string,
  nowMs: number,
): Promise<EntityRisk | null> {
  const rows = await scoreEntities(db, nowMs, { entityType, entityId }, 1);
  return rows[0] ?? null;
}
