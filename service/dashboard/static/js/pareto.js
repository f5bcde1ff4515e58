// Study page, multi-objective studies only: accuracy against the measured cost, every complete
// trial as a point, the Pareto front drawn as a line through its points and listed in a table.
// Its own module (loaded beside study.js): a single-objective study's page shows nothing of it.

import { $, LIVE, el, getJSON, pct, poll, reportError } from "./common.js";
import { AXIS, GRID, draw, familyColor, note, pctAxis, tip } from "./charts.js";

const root = $("#study");
const panel = $("#pareto-panel");
const studyId = Number(root.dataset.studyId);
const COST_NAMES = { params: "parameters", step_time: "step time relative to ReLU" };

function costText(front, value) {
  if (value === null || value === undefined) return "–";
  if (front.cost_kind === "params") return Math.round(value).toLocaleString("en-US");
  return `${value.toFixed(3)}×`;
}

function paretoSeries(front) {
  const points = front.points.filter((p) => !p.on_front).map((p) => ({
    value: [p.cost, p.value, p.number], itemStyle: { color: familyColor(p.family || "?"), opacity: 0.55 },
    family: p.family,
  }));
  const line = front.front.map((p) => ({ value: [p.cost, p.value, p.number], family: p.family }));
  return [
    { name: "trials", id: "trials", type: "scatter", symbolSize: 7, data: points },
    {
      name: "Pareto front", id: "front", type: "line", step: "end", data: line, symbol: "diamond",
      symbolSize: 11, lineStyle: { color: "#1c2230", width: 1.5 }, itemStyle: { color: "#1c2230" }, z: 5,
    },
  ];
}

async function drawPareto(front) {
  const container = $("#chart-pareto");
  if (!front.points.length) return note(container, "No complete trial with a cost yet.");
  const name = COST_NAMES[front.cost_kind] || front.cost_kind;
  await draw(container, {
    grid: { ...GRID, left: 64, bottom: 44 },
    legend: { top: 0, right: 8, textStyle: { fontSize: 11 } },
    tooltip: {
      trigger: "item",
      formatter: (p) => tip(`#${p.value[2]} ${p.data.family || ""}`, `val acc ${pct(p.value[1])}`, `${name}: ${costText(front, p.value[0])}`),
    },
    xAxis: { ...AXIS, type: "value", scale: true, name, nameLocation: "middle", nameGap: 28 },
    yAxis: pctAxis({ name: "val acc" }),
    series: paretoSeries(front),
  });
}

function renderFrontTable(front) {
  const rows = front.front.map((p) => el("tr", { dataset: { number: String(p.number) } },
    el("td", { class: "num" }, el("a", { href: `/studies/${studyId}/trials/${p.number}` }, `#${p.number}`)),
    el("td", {}, p.family || "–"),
    el("td", { class: "num" }, pct(p.value)),
    el("td", { class: "num" }, costText(front, p.cost)),
    el("td", {}, p.device || "–")));
  $("#pareto-table tbody").replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: "5", class: "empty" }, "No complete trial yet."))]));
  panel.dataset.front = JSON.stringify(front.front.map((p) => p.number));
  const devices = front.devices.length ? `measured on ${front.devices.join(", ")}` : "measured on the workers";
  $("#pareto-note").textContent = `${front.front.length} of ${front.points.length} complete trials on the front; `
    + `${COST_NAMES[front.cost_kind] || front.cost_kind} ${devices}`;
}

async function loadPareto() {
  const front = await getJSON(`/api/v1/studies/${studyId}/pareto`);
  if (!front.cost_kind) return false;
  panel.hidden = false;
  renderFrontTable(front);
  await drawPareto(front);
  return true;
}

const live = () => LIVE.has($("#study-status").textContent.trim());

loadPareto()
  .then((shown) => { if (shown) poll(loadPareto, 8000, live); })
  .catch((error) => reportError("Pareto front", error));
