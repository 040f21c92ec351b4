/**
 * Delivers alerts from the outboxes to `ALERT_WEBHOOK_URL`: flag alerts (`type: "flag"`, idempotency
 * key `<flag id>:<revision>`) and incident alerts (`type: "incident"`, key
 * `incident-<id>:<revision>`), JSON signed with HMAC-SHA256 (delivery is at least once: a receiver
 * dedupes by the key), retried with exponential backoff while the receiver is down. No user id
 * leaves unless `ALERT_INCLUDE_USER=true`.
 *
 * @module
 */
import { createHmac } from "node:crypto";
import type { Kysely } from "kysely";
import { claimDueAlerts, type DueAlert, markDelivered, markFailed } from "../db/alert_outbox.ts";
import {
  claimDueIncidentAlerts,
  type DueIncidentAlert,
  markIncidentAlertDelivered,
  markIncidentAlertFailed,
} from "../db/incident_outbox.ts";
import type { Database } from "../db/schema.ts";
import type { Logger } from "../logger.ts";

/** Settings of the sender. */
export interface AlertSenderOptions {
  db: Kysely<Database>;
  url: string;
  /** HMAC key of the `X-Alert-Signature` header; unset: unsigned (said at start). */
  secret: string | undefined;
  isUserIncluded: boolean;
  logger: Logger;
  /** Outcomes, for `/metrics`. */
  onOutcome?: (outcome: "delivered" | "failed") => void;
  timeoutMs?: number;
  batchSize?: number;
  /** Longest wait between attempts of one alert. */
  maxBackoffMs?: number;
}

/** The JSON body of one alert. */
export function alertPayload(alert: DueAlert, isUserIncluded: boolean): Record<string, unknown> {
  const f = alert.flag;
  const isAboutUser = f.entity_type === "user";
  const hideUser = (text: string) =>
    isUserIncluded || f.user_id === "" ? text : text.replaceAll(f.user_id, "[user]");
  return {
    type: "flag",
    idempotency_key: `${f.id}:${f.revision}`,
    flag_id: f.id,
    revision: f.revision,
    rule: f.rule,
    rule_version: f.rule_version,
    level: f.level,
    status: f.status,
    entity_type: f.entity_type,
    entity_id: isAboutUser && !isUserIncluded ? null : f.entity_id,
    user_id: isUserIncluded ? f.user_id : null,
    region: f.region,
    occurred_at: f.occurred_at,
    flagged_events: f.flagged_events,
    reason: hideUser(f.reason),
    evidence: JSON.parse(hideUser(JSON.stringify(f.evidence))),
  };
}

/** Idempotency key of an incident alert: a receiver dedupes on it. */
export function incidentAlertKey(alert: DueIncidentAlert): string {
  return `incident-${alert.incidentId}:${alert.revision}`;
}

/** The JSON body of one incident alert (no user id: incidents count viewers, never name them). */
export function incidentAlertPayload(alert: DueIncidentAlert): Record<string, unknown> {
  const { band_low, band_high, ...i } = alert.incident;
  return {
    type: "incident",
    idempotency_key: incidentAlertKey(alert),
    reason: alert.reason,
    incident: {
      id: i.id,
      revision: i.revision,
      series: i.series,
      key: i.key,
      kind: i.kind,
      state: i.state,
      status: i.status,
      level: i.level,
      started_at: i.started_at,
      opened_at: i.opened_at,
      last_window: i.last_window,
      recovered_at: i.recovered_at,
      expected: i.expected,
      observed: i.observed,
      band: [band_low, band_high],
      z: i.z,
      windows: i.windows,
      viewers: i.viewers,
      drill_down: i.drill_down,
      related: i.related,
      exposure: i.exposure,
    },
  };
}

/** One alert of either outbox, ready to send. */
interface Delivery {
  key: string;
  payload: Record<string, unknown>;
  attempts: number;
  markDelivered(atMs: number): Promise<void>;
  markFailed(error: string, retryAtMs: number): Promise<void>;
}

