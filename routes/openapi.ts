/**
 * The API contract: `GET /openapi.json` (OpenAPI 3.1) built from the zod schemas the routes validate
 * with, and `GET /docs`, an interactive reference (Swagger UI) whose assets the server serves from
 * its own npm package, so it works on a network with no internet. A test checks that every route the
 * app registers is documented here and that nothing documented is missing from the app.
 *
 * @module
 */
import { Hono } from "hono";
import { z } from "zod";
import { FLAG_STATUSES } from "../db/queries.ts";
import { REQUEST_TYPES } from "../db/privacy_store.ts";
import { ENTITY_TYPES } from "../db/risk_queries.ts";
import { BUCKETS, METRICS } from "../db/timeseries.ts";
import { PLAYBACK_TYPES, RULE_IDS } from "../rules/mod.ts";
import { DOCUMENTED_EVENT_SCHEMA } from "./event_schema.ts";
import { fieldSchema, jsonSchemaOf, OPTIONAL_FIELDS } from "../rules/fields.ts";
import { JURISDICTIONS, LIST as PRIVACY_LIST, REQUEST as PRIVACY_REQUEST } from "./privacy.ts";
import { QOE_QUERY, SERIES_QUERY } from "./stats.ts";
import { AUDIT_QUERY } from "./audit.ts";
import { ROLES } from "./auth.ts";
import { LIST_QUERY as FLAG_LIST, REVIEW, RISK_QUERY } from "./compliance.ts";
import { INCIDENT_STATUSES } from "../db/incidents.ts";
import { SERIES } from "../rules/anomaly_series.ts";
import { INCIDENT_QUERY, INCIDENT_REVIEW, MAINTENANCE, MAINTENANCE_QUERY } from "./incidents.ts";
import { RANGE_QUERY } from "./time_range.ts";
import { INFO_DESCRIPTION, ROUTE_TEXT, type Tag, TAG_DESCRIPTIONS, TAGS } from "./openapi_text.ts";

/** Who may call a route. */
type Access = "public" | "any-token" | "ingest" | "stats" | "privacy" | "admin" | "metrics";

const ROLES_OF: Record<Access, string[]> = {
  public: [],
  "any-token": ["ingest", "analyst", "privacy", "admin"],
  ingest: ["ingest", "admin"],
  stats: ["analyst", "privacy", "admin"],
  privacy: ["privacy", "admin"],
  admin: ["admin"],
  metrics: ["admin", "METRICS_TOKEN"],
};

interface Reply {
  description: string;
  schema?: z.ZodType;
  contentType?: string;
}

/**
 * One documented operation; `path` uses OpenAPI's `{param}` form. `summary` is one line;
 * `description` (Markdown, from `openapi_text.ts`) says everything else about the route, and
 * `parameters` / `fields` describe its parameters and body fields by name.
 */
export interface RouteDoc {
  method: "get" | "post" | "patch";
  path: string;
  summary: string;
  description: string;
  parameters?: Record<string, string>;
  fields?: Record<string, string>;
  tag: Tag;
  access: Access;
  query?: z.ZodObject;
  body?: z.ZodType;
  responses: Record<number, Reply>;
}

const ERROR = z.object({
  error: z.string().meta({ description: "What went wrong and what to do, in a sentence" }),
  issues: z.array(z.object({ path: z.string(), message: z.string() })),
});
const JSON_OBJECT = z.record(z.string(), z.unknown());
const CONSENT_NOTES = z.array(z.string()).meta({
  description: "What ingest decided about the consent signal: a string that does not decode " +
    "(treated as no consent), or has_consent ignored because a decoded signal decides",
});
const INGESTED = z.object({
  accepted: z.literal(1),
  event_id: z.string(),
  ignored_fields: z.array(z.string()).meta({
    description: "Unknown top-level fields, and extra_metadata.<key> for keys outside " +
      "METADATA_KEYS: dropped, never stored",
  }),
  consent_notes: CONSENT_NOTES.optional(),
  gpc: z.literal(true).optional().meta({ description: "The request carried Sec-GPC: 1" }),
});
const BATCH_INGESTED = z.object({
  accepted: z.number().int().meta({ description: "Events stored" }),
  rejected: z.array(z.object({ index: z.number().int(), issues: ERROR.shape.issues })).meta({
    description: "Invalid items by index (from 0), with every problem; the others are kept",
  }),
  ignored: z.array(z.object({ index: z.number().int(), fields: z.array(z.string()) })).meta({
    description: "Fields dropped from accepted items, as ignored_fields of POST /events",
  }),
  consent_notes: z.array(z.object({ index: z.number().int(), notes: CONSENT_NOTES })).optional(),
  gpc: z.literal(true).optional().meta({ description: "The request carried Sec-GPC: 1" }),
});
const TIME = z.iso.datetime().meta({ description: "UTC, ISO 8601" });
const COUNT = z.number().int().min(0);
const RATE = z.number().min(0).max(1).meta({ description: "errors / events, 0 when no event" });
const LEVEL = z.enum(["LOW", "MEDIUM", "HIGH"]);
const RULE = z.enum(RULE_IDS as [string, ...string[]]);
const FLAG_STATUS = z.enum(FLAG_STATUSES);
/** A count per key: every key of `keys` is present (0 when none), other keys may follow. */
const countsBy = (keys: readonly string[], description: string) =>
  z.object(Object.fromEntries(keys.map((key) => [key, COUNT]))).catchall(COUNT).meta({
    description,
  });
/** Whether an aggregate read holds all of its range (retention may have deleted its start). */
const COMPLETENESS = {
  complete: z.boolean().meta({
    description: "False when part of the range is older than the aggregates kept " +
      "(HOURLY_RETENTION_DAYS, DAILY_RETENTION_DAYS; all-time reads once anything was deleted): " +
      "the answer then counts only what is kept, from first_bucket_held on",
  }),
  first_bucket_held: TIME.nullable().meta({
    description: "The earliest time from which the answer is whole; null when complete",
  }),
};
/** The optional range a read covered (null for an open bound), and whether it is whole. */
const RANGE = {
  from: TIME.nullable().meta({ description: "Start of the range (inclusive), null when open" }),
  to: TIME.nullable().meta({ description: "End of the range (exclusive), null when open" }),
  ...COMPLETENESS,
};
const NEXT_CURSOR = z.string().nullable().meta({
  description: "Pass as cursor for the next page; null on the last page",
});

