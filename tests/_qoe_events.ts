/**
 * Events of QoE views for the end-to-end tests: one TV per viewer, title `title-q` on `cdn-a`
 * (tizen 7.1) unless told otherwise.
 */
import { makeWireEvent, type WireEvent } from "./fixtures.ts";

/** One event of a view on TV `tv`, `ms` after `t0`. */
export type ViewEventMaker = (
  t0: number,
  tv: string,
  ms: number,
  type: string,
  more?: Partial<WireEvent>,
) => WireEvent;

/** A maker of view events with ids `<idPrefix><n>` and `defaults` over the fields above. */
export function viewEventMaker(
  idPrefix: string,
  defaults: (tv: string) => Partial<WireEvent> = () => ({}),
): ViewEventMaker {
  let n = 0;
  return (t0, tv, ms, type, more = {}) =>
    makeWireEvent({
      event_id: `${idPrefix}${++n}`,
      user_id: `viewer-${tv}`,
      device_id: tv,
      content_id: "title-q",
      event_type: type,
      atMs: t0 + ms,
      extra_metadata: { platform: "tizen", app_version: "7.1" },
      cdn: "cdn-a",
      ...defaults(tv),
      ...more,
    });
}
