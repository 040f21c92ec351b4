import assert from "node:assert/strict";
import {
  baselineHours,
  DAY_MS,
  FAULTS,
  faultsOf,
  type ScenarioOptions,
  WATCH_START_MS,
  WEEK,
  windowRows,
} from "./_scenario_week.ts";
import { faultsWatched, type WeekEvent, weekWindow } from "./_sim_week.ts";

const HOUR_MS = 3_600_000;
const [OUTAGE, RELEASE, STALL, BURST] = FAULTS;

/** Per cube row: events, errors, EU events and EU events with consent, as the flush counts them. */
function cubeOf(events: readonly WeekEvent[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const e of events) {
    const key = [e.extra_metadata.platform, e.region, e.extra_metadata.app_version]
      .concat(e.subscription_plan).join("|");
    const row = out.get(key) ?? [0, 0, 0, 0];
    const isEu = e.region === "DE" || e.region === "FR";
    row[0]++;
    if (e.event_type === "ERROR") row[1]++;
    if (isEu) row[2]++;
    if (isEu && e.has_consent) row[3]++;
    out.set(key, row);
  }
  return out;
}

Deno.test("weekWindow() reproduces the cube rows' events, errors and EU consents exactly", () => {
  // A quiet night, the webOS outage, the broken release and the error burst.
  for (const t of [WATCH_START_MS + 4 * HOUR_MS, OUTAGE.startMs, RELEASE.startMs, BURST.startMs]) {
    const window = weekWindow(t, WEEK);
    const got = cubeOf(window.events);
    const rows = windowRows(t, WEEK).cube;
    assert.equal(got.size, rows.filter((c) => c.events > 0).length);
    for (const c of rows) {
      const key = [c.platform, c.region, c.app_version, c.subscription_plan].join("|");
      assert.deepEqual(
        got.get(key) ?? [0, 0, 0, 0],
        [c.events, c.errors, c.eu_events, c.eu_consented],
        `${new Date(t).toISOString()} ${key}`,
      );
    }
    for (const e of window.events) {
      const atMs = Date.parse(e.timestamp);
      assert.ok(atMs >= t && atMs < t + WEEK.windowMs, e.timestamp);
      assert.match(e.event_id, /^week-21-/);
      assert.equal(e.event_type === "ERROR", e.error_code !== null);
    }
    const times = window.events.map((e) => Date.parse(e.timestamp));
    assert.deepEqual(times, [...times].sort((a, b) => a - b), "sent in event-time order");
    assert.equal(new Set(window.events.map((e) => e.event_id)).size, window.events.length);
  }
});

/** Per QoE row of a window's views: views, start failures, stall ms, measured and slow startups. */
function qoeOf(events: readonly WeekEvent[]): Map<string, number[]> {
  const views = new Map<string, WeekEvent[]>();
  for (const e of events) {
    if (e.view_id !== undefined) views.set(e.view_id, [...(views.get(e.view_id) ?? []), e]);
  }
  const out = new Map<string, number[]>();
  for (const view of views.values()) {
    const at = (type: string) => view.find((e) => e.event_type === type)?.timestamp;
    const key = [view[0].content_id, view[0].cdn, view[0].subscription_plan].join("|");
    const row = out.get(key) ?? [0, 0, 0, 0, 0];
    row[0]++;
    if (at("ERROR") !== undefined) row[1]++;
    const [stallFrom, stallTo] = [at("REBUFFER_START"), at("REBUFFER_END")];
    if (stallFrom && stallTo) row[2] += Date.parse(stallTo) - Date.parse(stallFrom);
    const [request, frame] = [at("PLAY_REQUEST"), at("FIRST_FRAME")];
    if (request && frame) {
      row[3]++;
      if (Date.parse(frame) - Date.parse(request) > 8_000) row[4]++;
    }
    out.set(key, row);
  }
  return out;
}

