/**
 * Keeps the README true: its relative links (and those of `docs/*.md`) point at files and headings
 * that exist, its configuration table names exactly the variables `config.ts` reads (with their
 * defaults), every `deno task` it names exists, and the quick start's `curl` examples answer what
 * the README shows, sent to a real pipeline through `app.request()`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ENV_SCHEMA } from "../config.ts";
import { startHarness } from "./_harness.ts";
import { test } from "./_permissions.ts";

const ROOT = new URL("../", import.meta.url);
const README = "README.md";

function readText(path: string): string {
  return Deno.readTextFileSync(new URL(path, ROOT));
}

function exists(path: string): boolean {
  try {
    Deno.statSync(new URL(path, ROOT));
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The markdown with fenced code blocks blanked (line count kept), so code is not read as prose. */
function withoutFences(markdown: string): string {
  let isInFence = false;
  return markdown.split("\n").map((line) => {
    if (/^\s*```/.test(line)) {
      isInFence = !isInFence;
      return "";
    }
    return isInFence ? "" : line;
  }).join("\n");
}

/** The fenced code blocks of one language (`sh`), each as its text. */
function fencedBlocks(markdown: string, language: string): string[] {
  const blocks: string[] = [];
  let current: string[] | null = null;
  for (const line of markdown.split("\n")) {
    if (current === null) {
      if (line.trim() === "```" + language) current = [];
    } else if (line.trim() === "```") {
      blocks.push(current.join("\n"));
      current = null;
    } else {
      current.push(line);
    }
  }
  return blocks;
}

/** The text of a `## title` section, up to the next heading of the same level. */
function section(markdown: string, title: string): string {
  const lines = markdown.split("\n");
  const start = lines.findIndex((line) => line === `## ${title}`);
  assert.notEqual(start, -1, `${README} has no "## ${title}" section`);
  const end = lines.findIndex((line, i) => i > start && /^## /.test(line));
  return lines.slice(start + 1, end === -1 ? undefined : end).join("\n");
}

/** GitHub's anchors of a page's headings (`## Data retention` → `data-retention`). */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of withoutFences(markdown).split("\n")) {
    const heading = /^#{1,6}\s+(.+?)\s*#*\s*$/.exec(line);
    if (heading === null) continue;
    const slug = heading[1].toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").trim()
      .replace(/\s/g, "-");
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

/** Relative link targets of a page (outside code), resolved against the repository root. */
function relativeLinks(page: string): { target: string; path: string; anchor: string | null }[] {
  const prose = withoutFences(readText(page)).replace(/`[^`\n]*`/g, "");
  const links = [];
  for (const match of prose.matchAll(/\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
    const target = match[1];
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
    const [file, anchor] = target.split("#", 2);
    const resolved = file === "" ? new URL(page, ROOT) : new URL(file, new URL(page, ROOT));
    assert.ok(
      resolved.href.startsWith(ROOT.href),
      `${page} links to ${target}, outside the repository: the repository stands alone`,
    );
    links.push({ target, path: resolved.href.slice(ROOT.href.length), anchor: anchor ?? null });
  }
  return links;
}

function docsPages(): string[] {
  return [...Deno.readDirSync(new URL("docs/", ROOT))]
    .filter((entry) => entry.isFile)
    .map((entry) => `docs/${entry.name}`)
    .sort();
}

test("[readme] every relative link of the README and docs/*.md points at a file and heading", () => {
  const pages = [README, ...docsPages().filter((path) => path.endsWith(".md"))];
  let count = 0;
  for (const page of pages) {
    for (const link of relativeLinks(page)) {
      count++;
      assert.ok(exists(link.path), `${page} links to ${link.target}: ${link.path} does not exist`);
      if (link.anchor !== null && link.path.endsWith(".md")) {
        assert.ok(
          anchorsOf(readText(link.path)).has(link.anchor),
          `${page} links to ${link.target}: ${link.path} has no heading #${link.anchor}`,
        );
      }
    }
  }
  assert.ok(count >= 10, `expected the README and docs to hold links, found ${count}`);
});

test("[readme] the README links every page under docs/", () => {
  const linked = new Set(relativeLinks(README).map((link) => link.path));
  for (const page of docsPages()) {
    assert.ok(linked.has(page), `${README} does not link ${page}: add it to "Further reading"`);
  }
});