const PRIVACY_RECORD = z.object({
  id: z.string(),
  user_id: z.string().meta({ description: "The user, or their pseudonym once erased" }),
  type: z.enum(REQUEST_TYPES).meta({
    description: "deletion (erasure), access (export), do_not_track, opt_out_sale_share",
  }),
  source: z.enum(["api", "event", "gpc", "gpp"]).meta({
    description: "api: filed here; event: a TV's do-not-track; gpc: a Sec-GPC: 1 header; " +
      "gpp: a GPP string's US section said opted out of sale or sharing (or GPC)",
  }),
  jurisdiction: z.enum(JURISDICTIONS).nullable().meta({
    description: "gdpr: due one calendar month after receipt; ccpa: 45 days; null for a TV's " +
      "do-not-track",
  }),
  status: z.enum(["received", "in_progress", "completed", "failed"]),
  received_at: TIME,
  due_at: TIME.nullable().meta({ description: "The legal deadline; null when there is none" }),
  completed_at: TIME.nullable(),
  overdue: z.boolean().meta({ description: "Not completed or failed, and past due_at" }),
  result: JSON_OBJECT.nullable().meta({
    description: "What the request did (e.g. erased rows per table, exported counts)",
  }),
  is_repeat: z.boolean().optional().meta({
    description: "On POST: true when the request was already on record",
  }),
});

const STATS_TOTALS = {
  plays: COUNT.meta({ description: "PLAY events (starts and resumes)" }),
  watch_time_ms: COUNT.meta({
    description: "Playback segments (PLAY to PAUSE, STOP or ERROR), each capped at " +
      "MAX_SEGMENT_MS, credited to the content and region of the event that ends it",
  }),
  events: COUNT,
  errors: COUNT,
  error_rate: RATE,
  unique_viewers: COUNT.meta({ description: "Estimated distinct viewers (HyperLogLog)" }),
};
const STATS_SUMMARY = z.object({
  ...RANGE,
  total_events: COUNT.meta({
    description: "Every unique accepted event, late ones included",
  }),
  events_by_type: countsBy(PLAYBACK_TYPES, "Events per event type; every playback type present"),
  plays: STATS_TOTALS.plays,
  watch_time_ms: STATS_TOTALS.watch_time_ms,
  errors: COUNT,
  error_rate: RATE,
  unique_viewers: STATS_TOTALS.unique_viewers,
  late_events: COUNT.meta({
    description: "Events that arrived more than ALLOWED_LATENESS_MS behind the watermark " +
      "(counted in total_events too)",
  }),
  duplicate_events: COUNT.meta({ description: "All-time: retries of an event already stored" }),
});
const MS = z.number().min(0);
const SHARE = (description: string) => z.number().min(0).max(1).nullable().meta({ description });
const QOE_STATS = z.object({
  ...RANGE,
  views: COUNT.meta({
    description: "Views that started in the range (a view counts in its first hour)",
  }),
  started_views: COUNT.meta({
    description: "Views that reached FIRST_FRAME (or PLAY without one)",
  }),
  video_startup_time_ms: z.object({
    p50: MS.nullable(),
    p95: MS.nullable(),
    mean: MS.nullable(),
    views_measured: COUNT.meta({ description: "Started views with PLAY_REQUEST and FIRST_FRAME" }),
    views_not_measured: COUNT.meta({ description: "Started views without a measured startup" }),
    relative_error: z.number().meta({ description: "Of p50 and p95 (histogram buckets): 0.049" }),
  }),
  exits_before_video_start: z.object({
    count: COUNT,
    rate: SHARE("count / views"),
    denominator: z.literal("views"),
    exits_under_1s_not_counted: COUNT,
  }),
  video_start_failures: z.object({
    count: COUNT,
    rate: SHARE("count / views"),
    business: COUNT.meta({ description: "Codes in BUSINESS_ERROR_CODES: not the service's fault" }),
    technical: COUNT,
    technical_rate: SHARE("technical / views"),
    denominator: z.literal("views"),
  }),
  playback_failures: z.object({
    count: COUNT,
    rate: SHARE("count / started_views"),
    denominator: z.literal("started_views"),
  }),
  rebuffer_ratio: SHARE("rebuffer_ms / (playing_ms + rebuffer_ms)"),
  rebuffer_ratio_denominator: z.literal("playing_ms + rebuffer_ms"),
  rebuffers: COUNT,
  rebuffer_ms: MS,
  rebuffers_per_hour: z.number().min(0).nullable().meta({
    description: "rebuffers / playing hours",
  }),
  seek_stall_ms: MS.meta({ description: "Stalls starting within 1 s of a SEEK: not rebuffering" }),
  playing_ms: MS,
  average_bitrate_kbps: MS.nullable().meta({ description: "Weighted by playing time" }),
  upscale_share: SHARE("Playing time with the rendition below the player's height"),
  warnings: COUNT.meta({ description: "ERROR events with fatal: false" }),
});
const CONTENT_STATS = z.object({
  content_id: z.string(),
  ...RANGE,
  ...STATS_TOTALS,
  top_regions: z.array(z.object({ region: z.string(), plays: COUNT, events: COUNT })).meta({
    description: "At most 10 regions, most plays first",
  }),
});
const REGION_STATS = z.object({
  region: z.string(),
  is_eu: z.boolean().meta({ description: "GDPR-like rules apply (the server's GDPR_REGIONS)" }),
  ...RANGE,
  ...STATS_TOTALS,
  errors_by_code: z.record(z.string(), COUNT).meta({
    description: "Errors per error code: the 10 largest, the rest summed under other",
  }),
  device_mix: z.array(z.object({
    platform: z.string(),
    events: COUNT,
    share: z.number().min(0).max(1),
  })).meta({ description: "Events per platform: the 10 largest, then other" }),
});
const TIMESERIES = z.object({
  metric: z.enum(METRICS).meta({
    description: "error_rate is errors / events per bucket; unique_viewers merges the hourly " +
      "HyperLogLog sketches of each bucket; the QoE metrics (views to avg_bitrate_kbps) are " +
      "computed per bucket as /stats/qoe computes them over that bucket",
  }),
  bucket: z.enum(Object.keys(BUCKETS) as ["1h", "1d"]),
  from: TIME,
  to: TIME,
  ...COMPLETENESS,
  series: z.array(z.object({
    key: z.string().nullable().meta({ description: "The group's value; null when not grouped" }),
    points: z.array(z.object({ t: TIME, value: z.number().nullable() })).meta({
      description: "One point per bucket from from to to, 0 where nothing happened; a QoE rate, " +
        "percentile or average is null where its denominator is zero (no views in the bucket)",
    }),
  })),
});

