/**
 * The user side of the actor system: for every user shard a worker hosts, duplicate detection, play
 * sessions and watch time, additive aggregates, and the consent, retention and account-sharing rules.
 *
 * @module
 */
import type { ConsentLedgerRow, FlushBatch } from "../db/flush_batch.ts";
import { factKey, HOUR_MS, hourOf, KEY_SEP } from "../db/flush_batch.ts";
import { addPacked, packedRegister } from "../db/hll.ts";
import {
  consentStateCode,
  consentStateOf,
  dntOnSince,
  type DntSetting,
  dntSettingOf,
  type Flag,
  isPlaybackType,
  MAX_PRIVACY_EVENT_IDS,
  type OptOut,
  optOutInForce,
  type RuleThresholds,
  type SharingFacts,
  type TelemetryEvent,
  USER_RULES,
  type UserRule,
  type UserRuleFacts,
  withDntSetting,
} from "../rules/mod.ts";
import {
  addCounter,
  addCounts,
  addFlag,
  advanceCheckpoint,
  emptyBatch,
  isEmptyBatch,
  zeroCounts,
} from "./pending.ts";
import { RecentIdsByShard } from "./recent_ids.ts";
import { shardOf } from "./shard_of.ts";
import { SightingsColumns } from "./last_seen.ts";
import {
  endSegment,
  hasStartedSince,
  noSegments,
  type OpenSegments,
  segmentStart,
  startSegment,
} from "./open_segments.ts";
import { Slots } from "./slots.ts";
import { ViewTracker } from "./view_tracker.ts";
import type { OpenViewsRow } from "../db/flush_batch.ts";
import { businessErrorMatcher } from "../rules/qoe.ts";
import { anomalyWindowOf, rowHash } from "../rules/anomaly_series.ts";

/** An event's dimensions read from its metadata (`platformOf`, `appVersionOf`). */
interface EventDims {
  platform: string;
  appVersion: string;
}

/** Settings of the user family. */
export interface UserFamilyOptions {
  shardCount: number;
  dedupeIdsPerShard: number;
  maxSegmentMs: number;
  thresholds: RuleThresholds;
  /** Called when a rule throws: the rule is skipped for that event and processing goes on. */
  onRuleError: (rule: string, event: TelemetryEvent, error: unknown) => void;
  /** The log stores raw events itself, so they are not part of the flush. */
  isLogDurable?: boolean;
  /** Positions are per stream (redis log), not global: raw rows get a sequence number instead. */
  hasStreamPositions?: boolean;
  /** How long behind the watermark events still count in windows (`ALLOWED_LATENESS_MS`). */
  allowedLatenessMs?: number;
  /**
   * The shards this family owns, with their checkpoints: events at or below a checkpoint were flushed
   * before a restart and are replayed only to rebuild state, into a scratch batch that is never
   * written. Events of shards absent from the map are ignored. Undefined: every shard, no checkpoint.
   */
  owned?: ReadonlyMap<number, number>;
}

/** The latest UTC day with privacy-flagged events of a user, and a bounded sample of their ids. */
interface PrivacyDay {
  dayMs: number;
  eventIds: string[];
}

const DAY_MS = 86_400_000;

/** Most distinct regions or networks remembered per user; beyond it the stalest is forgotten. */
const MAX_DISTINCT_PER_USER = 64;

/**
 * Regions whose string a worker shares among its users: every country and the subdivisions in use,
 * while a client inventing codes (any `XX-YYY` passes validation) cannot grow the table past it.
 */
const MAX_SHARED_REGIONS = 4_096;

/** Events with QoE meaning kept per TV (its open and recently ended views). */
const MAX_VIEW_EVENTS_PER_TV = 1_000;

/**
 * Events with QoE meaning held per worker (about 400 bytes each: 200 MB); past it the
 * longest-held TV's views are ended early and let go (`qoe_tvs_evicted`).
 */