/** The configuration table: each row's variables (first column) and its default cell. */
/** The full configuration table: every variable, in `docs/configuration.md`. */
const CONFIGURATION = "docs/configuration.md";

function configurationRows(
  path = CONFIGURATION,
  title = "Variables",
): { names: string[]; defaultCell: string; meaning: string }[] {
  const rows = tableLines(section(readText(path), title));
  assert.ok(rows.length > 2, `${path} has no configuration table`);
  return rows.slice(2).map((cells) => ({
    names: [...cells[0].matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1]),
    defaultCell: cells[1],
    meaning: cells[2],
  }));
}

function tableLines(text: string): string[][] {
  return text.split("\n")
    .filter((line) => line.startsWith("|"))
    .map((line) => line.split("|").slice(1, -1).map((cell) => cell.trim()));
}

/** The default `ENV_SCHEMA` gives a variable, as the table writes it; undefined when unset or empty. */
function schemaDefault(name: string): string | undefined {
  const field = ENV_SCHEMA.shape[name as keyof typeof ENV_SCHEMA.shape];
  const parsed = field.safeParse(undefined);
  assert.ok(parsed.success, `ENV_SCHEMA.${name} refuses an unset value`);
  const value: unknown = parsed.data;
  const text = Array.isArray(value) ? value.join(",") : value === undefined ? "" : String(value);
  return text === "" ? undefined : text;
}

test("[readme] the configuration table lists exactly the variables config.ts reads", () => {
  const rows = configurationRows();
  const inTable = rows.flatMap((row) => row.names);
  const inSchema = Object.keys(ENV_SCHEMA.shape);
  const duplicates = inTable.filter((name, i) => inTable.indexOf(name) !== i);
  assert.deepEqual(duplicates, [], "variables listed twice in the configuration table");
  const unknown = inTable.filter((name) => !inSchema.includes(name));
  assert.deepEqual(unknown, [], "the configuration table names variables ENV_SCHEMA does not read");
  const missing = inSchema.filter((name) => !inTable.includes(name));
  assert.deepEqual(missing, [], "ENV_SCHEMA reads variables the configuration table leaves out");

  for (const row of rows) {
    const shown = [...row.defaultCell.matchAll(/`([^`]*)`/g)].map((m) => m[1]);
    const isPlain = row.defaultCell.replace(/`[^`]*`/g, "").replace(/[\s/]/g, "") === "";
    if (row.defaultCell === "unset") {
      for (const name of row.names) {
        assert.equal(schemaDefault(name), undefined, `${name}: the table says unset`);
      }
    } else if (isPlain && shown.length === row.names.length) {
      // Defaults computed at start (NODE_ID, WORKERS) have no schema default to compare.
      row.names.forEach((name, i) => {
        const actual = schemaDefault(name);
        if (actual !== undefined) assert.equal(shown[i], actual, `default of ${name}`);
      });
    }
  }
});

test("[readme] the README's short configuration table agrees with the full one", () => {
  const full = new Map(configurationRows().map((row) => [row.names.join(","), row]));
  const short = configurationRows(README, "Configuration");
  assert.ok(short.length >= 5, "the README lists the settings most deployments set");
  for (const row of short) {
    const same = full.get(row.names.join(","));
    assert.ok(same !== undefined, `${row.names.join(", ")} is not in ${CONFIGURATION}`);
    assert.equal(row.defaultCell, same.defaultCell, `default of ${row.names.join(", ")}`);
  }
});

test("[readme] every `deno task` the README names exists in deno.json", () => {
  const readme = readText(README);
  const tasks = Object.keys(JSON.parse(readText("deno.json")).tasks);
  const named = new Set(
    [...readme.matchAll(/\bdeno(?:@[\d.]+)? task ([A-Za-z0-9:_-]+)/g)].map((m) => m[1]),
  );
  for (const task of ["start", "test", "simulate"]) {
    assert.ok(named.has(task), `the quick start no longer names deno task ${task}`);
  }
  for (const task of named) assert.ok(tasks.includes(task), `deno.json has no task "${task}"`);
});

