/**
 * The prose of the API reference: the document's introduction (auth, errors, time ranges,
 * pagination), each tag's description (the alert webhook, privacy and legal background) and each
 * route's description, with the descriptions of its parameters and body fields. `routes/openapi.ts`
 * builds the OpenAPI document from the zod schemas and takes its text from here; descriptions are
 * Markdown, which the reference page (`GET /docs`) renders.
 *
 * @module
 */

/** The tags routes are grouped under, in the order the reference shows them. */
export const TAGS = ["ingest", "analytics", "compliance", "privacy", "operations"] as const;
/** One of {@link TAGS}. */
export type Tag = typeof TAGS[number];

/** The prose of one route. */
export interface RouteText {
  /** What the route does, its parameters, answers, errors and examples (Markdown). */
  description: string;
  /** Descriptions of its path and query parameters, by name. */
  parameters?: Record<string, string>;
  /** Descriptions of its request body's fields, by name (of each item for an array body). */
  fields?: Record<string, string>;
}

/** `info.description`: what applies to every route. */
export const INFO_DESCRIPTION = `
Smart TV playback telemetry: ingest, analytics, compliance flags and privacy requests. All bodies
are JSON with snake_case fields.

This document is served by the server itself: \`GET /openapi.json\` (OpenAPI 3.1, no token) is built
from the zod schemas the routes validate with (\`routes/openapi.ts\`, its prose in
\`routes/openapi_text.ts\`): request bodies and queries come from the validating schemas, and each
route names the roles that may call it as bearer scopes. \`GET /docs\` renders it (Swagger UI from the
\`swagger-ui-dist\` npm package, served from \`node_modules\`: it works with no internet). A test
validates the document against the OpenAPI schema, checks that every route the app registers is
documented, and nothing more, that every route has a description, and that real answers parse with
the documented schemas.

## Authentication and roles

\`API_TOKENS=ingest:tv-fleet:<secret>,analyst:ana:<secret>,privacy:dpo:<secret>,admin:ops:<secret>\`
gives every caller a name and one role (the secret is everything after the second colon). Send it as
\`Authorization: Bearer <secret>\`.

| role      | may use                                                       |
| --------- | ------------------------------------------------------------- |
| \`ingest\`  | \`POST /events\`, \`POST /events/batch\`                          |
| \`analyst\` | \`/stats/*\`; GET of \`/compliance/incidents*\`, \`/compliance/maintenance\` |
| \`privacy\` | \`/stats/*\`, \`/compliance/*\`, \`/privacy/*\`                     |
| \`admin\`   | everything, including \`GET /audit\` and \`/metrics\`             |
| any       | \`GET /auth/whoami\` → \`{"name":"dpo","role":"privacy","auth":"on"}\` |

\`INGEST_TOKENS\` and \`READ_TOKENS\` (deprecated, warned at start) still work: tokens of roles
\`ingest\` and \`privacy\`, named \`ingest-1\`, \`read-1\`, ... An entry with an unknown role, a missing part or a secret
used twice (also across the three variables) stops the server at start; the message names the entry
by position, never its secret. Secrets are compared by SHA-256 digest against every configured
token, in constant time.

Without a valid bearer token the answer is 401; a token of another role gets 403 naming the roles
allowed. \`/healthz\`, \`/readyz\`, \`/auth/status\`, \`/openapi.json\`, \`/docs\`, \`/dashboard\` and their
assets need no token; \`/metrics\` takes an admin token or \`METRICS_TOKEN\` (see it). With no token
configured at all, auth is off: everyone is \`anonymous\` with role \`admin\`, and the server logs a
warning at start.

## Request ids and the audit trail

Every request gets an id: the client's \`X-Request-Id\` (up to 128 of \`A-Z a-z 0-9 . _ -\`, other
characters dropped) or a new UUID, echoed in the response's \`X-Request-Id\`. Every request to
\`/compliance/*\`, \`/privacy/*\` and \`/audit\`, and every refused one (401/403) anywhere, writes an audit
row (see \`GET /audit\`).

## Request bodies

- Every route that reads a body needs \`Content-Type: application/json\` (\`POST /events/batch\` also
  takes NDJSON); any other type is refused with **415** before the route runs, so a plain HTML form
  or a \`text/plain\` fetch from another site cannot reach a handler.
- A body must be UTF-8: a byte sequence that does not decode is refused with **400** (a lenient
  decoder would merge ids that differ only in such bytes).
- A body larger than \`MAX_BODY_BYTES\` (default 1 MiB) gets **413**; one that does not arrive within
  \`BODY_READ_TIMEOUT_MS\` (default 30 s) gets **408**; a connection that closes mid-body gets 400.
- With auth **off**, \`/privacy/*\` (every method) and the body methods (POST, PUT, PATCH, DELETE) on
  \`/compliance/*\` refuse a request whose \`Origin\` header names another site with **403**: a web page
  must not drive privacy requests or flag reviews through a viewer's browser. Requests without
  \`Origin\` (curl, servers) and from the server's own origin (or the \`Host\` it was reached by, behind
  a proxy) pass. With auth on, the tokens protect these routes; set \`API_TOKENS\` to call them from
  other sites.

## Errors

Every error answer has the same shape:

\`\`\`json
{ "error": "Invalid event: see issues", "issues": [{ "path": "event_type", "message": "..." }] }
\`\`\`

\`error\` says what went wrong and what to do, in a sentence; \`issues\` lists every problem of a body
(422) or of the query and path parameters (400), each naming its field or parameter (\`(root)\` for
the whole) and quoting what was received (JSON-escaped, cut after 64 characters). Other errors
have empty \`issues\`. An unknown path answers 404 (\`Not found: GET /x\`). Nothing a client sends
answers 500; an unexpected failure does ("Internal error: the request was not processed; retry
later") and is logged with the request id.

## Time ranges

The analytics reads and the compliance counts take optional \`from\` and \`to\`: ISO-8601 on a UTC
hour boundary (a date alone, \`2026-11-30\`, is its midnight UTC), \`from\` inclusive, \`to\` exclusive,
e.g. \`?from=2026-11-30T00:00:00Z&to=2026-11-30T12:00:00Z\`. An unaligned bound is refused with 400
naming the nearest aligned ones; \`from\` must be before \`to\`; years 0001-9999. Without them (or
blank) the answer is all-time. Ranges select by **event time** (the hour an event happened in), not
by arrival; the answer echoes \`from\` and \`to\` (null when open). \`GET /stats/timeseries\` needs both,
aligned to its bucket; \`GET /audit\` takes any instant.

## Pagination

Lists are newest first (scores highest first) and keyset-paginated: pass the answer's \`next_cursor\`
back as \`cursor\` for the next page; it is \`null\` on the last page. A cursor no previous page gave is
refused with 400. \`limit\` sets the page size (see each route for its default and bounds). A blank
query parameter (\`?rule=&level=\`, as a form with blank fields sends it) is no filter.
`;