const MAX_VIEW_EVENTS = 500_000;

/** Most playback segments open at once per user (device and title); beyond it the oldest closes. */
const MAX_OPEN_SEGMENTS = 16;

/** In-memory state of the user shards hosted by one worker. */
export class UserFamily {
  #o: UserFamilyOptions;
  /** A slot per user in memory; the user's state is in the columns below, indexed by it. */
  #users = new Slots((slot) => this.#clear(slot));
  /** Running playback segments by `device + KEY_SEP + content`: event time the segment started. */
  #segments: OpenSegments[] = [];
  /** Regions with the id of the latest event from each (the sharing flag's sample). */
  #regions = new SightingsColumns<string, string>(MAX_DISTINCT_PER_USER);
  /**
   * Networks as {@link networkFingerprint}s of their IP hashes, tagged with the hash key's index
   * (see `#ipKeyIndexes`): only counted, never shown, so no hash string is kept.
   */
  #networks = new SightingsColumns<number, number>(MAX_DISTINCT_PER_USER);
  /** By slot, for the few users with privacy-flagged events. */
  #privacyDays = new Map<number, PrivacyDay>();
  #recent: RecentIdsByShard;
  /** API do-not-track and deletion requests, the earliest per user (bounded by requests). */
  #requests = new Map<string, OptOut>();
  /**
   * Do-not-track settings from events, kept only for users who turned it on at least once (an "off"
   * alone is the default and starts no history), so bounded by those users, not by all users.
   */
  #dntSettings = new Map<string, DntSetting[]>();
  #scratch = emptyBatch();
  #views: ViewTracker;
  /**
   * Each IP hash key id seen, as a small index, so a sighting holds a number, not the key's name.
   * Bounded by the key rotations this server has seen (key ids are the server's, not the client's).
   */
  #ipKeyIndexes = new Map<string, number>();
  /**
   * One string per region, shared by every user who was there: a region arrives as a fresh string in
   * each event, and would otherwise be kept once per user. At most {@link MAX_SHARED_REGIONS}.
   */
  #regionNames = new Map<string, string>();
  /** By slot: `consentStateCode` of the user's latest event by event time, -1 when not known yet. */
  #consentCode: number[] = [];
  /** By slot: event time of that latest event. */
  #consentAtMs: number[] = [];
  /** By slot: the hour (as an hour count) the user was last reported seen in the ledger. */
  #consentSeenHour: number[] = [];
  /** By slot: the user's GPP opt-out of sale and sharing was filed since the user was loaded. */
  #gppOptOutFiled: boolean[] = [];
  /** Per slot: a hash of the anomaly cube row (window included) the user was last counted in. */
  #cubeRow: number[] = [];
  /** Per slot: the same for the titles cube. */
  #titleRow: number[] = [];
  /** Per slot: the sharing window period of the user's last counted account-sharing flag. */
  #sharingPeriod: number[] = [];

