/**
 * Consent as the pipeline records it: the IAB TCF purposes by id and name, the decoded signal an
 * event may carry (TCF, GPP or named purposes), how the privacy rule decides consent from it, and
 * the compact state code a user's consent ledger compares to tell a change from a repeat.
 *
 * @module
 */

/**
 * The IAB TCF v2.2 purposes, by id (Policies, Appendix A), with the names the API uses: purpose 1
 * "Store and/or access information on a device" is `storage`, purpose 8 "Measure content
 * performance" is `measurement`.
 */
export const PURPOSES: Readonly<Record<number, string>> = {
  1: "storage",
  2: "basic_ads",
  3: "ads_profile",
  4: "personalised_ads",
  5: "content_profile",
  6: "personalised_content",
  7: "ad_measurement",
  8: "measurement",
  9: "market_research",
  10: "product_development",
  11: "limited_data_ads",
};

/** Highest TCF purpose id the pipeline knows. */
export const MAX_PURPOSE_ID = 11;

/** The purposes this pipeline's processing needs by default: storage (1) and measurement (8). */
export const DEFAULT_CONSENT_PURPOSES: readonly number[] = [1, 8];

/** Where a consent state came from. `has_consent` is the boolean an event carries without a signal. */
export type ConsentSource = "has_consent" | "tcf" | "gpp" | "purposes";

/** A consent signal as ingest decoded it; what the raw event stores instead of the string. */
export interface ConsentSignal {
  source: Exclude<ConsentSource, "has_consent">;
  /** Purposes consented to, as a bit mask: bit `id - 1` for purpose `id` (legitimate interest never counts). */
  purposes: number;
  /** Consent of the vendor `CONSENT_VENDOR_ID` names; null when none is configured or said. */
  vendorConsent: boolean | null;
  /** False when the string did not decode: it then grants nothing. */
  isDecoded: boolean;
  cmpId: number | null;
  cmpVersion: number | null;
  /** TCF policy version the string was made under. */
  policyVersion: number | null;
  /** SHA-256 of the raw string (hex, first 32 characters); null for named purposes. */
  stringHash: string | null;
  /** A GPP US section says the user opted out of sale or sharing (or sent Global Privacy Control). */
  isOptOutSaleShare: boolean;
}

/** The bit mask of purpose ids. */
export function purposeMask(ids: Iterable<number>): number {
  let mask = 0;
  for (const id of ids) if (id >= 1 && id <= MAX_PURPOSE_ID) mask |= 1 << (id - 1);
  return mask;
}

/** The purpose names in a mask, in id order. */
export function purposeNames(mask: number): string[] {
  const names: string[] = [];
  for (let id = 1; id <= MAX_PURPOSE_ID; id++) {
    if ((mask & (1 << (id - 1))) !== 0) names.push(PURPOSES[id]);
  }
  return names;
}

/** The purpose id a name or a numeric string stands for, or null. */
export function purposeIdOf(name: string): number | null {
  const id = /^\d{1,2}$/.test(name)
    ? Number(name)
    : Number(Object.keys(PURPOSES).find((key) => PURPOSES[Number(key)] === name) ?? NaN);
  return Number.isInteger(id) && id >= 1 && id <= MAX_PURPOSE_ID ? id : null;
}

/**
 * Whether a signal grants what the processing needs: every purpose in `requiredMask` consented to,
 * and the vendor's consent when one is configured. A string that did not decode grants nothing.
 */
export function isConsentGranted(signal: ConsentSignal, requiredMask: number): boolean {
  return signal.isDecoded && (signal.purposes & requiredMask) === requiredMask &&
    signal.vendorConsent !== false;
}

const SOURCE_CODES: Record<ConsentSource, number> = {
  has_consent: 0,
  tcf: 1,
  gpp: 2,
  purposes: 3,
};

/** A user's consent state as one comparable number. */
export interface ConsentState {
  source: ConsentSource;
  purposes: number;
  vendorConsent: boolean | null;
  isOptOutSaleShare: boolean;
  hasConsent: boolean;
  isDecoded: boolean;
}

/**
 * The consent state an event reports: its signal, or without one its `has_consent`, which then
 * stands for the purposes the processing needs (`requiredMask`) or none.
 */
export function consentStateOf(
  event: { hasConsent: boolean; consent?: ConsentSignal | null },
  requiredMask: number,
): ConsentState {
  const signal = event.consent;
  if (signal === undefined || signal === null) {
    return {
      source: "has_consent",
      purposes: event.hasConsent ? requiredMask : 0,
      vendorConsent: null,
      isOptOutSaleShare: false,
      hasConsent: event.hasConsent,
      isDecoded: true,
    };
  }
  return {
    source: signal.source,
    purposes: signal.isDecoded ? signal.purposes : 0,
    vendorConsent: signal.vendorConsent,
    isOptOutSaleShare: signal.isOptOutSaleShare,
    hasConsent: event.hasConsent,
    isDecoded: signal.isDecoded,
  };
}

/**
 * A state packed into one integer (source 2 bits, purposes 11, vendor 2, opt-out 1, consent 1,
 * decoded 1): two events report the same state exactly when their codes are equal.
 */
export function consentStateCode(state: ConsentState): number {
  const vendor = state.vendorConsent === null ? 0 : state.vendorConsent ? 2 : 1;
  return SOURCE_CODES[state.source] | (state.purposes << 2) | (vendor << 13) |
    ((state.isOptOutSaleShare ? 1 : 0) << 15) | ((state.hasConsent ? 1 : 0) << 16) |
    ((state.isDecoded ? 1 : 0) << 17);
}
