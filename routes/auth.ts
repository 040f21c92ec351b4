/**
 * Bearer-token roles and named tokens. `API_TOKENS` entries (`role:name:secret`) name each caller;
 * the older `INGEST_TOKENS` (role `ingest`) and `READ_TOKENS` (role `privacy`, which reaches what the
 * old read role reached) still work. Secrets are compared in constant time. With no token configured
 * at all, auth is off (and the server says so loudly at start).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";

/** Every role, least to most powerful. */
export const ROLES = ["ingest", "analyst", "privacy", "admin"] as const;

/** A caller's role: `ingest` sends events, `analyst` reads stats, `privacy` also reads compliance
 * data and records privacy requests, `admin` reaches everything (audit and metrics too). */
export type Role = (typeof ROLES)[number];

/** One configured bearer token: who holds it, what it may do, and its secret. */
export interface ApiToken {
  role: Role;
  name: string;
  secret: string;
}

/** The authenticated caller of a request, as later middleware reads it from the context. */
export interface Principal {
  name: string;
  role: Role;
}

declare module "hono" {
  interface ContextVariableMap {
    /** Set by {@link authenticate} for a valid token (or for everyone while auth is off). */
    principal: Principal | undefined;
  }
}

/** Tokens per source; see {@link resolveTokens}. */
export interface AuthConfig {
  apiTokens: readonly ApiToken[];
  ingestTokens: readonly string[];
  readTokens: readonly string[];
}

/** The caller while auth is off: anyone may do anything. */
export const ANONYMOUS: Principal = { name: "anonymous", role: "admin" };

const NAME = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * Parses `API_TOKENS` (`role:name:secret,...`; the secret is everything after the second colon) into
 * tokens, or lists every problem. Problems name entries by position, never by content, so a secret
 * never reaches a log.
 */
export function parseApiTokens(
  text: string,
): { ok: true; tokens: ApiToken[] } | { ok: false; problems: string[] } {
  const entries = text.split(",").map((t) => t.trim()).filter((t) => t.length > 0);
  const problems: string[] = [];
  const tokens: ApiToken[] = [];
  const seen = new Set<string>();
  entries.forEach((entry, i) => {
    const at = `entry ${i + 1}`;
    const first = entry.indexOf(":");
    const second = first < 0 ? -1 : entry.indexOf(":", first + 1);
    if (second < 0) {
      problems.push(`${at} is not role:name:secret`);
      return;
    }
    const role = entry.slice(0, first).trim();
    const name = entry.slice(first + 1, second).trim();
    const secret = entry.slice(second + 1).trim();
    if (!(ROLES as readonly string[]).includes(role)) {
      const shown = NAME.test(role) ? `"${role}"` : "(not shown)";
      problems.push(`${at} has unknown role ${shown}: use ${ROLES.join(", ")}`);
      return;
    }
    if (!NAME.test(name)) {
      problems.push(`${at} needs a name of 1-64 letters, digits, _ . -`);
      return;
    }
    if (secret.length === 0) {
      problems.push(`${at} ("${name}") has an empty secret`);
      return;
    }
    if (seen.has(secret)) {
      problems.push(`${at} ("${name}") repeats the secret of an earlier entry`);
      return;
    }
    seen.add(secret);
    tokens.push({ role: role as Role, name, secret });
  });
  return problems.length === 0 ? { ok: true, tokens } : { ok: false, problems };
}

/** Every token the server accepts: `API_TOKENS`, then `INGEST_TOKENS` as `ingest-N` and
 * `READ_TOKENS` as `read-N` with the `privacy` role (stats, compliance and privacy, as before). */
export function resolveTokens(config: AuthConfig): ApiToken[] {
  return [
    ...config.apiTokens,
    ...config.ingestTokens.map((secret, i) => ({
      role: "ingest" as const,
      name: `ingest-${i + 1}`,
      secret,
    })),
    ...config.readTokens.map((secret, i) => ({
      role: "privacy" as const,
      name: `read-${i + 1}`,
      secret,
    })),
  ];
}

