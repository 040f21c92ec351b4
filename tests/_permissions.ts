/**
 * `test()`: `Deno.test` for tests that need files, network, environment or subprocesses. With the
 * permissions `deno task test` grants it registers the test as is; under plain `deno test` (no
 * permissions) it registers the test as ignored, so the permission-free tests still run green.
 *
 * deno.json lists this file under `test.include`, so a plain `deno test` runs it once as a test module
 * of its own and prints the one `[permissions]` line saying how to run the full suite.
 *
 * @module
 */

/** The permissions `deno task test` grants, and that the tests registered with {@link test} need. */
const SUITE_PERMISSIONS = ["read", "write", "net", "env", "sys", "run"] as const;

/** The suite permissions this process lacks; `querySync` itself needs no permission. */
const MISSING_PERMISSIONS: readonly string[] = SUITE_PERMISSIONS.filter((name) =>
  Deno.permissions.querySync({ name }).state !== "granted"
);

/** True when the process holds every permission of the full suite, as under `deno task test`. */
export const HAS_SUITE_PERMISSIONS: boolean = MISSING_PERMISSIONS.length === 0;

type TestFn = (t: Deno.TestContext) => void | Promise<void>;
type TestOptions = Omit<Deno.TestDefinition, "name" | "fn">;

/** Registers a test that needs the suite's permissions, ignored when the process lacks any of them. */
export function test(definition: Deno.TestDefinition): void;
/** Registers a named test that needs the suite's permissions, ignored when any is missing. */
export function test(name: string, fn: TestFn): void;
/** Registers a named test with options that needs the suite's permissions, ignored when any is missing. */
export function test(name: string, options: TestOptions, fn: TestFn): void;
export function test(
  nameOrDefinition: string | Deno.TestDefinition,
  optionsOrFn?: TestOptions | TestFn,
  maybeFn?: TestFn,
): void {
  let definition: Deno.TestDefinition;
  if (typeof nameOrDefinition !== "string") {
    definition = nameOrDefinition;
  } else if (typeof optionsOrFn === "function") {
    definition = { name: nameOrDefinition, fn: optionsOrFn };
  } else if (maybeFn !== undefined) {
    definition = { ...optionsOrFn, name: nameOrDefinition, fn: maybeFn };
  } else {
    throw new TypeError(`Cannot register test "${nameOrDefinition}": no test function given`);
  }
  Deno.test(HAS_SUITE_PERMISSIONS ? definition : { ...definition, ignore: true });
}

// Only when deno.json's `test.include` runs this file as a module of its own: one line per run.
if (!HAS_SUITE_PERMISSIONS && Deno.mainModule === import.meta.url) {
  const missing = MISSING_PERMISSIONS.length === 1
    ? MISSING_PERMISSIONS[0]
    : `${MISSING_PERMISSIONS.slice(0, -1).join(", ")} or ${MISSING_PERMISSIONS.at(-1)}`;
  Deno.test(
    `[permissions] tests that need ${missing} access are ignored: ` +
      "run `deno task test` for the full suite",
    () => {},
  );
}
