// Study page: trial table first (fast first paint), then headline, leaderboard and charts; all of it
// refreshes in place while the study is live.

import { $, ApiError, LIVE, detailText, el, getJSON, pct, poll, postJSON, pp, progressBar, reportError, toast, trialsDone } from "./common.js";
import { note } from "./charts.js";
import { drawCurves, drawFamilies, drawHistory, drawImportance, drawParams } from "./study_charts.js";
import { TrialTable } from "./trial_table.js";

const root = $("#study");
const studyId = Number(root.dataset.studyId);
const canManage = root.dataset.canManage === "true";
const DATA = `/dashboard/data/studies/${studyId}`;
const ACTIONS = { queued: ["pause", "cancel"], running: ["pause", "cancel"], paused: ["resume", "cancel"], failed: ["retry"], cancelled: ["retry"] };
const ACTION_TITLES = {
  retry: "run this study's spec again as a new study",
  cancel: "stop the study: running trials stop within a few training steps, keeping their finished epochs",
};

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
  renderLinks(study);
  table.setFamilies(study.families.map((f) => f.family));
  setFamilyOptions(study.families.map((f) => f.family));
  const p = study.progress;
  $("#count-value").textContent = `${trialsDone(p)} / ${p.budget}`;
  $("#count-sub").textContent = `${p.complete} complete · ${p.running} running · ${p.pruned} pruned · ${p.failed} failed`
    + (p.cancelled ? ` · ${p.cancelled} cancelled` : "");
  return study;
}

function renderActions() {
  const box = $("#study-actions");
  const buttons = canManage ? (ACTIONS[status] || []).map((action) => el("button", {
    type: "button", class: action === "cancel" ? "danger" : action === "retry" ? "primary" : "",
    dataset: { action }, title: ACTION_TITLES[action], onclick: (event) => act(action, event.currentTarget),
  }, action)) : [];
  // Anyone may start a study of their own from this one's spec (the editor opens with it).
  buttons.push(el("a", { class: "button", id: "clone-study", href: `/?clone=${studyId}`, title: "open this study's spec in the editor, change it and submit it as a new study" }, "clone"));
  box.replaceChildren(...buttons);
}