/** True when at least one token is configured, i.e. requests must authenticate. */
export function isAuthEnabled(config: AuthConfig): boolean {
  return resolveTokens(config).length > 0;
}

/** SHA-256 of a secret: a fixed 32-byte length, so comparing digests leaks nothing about lengths. */
export function digestOf(secret: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(secret, "utf8").digest());
}

/** Compares two byte strings in time that depends only on their lengths (no early exit). */
export function isEqualConstantTime(a: Uint8Array, b: Uint8Array): boolean {
  let difference = a.length ^ b.length;
  const length = Math.max(a.length, b.length);
  for (let i = 0; i < length; i++) difference |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return difference === 0;
}

/**
 * Finds the token holding `secret`, hashing it once and comparing it with every configured digest,
 * always all of them, so timing tells nothing about which token or how much of it matched.
 */
export function findToken(
  tokens: readonly { digest: Uint8Array; principal: Principal }[],
  secret: string,
): Principal | undefined {
  const digest = digestOf(secret);
  let found: Principal | undefined;
  for (const token of tokens) {
    if (isEqualConstantTime(token.digest, digest)) found ??= token.principal;
  }
  return found;
}

/**
 * Middleware for every request: puts the caller's {@link Principal} into the context when the bearer
 * token is valid (or {@link ANONYMOUS} while auth is off). It refuses nothing; {@link requireRole}
 * does.
 */
export function authenticate(config: AuthConfig): MiddlewareHandler {
  const tokens = resolveTokens(config).map((t) => ({
    digest: digestOf(t.secret),
    principal: { name: t.name, role: t.role },
  }));
  const isEnabled = tokens.length > 0;
  return async (c, next) => {
    if (!isEnabled) {
      c.set("principal", ANONYMOUS);
      return await next();
    }
    const secret = bearerOf(c);
    if (secret !== undefined) c.set("principal", findToken(tokens, secret));
    return await next();
  };
}

/** Middleware answering 401 without a valid token and 403 for a role not in `roles` (admin always
 * passes). Runs after {@link authenticate}. */
export function requireRole(roles: readonly Role[]): MiddlewareHandler {
  const allowed: readonly Role[] = roles.includes("admin") ? roles : [...roles, "admin"];
  return async (c, next) => {
    const principal = c.get("principal");
    if (principal === undefined) {
      if (bearerOf(c) === undefined) {
        c.header("WWW-Authenticate", 'Bearer realm="ott-pipeline"');
        return c.json({
          error: "Missing bearer token: send 'Authorization: Bearer <token>'",
          issues: [],
        }, 401);
      }
      c.header("WWW-Authenticate", 'Bearer realm="ott-pipeline", error="invalid_token"');
      return c.json({ error: "Unknown bearer token", issues: [] }, 401);
    }
    if (allowed.includes(principal.role)) return await next();
    return c.json({
      error:
        `Cannot ${c.req.method} ${c.req.path}: needs one of the roles ${allowed.join(", ")}; ` +
        `token "${principal.name}" has role ${principal.role}`,
      issues: [],
    }, 403);
  };
}

/**
 * `GET /whoami`: who the token belongs to, for any valid token; `GET /status`: whether auth is on.
 * Mount under `/auth`.
 */
export function authRoutes(config: AuthConfig): Hono {
  const app = new Hono();
  const state = isAuthEnabled(config) ? "on" : "off";
  // Public: lets a page know whether to ask for a token before it calls anything (no 401 to log).
  app.get("/status", (c) => c.json({ auth: state }));
  app.use("/whoami", requireRole(ROLES));
  app.get("/whoami", (c) => {
    const principal = c.get("principal") ?? ANONYMOUS;
    return c.json({ name: principal.name, role: principal.role, auth: state });
  });
  return app;
}

function bearerOf(c: Context): string | undefined {
  const match = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "");
  return match === null ? undefined : match[1];
}
