/**
 * `raw_events` as the durable log: appending with database-assigned positions (duplicates skipped by
 * the unique `event_id`), reading it back in position order for replay, and loading checkpoints.
 *
 * @module
 */
import { type Kysely, type Selectable, sql } from "kysely";
import type { OpenViewsRow, RawEventRow } from "./flush_batch.ts";
import { loadOpenViews } from "./qoe_store.ts";
import { columnType, fieldsOfRow, OPTIONAL_FIELDS, type OptionalFields } from "../rules/fields.ts";
import type { Database } from "./schema.ts";
import { ensureDaysFor, isNoPartition } from "./partitions.ts";
import type { ConsentSignal, TelemetryEvent } from "../rules/mod.ts";
import { type EntityType, formatShardKey, parseShardKey } from "../actors/shard_key.ts";
import { storedStartMs } from "../actors/view_tracker.ts";

type Db = Kysely<Database>;

/** An event to append; the database assigns its position. */
export type LogRow = Omit<RawEventRow, "position">;

/** An event to append at a position the log chose. */
export type PositionedRow = LogRow & { position: number };

/**
 * What an append committed: for each row, by its index in the appended array, whether it is newly
 * stored at its own position (1) or was a duplicate (0): of a stored or erased event, or of an
 * earlier row of the same append, which keeps the position. An event is its `event_id` with its
 * timestamp: a retry repeats both, and the same id with another timestamp is another event.
 */
export class AppendResult {
  readonly #rows: readonly PositionedRow[];
  readonly stored: Uint8Array;
  readonly duplicates: number;
  /** Stored rows whose id the log saw recently with another timestamp (set by the log). */
  reusedIds = 0;

  constructor(rows: readonly PositionedRow[], stored: Uint8Array, duplicates: number) {
    this.#rows = rows;
    this.stored = stored;
    this.duplicates = duplicates;
  }

  /** Every row newly stored: an append with no duplicate at all. */
  static allStored(rows: readonly PositionedRow[]): AppendResult {
    return new AppendResult(rows, new Uint8Array(rows.length).fill(1), 0);
  }

  /** Position of every newly stored event by id (built on demand: tests, diagnostics). */
  get positions(): Map<string, number> {
    const positions = new Map<string, number>();
    this.#rows.forEach((row, i) => {
      if (this.stored[i] === 1) positions.set(row.eventId, row.position);
    });
    return positions;
  }
}

/** A raw row's metadata as stored: `platform` and `app_version` apart, the rest (null if none). */
export interface StoredMetadata {
  platform: string | null;
  appVersion: string | null;
  /** JSON of the other keys, or null when there are none. */
  rest: string | null;
}

/** Splits metadata into the columns it is stored in (see the `raw_events_by_day` migration). */
export function storedMetadata(metadata: Record<string, unknown>): StoredMetadata {
  const { platform, app_version: appVersion, ...rest } = metadata;
  const isText = (v: unknown): v is string => typeof v === "string";
  const kept: Record<string, unknown> = rest;
  // A value that is not text stays in the JSON, as it came.
  if (platform !== undefined && !isText(platform)) kept.platform = platform;
  if (appVersion !== undefined && !isText(appVersion)) kept.app_version = appVersion;
  let hasRest = false;
  for (const _ in kept) {
    hasRest = true;
    break;
  }
  return {
    platform: isText(platform) ? platform : null,
    appVersion: isText(appVersion) ? appVersion : null,
    rest: hasRest ? JSON.stringify(kept) : null,
  };
}

/** The metadata of a stored row, whole again. */
export function metadataOf(row: {
  platform: string | null;
  app_version: string | null;
  extra_metadata: unknown;
}): Record<string, unknown> {
  const stored = typeof row.extra_metadata === "string"
    ? JSON.parse(row.extra_metadata)
    : row.extra_metadata;
  const metadata: Record<string, unknown> = { ...(stored as Record<string, unknown> | null) };
  if (row.platform !== null) metadata.platform = row.platform;
  if (row.app_version !== null) metadata.app_version = row.app_version;
  return metadata;
}

/**
 * Inserts raw events, with positions when given (memory log) or from the sequence (durable log).
 * Events whose id is already stored are skipped. Returns the inserted ids and positions.
 */
export async function insertRawEvents(
  db: Db,
  rows: ReadonlyArray<LogRow & { position?: number }>,
): Promise<Array<{ event_id: string; position: string | number }>> {
  try {
    return (await insertStatement(rows).execute(db)).rows;
  } catch (error) {
    // Inside a transaction the caller retries the whole of it (see `writeFlush`).
    if (db.isTransaction || !isNoPartition(error)) throw error;
    await ensureDaysFor(db, rows.map((row) => row.atMs));
    return (await insertStatement(rows).execute(db)).rows;
  }
}

