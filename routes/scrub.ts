/**
 * Data minimisation at the ingest boundary: `extra_metadata` is cut down to allowed keys, and every IPv4
 * address, IPv6 address and e-mail address in free-form text is replaced by `[ip]` / `[email]`, so
 * nothing stored holds an address a client sent.
 *
 * @module
 */

/** `extra_metadata` keys kept when `METADATA_KEYS` is unset (`platform`, `app_version` feed the stats). */
export const DEFAULT_METADATA_KEYS: readonly string[] = [
  "app_version",
  "platform",
  "os_version",
  "model",
  "network_type",
  "player_version",
  "drm",
  "cdn",
];

/** What replaces an IPv4 or IPv6 address in stored text. */
export const IP_MARKER = "[ip]";

/** What replaces an e-mail address in stored text. */
export const EMAIL_MARKER = "[email]";

const OCTET = "(?:25[0-5]|2[0-4]\\d|[01]?\\d?\\d)";
const V4 = `(?:${OCTET}\\.){3}${OCTET}`;
const HEX = "[0-9A-Fa-f]{1,4}";

/** `count` hex groups joined by colons, or nothing for 0. */
function groups(count: number): string {
  return count === 0 ? "" : `${HEX}(?::${HEX}){${count - 1}}`;
}

/**
 * Every textual IPv6 form: 8 groups, or 6 groups and an IPv4 tail (`::ffff:192.0.2.1`), each either in
 * full or compressed with `::`. The bare unspecified address `::` is left out: it names nobody, and
 * `::` also appears in code paths such as `Player::load`.
 */
function ipv6Forms(): string[] {
  const forms: string[] = [];
  for (const [total, tail] of [[6, V4], [8, ""]] as const) {
    const join = (head: string) => (tail === "" ? head : head === "" ? tail : `${head}:${tail}`);
    forms.push(join(groups(total)));
    for (let left = 0; left < total; left++) {
      for (let right = 0; left + right < total; right++) {
        if (tail === "" && left === 0 && right === 0) continue;
        forms.push(`${groups(left)}::${join(groups(right))}`);
      }
    }
  }
  return forms;
}

// Boundaries: an address is not part of a longer word or dotted-number chain, so `1.2.3.4.5`,
// `v1.2.3.4`, `12:30` and MAC addresses are left alone. A colon before an IPv6 address is allowed
// (`host:2001:db8::1`), so a colon-separated run of 9+ hex groups may be partly marked: safe side.
const IPV6_SOURCE = `(?<![0-9A-Za-z])(?:${
  ipv6Forms().join("|")
})(?:%[0-9A-Za-z_.~-]+)?(?![0-9A-Za-z]|[:.][0-9A-Za-z])`;
const IPV4_SOURCE = `(?<![0-9A-Za-z])(?<!\\d\\.)${V4}(?!\\d|\\.\\d)`;
const ATEXT = "[\\p{L}\\p{N}!#$%&'*+/=?^_`{|}~.-]";
const LABEL = "[\\p{L}\\p{N}-]+";
const DOMAIN =
  `(?:${LABEL}(?:\\.${LABEL})*\\.(?:\\p{L}{2,}|xn--[\\p{L}\\p{N}-]+)|\\[[\\w:.]{1,64}\\])`;
// The lookbehind starts a match only at the beginning of a run of address characters, which keeps
// the scan linear on hostile 4 KiB strings; `%40` is a URL-encoded `@`.
const EMAIL_SOURCE = `(?<!${ATEXT})${ATEXT}+(?:@|%40)${DOMAIN}`;

const IP = new RegExp(`${IPV6_SOURCE}|${IPV4_SOURCE}`, "gu");
const EMAIL = new RegExp(EMAIL_SOURCE, "gu");

// Cheap prefilters run on every id and metadata string of every event: an IPv4 address has a dot,
// an IPv6 address at least two colons, an e-mail an `@` (or `%40`). Most strings have none.
const mayHoldIp = (text: string): boolean =>
  text.includes(".") || text.indexOf(":") !== text.lastIndexOf(":");
const mayHoldEmail = (text: string): boolean => text.includes("@") || text.includes("%40");

/** True when the text contains an IPv4 or IPv6 address. */
export function containsIp(text: string): boolean {
  return mayHoldIp(text) && text.search(IP) !== -1;
}

/** True when the text contains an e-mail address (plain or with a URL-encoded `@`). */
export function containsEmail(text: string): boolean {
  return mayHoldEmail(text) && text.search(EMAIL) !== -1;
}

/**
 * Replaces every e-mail address by `[email]` and, unless `isIpExempt`, every IP address by `[ip]`;
 * the rest of the text is kept, so an error code stays readable.
 */
export function scrubText(text: string, isIpExempt = false): string {
  const noEmail = mayHoldEmail(text) ? text.replace(EMAIL, EMAIL_MARKER) : text;
  return isIpExempt || !mayHoldIp(noEmail) ? noEmail : noEmail.replace(IP, IP_MARKER);
}

/** True for a metadata key whose values are versions, where `10.0.0.1` is not an address. */
export function isVersionKey(key: string): boolean {
  return key.endsWith("_version");
}

/** Metadata reduced to allowed keys and scrubbed, with the top-level keys that were dropped. */
export interface ScrubbedMetadata {
  metadata: Record<string, unknown>;
  droppedKeys: string[];
}

/**
 * Keeps the allowed top-level keys of `extra_metadata` and scrubs every string below them, keys of
 * nested objects included; a string under a `*_version` key keeps its IP-like text. Never mutates the
 * input.
 */
export function scrubMetadata(
  metadata: Record<string, unknown>,
  allowedKeys: ReadonlySet<string>,
): ScrubbedMetadata {
  const droppedKeys: string[] = [];
  const kept: Array<[string, unknown]> = [];
  for (const [key, value] of Object.entries(metadata)) {
    if (allowedKeys.has(key)) kept.push([key, scrubValue(value, isVersionKey(key))]);
    else droppedKeys.push(key);
  }
  // fromEntries defines own properties, so a `__proto__` key cannot replace the prototype.
  return { metadata: Object.fromEntries(kept), droppedKeys };
}

function scrubValue(value: unknown, isIpExempt: boolean): unknown {
  if (typeof value === "string") return scrubText(value, isIpExempt);
  if (Array.isArray(value)) return value.map((item) => scrubValue(item, isIpExempt));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [scrubText(k), scrubValue(v, isVersionKey(k))]),
    );
  }
  return value;
}

/** Why an id is not opaque (it holds an e-mail or IP address), or null when it is. */
export function opaqueIdProblem(id: string): string | null {
  if (containsEmail(id)) return "ids must be opaque: this one contains an e-mail address";
  if (containsIp(id)) return "ids must be opaque: this one contains an IP address";
  return null;
}
