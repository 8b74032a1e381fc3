// Settings panel: one card per provider of the selected home, polled with If-None-Match.
"use strict";

const state = { homes: [], providers: [], home: null, pollMs: 30000, refreshS: 0, history: false, etag: null,
                snapshots: [], timer: null, charts: {}, labels: {} };
const SVG = "http://www.w3.org/2000/svg";
const CHART_DAYS = 7;
const $ = (sel, root = document) => root.querySelector(sel);

// An instant as every line of the panel writes it: local time, medium date, short time.
function fmtStamp(when) {
  return when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// Hermes' own pool records (a pool-only card) name times as the worker writes them, in UTC:
// "exhausted until 14:05 UTC" (on the day of the reading, UTC) or "2026-08-05 14:05 UTC".
// The panel shows them in local time like every other line.
const UTC_TIME = /\b(?:(\d{4})-(\d{2})-(\d{2}) )?(\d{2}):(\d{2}) UTC\b/g;

function localTimes(text, fetchedAt) {
  const day = new Date(fetchedAt || Date.now());
  return text.replace(UTC_TIME, (all, y, mo, d, h, mi) => {
    const when = new Date(Date.UTC(y ? Number(y) : day.getUTCFullYear(), y ? Number(mo) - 1 : day.getUTCMonth(),
                                   y ? Number(d) : day.getUTCDate(), Number(h), Number(mi)));
    return Number.isNaN(when.getTime()) ? all : fmtStamp(when);
  });
}

function fmtCountdown(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  const seconds = Math.round((when - Date.now()) / 1000);
  const stamp = fmtStamp(when);
  if (seconds <= 0) return `resets ${stamp} (now)`;
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  const left = d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
  return `resets ${stamp} (in ${left})`;
}

// SPEC §13 pace line, the same words as `probe fetch`: "7% in deficit · Runs out in 3d".
function fmtDuration(seconds) {
  if (seconds >= 86400) return `${Math.floor(seconds / 86400)}d`;
  if (seconds >= 3600) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.max(1, Math.floor(seconds / 60))}m`;
}

function paceLine(pace) {
  const head = pace.status === "on_track" ? "On pace" : `${Math.round(Math.abs(pace.delta_percent))}% in ${pace.status}`;
  if (!pace.runs_out_at) return `${head} · Lasts until reset`;
  const left = (new Date(pace.runs_out_at) - Date.now()) / 1000;
  return `${head} · ${left <= 0 ? "Runs out now" : `Runs out in ${fmtDuration(left)}`}`;
}

// Balances (SPEC §13): money with its symbol and two decimals, as the detail lines write it
// ("$49.58", "¥12.30", "3.50 CHF"); a unit that is not money ("points") keeps its amount
// and its own name, never a money symbol ("14,000 points").
const CURRENCY_SYMBOLS = { USD: "$", CNY: "¥", EUR: "€", GBP: "£", JPY: "¥" };

function fmtBalance(b) {
  if (/^[A-Z]{3}$/.test(b.currency)) {
    const sign = b.amount < 0 ? "-" : "";
    const amount = Math.abs(b.amount).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    const symbol = CURRENCY_SYMBOLS[b.currency];
    return symbol ? `${sign}${symbol}${amount}` : `${sign}${amount} ${b.currency}`;
  }
  return `${b.amount.toLocaleString("en-US", { maximumFractionDigits: 6 })} ${b.currency}`;
}

function setStatus(text) { $("#status").textContent = text; }

function badge(cls, text, title) {
  const el = document.createElement("span");
  el.className = `badge ${cls}`;
  el.textContent = text;
  if (title) el.title = title;
  return el;
}

function renderWindow(w) {
  const row = document.createElement("div");
  row.className = "window";
  row.dataset.label = w.label;
  const remaining = w.remaining_percent;
  const head = document.createElement("div");
  head.className = "window-head";
  const label = document.createElement("span");
  label.textContent = w.label;
  const pct = document.createElement("strong");
  pct.className = "remaining";
  pct.textContent = remaining === null ? "n/a" : `${remaining.toFixed(1)}% left`;
  head.append(label, pct);
  const bar = document.createElement("div");
  bar.className = "bar" + (remaining !== null && remaining < 10 ? " empty" : remaining !== null && remaining < 30 ? " low" : "");
  bar.setAttribute("role", "meter");
  bar.setAttribute("aria-label", `${w.label} remaining`);
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  if (remaining !== null) bar.setAttribute("aria-valuenow", String(remaining));
  const fill = document.createElement("span");
  fill.className = "fill";
  fill.style.width = `${remaining === null ? 0 : Math.max(0, Math.min(100, remaining))}%`;
  bar.append(fill);
  if (w.pace) {
    // where the remaining share "should" be now: the bar shows what is left, so 100 - expected used
    const marker = document.createElement("span");
    marker.className = "pace-marker";
    marker.style.left = `${Math.max(0, Math.min(100, 100 - w.pace.expected_used_percent))}%`;
    marker.title = `On pace would be ${(100 - w.pace.expected_used_percent).toFixed(0)}% left now`;
    bar.append(marker);
  }
  row.append(head, bar);
  if (w.pace) {
    const line = document.createElement("div");
    line.className = `pace ${w.pace.status}`;
    line.dataset.runsOutAt = w.pace.runs_out_at || "";
    line.textContent = paceLine(w.pace);
    line._pace = w.pace;
    row.append(line);
  }
  if (w.reset_at) {
    const reset = document.createElement("div");
    reset.className = "reset";
    reset.dataset.resetAt = w.reset_at;
    reset.textContent = fmtCountdown(w.reset_at);
    row.append(reset);
  }
  if (w.detail) {
    const detail = document.createElement("div");
    detail.className = "window-detail";
    detail.textContent = w.detail;
    row.append(detail);
  }
  return row;
}

// SPEC §18: a provider with several accounts -- after its best windows, a row per account
// with its status badge, bars and retry time, the next account to use marked. Labels are the
// user's own (often e-mail addresses): shown here, as in the JSON, and nowhere else.
const STATUS_TEXT = { available: "available", unavailable: "unavailable", exhausted: "exhausted", dead: "dead" };

function fmtRetry(iso) {
  return fmtCountdown(iso).replace(/^resets /, "retry after ");
}

function renderAccounts(snap) {
  const section = document.createElement("section");
  section.className = "accounts";
  section.setAttribute("aria-label", "Accounts");
  const next = snap.pool && snap.pool.next_account;
  for (const a of snap.accounts) {
    const row = document.createElement("div");
    row.className = "account";
    Object.assign(row.dataset, { accountId: a.id, status: a.status });
    const head = document.createElement("div");
    head.className = "account-head";
    const name = document.createElement("span");
    name.className = "account-label";
    name.textContent = a.label;
    head.append(name, badge(`status ${a.status}`, STATUS_TEXT[a.status] || a.status));
    if (a.stale) head.append(badge("stale", "stale", "Showing this account's last good reading"));
    if (a.plan) {
      const plan = document.createElement("span");
      plan.className = "plan";
      plan.textContent = `${a.plan} plan`;
      head.append(plan);
    }
    if (next && next.id === a.id) {
      row.classList.add("next");
      head.append(badge("next", "→ next", next.reason));
    }
    row.append(head);
    if (next && next.id === a.id) {
      const reason = document.createElement("div");
      reason.className = "next-reason";
      reason.textContent = `Use next: ${next.reason}`;
      row.append(reason);
    }
    if (a.retry_after) {
      const retry = document.createElement("div");
      retry.className = "retry";
      retry.dataset.retryAt = a.retry_after;
      retry.textContent = fmtRetry(a.retry_after);
      row.append(retry);
    }
    const why = a.error ? a.error.message : (a.status !== "available" ? a.unavailable_reason : null);
    if (why) {
      const message = document.createElement("div");
      message.className = "account-message";
      message.textContent = why;
      row.append(message);
    }
    for (const w of a.windows) row.append(renderWindow(w));
    // a credits-only account (an OpenRouter key without a limit, DeepSeek) has its figures
    // only here: the best windows above have none of them
    if ((a.details || []).length) {
      const details = document.createElement("ul");
      details.className = "account-details";
      for (const line of a.details) {
        const li = document.createElement("li");
        li.textContent = line;
        details.append(li);
      }
      row.append(details);
    }
    section.append(row);
  }
  if (!next && snap.pool && snap.pool.next_reset_at) {
    const frees = document.createElement("p");
    frees.className = "frees";
    frees.textContent = `No account available; one frees up: ${fmtCountdown(snap.pool.next_reset_at).replace(/^resets /, "")}`;
    section.append(frees);
  }
  return section;
}

function renderCard(snap) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  card.dataset.provider = snap.provider;
  // the provider's LABEL (from the server's catalog child), with the name `probe fetch`
  // takes beside it when the label does not already spell it ("GitHub Copilot" copilot,
  // but not "OpenAI Codex" openai-codex); just the name when no label is known
  const label = state.labels[snap.provider];
  const letters = (text) => text.toLowerCase().replace(/[^a-z0-9]/g, "");
  $(".provider", card).textContent = label || snap.provider;
  $(".provider-name", card).textContent = label && letters(label) !== letters(snap.provider) ? snap.provider : "";
  $(".plan", card).textContent = snap.plan ? `${snap.plan} plan` : "";
  $(".title", card).textContent = snap.title || "";
  const badges = $(".badges", card);
  if (snap.stale) badges.append(badge("stale", "stale", "Showing the last good reading"));
  if (snap.error) badges.append(badge("error", snap.error.code, snap.error.message));
  else if (!snap.available) badges.append(badge("unavailable", "unavailable"));
  const windows = $(".windows", card);
  for (const w of snap.windows) windows.append(renderWindow(w));
  if ((snap.accounts || []).length > 1) $(".details", card).after(renderAccounts(snap));
  const balances = $(".balances", card);
  for (const b of snap.balances || []) {
    const li = document.createElement("li");
    li.dataset.label = b.label;
    li.dataset.currency = b.currency;
    if (b.amount < 0) li.className = "negative";
    const name = document.createElement("span");
    name.textContent = b.label;
    const amount = document.createElement("strong");
    amount.textContent = fmtBalance(b);
    li.append(name, amount);
    balances.append(li);
  }
  // A provider with no adapter (not in /api/homes' providers) shows Hermes' own credential_pool
  // records: nothing to probe, and it is re-read whenever auth.json changes -- no refresh button.
  const poolOnly = !state.providers.includes(snap.provider);
  const shown = (text) => (poolOnly ? localTimes(text, snap.fetched_at) : text);
  const details = $(".details", card);
  for (const line of snap.details) {
    const li = document.createElement("li");
    li.textContent = shown(line);
    details.append(li);
  }
  $(".message", card).textContent = shown(snap.error ? snap.error.message : (snap.unavailable_reason || ""));
  const fetched = snap.fetched_at ? new Date(snap.fetched_at).toLocaleTimeString() : "";
  $(".meta", card).textContent = fetched ? `fetched ${fetched} · via ${snap.probe.path}` : "";
  if (!poolOnly) $(".refresh", card).addEventListener("click", () => refreshOne(snap.provider, card));
  else $(".refresh", card).remove();
  return card;
}

// -- history charts (SPEC §14): plain SVG, no library, no build step ----------------------
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// used % over the last CHART_DAYS days: the points, a dashed line where one window instance
// ended and the next began, and the current instance's pace line (0 % at its start to 100 %
// at its reset). The boundaries come from the server (series.boundaries): it decides window
// instances by SPEC §14's rule, the same decision alerts use, so a jittering reset_at draws
// nothing here -- the rule has one implementation, in probe/monitor/instances.py.
function chart(series, windowS) {
  const W = 300, H = 64, now = Date.now(), from = now - CHART_DAYS * 86400e3;
  const x = (t) => ((t - from) / (now - from)) * W;
  const y = (pct) => H - (Math.max(0, Math.min(100, pct)) / 100) * H;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", preserveAspectRatio: "none",
                            "aria-label": `${series.window}: used % over the last ${CHART_DAYS} days` });
  root.append(svg("rect", { x: 0, y: 0, width: W, height: H, class: "chart-bg" }));
  const points = series.points.map((p) => ({ t: Date.parse(p.t), used: p.used_percent, reset: p.reset_at }))
    .filter((p) => p.t >= from);
  for (const r of (series.boundaries || []).map(Date.parse)) {
    if (r >= from && r <= now) root.append(svg("line", { x1: x(r), x2: x(r), y1: 0, y2: H, class: "chart-reset" }));
  }
  const last = points[points.length - 1];
  const current = last && last.reset ? Date.parse(last.reset) : null;   // the current instance's reset
  if (current && windowS) {
    const start = current - windowS * 1000;
    root.append(svg("line", { x1: x(start), y1: y(0), x2: x(current), y2: y(100), class: "chart-pace" }));
  }
  if (points.length > 1) {
    root.append(svg("polyline", { points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.used).toFixed(1)}`).join(" "),
                                  class: "chart-line" }));
  }
  for (const p of points.slice(-400)) root.append(svg("circle", { cx: x(p.t), cy: y(p.used), r: 1.6, class: "chart-point" }));
  return root;
}

