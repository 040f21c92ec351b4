/**
 * Delivers alerts from the outbox to `ALERT_WEBHOOK_URL`: JSON signed with HMAC-SHA256, an
 * idempotency key of flag id and revision (delivery is at least once: a receiver dedupes by the key),
 * retried with exponential backoff while the receiver is down. No user id leaves unless
 * `ALERT_INCLUDE_USER=true`.
 *
 * @module
 */
import { createHmac } from "node:crypto";
import type { Kysely } from "kysely";
import { claimDueAlerts, type DueAlert, markDelivered, markFailed } from "../db/alert_outbox.ts";
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

  /** Delivers the alerts due at `nowMs`; returns how many were delivered. */
  async runOnce(nowMs: number): Promise<number> {
    const timeoutMs = this.#o.timeoutMs ?? 5_000;
    const due = await claimDueAlerts(this.#o.db, nowMs, this.#o.batchSize ?? 20, 2 * timeoutMs);
    let delivered = 0;
    for (const alert of due) {
      const error = await this.#deliver(alert, timeoutMs);
      if (error === null) {
        await markDelivered(this.#o.db, alert.outboxId, Date.now());
        this.#o.onOutcome?.("delivered");
        delivered++;
        continue;
      }
      const backoffMs = Math.min(this.#o.maxBackoffMs ?? 300_000, 1_000 * 2 ** alert.attempts);
      await markFailed(this.#o.db, alert.outboxId, error, nowMs + backoffMs);
      this.#o.onOutcome?.("failed");
      this.#o.logger.warn(
        `Cannot deliver alert ${alert.flag.id}:${alert.flag.revision}: retrying in ${backoffMs} ms`,
        { error, attempts: alert.attempts + 1 },
      );
    }
    return delivered;
  }

  async #deliver(alert: DueAlert, timeoutMs: number): Promise<string | null> {
    const body = JSON.stringify(alertPayload(alert, this.#o.isUserIncluded));
    const timestamp = String(Math.floor(Date.now() / 1000));
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "idempotency-key": `${alert.flag.id}:${alert.flag.revision}`,
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