const EVIDENCE = z.object({
  rule: RULE,
  rule_version: z.number().int(),
  thresholds: z.record(z.string(), z.number()),
  window: z.object({ start: TIME, end: TIME }).nullable().meta({
    description: "Event-time window of a windowed rule; null for per-event rules",
  }),
  observed: JSON_OBJECT.meta({ description: "What the rule saw; its fields depend on the rule" }),
  event_ids: z.array(z.string()).meta({ description: "A sample of the events it covers" }),
});
const FLAG = z.object({
  id: z.number().int(),
  rule: RULE,
  rule_version: z.number().int(),
  level: LEVEL,
  entity_type: z.enum(ENTITY_TYPES),
  entity_id: z.string().meta({
    description: "The user, content or device the flag is about (the pseudonym once erased)",
  }),
  event_id: z.string().meta({ description: "The event that raised or last escalated it" }),
  user_id: z.string().meta({ description: "Empty for a content flag" }),
  region: z.string(),
  is_eu: z.boolean().meta({ description: "The region is in GDPR_REGIONS" }),
  occurred_at: TIME.meta({ description: "Event time of the event that raised it" }),
  raised_at: TIME.meta({ description: "When the pipeline wrote it" }),
  flagged_events: COUNT.meta({ description: "Events the flag covers" }),
  reason: z.string().meta({ description: "What the rule saw, in a sentence" }),
  evidence: EVIDENCE,
  status: FLAG_STATUS.meta({
    description: "Review status: open when raised, then acknowledged, escalated, dismissed or " +
      "resolved; a higher-level sighting re-opens a dismissed or resolved flag",
  }),
  assignee: z.string().nullable().meta({ description: "Who handles it, null when nobody" }),
  revision: z.number().int().min(1).meta({ description: "Send it back when reviewing" }),
});
const FLAG_WITH_HISTORY = FLAG.extend({
  history: z.array(z.object({
    id: z.number().int(),
    at: TIME,
    actor_name: z.string(),
    actor_role: z.string().meta({ description: "A token role, or pipeline for an escalation" }),
    from_status: FLAG_STATUS,
    to_status: FLAG_STATUS,
    reason: z.string().nullable(),
    assignee: z.string().nullable(),
    level: LEVEL.nullable(),
    evidence: EVIDENCE.nullable().meta({
      description: "An escalation keeps the evidence it replaced; null for a review",
    }),
  })).meta({ description: "Review decisions and escalations, oldest first" }),
});
const FLAG_PAGE = z.object({ items: z.array(FLAG), next_cursor: NEXT_CURSOR });
const COMPLIANCE_SUMMARY = z.object({
  ...RANGE,
  flagged_events_by_rule: countsBy(
    RULE_IDS,
    "Events each rule flagged (windowed rules: the events that arrived while their entity was " +
      "over the threshold), by event hour",
  ),
  flags_by_rule: countsBy(RULE_IDS, "Flags per rule, by the event time they occurred at"),
  flags_by_level: countsBy(["HIGH", "MEDIUM", "LOW"], "Flags per level"),
  flags_by_status: countsBy(FLAG_STATUSES, "Flags per review status"),
});
const RULE_COUNTS = z.object(Object.fromEntries(RULE_IDS.map((rule) => [rule, COUNT])));
const COMPLIANCE_REGIONS = z.object({
  ...RANGE,
  regions: z.array(
    z.object({ region: z.string(), is_eu: z.boolean(), flagged_events: RULE_COUNTS }),
  )
    .meta({ description: "Flagged events per rule in each region that has any" }),
  groups: z.object({
    eu: RULE_COUNTS.meta({ description: "Regions in GDPR_REGIONS; non_eu the others" }),
    non_eu: RULE_COUNTS,
    us_ca: RULE_COUNTS.meta({ description: "US-CA (California); non_us_ca the others" }),
    non_us_ca: RULE_COUNTS,
  }),
});
const ENTITY_RISK = z.object({
  entity_type: z.enum(ENTITY_TYPES),
  entity_id: z.string(),
  score: z.number().min(0).meta({
    description: "Sum of rule × level weights of the open flags, halving every 30 days",
  }),
  level: LEVEL.meta({ description: "HIGH from a score of 20, MEDIUM from 5, LOW below" }),
  flags_by_rule: countsBy(RULE_IDS, "Flags per rule, closed ones too"),
  flags_by_status: countsBy(FLAG_STATUSES, "Flags per review status"),
  first_flag_at: TIME.meta({ description: "Earliest event time of its flags, closed ones too" }),
  last_flag_at: TIME.meta({ description: "Latest event time of its flags, closed ones too" }),
  open_flags: COUNT.meta({ description: "Flags not dismissed or resolved: the ones scored" }),
});

