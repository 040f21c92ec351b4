/**
 * `GET /dashboard`: a page for operators and privacy reviewers on top of the read APIs. The page and
 * its assets hold no data (every number comes from the API with the viewer's token), so they are
 * served without auth; the chart library (uPlot) comes from its npm package: no CDN.
 *
 * @module
 */
import { Hono } from "hono";

const PAGE = new URL("./dashboard/page.html", import.meta.url);

const ASSETS: Record<string, { url: URL; type: string }> = {
  "app.js": { url: new URL("./dashboard/app.js", import.meta.url), type: "text/javascript" },
  "style.css": { url: new URL("./dashboard/style.css", import.meta.url), type: "text/css" },
  "uPlot.iife.min.js": {
    url: new URL("../node_modules/uplot/dist/uPlot.iife.min.js", import.meta.url),
    type: "text/javascript",
  },
  "uPlot.min.css": {
    url: new URL("../node_modules/uplot/dist/uPlot.min.css", import.meta.url),
    type: "text/css",
  },
};

/** The dashboard page and its assets, read once and kept in memory. */
export function dashboardRoutes(): Hono {
  const app = new Hono();
  const cache = new Map<string, Uint8Array<ArrayBuffer>>();
  const read = async (key: string, url: URL): Promise<Uint8Array<ArrayBuffer>> => {
    let bytes = cache.get(key);
    if (bytes === undefined) {
      bytes = await Deno.readFile(url) as Uint8Array<ArrayBuffer>;
      cache.set(key, bytes);
    }
    return bytes;
  };
  app.get("/dashboard", async (c) => {
    return c.body(await read("page", PAGE), 200, {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-cache",
    });
  });
  app.get("/dashboard/assets/:file", async (c) => {
    const file = c.req.param("file");
    // Own keys only: `constructor` or `toString` must not look like assets.
    const asset = Object.hasOwn(ASSETS, file) ? ASSETS[file] : undefined;
    if (asset === undefined) {
      return c.json({
        error: `Not found: dashboard asset ${JSON.stringify(file.slice(0, 64))}`,
        issues: [],
      }, 404);
    }
    try {
      return c.body(await read(file, asset.url), 200, {
        "content-type": `${asset.type}; charset=utf-8`,
        "cache-control": "no-cache",
      });
    } catch {
      // The error names the server's own path: the answer does not.
      return c.json({
        error: `Cannot serve "${file}": its npm package is missing; run \`deno install\``,
        issues: [],
      }, 503);
    }
  });
  return app;
}
