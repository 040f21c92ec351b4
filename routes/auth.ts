/**
 * Bearer-token roles: `ingest` for TVs, `read` for analysts and privacy staff. With no tokens
 * configured at all, auth is off (and the server says so loudly at start).
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";

/** A caller's role. */
export type Role = "ingest" | "read";

/** Tokens per role. */
export interface AuthConfig {
  ingestTokens: readonly string[];
  readTokens: readonly string[];
}

/** True when at least one token is configured, i.e. requests must authenticate. */
export function isAuthEnabled(config: AuthConfig): boolean {
  return config.ingestTokens.length > 0 || config.readTokens.length > 0;
}

/** Middleware answering 401 for a missing or unknown token and 403 for a token of another role. */
export function requireRole(role: Role, config: AuthConfig): MiddlewareHandler {
  const enabled = isAuthEnabled(config);
  const mine = new Set(role === "ingest" ? config.ingestTokens : config.readTokens);
  const theirs = new Set(role === "ingest" ? config.readTokens : config.ingestTokens);
  return async (c, next) => {
    if (!enabled) return await next();
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (match === null) {
      c.header("WWW-Authenticate", 'Bearer realm="ott-pipeline"');
      return c.json({ error: "Missing bearer token: send 'Authorization: Bearer <token>'" }, 401);
    }
    const token = match[1];
    if (mine.has(token)) return await next();
    if (theirs.has(token)) {
      return c.json({ error: `Token not allowed: this endpoint needs the ${role} role` }, 403);
    }
    c.header("WWW-Authenticate", 'Bearer realm="ott-pipeline", error="invalid_token"');
    return c.json({ error: "Unknown bearer token" }, 401);
  };
}
