// The dashboard: the "Monday morning" view of one workspace. Plain JavaScript, no build step.
// Everything shown comes from the read API with the token the user enters (kept in this tab's
// sessionStorage); text is always set with textContent, never parsed as HTML.
"use strict";

const PRIORITIES = ["critical", "high", "medium", "low"];
const PAGE = 200;
const MAX_ITEMS = 1000;

const state = {
  token: null,
  insights: new Map(), // insight_id -> item
  resolved: new Set(), // resolved live before the list was loaded
  lastEventId: null,
  controller: null,
  summaryTimer: null,
  opener: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function money(value, currency) {
  if (value === null || value === undefined) return "–";
  try {
    return new Intl.NumberFormat(undefined, {
      style: currency ? "currency" : "decimal",
      currency: currency || undefined,
      maximumFractionDigits: 0,
    }).format(value);
  } catch (_) {
    return Math.round(value).toLocaleString();
  }
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function label(text) {
  return String(text || "").replaceAll("_", " ");
}

class Unauthorized extends Error {}

// The answer buttons of an insight: the same four as the notifier's Slack message.
const ANSWERS = [
  ["acknowledged", "Acknowledge"],
  ["snooze_1d", "Snooze 1 day"],
  ["snooze_1w", "Snooze 1 week"],
  ["not_useful", "Not useful"],
];

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (response.status === 401) throw new Unauthorized("unknown or revoked token");
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (response.status === 401) throw new Unauthorized("unknown or revoked token");
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) {
      // not JSON: keep the status
    }
    throw new Error(detail);
  }
  return response.json();
}

// --- sign in -----------------------------------------------------------------------------------

function showSignIn(message) {
  stopStream();
  state.token = null;
  sessionStorage.removeItem("vectoros-token");
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("workspace").textContent = "";
  $("sign-in-error").textContent = message || "";
  $("token").focus();
}

async function signIn(token) {
  state.token = token;
  try {
    const me = await api("/api/v1/me");
    sessionStorage.setItem("vectoros-token", token);
    $("workspace").textContent = `Workspace ${me.workspace_id}`;
    $("sign-in").hidden = true;
    $("board").hidden = false;
    $("sign-out").hidden = false;
    startStream();
    await loadAll();
  } catch (error) {
    showSignIn(error instanceof Unauthorized ? "That token is unknown or revoked." : String(error));
  }
}

// --- data --------------------------------------------------------------------------------------

async function loadInsights() {
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/api/v1/insights?${query}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < MAX_ITEMS);
  const fresh = new Map();
  for (const item of items) {
    if (state.resolved.has(item.insight_id)) continue;
    const live = state.insights.get(item.insight_id);
    fresh.set(item.insight_id, live && live.detected_at > item.detected_at ? live : item);
  }
  for (const [id, item] of state.insights) {
    if (!fresh.has(id) && item.live) fresh.set(id, item); // arrived live, not stored yet
  }
  state.insights = fresh;
  state.resolved.clear();
  renderInsights();
}