async function act(action, button) {
  if (action === "cancel" && !confirm("Cancel this study? Running trials stop within a few training steps; their finished epochs are kept.")) return;
  if (action === "retry") return retry(button);
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

// One key per page view: a double click or a repeated request makes one new study, not two.
const retryKey = `dash-retry-${studyId}-${crypto.getRandomValues(new Uint32Array(2)).join("-")}`;

async function retry(button) {
  button.disabled = true;
  try {
    const created = await postJSON(`/api/v1/studies/${studyId}/retry`, undefined, { "Idempotency-Key": retryKey });
    const link = el("a", { href: `/studies/${created.id}`, dataset: { studyId: String(created.id) } }, `#${created.id} ${created.name}`);
    // The spec's warnings come back with the new study: it runs, but not as written.
    const warned = (created.warnings || []).map((w) => el("span", { class: "warning-text" }, `${w.loc}: ${w.msg}`));
    $("#retried-as").replaceChildren("Retried as ", link, ` (${created.status})`, ...warned);
    $("#retried-as").hidden = false;
    toast(`study #${created.id} queued`);
  } catch (error) {
    if (error instanceof ApiError && [403, 409, 422].includes(error.status)) toast(detailText(error), true);
    else reportError("retry failed", error);
  } finally {
    button.disabled = false;
  }
}

// -- confirm links and the confirm action -------------------------------------------------------
const studyLink = (ref) => el("a", { href: ref.dashboard, dataset: { studyId: String(ref.id) } }, `#${ref.id} ${ref.name}`);

function renderLinks(study) {
  const box = $("#study-links");
  const parts = [];
  if (study.confirms) parts.push(el("span", { id: "confirms-link" }, "Confirms ", studyLink(study.confirms), " (its best configurations, fresh seeds)"));
  if (study.confirmed_by.length) {
    parts.push(el("span", { id: "confirmed-by" }, "Confirmed by ",
      ...study.confirmed_by.flatMap((ref, i) => [i ? ", " : "", studyLink(ref), ` (${ref.status})`])));
  }
  box.replaceChildren(...parts);
  box.hidden = !parts.length;
  // A confirm study is confirmed through its source; the action is the owner's or an admin's.
  $("#confirm-box").hidden = !canManage || Boolean(study.confirms);
}

async function confirmBest() {
  const button = $("#confirm-button");
  button.disabled = true; // one click, one confirm study
  try {
    const created = await postJSON(`/api/v1/studies/${studyId}/confirm`, {
      top: Number($("#confirm-top").value), seeds: Number($("#confirm-seeds").value),
    });
    toast(`confirm study #${created.id} created: ${created.n_trials} configurations`);
    await Promise.all([loadHeader(), loadSummary()]);
  } catch (error) {
    if (error instanceof ApiError && [403, 409, 422].includes(error.status)) toast(detailText(error), true);
    else reportError("confirm failed", error);
  } finally {
    button.disabled = false;
  }
}

// -- headline and leaderboard ----------------------------------------------------------------
function deltaSpan(delta) {
  return el("span", { class: delta > 0 ? "delta-pos" : delta < 0 ? "delta-neg" : "" }, pp(delta));
}

// "[a, b]" of an interval in percent, or in points (signed) for a difference.
function interval(low, high, points = false) {
  if (low === null || low === undefined || high === null || high === undefined) return null;
  const f = (v) => (points ? `${v > 0 ? "+" : v < 0 ? "−" : ""}${Math.abs(100 * v).toFixed(2)}` : (100 * v).toFixed(2));
  return el("span", { class: "ci", title: "95% confidence interval" }, `[${f(low)}, ${f(high)}]`);
}

// The comparison a family is judged by: the confirm study's fresh seeds when there are any.
const evidenceOf = (summary, f) => (summary.confirmation_study_id !== null ? f.confirmation : f.search);

function verdictBadge(c) {
  if (!c) return el("span", { class: "verdict" }, "not confirmed");
  const p = c.p_value === null ? "" : ` · p = ${c.p_value.toPrecision(2)} (Welch, Holm-adjusted)`;
  const word = c.verdict.replace(/ /g, "-");
  return el("span", { class: `verdict ${word}`, title: `${c.trainings} trainings, ${c.metric === "test_acc" ? "test" : "validation"} accuracy${p}` }, c.verdict);
}

function meanCell(c) {
  if (!c || c.mean === null) return "–";
  return [pct(c.mean), interval(c.ci_low, c.ci_high)];
}

function deltaCell(f, c) {
  if (f.is_baseline) return "–";
  if (!c || c.delta === null || c.verdict === "too few runs") return el("span", { class: "ci" }, "too few runs");
  return [deltaSpan(c.delta), interval(c.delta_ci_low, c.delta_ci_high, true)];
}

function renderHeadline(summary) {
  const h = summary.headline;
  const trialLink = (n, family) => el("a", { href: `/studies/${studyId}/trials/${n}` }, `trial ${n}`, family ? ` · ${family}` : "");
  const familyMean = (side) => el("span", {}, ` · family ${pct(side.family_mean)} `, interval(side.family_ci[0], side.family_ci[1]), ` (n=${side.n})`);
  if (!h) return;
  $("#best-value").textContent = pct(h.value);
  $("#best-sub").replaceChildren(trialLink(h.trial, h.family), familyMean(h));
  const b = h.baseline;
  if (b) {
    $("#base-value").textContent = pct(b.value);
    $("#base-sub").replaceChildren(trialLink(b.trial, b.family), familyMean(b));
    $("#delta-value").replaceChildren(deltaSpan(h.delta));
    const e = h.evidence;
    $("#delta-sub").replaceChildren("best vs best · means ", el("span", {}, deltaCell({ is_baseline: false }, e)));
    $("#delta-evidence").replaceChildren(verdictBadge(e));
  } else {
    $("#base-value").textContent = "–";
    $("#base-sub").textContent = summary.baseline ? `no complete ${summary.baseline} trial yet` : "no baseline in the spec";
  }
}

function renderEvidenceNote(summary) {
  const id = summary.confirmation_study_id;
  $("#evidence-note").textContent = id === null
    ? "n, mean and Δ: this study's trainings on validation accuracy, 95% intervals. The best of many is optimistic: a significant gain here is promising at most; confirm it with fresh seeds."
    : `n, mean and Δ: ${id === studyId ? "this confirm study's" : `confirm study #${id}'s`} fresh seeds on test accuracy, 95% intervals; verdicts by Welch's test with Holm's correction, α = ${summary.alpha}.`;
  $("#evidence-note").title = summary.evidence;
}

function renderLeaderboard(summary) {
  // Ranked on the server (the API's leaderboard order); the note says by what.
  const note = $("#baseline-note");
  note.textContent = `ranked by ${summary.ranked_by}` + (summary.baseline ? ` · Δ against ${summary.baseline}` : "");
  note.title = summary.ranking || "";
  const rows = summary.families.map((f) => {
    const c = evidenceOf(summary, f);
    return el("tr", { class: f.is_baseline ? "baseline" : "", dataset: { family: f.family } },
      el("td", {}, f.family, f.is_baseline ? el("span", { class: "badge outline beside" }, "baseline") : null),
      el("td", { class: "num" }, String(c ? c.trainings : 0)),
      el("td", { class: "num" }, f.best_trial === null ? "–" : el("a", { href: `/studies/${studyId}/trials/${f.best_trial}` }, pct(f.best))),
      el("td", { class: "num mean-ci" }, meanCell(c)),
      el("td", { class: "num" }, pct(f.median)),
      el("td", { class: "num" }, pct(f.best_test_acc)),
      el("td", { class: "num" }, f.is_baseline ? "–" : deltaSpan(f.delta_best)),
      el("td", { class: "num delta-ci" }, deltaCell(f, c)),
      el("td", { class: "verdict-cell" }, f.is_baseline ? "–" : verdictBadge(c)),
      el("td", { class: "num" }, String(f.states.pruned || 0)),
      el("td", { class: "num" }, String(f.states.failed || 0)),
    );
  });
  $("#leaderboard tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 11, class: "empty" }, "No trials yet."))]));
  renderEvidenceNote(summary);
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
  if (!family) return note($("#chart-params"), "No complete trials yet.");
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

$("#confirm-button").addEventListener("click", () => confirmBest());
$("#curves-family").addEventListener("change", () => getJSON(`${DATA}/curves?limit=25${$("#curves-family").value ? `&family=${encodeURIComponent($("#curves-family").value)}` : ""}`)
  .then((curves) => drawCurves($("#chart-curves"), curves)).catch((error) => reportError("learning curves", error)));
$("#params-family").addEventListener("change", () => {
  paramsChosen = true;
  loadParams().catch((error) => reportError("parameters", error));
});

start()
  .catch((error) => reportError("loading the study failed", error))
  .finally(() => Object.assign(poller, poll(tick, 4000, () => LIVE.has(status))));

