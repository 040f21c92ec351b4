/**
 * `COPY ... FROM STDIN` in one socket write and one round trip. pg-copy-streams sends the query,
 * waits for the server's CopyInResponse, then writes the data and CopyDone: two round trips and four
 * writes, which is most of a small group's cost. The protocol lets a client send all three at once:
 * if the statement fails before reading its input, the server drops the CopyData and CopyDone that
 * follow. The query text may hold more statements after the COPY; PostgreSQL runs the statements of
 * one simple Query in one implicit transaction, so they commit, or fail, together with the COPY.
 *
 * @module
 */
// @ts-types="@types/pg"
import type pg from "pg";

const encoder = new TextEncoder();

/** Protocol message types (frontend): simple query, copy data, copy done. */
const QUERY = 0x51;
const COPY_DATA = 0x64;
const COPY_DONE = 0x63;

/**
 * Runs `text`, whose first statement is a `COPY ... FROM STDIN`, with `data` (COPY text format) as
 * its input; resolves with each statement's command tag (`COPY 3`, `SELECT 1`), rejects with the
 * server's error, after which the connection is usable again.
 */
export function copyInOneTrip(
  client: pg.ClientBase,
  text: string,
  data: string,
): Promise<string[]> {
  const copy = new OneTripCopy(text, data);
  client.query(copy);
  return copy.done;
}

/** A pg "submittable": pg calls `submit` when the connection is free, then the handlers. */
class OneTripCopy {
  readonly done: Promise<string[]>;
  #message: Uint8Array;
  #tags: string[] = [];
  #resolve!: (tags: string[]) => void;
  #reject!: (error: unknown) => void;

  constructor(text: string, data: string) {
    this.#message = oneTripMessage(text, data);
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  submit(connection: pg.Connection): void {
    (connection as unknown as { stream: { write(bytes: Uint8Array): boolean } }).stream.write(
      this.#message,
    );
  }

  // The data is already on its way; rows of later statements are not needed, only their tags.
  handleCopyInResponse(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}

  handleCommandComplete(message: { text: string }): void {
    this.#tags.push(message.text);
  }

  // pg hands the error over and forgets the query, so this is the last call it gets.
  handleError(error: unknown): void {
    this.#reject(error);
  }

  handleReadyForQuery(): void {
    this.#resolve(this.#tags);
  }

  /** pg replaces this to cancel its query timeout, when one is configured. */
  callback(): void {}
}

/**
 * The Query message, then one CopyData holding `data`, then CopyDone, in one buffer; `data` is
 * UTF-8 encoded straight into it (no intermediate copy of a group's megabytes).
 */
export function oneTripMessage(text: string, data: string): Uint8Array {
  const query = encoder.encode(text);
  const header = 1 + 4 + query.length + 1 + 1 + 4;
  // UTF-8 takes at most 3 bytes per UTF-16 code unit.
  const bytes = new Uint8Array(header + data.length * 3 + 1 + 4);
  const { written } = encoder.encodeInto(data, bytes.subarray(header));
  const view = new DataView(bytes.buffer);
  bytes[0] = QUERY;
  view.setUint32(1, 4 + query.length + 1);
  bytes.set(query, 5);
  bytes[5 + query.length] = 0;
  bytes[header - 5] = COPY_DATA;
  view.setUint32(header - 4, 4 + written);
  const end = header + written;
  bytes[end] = COPY_DONE;
  view.setUint32(end + 1, 4);
  return bytes.subarray(0, end + 5);
}
