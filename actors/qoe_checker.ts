/**
 * Runs the `qoe` rule (`rules/qoe_rule.ts`) over the windows the workers' flushes changed: every
 * title, CDN and region of a changed window is judged on its totals, and a flag that is new, or
 * higher than the one on record, is written like every flag (history, risk, alert outbox). Several
 * servers may check the same window: writing a flag is an idempotent upsert by its key, and a flag
 * at the level on record is not written again.
 *
 * @module
 */
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.ts";
import { writeFlush } from "../db/flush.ts";
import { changedWindows, markJudged, readWindow } from "../db/qoe_windows.ts";
import { evaluateQoeWindow, type QoeRuleThresholds } from "../rules/qoe_rule.ts";
import { LEVEL_RANK } from "../rules/types.ts";
import type { Flag } from "../rules/types.ts";
import type { Logger } from "../logger.ts";
import { addFlag, emptyBatch } from "./pending.ts";

/** Windows judged per pass at most (oldest first; the rest wait for the next pass). */
const WINDOWS_PER_PASS = 200;

/** Settings of a {@link QoeChecker}. */
export interface QoeCheckerOptions {
  db: Kysely<Database>;
  thresholds: QoeRuleThresholds;
  /** Flags at or above this rank go to the alert outbox (unset: no alerts configured). */
  alertMinRank?: number;
  logger: Logger;
}

/** Judges changed QoE windows, on demand ({@link runOnce}) or every interval ({@link start}). */
export class QoeChecker {
  #o: QoeCheckerOptions;
  #timer: ReturnType<typeof setInterval> | undefined;
  #running: Promise<number> | null = null;

  constructor(options: QoeCheckerOptions) {
    this.#o = options;
  }

  /** Judges every changed window; resolves to the flags written. One pass runs at a time. */
  runOnce(): Promise<number> {
    return this.#running ??= this.#pass().finally(() => this.#running = null);
  }

  /** Runs a pass every `intervalMs`; a failed pass is logged and retried at the next. */
  start(intervalMs: number): void {
    this.#timer = setInterval(() => {
      this.runOnce().catch((error) =>
        this.#o.logger.warn("QoE rule check failed", { error: (error as Error).message })
      );
    }, intervalMs);
  }

  /** Stops the interval and waits for a running pass. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running?.catch(() => {});
  }

  async #pass(): Promise<number> {
    const { db } = this.#o;
    let written = 0;
    for (const startMs of await changedWindows(db, WINDOWS_PER_PASS)) {
      const reading = await readWindow(db, startMs);
      const flags = reading.totals
        .map((t) => evaluateQoeWindow(t, this.#o.thresholds))
        .filter((f): f is Flag => f !== null);
      const { raised, updated } = await this.#changes(flags);
      if (raised.length + updated.length > 0) {
        const batch = emptyBatch();
        for (const flag of raised) addFlag(batch, flag);
        // Same level, newer counts: the evidence is refreshed; the entity's risk is unchanged.
        for (const flag of updated) batch.flags.set(flag.flagKey, flag);
        batch.flaggedEvents.clear();
        await writeFlush(db, batch, { alertMinRank: this.#o.alertMinRank });
        written += raised.length + updated.length;
        for (const flag of raised) {
          this.#o.logger.info("QoE flag", { level: flag.level, reason: flag.reason });
        }
      }
      await db.transaction().execute((trx) => markJudged(trx, startMs, reading.seen));
    }
    return written;
  }

  /**
   * Splits the flags into those new or higher than on record (`raised`) and those at the level on
   * record whose counts changed (`updated`); the rest are written already.
   */
  async #changes(flags: Flag[]): Promise<{ raised: Flag[]; updated: Flag[] }> {
    if (flags.length === 0) return { raised: [], updated: [] };
    const rows = await this.#o.db.selectFrom("risk_flags").select([
      "flag_key",
      "level_rank",
      "evidence",
    ])
      .where("flag_key", "in", flags.map((f) => f.flagKey)).execute();
    const onRecord = new Map(rows.map((r) => [r.flag_key, r]));
    const raised: Flag[] = [];
    const updated: Flag[] = [];
    for (const flag of flags) {
      const old = onRecord.get(flag.flagKey);
      if (old === undefined || old.level_rank < LEVEL_RANK[flag.level]) raised.push(flag);
      else if (
        old.level_rank === LEVEL_RANK[flag.level] &&
        countsOf(old.evidence) !== countsOf(flag.evidence)
      ) updated.push(flag);
    }
    return { raised, updated };
  }
}

/** The counts a `qoe` flag's evidence observed, as one comparable string. */
function countsOf(evidence: unknown): string {
  const o = (evidence as { observed?: Record<string, unknown> } | null)?.observed ?? {};
  return [
    "views",
    "technical_start_failures",
    "rebuffer_ms",
    "playing_ms",
    "startups_over_threshold",
  ]
    .map((k) => String(o[k])).join("/");
}