/** Each tag's description: what applies to its routes. */
export const TAG_DESCRIPTIONS: Record<Tag, string> = {
  ingest: `
Playback events from TVs (ingest role). A 202 means the events are stored in the log; they reach
the aggregates, the rules and the consent ledger within about one flush interval. An event counts in
the UTC hour of its own \`timestamp\` (event time), whenever it arrives.
`,
  analytics: `
Aggregates by event time (analyst, privacy or admin role), served from PostgreSQL and fresh within
about one flush interval. Every read takes the optional \`from\` / \`to\` range of UTC hours (see _Time
ranges_); without it the answer is all-time.

- \`plays\` counts PLAY events (starts and resumes); \`error_rate\` = ERROR events / all events of the
  key (0 with no event); an \`error_code\` on a type other than ERROR is stored, not counted as an
  error.
- \`unique_viewers\` is the number of distinct users with a playback event in the range, estimated
  with HyperLogLog sketches (2^12 registers per hour and scope, merged over the range; standard
  error 1.6%, exact to within a fraction of a percent below about 10,000 viewers). The sketches hold
  no user id, so the figure survives raw-event retention and erasure.
- \`is_eu\` comes from \`GDPR_REGIONS\`.

**Watch time.** Per (user, device, content): PLAY starts (or restarts) a segment, PAUSE / STOP /
ERROR ends it, SEEK and non-playback types change nothing. A segment's length is the event-time
difference, capped at \`MAX_SEGMENT_MS\` (default 4 h); an end event older than the open segment's
start (a late event of an earlier segment) leaves that segment alone and adds nothing; a segment
whose end never arrives before the user is passivated is not counted. Watch time is credited to the
content and region of the event that ends the segment.

**Upgraded from the all-time tables.** The \`2026_11_30_0003_hourly_buckets\` migration re-derived
every hourly bucket from \`raw_events\` (late events included, which the old tables left out). Watch
time cannot be re-derived without replaying sessions: the old all-time watch time per title and
region is kept in a "before upgrade" bucket at 1970-01-01T00:00Z, which all-time reads include and
ranged reads do not.
`,
  compliance: `
Compliance flags, their review and risk scores (privacy or admin role). A flag is one risk signal
raised by a rule, with its evidence (rule id and version, thresholds, window, observed values and a
sample of the triggering event ids); it is never an automated decision (GDPR Art. 22): a person
reviews it (\`PATCH /compliance/flags/{id}\`). With auth off, the body methods here refuse a foreign
\`Origin\` (403).

Anomaly incidents (\`/compliance/incidents\`) and maintenance windows (\`/compliance/maintenance\`):
the detector watches 5-minute series of event volume, error rate and EU consent share per key and
opens an incident when a key leaves its baseline; analysts may read them, reviews and new windows
need the privacy role.

## Alert webhooks

With \`ALERT_WEBHOOK_URL\` set, a flag is POSTed there when it first reaches \`ALERT_MIN_LEVEL\`
(default \`HIGH\`) and again when it escalates or re-opens (a new revision). The flush that writes the
flag writes its alert row (\`alert_outbox\`, unique per flag id and revision) in the same transaction,
so a crash neither loses an alert nor makes one up; a sender on each node claims due rows
(\`for update skip locked\`), posts them and marks them delivered. Delivery is at least once: the
\`Idempotency-Key\` header (and \`idempotency_key\` field) is \`<flag id>:<revision>\`, so a receiver
drops repeats. A receiver that is down is retried with backoff (1 s doubling to 5 min per alert).

\`\`\`
POST <ALERT_WEBHOOK_URL>
Content-Type: application/json
Idempotency-Key: 812:1
X-Alert-Timestamp: 1764500000
X-Alert-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with ALERT_WEBHOOK_SECRET>

{"idempotency_key":"812:1","flag_id":"812","revision":1,"rule":"privacy","rule_version":1,
 "level":"HIGH","status":"open","entity_type":"user","entity_id":null,"user_id":null,
 "region":"DE","occurred_at":"...","flagged_events":1,"reason":"EU event \\"e-9\\" ...","evidence":{...}}
\`\`\`

To verify a delivery, compute the HMAC-SHA256 of \`X-Alert-Timestamp\`, a dot and the raw body with
\`ALERT_WEBHOOK_SECRET\` and compare it with the hex after \`sha256=\`. The payload names no user (user
id, user entity id and the user id inside reason and evidence are left out or replaced by \`[user]\`)
unless \`ALERT_INCLUDE_USER=true\`; it is built when it is sent, so an erased user's alert carries the
pseudonym. \`/metrics\` has \`alerts_total{outcome}\` and \`alert_outbox_pending\`.

Anomaly incidents go to the same URL, signed the same way, on opening, level change and recovery
(and at most hourly while active), at or above \`ALERT_MIN_LEVEL\`, with \`"type": "incident"\` (flag
alerts carry \`"type": "flag"\`), the key \`incident-<id>:<revision>\`, a \`reason\` (\`opened\`,
\`level\`, \`update\`, \`recovered\`) and the incident as \`GET /compliance/incidents/{id}\` shows it
(its band as \`band_low\` and \`band_high\`).
`,
  privacy: `
Privacy requests and consent records (privacy or admin role). A privacy request is a record with a
deadline, a status and a result. With auth off, every route here refuses a foreign \`Origin\` (403).

**Global Privacy Control.** A \`Sec-GPC: 1\` header on \`POST /events\` or \`POST /events/batch\` is an
opt-out of sale and sharing for the user of each accepted event: recorded once per user as an
\`opt_out_sale_share\` request with \`"source": "gpc"\`, \`completed\`, \`ccpa\`, due at receipt (an erased
user's under the pseudonym; a user with an opt-out on record keeps it). The 202 then has
\`"gpc": true\`. Each instance remembers the last 100,000 users it recorded, so only a new user costs
an insert (one per request, after the events are stored); if that insert fails, the failure is
logged, the events stay accepted, and the next request with the header retries. A GPP string whose
US section says the user opted out of sale or sharing (or sent GPC) files the same record once, with
\`"source": "gpp"\` (see \`POST /events\`); a TV's \`do_not_track: true\` files a \`do_not_track\` request
with \`"source": "event"\`, \`received\`, for review.

**Legal mapping.** What the service does, and what stays the operator's job:

| feature | serves | the operator still |
| --- | --- | --- |
| request records, \`due_at\`, \`overdue=true\` | GDPR Art. 12(3) (one month), CCPA 45 days | verifies the requester's identity; extends deadlines where the law allows |
| deletion | GDPR Art. 17, CCPA right to delete | erases copies outside this service (backups, warehouses fed from the API) |
| access export | GDPR Art. 15, CCPA right to know | sends the export to the person securely |
| do-not-track / opt-out of sale or sharing | CCPA/CPRA opt-out | stops the sharing itself; this service records it |
| flags with evidence, reviewed by a person | GDPR Art. 22 (no decision by machine alone) | decides; a flag is a signal, never an automated decision |
| audit trail (\`/audit\`) | GDPR Art. 30 records, accountability | keeps the records of processing activities |
| request records kept (pseudonymised after erasure) | CCPA 24-month request records | deletes them when its own retention says so (only answered access requests expire here, after \`PRIVACY_REQUEST_RETENTION_DAYS\`, 730 days) |
`,
  operations: `
Health, metrics, the audit trail, token checks, this reference and the dashboard.
`,
};

/** The fields of one event, as `POST /events` and each item of `POST /events/batch` take it. */
const EVENT_FIELDS: Record<string, string> = {
  event_id:
    "Unique id of the event, 1-128 characters, no control characters, opaque (no e-mail or " +
    "IP address: 422). A retry with the same id is a duplicate, not a new event.",
  user_id: "1-128 characters, no control characters, opaque (no e-mail or IP address: 422), and " +
    "not of the form of an erased user's pseudonym (`erased-` and 24 hex digits).",
  device_id: "1-128 characters, no control characters, opaque, and not of the form of an erased " +
    "user's pseudonym.",
  content_id: "1-128 characters, no control characters, opaque (no e-mail or IP address: 422).",
  event_type: "PLAY, PAUSE, SEEK, STOP, ERROR, or any `^[A-Za-z][A-Za-z0-9_]{0,63}$` (any case; " +
    "stored upper).",
  timestamp: "When it happened: ISO-8601 with a zone (`Z` or `+01:00`), not more than " +
    "`MAX_FUTURE_SKEW_MS` (5 min) ahead, not before 2000, not older than `MAX_EVENT_AGE_MS` " +
    "(7 days).",
  region: "ISO 3166-1 alpha-2 (`DE`), a subdivision (`US-CA`), `UK` (stored as `GB`) or `EU` " +
    "(country unknown); any case.",
  is_eu: "Optional; stored for review but never trusted: `GDPR_REGIONS` decides from the region.",
  has_consent: "Whether the user consented; required unless `consent` is sent, then ignored (the " +
    "decoded signal decides).",
  consent:
    'Optional consent signal: `{"tcf": "<TC string>"}`, `{"gpp": "<GPP string>", "gpp_sid": ' +
    "[...]}` (the applicable section ids; absent: every section in the string) or " +
    '`{"purposes": {"storage": true, "measurement": true}}` (TCF purposes by name or id, at ' +
    "most 32). Strings of at most 8,192 characters; one that does not decode grants " +
    "nothing.",
  ip_address: "IPv4 or IPv6; stored only as HMAC-SHA256 and a /24 (IPv4) or /48 (IPv6) prefix.",
  error_code:
    "Optional (absent = null), 1-64 characters; required for ERROR; on other types stored, " +
    "not counted as an error. IP and e-mail addresses in it are replaced.",
  subscription_plan: "Optional, 1-64 characters; a dimension of the aggregates " +
    "(`group_by=subscription_plan`).",
  extra_metadata:
    "Optional object or null, at most 4 KiB of UTF-8 JSON, nested at most 4 levels deep; " +
    "only keys in `METADATA_KEYS` are kept, IP and e-mail addresses in it replaced.",
  do_not_track:
    "Optional: the TV's do-not-track / GPC setting; `true` files a `do_not_track` privacy " +
    'request (`"source": "event"`) for review.',
};

