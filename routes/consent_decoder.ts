/**
 * Decoding the consent signals TVs send, with the IAB's own libraries: TCF v2 TC strings with
 * `@iabtechlabtcf/core`, GPP strings with `@iabgpp/cmpapi`'s `GppModel` (its `CmpApi` needs a
 * browser window). Decodes are cached by string, since a TV sends the same string with every
 * event. A string that does not decode grants nothing and is named, never an error.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { GppModel, Sections } from "@iabgpp/cmpapi";
import { TCString } from "@iabtechlabtcf/core";
import { type ConsentSignal, MAX_PURPOSE_ID, purposeIdOf } from "../rules/consent.ts";

/** A consent signal as an event carries it on the wire (one of the three forms). */
export type WireConsent =
  | { tcf: string }
  | { gpp: string; gpp_sid?: number[] }
  | { purposes: Record<string, boolean> };

/** A decoded signal and what the ingest answer should say about it. */
export interface DecodedConsent {
  signal: ConsentSignal;
  /** Why the signal grants nothing (a string that does not decode), or null. */
  problem: string | null;
}

/** GPP section of the EU TCF v2 (GPP section id 2). */
const GPP_TCF_EU = "tcfeuv2";
/** GPP section of the US Privacy String (id 6), whose sale opt-out is a "Y" / "N" / "-" letter. */
const GPP_USP = "uspv1";

/** Decodes consent signals, caching each distinct string's decode. */
export class ConsentDecoder {
  #vendorId: number | undefined;
  #maxCached: number;
  #cache = new Map<string, DecodedConsent>();

  /** `vendorId`: the TCF vendor whose consent is also read (`CONSENT_VENDOR_ID`). */
  constructor(vendorId: number | undefined, maxCached = 10_000) {
    this.#vendorId = vendorId;
    this.#maxCached = maxCached;
  }

  /** Distinct strings whose decode is cached. */
  get cachedCount(): number {
    return this.#cache.size;
  }

  /** Decodes one wire signal. */
  decode(wire: WireConsent): DecodedConsent {
    if ("purposes" in wire) return this.#purposes(wire.purposes);
    const key = "tcf" in wire ? `t${wire.tcf}` : `g${wire.gpp_sid?.join(",") ?? ""}|${wire.gpp}`;
    const cached = this.#cache.get(key);
    if (cached !== undefined) return cached;
    const decoded = "tcf" in wire ? this.#tcf(wire.tcf) : this.#gpp(wire.gpp, wire.gpp_sid);
    // Oldest first out: a bounded cache however many distinct strings arrive.
    if (this.#cache.size >= this.#maxCached) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(key, decoded);
    return decoded;
  }

  #purposes(purposes: Record<string, boolean>): DecodedConsent {
    let mask = 0;
    for (const [name, isGranted] of Object.entries(purposes)) {
      const id = purposeIdOf(name);
      if (id !== null && isGranted) mask |= 1 << (id - 1);
    }
    return {
      signal: {
        ...EMPTY,
        source: "purposes",
        purposes: mask,
        isDecoded: true,
        // Named purposes name no vendor: the platform's own processing is what they cover.
        vendorConsent: null,
      },
      problem: null,
    };
  }

  #tcf(text: string): DecodedConsent {
    const base = { ...EMPTY, source: "tcf" as const, stringHash: hashOf(text) };
    try {
      const model = TCString.decode(text);
      let mask = 0;
      model.purposeConsents.forEach((isGranted: boolean, id: number) => {
        if (isGranted && id >= 1 && id <= MAX_PURPOSE_ID) mask |= 1 << (id - 1);
      });
      return {
        signal: {
          ...base,
          purposes: mask,
          isDecoded: true,
          vendorConsent: this.#vendorId === undefined
            ? null
            : model.vendorConsents.has(this.#vendorId),
          cmpId: numberOrNull(Number(model.cmpId)),
          cmpVersion: numberOrNull(Number(model.cmpVersion)),
          policyVersion: numberOrNull(Number(model.policyVersion)),
        },
        problem: null,
      };
    } catch (error) {
      return { signal: base, problem: `consent.tcf does not decode: ${describe(error)}` };
    }
  }

  #gpp(text: string, applicable: number[] | undefined): DecodedConsent {
    const base = { ...EMPTY, source: "gpp" as const, stringHash: hashOf(text) };
    try {
      // GppModel decodes sections lazily, and accepts strings that name no section: every field
      // read here may throw, and a string with no section is refused.
      const model = new GppModel(text);
      const ids: number[] = model.getSectionIds();
      const inForce = ids.filter((id) => applicable === undefined || applicable.includes(id));
      if (ids.length === 0) throw new Error("it names no section");
      const names = new Set(
        inForce.map((id) => SECTION_NAMES.get(id)).filter((n) => n !== undefined),
      );
      const signal: ConsentSignal = { ...base, isDecoded: true };
      if (names.has(GPP_TCF_EU)) {
        const consents = model.getFieldValue(GPP_TCF_EU, "PurposeConsents") as boolean[];
        consents.forEach((isGranted, i) => {
          if (isGranted && i < MAX_PURPOSE_ID) signal.purposes |= 1 << i;
        });
        if (this.#vendorId !== undefined) {
          const vendors = model.getFieldValue(GPP_TCF_EU, "VendorConsents") as number[];
          signal.vendorConsent = vendors.includes(this.#vendorId);
        }
        signal.cmpId = numberOrNull(model.getFieldValue(GPP_TCF_EU, "CmpId"));
        signal.cmpVersion = numberOrNull(model.getFieldValue(GPP_TCF_EU, "CmpVersion"));
        signal.policyVersion = numberOrNull(model.getFieldValue(GPP_TCF_EU, "PolicyVersion"));
      }
      for (const name of names) {
        if (name === GPP_TCF_EU) continue;
        if (name === GPP_USP) {
          if (model.getFieldValue(GPP_USP, "OptOutSale") === "Y") signal.isOptOutSaleShare = true;
          continue;
        }
        if (!name.startsWith("us")) continue;
        // US national and state sections: 1 is "opted out" (0 not applicable, 2 did not opt out).
        for (const field of ["SaleOptOut", "SharingOptOut"]) {
          if (model.hasField(name, field) && model.getFieldValue(name, field) === 1) {
            signal.isOptOutSaleShare = true;
          }
        }
        if (model.hasField(name, "Gpc") && model.getFieldValue(name, "Gpc") === true) {
          signal.isOptOutSaleShare = true;
        }
      }
      return { signal, problem: null };
    } catch (error) {
      return { signal: base, problem: `consent.gpp does not decode: ${describe(error)}` };
    }
  }
}

/** A signal that grants nothing; decoders fill in what they read. */
const EMPTY: Omit<ConsentSignal, "source"> = {
  purposes: 0,
  vendorConsent: null,
  isDecoded: false,
  cmpId: null,
  cmpVersion: null,
  policyVersion: null,
  stringHash: null,
  isOptOutSaleShare: false,
};

/** GPP section ids to names, as the library names them (`tcfeuv2`, `usnat`, `usca`, ...). */
const SECTION_NAMES: ReadonlyMap<number, string> = Sections.SECTION_ID_NAME_MAP;

function hashOf(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 32);
}

function numberOrNull(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  // Library messages may quote the whole string: keep the answer short.
  return message.length > 120 ? `${message.slice(0, 117)}...` : message;
}
