/**
 * Redis stream ids (`<ms>-<seq>`) as log positions: one number that orders like the id, so
 * checkpoints and replay checks work the same for every log backend.
 *
 * @module
 */

/** Sequence numbers per millisecond that fit; Redis assigns far fewer to one stream in practice. */
const SEQ_SPACE = 4096;

/** Encodes a stream id as a position; throws if it does not fit exactly. */
export function positionOfStreamId(id: string): number {
  const dash = id.indexOf("-");
  const ms = Number(id.slice(0, dash));
  const seq = Number(id.slice(dash + 1));
  if (dash < 0 || !Number.isSafeInteger(ms) || !Number.isInteger(seq) || seq >= SEQ_SPACE) {
    throw new RangeError(
      `Cannot use stream id "${id}" as a log position: expected <ms>-<seq < 4096>`,
    );
  }
  return ms * SEQ_SPACE + seq;
}

/** The stream id of a position (0 is the start of a stream, `0-0`). */
export function streamIdOfPosition(position: number): string {
  return `${Math.floor(position / SEQ_SPACE)}-${position % SEQ_SPACE}`;
}
