// Shared helpers of the dashboard pages: fetching JSON, formatting, small DOM builders, polling.

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

// The session's CSRF token (the page's <meta>): the API refuses a change made with the session
// cookie without it, so that no other page of the site can make one (service/api/security.py).
export function csrfHeaders() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? { "X-CSRF-Token": meta.content } : {};
}

// The last answer of each polled GET and its ETag: the next poll sends If-None-Match, and an
// unchanged study answers 304 with no body (the server's cost: one indexed read).
const kept = new Map();
const KEPT_MAX = 64;
// A poll accepts an answer up to MAX_STALE_S old: after a change the server answers with the one
// it has and computes the current one for the next poll. Not for a while after this page changed
// something itself: its next reads must show that change.
const MAX_STALE_S = 10;
let freshUntil = 0;

// This page changed something: its reads ask for current answers for a while.
export function madeChange() {
  freshUntil = Date.now() + MAX_STALE_S * 1000;
}

// Fetch JSON with the session cookie. A 401 means the session ended: go back to the login form.
// GETs are conditional: on 304 the kept answer is returned (a fresh copy: callers may change it).
export async function getJSON(url, options = {}) {
  const get = (options.method || "GET").toUpperCase() === "GET";
  const copy = get ? kept.get(url) : undefined;
  if (!get) madeChange();
  const stale = copy && Date.now() > freshUntil ? { "Cache-Control": `max-stale=${MAX_STALE_S}` } : {};
  const response = await fetch(url, {
    credentials: "same-origin",
    cache: "no-store", // the validators are ours: the browser's cache neither answers nor asks
    ...options,
    headers: {
      Accept: "application/json", ...csrfHeaders(),
      ...stale, ...(copy ? { "If-None-Match": copy.etag } : {}), ...(options.headers || {}),
    },
  });
  if (response.status === 304 && copy) {
    kept.delete(url);
    kept.set(url, copy); // most recently used last
    return JSON.parse(copy.text);
  }
  const etag = get && response.ok ? response.headers.get("ETag") : null;
  if (!etag) return readJSON(response);
  const text = await response.text();
  kept.delete(url);
  kept.set(url, { etag, text });
  if (kept.size > KEPT_MAX) kept.delete(kept.keys().next().value);
  return text ? JSON.parse(text) : null;
}

// The body of a fetch() response, or ApiError (401 goes to the login form).
export async function readJSON(response) {
  if (response.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError(401, "signed out");
  }
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, body && body.detail !== undefined ? body.detail : text);
  return body;
}

export function postJSON(url, payload, headers = {}) {
  return getJSON(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
}

// A readable one-line message from an API error's detail (string or [{loc, msg}]).
export function detailText(error) {
  const detail = error && error.detail;
  if (Array.isArray(detail)) return detail.map((d) => (d.loc ? `${d.loc}: ${d.msg}` : d.msg)).join("; ");
  return String((detail !== undefined && detail !== null ? detail : error && error.message) || error);
}

export function toast(message, bad = false) {
  const box = document.getElementById("toast");
  if (!box) return;
  const item = el("div", { class: bad ? "msg bad" : "msg" }, message);
  box.append(item);
  setTimeout(() => item.remove(), bad ? 8000 : 3500);
}

// Unexpected failures are shown to the user and logged (the browser tests fail on them).
export function reportError(context, error) {
  toast(`${context}: ${detailText(error)}`, true);
  console.error(context, error);
}

// el("td", {class: "num"}, "text", child, ...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    // Through the CSSOM: a style="…" attribute is refused by the page's CSP, element.style is not.
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function pct(value, digits = 2) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(digits)}%`;
}

export function pp(delta, digits = 2) {
  if (delta === null || delta === undefined) return "–";
  const sign = delta > 0 ? "+" : delta < 0 ? "−" : "±";
  return `${sign}${Math.abs(100 * delta).toFixed(digits)} pp`;
}

export function num(value, digits = 0) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} m ${Math.round(seconds % 60)} s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} m`;
  return `${Math.floor(seconds / 86400)} d ${Math.round((seconds % 86400) / 3600)} h`;
}

