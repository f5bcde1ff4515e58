// Study page: trial table first (fast first paint), then headline, leaderboard and charts; all of it
// refreshes in place while the study is live.

import { $, ApiError, LIVE, detailText, el, getJSON, meanStd, pct, poll, postJSON, pp, progressBar, reportError, toast } from "./common.js";
import { drawCurves, drawFamilies, drawHistory, drawImportance, drawParams } from "./study_charts.js";
import { TrialTable } from "./trial_table.js";

const root = $("#study");
const studyId = Number(root.dataset.studyId);
const canManage = root.dataset.canManage === "true";
const DATA = `/dashboard/data/studies/${studyId}`;
const ACTIONS = { queued: ["pause", "cancel"], running: ["pause", "cancel"], paused: ["resume", "cancel"] };

let status = root.dataset.status;
let board = null;
let ticks = 0;
let paramsChosen = false;

// -- header: status, progress, actions ------------------------------------------------------
async function loadHeader() {
  const study = await getJSON(`/api/v1/studies/${studyId}`);
  status = study.status;
  const statusBadge = $("#study-status");
  statusBadge.className = `badge ${status}`;
  statusBadge.textContent = status;
  $("#study-progress").replaceChildren(...progressBar(study.progress));
  renderActions();
  table.setFamilies(study.families.map((f) => f.family));
  setFamilyOptions(study.families.map((f) => f.family));
  const p = study.progress;
  $("#count-value").textContent = `${p.complete + p.pruned + p.failed} / ${p.budget}`;
  $("#count-sub").textContent = `${p.complete} complete · ${p.running} running · ${p.pruned} pruned · ${p.failed} failed`;
  return study;
}

function renderActions() {
  const box = $("#study-actions");
  if (!canManage) { box.replaceChildren(); return; }
  box.replaceChildren(...(ACTIONS[status] || []).map((action) => el("button", {
    type: "button", class: action === "cancel" ? "danger" : "", dataset: { action },
    onclick: () => act(action),
  }, action)));
}

async function act(action) {
  if (action === "cancel" && !confirm("Cancel this study? Running trials stop within one epoch.")) return;
  try {
    await postJSON(`/api/v1/studies/${studyId}/${action}`);
    toast(`${action} done`);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 409 || error.status === 403)) toast(detailText(error), true);
    else reportError(`${action} failed`, error);
  }
  await loadHeader();
  poller.restart();
}

// -- headline and leaderboard ----------------------------------------------------------------
function deltaSpan(delta) {
  return el("span", { class: delta > 0 ? "delta-pos" : delta < 0 ? "delta-neg" : "" }, pp(delta));
}

function renderHeadline(summary) {
  const h = summary.headline;
  const trialLink = (n, family) => el("a", { href: `/studies/${studyId}/trials/${n}` }, `trial ${n}`, family ? ` · ${family}` : "");
  if (!h) return;
  $("#best-value").textContent = h.value_std ? `${pct(h.value)} ± ${(100 * h.value_std).toFixed(2)}` : pct(h.value);
  $("#best-sub").replaceChildren(trialLink(h.trial, h.family), ` · family ${meanStd(h.family_mean, h.family_std)} (n=${h.n})`);
  const b = h.baseline;
  if (b) {
    $("#base-value").textContent = b.value_std ? `${pct(b.value)} ± ${(100 * b.value_std).toFixed(2)}` : pct(b.value);
    $("#base-sub").replaceChildren(trialLink(b.trial, b.family), ` · mean ${meanStd(b.family_mean, b.family_std)} (n=${b.n})`);
    $("#delta-value").replaceChildren(deltaSpan(h.delta));
    $("#delta-sub").replaceChildren("best vs best · means ", deltaSpan(h.delta_mean));
  } else {
    $("#base-value").textContent = "–";
    $("#base-sub").textContent = summary.baseline ? `no complete ${summary.baseline} trial yet` : "no baseline in the spec";
  }
}