async function loadSummary() {
  const summary = await api("/api/v1/summary");
  $("critical").textContent = String(summary.critical);
  const counts = summary.open_by_priority;
  const total = PRIORITIES.reduce((sum, p) => sum + (counts[p] || 0), 0);
  $("open-total").textContent = String(total);
  $("open-by-priority").textContent = PRIORITIES.map((p) => `${counts[p] || 0} ${p}`).join(" · ");
  $("at-risk").textContent = money(summary.at_risk_value);
  $("at-risk-deals").textContent = `${summary.at_risk_deals} deals with open insights`;
  const rows = $("risk-rows");
  rows.replaceChildren();
  const top = Math.max(1, ...summary.at_risk_by_rule_stage.map((r) => r.value));
  for (const row of summary.at_risk_by_rule_stage) {
    const bar = el("div", { class: "bar" });
    bar.style.width = `${Math.max(2, (100 * row.value) / top)}%`;
    rows.append(
      el(
        "tr",
        {},
        el("td", {}, label(row.rule)),
        el("td", {}, label(row.stage)),
        el("td", { class: "num" }, String(row.insights)),
        el("td", { class: "num" }, money(row.value), bar),
      ),
    );
  }
  if (!summary.at_risk_by_rule_stage.length) {
    rows.append(el("tr", {}, el("td", { colSpan: 4, class: "empty" }, "Nothing at risk.")));
  }
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

async function loadForecast() {
  const { items } = await api("/api/v1/forecasts?limit=100");
  const box = $("forecast");
  if (!items.length) return;
  const period = items[0].period;
  const series = items
    .filter((f) => f.period === period && f.scope === "workspace")
    .sort((a, b) => (a.as_of < b.as_of ? -1 : a.as_of > b.as_of ? 1 : 0));
  const last = series[series.length - 1] || items[0];
  const lines = [
    `${period}, as of ${when(last.as_of)}: most likely ${money(last.p50)} ` +
      `(P10 ${money(last.p10)} to P90 ${money(last.p90)}), won so far ${money(last.won)}.`,
  ];
  if (last.target !== null && last.target !== undefined) {
    const chance = last.p_reach_target === null ? "" : `, chance to reach it ${Math.round(last.p_reach_target * 100)} %`;
    lines.push(`Target ${money(last.target)}: gap ${money(last.gap)}${chance}.`);
  }
  const text = el("p", { class: "forecast-figures" }, lines.join(" "));
  const width = 320;
  const height = 140;
  const pad = 8;
  const values = series.flatMap((f) => [f.p10, f.p90]).concat(last.target ? [last.target] : []);
  const low = Math.min(...values);
  const high = Math.max(...values);
  const y = (v) => height - pad - ((v - low) / Math.max(1, high - low)) * (height - 2 * pad);
  const x = (i) => pad + (series.length > 1 ? (i * (width - 2 * pad)) / (series.length - 1) : (width - 2 * pad) / 2);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "fan", role: "img" });
  chart.setAttribute("aria-label", `Forecast fan for ${period}: P10 to P90 band and P50 line over time`);
  const upper = series.map((f, i) => `${x(i)},${y(f.p90)}`);
  const lower = series.map((f, i) => `${x(i)},${y(f.p10)}`).reverse();
  if (series.length > 1) {
    chart.append(svg("polygon", { points: upper.concat(lower).join(" "), class: "band" }));
    chart.append(svg("polyline", { points: series.map((f, i) => `${x(i)},${y(f.p50)}`).join(" "), class: "median" }));
  } else {
    chart.append(svg("rect", { x: x(0) - 12, y: y(last.p90), width: 24, height: Math.max(2, y(last.p10) - y(last.p90)), class: "band" }));
    chart.append(svg("line", { x1: x(0) - 12, x2: x(0) + 12, y1: y(last.p50), y2: y(last.p50), class: "median" }));
  }
  if (last.target) {
    chart.append(svg("line", { x1: pad, x2: width - pad, y1: y(last.target), y2: y(last.target), class: "target" }));
  }
  box.replaceChildren(text, chart);
}