const SERIES_ID = z.string().meta({
  description: `A watched series, \`<metric>:<dimension>\`: ${SERIES.map((s) => s.id).join(", ")}`,
});
const DRILL_DOWN = z.array(z.object({
  dimensions: z.record(z.string(), z.string()).meta({
    description: "The segment: one value of another dimension, or a pair, e.g. " +
      '{"app_version":"7.1"}',
  }),
  expected: z.number(),
  observed: z.number(),
  share: z.number().meta({
    description: "Fraction of the key's change the segment explains; negative when it moved the " +
      "other way",
  }),
  text: z.string().meta({ description: 'In a sentence: "app_version 7.1: 92% of the drop"' }),
})).meta({ description: "Which values of the other dimensions explain the change, largest first" });
const INCIDENT = z.object({
  id: z.string(),
  series: SERIES_ID,
  key: z.string().meta({ description: "The value of the series' dimension, e.g. tizen" }),
  kind: z.enum(["count", "rate", "share"]).meta({
    description: "count: a drop hurts; rate (errors / events): a rise hurts; share (EU consent): " +
      "a drop hurts",
  }),
  state: z.enum(["active", "recovered"]).meta({
    description: "The detector's: active until 3 calm windows in a row, then recovered",
  }),
  status: z.enum(INCIDENT_STATUSES).meta({
    description: "A person's: open, then acknowledged, muted (until muted_until) or resolved",
  }),
  level: LEVEL.meta({
    description: "MEDIUM from 30 minutes or 100 affected viewers, HIGH from 2 hours or 1,000",
  }),
  started_at: TIME.meta({ description: "Start of the first window outside the baseline" }),
  opened_at: TIME.meta({ description: "Start of the window that opened it (the second in a row)" }),
  last_window: TIME.meta({ description: "Start of the latest window judged while active" }),
  recovered_at: TIME.nullable().meta({
    description: "End of its last calm window; null if active",
  }),
  baseline: z.string().meta({ description: "Where the expected value came from" }),
  expected: z.number().meta({ description: "Expected value of the latest window" }),
  observed: z.number().meta({ description: "Observed value of the latest window" }),
  band: z.tuple([z.number(), z.number()]).meta({
    description: "Low and high end of the expected band of the latest window",
  }),
  z: z.number().meta({ description: "Modified z-score of the latest window" }),
  windows: z.number().int().min(1).meta({ description: "5-minute windows judged while active" }),
  viewers: COUNT.meta({ description: "Most viewers affected in one window" }),
  drill_down: DRILL_DOWN,
  related: z.array(z.object({
    series: SERIES_ID,
    key: z.string(),
    opened_at: TIME,
    expected: z.number(),
    observed: z.number(),
  })).meta({ description: "Keys of the same family moved by the same fault, attached here" }),
  exposure: z.object({
    currency: z.string().meta({ description: "ISO 4217, PLAN_CURRENCY" }),
    viewers_by_plan: z.record(z.string(), COUNT),
    monthly_revenue: z.number().min(0).meta({
      description: "Affected viewers × the plan's monthly price (PLAN_PRICES): an exposure, " +
        "not a loss",
    }),
    unpriced_plans: z.array(z.string()).meta({ description: "Plans PLAN_PRICES has no price for" }),
  }).nullable().meta({ description: "Null without PLAN_PRICES" }),
  muted_until: TIME.nullable().meta({ description: "Set while muted" }),
  reason: z.string().nullable().meta({ description: "The latest reason a person gave" }),
  revision: z.number().int().min(1).meta({
    description: "Bumped by every change that alerts and by every review",
  }),
  updated_at: TIME,
});
const INCIDENT_WITH_HISTORY = INCIDENT.extend({
  history: z.array(z.object({
    revision: z.number().int().min(1),
    at: TIME,
    actor: z.string().meta({ description: "detector, or the reviewer's token name" }),
    change: JSON_OBJECT.meta({
      description: "event: opened, level, update, recovered (with level) or review (with status, " +
        "reason, muted_until)",
    }),
  })).meta({ description: "One row per revision, oldest first" }),
});
const MAINTENANCE_WINDOW = z.object({
  id: z.string(),
  starts_at: TIME,
  ends_at: TIME,
  series: SERIES_ID.nullable().meta({ description: "Null: every series" }),
  key: z.string().nullable().meta({ description: "Null: every key of the series" }),
  reason: z.string(),
  created_by: z.string().meta({ description: "The token name that created it" }),
});

