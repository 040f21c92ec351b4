import assert from "node:assert/strict";
import { derivedIpHashKeyId, expandIpv6, IpAnonymizer } from "./ip_anonymizer.ts";

const anonymizer = new IpAnonymizer("test-secret-0123456789");

Deno.test("IpAnonymizer keeps only a /24 prefix and a keyed hash of an IPv4 address", () => {
  const { hash, prefix } = anonymizer.anonymize("203.0.113.77");
  assert.equal(prefix, "203.0.113.0/24");
  assert.match(hash, /^[0-9a-f]{8}~[A-Za-z0-9_-]{22}$/);
  assert.ok(!hash.includes("203.0.113.77"));
});

Deno.test("IpAnonymizer hashes equal addresses equally and different secrets differently", () => {
  const other = new IpAnonymizer("another-secret-987654321");
  assert.equal(anonymizer.anonymize("10.1.2.3").hash, anonymizer.anonymize("10.1.2.3").hash);
  assert.notEqual(anonymizer.anonymize("10.1.2.3").hash, anonymizer.anonymize("10.1.2.4").hash);
  assert.notEqual(anonymizer.anonymize("10.1.2.3").hash, other.anonymize("10.1.2.3").hash);
});

Deno.test("IpAnonymizer treats spellings of one IPv6 address as one and keeps a /48", () => {
  const a = anonymizer.anonymize("2001:db8:85a3::8a2e:370:7334");
  const b = anonymizer.anonymize("2001:0DB8:85A3:0000:0000:8A2E:0370:7334");
  assert.equal(a.hash, b.hash);
  assert.equal(a.prefix, "2001:db8:85a3::/48");
});

Deno.test("IpAnonymizer maps IPv4-mapped IPv6 to the IPv4 address", () => {
  assert.deepEqual(
    anonymizer.anonymize("::ffff:198.51.100.9"),
    anonymizer.anonymize("198.51.100.9"),
  );
});

Deno.test("expandIpv6() expands :: and an embedded IPv4 tail", () => {
  assert.deepEqual(expandIpv6("::1"), [
    "0000",
    "0000",
    "0000",
    "0000",
    "0000",
    "0000",
    "0000",
    "0001",
  ]);
  assert.deepEqual(expandIpv6("64:ff9b::192.0.2.33").slice(6), ["c000", "0221"]);
});

Deno.test("IpAnonymizer refuses a short secret", () => {
  assert.throws(() => new IpAnonymizer("short"), /at least 16 characters/);
});

Deno.test("IpAnonymizer puts the key id in front of every hash", () => {
  const { hash } = anonymizer.anonymize("192.0.2.1");
  assert.equal(hash.split("~")[0], anonymizer.keyId);
  assert.equal(anonymizer.anonymize("2001:db8::1").hash.split("~")[0], anonymizer.keyId);
});

Deno.test("IpAnonymizer derives a key id that is stable for one secret and differs for another", () => {
  assert.match(anonymizer.keyId, /^[0-9a-f]{8}$/);
  assert.equal(new IpAnonymizer("test-secret-0123456789").keyId, anonymizer.keyId);
  assert.equal(derivedIpHashKeyId("test-secret-0123456789"), anonymizer.keyId);
  assert.notEqual(new IpAnonymizer("another-secret-987654321").keyId, anonymizer.keyId);
  // The fingerprint is not the hash of an address, nor a prefix of the secret.
  assert.ok(!"test-secret-0123456789".includes(anonymizer.keyId));
});

Deno.test("IpAnonymizer uses an explicit key id and keeps the hash part of the secret", () => {
  const named = new IpAnonymizer("test-secret-0123456789", "2026-q1_a");
  const { hash } = named.anonymize("10.1.2.3");
  assert.equal(named.keyId, "2026-q1_a");
  assert.ok(hash.startsWith("2026-q1_a~"));
  assert.equal(hash.split("~")[1], anonymizer.anonymize("10.1.2.3").hash.split("~")[1]);
});

Deno.test("IpAnonymizer refuses a key id that is empty, too long or has a colon", () => {
  for (const keyId of ["", "a".repeat(17), "a:b", "key id"]) {
    assert.throws(() => new IpAnonymizer("test-secret-0123456789", keyId), /key id/);
  }
});