function pct(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)} %`;
}

function num(value, digits) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

const BASELINES = { rep: "Rep's probability", stage: "Stage win rate", current: "Previous model" };

async function loadModel() {
  const { model } = await api("/api/v1/model");
  if (!model) return;
  const who = model.scope === "workspace" ? "this workspace's own model" : "the model pooled over all workspaces";
  const text = el(
    "p",
    { class: "model-figures" },
    `Version ${model.version}, ${who}, trained ${when(model.trained_at)}; judged on deals held out ` +
      `from ${when(model.holdout_from)} to ${when(model.data_until)}. ` +
      `Calibration error ${pct(model.heldout.ece)} (how far its probabilities were from what happened; lower is better).`,
  );
  const rows = [["This model", model.heldout, true]].concat(
    Object.entries(model.baselines).map(([name, q]) => [BASELINES[name] || label(name), q, false]),
  );
  const top = Math.max(0.01, ...rows.map(([, q]) => q.ece || 0));
  const body = el("tbody");
  for (const [name, q, own] of rows) {
    const bar = el("div", { class: own ? "bar" : "bar other" });
    bar.style.width = `${Math.max(2, (100 * (q.ece || 0)) / top)}%`;
    body.append(
      el(
        "tr",
        {},
        el("th", { scope: "row" }, name),
        el("td", { class: "num" }, pct(q.ece), bar),
        el("td", { class: "num" }, num(q.brier, 3)),
        el("td", { class: "num" }, num(q.auc, 2)),
      ),
    );
  }
  const table = el(
    "table",
    { class: "risk model" },
    el("caption", { class: "visually-hidden" }, "Held-out calibration error, Brier score and AUC of the model and the baselines"),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        el("th", { scope: "col" }, "Held out"),
        el("th", { scope: "col", class: "num" }, "Calibration error"),
        el("th", { scope: "col", class: "num" }, "Brier"),
        el("th", { scope: "col", class: "num" }, "AUC"),
      ),
    ),
    body,
  );
  const parts = [text];
  if (model.reliability && model.reliability.length) parts.push(reliabilityChart(model.reliability));
  parts.push(el("div", { class: "scroll" }, table));
  $("model").replaceChildren(...parts);
}

// The reliability diagram of the held-out deals: predicted probability (x) against the share
// won (y) per bin; a calibrated model's points lie on the diagonal.
function reliabilityChart(points) {
  const size = 200;
  const pad = 24;
  const span = size - 2 * pad;
  const x = (p) => pad + p * span;
  const y = (p) => size - pad - p * span;
  const most = Math.max(...points.map((p) => p.share));
  const chart = svg("svg", { viewBox: `0 0 ${size} ${size}`, class: "reliability", role: "img" });
  const said = points
    .map((p) => `${Math.round(p.predicted * 100)} % predicted, ${Math.round(p.observed * 100)} % won`)
    .join("; ");
  chart.setAttribute("aria-label", `Calibration on held-out deals: ${said}`);
  chart.append(svg("rect", { x: pad, y: pad, width: span, height: span, class: "frame" }));
  chart.append(svg("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), class: "diagonal" }));
  chart.append(svg("polyline", { points: points.map((p) => `${x(p.predicted)},${y(p.observed)}`).join(" "), class: "curve" }));
  for (const p of points) {
    chart.append(svg("circle", { cx: x(p.predicted), cy: y(p.observed), r: 2 + 4 * Math.sqrt(p.share / most), class: "point" }));
  }
  const axis = (text, attrs) => {
    const node = svg("text", attrs);
    node.textContent = text;
    return node;
  };
  chart.append(axis("predicted", { x: size / 2, y: size - 6, "text-anchor": "middle" }));
  chart.append(axis("won", { x: 8, y: size / 2, "text-anchor": "middle", transform: `rotate(-90 8 ${size / 2})` }));
  return chart;
}

async function loadAll() {
  try {
    await Promise.all([loadInsights(), loadSummary(), loadForecast(), loadModel()]);
  } catch (error) {
    if (error instanceof Unauthorized) showSignIn("The token was revoked.");
    else console.warn("loading failed, retrying with the next update:", error.message);
  }
}

function refreshSummarySoon() {
  clearTimeout(state.summaryTimer);
  state.summaryTimer = setTimeout(() => loadSummary().catch(() => {}), 300);
}

// --- rendering ---------------------------------------------------------------------------------

function insightItem(item) {
  const data = item.data || {};
  const open = el(
    "button",
    { type: "button", class: "secondary", "data-deal": item.deal_id },
    "Open deal",
  );
  open.setAttribute("aria-label", `Open deal ${data.deal_title || item.deal_id}`);
  open.addEventListener("click", () => openDeal(item.deal_id, open));
  const ack = item.ack ? el("span", { class: "badge ack" }, ackText(item.ack)) : null;
  const answers = el("div", { class: "answers" });
  answers.setAttribute("role", "group");
  answers.setAttribute("aria-label", `Answer: ${item.title}`);
  const current = item.ack ? (item.ack.state === "snoozed" ? null : item.ack.state) : null;
  for (const [answer, text] of ANSWERS) {
    const button = el(
      "button",
      { type: "button", class: "secondary small", "data-answer": answer, "data-for": item.insight_id },
      text,
    );
    button.setAttribute("aria-pressed", String(current === answer));
    button.addEventListener("click", () => answerInsight(item.insight_id, answer, button));
    answers.append(button);
  }
  const actions = el("ul", { class: "actions" });
  for (const action of item.actions || []) {
    actions.append(el("li", {}, `${action.action} (${action.timeline})`));
  }
  const node = el(
    "li",
    { class: item.fresh ? "insight fresh" : "insight", "data-insight": item.insight_id },
    el(
      "div",
      { class: "row" },
      el("p", { class: "title" }, el("span", { class: `badge ${item.priority}` }, item.priority), " ", item.title, ack ? " " : null, ack),
      open,
    ),
    el(
      "p",
      { class: "meta" },
      [data.deal_title || item.deal_id, money(data.deal_value, data.currency), label(item.rule), when(item.detected_at)]
        .filter(Boolean)
        .join(" · "),
    ),
    el("p", { class: "desc" }, item.description),
    actions,
    answers,
  );
  item.fresh = false;
  return node;
}

function ackText(ack) {
  if (ack.state === "snoozed") return `snoozed until ${when(ack.snoozed_until)}`;
  return ack.state === "not_useful" ? "not useful" : "acknowledged";
}

async function answerInsight(insightId, answer, button) {
  // aria-busy, not disabled: a disabled button loses the keyboard focus
  if (button.getAttribute("aria-busy") === "true") return;
  const status = $("answer-status");
  button.setAttribute("aria-busy", "true");
  try {
    const answered = await post(`/api/v1/insights/${encodeURIComponent(insightId)}/answer`, { answer });
    const item = state.insights.get(insightId);
    if (item) item.ack = answered.ack;
    status.textContent = `${item ? item.title : insightId}: ${ackText(answered.ack)}.`;
    const hadFocus = document.activeElement === button;
    renderInsights();
    const again = $("insight-groups").querySelector(
      `button[data-for="${CSS.escape(insightId)}"][data-answer="${CSS.escape(answer)}"]`,
    );
    if (hadFocus && again) again.focus();
  } catch (error) {
    if (error instanceof Unauthorized) showSignIn("The token was revoked.");
    else status.textContent = `Not saved: ${error.message}`;
  } finally {
    button.removeAttribute("aria-busy");
  }
}

function renderInsights() {
  const groups = $("insight-groups");
  const active = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset : {};
  const focused = active.deal || null;
  const focusedAnswer = active.answer ? [active.for, active.answer] : null;
  groups.replaceChildren();
  const items = [...state.insights.values()].sort(
    (a, b) =>
      PRIORITIES.indexOf(a.priority) - PRIORITIES.indexOf(b.priority) ||
      (a.detected_at < b.detected_at ? 1 : a.detected_at > b.detected_at ? -1 : 0),
  );
  for (const priority of PRIORITIES) {
    const mine = items.filter((i) => i.priority === priority);
    if (!mine.length) continue;
    const headingId = `group-${priority}`;
    const list = el("ul", { class: "insight-list" });
    for (const item of mine) list.append(insightItem(item));
    const section = el(
      "section",
      { class: "group" },
      el("h3", { id: headingId }, el("span", { class: `badge ${priority}` }, priority), ` ${mine.length} open`),
      list,
    );
    section.setAttribute("aria-labelledby", headingId);
    groups.append(section);
  }
  $("insights-empty").hidden = items.length > 0;
  if (focusedAnswer) {
    const [id, answer] = focusedAnswer.map((v) => CSS.escape(v));
    const again = groups.querySelector(`button[data-for="${id}"][data-answer="${answer}"]`);
    if (again) again.focus();
  } else if (focused) {
    const again = groups.querySelector(`button[data-deal="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

// --- live updates ------------------------------------------------------------------------------

function setLive(on) {
  const badge = $("live");
  badge.textContent = on ? "live" : "offline";
  badge.className = on ? "live on" : "live off";
}

function applyInsight(event) {
  const id = event.insight_id;
  if (event.lifecycle === "resolved") {
    state.insights.delete(id);
    state.resolved.add(id);
  } else if (event.lifecycle === "enriched") {
    const known = state.insights.get(id);
    if (known) Object.assign(known, { title: event.title, description: event.description, actions: event.actions, source: event.source, fresh: true });
  } else {
    const known = state.insights.get(id);
    if (!known || known.detected_at <= event.detected_at) {
      const ack = known ? known.ack : null; // an answer outlives a replay or an escalation
      state.insights.set(id, { ...event, ack, status: "open", live: true, fresh: true });
    }
  }
  renderInsights();
  refreshSummarySoon();
}

function applyAck(ack) {
  // an answer given anywhere (this page, another one, Slack, an email link, the CLI)
  const item = state.insights.get(ack.insight_id);
  if (!item) return;
  item.ack = { state: ack.state, snoozed_until: ack.snoozed_until };
  renderInsights();
}

function handleFrame(frame) {
  let id = null;
  let kind = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") id = value;
    else if (field === "event") kind = value;
    else if (field === "data") data.push(value);
  }
  if (id) state.lastEventId = id;
  if (kind === "insight" && data.length) applyInsight(JSON.parse(data.join("\n")));
  else if (kind === "ack" && data.length) applyAck(JSON.parse(data.join("\n")));
  else if (kind === "reset") loadAll();
}