function renderLeaderboard(summary) {
  // Ranked on the server (the API's leaderboard order); the note says by what.
  const note = $("#baseline-note");
  note.textContent = `ranked by ${summary.ranked_by}` + (summary.baseline ? ` · Δ against ${summary.baseline}` : "");
  note.title = summary.ranking || "";
  const rows = summary.families.map((f) => el("tr", { class: f.is_baseline ? "baseline" : "", dataset: { family: f.family } },
    el("td", {}, f.family, f.is_baseline ? el("span", { class: "badge outline", style: "margin-left:6px" }, "baseline") : null),
    el("td", { class: "num" }, String(f.n_complete)),
    el("td", { class: "num" }, f.best_trial === null ? "–" : el("a", { href: `/studies/${studyId}/trials/${f.best_trial}` }, pct(f.best))),
    el("td", { class: "num" }, meanStd(f.mean, f.std)),
    el("td", { class: "num" }, pct(f.median)),
    el("td", { class: "num" }, pct(f.best_test_acc)),
    el("td", { class: "num" }, f.is_baseline ? "–" : deltaSpan(f.delta_best)),
    el("td", { class: "num" }, f.is_baseline ? "–" : deltaSpan(f.delta_mean)),
    el("td", { class: "num" }, String(f.states.pruned || 0)),
    el("td", { class: "num" }, String(f.states.failed || 0)),
  ));
  $("#leaderboard tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 10, class: "empty" }, "No trials yet."))]));
}

async function loadSummary() {
  board = await getJSON(`${DATA}/summary`);
  renderHeadline(board);
  renderLeaderboard(board);
}

// -- charts ------------------------------------------------------------------------------------
function setFamilyOptions(families) {
  for (const id of ["#curves-family", "#params-family"]) {
    const select = $(id);
    const known = new Set([...select.options].map((o) => o.value));
    for (const f of families) if (!known.has(f)) select.append(el("option", { value: f }, f));
  }
}

async function loadCharts() {
  const curvesFamily = $("#curves-family").value;
  const paramsSelect = $("#params-family");
  if (!paramsChosen && board && board.families.length) {
    // Until the user picks one: the best family that has searched parameters.
    const searched = board.families.find((f) => f.n_complete && !f.is_baseline) || board.families[0];
    paramsSelect.value = searched.family;
  }
  const [values, curves, importance] = await Promise.all([
    getJSON(`${DATA}/values`),
    getJSON(`${DATA}/curves?limit=25${curvesFamily ? `&family=${encodeURIComponent(curvesFamily)}` : ""}`),
    getJSON(`${DATA}/importance`),
  ]);
  await Promise.all([
    drawFamilies($("#chart-families"), values, board),
    drawHistory($("#chart-history"), values),
    drawCurves($("#chart-curves"), curves),
    drawImportance($("#chart-importance"), importance, $("#importance-note")),
    loadParams(),
  ]);
}

async function loadParams() {
  const family = $("#params-family").value;
  if (!family) return;
  drawParams($("#chart-params"), await getJSON(`${DATA}/params?family=${encodeURIComponent(family)}&limit=1000`));
}

// -- start and live refresh --------------------------------------------------------------------
const table = new TrialTable(studyId);
const poller = { restart() {} };

async function tick() {
  ticks += 1;
  await Promise.all([loadHeader(), table.load(), loadSummary()]);
  // Charts cost more (every trial's value): every other tick, every eighth on big studies.
  const every = table.total > 2000 ? 8 : 2;
  if (ticks % every === 0 || !LIVE.has(status)) await loadCharts();
}

async function start() {
  await table.load(); // first: the table is what the page is judged by
  await Promise.all([loadHeader(), loadSummary()]);
  performance.mark("actsearch:summary");
  await loadCharts();
  performance.mark("actsearch:charts");
}

$("#curves-family").addEventListener("change", () => getJSON(`${DATA}/curves?limit=25${$("#curves-family").value ? `&family=${encodeURIComponent($("#curves-family").value)}` : ""}`)
  .then((curves) => drawCurves($("#chart-curves"), curves)).catch((error) => reportError("learning curves", error)));
$("#params-family").addEventListener("change", () => {
  paramsChosen = true;
  loadParams().catch((error) => reportError("parameters", error));
});

start()
  .catch((error) => reportError("loading the study failed", error))
  .finally(() => Object.assign(poller, poll(tick, 4000, () => LIVE.has(status))));