/** Signature header value of a body: `sha256=<hex HMAC>`. */
export function signatureOf(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

/** Polls the outbox and delivers what is due; `runOnce` lets tests drive it without timers. */
export class AlertSender {
  #o: AlertSenderOptions;
  #timer: ReturnType<typeof setInterval> | null = null;
  #running: Promise<number> | null = null;

  constructor(options: AlertSenderOptions) {
    this.#o = options;
  }

  /** Starts polling every `intervalMs`. */
  start(intervalMs: number): void {
    this.#timer = setInterval(() => {
      if (this.#running !== null) return;
      this.#running = this.runOnce(Date.now()).catch((error) => {
        this.#o.logger.warn("Alert delivery round failed", { error: (error as Error).message });
        return 0;
      }).finally(() => (this.#running = null));
    }, intervalMs);
  }

  /** Stops polling and waits for the round in progress. */
  async stop(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    await this.#running;
  }

  /** Delivers the flag alerts, then the incident alerts, due at `nowMs`; returns how many. */
  async runOnce(nowMs: number): Promise<number> {
    const { db, isUserIncluded } = this.#o;
    const timeoutMs = this.#o.timeoutMs ?? 5_000;
    const batchSize = this.#o.batchSize ?? 20;
    const flags = await claimDueAlerts(db, nowMs, batchSize, 2 * timeoutMs);
    let delivered = await this.#deliverAll(
      flags.map((alert) => ({
        key: `${alert.flag.id}:${alert.flag.revision}`,
        payload: alertPayload(alert, isUserIncluded),
        attempts: alert.attempts,
        markDelivered: (atMs) => markDelivered(db, alert.outboxId, atMs),
        markFailed: (error, retryAtMs) => markFailed(db, alert.outboxId, error, retryAtMs),
      })),
      nowMs,
      timeoutMs,
    );
    // Claimed after the flag alerts are sent, so their lease is not spent waiting on those.
    const incidents = await claimDueIncidentAlerts(db, nowMs, batchSize, 2 * timeoutMs);
    delivered += await this.#deliverAll(
      incidents.map((alert) => ({
        key: incidentAlertKey(alert),
        payload: incidentAlertPayload(alert),
        attempts: alert.attempts,
        markDelivered: (atMs) =>
          markIncidentAlertDelivered(db, alert.incidentId, alert.revision, atMs),
        markFailed: (error, retryAtMs) =>
          markIncidentAlertFailed(db, alert.incidentId, alert.revision, error, retryAtMs),
      })),
      nowMs,
      timeoutMs,
    );
    return delivered;
  }

  async #deliverAll(deliveries: Delivery[], nowMs: number, timeoutMs: number): Promise<number> {
    let delivered = 0;
    for (const delivery of deliveries) {
      const error = await this.#deliver(delivery, timeoutMs);
      if (error === null) {
        await delivery.markDelivered(Date.now());
        this.#o.onOutcome?.("delivered");
        delivered++;
        continue;
      }
      const backoffMs = Math.min(this.#o.maxBackoffMs ?? 300_000, 1_000 * 2 ** delivery.attempts);
      await delivery.markFailed(error, nowMs + backoffMs);
      this.#o.onOutcome?.("failed");
      this.#o.logger.warn(
        `Cannot deliver alert ${delivery.key}: retrying in ${backoffMs} ms`,
        { error, attempts: delivery.attempts + 1 },
      );
    }
    return delivered;
  }

  async #deliver(delivery: Delivery, timeoutMs: number): Promise<string | null> {
    const body = JSON.stringify(delivery.payload);
    const timestamp = String(Math.floor(Date.now() / 1000));
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "idempotency-key": delivery.key,
      "x-alert-timestamp": timestamp,
    };
    if (this.#o.secret !== undefined) {
      headers["x-alert-signature"] = signatureOf(this.#o.secret, timestamp, body);
    }
    try {
      const response = await fetch(this.#o.url, {
        method: "POST",
        headers,
        body,
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.body?.cancel();
      return response.ok ? null : `receiver answered ${response.status}`;
    } catch (error) {
      return (error as Error).message;
    }
  }
}
