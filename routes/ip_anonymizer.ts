/**
 * Turning an IP address into what may be stored: a keyed hash (for equality checks in rules) and a
 * truncated network prefix (for coarse analysis). The raw address is personal data and goes no further.
 *
 * Each hash carries the id of the key that made it (`<keyId>~<22 characters>`: the first 128 bits of
 * an HMAC-SHA256, base64url), so the secret can be rotated: hashes of different keys are never
 * compared, and stored hashes keep their old key id. Hashes stored before this form
 * (`<keyId>:<64 hex>`) are a key group of their own (see `ipHashKeyIdOf`).
 *
 * @module
 */
import { createHmac } from "node:crypto";

/** The stored stand-ins of one IP address. */
export interface AnonymizedIp {
  /** `<keyId>~<first 128 bits of HMAC-SHA256 of the normalised address, base64url>`. */
  hash: string;
  /** `/24` for IPv4, `/48` for IPv6. */
  prefix: string;
}

/** Addresses whose hash is kept in memory; a TV sends many events from one address. */
const CACHE_SIZE = 50_000;

/** What a key id may be (`IP_HASH_KEY_ID`): it must not contain the `~` that ends it in a hash. */
export const IP_HASH_KEY_ID_PATTERN = /^[A-Za-z0-9_-]{1,16}$/;

/**
 * Bytes of the HMAC kept: 128 bits, so two addresses of one viewer collide with a chance of about
 * 2^-128, and a hash costs 31 bytes at rest instead of 73.
 */
const HASH_BYTES = 16;

/**
 * The key id of a secret when none is configured: the first 8 hex digits of an HMAC of a fixed label,
 * a fingerprint of the key that tells nothing about any address.
 */
export function derivedIpHashKeyId(secret: string): string {
  return createHmac("sha256", secret).update("ott-ip-hash-key-id").digest("hex").slice(0, 8);
}

/**
 * Hashes and truncates IP addresses with a secret key. HMAC costs about 13 µs per call here, so recent
 * results are cached in memory (bounded, never persisted).
 */
export class IpAnonymizer {
  #secret: string;
  #keyId: string;
  #cache = new Map<string, AnonymizedIp>();

  /** `keyId` names the secret in every hash; undefined derives it from the secret. */
  constructor(secret: string, keyId?: string) {
    if (secret.length < 16) {
      throw new Error("Cannot hash IP addresses: the secret must be at least 16 characters");
    }
    if (keyId !== undefined && !IP_HASH_KEY_ID_PATTERN.test(keyId)) {
      throw new Error("Cannot hash IP addresses: the key id must be 1-16 letters, digits, _ -");
    }
    this.#secret = secret;
    this.#keyId = keyId ?? derivedIpHashKeyId(secret);
  }

  /** The id of the key, the part of each hash before the `~`. */
  get keyId(): string {
    return this.#keyId;
  }

  /** Anonymises a valid IPv4 or IPv6 address (validated by the caller). */
  anonymize(ip: string): AnonymizedIp {
    const cached = this.#cache.get(ip);
    if (cached !== undefined) return cached;
    const result = this.#compute(ip);
    if (this.#cache.size >= CACHE_SIZE) this.#cache.clear();
    this.#cache.set(ip, result);
    return result;
  }

  #compute(ip: string): AnonymizedIp {
    const v4 = ipv4Of(ip);
    const normalised = v4 ?? expandIpv6(ip).join(":");
    const hash = this.#keyId + "~" + createHmac("sha256", this.#secret).update(normalised)
      .digest().subarray(0, HASH_BYTES).toString("base64url");
    if (v4 !== null) {
      const [a, b, c] = v4.split(".");
      return { hash, prefix: `${a}.${b}.${c}.0/24` };
    }
    const groups = expandIpv6(ip).slice(0, 3).map((g) => g.replace(/^0+(?=.)/, ""));
    return { hash, prefix: `${groups.join(":")}::/48` };
  }
}

/** The IPv4 address of a dotted quad or an IPv4-mapped IPv6 address, else null. */
function ipv4Of(ip: string): string | null {
  const mapped = /^(?:::ffff:)?(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  return mapped === null ? null : mapped[1];
}

/** The eight 4-digit hex groups of an IPv6 address (handles `::` and an embedded IPv4 tail). */
export function expandIpv6(ip: string): string[] {
  let text = ip.toLowerCase().split("%")[0];
  const tail = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (tail !== null) {
    const [a, b, c, d] = tail.slice(1).map(Number);
    text = text.slice(0, tail.index) +
      `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, rest] = text.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = rest === undefined || rest === "" ? [] : rest.split(":");
  const missing = rest === undefined ? 0 : 8 - left.length - right.length;
  return [...left, ...Array(missing).fill("0"), ...right].map((g) => g.padStart(4, "0"));
}