/** The optional fields' columns, their values as `f<i>` of the JSON rows, and their types. */
const FIELD_COLUMNS = sql.raw(OPTIONAL_FIELDS.map((f) => f.column).join(", "));
const FIELD_VALUES = sql.raw(OPTIONAL_FIELDS.map((_, i) => `e.f${i}`).join(", "));
const FIELD_TYPES = sql.raw(OPTIONAL_FIELDS.map((f, i) => `f${i} ${columnType(f)}`).join(", "));

function fieldValues(fields: OptionalFields | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (fields === undefined) return out;
  OPTIONAL_FIELDS.forEach((f, i) => {
    const v = (fields as Record<string, unknown>)[f.key];
    if (v !== undefined) out[`f${i}`] = v;
  });
  return out;
}

/**
 * The `insert ... returning event_id, position` of {@link insertRawEvents}. The rows go as one JSON
 * parameter (`json_to_recordset`): `JSON.stringify` is native, where pg encodes an array parameter
 * element by element in JavaScript (a quarter of the client's time per row, measured).
 */
function insertStatement(rows: ReadonlyArray<LogRow & { position?: number }>) {
  const json = JSON.stringify(rows.map((r, ord) => {
    const metadata = storedMetadata(r.metadata);
    return {
      o: ord,
      i: r.eventId,
      p: r.position ?? null,
      u: r.userId,
      d: r.deviceId,
      c: r.contentId,
      t: r.type,
      a: r.atMs,
      r: r.receivedAtMs,
      g: r.region,
      e: r.isEu,
      h: r.hasConsent,
      ih: r.ipHash,
      ip: r.ipPrefix,
      ec: r.errorCode,
      dn: r.doNotTrack,
      l: r.isLate,
      pf: metadata.platform,
      av: metadata.appVersion,
      x: metadata.rest,
      ce: r.clientIsEu,
      sp: r.subscriptionPlan,
      cs: r.consent ?? null,
      ...fieldValues(r.fields),
    };
  }));
  return sql<{ event_id: string; position: string | number }>`
    insert into raw_events (event_id, position, user_id, device_id, content_id, event_type,
      occurred_at, received_at, region, is_eu, has_consent, ip_hash, ip_prefix, error_code,
      do_not_track, is_late, platform, app_version, extra_metadata, client_is_eu,
      subscription_plan, consent, ${FIELD_COLUMNS})
    select e.i, coalesce(e.p, nextval('raw_events_position_seq')), e.u, e.d, e.c, e.t,
      to_timestamp(e.a / 1000.0), to_timestamp(e.r / 1000.0), e.g, e.e, e.h, e.ih, e.ip, e.ec,
      e.dn, e.l, e.pf, e.av, e.x::jsonb, e.ce, e.sp, e.cs, ${FIELD_VALUES}
    from json_to_recordset(${json}::json) as e(o int, i text, p bigint, u text, d text, c text,
      t text, a float8, r float8, g text, e boolean, h boolean, ih text, ip text, ec text,
      dn boolean, l boolean, pf text, av text, x text, ce boolean, sp text, cs jsonb,
      ${FIELD_TYPES})
    -- An erased event's retry is a duplicate: its tombstone stands in for the deleted row.
    where not exists (select 1 from erased_events t where t.event_hash = md5(e.i))
    order by e.o
    on conflict (event_id, occurred_at) do nothing
    returning event_id, position`;
}

/**
 * Appends events to the log and counts the duplicates it skipped, in one statement (so in one
 * transaction and one round trip): the duplicate counter is exact whatever happens afterwards.
 */
export async function appendToLog(db: Db, rows: PositionedRow[]): Promise<AppendResult> {
  const result = await sql<{ event_id: string; position: string | number }>`
    with inserted as (${insertStatement(rows)}),
    counted as (
      insert into stat_counters (name, value)
      select 'duplicate_events', ${rows.length}::int - count(*) from inserted
      having ${rows.length}::int - count(*) > 0
      on conflict (name) do update set value = stat_counters.value + excluded.value
    )
    select event_id, position from inserted`.execute(db);
  // Positions are the log's, one per row: a row is stored when its own position came back.
  const positions = new Set(result.rows.map((r) => Number(r.position)));
  const stored = new Uint8Array(rows.length);
  rows.forEach((row, i) => {
    if (positions.has(row.position)) stored[i] = 1;
  });
  return new AppendResult(rows, stored, rows.length - positions.size);
}

