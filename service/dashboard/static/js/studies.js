// Studies page: the list (filter, sort, live progress), submitting a spec, cancel/pause/resume.

import { $, ApiError, LIVE, ageSince, badge, csrfHeaders, currentUser, detailText, duration, el, getJSON, madeChange, pct, poll, postJSON, progressBar, reportError, toast, trialsDone } from "./common.js";
import { SpecEditor } from "./spec_editor.js";

const EXAMPLE = `# A study: which activation helps this model most? Every field is validated on submit.
version: 1
name: smu-vs-relu
description: SMU and PAU against ReLU on the proxy network
dataset:
  name: cifar10
  val_size: 5000
model:
  name: proxy
training:  # a proxy study trains with the proxy's recipe unless this says otherwise
  epochs: 10
activations:
  relu: {}
  smu:
    alpha: {low: 0.0, high: 0.5}
    mu: {low: 0.5, high: 5.0, log: true}
  pau: {}
baselines: [relu]
sampler: {name: tpe, seed: 0}
pruner: {name: median}
n_trials: 40
`;

const ACTIONS = { queued: ["pause", "cancel"], running: ["pause", "cancel"], paused: ["resume", "cancel"] };
const user = currentUser();
let studies = [];
let poller = null;

const state = { q: "", status: "", sort: "-id" };

function apiQuery() {
  const params = new URLSearchParams({ limit: "500", sort: state.sort.replace("progress", "id") });
  if (state.status) params.append("status", state.status);
  if (state.q) params.set("q", state.q);
  return `/api/v1/studies?${params}`;
}

let latest = 0;

async function refresh() {
  const asked = ++latest;
  const page = await getJSON(apiQuery());
  if (asked !== latest) return; // a newer filter's answer is coming: drop this stale one
  studies = page.items;
  render(page.total);
  poller?.restart(); // a submitted or resumed study restarts the live refresh
}

function filtered() {
  // The API filters by name/description; owners are matched here too (a short list).
  let rows = studies;
  if (state.sort.endsWith("progress")) {
    const done = (s) => trialsDone(s.progress) / Math.max(1, s.progress.budget);
    rows = [...rows].sort((a, b) => done(b) - done(a));
  }
  return rows;
}

function actionButtons(study) {
  if (!(user.isAdmin || study.owner_id === user.id)) return [];
  return (ACTIONS[study.status] || []).map((action) =>
    el("button", {
      type: "button", class: `small ${action === "cancel" ? "danger" : ""}`, dataset: { action, study: study.id },
      onclick: (event) => act(study, action, event.currentTarget),
    }, action));
}

async function act(study, action, button) {
  if (action === "cancel" && !confirm(`Cancel study #${study.id} “${study.name}”? Running trials stop within a few training steps; their finished epochs are kept.`)) return;
  button.disabled = true;
  try {
    await postJSON(`/api/v1/studies/${study.id}/${action}`);
    toast(`study #${study.id}: ${action} done`);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 409 || error.status === 403)) toast(detailText(error), true);
    else reportError(`${action} failed`, error);
  }
  await refresh();
}

function row(study) {
  const best = study.best;
  return el("tr", { dataset: { id: study.id, status: study.status } },
    el("td", { class: "num" }, String(study.id)),
    el("td", { class: "name" }, el("a", { href: `/studies/${study.id}` }, study.name)),
    el("td", {}, badge(study.status)),
    el("td", {}, study.owner),
    el("td", {}, el("span", { class: "progress-cell" }, progressBar(study.progress))),
    el("td", { class: "num" }, best ? pct(best.value) : "–"),
    el("td", {}, best && best.family ? best.family : "–"),
    el("td", { class: "num", title: study.created_at }, duration(ageSince(study.created_at))),
    el("td", {}, actionButtons(study)),
  );
}

function render(total) {
  const rows = filtered();
  const body = $("#studies-table tbody");
  body.replaceChildren(...(rows.length ? rows.map(row)
    : [el("tr", {}, el("td", { colspan: 9, class: "empty" }, studies.length || state.q || state.status ? "No study matches the filter." : "No studies yet: submit one with “New study”."))]));
  const running = studies.filter((s) => s.status === "running").length;
  $("#studies-summary").textContent = `${total} ${total === 1 ? "study" : "studies"}${running ? ` · ${running} running` : ""}`;
}

// -- submitting ------------------------------------------------------------------------------
let editor = null;

function openSubmit(text = null, title = "Submit a study") {
  $("#submit-panel").classList.remove("hidden");
  $("#submit-title").textContent = title;
  if (!editor) {
    editor = new SpecEditor($("#spec-editor"));
    editor.value = EXAMPLE;
  }
  if (text !== null) editor.value = text;
  editor.focus();
}