const USER_EXPORT = z.object({
  user_id: z.string(),
  generated_at: TIME,
  events: z.array(z.object({
    event_id: z.string(),
    event_type: z.string(),
    occurred_at: TIME,
    received_at: TIME,
    device_id: z.string(),
    content_id: z.string(),
    region: z.string(),
    has_consent: z.boolean(),
    do_not_track: z.boolean(),
    ip_hash: z.string(),
    ip_prefix: z.string(),
    error_code: z.string().nullable(),
    subscription_plan: z.string().nullable(),
    extra_metadata: JSON_OBJECT.nullable(),
    consent: JSON_OBJECT.nullable().meta({
      description: "The decoded consent signal (never the string), null when none was sent",
    }),
    ...Object.fromEntries(
      OPTIONAL_FIELDS.map((f) => [f.wire, fieldSchema(f).nullable().meta(jsonSchemaOf(f))]),
    ),
  })).meta({ description: "The raw events still kept, in event time order" }),
  flags: z.array(z.object({
    id: z.number().int().meta({ description: "As in /compliance/flags/{id}" }),
    rule: RULE,
    level: LEVEL,
    reason: z.string(),
    occurred_at: TIME,
    evidence: EVIDENCE,
    status: FLAG_STATUS,
    history: z.array(z.object({
      at: TIME,
      actor_name: z.string(),
      actor_role: z.string(),
      from_status: FLAG_STATUS,
      to_status: FLAG_STATUS,
      reason: z.string().nullable(),
    })),
  })),
  requests: z.array(PRIVACY_RECORD),
  risk: z.object({ level: LEVEL, flag_count: COUNT }).nullable().meta({
    description: "The highest risk level reached, null when never flagged",
  }),
});
const CONSENT_STATE = z.object({
  at: TIME.meta({ description: "Event time of the event that showed the state" }),
  received_at: TIME,
  event_id: z.string().nullable().meta({ description: "null for a carried state" }),
  carried: z.boolean().meta({
    description: "The user's latest state recorded again after an older event of another state " +
      "arrived late; its proof is that of the row that introduced the state",
  }),
  region: z.string(),
  source: z.enum(["has_consent", "tcf", "gpp", "purposes"]).meta({
    description: "tcf: a TCF v2 TC string; gpp: a GPP string; purposes: named purposes; " +
      "has_consent: no signal, the event's boolean (standing for the needed purposes)",
  }),
  purposes: z.array(z.string()).meta({
    description:
      "TCF purposes consented to, by name: storage (1), basic_ads (2), ads_profile (3), " +
      "personalised_ads (4), content_profile (5), personalised_content (6), ad_measurement (7), " +
      "measurement (8), market_research (9), product_development (10), limited_data_ads (11)",
  }),
  has_consent: z.boolean().meta({
    description: "The privacy rule's decision: every CONSENT_PURPOSES purpose consented to " +
      "(legitimate interest does not count), and CONSENT_VENDOR_ID's consent when it is set",
  }),
  vendor_consent: z.boolean().nullable(),
  opt_out_sale_share: z.boolean(),
  decoded: z.boolean().meta({ description: "False: the string did not decode (grants nothing)" }),
  cmp_id: z.number().int().nullable(),
  cmp_version: z.number().int().nullable(),
  policy_version: z.number().int().nullable().meta({ description: "TCF policy version" }),
  string_sha256: z.string().nullable().meta({
    description: "SHA-256 of the consent string (first 32 hex digits); the string is never kept",
  }),
});
const CONSENT = z.object({
  user_id: z.string().meta({ description: "The user, or their pseudonym once erased" }),
  source: z.literal("ledger"),
  changes: z.array(CONSENT_STATE).meta({
    description: "Each change of the user's consent state, in event-time order (GDPR Art. 7(1))",
  }),
  current: CONSENT_STATE.nullable(),
  at: TIME.optional().meta({ description: "The at asked for" }),
  state_at: CONSENT_STATE.nullable().optional().meta({
    description: "With ?at=: the state in force at that event time (null before the first)",
  }),
  is_truncated: z.boolean().meta({
    description: "More than 1,000 ledger rows: the earliest shown",
  }),
  retained_days: z.number().int().nullable().meta({
    description: "CONSENT_RETENTION_DAYS: a state is kept this long after it was last seen",
  }),
});
const CONSENT_SUMMARY = z.object({
  ...RANGE,
  required_purposes: z.array(z.string()).meta({ description: "CONSENT_PURPOSES, by name" }),
  users: COUNT.meta({
    description: "Users whose consent state held at some time in the range, each counted once",
  }),
  events: COUNT.meta({ description: "Events in the range, sum over the regions" }),
  signal_events: COUNT.meta({ description: "Events that carried a consent signal" }),
  regions: z.array(z.object({
    region: z.string(),
    users: COUNT.meta({ description: "Users whose consent state held at some time in the range" }),
    consent_share: z.number().nullable().meta({
      description: "Share of those users whose latest state in the range is consent as the " +
        "privacy rule decides it",
    }),
    purposes: z.record(
      z.string(),
      z.object({ users: COUNT, share: z.number().nullable() }),
    ).meta({ description: "Per purpose name: users whose latest state in the range grants it" }),
    events: COUNT,
    signal_events: COUNT.meta({ description: "Events that carried a TCF, GPP or purposes signal" }),
    signal_share: z.number().nullable(),
  })),
});
const AUDIT_PAGE = z.object({
  entries: z.array(z.object({
    id: z.number().int(),
    at: TIME,
    request_id: z.string(),
    actor_name: z.string().meta({ description: "Token name; unauthenticated for no valid token" }),
    actor_role: z.string().meta({ description: "Token role; none for no valid token" }),
    method: z.string(),
    path: z.string(),
    query: z.string().meta({ description: "Query string, secret-looking values redacted" }),
    status: z.number().int(),
    subject_user_id: z.string().nullable(),
    source: z.string().meta({ description: "The client's network prefix, or unknown" }),
    count: z.number().int().min(1).meta({ description: "Identical refusals folded per minute" }),
  })),
  next_cursor: NEXT_CURSOR,
});
const WHOAMI = z.object({
  name: z.string().meta({ description: "The token's name; anonymous when auth is off" }),
  role: z.enum(ROLES),
  auth: z.enum(["on", "off"]),
});
const READINESS = z.object({
  status: z.enum(["ready", "degraded"]),
  problems: z.array(z.string()).meta({ description: "Why it is degraded; empty when ready" }),
  queue: z.string().meta({ description: "The log backend (QUEUE)" }),
  watermark: TIME.nullable().meta({ description: "Event-time watermark; null before any event" }),
  workers: z.array(z.object({
    index: z.number().int(),
    alive: z.boolean(),
    batches_in_flight: COUNT,
    pending_events: COUNT,
    entities: COUNT.meta({ description: "Users, titles and TVs the worker holds in memory" }),
    heap_used_mb: z.number().min(0).meta({
      description: "The worker's V8 heap in use, live state and uncollected garbage, in MB",
    }),
  })),
  node_id: z.string().optional().meta({ description: "Cluster (QUEUE=redis) only" }),
  members: z.array(z.string()).optional().meta({ description: "Cluster (QUEUE=redis) only" }),
  owned_shards: COUNT.optional().meta({ description: "Cluster (QUEUE=redis) only" }),
});
const OPENAPI = z.object({
  openapi: z.literal("3.1.0"),
  info: z.object({ title: z.string(), version: z.string(), description: z.string() }),
  paths: z.record(z.string(), JSON_OBJECT),
}).meta({ description: "An OpenAPI 3.1 document" });

const err = (description: string): Reply => ({ description, schema: ERROR });
const ok = (description: string, schema: z.ZodType): Reply => ({
  description,
  schema,
});
const REFUSALS = {
  401: err("No bearer token, or an unknown one"),
  403: err("The token's role may not call this route"),
};
/** With auth off, `/privacy/*` and the body methods of `/compliance/*` refuse a foreign Origin. */
const SAME_SITE_REFUSALS = {
  ...REFUSALS,
  403: err(
    "The token's role may not call this route; or, with auth off, Origin names another site",
  ),
};
const BODY_LIMITS = {
  400: err("Malformed JSON, or a body that is not UTF-8"),
  408: err("The body did not arrive within BODY_READ_TIMEOUT_MS"),
  413: err("The body is larger than MAX_BODY_BYTES"),
  415: err("Content-Type is not application/json"),
};
const INGEST_REFUSALS = {
  ...REFUSALS,
  ...BODY_LIMITS,
  415: err("Unsupported content type: application/json (or NDJSON for a batch)"),
  503: err(
    "Backpressure, the log is unavailable, or the server is draining: retry after Retry-After",
  ),
};