/** Log entries with `afterPosition < position <= throughPosition`, in position order. */
export async function readLog(
  db: Db,
  afterPosition: number,
  throughPosition: number,
  limit: number,
): Promise<TelemetryEvent[]> {
  const rows = await db.selectFrom("raw_events").selectAll()
    .where("position", ">", afterPosition).where("position", "<=", throughPosition)
    .orderBy("position").limit(limit).execute();
  return rows.map(eventOfRow);
}

type RawRow = Selectable<Database["raw_events"]>;

/** A stored raw event as the event the workers were sent. */
function eventOfRow(r: RawRow): TelemetryEvent {
  const fields = fieldsOfRow(r as unknown as Record<string, unknown>);
  return {
    eventId: r.event_id,
    userId: r.user_id,
    deviceId: r.device_id,
    contentId: r.content_id,
    type: r.event_type,
    atMs: new Date(r.occurred_at).getTime(),
    region: r.region,
    isEu: r.is_eu,
    clientIsEu: r.client_is_eu,
    subscriptionPlan: r.subscription_plan,
    hasConsent: r.has_consent,
    ipHash: r.ip_hash,
    ipPrefix: r.ip_prefix,
    errorCode: r.error_code,
    doNotTrack: r.do_not_track,
    metadata: metadataOf(r),
    receivedAtMs: new Date(r.received_at).getTime(),
    isLate: r.is_late,
    position: Number(r.position),
    ...(r.consent === null || r.consent === undefined ? {} : {
      consent: (typeof r.consent === "string" ? JSON.parse(r.consent) : r.consent) as ConsentSignal,
    }),
    ...(fields === undefined ? {} : { fields }),
  };
}

/**
 * The earliest `sinceMs` of the TVs. A loop, not `Math.min(...)`: a shard read back after a busy
 * day holds hundreds of thousands of TVs, more arguments than a call's stack takes ("Maximum call
 * stack size exceeded" stopped a server restarting on 1M viewers' open views).
 */
export function earliestSinceMs(tvs: ReadonlyArray<{ sinceMs: number }>): number {
  let earliest = Infinity;
  for (const tv of tvs) if (tv.sinceMs < earliest) earliest = tv.sinceMs;
  return earliest;
}

/**
 * The stored events of the TVs whose views are read back, from each TV's earliest view start on:
 * a worker taking the shard rebuilds their views from them.
 */
async function loadTvEvents(db: Db, views: OpenViewsRow[]): Promise<TelemetryEvent[]> {
  const since = new Map<string, { userId: string; deviceId: string; sinceMs: number }>();
  for (const v of views) {
    const startMs = storedStartMs(v.outcome);
    const key = JSON.stringify([v.userId, v.deviceId]);
    const tv = since.get(key);
    if (tv === undefined) {
      since.set(key, { userId: v.userId, deviceId: v.deviceId, sinceMs: startMs });
    } else tv.sinceMs = Math.min(tv.sinceMs, startMs);
  }
  const tvs = [...since.values()];
  if (tvs.length === 0) return [];
  const fromMs = earliestSinceMs(tvs);
  const result = await sql<RawRow>`
    select r.* from raw_events r
    join unnest(${tvs.map((t) => t.userId)}::text[], ${tvs.map((t) => t.deviceId)}::text[],
      ${tvs.map((t) => t.sinceMs)}::float8[]) as t(user_id, device_id, since_ms)
      on r.user_id = t.user_id and r.device_id = t.device_id
        and r.occurred_at >= to_timestamp(t.since_ms / 1000.0)
    where r.occurred_at >= ${new Date(fromMs).toISOString()}::timestamptz and not r.is_late`
    .execute(db);
  return result.rows.map(eventOfRow);
}

/** Highest position in the log (0 when empty). */
export async function lastLogPosition(db: Db): Promise<number> {
  const row = await db.selectFrom("raw_events").select((eb) => eb.fn.max("position").as("max"))
    .executeTakeFirst();
  return Number(row?.max ?? 0);
}

/** A shard's committed position and its owner's epoch. */
export interface ShardLeaseRow {
  position: number;
  epoch: number;
  /** A user shard's stored open views (QoE), as of its checkpoint. */
  openViews?: OpenViewsRow[];
  /** The stored events of those TVs, to rebuild their views from. */
  viewEvents?: TelemetryEvent[];
}

