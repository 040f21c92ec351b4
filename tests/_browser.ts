/**
 * A real headless Chromium driven over the DevTools protocol (no browser library needed): open a
 * page, evaluate script in it, collect console errors and failed loads, take screenshots.
 *
 * @module
 */

/** Where Debian's `chromium` package puts the browser, or `CHROMIUM_PATH`. */
export function chromiumPath(): string | null {
  const candidates = [
    Deno.env.get("CHROMIUM_PATH"),
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
  ];
  for (const path of candidates) {
    if (path === undefined) continue;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return null;
}

/** One open tab. */
export interface Tab {
  /** Loads `url` and resolves after its load event, with the time that took in ms. */
  open(url: string): Promise<number>;
  /** Evaluates an expression in the page and returns its (JSON-serialisable) value. */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is truthy, or throws after `ms`. */
  waitFor(expression: string, ms?: number): Promise<void>;
  /** PNG bytes of the visible page. */
  screenshot(): Promise<Uint8Array>;
  /** Console errors, uncaught exceptions and failed loads (4xx/5xx) seen so far. */
  errors: string[];
}

/** A running headless Chromium with one tab; `close()` kills it and removes its profile. */
export interface Browser {
  tab: Tab;
  close(): Promise<void>;
}

/** Starts Chromium headless with a throwaway profile and connects to its first tab. */
export async function launchBrowser(executable: string): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "ott-chromium-" });
  const child = new Deno.Command(executable, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--no-first-run",
      "--window-size=1280,1400",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "about:blank",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const close = async () => {
    try {
      child.kill("SIGKILL");
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
    }
    await child.status;
    await Deno.remove(profile, { recursive: true }).catch(() => undefined);
  };
  try {
    const port = await devtoolsPort(child.stderr);
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as Array<
      { type: string; webSocketDebuggerUrl: string }
    >;
    const page = targets.find((t) => t.type === "page");
    if (page === undefined) throw new Error("Cannot drive Chromium: it opened no page");
    const tab = await connect(page.webSocketDebuggerUrl);
    return {
      tab,
      close: async () => {
        tab.close();
        await close();
      },
    };
  } catch (error) {
    await close();
    throw error;
  }
}

async function devtoolsPort(stderr: ReadableStream<Uint8Array>): Promise<number> {
  const decoder = new TextDecoder();
  let text = "";
  const reader = stderr.getReader();
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value);
    const match = /DevTools listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(text);
    if (match !== null) {
      // Keep draining stderr so Chromium never blocks on a full pipe.
      (async () => {
        while (!(await reader.read()).done) { /* discard */ }
      })().catch(() => undefined);
      return Number(match[1]);
    }
  }
  throw new Error(
    `Cannot drive Chromium: no DevTools port announced. Output: ${text.slice(0, 500)}`,
  );
}

async function connect(url: string): Promise<Tab & { close(): void }> {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error(`Cannot connect to ${url}`));
  });
  let nextId = 1;
  const pending = new Map<number, (message: Record<string, unknown>) => void>();
  const listeners = new Set<(method: string, params: Record<string, unknown>) => void>();
  const errors: string[] = [];
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data as string);
    if (message.id !== undefined) pending.get(message.id)?.(message);
    else for (const listener of listeners) listener(message.method, message.params);
  };
  const send = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, (message) => {
        pending.delete(id);
        if (message.error !== undefined) {
          reject(new Error(`${method}: ${JSON.stringify(message.error)}`));
        } else resolve(message.result as Record<string, unknown>);
      });
      socket.send(JSON.stringify({ id, method, params }));
    });
  listeners.add((method, params) => {
    if (method === "Runtime.consoleAPICalled" && params.type === "error") {
      const args = params.args as Array<{ value?: unknown; description?: string }>;
      errors.push(`console.error: ${args.map((a) => a.value ?? a.description).join(" ")}`);
    } else if (method === "Runtime.exceptionThrown") {
      const details = params.exceptionDetails as {
        text: string;
        exception?: { description?: string };
      };
      errors.push(`exception: ${details.exception?.description ?? details.text}`);
    } else if (method === "Log.entryAdded") {
      const entry = params.entry as { level: string; text: string; url?: string };
      if (entry.level === "error") errors.push(`log: ${entry.text} ${entry.url ?? ""}`);
    }
  });
  await send("Runtime.enable");
  await send("Log.enable");
  await send("Page.enable");
  const evaluate = async <T>(expression: string): Promise<T> => {
    const result = await send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    }) as { result: { value: T }; exceptionDetails?: { text: string } };
    if (result.exceptionDetails !== undefined) {
      throw new Error(`Cannot evaluate "${expression}": ${result.exceptionDetails.text}`);
    }
    return result.result.value;
  };
  return {
    errors,
    evaluate,
    open: async (target) => {
      const started = performance.now();
      const loaded = new Promise<void>((resolve) => {
        const listener = (method: string) => {
          if (method !== "Page.loadEventFired") return;
          listeners.delete(listener);
          resolve();
        };
        listeners.add(listener);
      });
      await send("Page.navigate", { url: target });
      await loaded;
      return performance.now() - started;
    },
    waitFor: async (expression, ms = 15_000) => {
      const deadline = Date.now() + ms;
      while (!(await evaluate<boolean>(`Boolean(${expression})`))) {
        if (Date.now() > deadline) throw new Error(`Timed out waiting for ${expression}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    screenshot: async () => {
      const { data } = await send("Page.captureScreenshot", { format: "png" }) as { data: string };
      return Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    },
    close: () => socket.close(),
  };
}
