/**
 * The rule registry: every compliance rule the pipeline runs, in the order reports list them. The
 * actor families run the rules registered for them, and reports, filters, risk weights and the API
 * contract read their ids from here. Adding a rule is one file in `rules/` that exports a
 * {@link UserRule} or {@link QualityRule}, plus one line below.
 *
 * @module
 */
import type { TelemetryEvent } from "./event.ts";
import type { OptOut } from "./retention.ts";
import type { SharingFacts } from "./account_sharing.ts";
import type { QualityFacts } from "./content_quality.ts";
import type { Flag, RuleThresholds } from "./types.ts";
import { PRIVACY_RULE } from "./privacy.ts";
import { RETENTION_RULE } from "./retention.ts";
import { ACCOUNT_SHARING_RULE } from "./account_sharing.ts";
import { CONTENT_QUALITY_RULE } from "./content_quality.ts";
import { QOE_RULE } from "./qoe_rule.ts";

/** What every rule declares about itself. */
export interface RuleInfo {
  /** Stable id stored with each flag (`risk_flags.rule`); snake_case. */
  id: string;
  /** Stored with each flag; bump when the rule's meaning changes. */
  version: number;
  /** Weight of its flags in an entity's risk score (1 = ordinary). */
  weight: number;
  /** One sentence for reviewers and the README. */
  description: string;
}

/** What the user family knows when a user's event arrives, after applying it. */
export interface UserRuleFacts {
  /** The user's do-not-track or deletion in force at the event's time, if any. */
  optOut: OptOut | undefined;
  /** The day's consent-less event ids remembered for evidence (empty unless the event is one). */
  privacySample: readonly string[];
  /** The user's sliding window; null for a late event, which windows do not take. */
  sharing: SharingFacts | null;
}

/** A rule about users, run by the user family on every unique event. */
export interface UserRule extends RuleInfo {
  family: "user";
  evaluate(event: TelemetryEvent, facts: UserRuleFacts, thresholds: RuleThresholds): Flag | null;
}

/** A rule about a title or a device, run by the content and device families on every window update. */
export interface QualityRule extends RuleInfo {
  family: "quality";
  evaluate(
    event: Pick<TelemetryEvent, "eventId" | "userId" | "region" | "isEu" | "atMs">,
    facts: QualityFacts,
    thresholds: RuleThresholds,
  ): Flag | null;
}

/**
 * A rule over the flushed QoE windows of every worker (`rules/qoe_rule.ts`), run by a checker in
 * the server rather than by an actor family: views are spread over all user shards.
 */
export interface WindowRule extends RuleInfo {
  family: "qoe";
}

/** Every rule, in report order. */
export const RULES: ReadonlyArray<UserRule | QualityRule | WindowRule> = [
  PRIVACY_RULE,
  RETENTION_RULE,
  ACCOUNT_SHARING_RULE,
  CONTENT_QUALITY_RULE,
  QOE_RULE,
];

/** Rules the user family runs. */
export const USER_RULES: readonly UserRule[] = RULES.filter((r): r is UserRule =>
  r.family === "user"
);

/** Rules the content and device families run. */
export const QUALITY_RULES: readonly QualityRule[] = RULES.filter((r): r is QualityRule =>
  r.family === "quality"
);

/** Every rule id, in report order. */
export const RULE_IDS: readonly string[] = RULES.map((r) => r.id);

/** Weight of each rule's flags in a risk score, by id. */
export const RULE_WEIGHTS: Readonly<Record<string, number>> = Object.fromEntries(
  RULES.map((r) => [r.id, r.weight]),
);