function stopStream() {
  if (state.controller) state.controller.abort();
  state.controller = null;
  setLive(false);
}

async function startStream() {
  stopStream();
  const controller = new AbortController();
  state.controller = controller;
  while (state.controller === controller) {
    try {
      const headers = { Authorization: `Bearer ${state.token}` };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch("/api/v1/stream", { headers, signal: controller.signal });
      if (response.status === 401) {
        showSignIn("The token was revoked.");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`stream: HTTP ${response.status}`);
      setLive(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replaceAll("\r\n", "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handleFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// --- the deal drawer ---------------------------------------------------------------------------

function fact(list, name, value) {
  if (value === null || value === undefined || value === "") return;
  list.append(el("dt", {}, name), el("dd", {}, String(value)));
}

async function openDeal(dealId, opener) {
  let deal;
  try {
    deal = await api(`/api/v1/deals/${encodeURIComponent(dealId)}`);
  } catch (error) {
    if (error instanceof Unauthorized) showSignIn("The token was revoked.");
    return;
  }
  const info = deal.deal || {};
  const first = deal.insights.length ? state.insights.get(deal.insights[0].insight_id) : null;
  const title = info.title || (first && first.data && first.data.deal_title) || dealId;
  $("drawer-title").textContent = title;
  const facts = $("deal-facts");
  facts.replaceChildren();
  fact(facts, "Deal", dealId);
  fact(facts, "Value", info.value !== undefined ? money(info.value, info.currency) : null);
  fact(facts, "Stage", label(info.stage));
  fact(facts, "Probability", info.probability !== undefined && info.probability !== null ? `${info.probability} %` : null);
  fact(facts, "Close date", info.close_date);
  fact(facts, "Owner", info.owner_name || info.owner_id);
  fact(facts, "Company", info.company);
  if (info.outcome) fact(facts, "Outcome", info.outcome);
  const score = deal.score;
  const factors = $("deal-factors");
  factors.replaceChildren();
  if (score) {
    fact(facts, "Win probability (model)", pct(score.win_probability));
    if (score.rep_probability !== null && score.rep_probability !== undefined) {
      fact(facts, "Rep's probability", `${Math.round(score.rep_probability)} %`);
    }
    fact(facts, "Scored", `${when(score.as_of)} (model version ${score.model_version})`);
    for (const factor of score.top_factors || []) {
      const points = Math.round(factor.effect * 100);
      const sign = points > 0 ? "+" : points < 0 ? "−" : "±";
      factors.append(
        el("li", {}, `${label(factor.feature)}: ${sign}${Math.abs(points)} points`),
      );
    }
  }
  $("deal-score").hidden = !score || !(score.top_factors || []).length;

  // its part in the latest forecast of each period: won and closed inside it in p_land of the
  // simulations, adding p_land x value to the period's expected revenue
  const forecast = $("deal-forecast");
  forecast.replaceChildren();
  for (const part of deal.forecast || []) {
    forecast.append(
      el(
        "li",
        {},
        `${pct(part.p_land)} to be won within ${part.period}; adds ${money(part.expected, info.currency)} to its expected revenue `,
        el("span", { class: "hint" }, `(forecast as of ${when(part.as_of)})`),
      ),
    );
  }
  $("deal-forecast-box").hidden = !(deal.forecast || []).length;

  const insights = $("deal-insights");
  insights.replaceChildren();
  for (const insight of deal.insights) {
    const steps = insight.history.map((s) => s.lifecycle).join(" → ");
    insights.append(
      el(
        "li",
        {},
        el("span", { class: `badge ${insight.priority}` }, insight.priority),
        ` ${insight.title} `,
        el("span", { class: "hint" }, `(${insight.status}; ${steps})`),
      ),
    );
  }
  if (!deal.insights.length) insights.append(el("li", { class: "empty" }, "No insights."));

  const timeline = $("deal-timeline");
  timeline.replaceChildren();
  for (const entry of deal.timeline) {
    const what = entry.kind === "insight" ? `${label(entry.rule)} ${entry.type}: ${entry.summary}` : `${entry.type}: ${entry.summary}`;
    timeline.append(
      el("li", { class: entry.kind }, el("time", { dateTime: entry.at }, when(entry.at)), what),
    );
  }
  if (!deal.timeline.length) timeline.append(el("li", { class: "empty" }, "Nothing recorded yet."));

  state.opener = opener;
  $("drawer-backdrop").hidden = false;
  $("drawer").hidden = false;
  $("drawer-close").focus();
}

function closeDeal() {
  if ($("drawer").hidden) return;
  $("drawer").hidden = true;
  $("drawer-backdrop").hidden = true;
  const opener = state.opener;
  state.opener = null;
  if (opener && document.contains(opener)) opener.focus();
}

function trapFocus(event) {
  if (event.key !== "Tab" || $("drawer").hidden) return;
  const focusable = [...$("drawer").querySelectorAll("button, a[href], [tabindex]:not([tabindex='-1'])")];
  if (!focusable.length) return;
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  if (event.shiftKey && document.activeElement === first) {
    last.focus();
    event.preventDefault();
  } else if (!event.shiftKey && document.activeElement === last) {
    first.focus();
    event.preventDefault();
  } else if (!$("drawer").contains(document.activeElement)) {
    first.focus();
    event.preventDefault();
  }
}

// --- start -------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (token) signIn(token);
  });
  $("sign-out").addEventListener("click", () => showSignIn(""));
  $("drawer-close").addEventListener("click", closeDeal);
  $("drawer-backdrop").addEventListener("click", closeDeal);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeDeal();
    trapFocus(event);
  });

  let token = sessionStorage.getItem("vectoros-token");
  if (location.hash.startsWith("#token=")) {
    token = decodeURIComponent(location.hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (token) signIn(token);
  else showSignIn("");
});