test("[readme] the Deno version the README names is the one tools/deno installs", () => {
  const pinned = JSON.parse(readText("tools/deno/package.json")).dependencies.deno as string;
  const named = new Set([...readText(README).matchAll(/\bDeno (\d+\.\d+\.\d+)/g)].map((m) => m[1]));
  assert.ok(named.size > 0, `${README} names no Deno version`);
  assert.deepEqual([...named], [pinned], "the README's Deno version differs from tools/deno");
});

/** One shell command of a README block, with the `# →` answer shown after it, if any. */
interface ShellCommand {
  words: string[];
  expected: string | null;
}

/** `date -u +FORMAT` for now, the one command substitution the examples use. */
function substitute(command: string): string {
  const words = command.trim().split(/\s+/);
  if (words.length !== 3 || words[0] !== "date" || words[1] !== "-u" || !words[2].startsWith("+")) {
    throw new Error(`The README runs $(${command}): teach readme_test.ts what it prints`);
  }
  const iso = new Date().toISOString();
  const parts: Record<string, string> = {
    Y: iso.slice(0, 4),
    m: iso.slice(5, 7),
    d: iso.slice(8, 10),
    H: iso.slice(11, 13),
    M: iso.slice(14, 16),
    S: iso.slice(17, 19),
    F: iso.slice(0, 10),
    T: iso.slice(11, 19),
  };
  return words[2].slice(1).replace(/%(.)/g, (_, code: string) => {
    if (!(code in parts)) throw new Error(`date format %${code} is not known to readme_test.ts`);
    return parts[code];
  });
}

/**
 * Splits a shell block into commands of words, as sh would: quotes, backslash-newline, `#`
 * comments and `$(date ...)`. A `# →` comment after a command (and the `#` lines continuing it) is
 * what the README says the command answers.
 */
function parseShell(block: string): ShellCommand[] {
  const commands: ShellCommand[] = [];
  let words: string[] = [];
  let word: string | null = null;
  const endWord = () => {
    if (word !== null) words.push(word);
    word = null;
  };
  const endCommand = () => {
    endWord();
    if (words.length > 0) commands.push({ words, expected: null });
    words = [];
  };
  // The command whose `# →` answer the comment lines that follow continue, if any.
  let answered: ShellCommand | null = null;
  let isCommentLine = false;
  let i = 0;
  while (i < block.length) {
    const c = block[i];
    if (c === "\\" && block[i + 1] === "\n") {
      i += 2;
    } else if (c === "\n" || c === ";") {
      if (c === "\n" && !isCommentLine) answered = null;
      isCommentLine = false;
      endCommand();
      i++;
    } else if (c === " " || c === "\t") {
      endWord();
      i++;
    } else if (c === "#" && word === null) {
      const end = block.indexOf("\n", i);
      const comment = block.slice(i + 1, end === -1 ? undefined : end);
      const isLineStart = words.length === 0 && /(^|\n)[ \t]*$/.test(block.slice(0, i));
      endCommand();
      const arrow = /^\s*→\s*(.*)$/.exec(comment);
      const last = commands.at(-1);
      if (isLineStart && arrow !== null && last !== undefined) {
        last.expected = arrow[1];
        answered = last;
      } else if (isLineStart && answered !== null) {
        answered.expected += comment.trim();
      }
      isCommentLine = isLineStart;
      i = end === -1 ? block.length : end;
    } else if (c === "'") {
      const end = block.indexOf("'", i + 1);
      if (end === -1) throw new Error("unclosed ' in a README shell block");
      word = (word ?? "") + block.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      let text = "";
      i++;
      while (block[i] !== '"') {
        if (i >= block.length) throw new Error('unclosed " in a README shell block');
        if (block[i] === "\\" && '"\\$`'.includes(block[i + 1])) {
          text += block[i + 1];
          i += 2;
        } else if (block.startsWith("$(", i)) {
          const end = block.indexOf(")", i);
          text += substitute(block.slice(i + 2, end));
          i = end + 1;
        } else if (block[i] === "`") {
          throw new Error(`readme_test.ts cannot expand ${block.slice(i, i + 20)}`);
        } else {
          text += block[i++];
        }
      }
      word = (word ?? "") + text;
      i++;
    } else if (block.startsWith("$(", i)) {
      const end = block.indexOf(")", i);
      word = (word ?? "") + substitute(block.slice(i + 2, end));
      i = end + 1;
    } else {
      word = (word ?? "") + c;
      i++;
    }
  }
  endCommand();
  return commands;
}