/** Each route's prose, by `method path` as the document names it. */
export const ROUTE_TEXT = {
  "post /events": {
    description: `
Sends one event with \`Content-Type: application/json\`; the answer is 202 once the event is stored
in the log:

\`\`\`json
{
  "event_id": "e-123",
  "user_id": "u-42",
  "device_id": "tv-7",
  "content_id": "movie-9",
  "event_type": "PLAY",
  "timestamp": "2026-11-23T20:15:00.000Z",
  "region": "DE",
  "is_eu": true,
  "has_consent": true,
  "ip_address": "203.0.113.7",
  "error_code": null,
  "extra_metadata": { "platform": "tizen", "app_version": "5.2.0" },
  "do_not_track": false
}
\`\`\`

→ \`202 {"accepted":1,"event_id":"e-123","ignored_fields":[]}\`

The timestamp above is only an example: an event counts in the UTC hour of its own \`timestamp\`, so
an old example still counts (in its hour), and one older than \`MAX_EVENT_AGE_MS\` (7 days) gets 422
(drop it, do not retry). The rule for each field is in the request schema below.

**No personal data in the clear.** No IP or e-mail address a client sends is stored: \`ip_address\`
is kept only as HMAC-SHA256 and a /24 (IPv4) or /48 (IPv6) prefix. \`extra_metadata\` keeps only the
top-level keys in \`METADATA_KEYS\` (default \`app_version\`, \`platform\`, \`os_version\`, \`model\`,
\`network_type\`, \`player_version\`, \`drm\`, \`cdn\`; set the variable to replace the list); other keys
are dropped and named in the 202 as \`extra_metadata.<key>\` (\`STRICT_SCHEMA=true\`: 422 "is not an
allowed metadata key"). In the kept metadata (strings and object keys at any depth), \`error_code\`
and \`subscription_plan\`, every IPv4 address, IPv6 address (\`::1\`, \`fe80::1%eth0\`,
\`::ffff:192.0.2.1\`, ...) and e-mail address (also with \`%40\`) is replaced by \`[ip]\` or \`[email]\`,
the rest of the text kept: \`"E_CONN 10.1.2.3"\` is stored as \`"E_CONN [ip]"\`. Values under a key
ending in \`_version\` keep IP-like text (\`10.0.0.1\` is a version there), e-mail addresses are still
replaced; versions such as \`1.2.3\` or \`v1.2.3.4\` and times such as \`12:30\` are never touched. Ids
must be opaque: an \`event_id\`, \`user_id\`, \`device_id\` or \`content_id\` holding an e-mail or IP
address gets 422 ("ids must be opaque: ..."); send a pseudonymous id instead.

**Unknown fields.** Unknown top-level fields are dropped (never stored: they may hold personal
data) and named in the 202 (\`"ignored_fields": ["plan_x"]\`); \`STRICT_SCHEMA=true\` refuses them with
422 instead.

**Consent signals.** Besides \`has_consent\`, an event may carry \`consent\`, a signal from the TV's
consent management platform, decoded at ingest with the IAB's own libraries
(\`@iabtechlabtcf/core\`, \`@iabgpp/cmpapi\`):

\`\`\`json
{ "consent": { "tcf": "<TCF v2 TC string>" } }
{ "consent": { "gpp": "<GPP string>", "gpp_sid": [2] } }
{ "consent": { "purposes": { "storage": true, "measurement": true } } }
\`\`\`

- With \`consent\`, \`has_consent\` is optional and ignored: the decoded signal decides, and the 202
  says so in \`consent_notes\` ("has_consent is ignored: the decoded consent signal decides").
  Without \`consent\`, \`has_consent\` is required.
- A string that does not decode is accepted and grants nothing; the 202 names it in
  \`consent_notes\` ("consent.tcf does not decode: ...: treated as no consent").
- The privacy rule takes consent as given when every purpose in \`CONSENT_PURPOSES\` is consented to
  (default TCF purposes 1 \`storage\` and 8 \`measurement\`; consent only, legitimate interest does not
  count) and, when \`CONSENT_VENDOR_ID\` is set, that vendor's consent in the TC string (or the GPP
  string's TCF EU section) too. Named purposes name no vendor. Without a signal, \`has_consent\` stands
  for the needed purposes.
- A GPP string whose US section (national or a state's) says the user opted out of sale or sharing,
  or sent Global Privacy Control (or whose US Privacy section says \`OptOutSale\` Y), files one
  \`opt_out_sale_share\` privacy request for the user, \`"source": "gpp"\`, completed, \`ccpa\`; no later
  string withdraws it, and a user with an opt-out on record keeps that record.
- The decoded signal is stored with the event, never the string (only its SHA-256, as proof), and
  each change of the user's consent state becomes a row of the consent ledger
  (\`GET /privacy/users/{user_id}/consent\`).

**Global Privacy Control.** A \`Sec-GPC: 1\` header records an opt-out of sale and sharing for the
event's user (see the privacy tag), and the 202 then has \`"gpc": true\`.

| status              | when                                                                                |
| ------------------- | ----------------------------------------------------------------------------------- |
| 202                 | accepted                                                                            |
| 400                 | malformed JSON, a body that is not UTF-8                                            |
| 408                 | the body did not arrive within \`BODY_READ_TIMEOUT_MS\`                               |
| 401 / 403           | missing or unknown token / token of another role                                   |
| 413                 | body over \`MAX_BODY_BYTES\`                                                          |
| 415                 | content type other than \`application/json\`                                          |
| 422                 | schema violations, or an event older than \`MAX_EVENT_AGE_MS\`                        |
| 503 + \`Retry-After\` | backpressure (workers busy, or database down and buffers full), replaying the log after a worker restart, or shutting down |
`,
    fields: EVENT_FIELDS,
  },
  "post /events/batch": {
    description: `
Sends up to \`MAX_BATCH_EVENTS\` (default 500) events and \`MAX_BODY_BYTES\` (1 MiB) as a JSON array
(\`Content-Type: application/json\`) or NDJSON (\`application/x-ndjson\` or \`application/ndjson\`, one
event per line). Each event follows the rules of \`POST /events\`. Valid items are kept even when
others fail; the answer lists the rejected ones by index:

\`\`\`json
{
  "accepted": 99,
  "rejected": [
    {
      "index": 4,
      "issues": [{ "path": "timestamp", "message": "must be an ISO-8601 date-time with a zone" }]
    }
  ],
  "ignored": [{ "index": 3, "fields": ["plan_x"] }]
}
\`\`\`

\`ignored\` names the unknown fields dropped per item (\`STRICT_SCHEMA=true\` rejects the item instead),
\`consent_notes\` what ingest decided about an item's consent signal, and \`"gpc": true\` says a
\`Sec-GPC: 1\` header recorded opt-outs for the users of the accepted events. An NDJSON line that is
not JSON is rejected on its own (path \`(root)\`); an event older than \`MAX_EVENT_AGE_MS\` is rejected
like any invalid item.

| status              | when                                                                                |
| ------------------- | ----------------------------------------------------------------------------------- |
| 202                 | the valid part of the batch is stored                                               |
| 400                 | malformed JSON, a JSON body that is not an array, a body that is not UTF-8          |
| 408                 | the body did not arrive within \`BODY_READ_TIMEOUT_MS\`                               |
| 401 / 403           | missing or unknown token / token of another role                                   |
| 413                 | body over \`MAX_BODY_BYTES\`, more than \`MAX_BATCH_EVENTS\` events                     |
| 415                 | content type other than JSON or NDJSON                                              |
| 422                 | an empty batch, or no valid event (the answer still lists \`rejected\`)               |
| 503 + \`Retry-After\` | backpressure, replaying the log after a worker restart, or shutting down            |
`,
    fields: EVENT_FIELDS,
  },
  "get /stats/summary": {
    description: `
Totals of everything over the optional range of event-time hours (all-time without one):

\`\`\`json
{
  "from": null,
  "to": null,
  "total_events": 19620,
  "events_by_type": { "PLAY": 7012, "PAUSE": 3105, "SEEK": 2410, "STOP": 5790, "ERROR": 1303 },
  "plays": 7012,
  "watch_time_ms": 391234000,
  "errors": 1303,
  "error_rate": 0.0664,
  "unique_viewers": 1890,
  "late_events": 12,
  "duplicate_events": 198
}
\`\`\`

\`total_events\` counts every unique accepted event, late ones included (\`late_events\` says how many
of them arrived later than \`ALLOWED_LATENESS_MS\` behind the watermark); \`duplicate_events\` is
all-time whatever the range (a retry is about arrival, not event time). \`events_by_type\` has every
playback type (0 when none) and the other types seen. See the analytics tag for \`plays\`,
\`error_rate\`, \`unique_viewers\` and watch time.
`,
  },
  "get /stats/content/{contentId}": {
    description: `
One title over the optional range: \`content_id\`, \`plays\`, \`watch_time_ms\`, \`events\`, \`errors\`,
\`error_rate\`, \`unique_viewers\`, \`from\`, \`to\` and \`top_regions\`, the 10 regions with most plays:

\`\`\`json
{ "content_id": "movie-9", "plays": 420, "top_regions": [{ "region": "DE", "plays": 120, "events": 300 }] }
\`\`\`

404 only when the title was never seen: a known title with no events in the range answers zeros. A
content id that is empty, longer than 128 characters, has control characters or is not well-formed
Unicode gets 400.
`,
    parameters: {
      contentId: "The title's `content_id` as events send it.",
    },
  },
  "get /stats/region/{region}": {
    description: `
One region over the optional range: \`region\`, \`is_eu\`, \`plays\`, \`watch_time_ms\`, \`events\`,
\`errors\`, \`error_rate\`, \`unique_viewers\`, \`from\`, \`to\`, and

\`\`\`json
{
  "errors_by_code": { "DRM_LICENSE_FAILED": 12, "other": 3 },
  "device_mix": [{ "platform": "tizen", "events": 800, "share": 0.41 }]
}
\`\`\`

\`device_mix\` is the share of the region's events per TV platform, taken from
\`extra_metadata.platform\` (\`unknown\` when absent). \`errors_by_code\` and \`device_mix\` list the top 10
and sum the rest into \`other\`. \`is_eu\` comes from \`GDPR_REGIONS\`. 404 when the region was never
seen; a region that is not a region code gets 400.
`,
    parameters: {
      region:
        "ISO 3166-1 alpha-2 (`DE`), a subdivision (`US-CA`), `UK` (means `GB`) or `EU` (country " +
        "unknown); any case.",
    },
  },
  "get /stats/qoe": {
    description: `
Quality of experience of the views that **started** in the optional range (a view counts in the
hour of its first event, however long it lasts), filtered by \`content_id\`, \`region\`,
\`platform\`, \`app_version\` and \`cdn\`. The definitions follow Mux Data's and CTA-2066
("Streaming Quality of Experience Events, Properties and Metrics"):

- **View** (Mux "view", CTA-2066 session): one attempt to play one title on one TV. Events with a
  \`view_id\` form that view. Others are grouped per TV: a view opens at \`PLAY_REQUEST\`, \`PLAY\`
  or \`FIRST_FRAME\` and ends at \`STOP\`, a fatal \`ERROR\`, an event of another title on the TV, or
  \`VIEW_IDLE_MS\` (30 min) without an event. It keeps the dimensions of its first event.
- **Video startup time**: \`FIRST_FRAME\` - \`PLAY_REQUEST\`, minus ad breaks between them
  (\`AD_BREAK_START\`..\`AD_BREAK_END\`). Views without both events are started but not measured
  (\`views_not_measured\`; a client without \`FIRST_FRAME\` has \`PLAY\` count as the start). p50 and
  p95 come from a histogram of 10% buckets: within 4.9% of the exact value.
- **Exits before video start** (EBVS): the view ended before its first frame with no fatal error.
  As Mux does, exits within 1 s are left out (\`exits_under_1s_not_counted\`). A view still open is
  not an exit yet.
- **Video start failures** (VSF): a fatal \`ERROR\` before the first frame. Codes in
  \`BUSINESS_ERROR_CODES\` (entitlement, geo-block, concurrent streams, parental lock by default;
  exact codes or \`PREFIX*\`) are business failures (Conviva VSF-B), the rest technical (VSF-T).
- **Playback failures** (VPF): a fatal \`ERROR\` after the first frame. An \`ERROR\` with
  \`fatal: false\` is a warning: counted in \`warnings\` (and in \`errors\` elsewhere), failing nothing.
- **Rebuffering**: \`REBUFFER_START\`..\`REBUFFER_END\` after the first frame. A stall starting within
  1 s of a \`SEEK\` is seek time (\`seek_stall_ms\`), not rebuffering, as CTA-2066 separates them.
  \`rebuffer_ratio\` = rebuffer time / (playing time + rebuffer time).
- **Playing time**: from the first frame, less pauses, stalls and ad breaks; an open view counts up to
  its last event. **Average bitrate** is weighted by playing time (\`bitrate_kbps\` of
  \`FIRST_FRAME\`, \`RENDITION_CHANGE\`, \`HEARTBEAT\`); **upscale share** is the playing time with
  \`rendition_height\` below \`player_height\`.

Late events recount their view: a late \`FIRST_FRAME\` turns an exit into a start (the exit is
retracted), so totals never depend on arrival order. Events later than \`ALLOWED_LATENESS_MS\` count
in the totals but change no view. Every rate names its denominator.
`,
  },
  "get /stats/timeseries": {
    description: `
One metric per bucket over a range:

\`\`\`
GET /stats/timeseries?metric=events&bucket=1h&from=2026-11-30T00:00:00Z&to=2026-11-30T12:00:00Z
\`\`\`

\`\`\`json
{
  "metric": "events",
  "bucket": "1h",
  "from": "2026-11-30T00:00:00.000Z",
  "to": "2026-11-30T12:00:00.000Z",
  "series": [{ "key": null, "points": [{ "t": "2026-11-30T10:00:00.000Z", "value": 120 }] }]
}
\`\`\`

- \`metric\`: \`events\`, \`plays\`, \`errors\`, \`error_rate\` (sum of errors / sum of events per bucket),
  \`watch_time_ms\`, \`unique_viewers\` (the hourly sketches of each bucket merged), or a QoE metric
  (below). \`bucket\`: \`1h\` (default) or \`1d\`; \`from\` and \`to\` are required and aligned to the
  bucket (a UTC day for \`1d\`); at most 1,500 points per series.
- \`group_by\`: \`region\`, \`content_id\`, \`platform\`, \`app_version\`, \`error_code\` (metric \`errors\`
  only), \`subscription_plan\`, \`cdn\` (QoE metrics only); one series per key (\`key\` null when not
  grouped), the \`limit\` largest by total (default 10, at most 50); QoE metrics rank their groups by
  views over the range, whatever the metric.
- \`device_id\` filters additive metrics on its own (no grouping, no other filter);
  \`unique_viewers\` can be filtered by one \`content_id\` or \`region\`, or grouped by either. Other
  combinations answer 400 with the reason, as does every bad parameter.
- Every bucket of the range has a point (zeros included; null for a QoE metric whose denominator is
  zero there); an additive metric's points over a range add up to \`/stats/summary\` (or the
  title's, region's stats) over the same range.

**QoE metrics** read the QoE rows (\`qoe_hourly\` for \`1h\`, \`qoe_daily\` for \`1d\`, and the startup
histograms beside them) and compute each bucket exactly as \`GET /stats/qoe\` computes that bucket
(same rounding), for the views that started in it: a view is counted in the hour (day) of its first
event, under that event's title, region, platform, app version, plan and CDN, however long it lasts.

| metric             | per bucket                                                         | null when       |
| ------------------ | ------------------------------------------------------------------ | --------------- |
| \`views\`            | views started                                                      | never (0)       |
| \`startup_p50\`      | median startup time in ms, from the merged histogram (within 4.9%) | none measured   |
| \`startup_p95\`      | 95th percentile of the startup time in ms, likewise                | none measured   |
| \`ebvs_rate\`        | exits before video start / views                                   | views = 0       |
| \`vsf_rate\`         | video start failures (business + technical) / views                | views = 0       |
| \`vpf_rate\`         | playback failures / started views                                  | no view started |
| \`rebuffer_ratio\`   | rebuffer_ms / (playing_ms + rebuffer_ms)                           | no playing time |
| \`avg_bitrate_kbps\` | bitrate weighted by playing time (bitrate_kbps_ms / bitrate_ms)    | no bitrate sent |

Rates keep 4 decimals, startup times and bitrate whole numbers. A \`1d\` point pools the day's views
(its \`views\` are the sum of its hours; its rates are not the mean of the hourly rates). They filter by \`content_id\`,
\`region\` and \`platform\` and group by \`region\`, \`content_id\`, \`platform\`, \`app_version\`,
\`subscription_plan\` or \`cdn\`; \`device_id\` (not a QoE dimension) and \`error_code\` answer 400, as does
\`group_by=cdn\` with a non-QoE metric.

It counts by event time, so late events fill in the hour they happened rather than showing the
arrival rate (that is \`ingest_events_total\` in \`/metrics\`).
`,
    parameters: {
      metric: "What to count per bucket (required); `views` to `avg_bitrate_kbps` are QoE " +
        "metrics (see the table above).",
      bucket: "`1h` (default) or `1d`.",
      from: "Start (inclusive), required: ISO-8601 on a UTC hour (on a UTC day when bucket is " +
        "`1d`), e.g. 2026-11-30T10:00:00Z.",
      to: "End (exclusive), required, after `from`, aligned like `from`; at most 1,500 buckets " +
        "from it.",
      content_id: "Only this title.",
      region: "Only this region (any case).",
      device_id:
        "Only this TV; additive metrics only (not the QoE metrics), with no grouping and " +
        "no other filter.",
      platform: "Only this platform (`extra_metadata.platform`, any case).",
      group_by: "One series per value of this dimension; `error_code` with metric `errors` only, " +
        "`cdn` with the QoE metrics only.",
      limit: "With `group_by`: the number of largest series returned, 1-50 (default 10).",
    },
  },
  "get /compliance/summary": {
    description: `
Flag and flagged-event counts over the optional range:

\`\`\`json
{
  "from": null,
  "to": null,
  "flagged_events_by_rule": { "privacy": 812, "retention": 95, "account_sharing": 240, "content_quality": 61 },
  "flags_by_rule": { "privacy": 800, "retention": 90, "account_sharing": 12, "content_quality": 55 },
  "flags_by_level": { "HIGH": 950, "MEDIUM": 7, "LOW": 0 },
  "flags_by_status": { "open": 940, "acknowledged": 5, "escalated": 2, "dismissed": 9, "resolved": 1 }
}
\`\`\`

A flag is one risk signal; \`flagged_events_by_rule\` counts the events each rule flagged (for
windowed rules: the events that arrived while their entity was over the threshold). Flagged events
are kept per hour, rule and region apart from the flag rows, so ranges work whatever a flag's own
granularity; \`flags_by_*\` count flags by the event time they occurred at.
`,
  },
  "get /compliance/events": {
    description: `
The flags with their evidence, newest first, keyset-paginated (\`next_cursor\` is null on the last
page). \`from\` / \`to\` bound the event time a flag occurred at (UTC hours, see _Time ranges_); a
blank parameter is no filter, an unknown one is refused (400).

\`\`\`
GET /compliance/events?rule=&level=&region=&status=&user_id=&entity_id=&from=&to=&limit=50&cursor=
\`\`\`

\`\`\`json
{
  "items": [
    {
      "id": 118,
      "rule": "account_sharing",
      "rule_version": 1,
      "level": "HIGH",
      "entity_type": "user",
      "entity_id": "u-17",
      "event_id": "e-9912",
      "user_id": "u-17",
      "region": "BR",
      "is_eu": false,
      "occurred_at": "...",
      "raised_at": "...",
      "flagged_events": 3,
      "reason": "User \\"u-17\\" was seen from 5 regions and 5 networks within 60 minutes",
      "status": "open",
      "assignee": null,
      "revision": 1,
      "evidence": {
        "rule": "account_sharing",
        "rule_version": 1,
        "thresholds": {
          "window_ms": 3600000,
          "max_regions": 2,
          "high_regions": 4,
          "max_ips": 3,
          "high_ips": 6
        },
        "window": { "start": "...", "end": "..." },
        "observed": {
          "regions": ["BR", "DE", "FR", "JP", "US-NY"],
          "distinct_regions": 5,
          "distinct_ips": 5
        },
        "event_ids": ["e-9901", "e-9905", "e-9912"]
      }
    }
  ],
  "next_cursor": "117"
}
\`\`\`
`,
    parameters: {
      rule: "Only flags of this rule.",
      level: "Only flags at this level (any case).",
      region: "Only flags raised by an event of this region (any case).",
      status: "Only flags in this review status.",
      user_id: "Only flags about this user.",
      entity_id: "Only flags about this entity (user, content or device id).",
      from: "Occurred at or after this UTC hour (ISO-8601).",
      to: "Occurred before this UTC hour (ISO-8601).",
      limit: "Page size, 1-500 (default 50).",
      cursor: "The `next_cursor` of the previous page.",
    },
  },
  "get /compliance/regions": {
    description: `
Flagged events per region and rule over the optional range, with groupings:

\`\`\`json
{
  "from": null,
  "to": null,
  "regions": [
    {
      "region": "DE",
      "is_eu": true,
      "flagged_events": { "privacy": 120, "retention": 4, "account_sharing": 9, "content_quality": 2 }
    }
  ],
  "groups": { "eu": { "...": 0 }, "non_eu": { "...": 0 }, "us_ca": { "...": 0 }, "non_us_ca": { "...": 0 } }
}
\`\`\`

A flag counts in the region of the event that raised it. \`is_eu\` and the EU group come from
\`GDPR_REGIONS\`; \`us_ca\` counts California (\`US-CA\`), \`non_us_ca\` every other region.
`,
  },
  "get /compliance/consent/summary": {
    description: `
What the consent ledger says per region over the optional range: how many users were seen, the
share whose latest consent state in the range grants each TCF purpose, and the share that consents
as the privacy rule decides it (\`CONSENT_PURPOSES\`, by name in \`required_purposes\`, plus
\`CONSENT_VENDOR_ID\`'s consent when it is set); and how many events carried a consent signal (TCF,
GPP or named purposes) rather than only \`has_consent\`. A user counts once, in the region of their
latest state in the range (a state holds from its event time until the user was last seen in it).
Regions are sorted by region; a share is null when its count is 0.
`,
  },
  "get /compliance/flags/{id}": {
    description: `
One flag as \`/compliance/events\` lists it, plus \`history\`, oldest first:
\`{id, actor_name, actor_role, from_status, to_status, reason, assignee, level, evidence, at}\`. A
review decision names the caller's token (\`anonymous\` while auth is off); an escalation names the
actor \`pipeline\` and keeps the level and evidence it replaced. A non-numeric id gets 400, an unknown
one 404.
`,
    parameters: {
      id: "The flag's numeric id.",
    },
  },
  "patch /compliance/flags/{id}": {
    description: `
Records a review decision (GDPR Art. 22: a person decides, the engine only flags). Every flag has a
\`status\` (\`open\` when raised, then \`acknowledged\`, \`escalated\`, \`dismissed\` or \`resolved\`), an
\`assignee\` and a \`revision\`.

\`\`\`json
{ "status": "dismissed", "reason": "Family travelling, ticket 12", "assignee": "dpo-2", "revision": 1 }
\`\`\`

- \`reason\` is required for \`dismissed\` and \`resolved\`.
- \`assignee\` absent keeps it, \`null\` clears it.
- An optional \`revision\` (the one the reviewer saw) answers 409 if the evidence has changed since:
  read the flag again and decide on the new evidence.

The status change and a history row naming the caller's token (\`anonymous\` while auth is off) are
written in one transaction; the answer is the flag as \`GET /compliance/flags/{id}\` shows it. The
evidence is the latest snapshot at the flag's level: a sighting at a higher level replaces level,
reason and evidence, increments \`revision\`, writes the replaced level and evidence to history (actor
\`pipeline\`, reason \`escalated to HIGH\`), and re-opens a \`dismissed\` or \`resolved\` flag. A dismissed
flag otherwise stays dismissed.

Invalid bodies (unknown fields included) answer 422 with \`issues\`, an unknown id 404, a non-numeric
one 400. The body needs \`Content-Type: application/json\` (415) and must be UTF-8 (400); with auth
off, a foreign \`Origin\` is refused (403).
`,
    parameters: {
      id: "The flag's numeric id.",
    },
    fields: {
      status: "The decision: `open`, `acknowledged`, `escalated`, `dismissed` or `resolved`.",
      reason: "Why, 1-1000 characters (trimmed; newlines allowed, other control characters not); " +
        "required for `dismissed` and `resolved`.",
      assignee: "Who handles it, 1-128 characters; absent keeps the current one, `null` clears it.",
      revision: "The revision the reviewer saw; when the flag has a newer one the answer is 409.",
    },
  },
  "get /compliance/risk": {
    description: `
Flagged entities, highest score first (ties by type, then id), keyset-paginated with an opaque
\`next_cursor\` (null on the last page). A blank parameter is no filter, an unknown one is refused
(400).

\`\`\`
GET /compliance/risk?entity_type=user&level=&limit=50&cursor=
\`\`\`

Scores are computed from the flags when read, so a review decision counts at once:

\`\`\`
score = Σ rule_weight × level_weight × 0.5 ^ (age_days / 30)     rounded to 2 decimals
\`\`\`

summed over the entity's flags that are not closed: a \`dismissed\` flag (not a risk) and a
\`resolved\` one (handled) count 0, while \`open\`, \`acknowledged\` and \`escalated\` flags count in full.
Rule weights: privacy 1, retention 1.5, account_sharing 1, content_quality 1; level weights: LOW 1,
MEDIUM 3, HIGH 10. \`age_days\` runs from the event time the flag occurred at to now (a flag dated
ahead of the clock counts as new), so a flag's weight halves every 30 days. The entity's \`level\` is
HIGH from a score of 20, MEDIUM from 5, LOW below (also an entity whose flags are all closed, at
score 0). \`open_flags\` counts the flags not closed, the ones the score counts; \`first_flag_at\` and
\`last_flag_at\` are the earliest and latest event times of its flags, closed ones included. (The
\`entity_risk\` table the flushes write keeps the highest level each entity reached, whatever the
reviews; the access export shows it.)
`,
    parameters: {
      entity_type: "Only users, contents or devices.",
      level: "Only entities at this level (any case).",
      limit: "Page size, 1-200 (default 50).",
      cursor: "The opaque `next_cursor` of the previous page.",
    },
  },
  "get /compliance/risk/{entity_type}/{id}": {
    description: `
One entity's score, computed as \`GET /compliance/risk\` explains; 404 when it has no flag, 400 for an
entity type other than \`user\`, \`content\` or \`device\`, or an id that is not 1-128 characters without
control characters.

\`\`\`json
{
  "entity_type": "user",
  "entity_id": "u-17",
  "score": 8.2,
  "level": "MEDIUM",
  "flags_by_rule": { "privacy": 0, "retention": 1, "account_sharing": 1, "content_quality": 0 },
  "flags_by_status": { "open": 2, "acknowledged": 0, "escalated": 0, "dismissed": 0, "resolved": 0 },
  "first_flag_at": "...",
  "last_flag_at": "...",
  "open_flags": 2
}
\`\`\`
`,
    parameters: {
      entity_type: "`user`, `content` or `device`.",
      id: "The user, content or device id.",
    },
  },
  "get /compliance/incidents": {
    description: `
Incidents of the anomaly detector, newest first (by start). An incident is one key of one series
(\`volume:platform\` = \`tizen\`, \`errors:content_id\` = \`movie-9\`, \`consent:region\` = \`DE\`) whose
5-minute windows left its moving baseline 2 windows in a row. The expected value of a window is the
median of the same time of week over the last 4 weeks, scaled by the key's recent level (observed /
seasonal over the last hour); a window leaves the baseline when its modified z-score
(Iglewicz-Hoaglin: the deviation over 1.4826 × the median absolute deviation of recent residuals)
reaches 3.5 in the harmful direction (fewer events, more errors, less consent) **and** the change is
at least a minimum (a count halved, a rate doubled and 2 points up, a share halved and 2 points
down), so a quiet key's noise opens nothing. The incident recovers after 3 calm windows in a row
(|z| < 2). Windows inside a maintenance window open nothing, and an incident's windows stay out of
later baselines.

\`state\` (\`active\`, \`recovered\`) is the detector's; \`status\` (\`open\`, \`acknowledged\`, \`muted\`,
\`resolved\`) is a person's (\`PATCH /compliance/incidents/{id}\`).

\`\`\`json
{
  "incidents": [{
    "id": "17", "series": "volume:platform", "key": "tizen", "kind": "count",
    "state": "active", "status": "open", "level": "HIGH",
    "started_at": "2026-12-07T20:05:00.000Z", "opened_at": "2026-12-07T20:10:00.000Z",
    "last_window": "2026-12-07T20:40:00.000Z", "recovered_at": null,
    "baseline": "history", "expected": 1200, "observed": 310, "band": [1010, 1390], "z": -9.4,
    "windows": 8, "viewers": 1120,
    "drill_down": [{ "dimensions": { "app_version": "7.1" }, "expected": 700, "observed": 20,
      "share": 0.76, "text": "app_version 7.1: 76% of the drop" }],
    "related": [{ "series": "volume:region", "key": "DE", "opened_at": "...", "expected": 400, "observed": 150 }],
    "exposure": { "currency": "EUR", "viewers_by_plan": { "basic": 800, "premium": 320 },
      "monthly_revenue": 12148.8, "unpriced_plans": [] },
    "muted_until": null, "reason": null, "revision": 2, "updated_at": "..."
  }]
}
\`\`\`

- \`drill_down\` lists which values of the other dimensions (and pairs of them) explain the change,
  largest share first: for a platform, its app versions and regions.
- \`related\` lists keys of the same family moved by the same fault (an app version's region), which
  attach here instead of opening incidents of their own.
- \`exposure\` is the affected viewers by plan (for a drop, the viewers missing against past weeks;
  for a rate or share, every viewer of the key) × the plan's monthly price (\`PLAN_PRICES\`, in
  \`PLAN_CURRENCY\`): the monthly revenue of the subscribers who met the fault, an **exposure, not a
  loss**. Plans without a price are in \`unpriced_plans\`; null without \`PLAN_PRICES\`.

\`from\` / \`to\` take any ISO-8601 instant (not only hours) and keep the incidents that overlap them:
started before \`to\`, and still active or recovered at or after \`from\`. A blank parameter is no
filter; an unknown one or a bad value is refused (400). Analysts may read incidents.
`,
    parameters: {
      state: "Only `active` or only `recovered` incidents.",
      status:
        "Only incidents in this review status: `open`, `acknowledged`, `muted` or `resolved`.",
      series: "Only incidents of this series, e.g. `volume:platform`.",
      from: "Only incidents active at or after this instant (ISO-8601 with a zone).",
      to: "Only incidents started before this instant (ISO-8601 with a zone).",
      limit: "How many, 1-500 (default 100).",
    },
  },
  "get /compliance/incidents/{id}": {
    description: `
One incident as \`GET /compliance/incidents\` lists it, plus \`history\`: one row per revision, oldest
first, \`{revision, at, actor, change}\`. The detector (actor \`detector\`) writes \`opened\` (revision
1), \`level\` when the level changes, \`update\` at most once an hour while it lasts, and
\`recovered\`; each of these alerts, with the idempotency key \`incident-<id>:<revision>\`. A review
(actor: the caller's token name, \`anonymous\` while auth is off) writes \`review\` with its status,
reason and \`muted_until\`, and alerts nobody. An unknown or non-numeric id gets 404.
`,
    parameters: {
      id: "The incident's numeric id.",
    },
  },
  "patch /compliance/incidents/{id}": {
    description: `
Records a person's decision about an incident; the answer is the incident as
\`GET /compliance/incidents/{id}\` shows it, its history ending with the review.

\`\`\`json
{ "status": "muted", "muted_until": "2026-12-08T06:00:00Z", "reason": "CDN switch tonight" }
\`\`\`

- \`resolved\` needs a \`reason\`.
- \`muted\` needs \`muted_until\`, a time after now; another status refuses it and clears the mute.
- A \`reason\` is kept until another one replaces it.

The status is a person's; the detector's \`state\` goes on regardless (resolving does not recover
an incident). Invalid bodies (unknown fields included) answer 422 with \`issues\`, an
unknown or non-numeric id 404. The body needs \`Content-Type: application/json\` (415) and must be
UTF-8 (400); with auth off, a foreign \`Origin\` is refused (403). Needs the privacy role.
`,
    parameters: {
      id: "The incident's numeric id.",
    },
    fields: {
      status: "The decision: `open`, `acknowledged`, `muted` or `resolved`.",
      reason: "Why, 1-500 characters (trimmed; newlines allowed, other control characters not); " +
        "required for `resolved`.",
      muted_until: "ISO-8601 date-time with a zone, after now: required for `muted`, refused " +
        "otherwise.",
    },
  },
  "get /compliance/maintenance": {
    description: `
The maintenance windows that overlap \`[from, to)\`, oldest first; without \`from\` the range starts
7 days ago, without \`to\` it ends 30 days ahead. Both take any ISO-8601 instant; the answer echoes
the range used. Analysts may read them.
`,
    parameters: {
      from: "Start (inclusive), ISO-8601 with a zone; default 7 days ago.",
      to: "End (exclusive), ISO-8601 with a zone; default 30 days ahead.",
    },
  },
  "post /compliance/maintenance": {
    description: `
Records a maintenance window (201 with it): no incident opens in it for the keys it covers, and its
hours stay out of later baselines, so planned work neither alerts nor teaches the detector that an
outage is normal. Without \`series\` it covers every series; with \`series\` and no \`key\`, every key
of that series.

\`\`\`json
{ "starts_at": "2026-12-08T02:00:00Z", "ends_at": "2026-12-08T04:00:00Z",
  "series": "volume:platform", "key": "webos", "reason": "webOS store update" }
\`\`\`

Invalid bodies answer 422 with \`issues\`. Needs the privacy role; with auth off, a foreign
\`Origin\` is refused (403).
`,
    fields: {
      starts_at: "Start (inclusive), ISO-8601 date-time with a zone.",
      ends_at: "End (exclusive), after `starts_at` and at most 31 days after it.",
      series: "Only this series (e.g. `volume:platform`); absent: every series.",
      key: "Only this key of `series` (1-128 characters); needs `series`.",
      reason: "Why, 1-500 characters.",
    },
  },
  "post /privacy/requests": {
    description: `
Files a privacy request; the answer is its record:

\`\`\`
POST /privacy/requests {"user_id": "u-42", "type": "deletion", "jurisdiction": "gdpr"}
\`\`\`

\`\`\`json
{
  "id": "17", "user_id": "erased-0123456789abcdef01234567", "type": "deletion", "source": "api",
  "jurisdiction": "gdpr", "status": "in_progress", "received_at": "...", "due_at": "...",
  "completed_at": null, "overdue": false, "result": null, "is_repeat": false
}
\`\`\`

- \`type\`: \`deletion\` (erasure), \`access\` (export: completed at once, see
  \`GET /privacy/requests/{id}/export\`), \`do_not_track\` (recorded and completed; it reaches the
  user's rules in log order), \`opt_out_sale_share\` (CCPA/CPRA "do not sell or share": recorded and
  completed; events after it are not violations by themselves).
- \`jurisdiction\`: \`gdpr\` (due one calendar month after receipt) or \`ccpa\` (45 days); default
  \`PRIVACY_JURISDICTION\` (\`gdpr\`).
- A repeat of a request on record for the same user and type answers the existing record with
  \`"is_repeat": true\` (an erased user's repeat too, found through the keyed hash). Access requests
  are answered anew each time. A \`do_not_track\` request on record from a TV's setting
  (\`"source": "event"\`) becomes the API's: a person's own request cannot be turned off by the TV.
- A deletion names the user by pseudonym from the start, and runs on in the background; a pass that
  cannot finish is retried with backoff (30 s doubling to 30 min) and the request is marked \`failed\`
  after a day. \`result\` then holds what it did per table.

**What a deletion does.** From the 202 on, the user is known only as an HMAC-SHA256 of the id
(\`erased_subjects\`, key \`PSEUDONYM_SECRET\`; unset, a key the database generated for itself, which
whoever holds a dump also holds: set it in production). Every later event from the user is stored
and counted under a pseudonym (\`erased-\` + 24 hex digits), with its device id and IP hash replaced
by the pseudonym too, and is flagged by the retention rule under that pseudonym. The request travels
through the log in order with the user's events: the user's actor drops its state (sessions, regions
and networks seen, requests) after every event accepted before it. Then the erasure runs in passes
(wait for the log appends accepted before the deletion to commit, flush the workers, erase, repeat
until nothing is left; a restart resumes it):

| data | after the erasure |
| --- | --- |
| the user's raw events (\`raw_events\`) | deleted, once every shard's checkpoint is past them (the log still serves shards that are behind) |
| ids of those events | md5 tombstones in \`erased_events\` for \`MAX_EVENT_AGE_MS\`: a TV retrying one gets a duplicate, not new |
| flags about the user (privacy, retention, sharing) | kept (the compliance history stays countable) under the pseudonym, with the user's event ids removed |
| the user's risk row (\`entity_risk\`) | deleted |
| hourly rows and flags of the user's TVs | moved under the pseudonym (merged) |
| the user's consent ledger | kept under the pseudonym: the proof of consent stays, the person does not |
| privacy requests and audit rows naming the user | name the pseudonym |
| anonymous aggregates (per title, region, hour, type) | kept: they count events, not people, and unique viewers are HyperLogLog sketches that hold no ids |

With the redis log, each pass also deletes the user's entries from every shard stream (events and
duplicate marks once the stream's shard has applied them, the privacy request entry itself at once),
whichever node owns the shard; the request completes when none is left (\`log_entries\` in its
result). Other nodes learn the erased hashes from the database within three heartbeats, and the
passes run until no raw row or stream entry of the user is left.

The body needs \`Content-Type: application/json\` (415) and must be UTF-8 (400); unknown fields are
refused (422). With auth off, a foreign \`Origin\` is refused (403).
`,
    fields: {
      user_id: "The user's id as events send it, 1-128 characters, no control characters.",
      type: "`deletion`, `access`, `do_not_track` or `opt_out_sale_share`.",
      jurisdiction: "`gdpr` (due in one calendar month) or `ccpa` (45 days); default " +
        "`PRIVACY_JURISDICTION`.",
    },
  },
  "get /privacy/requests": {
    description: `
The requests on record, newest first, keyset-paginated (\`next_cursor\` for the next page). \`status\`
is \`received\`, \`in_progress\`, \`completed\` or \`failed\`; \`overdue=true\` lists the open ones past
\`due_at\`; \`result\` holds per-table counts of what a request did. A blank parameter is no filter; a
bad one gets 400 with the reason.

\`\`\`
GET /privacy/requests?status=&type=&overdue=true&limit=&cursor=
\`\`\`
`,
    parameters: {
      status: "Only requests in this status.",
      type: "Only requests of this type.",
      overdue: "`true`: only open requests past their `due_at`.",
      limit: "Page size, 1-500 (default 50).",
      cursor: "The `next_cursor` of the previous page.",
    },
  },
  "get /privacy/requests/{id}": {
    description: `
One request with its status, deadline (\`due_at\`, \`overdue\`) and \`result\`. An id that is not 1-18
digits gets 400, an unknown one 404.
`,
    parameters: {
      id: "The request's numeric id.",
    },
  },
  "get /privacy/requests/{id}/export": {
    description: `
The answer to an access request: every event (with its IP only as hash and prefix, and its decoded
consent signal, never the string), flag (with its review status and the decisions about it: who,
when, why), request, risk level and consent ledger row (\`consent_ledger\`) held about that user, and
nothing about anyone else. It is read when asked, so it holds what is kept now (raw events only as
far back as \`RAW_EVENTS_RETENTION_DAYS\`). 404 for an unknown id or a request of another type, 400
for an id that is not 1-18 digits.
`,
    parameters: {
      id: "The numeric id of an access request.",
    },
  },
  "get /privacy/users/{user_id}/consent": {
    description: `
The user's consent ledger (GDPR Art. 7(1): being able to demonstrate consent): each change of their
consent state in event-time order, with the proof it was recorded with.

\`\`\`
GET /privacy/users/u-42/consent?at=2026-11-30T10:15:00Z
\`\`\`

- A state is what one event reported: its decoded \`consent\` signal (\`source\` \`tcf\`, \`gpp\` or
  \`purposes\`: the purposes granted by name, the vendor's consent, a GPP opt-out of sale or sharing,
  the CMP id and version, the TCF policy version and the SHA-256 of the string), or without one its
  \`has_consent\` (\`source\` \`has_consent\`). \`has_consent\` in each state is the privacy rule's decision
  (\`CONSENT_PURPOSES\`, consent only, plus \`CONSENT_VENDOR_ID\` when set).
- \`changes\` holds a row each time the state differs from the one before it in event time (the first
  included), at most 1,000 rows read (\`is_truncated\` when there are more: the earliest are shown);
  a repeat of the same state is not a change. \`current\` is the latest state (\`null\` with none).
- A late event of another state is placed at its event time, and the latest state is then recorded
  again after it (\`carried\`), so the state after it stays right.
- With \`at\` (an ISO-8601 date-time with a zone), \`state_at\` is the state in force at that event time
  (\`null\` before the first); a bad \`at\` gets 400.
- A state is kept for \`CONSENT_RETENTION_DAYS\` (default 1,825, five years) after it was last seen
  (\`retained_days\`). An erased user's ledger is kept under the pseudonym: ask with the old id and
  the answer names the pseudonym. The audit row names the user as its subject.
`,
    parameters: {
      user_id: "The user's id as events send it (1-128 characters, no control characters; 400 " +
        "otherwise).",
      at: "Optional ISO-8601 date-time with a zone: also answer the state in force at that event " +
        "time.",
    },
  },
  "get /audit": {
    description: `
The audit trail, newest first. Every request to \`/compliance/*\`, \`/privacy/*\` and \`/audit\`, and
every refused one (401/403) anywhere, writes a row: time, request id, token name and role
(\`unauthenticated\` / \`none\` without a valid token), method, path, query (values of parameters named
like \`token\`, \`secret\`, \`key\` redacted; path and query cut at 256 characters), status, the
\`user_id\` from the query, path or a privacy request body (an erased user's pseudonym, both then and
for rows written before the erasure), the client's network prefix (\`/24\` or \`/48\` of the peer, the
proxy's behind one: never the raw address) and a count. Never a secret or a header. Identical
refusals (same source, route pattern, status and actor) in one UTC minute fold into one row whose
\`count\` grows, so a flood of bad tokens cannot flood the table.

\`\`\`
GET /audit?actor=dpo&from=2026-11-30T00:00:00Z&to=2026-12-01T00:00:00Z&limit=100&cursor=...
\`\`\`

\`\`\`json
{
  "entries": [{
    "id": 7, "at": "...", "request_id": "...", "actor_name": "dpo", "actor_role": "privacy",
    "method": "GET", "path": "/compliance/events", "query": "", "status": 200,
    "subject_user_id": null, "source": "203.0.113.0/24", "count": 1
  }],
  "next_cursor": "1764496800000-7"
}
\`\`\`

Pass \`next_cursor\` back as \`cursor\` for the next page (\`null\` on the last). A bad or unknown
parameter gets 400. The server deletes rows older than \`AUDIT_RETENTION_DAYS\` (365) at start and
then hourly (at most 100,000 rows per run, in batches of 1,000).
`,
    parameters: {
      actor: "Only rows of this token name (1-64 letters, digits, `_ . -`).",
      from: "Rows at or after this instant (ISO-8601 with a zone).",
      to: "Rows before this instant (ISO-8601 with a zone).",
      limit: "Page size, 1-1000 (default 100).",
      cursor: "The `next_cursor` of the previous page.",
    },
  },
  "get /auth/whoami": {
    description: `
The calling token's name and role, for a page that shows only what the role may read:
\`{"name":"dpo","role":"privacy","auth":"on"}\`. Any valid token may call it; with auth off the
caller is \`anonymous\` with role \`admin\`.
`,
  },
  "get /auth/status": {
    description: `
\`{"auth":"on"}\` or \`{"auth":"off"}\`, with no token, so a page knows whether to ask for a token
first.
`,
  },
  "get /metrics": {
    description: `
Prometheus text format (prom-client). Open while no token is configured at all; otherwise it needs
an \`admin\` token or the \`METRICS_TOKEN\` (which opens nothing else). A \`METRICS_TOKEN\` set with auth
otherwise off still protects it. The main thread owns the registry: workers report their flushes in
the status they send with every acknowledgement, and worker gauges are read from the region at
scrape time.

- \`ingest_events_total{result}\`: events sent to ingest, each counted once. \`rejected\`: failed
  validation (a 422 on \`POST /events\`, the \`rejected\` list of \`POST /events/batch\`); a request
  refused as a whole (400, 413, 415, 503) counts no event, see its status in the next metric.
  \`duplicate\`: a retry of a stored event; \`late\`: behind the watermark by more than the allowed
  lateness; \`accepted\`: the rest. A late duplicate is a \`duplicate\` (it is not counted at all). What
  the main thread can know depends on \`QUEUE\`: \`postgres\` (default) is exact; \`memory\` counts
  duplicates as \`accepted\`/\`late\`, since only the workers recognise them (they are in
  \`/stats/summary\`); \`redis\` counts every acknowledged event as \`accepted\`, since the append script
  decides lateness and duplicates without telling.
- \`http_request_duration_seconds{route,method,status}\`: answer time by route pattern
  (\`/stats/content/:contentId\`, never the raw path); refusals carry the guarding pattern
  (\`/events/*\`), unmatched paths \`/*\`.
- \`flush_duration_seconds\`: duration of each worker flush attempt with something to write, failed
  ones too.
- \`flush_rows_total{table}\`: committed \`raw_events\` rows (0 with a durable log, which stores them
  itself) and \`flags\` rows.
- \`flush_failures_total\`: flush attempts rolled back or fenced.
- \`flags_raised_total{rule,level}\`: flag rows committed; an escalation in a later flush counts again
  at its new level.
- \`worker_pending_events{worker}\`: events a worker applied and has not flushed yet.
- \`worker_batches_in_flight{worker}\`: batches posted to a worker and not yet acknowledged.
- \`worker_entities{worker}\` and \`worker_heap_used_bytes{worker}\`: users, titles and TVs a worker
  holds in memory, and its V8 heap in use (live state plus garbage not yet collected), as of its
  last status; \`/readyz\` lists both per worker (\`entities\`, \`heap_used_mb\`).
- \`worker_flush_failing{worker}\`: 1 while a worker's last flush failed.
- \`log_append_groups_total{path}\`: postgres-log append transactions by path: \`copy\` (PostgreSQL, the
  fast path) or \`insert\` (PGlite, or a group holding a possible retry).
- \`log_lag_events\`: events in the log not yet applied by a worker (buffered in the region or in
  unacknowledged batches); log pages a restarted worker has yet to replay are not included.
- \`cluster_shard_lag_events\`, \`cluster_stalled_shards\`, \`cluster_stepped_down\` (redis log only):
  entries waiting in the streams of the shards this node holds; held shards whose checkpoint has
  not moved for 5 x \`LEASE_MS\` while entries wait, or that its workers have not taken; 1 while
  the node has left the cluster because it cannot reach PostgreSQL. \`/readyz\` lists the
  stalled shards (\`stalled_shards\`) and reports them as a problem.
- \`privacy_requests{status}\` and \`privacy_requests_overdue\`: requests on record by status, and open
  ones past \`due_at\` (read from the database at scrape time).
- \`privacy_erasure_retries_total\`: deletion erasures that could not finish and were scheduled to run
  again.
- \`alerts_total{outcome}\` (\`delivered\`, \`failed\`) and \`alert_outbox_pending\`: alert webhook attempts
  and alerts not delivered yet.
- \`process_resident_memory_bytes\`, \`process_heap_used_bytes\`, \`process_heap_total_bytes\`,
  \`process_external_memory_bytes\`: from \`Deno.memoryUsage()\`. prom-client's default collector reads
  \`/proc/self/*\`, which Deno refuses without \`--allow-all\`, and reports 0 under the server's
  permissions, so it is not used.
- \`process_cpu_user_seconds_total\`, \`process_cpu_system_seconds_total\`, \`process_cpu_seconds_total\`:
  CPU time of the process (all threads), \`process_start_time_seconds\`, \`process_uptime_seconds\`.
`,
  },
  "get /healthz": {
    description: `
\`200 {"status":"ok"}\` while the process runs (liveness); no token.
`,
  },
  "get /readyz": {
    description: `
\`200\` with \`"status":"ready"\`, or \`503\` with \`"status":"degraded"\` and the \`problems\` (database
unreachable within 2 s, a worker dead or failing to restart, flushes failing, draining, and in a
cluster its membership problems), plus the log backend, the event-time watermark and per worker its
batches in flight, pending events, entities held and heap in use. No token: for load balancers and
orchestrators.
`,
  },
  "get /openapi.json": {
    description: `
This document: OpenAPI 3.1, built at start from the zod schemas the routes validate with. No token.
`,
  },
  "get /docs": {
    description: `
An interactive reference of this document (Swagger UI). Its script and style come from the
server's own \`swagger-ui-dist\` npm package (\`/docs/assets/...\`), so it works with no internet. No
token; calls made from it send the token entered under Authorize.
`,
  },
  "get /dashboard": {
    description: `
A page for operators and privacy reviewers (no CDN: its chart library, uPlot, comes from npm). It
refreshes every 10 s and shows, for the chosen range (24 h or 7 days): totals (events, plays, error
rate, unique viewers), events and error rate per hour, the top titles, regions and platforms by
errors, the compliance summary by rule, the newest HIGH flags with Acknowledge / Dismiss buttons
(\`PATCH /compliance/flags/{id}\`; dismissing asks for the reason), and open privacy requests with
their deadlines (a request with none sorts last).

The page holds no data and needs no token to load; every number comes from the API with the
viewer's token. With auth on (\`GET /auth/status\`) it asks for a token once, keeps it in
\`sessionStorage\` (this tab only, never in a URL), asks \`GET /auth/whoami\` for the role and shows
only the panels that role may read: an analyst sees the analytics panels, a privacy officer or admin
everything. The "events per hour" chart comes from \`GET /stats/timeseries?metric=events\` (analyst
role): it counts by event time, so late events fill in the hour they happened rather than showing
the arrival rate (that is \`ingest_events_total\` in \`/metrics\`, admin only).
`,
  },
  "get /dashboard/assets/{file}": {
    description: `
The dashboard's script (\`app.js\`), style (\`style.css\`) and chart library (\`uPlot.iife.min.js\`,
\`uPlot.min.css\`, from the \`uplot\` npm package). Any other name is 404; 503 when the npm package is
missing (run \`deno install\`). No token.
`,
    parameters: {
      file: "`app.js`, `style.css`, `uPlot.iife.min.js` or `uPlot.min.css`.",
    },
  },
  "get /docs/assets/{file}": {
    description: `
The reference page's script (\`swagger-ui-bundle.js\`) and style (\`swagger-ui.css\`), from the
\`swagger-ui-dist\` npm package; cached for a day. Any other name is 404; 503 when the package is
missing (run \`deno install\`). No token.
`,
    parameters: {
      file: "`swagger-ui-bundle.js` or `swagger-ui.css`.",
    },
  },
} satisfies Record<string, RouteText>;
