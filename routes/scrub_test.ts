import assert from "node:assert/strict";
import { deepFreeze } from "../tests/fixtures.ts";
import {
  containsEmail,
  containsIp,
  DEFAULT_METADATA_KEYS,
  opaqueIdProblem,
  scrubMetadata,
  scrubText,
} from "./scrub.ts";

const ALLOWED: ReadonlySet<string> = new Set(DEFAULT_METADATA_KEYS);

Deno.test("scrubText() marks IPv4 addresses, with ports, CIDR suffixes and zero padding", () => {
  const cases = [
    ["10.0.0.1", "[ip]"],
    ["peer 203.0.113.77:8443 refused", "peer [ip]:8443 refused"],
    ["net 192.168.0.0/16.", "net [ip]/16."],
    ["E_CONN_172.16.5.4", "E_CONN_[ip]"],
    ["010.001.000.255", "[ip]"],
    ["a=1.1.1.1,b=8.8.8.8", "a=[ip],b=[ip]"],
  ];
  for (const [input, expected] of cases) assert.equal(scrubText(input), expected, input);
});

Deno.test("scrubText() marks IPv6 addresses in every textual form", () => {
  const cases = [
    ["::1", "[ip]"],
    ["fe80::1%eth0", "[ip]"],
    ["link fe80::a00:27ff:fe4e:66a1%en0 up", "link [ip] up"],
    ["2001:0db8:0000:0000:0000:ff00:0042:8329", "[ip]"],
    ["2001:db8::ff00:42:8329", "[ip]"],
    ["::ffff:192.0.2.128", "[ip]"],
    ["::FFFF:C000:0280", "[ip]"],
    ["0:0:0:0:0:ffff:192.0.2.1", "[ip]"],
    ["64:ff9b::198.51.100.1", "[ip]"],
    ["[2001:db8::1]:443", "[[ip]]:443"],
    ["host:2001:db8::1, retry", "host:[ip], retry"],
    ["connect to ::1.", "connect to [ip]."],
    ["2001:db8::/32", "[ip]/32"],
  ];
  for (const [input, expected] of cases) assert.equal(scrubText(input), expected, input);
});

Deno.test("scrubText() leaves versions, times, dates, MAC addresses and code paths alone", () => {
  const untouched = [
    "1.2.3",
    "v1.2.3.4",
    "1.2.3.4.5",
    "10.0.19045.2965",
    "10.0.0.256",
    "12:30",
    "12:30:45.250",
    "2026-11-23T20:15:00.000+01:00",
    "aa:bb:cc:dd:ee:ff",
    "Player::load failed",
    "::",
    "ratio 16:9",
    "pkg@1.2.3",
    "E_DRM_1.2.3",
  ];
  for (const text of untouched) {
    assert.equal(scrubText(text), text, text);
    assert.equal(containsIp(text) || containsEmail(text), false, text);
  }
});

Deno.test("scrubText() marks e-mail addresses, URL-encoded and international ones too", () => {
  const cases = [
    ["bob@example.com", "[email]"],
    ["mailto:bob.smith+tv@mail.example.co.uk;", "mailto:[email];"],
    ["user=bob%40example.com", "[email]"],
    ["jörg@exämple.de", "[email]"],
    ["ops@[10.0.0.1] down", "[email] down"],
    ["from ann@example.org at 10.0.0.2", "from [email] at [ip]"],
  ];
  for (const [input, expected] of cases) assert.equal(scrubText(input), expected, input);
});

Deno.test("scrubText() with the IP exemption still marks e-mail addresses", () => {
  assert.equal(scrubText("10.0.0.1", true), "10.0.0.1");
  assert.equal(scrubText("1.0 by bob@example.com", true), "1.0 by [email]");
});

Deno.test("scrubText() stays fast on hostile 4 KiB strings", () => {
  const hostile = ["a".repeat(4096) + "@", "1:".repeat(2048), "1.".repeat(2048), "a@".repeat(2048)];
  const started = performance.now();
  for (const text of hostile) scrubText(text);
  assert.ok(performance.now() - started < 500, "scrubbing took too long");
});

Deno.test("scrubMetadata() keeps allowed top-level keys and lists the dropped ones", () => {
  const input = deepFreeze({ platform: "tizen", owner: "bob", app_version: "5.2.0", serial: 7 });
  const { metadata, droppedKeys } = scrubMetadata(input, ALLOWED);
  assert.deepEqual(metadata, { platform: "tizen", app_version: "5.2.0" });
  assert.deepEqual(droppedKeys, ["owner", "serial"]);
});

Deno.test("scrubMetadata() scrubs nested strings and keys, exempting *_version from the IP check", () => {
  const input = deepFreeze({
    os_version: "10.0.0.1",
    app_version: "1.0 (bob@example.com)",
    cdn: {
      edge: "203.0.113.9",
      "10.1.1.1": true,
      hops: [{ at: "2001:db8::2" }, 3, null],
      player_version: "4.3.2.1",
    },
    model: "QN90",
  });
  const { metadata, droppedKeys } = scrubMetadata(input, ALLOWED);
  assert.deepEqual(droppedKeys, []);
  assert.deepEqual(metadata, {
    os_version: "10.0.0.1",
    app_version: "1.0 ([email])",
    cdn: {
      edge: "[ip]",
      "[ip]": true,
      hops: [{ at: "[ip]" }, 3, null],
      player_version: "4.3.2.1",
    },
    model: "QN90",
  });
});

Deno.test("scrubMetadata() keeps a __proto__ key as data, never as a prototype", () => {
  const input = JSON.parse('{"cdn":{"__proto__":{"polluted":"10.0.0.9"}}}');
  const { metadata } = scrubMetadata(input, ALLOWED);
  const cdn = metadata.cdn as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(cdn), Object.prototype);
  assert.deepEqual(Object.getOwnPropertyDescriptor(cdn, "__proto__")?.value, { polluted: "[ip]" });
});

Deno.test("opaqueIdProblem() refuses ids holding an e-mail or IP address, and only those", () => {
  assert.match(opaqueIdProblem("bob@example.com")!, /^ids must be opaque: .*e-mail address/);
  assert.match(opaqueIdProblem("tv-192.168.1.4")!, /^ids must be opaque: .*IP address/);
  assert.match(opaqueIdProblem("fe80::1")!, /IP address/);
  for (const id of ["user-42", "aa:bb:cc:dd:ee:ff", "6f1c2a9e-0b1d-4c6e-9d7a-3f2e1b0c9a8d"]) {
    assert.equal(opaqueIdProblem(id), null, id);
  }
});
