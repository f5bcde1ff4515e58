// Campaign page: the stages as a funnel, the latest verdicts, the family × model transfer table;
// one GET of /api/v1/campaigns/{id} (the read model of docs/campaigns.md), polled while it runs.

import { $, ApiError, detailText, duration, el, getJSON, num, pct, poll, postJSON, pp, progressBar, reportError, toast } from "./common.js";

const root = $("#campaign");
const campaignId = Number(root.dataset.campaignId);
const canManage = root.dataset.canManage === "true";
const API = `/api/v1/campaigns/${campaignId}`;
const ACTIONS = { running: ["pause", "cancel"], paused: ["resume", "cancel"] };
const STATE_BADGE = { waiting: "outline", "setting up": "queued", running: "running", ended: "complete" };

let status = root.dataset.status;

// -- small builders ----------------------------------------------------------------------------
// "[a, b]" of an interval in percent, or in points (signed) for a difference.
function interval(low, high, points = true) {
  if (low === null || low === undefined || high === null || high === undefined) return null;
  const f = (v) => (points ? `${v > 0 ? "+" : v < 0 ? "−" : ""}${Math.abs(100 * v).toFixed(2)}` : (100 * v).toFixed(2));
  return el("span", { class: "ci", title: "95% confidence interval" }, `[${f(low)}, ${f(high)}]`);
}

const metricName = (c) => (c.metric === "test_acc" ? "test" : "validation");

function verdictBadge(c, prefix = "") {
  const p = c.p_value === null ? "" : ` · p = ${c.p_value.toPrecision(2)} (Welch, Holm-adjusted)`;
  const title = `${prefix}${c.trainings} trainings, ${metricName(c)} accuracy${p}`;
  return el("span", { class: `verdict ${c.verdict.replace(/ /g, "-")}`, title }, c.verdict);
}

function deltaCell(c) {
  if (c.verdict === "baseline") return el("span", { class: "ci" }, "baseline");
  if (c.delta === null || c.verdict === "too few runs") return el("span", { class: "ci" }, "too few runs");
  return [el("span", { class: c.delta > 0 ? "delta-pos" : c.delta < 0 ? "delta-neg" : "" }, pp(c.delta)),
    interval(c.delta_ci_low, c.delta_ci_high)];
}

const modelName = (model) => model || "(base model)";
const studyLink = (id, text) => el("a", { href: `/studies/${id}`, dataset: { studyId: String(id) } }, text);

// The cells of one stage grouped by family, each family's models in the stage's order.
function byFamily(cells) {
  const families = new Map();
  for (const cell of cells) {
    if (!families.has(cell.family)) families.set(cell.family, []);
    families.get(cell.family).push(cell);
  }
  return families;
}

// -- header ------------------------------------------------------------------------------------
function renderHeader(campaign) {
  status = campaign.status;
  const statusBadge = $("#campaign-status");
  statusBadge.className = `badge ${status}`;
  statusBadge.textContent = status;
  $("#campaign-stage").textContent = `stage ${campaign.stage + 1} of ${campaign.stages}`;
  $("#campaign-baseline").textContent = campaign.baseline;
  const note = $("#campaign-note");
  note.textContent = campaign.error || "";
  note.hidden = !campaign.error;
  note.className = status === "failed" ? "error-box" : "note-box";
  renderActions();
}

function renderActions() {
  const actions = canManage ? ACTIONS[status] || [] : [];
  $("#campaign-actions").replaceChildren(...actions.map((action) => el("button", {
    type: "button", class: action === "cancel" ? "danger" : "", dataset: { action },
    title: `${action} the whole campaign: every study of its current stage`,
    onclick: () => act(action),
  }, action)));
}

async function act(action) {
  if (action === "cancel" && !confirm("Cancel this campaign? Its current stage's studies stop and no later stage starts.")) return;
  try {
    await postJSON(`${API}/${action}`);
    toast(`${action} done`);
  } catch (error) {
    if (error instanceof ApiError && [403, 409].includes(error.status)) toast(detailText(error), true);
    else reportError(`${action} failed`, error);
  }
  await load();
  poller.restart();
}