/**
 * Takes ownership of shards (`family:shard` keys): creates missing checkpoint rows and raises every
 * epoch by one, so flushes of any previous owner are fenced off. Waits for a previous owner's open
 * flush to commit or roll back (row locks), so the positions returned are final.
 */
export async function acquireShards(db: Db, keys: string[]): Promise<Map<string, ShardLeaseRow>> {
  if (keys.length === 0) return new Map();
  const sortedKeys = [...keys].sort();
  const parsed = sortedKeys.map(parseShardKey);
  const families = parsed.map((k) => k.entityType);
  const shards = parsed.map((k) => k.shard);
  const result = await sql<{ family: string; shard: number; position: string; epoch: string }>`
    insert into shard_checkpoints (family, shard, position, epoch)
    select f, s, 0, 1 from unnest(${families}::text[], ${shards}::int[]) as k(f, s)
    on conflict (family, shard) do update set epoch = shard_checkpoints.epoch + 1,
      updated_at = now()
    returning family, shard, position, epoch`.execute(db);
  const leases = new Map<string, ShardLeaseRow>(
    result.rows.map((r) => [
      formatShardKey(r.family as EntityType, r.shard),
      { position: Number(r.position), epoch: Number(r.epoch) },
    ]),
  );
  // Read after the epoch is raised: no earlier owner's flush can change them any more.
  const userShards = parsed.filter((k) => k.entityType === "user").map((k) => k.shard);
  const views = await loadOpenViews(db, userShards);
  for (const row of views) {
    const lease = leases.get(formatShardKey("user", row.shard));
    if (lease !== undefined) (lease.openViews ??= []).push(row);
  }
  const shardOfUser = new Map(views.map((v) => [v.userId, v.shard]));
  for (const event of await loadTvEvents(db, views)) {
    const shard = shardOfUser.get(event.userId);
    const lease = shard === undefined ? undefined : leases.get(formatShardKey("user", shard));
    if (lease !== undefined) (lease.viewEvents ??= []).push(event);
  }
  return leases;
}

/**
 * Moves the position sequence past every stored or checkpointed position, so a durable log started
 * on a database a memory log wrote never hands out a position twice.
 */
export async function syncLogSequence(db: Db): Promise<void> {
  await sql`select setval('raw_events_position_seq', greatest(
    (select coalesce(max(position), 0) from raw_events),
    (select coalesce(max(position), 0) from shard_checkpoints),
    (select last_value from raw_events_position_seq), 1))`.execute(db);
}

/** Committed checkpoints of the given `family:shard` keys. */
export async function loadCheckpoints(db: Db, keys: string[]): Promise<Map<string, number>> {
  if (keys.length === 0) return new Map();
  const result = await sql<{ family: string; shard: number; position: string | number }>`
    select c.family, c.shard, c.position from shard_checkpoints c
    join unnest(${keys.map((k) => parseShardKey(k).entityType)}::text[],
      ${keys.map((k) => parseShardKey(k).shard)}::int[]) as k(family, shard)
      on c.family = k.family and c.shard = k.shard`.execute(db);
  return new Map(
    result.rows.map((r) => [formatShardKey(r.family as EntityType, r.shard), Number(r.position)]),
  );
}

/**
 * Receive times (epoch ms) of the stored events among these, by id; an erased event answers -1,
 * which no retry's receive time matches. An event is its id with its timestamp (the primary key).
 */
export async function storedReceipts(
  db: Db,
  events: ReadonlyArray<{ eventId: string; atMs: number }>,
): Promise<Map<string, number>> {
  if (events.length === 0) return new Map();
  const ids = events.map((e) => e.eventId);
  const result = await sql<{ event_id: string; received_ms: string | number }>`
    select r.event_id, round(extract(epoch from r.received_at) * 1000) as received_ms
    from unnest(${ids}::text[], ${events.map((e) => e.atMs)}::float8[]) as i(id, at_ms)
    -- One primary-key probe per id, in its day's partition only (pruned at run time). A plain
    -- join was planned as a hash join over every stored event: 90 ms for 4,000 ids against 200k
    -- rows, and growing with the table; this is 8-17 ms and does not grow.
    cross join lateral (select r.event_id, r.received_at from raw_events r
      where r.occurred_at = to_timestamp(i.at_ms / 1000.0) and r.event_id = i.id limit 1) r
    union all
    select id, -1 from unnest(${ids}::text[]) as i(id)
    where exists (select 1 from erased_events t where t.event_hash = md5(i.id))`.execute(db);
  return new Map(result.rows.map((r) => [r.event_id, Number(r.received_ms)]));
}
