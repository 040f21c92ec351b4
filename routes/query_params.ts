/**
 * Checks shared by the query and path parameters of the analytics and compliance reads. Free text is
 * held to the rules of the event ids (1-128 characters, no control characters, well-formed Unicode),
 * so nothing PostgreSQL refuses (a NUL, a lone surrogate) reaches a query; each refusal names the
 * parameter and quotes what was received, JSON-escaped.
 *
 * @module
 */
import type { Context } from "hono";
import { z } from "zod";

/** Longest part of a received value quoted back in an error message. */
const QUOTED_MAX = 64;

// deno-lint-ignore no-control-regex
const CONTROL_CHAR = /[\u0000-\u001f\u007f]/;

/** One problem of a refused request, as the 400 answers list them. */
export interface Issue {
  path: string;
  message: string;
}

/** Quotes a received value for an error message: JSON-escaped (`"a\u0000b"`), cut if long. */
export function quote(value: string): string {
  if (value.length <= QUOTED_MAX) return JSON.stringify(value);
  return `${JSON.stringify(value.slice(0, QUOTED_MAX))}... (${value.length} characters)`;
}

/** Lists choices for a message: `a, b or c`. */
export function choices(values: readonly string[]): string {
  return values.length < 2
    ? values.join("")
    : `${values.slice(0, -1).join(", ")} or ${values[values.length - 1]}`;
}

/** Why `value` is refused as the text parameter `name` of at most `max` characters, or null. */
export function textRefusal(name: string, value: string, max = 128): string | null {
  const problem = value.length === 0
    ? "must not be empty"
    : value.length > max
    ? `must be at most ${max} characters`
    : CONTROL_CHAR.test(value)
    ? "must not contain control characters"
    : !value.isWellFormed()
    ? "must be well-formed Unicode"
    : null;
  return problem === null ? null : `Invalid ${name}: ${problem}, received ${quote(value)}`;
}

/** A free-text parameter `name`: 1-`max` characters, no control characters, well-formed Unicode. */
export function textParam(name: string, max = 128): z.ZodString {
  return z.string({
    error: (issue) => requiredOr(name, issue.input, `text of 1-${max} characters`),
  })
    .check((ctx) => {
      const refusal = textRefusal(name, ctx.value, max);
      if (refusal !== null) ctx.issues.push({ code: "custom", input: ctx.value, message: refusal });
    });
}

/** A parameter `name` that must be one of `values`; a refusal lists them. */
export function choiceParam<const T extends readonly [string, ...string[]]>(
  name: string,
  values: T,
): z.ZodEnum<{ [K in T[number]]: K }> {
  return z.enum(values, {
    error: (issue) =>
      issue.input === undefined
        ? `${name} is required: one of ${choices(values)}`
        : `Invalid ${name}: expected one of ${choices(values)}, received ${
          quote(String(issue.input))
        }`,
  }) as z.ZodEnum<{ [K in T[number]]: K }>;
}

/** A whole-number parameter `name` from `min` to `max`, given in decimal. */
export function countParam(name: string, min: number, max: number) {
  const message = `Invalid ${name}: expected a whole number from ${min} to ${max}`;
  return z.coerce.number({ error: message }).int({ error: message }).min(min, { error: message })
    .max(max, { error: message });
}

/** The message of a parameter that is absent (`name is required: what`), else undefined. */
export function requiredOr(name: string, input: unknown, what: string): string | undefined {
  return input === undefined ? `${name} is required: ${what}` : undefined;
}

/** The issues of a refused zod parse, each with its dotted path (`(root)` for the whole). */
export function issuesOf(error: z.ZodError): Issue[] {
  return error.issues.map((i) => ({ path: i.path.join(".") || "(root)", message: i.message }));
}

/** Answers 400 with `error`, listed as the one issue of parameter `path` when one is named. */
export function badRequest(c: Context, error: string, path?: string): Response {
  return c.json({ error, issues: path === undefined ? [] : [{ path, message: error }] }, 400);
}

/**
 * The query parameters that are not blank: an empty one (`?rule=&level=`) means no filter, as a
 * form with blank fields sends it.
 */
export function givenQuery(c: Context): Record<string, string> {
  return Object.fromEntries(
    Object.entries(c.req.query()).filter(([, value]) => value.trim() !== ""),
  );
}