// `/?clone=ID` (the study page's Clone button): the editor opens with that study's spec.
async function openClone() {
  const id = new URLSearchParams(location.search).get("clone");
  if (!id || !/^\d+$/.test(id)) return;
  try {
    const source = await getJSON(`/dashboard/data/studies/${id}/spec`);
    openSubmit(source.yaml, `Clone study #${source.id} ${source.name}`);
    $("#spec-status").textContent = `a copy of study #${source.id}'s spec: submitting makes a new study`;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) toast(`study ${id} does not exist: nothing to clone`, true);
    else reportError("loading the spec to clone failed", error);
  }
}

async function submit() {
  const button = $("#spec-submit");
  const box = $("#spec-errors");
  box.classList.add("hidden");
  $("#spec-warnings").classList.add("hidden");
  $("#spec-status").textContent = "validating…";
  button.disabled = true;
  try {
    madeChange();
    const response = await fetch("/api/v1/studies", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/yaml", Accept: "application/json", "Idempotency-Key": submissionKey(), ...csrfHeaders() },
      body: editor.value,
    });
    const body = await response.json().catch(() => ({}));
    if (response.status === 422 || response.status === 409 || response.status === 413 || response.status === 415) {
      showErrors(body.detail);
      $("#spec-status").textContent = "not submitted: fix the marked fields";
      return;
    }
    if (!response.ok) throw new ApiError(response.status, body.detail);
    lastKey = null;
    if (location.search) history.replaceState(null, "", "/"); // a reload opens no clone again
    toast(`study #${body.id} “${body.name}” queued`);
    const warnings = body.warnings || [];
    if (warnings.length) showWarnings(body, warnings); // the panel stays open to show them
    else {
      $("#spec-status").textContent = `submitted study #${body.id}`;
      $("#submit-panel").classList.add("hidden");
    }
    await refresh();
  } catch (error) {
    $("#spec-status").textContent = "";
    reportError("submit failed", error);
  } finally {
    button.disabled = false;
  }
}

// One key per spec text: a double click or a retry after a lost answer never makes two studies.
let lastKey = null;
let lastText = null;
function submissionKey() {
  if (lastKey === null || lastText !== editor.value) {
    lastKey = `dash-${crypto.getRandomValues(new Uint32Array(2)).join("-")}`;
    lastText = editor.value;
  }
  return lastKey;
}

function showErrors(detail) {
  const errors = Array.isArray(detail) ? detail : [{ loc: "", msg: String(detail || "invalid spec") }];
  const unplaced = editor.mark(errors);
  const box = $("#spec-errors");
  if (unplaced.length) {
    box.replaceChildren(el("b", {}, "The spec was refused:"),
      el("ul", {}, unplaced.map((e) => el("li", {}, e.loc ? el("code", {}, e.loc) : null, e.loc ? ": " : "", e.msg))));
    box.classList.remove("hidden");
  }
}

// A submitted spec's warnings: settings that run, but not as written (a warm-up as long as the
// training…). The study is queued; they are marked beside their lines, the rest listed.
function showWarnings(study, warnings) {
  editor.mark(warnings, "warning"); // beside their lines; listed below as well
  const link = el("a", { href: `/studies/${study.id}` }, `study #${study.id}`);
  $("#spec-status").replaceChildren("submitted ", link, ` with ${warnings.length} ${warnings.length === 1 ? "warning" : "warnings"}`);
  const box = $("#spec-warnings");
  box.replaceChildren(
    el("b", {}, "Queued, but it will not train as written: "),
    "fix the marked fields and submit again as a new study (and cancel ", link.cloneNode(true), "), or let it run.",
    el("ul", {}, warnings.map((w) => el("li", { dataset: { loc: w.loc } }, w.loc ? el("code", {}, w.loc) : null, w.loc ? ": " : "", w.msg))),
  );
  box.classList.remove("hidden");
}

// -- wiring ------------------------------------------------------------------------------------
function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function wire() {
  $("#new-study").addEventListener("click", () => openSubmit());
  $("#spec-cancel").addEventListener("click", () => $("#submit-panel").classList.add("hidden"));
  $("#spec-example").addEventListener("click", () => { editor.value = EXAMPLE; });
  $("#spec-submit").addEventListener("click", submit);
  $("#spec-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submit(); }
  });
  const reload = () => refresh().catch((error) => reportError("loading studies failed", error));
  $("#study-filter").addEventListener("input", debounce((event) => { state.q = event.target.value.trim(); reload(); }, 250));
  $("#status-filter").addEventListener("change", (event) => { state.status = event.target.value; reload(); });
  $("#study-sort").addEventListener("change", (event) => { state.sort = event.target.value; reload(); });
}

wire();
openClone();
refresh()
  .catch((error) => reportError("loading studies failed", error))
  .finally(() => { poller = poll(refresh, 4000, () => studies.some((s) => LIVE.has(s.status))); });
