/**
 * Risk scores of users, contents and devices, from `entity_scores`, which triggers on `risk_flags`
 * keep in the same transaction as every flag change, so a review decision counts at once and a read
 * ranks one row per entity, not every flag (`entity_risk`, written by flushes, keeps the highest
 * level reached).
 *
 * @module
 */
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";
import { FLAG_STATUSES } from "./queries.ts";
import { type EntityType, type Level, RULE_IDS, RULE_WEIGHTS } from "../rules/mod.ts";

type Db = Kysely<Database>;

/** Kinds of entity a score is about, as flags name them. */
export const ENTITY_TYPES = [
  "user",
  "content",
  "device",
  "cdn",
  "region",
] as const satisfies readonly EntityType[];

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

/** Where a page of scores starts: after this entity in (stored sum desc, type, id) order. */
export interface RiskCursor {
  /** The entity's stored weighted sum, as a decimal string (a double round-trips exactly). */
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

/** A non-negative decimal number, as `String(double)` writes one (exponent allowed). */
const SCORE_TEXT = /^\d{1,20}(\.\d{1,20})?(e[+-]?\d{1,3})?$/;

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

/** 2026-01-01T00:00:00Z: the time `entity_scores.weighted` is normalised to (see the migration). */
const WEIGHT_EPOCH_MS = Date.UTC(2026, 0, 1);
const HALF_LIFE_MS = RISK_HALF_LIFE_DAYS * 86_400_000;

/** What a stored weighted sum is worth at `nowMs`: `weighted × 2^(−(now − epoch) / half-life)`. */
function decayAt(nowMs: number): number {
  return Math.pow(2, -(nowMs - WEIGHT_EPOCH_MS) / HALF_LIFE_MS);
}

/**
 * Writes the rule and level weights the score triggers read, and recomputes every entity when one
 * changed (a release that reweighs a rule): the stored sums then use the new weights.
 */
export async function syncRiskWeights(db: Db): Promise<boolean> {
  const weights: Array<[string, string, number]> = [
    ...RULE_IDS.map((rule): [string, string, number] => ["rule", rule, RULE_WEIGHTS[rule] ?? 1]),
    ...(Object.keys(LEVEL_WEIGHTS) as Level[]).map((level): [string, string, number] => [
      "level",
      level,
      LEVEL_WEIGHTS[level],
    ]),
  ];
  const stored = await db.selectFrom("risk_weights").selectAll().execute();
  const known = new Map(stored.map((w) => [`${w.kind}:${w.name}`, Number(w.weight)]));
  const isChanged = weights.some(([kind, name, weight]) => known.get(`${kind}:${name}`) !== weight);
  if (!isChanged) return false;
  await db.transaction().execute(async (trx) => {
    await sql`insert into risk_weights (kind, name, weight)
      select * from unnest(${weights.map((w) => w[0])}::text[], ${weights.map((w) => w[1])}::text[],
        ${weights.map((w) => w[2])}::float8[])
      on conflict (kind, name) do update set weight = excluded.weight`.execute(trx);
    await sql`select refresh_entity_scores(array_agg(entity_type), array_agg(entity_id))
      from (select distinct entity_type, entity_id from risk_flags) e`.execute(trx);
  });
  return true;
}

interface ScoredRow {
  entity_type: string;
  entity_id: string;
  weighted: number | string;
  open_flags: number | string;
  flags_by_rule: Record<string, number> | string;
  flags_by_status: Record<string, number> | string;
  first_flag_at: Date | string;
  last_flag_at: Date | string;
}

/** The level of a score: HIGH from 20, MEDIUM from 5, LOW below. */
function levelOf(score: number): Level {
  return score >= RISK_LEVEL_MIN_SCORES.HIGH
    ? "HIGH"
    : score >= RISK_LEVEL_MIN_SCORES.MEDIUM
    ? "MEDIUM"
    : "LOW";
}

/**
 * Scores of the flagged entities that match, highest first, from the maintained `entity_scores`:
 * `score = Σ RULE_WEIGHTS[rule] × LEVEL_WEIGHTS[level] × 0.5^(age_days / 30)` over the entity's flags
 * that are not dismissed or resolved, `age_days` from the flag's `occurred_at` to `nowMs`, rounded
 * to 2 decimals. Entities whose flags are all closed score 0. Ties keep (type, id) order.
 */
async function scoreEntities(
  db: Db,
  nowMs: number,
  where: { entityType?: string; entityId?: string; level?: Level; after?: RiskCursor },
  limit: number,
): Promise<Array<{ risk: EntityRisk; weighted: number }>> {
  const decay = decayAt(nowMs);
  // A level is a range of the rounded score: of the stored sum, at this time.
  const atLeast = (score: number) => (score - 0.005) / decay;
  const filters = [sql`true`];
  if (where.entityType !== undefined) filters.push(sql`entity_type = ${where.entityType}`);
  if (where.entityId !== undefined) filters.push(sql`entity_id = ${where.entityId}`);
  if (where.level === "HIGH") {
    filters.push(sql`weighted >= ${atLeast(RISK_LEVEL_MIN_SCORES.HIGH)}::float8`);
  } else if (where.level === "MEDIUM") {
    filters.push(sql`weighted >= ${atLeast(RISK_LEVEL_MIN_SCORES.MEDIUM)}::float8`);
    filters.push(sql`weighted < ${atLeast(RISK_LEVEL_MIN_SCORES.HIGH)}::float8`);
  } else if (where.level === "LOW") {
    filters.push(sql`weighted < ${atLeast(RISK_LEVEL_MIN_SCORES.MEDIUM)}::float8`);
  }
  if (where.after !== undefined) {
    const { score: weighted, entityType, entityId } = where.after;
    filters.push(sql`(weighted < ${weighted}::float8 or (weighted = ${weighted}::float8
      and (entity_type, entity_id) > (${entityType}::text, ${entityId}::text)))`);
  }
  const { rows } = await sql<ScoredRow>`
    select entity_type, entity_id, weighted, open_flags, flags_by_rule, flags_by_status,
      first_flag_at, last_flag_at
    from entity_scores where ${sql.join(filters, sql` and `)}
    order by weighted desc, entity_type, entity_id
    limit ${limit}`.execute(db);
  const json = (v: Record<string, number> | string) =>
    (typeof v === "string" ? JSON.parse(v) : v) as Record<string, number>;
  return rows.map((row) => {
    const score = Math.round(Number(row.weighted) * decay * 100) / 100;
    const byRule = json(row.flags_by_rule);
    const byStatus = json(row.flags_by_status);
    const risk: EntityRisk = {
      entity_type: row.entity_type,
      entity_id: row.entity_id,
      score,
      level: levelOf(score),
      flags_by_rule: Object.fromEntries(RULE_IDS.map((r) => [r, Number(byRule[r] ?? 0)])),
      flags_by_status: Object.fromEntries(
        FLAG_STATUSES.map((s) => [s, Number(byStatus[s] ?? 0)]),
      ),
      first_flag_at: new Date(row.first_flag_at).toISOString(),
      last_flag_at: new Date(row.last_flag_at).toISOString(),
      open_flags: Number(row.open_flags),
    };
    return { risk, weighted: Number(row.weighted) };
  });
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
  const items = rows.slice(0, q.limit).map((r) => r.risk);
  const last = rows[q.limit - 1];
  return {
    items,
    next_cursor: rows.length > q.limit
      ? encodeRiskCursor({
        score: String(last.weighted),
        entityType: last.risk.entity_type,
        entityId: last.risk.entity_id,
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
  return rows[0]?.risk ?? null;
}
