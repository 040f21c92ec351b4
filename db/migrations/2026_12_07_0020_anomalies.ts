/**
 * Anomaly detection: the series the workers count per window (`anomaly_cube`, `anomaly_titles`,
 * `anomaly_qoe`, kept 2 days) and per hour (`*_hourly`, the baselines, kept `ANOMALY_BASELINE_WEEKS` + 1 weeks),
 * the hours an incident or a maintenance window keeps out of later baselines, the detector's
 * progress and lease, incidents with their history and outbox, and maintenance windows.
 *
 * Frozen in time: never import application code here.
 *
 * @module
 */
import { type Kysely, sql } from "kysely";

const CUBE = `platform text not null, region text not null, app_version text not null,
  subscription_plan text not null, events bigint not null default 0,
  errors bigint not null default 0, eu_events bigint not null default 0,
  eu_consented bigint not null default 0, viewers bigint not null default 0,
  sharing_flags bigint not null default 0`;
const CUBE_KEY = "platform, region, app_version, subscription_plan";
const TITLES = `content_id text not null, platform text not null, subscription_plan text not null,
  events bigint not null default 0, errors bigint not null default 0,
  viewers bigint not null default 0`;
const TITLES_KEY = "content_id, platform, subscription_plan";
const QOE = `content_id text not null, cdn text not null, subscription_plan text not null,
  views bigint not null default 0, vsf_technical bigint not null default 0,
  rebuffer_ms bigint not null default 0, watched_ms bigint not null default 0,
  startup_views bigint not null default 0, slow_startups bigint not null default 0`;
const QOE_KEY = "content_id, cdn, subscription_plan";

/** Adds the tables. */
export async function up(db: Kysely<unknown>): Promise<void> {
  for (
    const statement of [
      `create table anomaly_cube (window_start timestamptz not null, ${CUBE},
        primary key (window_start, ${CUBE_KEY}))`,
      `create table anomaly_cube_hourly (hour timestamptz not null, ${CUBE},
        primary key (hour, ${CUBE_KEY}))`,
      `create table anomaly_titles (window_start timestamptz not null, ${TITLES},
        primary key (window_start, ${TITLES_KEY}))`,
      `create table anomaly_titles_hourly (hour timestamptz not null, ${TITLES},
        primary key (hour, ${TITLES_KEY}))`,
      `create table anomaly_qoe (window_start timestamptz not null, ${QOE},
        primary key (window_start, ${QOE_KEY}))`,
      `create table anomaly_qoe_hourly (hour timestamptz not null, ${QOE},
        primary key (hour, ${QOE_KEY}))`,
      `create table anomaly_excluded_hours (series text not null, key text not null,
        hour timestamptz not null, primary key (series, key, hour))`,
      `create table anomaly_detector (id int primary key check (id = 1),
        judged_until timestamptz, owner text, lease_until timestamptz)`,
      `insert into anomaly_detector (id) values (1)`,
      `create table incidents (
        id bigserial primary key,
        series text not null,
        key text not null,
        kind text not null,
        state text not null default 'active' check (state in ('active', 'recovered')),
        status text not null default 'open'
          check (status in ('open', 'acknowledged', 'muted', 'resolved')),
        level text not null check (level in ('LOW', 'MEDIUM', 'HIGH')),
        started_at timestamptz not null,
        opened_at timestamptz not null,
        last_window timestamptz not null,
        recovered_at timestamptz,
        baseline text not null,
        expected double precision not null,
        observed double precision not null,
        band_low double precision not null,
        band_high double precision not null,
        z double precision not null,
        windows int not null default 1,
        viewers bigint not null default 0,
        drill_down jsonb not null default '[]',
        related jsonb not null default '[]',
        exposure jsonb,
        muted_until timestamptz,
        reason text,
        revision int not null default 1,
        alerted_at timestamptz,
        updated_at timestamptz not null default now())`,
      `create unique index incidents_active_idx on incidents (series, key) where state = 'active'`,
      `create index incidents_started_idx on incidents (started_at desc, id desc)`,
      `create table incident_history (
        incident_id bigint not null references incidents (id) on delete cascade,
        revision int not null,
        at timestamptz not null default now(),
        actor text not null,
        change jsonb not null,
        primary key (incident_id, revision))`,
      `create table incident_outbox (
        incident_id bigint not null references incidents (id) on delete cascade,
        revision int not null,
        reason text not null,
        attempts int not null default 0,
        next_attempt_at timestamptz not null default now(),
        delivered_at timestamptz,
        last_error text,
        primary key (incident_id, revision))`,
      `create index incident_outbox_due_idx on incident_outbox (next_attempt_at)
        where delivered_at is null`,
      `create table maintenance_windows (
        id bigserial primary key,
        starts_at timestamptz not null,
        ends_at timestamptz not null check (ends_at > starts_at),
        series text,
        key text,
        reason text not null,
        created_by text not null,
        created_at timestamptz not null default now())`,
    ]
  ) await sql.raw(statement).execute(db);
}

/** Drops them. */
export async function down(db: Kysely<unknown>): Promise<void> {
  for (
    const table of [
      "maintenance_windows",
      "incident_outbox",
      "incident_history",
      "incidents",
      "anomaly_detector",
      "anomaly_excluded_hours",
      "anomaly_qoe_hourly",
      "anomaly_qoe",
      "anomaly_titles_hourly",
      "anomaly_titles",
      "anomaly_cube_hourly",
      "anomaly_cube",
    ]
  ) await sql.raw(`drop table ${table}`).execute(db);
}