// -- the funnel --------------------------------------------------------------------------------
function stageStudies(stage) {
  if (!stage.studies.length) return el("span", { class: "ci" }, `waiting · ${stage.models.map(modelName).join(", ")}`);
  return stage.studies.map((s) => el("div", { class: "stage-study" },
    studyLink(s.id, `#${s.id} ${modelName(s.model)}`), el("span", { class: "progress-cell" }, ...progressBar(s.progress))));
}

// The entered configurations as a bar as wide as their share of the widest stage: the funnel.
function enteredCell(stage, widest) {
  if (stage.entered === null) return "–";
  const width = widest ? (100 * stage.entered) / widest : 0;
  return el("div", { class: "funnel-cell" },
    el("span", { class: "funnel-bar" }, el("span", { style: `width:${width}%` })),
    el("span", { class: "funnel-count" }, num(stage.entered)));
}

function leftCell(stage) {
  const dropped = Object.entries(stage.dropped || {});
  return [stage.left === null ? "–" : num(stage.left),
    dropped.length ? el("div", { class: "ci", title: dropped.map(([f, why]) => `${f}: ${why}`).join("\n") },
      `dropped ${dropped.map(([f]) => f).join(", ")}`) : null];
}

function stageVerdicts(stage) {
  const families = [...byFamily(stage.cells)].filter(([, cells]) => cells[0].comparison.verdict !== "baseline");
  if (!families.length) return el("span", { class: "ci" }, "–");
  // Several models: one badge each, in the order the note under them names.
  const order = stage.studies.length > 1 ? el("div", { class: "ci" }, `per model: ${stage.studies.map((s) => modelName(s.model)).join(" · ")}`) : null;
  return [...families.map(([family, cells]) => el("div", { class: "family-verdicts" }, el("b", {}, family),
    ...cells.map((c) => verdictBadge(c.comparison, `${family} on ${modelName(c.model)}: `)))), order];
}

function renderFunnel(campaign) {
  const widest = Math.max(0, ...campaign.funnel.map((s) => s.entered || 0));
  const rows = campaign.funnel.map((stage) => el("tr", { dataset: { stage: String(stage.index), state: stage.state } },
    el("td", { class: "name" }, `${stage.index + 1}. ${stage.name}`, el("div", { class: "ci" }, stage.kind === "search" ? "search (validation)" : "confirm (fresh seeds, test)")),
    el("td", {}, el("span", { class: `badge ${STATE_BADGE[stage.state] || "outline"}` }, stage.state)),
    el("td", {}, stageStudies(stage)),
    el("td", { class: "entered" }, enteredCell(stage, widest)),
    el("td", { class: "num left" }, leftCell(stage)),
    el("td", { class: "num" }, num(stage.trainings)),
    el("td", { class: "num" }, stage.studies.length ? duration(stage.train_s) : "–"),
    el("td", { class: "num" }, duration(stage.wall_s)),
    el("td", { class: "wrap verdicts" }, stageVerdicts(stage))));
  $("#funnel-table tbody").replaceChildren(...rows);
  const spent = campaign.funnel.reduce((sum, s) => sum + s.train_s, 0);
  const trainings = campaign.funnel.reduce((sum, s) => sum + s.trainings, 0);
  $("#funnel-note").textContent = `${num(trainings)} trainings, ${duration(spent)} of training in all. `
    + "The first stage's verdicts compare validation accuracy of the trainings that chose its configurations ('promising' at most); "
    + "a later stage trains exactly the promoted ones with fresh seeds, so its verdicts can say better or worse (docs/evidence.md).";
}

