// The dashboard: reads the same HTTP API as any client, shows only the panels the token's role may
// read (asked once from GET /auth/whoami), refreshes every 10 s. The token lives in sessionStorage
// (this tab only) and travels in the Authorization header, never in a URL.
"use strict";

const TOKEN_KEY = "ott-dashboard-token";
const REFRESH_MS = 10_000;
const HOUR_MS = 3_600_000;
const $ = (id) => document.getElementById(id);
let role = null;
let chart = null;
let qoeStartupChart = null;
let qoeRatesChart = null;
let timer = null;

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token === null ? {} : { authorization: `Bearer ${token}` };
}

async function api(path, init = {}) {
  const response = await fetch(path, {
    ...init,
    headers: { ...headers(), ...(init.headers ?? {}) },
  });
  const body = await response.json();
  if (!response.ok) {
    const error = new Error(body.error ?? `${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function range() {
  const hours = Number($("range").value);
  const to = Math.ceil(Date.now() / HOUR_MS) * HOUR_MS;
  return { from: new Date(to - hours * HOUR_MS).toISOString(), to: new Date(to).toISOString() };
}

function query(params) {
  return new URLSearchParams(params).toString();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = String(text);
  row.appendChild(td);
  return td;
}

function fillRows(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const values of rows) {
    const row = document.createElement("tr");
    for (const value of values) {
      if (value instanceof Node) row.appendChild(value);
      else cell(row, value);
    }
    body.appendChild(row);
  }
}

const formatted = (n) => n.toLocaleString("en-US");

async function loadTotals(r) {
  const summary = await api(`/stats/summary?${query(r)}`);
  $("total-events").textContent = formatted(summary.total_events);
  $("total-plays").textContent = formatted(summary.plays);
  $("total-error-rate").textContent = `${(summary.error_rate * 100).toFixed(2)}%`;
  $("total-viewers").textContent = formatted(summary.unique_viewers);
}

const measurer = document.createElement("canvas").getContext("2d");

function labelWidth(font, text) {
  measurer.font = font;
  return measurer.measureText(text).width / devicePixelRatio;
}

// uPlot's default y axis is 50 px wide, which clips labels such as "20,000": size each y axis from
// its widest tick label instead (uPlot passes the formatted labels; its fonts are scaled by the
// device pixel ratio, hence the division above).
function yAxisSize(u, values, axisIndex) {
  const axis = u.axes[axisIndex];
  const widest = Math.max(0, ...(values ?? []).map((v) => labelWidth(axis.font[0], v)));
  return Math.ceil(axis.ticks.size + axis.gap + widest + 4);
}

async function loadChart(r) {
  const [events, errors] = await Promise.all(
    ["events", "error_rate"].map((metric) =>
      api(`/stats/timeseries?${query({ metric, bucket: "1h", ...r })}`)
    ),
  );
  const points = events.series[0]?.points ?? [];
  const data = [
    points.map((p) => Date.parse(p.t) / 1000),
    points.map((p) => p.value),
    (errors.series[0]?.points ?? []).map((p) => p.value * 100),
  ];
  if (chart === null) {
    chart = new uPlot(
      {
        width: Math.min(900, document.body.clientWidth - 64),
        height: 220,
        series: [
          {},
          { label: "events / hour", stroke: "#2563eb" },
          { label: "error rate %", stroke: "#dc2626", scale: "%" },
        ],
        axes: [{}, { size: yAxisSize }, {
          side: 1,
          scale: "%",
          grid: { show: false },
          size: yAxisSize,
        }],
      },
      data,
      $("chart"),
    );
  } else {
    chart.setData(data);
  }
}

async function loadTops(r) {
  await Promise.all(["content_id", "region", "platform"].map(async (groupBy) => {
    const result = await api(
      `/stats/timeseries?${
        query({ metric: "errors", bucket: "1h", group_by: groupBy, limit: "5", ...r })
      }`,
    );
    const rows = result.series
      .map((s) => [s.key ?? "unknown", s.points.reduce((sum, p) => sum + p.value, 0)])
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1]);
    fillRows($(`top-${groupBy}`), rows.map(([key, n]) => [key, formatted(n)]));
  }));
}

// The QoE panel: per hour, startup p50/p95 on one chart and the per-view rates on another; a null
// point (no denominator in that hour) is a gap, never a zero.
const QOE_RATES = ["rebuffer_ratio", "vsf_rate", "ebvs_rate"];
const QOE_TOP = 10;
const percentOrNull = (v) => (v === null ? null : v * 100);

function qoeChart(current, target, series, data) {
  if (current !== null) {
    current.setData(data);
    return current;
  }
  return new uPlot(
    {
      width: Math.min(440, document.body.clientWidth - 64),
      height: 200,
      series: [{}, ...series],
      // From 0, so a startup of 2 s does not look like none and a rate of 0 sits on the axis.
      scales: { y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{}, { size: yAxisSize }],
    },
    data,
    target,
  );
}

async function qoeSeries(metric, r) {
  const result = await api(`/stats/timeseries?${query({ metric, bucket: "1h", ...r })}`);
  return result.series[0]?.points ?? [];
}

async function loadQoeCharts(r) {
  const [p50, p95, ...rates] = await Promise.all(
    ["startup_p50", "startup_p95", ...QOE_RATES].map((metric) => qoeSeries(metric, r)),
  );
  const times = p50.map((p) => Date.parse(p.t) / 1000);
  qoeStartupChart = qoeChart(qoeStartupChart, $("qoe-startup-chart"), [
    { label: "startup p50 ms", stroke: "#2563eb" },
    { label: "startup p95 ms", stroke: "#7c3aed" },
  ], [times, p50.map((p) => p.value), p95.map((p) => p.value)]);
  qoeRatesChart = qoeChart(
    qoeRatesChart,
    $("qoe-rates-chart"),
    [
      { label: "rebuffer ratio %", stroke: "#d97706" },
      { label: "VSF rate %", stroke: "#dc2626" },
      { label: "EBVS rate %", stroke: "#0d9488" },
    ],
    [times, ...rates.map((points) => points.map((p) => percentOrNull(p.value)))],
  );
}

const DASH = "–";
const percentText = (v) => (v === null || v === undefined ? DASH : `${(v * 100).toFixed(2)}%`);
const msText = (v) => (v === null || v === undefined ? DASH : `${formatted(v)} ms`);

// Null (no denominator) ranks after any number: it says nothing bad about the group.
function worseFirst(a, b) {
  if (a === b) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  return b - a;
}

// The busiest groups (at most QOE_TOP, so at most QOE_TOP + 1 requests), each summarised by
// /stats/qoe, worst technical VSF rate first, then worst rebuffer ratio. Views that did not report a
// dimension are stored under "unknown", a key like any other; a null key could not be filtered on.
async function loadQoeWorst(r, groupBy) {
  const busiest = await api(
    `/stats/timeseries?${
      query({ metric: "views", bucket: "1h", group_by: groupBy, limit: String(QOE_TOP), ...r })
    }`,
  );
  const keys = busiest.series.map((s) => s.key).filter((key) => key !== null).slice(0, QOE_TOP);
  const groups = await Promise.all(keys.map(async (key) => ({
    key,
    qoe: await api(`/stats/qoe?${query({ ...r, [groupBy]: key })}`),
  })));
  const rows = groups
    .filter((g) => g.qoe.views > 0)
    .sort((a, b) =>
      worseFirst(
        a.qoe.video_start_failures.technical_rate,
        b.qoe.video_start_failures.technical_rate,
      ) ||
      worseFirst(a.qoe.rebuffer_ratio, b.qoe.rebuffer_ratio) ||
      b.qoe.views - a.qoe.views
    );
  fillRows(
    $(`qoe-worst-${groupBy}`),
    rows.map(({ key, qoe }) => [
      key,
      formatted(qoe.views),
      msText(qoe.video_startup_time_ms.p95),
      percentText(qoe.video_start_failures.technical_rate),
      percentText(qoe.rebuffer_ratio),
    ]),
  );
}

async function loadQoe(r) {
  await Promise.all([
    loadQoeCharts(r),
    loadQoeWorst(r, "content_id"),
    loadQoeWorst(r, "cdn"),
  ]);
}

// Open incidents, newest first as the API lists them. A rate or share reads as a percentage, a
// count as a number; the level comes from the API's fixed vocabulary, so it may name a CSS class.
const LEVELS = ["LOW", "MEDIUM", "HIGH"];
const incidentValue = (incident, v) =>
  incident.kind === "count" ? formatted(Math.round(v)) : percentText(v);

function levelCell(level) {
  const td = document.createElement("td");
  td.textContent = level;
  if (LEVELS.includes(level)) td.classList.add("level", `level-${level.toLowerCase()}`);
  return td;
}

function exposureText(exposure) {
  if (exposure === null || exposure === undefined) return DASH;
  return `${formatted(exposure.monthly_revenue)} ${exposure.currency}/month exposed`;
}

function showIncidents(incidents) {
  $("incidents").hidden = incidents.length === 0;
  $("incidents-empty").hidden = incidents.length > 0;
  fillRows(
    $("incidents"),
    incidents.map((incident) => [
      levelCell(incident.level),
      `${incident.series} = ${incident.key}`,
      new Date(incident.started_at).toLocaleString(),
      `${incidentValue(incident, incident.observed)} vs ${
        incidentValue(incident, incident.expected)
      } expected`,
      incident.drill_down[0]?.text ?? DASH,
      formatted(incident.viewers),
      exposureText(incident.exposure),
    ]),
  );
}

async function loadIncidents() {
  const { incidents } = await api("/compliance/incidents?state=active");
  showIncidents(incidents);
}

async function loadCompliance(r) {
  const summary = await api(`/compliance/summary?${query(r)}`);
  const rules = Object.keys(summary.flagged_events_by_rule);
  fillRows(
    $("compliance"),
    rules.map((rule) => [
      rule,
      formatted(summary.flagged_events_by_rule[rule]),
      formatted(summary.flags_by_rule[rule] ?? 0),
    ]),
  );
}

function reviewButton(flag, status, label) {
  const button = document.createElement("button");
  button.textContent = label;
  button.addEventListener("click", async () => {
    const body = { status };
    if (status === "dismissed") {
      const reason = globalThis.prompt("Why is this flag dismissed?");
      if (reason === null || reason.trim() === "") return;
      body.reason = reason;
    }
    try {
      await api(`/compliance/flags/${flag.id}`, {
        method: "PATCH",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      await refresh();
    } catch (error) {
      $("updated").textContent = `Cannot review flag ${flag.id}: ${error.message}`;
    }
  });
  return button;
}

async function loadFlags() {
  const page = await api("/compliance/events?level=HIGH&limit=10");
  fillRows(
    $("flags"),
    page.items.map((flag) => {
      const actions = document.createElement("td");
      if (flag.status === "open") {
        actions.append(
          reviewButton(flag, "acknowledged", "Acknowledge"),
          reviewButton(flag, "dismissed", "Dismiss"),
        );
      }
      return [
        flag.rule,
        `${flag.entity_type} ${flag.entity_id}`,
        flag.reason,
        flag.status,
        actions,
      ];
    }),
  );
}

// A request recorded from a TV's do-not-track setting has no deadline (due_at null): it sorts last.
function byDueDate(a, b) {
  if (a.due_at === b.due_at) return 0;
  if (a.due_at === null) return 1;
  if (b.due_at === null) return -1;
  return a.due_at < b.due_at ? -1 : 1;
}

function dueText(request) {
  if (request.due_at === null) return "no deadline";
  return `${request.due_at.slice(0, 10)}${request.overdue ? " OVERDUE" : ""}`;
}

async function loadRequests() {
  const pages = await Promise.all(
    ["received", "in_progress"].map((status) =>
      api(`/privacy/requests?${query({ status, limit: "20" })}`)
    ),
  );
  const open = pages.flatMap((p) => p.items).sort(byDueDate);
  fillRows($("requests"), open.map((r) => [r.id, r.type, r.status, dueText(r)]));
}

async function refresh() {
  const r = range();
  const mayRead = (panelRoles) => role === "admin" || panelRoles.includes(role);
  const work = [];
  if (mayRead(["analyst", "privacy"])) {
    work.push(loadIncidents(), loadTotals(r), loadChart(r), loadTops(r), loadQoe(r));
  }
  if (mayRead(["privacy"])) work.push(loadCompliance(r), loadFlags(), loadRequests());
  const results = await Promise.allSettled(work);
  const failed = results.filter((x) => x.status === "rejected");
  if (failed.some((x) => x.reason.status === 401)) return showLogin("The token was refused");
  $("updated").textContent = failed.length === 0
    ? `Updated ${new Date().toLocaleTimeString()}`
    : `Some panels could not load: ${failed.map((x) => x.reason.message).join("; ")}`;
}

function showLogin(message) {
  clearInterval(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  $("panels").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message ?? "";
}

async function start() {
  const { auth } = await api("/auth/status");
  if (auth === "on" && sessionStorage.getItem(TOKEN_KEY) === null) return showLogin("");
  let me;
  try {
    me = await api("/auth/whoami");
  } catch (error) {
    if (error.status === 401) {
      return showLogin(sessionStorage.getItem(TOKEN_KEY) ? "Unknown token" : "");
    }
    throw error;
  }
  role = me.role;
  $("who").textContent = me.auth === "off" ? "auth off" : `${me.name} (${me.role})`;
  $("logout").hidden = me.auth === "off";
  $("login").hidden = true;
  for (const section of document.querySelectorAll("section[data-roles]")) {
    section.hidden = !(role === "admin" || section.dataset.roles.split(" ").includes(role));
  }
  $("panels").hidden = false;
  await refresh();
  clearInterval(timer);
  timer = setInterval(() => void refresh(), REFRESH_MS);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  void start();
});
$("logout").addEventListener("click", () => showLogin("Token forgotten"));
$("range").addEventListener("change", () => void refresh());
void start();