/** Every route of the API. */
export const ROUTE_DOCS: RouteDoc[] = [
  {
    method: "post",
    path: "/events",
    tag: "ingest",
    access: "ingest",
    ...ROUTE_TEXT["post /events"],
    summary: "Send one event; 202 once it is stored in the log",
    body: DOCUMENTED_EVENT_SCHEMA,
    responses: {
      202: ok("Accepted; unknown top-level fields are dropped and named", INGESTED),
      ...INGEST_REFUSALS,
      422: err("Invalid event: every problem is listed in issues"),
    },
  },
  {
    method: "post",
    path: "/events/batch",
    tag: "ingest",
    access: "ingest",
    ...ROUTE_TEXT["post /events/batch"],
    summary:
      "Send up to MAX_BATCH_EVENTS events as a JSON array or NDJSON; invalid items are listed",
    body: z.array(DOCUMENTED_EVENT_SCHEMA),
    responses: {
      202: ok("The valid events are stored; invalid ones are in rejected", BATCH_INGESTED),
      ...INGEST_REFUSALS,
      422: err("Empty batch, or no event was valid"),
    },
  },
  ...(["summary", "content/{contentId}", "region/{region}"] as const).map((what): RouteDoc => ({
    method: "get",
    path: `/stats/${what}`,
    tag: "analytics",
    access: "stats",
    ...ROUTE_TEXT[`get /stats/${what}` as const],
    summary: `Totals ${
      what === "summary" ? "of everything" : `of one ${what.split("/")[0]}`
    } over an optional range of event-time hours`,
    query: RANGE_QUERY,
    responses: {
      200: ok(
        "Counts, rates, unique viewers (HyperLogLog) and top lists",
        what === "summary"
          ? STATS_SUMMARY
          : what === "region/{region}"
          ? REGION_STATS
          : CONTENT_STATS,
      ),
      400: err("A bound is not on a UTC hour, or is not a date"),
      ...REFUSALS,
      ...(what === "summary" ? {} : { 404: err("Never seen") }) as Record<number, Reply>,
    },
  })),
  {
    method: "get",
    path: "/stats/qoe",
    tag: "analytics",
    access: "stats",
    ...ROUTE_TEXT["get /stats/qoe"],
    summary: "Quality of experience of the views that started in a range",
    query: RANGE_QUERY.extend(QOE_QUERY.shape),
    responses: {
      200: ok("Views, startup time, exits, failures, rebuffering, bitrate", QOE_STATS),
      400: err("A bound is not on a UTC hour, or a filter is not valid"),
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/stats/timeseries",
    tag: "analytics",
    access: "stats",
    ...ROUTE_TEXT["get /stats/timeseries"],
    summary: "One metric per 1h or 1d bucket, optionally filtered and grouped",
    query: SERIES_QUERY,
    responses: {
      200: ok("Series of points, every bucket filled", TIMESERIES),
      400: err(
        "Bad metric, bucket, range, filter or too many points, or a combination the data cannot " +
          "answer (group_by=cdn with a non-QoE metric, device_id with a QoE metric)",
      ),
      ...REFUSALS,
    },
  },
  ...(["summary", "events", "regions"] as const).map((what): RouteDoc => ({
    method: "get",
    path: `/compliance/${what}`,
    tag: "compliance",
    access: "privacy",
    ...ROUTE_TEXT[`get /compliance/${what}` as const],
    summary: what === "events"
      ? "Flags with their evidence, newest first, keyset-paginated"
      : `Flag and flagged-event counts ${what === "regions" ? "per region" : "by rule and level"}`,
    query: what === "events" ? FLAG_LIST : RANGE_QUERY,
    responses: {
      200: what === "events"
        ? ok("A page of flags, newest first", FLAG_PAGE)
        : what === "regions"
        ? ok("Flagged events per region and rule, with EU and US-CA groups", COMPLIANCE_REGIONS)
        : ok("Flag and flagged-event counts", COMPLIANCE_SUMMARY),
      400: err("Bad filter or range"),
      ...REFUSALS,
    },
  })),
  {
    method: "get",
    path: "/compliance/consent/summary",
    tag: "compliance",
    access: "privacy",
    ...ROUTE_TEXT["get /compliance/consent/summary"],
    summary: "Per region: the share of users whose latest consent state in the range grants " +
      "each purpose (and consent as the privacy rule decides it), and the share of events that " +
      "carried a consent signal",
    query: RANGE_QUERY,
    responses: {
      200: ok("Per region, sorted by region", CONSENT_SUMMARY),
      400: err("Bad range"),
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/compliance/flags/{id}",
    tag: "compliance",
    access: "privacy",
    ...ROUTE_TEXT["get /compliance/flags/{id}"],
    summary: "One flag with its evidence, review status and history",
    responses: {
      200: ok("The flag", FLAG_WITH_HISTORY),
      400: err("Not a flag id"),
      404: err("No such flag"),
      ...REFUSALS,
    },
  },
  {
    method: "patch",
    path: "/compliance/flags/{id}",
    tag: "compliance",
    access: "privacy",
    ...ROUTE_TEXT["patch /compliance/flags/{id}"],
    summary:
      "Review a flag: acknowledge, escalate, dismiss or resolve it (reason required to close)",
    body: REVIEW,
    responses: {
      200: ok("The flag after the change", FLAG_WITH_HISTORY),
      ...BODY_LIMITS,
      400: err("Not a flag id, malformed JSON, or a body that is not UTF-8"),
      404: err("No such flag"),
      409: err("The flag has a newer revision than the one reviewed"),
      422: err("Invalid review: every problem is listed in issues"),
      ...SAME_SITE_REFUSALS,
    },
  },
  {
    method: "get",
    path: "/compliance/risk",
    tag: "compliance",
    access: "privacy",
    ...ROUTE_TEXT["get /compliance/risk"],
    summary: "Risk scores of flagged users, contents and devices, highest first, keyset-paginated",
    query: RISK_QUERY,
    responses: {
      200: ok(
        "A page of scores",
        z.object({ items: z.array(ENTITY_RISK), next_cursor: NEXT_CURSOR }),
      ),
      400: err("Bad filter or cursor"),
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/compliance/risk/{entity_type}/{id}",
    tag: "compliance",
    access: "privacy",
    ...ROUTE_TEXT["get /compliance/risk/{entity_type}/{id}"],
    summary: "One entity's risk score, level and flag counts by rule and status",
    responses: {
      200: ok("The score", ENTITY_RISK),
      400: err("Not an entity type or id"),
      404: err("The entity has no flag"),
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/compliance/incidents",
    tag: "compliance",
    access: "stats",
    ...ROUTE_TEXT["get /compliance/incidents"],
    summary: "Anomaly incidents, newest first, filtered by state, status, series and time",
    query: INCIDENT_QUERY,
    responses: {
      200: ok("The incidents", z.object({ incidents: z.array(INCIDENT) })),
      400: err("Bad filter or range"),
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/compliance/incidents/{id}",
    tag: "compliance",
    access: "stats",
    ...ROUTE_TEXT["get /compliance/incidents/{id}"],
    summary: "One incident with its drill-down, related keys, exposure and history",
    responses: {
      200: ok("The incident", INCIDENT_WITH_HISTORY),
      404: err("No such incident (or not a numeric id)"),
      ...REFUSALS,
    },
  },
  {
    method: "patch",
    path: "/compliance/incidents/{id}",
    tag: "compliance",
    access: "privacy",
    ...ROUTE_TEXT["patch /compliance/incidents/{id}"],
    summary: "Review an incident: acknowledge, mute until a time, or resolve it with a reason",
    body: INCIDENT_REVIEW,
    responses: {
      200: ok("The incident after the change", INCIDENT_WITH_HISTORY),
      ...BODY_LIMITS,
      404: err("No such incident (or not a numeric id)"),
      422: err("Invalid review: every problem is listed in issues"),
      ...SAME_SITE_REFUSALS,
    },
  },
  {
    method: "get",
    path: "/compliance/maintenance",
    tag: "compliance",
    access: "stats",
    ...ROUTE_TEXT["get /compliance/maintenance"],
    summary: "Maintenance windows overlapping a range (default: the last 7 and next 30 days)",
    query: MAINTENANCE_QUERY,
    responses: {
      200: ok(
        "The windows, oldest first",
        z.object({ from: TIME, to: TIME, windows: z.array(MAINTENANCE_WINDOW) }),
      ),
      400: err("Bad range"),
      ...REFUSALS,
    },
  },
  {
    method: "post",
    path: "/compliance/maintenance",
    tag: "compliance",
    access: "privacy",
    ...ROUTE_TEXT["post /compliance/maintenance"],
    summary:
      "Record a maintenance window: no incident opens in it, its hours stay out of baselines",
    body: MAINTENANCE,
    responses: {
      201: ok("The window", MAINTENANCE_WINDOW),
      ...BODY_LIMITS,
      422: err("Invalid window: every problem is listed in issues"),
      ...SAME_SITE_REFUSALS,
    },
  },
  {
    method: "post",
    path: "/privacy/requests",
    tag: "privacy",
    access: "privacy",
    ...ROUTE_TEXT["post /privacy/requests"],
    summary:
      "File a deletion, access, do-not-track or opt-out request; a repeat returns the record",
    body: PRIVACY_REQUEST,
    responses: {
      202: ok("The request record (a deletion runs on in the background)", PRIVACY_RECORD),
      ...BODY_LIMITS,
      ...SAME_SITE_REFUSALS,
      422: err("Invalid request: every problem is listed in issues"),
    },
  },
  {
    method: "get",
    path: "/privacy/requests",
    tag: "privacy",
    access: "privacy",
    ...ROUTE_TEXT["get /privacy/requests"],
    summary: "Requests newest first, by status, type, or overdue",
    query: PRIVACY_LIST,
    responses: {
      200: ok(
        "A page of requests",
        z.object({
          items: z.array(PRIVACY_RECORD),
          next_cursor: NEXT_CURSOR,
        }),
      ),
      400: err("Bad filter"),
      ...SAME_SITE_REFUSALS,
    },
  },
  {
    method: "get",
    path: "/privacy/requests/{id}",
    tag: "privacy",
    access: "privacy",
    ...ROUTE_TEXT["get /privacy/requests/{id}"],
    summary: "One request with its status, deadline and result",
    responses: {
      200: ok("The record", PRIVACY_RECORD),
      400: err("Not a request id"),
      404: err("No such request"),
      ...SAME_SITE_REFUSALS,
    },
  },
  {
    method: "get",
    path: "/privacy/requests/{id}/export",
    tag: "privacy",
    access: "privacy",
    ...ROUTE_TEXT["get /privacy/requests/{id}/export"],
    summary: "Everything held about the user of an access request",
    responses: {
      200: ok("The export", z.object({ request: PRIVACY_RECORD, data: USER_EXPORT })),
      400: err("Not a request id"),
      404: err("No such access request"),
      ...SAME_SITE_REFUSALS,
    },
  },
  {
    method: "get",
    path: "/privacy/users/{user_id}/consent",
    tag: "privacy",
    access: "privacy",
    ...ROUTE_TEXT["get /privacy/users/{user_id}/consent"],
    summary: "A user's consent ledger: each change of consent state with its proof, and the " +
      "state in force at a given event time",
    // Checked by the route (seconds optional, years 0001-9999); described in openapi_text.ts.
    query: z.object({ at: z.string().optional() }),
    responses: {
      200: ok("The changes, the current state and the state at `at`", CONSENT),
      400: err("Bad user id or at"),
      ...SAME_SITE_REFUSALS,
    },
  },
  {
    method: "get",
    path: "/audit",
    tag: "operations",
    access: "admin",
    ...ROUTE_TEXT["get /audit"],
    summary: "Who read compliance and privacy data, and every refused request",
    query: AUDIT_QUERY,
    responses: {
      200: ok("A page of audit rows, newest first", AUDIT_PAGE),
      400: err("Bad filter"),
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/auth/whoami",
    tag: "operations",
    access: "any-token",
    ...ROUTE_TEXT["get /auth/whoami"],
    summary: "The calling token's name and role",
    responses: {
      200: ok("Name, role, and whether auth is on (anonymous admin when off)", WHOAMI),
      401: REFUSALS[401],
    },
  },
  {
    method: "get",
    path: "/auth/status",
    tag: "operations",
    access: "public",
    ...ROUTE_TEXT["get /auth/status"],
    summary: "Whether auth is on (so a page knows to ask for a token first)",
    responses: { 200: ok("auth: on or off", z.object({ auth: z.enum(["on", "off"]) })) },
  },
  {
    method: "get",
    path: "/metrics",
    tag: "operations",
    access: "metrics",
    ...ROUTE_TEXT["get /metrics"],
    summary: "Prometheus metrics",
    responses: {
      200: { description: "Prometheus text exposition format", contentType: "text/plain" },
      ...REFUSALS,
    },
  },
  {
    method: "get",
    path: "/healthz",
    tag: "operations",
    access: "public",
    ...ROUTE_TEXT["get /healthz"],
    summary: "The process answers",
    responses: { 200: ok("Always ok", z.object({ status: z.literal("ok") })) },
  },
  {
    method: "get",
    path: "/readyz",
    tag: "operations",
    access: "public",
    ...ROUTE_TEXT["get /readyz"],
    summary: "Database reachable, workers alive, flushes succeeding",
    responses: {
      200: ok("Ready", READINESS.extend({ status: z.literal("ready") })),
      503: ok("Degraded: problems lists why", READINESS.extend({ status: z.literal("degraded") })),
    },
  },
  {
    method: "get",
    path: "/openapi.json",
    tag: "operations",
    access: "public",
    ...ROUTE_TEXT["get /openapi.json"],
    summary: "This document",
    responses: { 200: ok("OpenAPI 3.1", OPENAPI) },
  },
  {
    method: "get",
    path: "/docs",
    tag: "operations",
    access: "public",
    ...ROUTE_TEXT["get /docs"],
    summary: "Interactive API reference",
    responses: { 200: { description: "HTML page", contentType: "text/html" } },
  },
  {
    method: "get",
    path: "/dashboard",
    tag: "operations",
    access: "public",
    ...ROUTE_TEXT["get /dashboard"],
    summary: "Dashboard page (its data comes from the API with the viewer's token)",
    responses: { 200: { description: "HTML page", contentType: "text/html" } },
  },
  {
    method: "get",
    path: "/dashboard/assets/{file}",
    tag: "operations",
    access: "public",
    ...ROUTE_TEXT["get /dashboard/assets/{file}"],
    summary: "Script, style and chart library of the dashboard",
    responses: {
      200: { description: "The asset", contentType: "text/javascript" },
      404: err("Not an asset of the dashboard"),
    },
  },
  {
    method: "get",
    path: "/docs/assets/{file}",
    tag: "operations",
    access: "public",
    ...ROUTE_TEXT["get /docs/assets/{file}"],
    summary: "Script and style of the reference page, from the swagger-ui-dist package",
    responses: {
      200: { description: "The asset", contentType: "text/javascript" },
      404: err("Not an asset of the page"),
    },
  },
];

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  // Input side: what a client sends; transforms (e.g. upper-casing) are not representable.
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" });
  return rest;
}

/** A parameter's description: the route's text for it, else its schema's own. */
function parameterText(route: RouteDoc, name: string, schema?: unknown): { description?: string } {
  const text = route.parameters?.[name] ??
    (schema as { description?: string } | undefined)?.description;
  return text === undefined ? {} : { description: text };
}

function parameters(route: RouteDoc): unknown[] {
  const inPath = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
    name: m[1],
    in: "path",
    required: true,
    ...parameterText(route, m[1]),
    schema: { type: "string" },
  }));
  const query = route.query === undefined ? [] : Object.entries(
    (jsonSchema(route.query).properties ?? {}) as Record<string, unknown>,
  ).map(([name, schema]) => ({
    name,
    in: "query",
    required: ((jsonSchema(route.query!).required ?? []) as string[]).includes(name) &&
      !(schema as { default?: unknown }).default,
    ...parameterText(route, name, schema),
    schema,
  }));
  return [...inPath, ...query];
}

/** The JSON schema of a route's body, its fields described by the route's `fields`. */
function bodySchema(route: RouteDoc & { body: z.ZodType }): Record<string, unknown> {
  const schema = jsonSchema(route.body);
  // An array body (a batch) describes the fields of each item.
  const object = (schema.type === "array" ? schema.items : schema) as {
    properties?: Record<string, Record<string, unknown>>;
  };
  for (const [name, text] of Object.entries(route.fields ?? {})) {
    const field = object.properties?.[name];
    if (field !== undefined) field.description = text;
  }
  return schema;
}

/** The OpenAPI 3.1 document of {@link ROUTE_DOCS}. */
export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of ROUTE_DOCS) {
    const roles = ROLES_OF[route.access];
    const operation: Record<string, unknown> = {
      tags: [route.tag],
      summary: route.summary,
      operationId: `${route.method}${
        route.path.replace(/[^A-Za-z0-9]+(.)?/g, (_, c) => c === undefined ? "" : c.toUpperCase())
      }`,
      description: `${
        roles.length === 0 ? "No token needed." : `Roles: ${roles.join(", ")} (when auth is on).`
      }\n\n${route.description}`,
      security: roles.length === 0 ? [] : [{ bearer: roles }],
      parameters: parameters(route),
      responses: Object.fromEntries(
        Object.entries(route.responses).map(([status, reply]) => [status, {
          description: reply.description,
          ...(reply.schema === undefined && reply.contentType === undefined ? {} : {
            content: {
              [reply.contentType ?? "application/json"]: {
                schema: reply.schema === undefined ? { type: "string" } : jsonSchema(reply.schema),
              },
            },
          }),
        }]),
      ),
    };
    if (route.body !== undefined) {
      operation.requestBody = {
        required: true,
        content: { "application/json": { schema: bodySchema({ ...route, body: route.body }) } },
      };
    }
    (paths[route.path] ??= {})[route.method] = operation;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "OTT compliance events pipeline",
      version: "1.0.0",
      description: INFO_DESCRIPTION,
    },
    servers: [{ url: "/" }],
    tags: TAGS.map((name) => ({ name, description: TAG_DESCRIPTIONS[name] })),
    components: {
      securitySchemes: {
        bearer: {
          type: "http",
          scheme: "bearer",
          description: "A token from API_TOKENS (role:name:secret); METRICS_TOKEN for /metrics",
        },
      },
    },
    paths,
  };
}