export function ageSince(iso) {
  if (!iso) return null;
  return Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = value, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function badge(state, extra = "") {
  return el("span", { class: `badge ${state} ${extra}`.trim() }, state);
}

export function formatParam(value) {
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e4) ? value.toExponential(2) : value.toPrecision(4).replace(/\.?0+$/, "");
  }
  return String(value);
}

export function paramsText(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${formatParam(v)}`).join("  ");
}

// Trials a study has finished one way or another: every state but running and waiting.
export function trialsDone(progress) {
  return (progress.complete || 0) + (progress.pruned || 0) + (progress.failed || 0) + (progress.cancelled || 0);
}

// Stacked bar of finished / running / pruned / failed / cancelled out of the budget.
export function progressBar(progress) {
  const budget = Math.max(progress.budget || 0, 1);
  const part = (cls, n) => (n > 0 ? el("span", { class: cls, style: `width:${(100 * n) / budget}%`, title: `${n} ${cls}` }) : null);
  const done = trialsDone(progress);
  return [
    el("span", { class: "progress", role: "progressbar", "aria-valuenow": done, "aria-valuemax": progress.budget },
      part("complete", progress.complete), part("running", progress.running),
      part("pruned", progress.pruned), part("failed", progress.failed), part("cancelled", progress.cancelled)),
    el("span", { class: "count" }, `${done} / ${progress.budget}`,
      progress.running ? ` · ${progress.running} running` : ""),
  ];
}

// -- live progress of a running trial (its worker's last heartbeat: phase, step, rate, ETA) ----
const known = (v) => v !== null && v !== undefined;

// "epoch 2/10 · step 340/782" (seed 2/3 first when several), or what the trial is doing instead.
export function liveStep(live) {
  if (!live) return null;
  if (live.phase === "data") return "preparing data";
  if (live.phase !== "training" && live.phase !== "evaluating") return live.phase || null;
  const parts = [];
  if (known(live.seeds) && live.seeds > 1) parts.push(`seed ${(live.seed_index || 0) + 1}/${live.seeds}`);
  if (known(live.epoch)) parts.push(`epoch ${live.epoch + 1}${known(live.epochs) ? `/${live.epochs}` : ""}`);
  if (live.phase === "evaluating") parts.push("evaluating");
  else if (known(live.step)) parts.push(`step ${num(live.step)}${known(live.steps) ? `/${num(live.steps)}` : ""}`);
  return parts.join(" · ") || null;
}

export function liveEta(live) {
  return live && known(live.eta_s) ? `ETA ${duration(live.eta_s)}` : null;
}

// How much of the trial is done, 0..1 (seeds × epochs × steps), or null before steps are known.
export function liveFraction(live) {
  if (!live || !known(live.step) || !live.steps || !live.epochs) return null;
  const seeds = live.seeds || 1;
  const done = ((live.seed_index || 0) * live.epochs + (live.epoch || 0)) * live.steps + live.step;
  return Math.min(1, Math.max(0, done / (seeds * live.epochs * live.steps)));
}

// A moment as the reader's clock shows it: the time today, else the date and time.
export function clockTime(iso) {
  if (!iso) return "–";
  const when = new Date(iso);
  const today = new Date().toDateString() === when.toDateString();
  const pad = (n) => String(n).padStart(2, "0");
  const time = `${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
  return today ? time : `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())} ${time}`;
}

// Call `tick` every `ms` while `active()` holds; pauses while the tab is hidden.
export function poll(tick, ms, active) {
  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    if (active() && !document.hidden) timer = setTimeout(run, ms);
  };
  const run = async () => {
    try { await tick(); } catch (error) { reportError("refresh failed", error); }
    schedule();
  };
  document.addEventListener("visibilitychange", schedule);
  schedule();
  return { restart: schedule };
}

export const currentUser = () => ({
  id: Number(document.body.dataset.userId),
  name: document.body.dataset.userName,
  isAdmin: document.body.dataset.admin === "true",
});

export const LIVE = new Set(["queued", "running"]);
