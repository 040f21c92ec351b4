/**
 * Privacy requests as records (deadline, status, result), the erasure of one user's rows in one
 * transaction, and the access export. Erased users stay known only as keyed hashes; their erased
 * event ids only as md5 tombstones.
 *
 * @module
 */
import { OPTIONAL_FIELDS } from "../rules/fields.ts";
import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.ts";
import { consentLedgerOf } from "./consent_store.ts";
import { metadataOf } from "./log_store.ts";

type Db = Kysely<Database>;

/** Kinds of privacy request a privacy officer can file. */
export const REQUEST_TYPES = ["deletion", "access", "do_not_track", "opt_out_sale_share"] as const;
/** A kind of privacy request. */
export type RequestType = typeof REQUEST_TYPES[number];
/** Where a request stands. */
export type RequestStatus = "received" | "in_progress" | "completed" | "failed";

/** A privacy request as the API shows it. */
export interface PrivacyRequest {
  id: string;
  user_id: string;
  type: string;
  source: string;
  jurisdiction: string | null;
  status: string;
  received_at: string;
  due_at: string | null;
  completed_at: string | null;
  overdue: boolean;
  result: unknown;
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const iso = (v: Date | string | null): string | null =>
  v === null ? null : new Date(v).toISOString();

function toRequest(r: {
  id: number | string;
  user_id: string;
  request_type: string;
  source: string;
  jurisdiction: string | null;
  status: string;
  requested_at: Date | string;
  due_at: Date | string | null;
  completed_at: Date | string | null;
  result: unknown;
}, nowMs: number): PrivacyRequest {
  const dueAt = iso(r.due_at);
  const isOpen = r.status === "received" || r.status === "in_progress";
  return {
    id: String(r.id),
    user_id: r.user_id,
    type: r.request_type,
    source: r.source,
    jurisdiction: r.jurisdiction,
    status: r.status,
    received_at: iso(r.requested_at)!,
    due_at: dueAt,
    completed_at: iso(r.completed_at),
    overdue: isOpen && dueAt !== null && Date.parse(dueAt) < nowMs,
    result: typeof r.result === "string" ? JSON.parse(r.result) : r.result ?? null,
  };
}

/**
 * Files a request; a repeat of a request already on record for the user and type (other than
 * access, which is answered anew each time) returns the existing record with `isNew` false.
 */
export async function fileRequest(db: Db, request: {
  userId: string;
  type: RequestType;
  jurisdiction: string;
  receivedAtMs: number;
  dueAtMs: number;
  /** A deletion filed under the pseudonym keeps the user's id here while the erasure runs. */
  erasingUserId?: string;
}): Promise<{ request: PrivacyRequest; isNew: boolean }> {
  const inserted = await db.insertInto("privacy_requests").values({
    user_id: request.userId,
    erasing_user_id: request.erasingUserId ?? null,
    request_type: request.type,
    source: "api",
    requested_at: new Date(request.receivedAtMs).toISOString(),
    jurisdiction: request.jurisdiction,
    due_at: new Date(request.dueAtMs).toISOString(),
  }).onConflict((oc) =>
    oc.columns(["user_id", "request_type"]).where("request_type", "<>", "access").doNothing()
  ).returningAll().executeTakeFirst();
  if (inserted !== undefined) {
    return { request: toRequest(inserted, request.receivedAtMs), isNew: true };
  }
  const existing = await db.selectFrom("privacy_requests").selectAll()
    .where("user_id", "=", request.userId).where("request_type", "=", request.type)
    .executeTakeFirstOrThrow();
  return { request: toRequest(existing, request.receivedAtMs), isNew: false };
}

/** One request by id, or null. */
export async function getRequest(
  db: Db,
  id: string,
  nowMs: number,
): Promise<PrivacyRequest | null> {
  if (!/^\d{1,18}$/.test(id)) return null;
  const row = await db.selectFrom("privacy_requests").selectAll().where("id", "=", id as never)
    .executeTakeFirst();
  return row === undefined ? null : toRequest(row, nowMs);
}

/** Filters of the request list. */
export interface RequestFilter {
  status?: string;
  type?: string;
  isOverdue?: boolean;
  limit: number;
  /** Id of the last request of the previous page (ids descend). */
  beforeId?: string;
}

/** Requests newest first, keyset-paginated by id. */
export async function listRequests(
  db: Db,
  filter: RequestFilter,
  nowMs: number,
): Promise<{ items: PrivacyRequest[]; next_cursor: string | null }> {
  let query = db.selectFrom("privacy_requests").selectAll().orderBy("id", "desc")
    .limit(filter.limit + 1);
  if (filter.status !== undefined) query = query.where("status", "=", filter.status);
  if (filter.type !== undefined) query = query.where("request_type", "=", filter.type);
  if (filter.isOverdue === true) {
    query = query.where("status", "in", ["received", "in_progress"])
      .where("due_at", "<", new Date(nowMs).toISOString());
  }
  if (filter.beforeId !== undefined) query = query.where("id", "<", filter.beforeId as never);
  const rows = await query.execute();
  const items = rows.slice(0, filter.limit).map((r) => toRequest(r, nowMs));
  return {
    items,
    next_cursor: rows.length > filter.limit ? items[items.length - 1].id : null,
  };
}

/** Moves a request to a status, with its result when it ends. */
export async function setRequestStatus(
  db: Db,
  id: string,
  status: RequestStatus,
  result: Record<string, unknown> | null = null,
  completedAtMs: number | null = null,
): Promise<void> {
  await db.updateTable("privacy_requests").set({
    status,
    result: result === null ? null : JSON.stringify(result),
    completed_at: completedAtMs === null ? null : new Date(completedAtMs).toISOString(),
  }).where("id", "=", id as never).execute();
}

/** Marks a request filed through the API (a do-not-track first recorded from an event). */
export async function setRequestSource(db: Db, id: string, source: "api" | "event"): Promise<void> {
  await db.updateTable("privacy_requests").set({ source }).where("id", "=", id as never).execute();
}

/** A deletion whose erasure has not finished, as {@link openDeletions} finds it. */
export interface OpenDeletion {
  id: string;
  /** The user's own id (kept apart while the erasure runs). */
  userId: string;
  requestedAtMs: number;
  /** Erasure attempts that ended without finishing so far. */
  attempts: number;
}

/** Deletion requests not finished yet (a stop, a crash or a failed attempt), oldest first. */
export async function openDeletions(db: Db): Promise<OpenDeletion[]> {
  const rows = await db.selectFrom("privacy_requests")
    .select(["id", "user_id", "erasing_user_id", "requested_at", "result"])
    .where("request_type", "=", "deletion").where("source", "=", "api")
    .where("status", "in", ["received", "in_progress"]).orderBy("id").execute();
  return rows.map((r) => {
    const result = typeof r.result === "string" ? JSON.parse(r.result) : r.result;
    const attempts = (result as { attempts?: unknown } | null)?.attempts;
    return {
      id: String(r.id),
      // Records filed before the pseudonym was given at once name the user until the first pass.
      userId: r.erasing_user_id ?? r.user_id,
      requestedAtMs: new Date(r.requested_at).getTime(),
      attempts: typeof attempts === "number" ? attempts : 0,
    };
  });
}

/**
 * Names a deletion's user by pseudonym, keeping the id apart only while the erasure runs, and marks
 * it in progress with `result` (null, or the attempts so far).
 */
export async function markErasing(
  db: Db,
  id: string,
  ids: { userId: string; pseudonym: string },
  result: Record<string, unknown> | null = null,
): Promise<void> {
  await db.updateTable("privacy_requests").set({
    status: "in_progress",
    user_id: ids.pseudonym,
    erasing_user_id: ids.userId,
    result: result === null ? null : JSON.stringify(result),
  }).where("id", "=", id as never).execute();
}

/** Ends a deletion (completed or failed) with its result; a completed one forgets the user's id. */
export async function endErasure(
  db: Db,
  id: string,
  status: "completed" | "failed",
  result: Record<string, unknown>,
  atMs: number,
): Promise<void> {
  await db.updateTable("privacy_requests").set({
    status,
    result: JSON.stringify(result),
    completed_at: new Date(atMs).toISOString(),
    ...(status === "completed" ? { erasing_user_id: null } : {}),
  }).where("id", "=", id as never).execute();
}

/**
 * The key of pseudonyms and subject hashes: the configured one, else one the database made for
 * itself on first use (weaker: whoever has a dump has the key; set `PSEUDONYM_SECRET`).
 */
export async function pseudonymKey(db: Db, configured: string | undefined): Promise<string> {
  if (configured !== undefined && configured !== "") return configured;
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const value = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  await db.insertInto("app_secrets").values({ name: "pseudonym_key", value })
    .onConflict((oc) => oc.column("name").doNothing()).execute();
  const row = await db.selectFrom("app_secrets").select("value")
    .where("name", "=", "pseudonym_key").executeTakeFirstOrThrow();
  return row.value;
}

/** Keyed hashes of every erased user. */
export async function loadErasedHashes(db: Db): Promise<string[]> {
  const rows = await db.selectFrom("erased_subjects").select("subject_hash").execute();
  return rows.map((r) => r.subject_hash);
}

/** Remembers an erased user by keyed hash (before anything is deleted). */
export async function recordErasedSubject(
  db: Db,
  subjectHash: string,
  pseudonym: string,
  atMs: number,
): Promise<void> {
  await db.insertInto("erased_subjects").values({
    subject_hash: subjectHash,
    pseudonym,
    erased_at: new Date(atMs).toISOString(),
  }).onConflict((oc) => oc.column("subject_hash").doNothing()).execute();
}

/** What one erasure pass changed, per table. */
export interface ErasureCounts {
  raw_events: number;
  raw_events_left: number;
  flags_pseudonymised: number;
  entity_risk: number;
  privacy_requests: number;
  /** Consent ledger rows moved under the pseudonym. */
  consent_ledger: number;
  audit_rows: number;
}

/**
 * Erases one user in one transaction: raw events at or below every shard's checkpoint (the log
 * above them is still needed by shards that have not applied it; `isLogPositional` false for the
 * redis log, whose raw rows are not the log) become md5 tombstones, flags are kept under the
 * pseudonym with the user's event ids removed, the user's risk row goes, requests and audit rows
 * name the pseudonym, and the hourly rows and flags of the user's TVs move under the pseudonym.
 * Anonymous aggregates are not touched.
 */
export async function eraseUserRows(db: Db, user: {
  userId: string;
  pseudonym: string;
  isLogPositional: boolean;
}): Promise<ErasureCounts> {
  const { userId, pseudonym } = user;
  const quoted = (s: string) => JSON.stringify(s);
  return await db.transaction().execute(async (trx) => {
    const applied = user.isLogPositional
      ? sql`and position <= (select coalesce(min(position), 0) from shard_checkpoints)`
      : sql``;
    // The user's TVs: their per-device hours and flags move under the pseudonym (merged).
    const devices = (await sql<{ device_id: string }>`select distinct device_id from raw_events
      where user_id = ${userId} ${applied}`.execute(trx)).rows.map((r) => r.device_id);
    if (devices.length > 0) {
      for (
        const [table, period] of [["device_facts_hourly", "hour"], ["device_facts_daily", "day"]]
      ) {
        const t = sql.table(table);
        const p = sql.ref(period);
        await sql`with moved as (delete from ${t} where device_id = any(${devices}::text[])
            returning *)
          insert into ${t} (device_id, ${p}, events, plays, errors, watch_time_ms)
          select ${pseudonym}, ${p}, sum(events), sum(plays), sum(errors), sum(watch_time_ms)
          from moved group by ${p}
          on conflict (device_id, ${p}) do update set ${
          sql.join(
            ["events", "plays", "errors", "watch_time_ms"].map((c) =>
              sql`${sql.ref(c)} = ${sql.ref(`${table}.${c}`)} + excluded.${sql.ref(c)}`
            ),
          )
        }`.execute(trx);
      }
      await sql`update risk_flags set entity_id = ${pseudonym},
          flag_key = 'erased:' || md5(flag_key),
          reason = replace(reason, entity_id, ${pseudonym}),
          evidence = replace(evidence::text, to_json(entity_id)::text, ${quoted(pseudonym)})::jsonb
        where entity_type = 'device' and entity_id = any(${devices}::text[])`.execute(trx);
      await sql`delete from entity_risk
        where entity_type = 'device' and entity_id = any(${devices}::text[])`.execute(trx);
    }
    await sql`insert into erased_events (event_hash, erased_at)
      select md5(event_id), now() from raw_events where user_id = ${userId} ${applied}
      on conflict (event_hash) do nothing`.execute(trx);
    const raw = await sql`delete from raw_events where user_id = ${userId} ${applied}`
      .execute(trx);
    const left = await trx.selectFrom("raw_events").select((eb) => eb.fn.countAll().as("n"))
      .where("user_id", "=", userId).executeTakeFirst();
    // Review history keeps earlier evidence snapshots: they name the user as the flags do.
    await sql`update flag_history h set
      reason = replace(h.reason, ${quoted(userId)}, ${quoted(pseudonym)}),
      evidence = case when h.evidence is null then null else
        replace(h.evidence::text, ${quoted(userId)}, ${quoted(pseudonym)})::jsonb
          || '{"event_ids": []}'::jsonb end
      from risk_flags f where h.flag_id = f.id
        and (f.user_id = ${userId} or (f.entity_type = 'user' and f.entity_id = ${userId}))`
      .execute(trx);
    const flags = await sql`update risk_flags set
      user_id = ${pseudonym},
      entity_id = case when entity_type = 'user' and entity_id = ${userId}
        then ${pseudonym} else entity_id end,
      flag_key = case when entity_type = 'user' then 'erased:' || md5(flag_key) else flag_key end,
      event_id = 'erased',
      reason = replace(reason, ${quoted(userId)}, ${quoted(pseudonym)}),
      evidence = replace(evidence::text, ${quoted(userId)}, ${quoted(pseudonym)})::jsonb
        || case when entity_type = 'user' then '{"event_ids": []}'::jsonb else '{}'::jsonb end,
      updated_at = now()
      where user_id = ${userId} or (entity_type = 'user' and entity_id = ${userId})`
      .execute(trx);
    const risk = await sql`delete from entity_risk
      where entity_type = 'user' and entity_id = ${userId}`.execute(trx);
    // A TV's open views hold the user's id and event ids; what they counted stays in the QoE rows.
    await sql`delete from open_views where user_id = ${userId}`.execute(trx);
    // The proof that consent existed stays; the person does not (event ids link to raw events).
    const ledger = await sql`update consent_ledger set user_id = ${pseudonym},
      event_id = 'erased:' || md5(event_id) where user_id = ${userId}`.execute(trx);
    // A request of the same type already on record for the pseudonym is the same request.
    await sql`delete from privacy_requests p where p.user_id = ${userId}
      and p.request_type <> 'access' and exists (select 1 from privacy_requests q
        where q.user_id = ${pseudonym} and q.request_type = p.request_type)`.execute(trx);
    const requests = await sql`update privacy_requests set user_id = ${pseudonym}
      where user_id = ${userId}`.execute(trx);
    const audit = await sql`update audit_log set subject_user_id = ${pseudonym},
      path = replace(path, ${encodeURIComponent(userId)}, ${pseudonym}),
      query = replace(query, ${encodeURIComponent(userId)}, ${pseudonym})
      where subject_user_id = ${userId}`.execute(trx);
    return {
      raw_events: num(raw.numAffectedRows),
      raw_events_left: num(left?.n),
      flags_pseudonymised: num(flags.numAffectedRows),
      entity_risk: num(risk.numAffectedRows),
      privacy_requests: num(requests.numAffectedRows),
      consent_ledger: num(ledger.numAffectedRows),
      audit_rows: num(audit.numAffectedRows),
    };
  });
}

/** Forgets tombstones of erased events older than `maxAgeMs`: retries that old are refused anyway. */
export async function pruneErasedEvents(db: Db, nowMs: number, maxAgeMs: number): Promise<void> {
  await db.deleteFrom("erased_events")
    .where("erased_at", "<", new Date(nowMs - maxAgeMs).toISOString()).execute();
}

/**
 * Everything held about one user, for an access request: events, flags with their review history,
 * requests, risk.
 */
export async function exportUser(db: Db, userId: string, nowMs: number) {
  const events = await db.selectFrom("raw_events").selectAll().where("user_id", "=", userId)
    .orderBy("occurred_at").orderBy("event_id").execute();
  const flags = await db.selectFrom("risk_flags").selectAll()
    .where((eb) =>
      eb.or([
        eb("user_id", "=", userId),
        eb.and([eb("entity_type", "=", "user"), eb("entity_id", "=", userId)]),
      ])
    ).orderBy("id").execute();
  const history = flags.length === 0 ? [] : await db.selectFrom("flag_history").selectAll()
    .where("flag_id", "in", flags.map((f) => String(f.id)) as never[]).orderBy("id").execute();
  const requests = await db.selectFrom("privacy_requests").selectAll()
    .where("user_id", "=", userId).orderBy("id").execute();
  const risk = await db.selectFrom("entity_risk").selectAll()
    .where("entity_type", "=", "user").where("entity_id", "=", userId).executeTakeFirst();
  const consent = await consentLedgerOf(db, userId);
  return {
    user_id: userId,
    generated_at: new Date(nowMs).toISOString(),
    events: events.map((e) => ({
      event_id: e.event_id,
      event_type: e.event_type,
      occurred_at: iso(e.occurred_at),
      received_at: iso(e.received_at),
      device_id: e.device_id,
      content_id: e.content_id,
      region: e.region,
      has_consent: e.has_consent,
      do_not_track: e.do_not_track,
      ip_hash: e.ip_hash,
      ip_prefix: e.ip_prefix,
      error_code: e.error_code,
      subscription_plan: e.subscription_plan,
      extra_metadata: metadataOf(e),
      consent: typeof e.consent === "string" ? JSON.parse(e.consent) : e.consent ?? null,
      ...Object.fromEntries(
        OPTIONAL_FIELDS.map((f) => [f.wire, (e as Record<string, unknown>)[f.column] ?? null]),
      ),
    })),
    flags: flags.map((f) => ({
      id: Number(f.id),
      rule: f.rule,
      level: f.level,
      reason: f.reason,
      occurred_at: iso(f.occurred_at),
      evidence: typeof f.evidence === "string" ? JSON.parse(f.evidence) : f.evidence,
      status: f.status,
      // Review decisions about the flag: who decided what, when and why.
      history: history.filter((h) => String(h.flag_id) === String(f.id)).map((h) => ({
        at: iso(h.at),
        actor_name: h.actor_name,
        actor_role: h.actor_role,
        from_status: h.from_status,
        to_status: h.to_status,
        reason: h.reason,
      })),
    })),
    requests: requests.map((r) => toRequest(r, nowMs)),
    risk: risk === undefined ? null : { level: risk.level, flag_count: num(risk.flag_count) },
    consent_ledger: consent.changes,
  };
}

/** Requests by status, for `/metrics`. */
export async function requestCountsByStatus(db: Db): Promise<Record<string, number>> {
  const rows = await db.selectFrom("privacy_requests")
    .select(["status", (eb) => eb.fn.countAll().as("n")]).groupBy("status").execute();
  return Object.fromEntries(rows.map((r) => [r.status, num(r.n)]));
}

/** Open requests past their due date, for `/metrics`. */
export async function overdueRequestCount(db: Db, nowMs: number): Promise<number> {
  const row = await db.selectFrom("privacy_requests").select((eb) => eb.fn.countAll().as("n"))
    .where("status", "in", ["received", "in_progress"])
    .where("due_at", "<", new Date(nowMs).toISOString()).executeTakeFirst();
  return num(row?.n);
}

/**
 * Records a Global Privacy Control signal (`Sec-GPC: 1`) as a completed CCPA opt-out of sale and
 * sharing for each user, in one statement; a user with an opt-out on record keeps that record.
 */
export async function recordGpcOptOuts(
  db: Db,
  userIds: readonly string[],
  receivedAtMs: number,
): Promise<number> {
  if (userIds.length === 0) return 0;
  const at = new Date(receivedAtMs).toISOString();
  const result = await sql`insert into privacy_requests (user_id, request_type, source,
      requested_at, status, jurisdiction, due_at, completed_at, result)
    select u, 'opt_out_sale_share', 'gpc', ${at}::timestamptz, 'completed', 'ccpa',
      ${at}::timestamptz, ${at}::timestamptz, '{"recorded": true}'::jsonb
    from unnest(${[...userIds]}::text[]) as g(u)
    on conflict (user_id, request_type) where request_type <> 'access' do nothing`.execute(db);
  return num(result.numAffectedRows);
}