const ASSETS: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
};

const DOCS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>OTT pipeline API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="docs"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#docs", deepLinking: true });
</script>
</body>
</html>`;

/** `GET /openapi.json`, `GET /docs` and the page's assets, read from the swagger-ui-dist package. */
export function docsRoutes(): Hono {
  const app = new Hono();
  const document = JSON.stringify(openApiDocument());
  const cache = new Map<string, Uint8Array>();
  app.get("/openapi.json", (c) => c.body(document, 200, { "content-type": "application/json" }));
  app.get("/docs", (c) => c.html(DOCS_PAGE));
  app.get("/docs/assets/:file", async (c) => {
    const file = c.req.param("file");
    // Own keys only: `constructor` or `toString` must not look like assets.
    const type = Object.hasOwn(ASSETS, file) ? ASSETS[file] : undefined;
    if (type === undefined) {
      return c.json(
        { error: `Not found: asset ${JSON.stringify(file.slice(0, 64))}`, issues: [] },
        404,
      );
    }
    let bytes = cache.get(file);
    if (bytes === undefined) {
      const url = new URL(`../node_modules/swagger-ui-dist/${file}`, import.meta.url);
      try {
        bytes = await Deno.readFile(url);
      } catch {
        // The error names the server's own path: the answer does not.
        return c.json({
          error:
            `Cannot serve "${file}": the swagger-ui-dist package is missing; run \`deno install\``,
          issues: [],
        }, 503);
      }
      cache.set(file, bytes);
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": type,
      "cache-control": "public, max-age=86400",
    });
  });
  return app;
}