// A provider with one account: a chart under each window (its history is the provider's).
// Several: a chart under each account's windows, from that account's series (history is
// kept per account); the best windows at the top get none -- each comes from an account.
async function loadCharts(card, snap) {
  const accounts = snap.accounts || [];
  if (!state.history || !(snap.windows.length || accounts.some((a) => a.windows.length))) return;
  try {
    const params = new URLSearchParams({ home: state.home, provider: snap.provider });
    const response = await fetch(`/api/history?${params}`);
    if (!response.ok) return;
    const body = await response.json();
    const draw = (row, series, windows) => {
      const old = row.querySelector(".chart");
      if (old) old.remove();
      const found = series.find((s) => s.window === row.dataset.label);
      if (found && found.points.length) {
        const w = windows.find((w) => w.label === row.dataset.label);
        row.append(chart(found, w && w.window_s));
      }
    };
    if (accounts.length > 1) {
      for (const el of card.querySelectorAll(".account")) {
        const mine = (body.accounts || []).find((a) => a.account === el.dataset.accountId);
        const account = accounts.find((a) => a.id === el.dataset.accountId);
        if (mine && account) for (const row of el.querySelectorAll(".window")) draw(row, mine.series, account.windows);
      }
      return;
    }
    for (const row of card.querySelectorAll(".windows > .window")) draw(row, body.series, snap.windows);
  } catch (err) { /* the chart is an extra: the card stands without it */ }
}

