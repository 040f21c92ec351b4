/**
 * One owner per PGlite data directory. PGlite has no lock of its own: two processes opening the same
 * directory both "succeed" and silently lose writes. An exclusive advisory lock (flock) on
 * `<dataDir>/.lock` makes the second opener fail at once, and the OS drops the lock when its owner
 * exits, even on kill -9, so a crash never leaves the directory stuck.
 *
 * @module
 */

/** Name of the lock file inside the data directory. */
export const LOCK_FILE_NAME = ".lock";

/** Thrown when another process (or another open in this one) already owns the data directory. */
export class DataDirInUseError extends Error {
  /** Pid written by the owner, `undefined` if it could not be read. */
  readonly ownerPid: number | undefined;

  constructor(dataDir: string, ownerPid: number | undefined) {
    const owner = ownerPid === undefined ? "" : ` (pid ${ownerPid})`;
    super(
      `Cannot open the data directory "${dataDir}": another server is using it${owner}; ` +
        "stop it or use another DATA_DIR",
    );
    this.name = "DataDirInUseError";
    this.ownerPid = ownerPid;
  }
}

/** A held data directory lock; {@link DataDirLock.release} is idempotent. */
export interface DataDirLock {
  /** Path of the lock file. */
  readonly path: string;
  /** Releases the lock by closing the file; the file itself stays (deleting it would race). */
  release(): void;
}

/**
 * Takes the exclusive lock on `dataDir` (created if missing) without waiting, and records this
 * process's pid in the lock file for the error message of the next opener.
 */
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  await Deno.mkdir(dataDir, { recursive: true });
  const path = `${dataDir}/${LOCK_FILE_NAME}`;
  // No `truncate` on open: the file must stay intact until the lock is ours, it holds the owner's pid.
  const file = await Deno.open(path, { read: true, write: true, create: true });
  let isLocked: boolean;
  try {
    isLocked = await file.tryLock(true);
  } catch (error) {
    file.close();
    throw new Error(`Cannot lock the data directory "${dataDir}": ${describe(error)}`, {
      cause: error,
    });
  }
  if (!isLocked) {
    file.close();
    throw new DataDirInUseError(dataDir, await readOwnerPid(path));
  }
  try {
    await file.truncate(0);
    await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  } catch (error) {
    file.close();
    throw new Error(`Cannot write the lock file "${path}": ${describe(error)}`, { cause: error });
  }
  let isReleased = false;
  return {
    path,
    release: () => {
      if (isReleased) return;
      isReleased = true;
      // Closing the descriptor drops the flock; nothing else holds it.
      file.close();
    },
  };
}

async function readOwnerPid(path: string): Promise<number | undefined> {
  try {
    const text = (await Deno.readTextFile(path)).trim();
    return /^\d+$/.test(text) ? Number(text) : undefined;
  } catch (error) {
    // The message is still correct without the pid; only its detail is lost.
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied) {
      return undefined;
    }
    throw error;
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