// -- current verdicts: the latest stage that has any -----------------------------------------
function renderVerdicts(campaign) {
  const stage = [...campaign.funnel].reverse().find((s) => s.cells.length);
  const body = $("#verdicts-table tbody");
  if (!stage) {
    $("#verdicts-note").textContent = "";
    body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No complete trainings yet.")));
    return;
  }
  const c0 = stage.cells[0].comparison;
  $("#verdicts-note").textContent = `stage ${stage.index + 1} (${stage.name}) · ${metricName(c0)} accuracy vs ${campaign.baseline}`;
  body.replaceChildren(...stage.cells.map(({ family, model, study_id: studyId, comparison: c }) => el("tr",
    { class: c.verdict === "baseline" ? "baseline" : "", dataset: { family, model: model || "" } },
    el("td", {}, family), el("td", {}, modelName(model)), el("td", { class: "num" }, num(c.trainings)),
    el("td", { class: "num" }, pct(c.mean), c.mean === null ? null : interval(c.ci_low, c.ci_high, false)),
    el("td", { class: "num delta" }, deltaCell(c)),
    el("td", { class: "num" }, c.p_value === null ? "–" : c.p_value.toPrecision(2)),
    el("td", {}, verdictBadge(c)), el("td", {}, studyLink(studyId, `#${studyId}`)))));
}

// -- the transfer table: family × model ----------------------------------------------------------
function transferAbsent(campaign) {
  const index = (campaign.spec.stages || []).findIndex((s) => Array.isArray(s.model) && s.model.length > 1);
  if (index < 0) return "No stage of this campaign lists several models: nothing to transfer.";
  return `Stage ${index + 1} (${campaign.funnel[index].name}) runs the promoted configurations on `
    + `${campaign.funnel[index].models.map(modelName).join(", ")} once the stages before it end.`;
}

function renderTransfer(campaign) {
  const table = campaign.transfer;
  if (!table) {
    $("#transfer-note").textContent = "";
    $("#transfer-table thead").replaceChildren(el("tr", {}, el("th", {}, "Family")));
    $("#transfer-table tbody").replaceChildren(el("tr", {}, el("td", { class: "empty" }, transferAbsent(campaign))));
    return;
  }
  const stage = campaign.funnel[table.stage];
  $("#transfer-note").textContent = `Δ vs ${campaign.baseline} on each model, stage ${table.stage + 1} (${stage.name}); 95% intervals`;
  $("#transfer-table thead").replaceChildren(el("tr", {}, el("th", {}, "Family"),
    ...table.models.map((m) => el("th", { class: "num" }, modelName(m)))));
  if (!table.families.length) {
    $("#transfer-table tbody").replaceChildren(el("tr", {}, el("td", { colspan: table.models.length + 1, class: "empty" }, "No complete trainings on these models yet.")));
    return;
  }
  const cells = new Map(table.cells.map((c) => [`${c.family}|${c.model}`, c]));
  $("#transfer-table tbody").replaceChildren(...table.families.map((family) => el("tr",
    { class: family === campaign.baseline ? "baseline" : "", dataset: { family } }, el("td", {}, family),
    ...table.models.map((model) => {
      const cell = cells.get(`${family}|${model}`);
      if (!cell) return el("td", { class: "num" }, "–");
      const c = cell.comparison;
      return el("td", { class: "num transfer-cell", dataset: { model: model || "" } },
        c.verdict === "baseline" ? [pct(c.mean), el("span", { class: "ci" }, "mean")] : deltaCell(c),
        el("div", {}, verdictBadge(c, `${family} on ${modelName(model)}: `)));
    }))));
}

// -- start and live refresh --------------------------------------------------------------------
async function load() {
  const campaign = await getJSON(API);
  renderHeader(campaign);
  renderFunnel(campaign);
  renderVerdicts(campaign);
  renderTransfer(campaign);
}

const poller = { restart() {} };
load()
  .catch((error) => reportError("loading the campaign failed", error))
  .finally(() => Object.assign(poller, poll(load, 4000, () => status === "running")));