// -- alerts of current window instances -------------------------------------------------
async function loadAlerts() {
  const list = $("#alerts");
  if (!state.history) { list.hidden = true; return; }
  try {
    const response = await fetch("/api/alerts");
    if (!response.ok) return;
    const now = Date.now();
    const alerts = (await response.json()).alerts
      .filter((a) => a.home === state.home && (!a.reset_at || Date.parse(a.reset_at) > now));
    const items = alerts.map((a) => {
      const li = document.createElement("li");
      li.className = `alert ${a.kind}`;
      Object.assign(li.dataset, { provider: a.provider, window: a.window, kind: a.kind,
                                  threshold: a.threshold === null ? "" : String(a.threshold),
                                  account: a.account || "" });
      const what = a.kind === "runs_out" ? "runs out before its reset" : `reached ${a.threshold}%`;
      const who = a.account_label ? `${a.provider} (${a.account_label})` : a.provider;
      li.textContent = `${who} · ${a.window} ${what} (${a.used_percent.toFixed(1)}% used, ` +
        `${new Date(a.at).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" })})`;
      return li;
    });
    list.querySelector("ul").replaceChildren(...items);
    list.hidden = !items.length;
  } catch (err) { /* alerts are an extra */ }
}

function render() {
  const main = $("#cards");
  main.replaceChildren();
  if (!state.snapshots.length) {
    const p = document.createElement("p");
    p.className = "card empty-state";   // a card's box and width, where the cards would be
    // what `probe doctor` reports for a home where it finds nothing
    p.textContent = "No provider credentials in this home. quota-probe looks in .env for keys such as " +
      "ANTHROPIC_TOKEN, OPENROUTER_API_KEY, DEEPSEEK_API_KEY, GLM_API_KEY, KIMI_API_KEY, MINIMAX_API_KEY or " +
      "COPILOT_GITHUB_TOKEN, and in auth.json for the Codex and Nous logins and credential_pool entries " +
      "(`probe providers` lists every place). " +
      "Run `probe doctor --home <path>` on the server to see what it found.";
    main.append(p);
    return;
  }
  for (const snap of state.snapshots) {
    const card = renderCard(snap);
    main.append(card);
    loadCharts(card, snap);
  }
  loadAlerts();
}

