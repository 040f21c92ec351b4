import assert from "node:assert/strict";
import { gppTcfEu, gppUsNat, tcString, TEST_VENDOR_ID } from "../tests/consent_strings.ts";
import { isConsentGranted, purposeMask, purposeNames } from "../rules/consent.ts";
import { ConsentDecoder } from "./consent_decoder.ts";

const REQUIRED = purposeMask([1, 8]);

Deno.test("ConsentDecoder reads a real TC string's purposes, CMP, policy version and a hash of it", () => {
  const text = tcString([1, 8, 10], { cmpId: 42, cmpVersion: 7 });
  const { signal, problem } = new ConsentDecoder(undefined).decode({ tcf: text });
  assert.equal(problem, null);
  assert.deepEqual(purposeNames(signal.purposes), [
    "storage",
    "measurement",
    "product_development",
  ]);
  assert.deepEqual([signal.cmpId, signal.cmpVersion, signal.policyVersion], [42, 7, 5]);
  assert.match(signal.stringHash!, /^[0-9a-f]{32}$/);
  assert.ok(!signal.stringHash!.includes(text.slice(0, 8)), "the hash is not the string");
  assert.equal(isConsentGranted(signal, REQUIRED), true);
  assert.equal(signal.vendorConsent, null, "no vendor configured: not read");
});

Deno.test("ConsentDecoder: a TC string without purpose 8 grants no consent to measurement", () => {
  const { signal } = new ConsentDecoder(undefined).decode({ tcf: tcString([1, 2, 3]) });
  assert.equal(isConsentGranted(signal, REQUIRED), false);
  assert.equal(isConsentGranted(signal, purposeMask([1])), true);
});

Deno.test("ConsentDecoder checks the configured vendor's consent only when one is set", () => {
  const withVendor = tcString([1, 8], { vendors: [TEST_VENDOR_ID] });
  const without = tcString([1, 8], { vendors: [1001] });
  const decoder = new ConsentDecoder(TEST_VENDOR_ID);
  assert.equal(decoder.decode({ tcf: withVendor }).signal.vendorConsent, true);
  assert.equal(isConsentGranted(decoder.decode({ tcf: without }).signal, REQUIRED), false);
  assert.equal(
    isConsentGranted(new ConsentDecoder(undefined).decode({ tcf: without }).signal, REQUIRED),
    true,
  );
});

Deno.test("ConsentDecoder treats a string that does not decode as no consent, and says why", () => {
  const decoder = new ConsentDecoder(undefined);
  for (
    const wire of [{ tcf: "not-a-tc-string!!" }, { tcf: "CPxxxx" }, { gpp: "garbage!!" }, {
      gpp: "",
    }, {
      gpp: "DBABLA~zzz",
    }]
  ) {
    const { signal, problem } = decoder.decode(wire);
    assert.equal(signal.isDecoded, false, JSON.stringify(wire));
    assert.equal(isConsentGranted(signal, REQUIRED), false);
    assert.match(problem ?? "", /^consent\.(tcf|gpp) does not decode: /, JSON.stringify(wire));
  }
});

Deno.test("ConsentDecoder reads US opt-outs and GPC from a real GPP string, and EU purposes from its TCF section", () => {
  const decoder = new ConsentDecoder(undefined);
  assert.equal(
    decoder.decode({ gpp: gppUsNat({ saleOptOut: true }) }).signal.isOptOutSaleShare,
    true,
  );
  assert.equal(
    decoder.decode({ gpp: gppUsNat({ sharingOptOut: true }) }).signal.isOptOutSaleShare,
    true,
  );
  assert.equal(decoder.decode({ gpp: gppUsNat({ gpc: true }) }).signal.isOptOutSaleShare, true);
  const none = decoder.decode({ gpp: gppUsNat() });
  assert.deepEqual([none.problem, none.signal.isOptOutSaleShare, none.signal.isDecoded], [
    null,
    false,
    true,
  ]);
  const eu = decoder.decode({ gpp: gppTcfEu([1, 8], 12) });
  assert.equal(eu.problem, null);
  assert.deepEqual(purposeNames(eu.signal.purposes), ["storage", "measurement"]);
  assert.equal(eu.signal.cmpId, 12);
  // gpp_sid says which sections apply: the EU section outside it grants nothing.
  const outside = decoder.decode({ gpp: gppTcfEu([1, 8]), gpp_sid: [7] });
  assert.equal(outside.signal.purposes, 0);
});

Deno.test("ConsentDecoder maps named purposes and ids, ignoring unknown names", () => {
  const { signal } = new ConsentDecoder(undefined).decode({
    purposes: {
      storage: true,
      measurement: true,
      "10": true,
      personalised_ads: false,
      nonsense: true,
    },
  });
  assert.deepEqual(purposeNames(signal.purposes), [
    "storage",
    "measurement",
    "product_development",
  ]);
  assert.equal(signal.stringHash, null);
});

Deno.test("ConsentDecoder caches decodes by string and stays bounded", () => {
  const decoder = new ConsentDecoder(undefined, 3);
  const text = tcString([1, 8]);
  const first = decoder.decode({ tcf: text });
  assert.equal(decoder.decode({ tcf: text }), first, "the same decode, not decoded again");
  for (let i = 0; i < 10; i++) decoder.decode({ tcf: `bad-${i}` });
  assert.equal(decoder.cachedCount, 3);
});
