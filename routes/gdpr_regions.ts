/**
 * Which regions GDPR-like rules apply to, decided on the server from the event's region (the client's
 * own `is_eu` claim is stored for review but never trusted).
 *
 * @module
 */

/** EU-27, the EEA members Iceland, Liechtenstein and Norway, and the United Kingdom (UK GDPR). */
export const DEFAULT_GDPR_REGIONS: readonly string[] = [
  "AT",
  "BE",
  "BG",
  "HR",
  "CY",
  "CZ",
  "DK",
  "EE",
  "FI",
  "FR",
  "DE",
  "GR",
  "HU",
  "IE",
  "IT",
  "LV",
  "LT",
  "LU",
  "MT",
  "NL",
  "PL",
  "PT",
  "RO",
  "SK",
  "SI",
  "ES",
  "SE",
  "IS",
  "LI",
  "NO",
  "GB",
];

/** Region codes TVs send that are not ISO 3166-1 but mean a country: `UK` is stored as `GB`. */
const COUNTRY_ALIASES: Record<string, string> = { UK: "GB" };

/**
 * Rewrites an upper-cased region so its country part is the ISO code (`UK` and `UK-SCT` become `GB`
 * and `GB-SCT`), keeping the subdivision, so one country is never counted under two names.
 */
export function canonicalRegion(region: string): string {
  const dash = region.indexOf("-");
  const country = dash === -1 ? region : region.slice(0, dash);
  const alias = COUNTRY_ALIASES[country];
  return alias === undefined ? region : alias + region.slice(country.length);
}

/**
 * True when GDPR-like rules apply to an upper-cased region: `EU` always, otherwise when its country part
 * (`DE` of `DE-BY`) is in `gdprRegions`.
 */
export function isGdprRegion(region: string, gdprRegions: readonly string[]): boolean {
  const country = canonicalRegion(region).split("-")[0];
  return country === "EU" || gdprRegions.includes(country);
}
