/**
 * Events as columns for `postMessage`: one array per field instead of one object per event. The
 * structured clone of an object writes every property name again; a column of strings or a typed
 * array of numbers does not, so a worker's batch costs about half as much to clone on the main thread
 * and to read back in the worker. Each event travels once per worker, with the families it is for as
 * bits in `roles`.
 *
 * @module
 */
import type { ConsentSignal, TelemetryEvent } from "../rules/mod.ts";
import type { OptionalFields } from "../rules/fields.ts";

/** The families an event is for in one worker, as bits. */
export const ROLE = { user: 1, content: 2, device: 4 } as const;

/** Events and their roles, column by column. */
export interface EventColumns {
  roles: Uint8Array;
  eventId: string[];
  userId: string[];
  deviceId: string[];
  contentId: string[];
  type: string[];
  region: string[];
  ipHash: string[];
  ipPrefix: string[];
  errorCode: Array<string | null>;
  subscriptionPlan: Array<string | null>;
  /**
   * Every event's `extra_metadata`, when the worker stores raw events itself; otherwise absent, and
   * only the keys the aggregates read travel, one column per key in `metadataColumns`.
   */
  metadata?: Array<Record<string, unknown>>;
  metadataColumns?: Record<string, unknown[]>;
  atMs: Float64Array;
  receivedAtMs: Float64Array;
  position: Float64Array;
  /** Booleans, see {@link FLAG}. */
  flags: Uint8Array;
  /** Decoded consent signals, present only when an event of the batch carried one. */
  consent?: Array<ConsentSignal | null>;
  /** Optional fields (`rules/fields.ts`), present only when an event of the batch carried some. */
  fields?: Array<OptionalFields | undefined>;
}

const FLAG = {
  isEu: 1,
  hasConsent: 2,
  doNotTrack: 4,
  isLate: 8,
  hasClientIsEu: 16,
  clientIsEu: 32,
  hasDoNotTrackField: 64,
  hasDoNotTrack: 128,
} as const;

/**
 * Packs events (and the families each is for) into columns. With `metadataKeys`, only those keys of
 * `extra_metadata` travel (when the log, not the worker, stores raw events); without, all of it.
 */
export function toColumns(
  events: readonly TelemetryEvent[],
  roles: readonly number[],
  metadataKeys?: readonly string[],
): EventColumns {
  const n = events.length;
  const c: EventColumns = {
    roles: new Uint8Array(n),
    eventId: new Array(n),
    userId: new Array(n),
    deviceId: new Array(n),
    contentId: new Array(n),
    type: new Array(n),
    region: new Array(n),
    ipHash: new Array(n),
    ipPrefix: new Array(n),
    errorCode: new Array(n),
    subscriptionPlan: new Array(n),
    atMs: new Float64Array(n),
    receivedAtMs: new Float64Array(n),
    position: new Float64Array(n),
    flags: new Uint8Array(n),
  };
  const metadata = metadataKeys === undefined ? (c.metadata = new Array(n)) : undefined;
  const columns = metadataKeys?.map((key): [string, unknown[]] => [key, new Array(n)]);
  if (columns !== undefined) c.metadataColumns = Object.fromEntries(columns);
  for (let i = 0; i < n; i++) {
    const e = events[i];
    c.roles[i] = roles[i];
    c.eventId[i] = e.eventId;
    c.userId[i] = e.userId;
    c.deviceId[i] = e.deviceId;
    c.contentId[i] = e.contentId;
    c.type[i] = e.type;
    c.region[i] = e.region;
    c.ipHash[i] = e.ipHash;
    c.ipPrefix[i] = e.ipPrefix;
    c.errorCode[i] = e.errorCode;
    c.subscriptionPlan[i] = e.subscriptionPlan;
    if (metadata !== undefined) metadata[i] = e.metadata;
    else for (const [key, column] of columns!) column[i] = e.metadata[key];
    if (e.consent) (c.consent ??= new Array(n).fill(null))[i] = e.consent;
    if (e.fields !== undefined) (c.fields ??= new Array(n))[i] = e.fields;
    c.atMs[i] = e.atMs;
    c.receivedAtMs[i] = e.receivedAtMs;
    c.position[i] = e.position;
    c.flags[i] = (e.isEu ? FLAG.isEu : 0) | (e.hasConsent ? FLAG.hasConsent : 0) |
      (e.doNotTrack ? FLAG.doNotTrack : 0) | (e.isLate ? FLAG.isLate : 0) |
      (e.clientIsEu === null ? 0 : FLAG.hasClientIsEu | (e.clientIsEu ? FLAG.clientIsEu : 0)) |
      (e.hasDoNotTrack === undefined
        ? 0
        : FLAG.hasDoNotTrackField | (e.hasDoNotTrack ? FLAG.hasDoNotTrack : 0));
  }
  return c;
}

/** Number of events in the columns. */
export function columnCount(c: EventColumns): number {
  return c.roles.length;
}

/** The `i`th event as an object, as the families read it. */
export function eventAt(c: EventColumns, i: number): TelemetryEvent {
  const flags = c.flags[i];
  const event: TelemetryEvent = {
    eventId: c.eventId[i],
    userId: c.userId[i],
    deviceId: c.deviceId[i],
    contentId: c.contentId[i],
    type: c.type[i],
    atMs: c.atMs[i],
    region: c.region[i],
    isEu: (flags & FLAG.isEu) !== 0,
    clientIsEu: (flags & FLAG.hasClientIsEu) === 0 ? null : (flags & FLAG.clientIsEu) !== 0,
    subscriptionPlan: c.subscriptionPlan[i],
    hasConsent: (flags & FLAG.hasConsent) !== 0,
    ipHash: c.ipHash[i],
    ipPrefix: c.ipPrefix[i],
    errorCode: c.errorCode[i],
    doNotTrack: (flags & FLAG.doNotTrack) !== 0,
    metadata: c.metadata?.[i] ?? projectedMetadata(c, i),
    receivedAtMs: c.receivedAtMs[i],
    isLate: (flags & FLAG.isLate) !== 0,
    position: c.position[i],
  };
  if ((flags & FLAG.hasDoNotTrackField) !== 0) {
    event.hasDoNotTrack = (flags & FLAG.hasDoNotTrack) !== 0;
  }
  const consent = c.consent?.[i];
  if (consent) event.consent = consent;
  const fields = c.fields?.[i];
  if (fields !== undefined) event.fields = fields;
  return event;
}

function projectedMetadata(c: EventColumns, i: number): Record<string, unknown> {
  const metadata: Record<string, unknown> = {};
  for (const key in c.metadataColumns) {
    const value = c.metadataColumns[key][i];
    if (value !== undefined) metadata[key] = value;
  }
  return metadata;
}

/** Events of one worker with their roles, gathered before they are packed. */
export class WorkerBatch {
  readonly events: TelemetryEvent[] = [];
  readonly roles: number[] = [];
  /** Events for the user family: what backpressure and log lag count. */
  userCount = 0;

  /** Adds an event for the families in `roles`. */
  push(event: TelemetryEvent, roles: number): void {
    this.events.push(event);
    this.roles.push(roles);
    if ((roles & ROLE.user) !== 0) this.userCount++;
  }

  get size(): number {
    return this.events.length;
  }

  /** The batch as columns for `postMessage` (see {@link toColumns} for `metadataKeys`). */
  toColumns(metadataKeys?: readonly string[]): EventColumns {
    return toColumns(this.events, this.roles, metadataKeys);
  }
}