Deno.test("weekWindow() sends the QoE rows' views, start failures, stalls and startups", () => {
  // Watched time is a quarter of the rows' so a view fits its window: stalls too (same ratio).
  const want = (
    c: ReturnType<typeof windowRows>["qoe"][number],
  ) => [c.views, c.vsf_technical, c.rebuffer_ms / 4, c.startup_views, c.slow_startups];
  const t = WATCH_START_MS + DAY_MS + 9 * HOUR_MS;
  const window = weekWindow(t, WEEK);
  assert.equal(window.droppedViews, 0);
  const got = qoeOf(window.events);
  for (const c of windowRows(t, WEEK).qoe) {
    const key = [c.content_id, c.cdn, c.subscription_plan].join("|");
    assert.deepEqual(got.get(key) ?? [0, 0, 0, 0, 0], want(c), key);
  }
  // In the stall spike the cube is short of room for a few unstalled views: cdn-b's are all sent.
  const stall = weekWindow(STALL.startMs, WEEK);
  assert.ok(stall.droppedViews < stall.views / 50, `${stall.droppedViews} of ${stall.views}`);
  const stalled = qoeOf(stall.events);
  for (const c of windowRows(STALL.startMs, WEEK).qoe.filter((c) => c.cdn === STALL.key)) {
    const key = [c.content_id, c.cdn, c.subscription_plan].join("|");
    assert.deepEqual(stalled.get(key) ?? [0, 0, 0, 0, 0], want(c), key);
  }
});

Deno.test("weekWindow() gives the error burst's title the errors of its platform first", () => {
  const t = BURST.startMs + 5 * WEEK.windowMs;
  const events = weekWindow(t, WEEK).events.filter((e) => e.extra_metadata.platform === "roku");
  const errors = events.filter((e) => e.event_type === "ERROR");
  const burst = errors.filter((e) => e.content_id === BURST.key).length;
  assert.ok(errors.length > 0 && burst >= errors.length - 1, `${burst} of ${errors.length}`);
});

Deno.test("faultsOf() moves the faults and the release with the watched start", () => {
  const shiftMs = 3 * DAY_MS + 35 * 60_000;
  const o: ScenarioOptions = { ...WEEK, watchStartMs: WATCH_START_MS + shiftMs, days: 2 };
  const moved = faultsOf(o.watchStartMs);
  assert.deepEqual(
    moved.map((f) => [f.startMs - shiftMs, f.endMs - shiftMs, f.series, f.key]),
    FAULTS.map((f) => [f.startMs, f.endMs, f.series, f.key]),
  );
  assert.deepEqual(faultsWatched(o).map((f) => f.key), [OUTAGE.key]);
  const webos = (t: number, opts: ScenarioOptions) =>
    windowRows(t, opts).cube.filter((c) => c.platform === "webos")
      .reduce((a, c) => a + c.events, 0);
  const [outage] = moved;
  assert.ok(webos(outage.startMs, o) < webos(outage.startMs - WEEK.windowMs, o) / 5);
  // The default week's outage time is ordinary traffic in the moved scenario.
  assert.ok(webos(OUTAGE.startMs + DAY_MS, o) > webos(OUTAGE.startMs + DAY_MS, WEEK) / 5);
  const tizenVersions = (opts: ScenarioOptions, t: number) =>
    new Set(
      windowRows(t, opts).cube.filter((c) => c.platform === "tizen").map((c) => c.app_version),
    );
  assert.ok(!tizenVersions(o, o.watchStartMs + DAY_MS).has("7.1"));
  assert.ok(tizenVersions(WEEK, WATCH_START_MS + 2 * DAY_MS).has("7.1"));
  for (const hour of baselineHours({ ...o, baselineWeeks: 1 })) {
    assert.equal(hour.cube[0].startMs % HOUR_MS, 0, "baseline rows are whole hours");
    assert.ok(hour.cube[0].startMs < o.watchStartMs);
  }
});

Deno.test("windowRows() of the default week is what it was before the start became an option", async () => {
  // SHA-256 of JSON.stringify(windowRows(t)), recorded before `watchStartMs` was added.
  const digest = async (t: number) => {
    const bytes = new TextEncoder().encode(JSON.stringify(windowRows(t, WEEK)));
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
  };
  assert.equal(
    await digest(WATCH_START_MS + 3 * DAY_MS + 19 * HOUR_MS),
    "eade29784a02128b565130ab3dffffd7038591cc3119057a3e73220d815272a7",
  );
  assert.equal(
    await digest(WATCH_START_MS),
    "4a2db0d2030942e9fc6889afb0f57568e8a4dcbc2071a50ecea7c770391c56db",
  );
});