  constructor(options: UserFamilyOptions) {
    this.#o = options;
    this.#recent = new RecentIdsByShard(options.dedupeIdsPerShard);
    this.#views = new ViewTracker({
      idleMs: options.thresholds.viewIdleMs,
      allowedLatenessMs: options.allowedLatenessMs ?? 0,
      isBusinessError: businessErrorMatcher(options.thresholds.businessErrorCodes),
      maxEventsPerTv: MAX_VIEW_EVENTS_PER_TV,
      maxEvents: MAX_VIEW_EVENTS,
      qoeRule: options.thresholds.qoe,
      anomalyWindowMs: options.thresholds.anomalyWindowMs,
      dimsOf: (event) => ({
        contentId: event.contentId,
        region: event.region,
        platform: platformOf(event),
        appVersion: appVersionOf(event),
        plan: event.subscriptionPlan ?? UNKNOWN,
        cdn: event.fields?.cdn ?? UNKNOWN,
      }),
    });
  }

  /** Number of users currently held in memory. */
  get entityCount(): number {
    return this.#users.size;
  }

  /** TVs whose views are held (QoE). */
  get viewTvCount(): number {
    return this.#views.tvCount;
  }

  /**
   * Counts what changed in the TVs' views since the last flush into the batch (a view recounted
   * retracts what it was counted as), with the TVs' state to store.
   */
  flushViews(watermarkMs: number, batch: FlushBatch): void {
    this.#views.flush(watermarkMs, batch);
  }

  /** Takes the stored open views of a user shard this worker now owns. */
  loadViews(rows: ReadonlyArray<OpenViewsRow>, events: ReadonlyArray<TelemetryEvent>): void {
    this.#views.load(rows, events);
  }

  /** Regions whose string is shared among this family's users (bounded, see `#regionName`). */
  get sharedRegionCount(): number {
    return this.#regionNames.size;
  }

  /**
   * Records a privacy request for a user; the earliest API request on record is the one reported. A
   * do-not-track from events (loaded from the database at start) is a setting turned on at `sinceMs`,
   * which later events may turn off. A deletion with a pseudonym erases the user from memory
   * instead: later events arrive under the pseudonym, whose own deletion request is delivered
   * separately (it may live in another shard).
   */
  recordOptOut(userId: string, optOut: OptOut): void {
    if (optOut.type === "deletion" && optOut.pseudonym !== undefined) {
      this.#users.release(userId);
      this.#views.forgetUser(userId);
      this.#requests.delete(userId);
      this.#dntSettings.delete(userId);
      return;
    }
    if (optOut.source === "event") {
      const history = this.#dntSettings.get(userId) ?? [];
      this.#dntSettings.set(userId, withDntSetting(history, { atMs: optOut.sinceMs, isOn: true }));
      return;
    }
    const existing = this.#requests.get(userId);
    if (existing === undefined || existing.sinceMs > optOut.sinceMs) {
      this.#requests.set(userId, optOut);
    }
  }

  /** Applies one event to its user's entity, writing deltas and flags into `out`. */
  apply(event: TelemetryEvent, nowMs: number, batch: FlushBatch): void {
    const shard = shardOf(event.userId, this.#o.shardCount);
    const through = this.#o.owned === undefined ? -1 : this.#o.owned.get(shard);
    if (through === undefined) return;
    const out = event.position <= through ? this.#scratch : batch;
    advanceCheckpoint(out, "user", shard, event.position);
    const isFirstSighting = this.#recent.add(shard, event.eventId, event.atMs);
    if (!isFirstSighting) {
      addCounter(out.counters, "duplicate_events", 1);
      return;
    }
    if (!this.#o.isLogDurable) {
      const row = toRawRow(event);
      if (this.#o.hasStreamPositions) delete row.position;
      out.rawEvents.push(row);
    }
    // Retention judges by event time, so the event's own setting counts first: it is in force as of
    // its time (the event that turns do-not-track on is not flagged, nor is the one that turns it off).
    const request = this.#requests.get(event.userId);
    const before = this.#dntSettings.get(event.userId);
    const isOn = dntSettingOf(event);
    let history = before ?? [];
    if (isOn !== null && (isOn || before !== undefined)) {
      history = withDntSetting(history, { atMs: event.atMs, isOn });
      this.#dntSettings.set(event.userId, history);
    }
    const optOut = optOutInForce(event.atMs, request, history);
    if (isOn === true && request === undefined && dntOnSince(before ?? [], event.atMs) === null) {
      out.optOuts.push({ userId: event.userId, type: "do_not_track", sinceMs: event.atMs });
    }
    // Every unique event counts in the aggregates of its own event-time hour, however late it is;
    // sessions follow event time too, so a TV that was offline still gets its watch time.
    const slot = this.#users.touch(event.userId, nowMs);
    // A replayed event's view was stored with the checkpoint (open_views): it is counted already.
    if (out === batch) this.#views.apply(event, shard, batch);
    this.#recordConsent(slot, event, out);
    const watchTimeMs = isPlaybackType(event.type) ? this.#advanceSession(slot, event) : 0;
    // Read from the metadata once: the facts and the anomaly cubes both count under them.
    const dims: EventDims = { platform: platformOf(event), appVersion: appVersionOf(event) };
    this.#aggregate(event, watchTimeMs, dims, out);
    const cubeRow = this.#countAnomalySeries(slot, event, dims, out);
    // Per-event rules run for late events too: a consent violation is one however late it arrives.
    // Windows only take events up to the allowed lateness behind the watermark.
    const facts: UserRuleFacts = {
      optOut,
      privacySample: this.#privacySample(event, slot),
      sharing: event.isLate ? null : this.#sharingFacts(slot, event),
    };
    for (const rule of USER_RULES) {
      const flag = this.#runRule(rule, event, facts, out);
      if (flag?.rule === "account_sharing") this.#countSharingFlag(slot, event, cubeRow);
    }
  }

  /** Adds the event to the user's sliding window and returns what the window holds. */
  #sharingFacts(slot: number, event: TelemetryEvent): SharingFacts {
    // With SHARING_REGION_LEVEL=country, US-CA and US-NY are one region (US) to the sharing rule.
    const region = this.#regionName(
      this.#o.thresholds.sharingRegionLevel === "country"
        ? event.region.split("-")[0]
        : event.region,
    );
    this.#regions.see(slot, region, event.atMs, event.eventId);
    const keyIndex = this.#ipKeyIndex(event.ipHash);
    this.#networks.see(slot, networkFingerprint(event.ipHash), event.atMs, keyIndex);
    const sinceMs = event.atMs - this.#o.thresholds.sharingWindowMs;
    return {
      windowStartMs: sinceMs,
      windowEndMs: event.atMs,
      regions: this.#regions.keysSince(slot, sinceMs),
      // Hashes are compared only within the event's key: after a rotation one address has two hashes.
      ipHashCount: this.#networks.countSince(slot, sinceMs, keyIndex),
      sampleEventIds: this.#regions.tagsSince(slot, sinceMs),
    };
  }

  #ipKeyIndex(ipHash: string): number {
    const keyId = ipHashKeyIdOf(ipHash);
    let index = this.#ipKeyIndexes.get(keyId);
    if (index === undefined) {
      index = this.#ipKeyIndexes.size;
      this.#ipKeyIndexes.set(keyId, index);
    }
    return index;
  }

  #regionName(region: string): string {
    const shared = this.#regionNames.get(region);
    if (shared !== undefined) return shared;
    // Clients choose regions (any well-formed code passes), so the table stops growing at a cap;
    // past it a region keeps its own string, which costs memory, not correctness.
    if (this.#regionNames.size < MAX_SHARED_REGIONS) this.#regionNames.set(region, region);
    return region;
  }

  /**
   * Counts a duplicate the log recognised (the redis log marks retries instead of appending them).
   */
  applyDuplicate(userId: string, position: number, batch: FlushBatch): void {
    const shard = shardOf(userId, this.#o.shardCount);
    const through = this.#o.owned === undefined ? -1 : this.#o.owned.get(shard);
    if (through === undefined) return;
    const out = position <= through ? this.#scratch : batch;
    advanceCheckpoint(out, "user", shard, position);
    addCounter(out.counters, "duplicate_events", 1);
  }

  /** Forgets every user and remembered id of a shard this worker no longer owns. */
  dropShard(shard: number): void {
    this.#recent.drop(shard);
    this.#views.dropShard(shard);
    this.#users.forEach((_, userId) => {
      if (shardOf(userId, this.#o.shardCount) === shard) this.#users.release(userId);
    });
  }

  /** Drops what replayed events produced: it was committed before the restart. */
  discardScratch(): void {
    if (!isEmptyBatch(this.#scratch)) this.#scratch = emptyBatch();
  }

  /** Forgets duplicate-detection ids older than the horizon (event time). */
  prune(horizonMs: number): void {
    this.#recent.prune(horizonMs);
  }

  /**
   * Evicts users untouched since `idleSinceMs` (wall clock) whose state no longer matters at the
   * watermark: no region or network seen within the sharing window and no playback segment started
   * within `maxSegmentMs`. Their deltas already sit in the pending batch, so nothing is lost. Memory is
   * thus bounded by the users active within those windows, not by every user ever seen.
   */
  passivate(idleSinceMs: number, watermarkMs: number): number {
    const sightingsSinceMs = watermarkMs - this.#o.thresholds.sharingWindowMs;
    const segmentsSinceMs = watermarkMs - this.#o.maxSegmentMs;
    let evicted = 0;
    this.#users.forEach((slot, userId) => {
      if (this.#users.touchedMs(slot) >= idleSinceMs) return;
      if (this.#regions.countSince(slot, sightingsSinceMs) > 0) return;
      if (this.#networks.countSince(slot, sightingsSinceMs) > 0) return;
      if (hasStartedSince(this.#segments[slot], segmentsSinceMs)) return;
      this.#users.release(userId);
      evicted++;
    });
    return evicted;
  }

  /**
   * The day's sample of privacy-flagged event ids for the flag's evidence, this event included (the
   * rule decides whether it is flagged; an event that is not adds nothing).
   */
  #privacySample(event: TelemetryEvent, slot: number): string[] {
    if (!event.isEu || event.hasConsent) return [];
    const dayMs = Math.floor(event.atMs / DAY_MS) * DAY_MS;
    let day = this.#privacyDays.get(slot);
    if (day === undefined || day.dayMs < dayMs) {
      this.#privacyDays.set(slot, day = { dayMs, eventIds: [] });
    } else if (day.dayMs > dayMs) {
      return [event.eventId]; // a late event of an earlier day: its own id is the sample
    }
    const ids = day.eventIds;
    if (ids.length < MAX_PRIVACY_EVENT_IDS) ids.push(event.eventId);
    return ids;
  }

  /**
   * The consent ledger, decided in event-time order: an event whose state differs from the user's
   * latest earlier event is a change. The first event since the user was loaded, and any event
   * older than the user's latest, are proposed as `checked` (the ledger decides at its time); an
   * older event of another state is followed by the latest state again (`carried`), so the state
   * after it stays right. Also counts signals per hour and region, files a GPP opt-out of sale and
   * sharing once, and marks the user seen once an hour.
   */
  #recordConsent(slot: number, event: TelemetryEvent, out: FlushBatch): void {
    const signal = event.consent ?? null;
    const hourRegion = hourOf(event.atMs) + KEY_SEP + event.region;
    const fact = out.consentFacts.get(hourRegion);
    if (fact === undefined) {
      out.consentFacts.set(hourRegion, { events: 1, signalEvents: signal === null ? 0 : 1 });
    } else {
      fact.events++;
      if (signal !== null) fact.signalEvents++;
    }
    if (signal?.isOptOutSaleShare === true && this.#gppOptOutFiled[slot] !== true) {
      this.#gppOptOutFiled[slot] = true;
      out.optOuts.push({
        userId: event.userId,
        type: "opt_out_sale_share",
        sinceMs: event.atMs,
        source: "gpp",
      });
    }
    const state = consentStateOf(event, this.#o.thresholds.consentPurposeMask);
    const code = consentStateCode(state);
    const row = (kind: ConsentLedgerRow["kind"]): ConsentLedgerRow => ({
      kind,
      userId: event.userId,
      atMs: event.atMs,
      eventId: event.eventId,
      receivedAtMs: event.receivedAtMs,
      region: event.region,
      state: code,
      source: state.source,
      purposes: state.purposes,
      vendorConsent: state.vendorConsent,
      hasConsent: state.hasConsent,
      isDecoded: state.isDecoded,
      isOptOutSaleShare: state.isOptOutSaleShare,
      cmpId: signal?.cmpId ?? null,
      cmpVersion: signal?.cmpVersion ?? null,
      policyVersion: signal?.policyVersion ?? null,
      stringHash: signal?.stringHash ?? null,
    });
    const known = this.#consentCode[slot];
    const latestMs = this.#consentAtMs[slot];
    if (known === -1 || known === undefined) {
      out.consentLedger.push(row("checked"));
      this.#consentCode[slot] = code;
      this.#consentAtMs[slot] = event.atMs;
    } else if (event.atMs >= latestMs) {
      if (code !== known) out.consentLedger.push(row("change"));
      this.#consentCode[slot] = code;
      this.#consentAtMs[slot] = event.atMs;
    } else {
      out.consentLedger.push(row("checked"));
      if (code !== known) {
        // The latest state again at its own time, keyed by user and time only (whichever late
        // event carries it, and however often, it is one row).
        out.consentLedger.push({
          ...row("carried"),
          atMs: latestMs,
          eventId: CARRIED_EVENT_ID,
          state: known,
        });
      }
    }
    const hour = Math.floor(event.atMs / HOUR_MS);
    if (!(this.#consentSeenHour[slot] >= hour)) {
      this.#consentSeenHour[slot] = hour;
      const seen = out.consentSeen.get(event.userId);
      if (seen === undefined || seen < event.atMs) out.consentSeen.set(event.userId, event.atMs);
    }
  }

  /** Empties a slot in every column (see `slots.ts`). */
  #clear(slot: number): void {
    this.#consentCode[slot] = -1;
    this.#consentAtMs[slot] = 0;
    this.#consentSeenHour[slot] = -1;
    this.#gppOptOutFiled[slot] = false;
    this.#cubeRow[slot] = -1;
    this.#titleRow[slot] = -1;
    this.#sharingPeriod[slot] = -1;
    this.#segments[slot] = noSegments();
    this.#regions.reset(slot);
    this.#networks.reset(slot);
    this.#privacyDays.delete(slot);
  }

  /**
   * PLAY starts (or restarts) a segment; PAUSE, STOP and ERROR end it. A segment's watch time is its
   * event-time length capped at `maxSegmentMs`. An event older than the open segment's start (a late
   * event from an earlier segment) leaves the open segment alone and adds no watch time.
   */
  #advanceSession(slot: number, event: TelemetryEvent): number {
    if (event.type === "SEEK") return 0;
    const key = event.deviceId + KEY_SEP + event.contentId;
    const startMs = segmentStart(this.#segments[slot], key);
    if (startMs !== undefined && event.atMs < startMs) return 0;
    let watchTimeMs = 0;
    if (startMs !== undefined) {
      watchTimeMs = Math.min(event.atMs - startMs, this.#o.maxSegmentMs);
      this.#segments[slot] = endSegment(this.#segments[slot], key);
    }
    if (event.type === "PLAY") {
      this.#segments[slot] = startSegment(this.#segments[slot], key, event.atMs, MAX_OPEN_SEGMENTS);
    }
    return watchTimeMs;
  }

  #aggregate(
    event: TelemetryEvent,
    watchTimeMs: number,
    dims: EventDims,
    out: FlushBatch,
  ): void {
    const hourMs = hourOf(event.atMs);
    const delta = {
      events: 1,
      plays: event.type === "PLAY" ? 1 : 0,
      errors: event.type === "ERROR" ? 1 : 0,
      watchTimeMs,
    };
    const typeKey = hourMs + KEY_SEP + event.type;
    const types = out.types.get(typeKey);
    if (types === undefined) {
      out.types.set(typeKey, { events: 1, lateEvents: event.isLate ? 1 : 0 });
    } else {
      types.events++;
      if (event.isLate) types.lateEvents++;
    }
    const fact = factKey(hourMs, {
      contentId: event.contentId,
      region: event.region,
      platform: dims.platform,
      appVersion: dims.appVersion,
      subscriptionPlan: event.subscriptionPlan ?? UNKNOWN,
    });
    addCounts(out.facts, fact, delta, zeroCounts);
    addCounts(out.devices, event.deviceId + KEY_SEP + hourMs, delta, zeroCounts);
    // An error code on another type is stored with the raw event but is not an error.
    if (event.type === "ERROR" && event.errorCode !== null) {
      addCounter(out.errorCodes, fact + KEY_SEP + event.errorCode, 1);
    }
    if (isPlaybackType(event.type)) {
      const packed = packedRegister(event.userId);
      this.#addViewer(out, "" + KEY_SEP + hourMs, packed);
      this.#addViewer(out, "c:" + event.contentId + KEY_SEP + hourMs, packed);
      this.#addViewer(out, "r:" + event.region + KEY_SEP + hourMs, packed);
    }
  }

  /**
   * Counts the event in the anomaly cubes (`rules/anomaly_series.ts`): its window, by platform,
   * region, app version and plan, and by title, platform and plan; a viewer once per window and row.
   * Returns the event's cube row (a flag the event raises is counted there).
   */
  #countAnomalySeries(
    slot: number,
    event: TelemetryEvent,
    dims: EventDims,
    out: FlushBatch,
  ): number[] {
    const windowMs = anomalyWindowOf(event, this.#o.thresholds.anomalyWindowMs);
    const { platform } = dims;
    const plan = event.subscriptionPlan ?? UNKNOWN;
    const isError = event.type === "ERROR" ? 1 : 0;
    const cubeKey = windowMs + KEY_SEP + platform + KEY_SEP + event.region + KEY_SEP +
      dims.appVersion + KEY_SEP + plan;
    const cubeHash = rowHash(cubeKey);
    const isNewInCube = this.#cubeRow[slot] !== cubeHash ? 1 : 0;
    this.#cubeRow[slot] = cubeHash;
    let cube = out.anomalyCube.get(cubeKey);
    if (cube === undefined) out.anomalyCube.set(cubeKey, cube = [0, 0, 0, 0, 0, 0]);
    cube[0]++;
    cube[1] += isError;
    if (event.isEu) {
      cube[2]++;
      if (event.hasConsent) cube[3]++;
    }
    cube[4] += isNewInCube;
    const titleKey = windowMs + KEY_SEP + event.contentId + KEY_SEP + platform + KEY_SEP + plan;
    const titleHash = rowHash(titleKey);
    const isNewInTitle = this.#titleRow[slot] !== titleHash ? 1 : 0;
    this.#titleRow[slot] = titleHash;
    let title = out.anomalyTitles.get(titleKey);
    if (title === undefined) out.anomalyTitles.set(titleKey, title = [0, 0, 0]);
    title[0]++;
    title[1] += isError;
    title[2] += isNewInTitle;
    return cube;
  }

  #addViewer(out: FlushBatch, key: string, packed: number): void {
    let sketch = out.viewers.get(key);
    if (sketch === undefined) out.viewers.set(key, sketch = new Map());
    addPacked(sketch, packed);
  }

  /** Runs one rule; resolves to the flag it raised (null: none, or the rule failed). */
  #runRule(
    rule: UserRule,
    event: TelemetryEvent,
    facts: UserRuleFacts,
    out: FlushBatch,
  ): Flag | null {
    try {
      const flag = rule.evaluate(event, facts, this.#o.thresholds);
      if (flag === null) return null;
      // A reviewer must see that this event came too late for the windowed rules.
      if (event.isLate) {
        const observed = { ...flag.evidence.observed, too_late_for_windows: true };
        addFlag(out, { ...flag, evidence: { ...flag.evidence, observed } });
      } else addFlag(out, flag);
      return flag;
    } catch (error) {
      this.#o.onRuleError(rule.id, event, error);
      return null;
    }
  }

  /**
   * Counts a new account-sharing flag (the first of its user and period this worker sees) in the
   * event's anomaly cube row, for the `sharing:region` series.
   */
  #countSharingFlag(slot: number, event: TelemetryEvent, cubeRow: number[]): void {
    const period = Math.floor(event.atMs / this.#o.thresholds.sharingWindowMs);
    if (this.#sharingPeriod[slot] >= period) return;
    this.#sharingPeriod[slot] = period;
    cubeRow[5]++;
  }
}

/**
 * The key group of an IP hash: its key id with the separator that ends it (`<keyId>~` for hashes
 * of today's form, `<keyId>:` for the longer ones stored before), so hashes of different keys or
 * forms are never compared; `""` for a hash without one (stored before key ids existed, or an
 * erased user's pseudonym), a group of its own: key ids are never empty.
 */
export function ipHashKeyIdOf(ipHash: string): string {
  for (let i = 0; i < ipHash.length; i++) {
    const c = ipHash.charCodeAt(i);
    if (c === 0x7e /* ~ */ || c === 0x3a /* : */) return ipHash.slice(0, i + 1);
  }
  return "";
}

/**
 * A 30-bit fingerprint of an IP hash (FNV-1a), small enough to be stored as an immediate integer:
 * about 100 bytes less per user than the hash string. Two of one user's networks share a
 * fingerprint with a chance of about n² / 2³¹ (n networks within the window: 2 in 10⁹ for two), and
 * then count once; the rule can only under-count by that, never invent a network.
 */
export function networkFingerprint(ipHash: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < ipHash.length; i++) h = Math.imul(h ^ ipHash.charCodeAt(i), 0x01000193);
  return h & 0x3fffffff;
}

/** Event id of a carried consent ledger row (see `ConsentLedgerRow`): not an event's. */
export const CARRIED_EVENT_ID = "(carried)";

/** The value of a dimension a TV did not report. */
export const UNKNOWN = "unknown";

/** The `extra_metadata` keys the aggregates read (see {@link platformOf}, {@link appVersionOf}). */
export const AGGREGATED_METADATA_KEYS: readonly string[] = ["platform", "app_version"];

/** Longest `platform` or `app_version` counted; ingest drops longer ones and says so in the 202. */
export const MAX_DIMENSION_CHARS = 32;

/** True when a metadata value can be a dimension of the aggregates. */
export function isDimensionValue(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_DIMENSION_CHARS;
}

/** The TV platform an event reports in `extra_metadata.platform`, lower-cased, or `unknown`. */
export function platformOf(event: TelemetryEvent): string {
  const platform = event.metadata["platform"];
  return isDimensionValue(platform) ? platform.toLowerCase() : UNKNOWN;
}

/** The app version an event reports in `extra_metadata.app_version`, or `unknown`. */
export function appVersionOf(event: TelemetryEvent): string {
  const version = event.metadata["app_version"];
  return isDimensionValue(version) ? version : UNKNOWN;
}

function toRawRow(event: TelemetryEvent): FlushBatch["rawEvents"][number] {
  return {
    position: event.position,
    eventId: event.eventId,
    userId: event.userId,
    deviceId: event.deviceId,
    contentId: event.contentId,
    type: event.type,
    atMs: event.atMs,
    receivedAtMs: event.receivedAtMs,
    region: event.region,
    isEu: event.isEu,
    clientIsEu: event.clientIsEu,
    subscriptionPlan: event.subscriptionPlan,
    hasConsent: event.hasConsent,
    ipHash: event.ipHash,
    ipPrefix: event.ipPrefix,
    errorCode: event.errorCode,
    doNotTrack: event.doNotTrack,
    isLate: event.isLate,
    metadata: event.metadata,
    ...(event.consent ? { consent: event.consent } : {}),
    ...(event.fields === undefined ? {} : { fields: event.fields }),
  };
}
