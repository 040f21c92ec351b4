/**
 * Real consent strings for tests, made with the IAB's own libraries: TC strings encoded by
 * `@iabtechlabtcf/core` against the small vendor list kept beside this file (encoding needs a
 * GVL, and tests cannot download one), GPP strings by `@iabgpp/cmpapi`'s `GppModel`.
 *
 * @module
 */
import { GppModel } from "@iabgpp/cmpapi";
import { GVL, TCModel, TCString } from "@iabtechlabtcf/core";
import vendorList from "./vendor_list.json" with { type: "json" };

/** The measurement vendor of the fixture vendor list. */
export const TEST_VENDOR_ID = 755;

/** A TC string granting consent to `purposes` (and to `vendors`), from CMP `cmpId`. */
export function tcString(
  purposes: number[],
  options: { vendors?: number[]; cmpId?: number; cmpVersion?: number } = {},
): string {
  const model = new TCModel(new GVL(structuredClone(vendorList) as never));
  model.cmpId = options.cmpId ?? 31;
  model.cmpVersion = options.cmpVersion ?? 2;
  model.purposeConsents.set(purposes);
  for (const vendor of options.vendors ?? []) model.vendorConsents.set(vendor);
  return TCString.encode(model);
}

/** A GPP string with the US national section: opted out of sale and/or sharing, or GPC set. */
export function gppUsNat(
  options: { saleOptOut?: boolean; sharingOptOut?: boolean; gpc?: boolean } = {},
): string {
  const model = new GppModel();
  model.setFieldValue("usnat", "SaleOptOutNotice", 1);
  model.setFieldValue("usnat", "SaleOptOut", options.saleOptOut ? 1 : 2);
  model.setFieldValue("usnat", "SharingOptOutNotice", 1);
  model.setFieldValue("usnat", "SharingOptOut", options.sharingOptOut ? 1 : 2);
  if (options.gpc) {
    model.setFieldValue("usnat", "GpcSegmentIncluded", true);
    model.setFieldValue("usnat", "Gpc", true);
  }
  return model.encode();
}

/** A GPP string with the EU TCF section granting `purposes`, from CMP `cmpId`. */
export function gppTcfEu(purposes: number[], cmpId = 31): string {
  const model = new GppModel();
  model.setFieldValue("tcfeuv2", "CmpId", cmpId);
  model.setFieldValue("tcfeuv2", "CmpVersion", 2);
  model.setFieldValue("tcfeuv2", "PolicyVersion", 5);
  model.setFieldValue(
    "tcfeuv2",
    "PurposeConsents",
    Array.from({ length: 24 }, (_, i) => purposes.includes(i + 1)),
  );
  return model.encode();
}
