import assert from "node:assert/strict";
import { openDatabase } from "./client.ts";
import { DataDirInUseError, LOCK_FILE_NAME, lockDataDir } from "./data_dir_lock.ts";
import { test } from "../tests/_permissions.ts";

const LOCK_MODULE = new URL("./data_dir_lock.ts", import.meta.url).href;

/** Runs `deno eval` that tries to lock `dataDir`, prints the outcome and exits. */
async function lockInSubprocess(dataDir: string): Promise<{ stdout: string; elapsedMs: number }> {
  const code = `
    import { lockDataDir } from ${JSON.stringify(LOCK_MODULE)};
    try {
      const lock = await lockDataDir(${JSON.stringify(dataDir)});
      console.log("locked");
      lock.release();
    } catch (error) {
      console.log(error.message);
    }`;
  const startedMs = Date.now();
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--allow-read", "--allow-write", code],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.equal(output.code, 0);
  return {
    stdout: new TextDecoder().decode(output.stdout).trim(),
    elapsedMs: Date.now() - startedMs,
  };
}

function killIfRunning(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch (error) {
    if (!(error instanceof TypeError)) throw error; // already exited
  }
}

test("lockDataDir() refuses a second owner in another process at once, naming the pid", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-lock-" });
  const lock = await lockDataDir(dataDir);
  try {
    const { stdout, elapsedMs } = await lockInSubprocess(dataDir);
    assert.equal(
      stdout,
      `Cannot open the data directory "${dataDir}": another server is using it (pid ${Deno.pid}); ` +
        "stop it or use another DATA_DIR",
    );
    // Process start-up included; a blocking lock would never return at all.
    assert.ok(elapsedMs < 10_000, `second opener took ${elapsedMs} ms`);
  } finally {
    lock.release();
    await Deno.remove(dataDir, { recursive: true });
  }
});

test("lockDataDir() refuses a second open in the same process", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-lock-" });
  const lock = await lockDataDir(dataDir);
  try {
    await assert.rejects(lockDataDir(dataDir), (error) => {
      assert.ok(error instanceof DataDirInUseError);
      assert.equal(error.ownerPid, Deno.pid);
      return true;
    });
  } finally {
    lock.release();
    await Deno.remove(dataDir, { recursive: true });
  }
});

test("lockDataDir() can be taken again once released", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-lock-" });
  try {
    const first = await lockDataDir(`${dataDir}/nested`);
    first.release();
    first.release(); // idempotent
    assert.equal((await lockInSubprocess(`${dataDir}/nested`)).stdout, "locked");
    const second = await lockDataDir(`${dataDir}/nested`);
    second.release();
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

test("lockDataDir() is not blocked by the lock file of a process killed with SIGKILL", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-lock-" });
  const code = `
    import { lockDataDir } from ${JSON.stringify(LOCK_MODULE)};
    await lockDataDir(${JSON.stringify(dataDir)});
    console.log("locked");
    setInterval(() => {}, 1_000);`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--allow-read", "--allow-write", code],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const first = await reader.read();
    assert.equal(first.value?.trim(), "locked");
    await assert.rejects(lockDataDir(dataDir), DataDirInUseError);
    child.kill("SIGKILL");
    assert.equal((await child.status).signal, "SIGKILL");
    await reader.cancel();
    // The dead owner's pid is still in the file; only the OS lock matters.
    const stalePid = Number((await Deno.readTextFile(`${dataDir}/${LOCK_FILE_NAME}`)).trim());
    assert.equal(stalePid, child.pid);
    const lock = await lockDataDir(dataDir);
    assert.equal((await Deno.readTextFile(lock.path)).trim(), String(Deno.pid));
    lock.release();
  } finally {
    killIfRunning(child);
    await child.status;
    await Deno.remove(dataDir, { recursive: true });
  }
});

test("openDatabase() owns a PGlite data directory until db.destroy(), even with no query run", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-lock-pglite-" });
  try {
    const { db } = await openDatabase({ databaseUrl: undefined, dataDir });
    try {
      await assert.rejects(
        openDatabase({ databaseUrl: undefined, dataDir }),
        (error) => error instanceof DataDirInUseError && error.ownerPid === Deno.pid,
      );
    } finally {
      await db.destroy();
    }
    const lock = await lockDataDir(dataDir);
    lock.release();
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
