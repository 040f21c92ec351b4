import assert from "node:assert/strict";
import { lockDataDir } from "../db/data_dir_lock.ts";
import { freePort, spawnServer } from "./_server_process.ts";
import { test } from "./_permissions.ts";

test("[lock] a second server on the same DATA_DIR exits at once and the first keeps serving", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ott-lock-e2e-" });
  const env = { DATA_DIR: dataDir, QUEUE: "postgres", WORKERS: "1" };
  const first = await spawnServer(env);
  try {
    const startedMs = Date.now();
    const second = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        "--allow-read",
        "--allow-write",
        "--allow-sys",
        new URL("../main.ts", import.meta.url).pathname,
        "--port",
        String(freePort()),
      ],
      env: { LISTEN_HOST: "127.0.0.1", IP_HASH_SECRET: "fault-test-secret-0123456789", ...env },
      stdout: "null",
      stderr: "piped",
      // A second server that waited for the lock (or started) would be killed here and fail below.
      signal: AbortSignal.timeout(30_000),
    }).output();
    const elapsedMs = Date.now() - startedMs;
    const stderr = new TextDecoder().decode(second.stderr);
    assert.equal(second.code, 1, stderr);
    assert.ok(
      stderr.includes(
        `Cannot open the data directory "${dataDir}": another server is using it ` +
          `(pid ${first.child.pid}); stop it or use another DATA_DIR`,
      ),
      stderr,
    );
    // Process start-up and module loading included; the lock itself is refused without waiting.
    assert.ok(elapsedMs < 15_000, `second server took ${elapsedMs} ms to give up`);

    for (const path of ["/healthz", "/readyz"]) {
      const res = await fetch(`${first.url}${path}`);
      await res.body?.cancel();
      assert.equal(res.status, 200, `first server ${path} after the second one's attempt`);
    }
  } finally {
    first.kill("SIGTERM");
    const stderr = await first.exited();
    const status = await first.child.status;
    try {
      assert.equal(status.code, 0, `first server did not stop cleanly: ${stderr}`);
      // Stopped cleanly means released: the directory can be owned again.
      const lock = await lockDataDir(dataDir);
      lock.release();
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  }
});