async function poll() {
  if (!state.home) return;
  const headers = state.etag ? { "If-None-Match": state.etag } : {};
  try {
    const response = await fetch(`/api/quota?home=${encodeURIComponent(state.home)}`, { headers });
    if (response.status === 304) { setStatus(`up to date · ${new Date().toLocaleTimeString()}`); return; }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.etag = response.headers.get("ETag");
    state.snapshots = await response.json();
    render();
    setStatus(`updated ${new Date().toLocaleTimeString()}` + (state.refreshS ? ` · backend refreshes every ${state.refreshS}s` : ""));
  } catch (err) {
    setStatus(`could not update (${err.message})`);
  }
}

async function refreshOne(provider, card) {
  const button = $(".refresh", card);
  button.disabled = true;
  try {
    const response = await fetch(`/api/quota?home=${encodeURIComponent(state.home)}&provider=${encodeURIComponent(provider)}&refresh=1`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const snap = await response.json();
    state.snapshots = state.snapshots.map((s) => (s.provider === provider ? snap : s));
    state.etag = null;   // the list changed under its ETag
    const fresh = renderCard(snap);
    card.replaceWith(fresh);
    loadCharts(fresh, snap);
    setStatus(`refreshed ${provider} · ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    button.disabled = false;
    setStatus(`could not refresh ${provider} (${err.message})`);
  }
}

function schedule() {
  clearInterval(state.timer);
  state.timer = document.hidden ? null : setInterval(poll, state.pollMs);
}

function tickCountdowns() {
  for (const el of document.querySelectorAll(".reset[data-reset-at]")) el.textContent = fmtCountdown(el.dataset.resetAt);
  for (const el of document.querySelectorAll(".retry[data-retry-at]")) el.textContent = fmtRetry(el.dataset.retryAt);
  for (const el of document.querySelectorAll(".pace")) if (el._pace) el.textContent = paceLine(el._pace);
}

async function start() {
  const response = await fetch("/api/homes");
  const config = await response.json();
  state.homes = config.homes;
  state.providers = config.providers || [];
  state.pollMs = Math.max(1, Number(new URLSearchParams(location.search).get("poll") || config.poll_s)) * 1000;
  // With a background refresher the backend answers polls from its latest readings: polling
  // only picks up what the refresher fetched, it never makes a provider request itself.
  state.refreshS = Number(config.refresh_s) || 0;
  state.history = Boolean(config.history);
  state.labels = config.labels || {};
  $("#version").textContent = config.version || "";
  const select = $("#home");
  for (const id of state.homes) select.append(new Option(id, id));
  state.home = new URLSearchParams(location.search).get("home") || state.homes[0] || null;
  if (state.home) select.value = state.home;
  select.addEventListener("change", () => { state.home = select.value; state.etag = null; poll(); });
  document.addEventListener("visibilitychange", () => { schedule(); if (!document.hidden) poll(); });
  setInterval(tickCountdowns, 1000);
  await poll();
  schedule();
}

start();