/** A curl command line as the request it sends. */
function curlRequest(words: string[]): { method: string; path: string; init: RequestInit } {
  let method: string | null = null;
  let url: string | null = null;
  let body: string | null = null;
  const headers = new Headers();
  for (let i = 1; i < words.length; i++) {
    const word = words[i];
    const value = () => {
      if (i + 1 >= words.length) throw new Error(`curl ${word} needs a value`);
      return words[++i];
    };
    if (word === "-s" || word === "--silent" || word === "-S" || word === "--show-error") continue;
    if (word === "-X" || word === "--request") method = value();
    else if (word === "-H" || word === "--header") {
      const header = value();
      const colon = header.indexOf(":");
      headers.set(header.slice(0, colon).trim(), header.slice(colon + 1).trim());
    } else if (["-d", "--data", "--data-raw", "--data-binary"].includes(word)) body = value();
    else if (word === "-w" || word === "--write-out") value();
    else if (word.startsWith("-")) throw new Error(`readme_test.ts does not know curl ${word}`);
    else if (word.includes("$")) throw new Error(`readme_test.ts cannot expand ${word}`);
    else if (url === null) url = word;
    else throw new Error(`curl with two URLs: ${url} and ${word}`);
  }
  if (url === null) throw new Error(`curl without a URL: ${words.join(" ")}`);
  if (body !== null && !headers.has("content-type")) {
    headers.set("content-type", "application/x-www-form-urlencoded"); // what curl -d sends
  }
  const parsed = new URL(/^https?:\/\//.test(url) ? url : `http://${url}`);
  return {
    method: method ?? (body === null ? "GET" : "POST"),
    path: parsed.pathname + parsed.search,
    init: { method: method ?? (body === null ? "GET" : "POST"), headers, body },
  };
}

/** `202 {...}` as the status and the body: whole, or only the fields shown before `...`. */
function parseExpected(text: string): { status: number; body: unknown; isPartial: boolean } {
  const match = /^(\d{3})(?:\s+(.*))?$/.exec(text.trim());
  if (match === null) throw new Error(`"# → ${text}" does not start with an HTTP status`);
  if (match[2] === undefined) {
    return { status: Number(match[1]), body: undefined, isPartial: false };
  }
  const json = match[2];
  const isPartial = json.endsWith("...}");
  const whole = isPartial ? json.replace(/,?\s*\.\.\.\}$/, "}") : json;
  return { status: Number(match[1]), body: JSON.parse(whole), isPartial };
}

test("[readme] the quick start's curl examples answer what the README shows", async () => {
  const blocks = fencedBlocks(section(readText(README), "Quick start"), "sh");
  const commands = blocks.flatMap(parseShell);
  const curls = commands.filter((command) => command.words[0] === "curl");
  const h = await startHarness({ queue: "postgres" });
  const sent: string[] = [];
  try {
    for (const command of commands) {
      if (command.words[0] === "sleep") {
        // The README waits for a flush; the harness flushes at once.
        await h.flush();
        continue;
      }
      if (command.words[0] !== "curl") continue;
      assert.notEqual(command.expected, null, `no "# →" answer after ${command.words.join(" ")}`);
      const request = curlRequest(command.words);
      const expected = parseExpected(command.expected!);
      const res = await h.pipeline.app.request(`http://localhost${request.path}`, request.init);
      const text = await res.text();
      const label = `${request.method} ${request.path}`;
      assert.equal(res.status, expected.status, `${label} answered ${res.status}: ${text}`);
      sent.push(`${label} ${res.status}`);
      if (expected.body === undefined) continue;
      const actual = JSON.parse(text);
      if (!expected.isPartial) {
        assert.deepEqual(actual, expected.body, `${label}: the README shows another body`);
        continue;
      }
      for (const [key, value] of Object.entries(expected.body as Record<string, unknown>)) {
        assert.deepEqual(actual[key], value, `${label}: "${key}" differs from the README`);
      }
    }
  } finally {
    await h.pipeline.stop();
  }
  assert.ok(curls.length >= 2, "the quick start should send an event and read it back with curl");
  assert.ok(sent.includes("POST /events 202"), `the quick start sends no event: ${sent}`);
  assert.ok(sent.includes("GET /stats/summary 200"), `the quick start reads no stats: ${sent}`);
});
