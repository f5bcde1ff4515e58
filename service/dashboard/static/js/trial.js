// Trial page: learned activation curves (f and f′, initial vs trained, ReLU for reference),
// per-epoch curves, parameters, record, manifest, failure and log tail. Refreshes while running.

import { $, LIVE, badge, bytes, duration, el, formatParam, getJSON, liveEta, liveFraction, liveStep, num, pct, poll, reportError } from "./common.js";
import { AXIS, GRID, axisTip, draw, note, pctAxis } from "./charts.js";

const root = $("#trial");
const studyId = Number(root.dataset.studyId);
const number = Number(root.dataset.number);
const fixedFamilies = new Set((root.dataset.fixed || "").split(" ").filter(Boolean));
let trial = null;
let sites = [];

// -- learned activation curves ---------------------------------------------------------------
// Accepts {initial: {site: {x, f, df}}, final: {...}} (the worker's record) or a flat
// {site: {x, f, df, f_init, df_init}}; a per-channel site has f as a list of lists.
export function normalizeCurves(curves) {
  if (!curves || typeof curves !== "object") return [];
  const initial = curves.initial || curves.init || null;
  const final = curves.final || curves.trained || null;
  const curve = (c, suffix = "") => (c && Array.isArray(c.x) ? {
    x: c[`x${suffix}`] || c.x, f: c[`f${suffix}`], df: c[`df${suffix}`],
    // Per-channel sites also carry the envelope over their channels.
    f_min: c.f_min, f_max: c.f_max, df_min: c.df_min, df_max: c.df_max,
  } : null);
  if (initial || final) {
    const names = [...new Set([...Object.keys(final || {}), ...Object.keys(initial || {})])];
    return names.map((name) => ({ name, final: curve((final || {})[name]), initial: curve((initial || {})[name]) }));
  }
  return Object.entries(curves)
    .filter(([, c]) => c && Array.isArray(c.x))
    .map(([name, c]) => ({ name, final: curve(c), initial: c.f_init ? curve(c, "_init") : null }));
}

const channels = (ys) => (Array.isArray(ys) && Array.isArray(ys[0]) ? ys.slice(0, 32) : ys ? [ys] : []);
const relu = (x) => Math.max(0, x);
const reluPrime = (x) => (x > 0 ? 1 : 0);

function curveSeries(site, key, reference) {
  const series = [];
  const bands = []; // after the lines: the legend takes its colour from the first series of a name
  const xs = (site.final || site.initial).x;
  series.push({ name: "ReLU", type: "line", symbol: "none", data: xs.map((x) => [x, reference(x)]),
    lineStyle: { color: "#b8bfcc", width: 1.5 }, itemStyle: { color: "#b8bfcc" }, z: 1 });
  for (const [label, curve, style] of [["initial", site.initial, { type: "dashed", color: "#d99a1e" }], ["trained", site.final, { type: "solid", color: "#2f6fed" }]]) {
    if (!curve || !curve[key]) continue;
    bands.push(...envelope(label, curve, key, style.color));
    channels(curve[key]).forEach((ys, c) => series.push({
      name: label, type: "line", symbol: "none", data: curve.x.map((x, i) => [x, ys[i]]), z: label === "trained" ? 3 : 2,
      lineStyle: { width: c ? 1 : 2, opacity: c ? 0.5 : 1, ...style }, itemStyle: { color: style.color },
    }));
  }
  return [...series, ...bands];
}

// The band between the lowest and highest channel's curve (a stacked pair of invisible lines).
function envelope(label, curve, key, color) {
  const lo = curve[`${key}_min`];
  const hi = curve[`${key}_max`];
  if (!Array.isArray(lo) || !Array.isArray(hi)) return [];
  // stackStrategy "all": the band's height stacks on a negative lower edge too.
  const common = { name: label, type: "line", symbol: "none", stack: `${label}-band`, stackStrategy: "all",
    lineStyle: { opacity: 0 }, itemStyle: { color }, tooltip: { show: false }, silent: true, z: 0 };
  return [
    { ...common, id: `${label}-band-low`, data: curve.x.map((x, i) => [x, lo[i]]) },
    { ...common, id: `${label}-band-high`, data: curve.x.map((x, i) => [x, hi[i] - lo[i]]), areaStyle: { color, opacity: 0.15 } },
  ];
}

function allSitesSeries(key) {
  return sites.filter((s) => s.final && s.final[key]).map((s, i) => ({
    name: s.name, type: "line", symbol: "none", data: s.final.x.map((x, j) => [x, channels(s.final[key])[0][j]]),
    lineStyle: { width: 1.2 }, color: `hsl(${(i * 47) % 360} 60% 45%)`,
  }));
}

function curveOption(series, yName, legend) {
  return {
    grid: { ...GRID, top: 36 },
    legend: { top: 0, type: "scroll", data: legend, textStyle: { fontSize: 11 } },
    tooltip: { trigger: "axis", formatter: axisTip((v) => (v === null || v === undefined ? "–" : Number(v).toFixed(4))) },
    xAxis: { ...AXIS, type: "value", name: "x", nameLocation: "middle", nameGap: 24 },
    yAxis: { ...AXIS, type: "value", scale: true },
    aria: { enabled: true, label: { description: yName } },
    series,
  };
}

async function drawActivation() {
  const fBox = $("#chart-f");
  const dfBox = $("#chart-df");
  if (!sites.length) {
    const why = trial.state === "running" ? "Curves are stored when the trial finishes." : "This trial stored no activation curves (fixed activation, or it ended early).";
    note(fBox, why);
    note(dfBox, why);
    return;
  }
  const choice = $("#site-select").value;
  if (choice === "*") {
    const legend = sites.map((s) => s.name);
    const relus = (ref) => ({ name: "ReLU", type: "line", symbol: "none", data: sites[0].final.x.map((x) => [x, ref(x)]), lineStyle: { color: "#b8bfcc" }, itemStyle: { color: "#b8bfcc" } });
    await draw(fBox, curveOption([relus(relu), ...allSitesSeries("f")], "f(x)", ["ReLU", ...legend]));
    await draw(dfBox, curveOption([relus(reluPrime), ...allSitesSeries("df")], "f′(x)", ["ReLU", ...legend]));
    return;
  }
  const site = sites.find((s) => s.name === choice) || sites[0];
  await draw(fBox, curveOption(curveSeries(site, "f", relu), "f(x)", ["ReLU", "initial", "trained"]));
  await draw(dfBox, curveOption(curveSeries(site, "df", reluPrime), "f′(x)", ["ReLU", "initial", "trained"]));
}

function fillSites() {
  const select = $("#site-select");
  const current = select.value;
  const options = sites.map((s) => el("option", { value: s.name }, s.name));
  if (sites.length > 1) options.unshift(el("option", { value: "*" }, `all ${sites.length} sites (trained)`));
  select.replaceChildren(...options);
  if (current && [...select.options].some((o) => o.value === current)) select.value = current;
  else if (sites.length) select.value = sites[0].name;
  select.disabled = sites.length < 2;
}

// -- per-epoch chart ---------------------------------------------------------------------------
function drawEpochs() {
  const box = $("#chart-epochs");
  const epochs = trial.epochs;
  if (!epochs.length) return note(box, trial.state === "running" ? "Waiting for the first epoch…" : "No epochs were reported.");
  const stop = trial.state === "pruned" || trial.state === "failed" ? epochs[epochs.length - 1] : null;
  return draw(box, {
    grid: { ...GRID, right: 56, top: 36 },
    legend: { top: 0, textStyle: { fontSize: 11 } },
    tooltip: { trigger: "axis", formatter: axisTip((v, p) => (v === null || v === undefined ? "–" : p.seriesName === "val acc" ? pct(v) : Number(v).toFixed(4))) },
    xAxis: { ...AXIS, type: "category", name: "epoch", nameLocation: "middle", nameGap: 24, data: epochs.map((e) => String(e.epoch + 1)) },
    yAxis: [pctAxis({ name: "val acc" }), { ...AXIS, type: "value", name: "train loss", scale: true, splitLine: { show: false } }],
    series: [
      { name: "val acc", type: "line", data: epochs.map((e) => e.val_acc), itemStyle: { color: "#2f6fed" },
        markPoint: stop ? { symbol: "pin", symbolSize: 34, itemStyle: { color: trial.state === "pruned" ? "#d99a1e" : "#d0453a" },
          label: { fontSize: 9, formatter: trial.state }, data: [{ coord: [String(stop.epoch + 1), stop.val_acc] }] } : undefined },
      { name: "train loss", type: "line", yAxisIndex: 1, data: epochs.map((e) => e.train_loss), itemStyle: { color: "#98a2b3" }, lineStyle: { type: "dashed" } },
    ],
  });
}

// -- tables ------------------------------------------------------------------------------------
function kvTable(pairs) {
  const rows = pairs.filter(([, v]) => v !== undefined).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v === null ? "–" : v)));
  return rows.length ? el("table", { class: "kv" }, rows) : el("p", { class: "notice" }, "–");
}

// A nested value (the manifest's resolved_training…): pretty-printed, in a box that scrolls on its
// own, never one long line widening the page.
function valueCell(value) {
  if (value === null) return null;
  if (typeof value !== "object") return String(value);
  return el("pre", { class: "json-box" }, JSON.stringify(value, null, 2));
}

function summarise(values) {
  if (!Array.isArray(values)) return formatParam(values);
  if (values.length === 1) return formatParam(values[0]);
  const flat = values.flat(Infinity);
  const mean = flat.reduce((a, b) => a + b, 0) / flat.length;
  return `mean ${formatParam(mean)} [${formatParam(Math.min(...flat))}, ${formatParam(Math.max(...flat))}] (${flat.length})`;
}

function activationParamsTable(params) {
  if (!params || typeof params !== "object") return el("p", { class: "notice" }, "none stored");
  const initial = params.initial || {};
  const final = params.final || (params.initial ? {} : params);
  const rows = [];
  for (const site of new Set([...Object.keys(final), ...Object.keys(initial)])) {
    const names = new Set([...Object.keys(final[site] || {}), ...Object.keys(initial[site] || {})]);
    for (const name of names) {
      const a = (initial[site] || {})[name];
      const b = (final[site] || {})[name];
      rows.push(el("tr", {}, el("td", { class: "mono" }, site), el("td", {}, name),
        el("td", { class: "num" }, a === undefined ? "–" : summarise(a)), el("td", { class: "num" }, b === undefined ? "–" : summarise(b))));
    }
  }
  if (!rows.length) return el("p", { class: "notice" }, "none (fixed activation)");
  return el("div", { class: "table-wrap" }, el("table", { class: "data" },
    el("thead", {}, el("tr", {}, el("th", {}, "site"), el("th", {}, "parameter"), el("th", { class: "num" }, "initial"), el("th", { class: "num" }, "trained"))),
    el("tbody", {}, rows)));
}

const RECORD_SHOWN = new Set(["train_loss", "val_accs", "activation_params", "activation_curves", "curves", "manifest"]);

function recordTable(record) {
  if (!record || !Object.keys(record).length) return el("p", { class: "notice" }, trial.state === "running" ? "Stored when the trial finishes." : "No record stored.");
  const r = record;
  const pairs = [
    ["val acc (objective)", pct(r.val_acc)],
    ["best val acc", r.best_val_acc === undefined ? undefined : `${pct(r.best_val_acc)} at epoch ${(r.best_epoch ?? 0) + 1}`],
    ["test acc", r.test_acc === undefined ? undefined : pct(r.test_acc)],
    ["epochs", r.epochs_done],
    ["throughput", r.img_per_s === undefined ? undefined : `${num(r.img_per_s)} img/s`],
    ["time", r.train_s === undefined ? undefined : timesLine(r)],
    ["duration", r.duration_s === undefined ? undefined : duration(r.duration_s)],
    ["peak memory", r.peak_memory_bytes === undefined ? undefined : `${bytes(r.peak_memory_bytes)}${r.peak_memory_kind ? ` (${r.peak_memory_kind})` : ""}`],
    ["precision", r.precision],
  ];
  const known = new Set(["val_acc", "best_val_acc", "best_epoch", "test_acc", "epochs_done", "img_per_s", "data_s", "data_load_s", "train_s", "eval_s", "duration_s", "peak_memory_bytes", "peak_memory_kind", "precision"]);
  for (const [key, value] of Object.entries(r)) {
    if (known.has(key) || RECORD_SHOWN.has(key)) continue;
    pairs.push([key, valueCell(value)]);
  }
  return kvTable(pairs);
}

// Preparing the data is timed apart from training: decoding the data set (data_load_s: 0 when
// it was cached) and moving it to the device (data_s).
function dataPrep(r) {
  const parts = [r.data_load_s, r.data_s].filter((v) => typeof v === "number");
  return parts.length ? parts.reduce((a, b) => a + b, 0) : null;
}

function timesLine(r) {
  const prep = dataPrep(r);
  const detail = [];
  if (typeof r.data_load_s === "number") detail.push(r.data_load_s ? `decoding the data set ${duration(r.data_load_s)}` : "data set cached");
  if (typeof r.data_s === "number") detail.push(`to the device ${duration(r.data_s)}`);
  return el("span", { id: "trial-times" },
    el("span", { class: "data-prep", title: detail.join(" · ") }, `data prep ${duration(prep)}`),
    ` · training ${duration(r.train_s)} · evaluation ${duration(r.eval_s)}`);
}

function manifestTable(manifest) {
  if (!manifest || !Object.keys(manifest).length) return el("p", { class: "notice" }, "No manifest stored.");
  const pairs = [];
  for (const [key, value] of Object.entries(manifest)) {
    if (key === "config") continue; // shown below as the resolved config
    if (key === "packages" && value && typeof value === "object") {
      pairs.push(["packages", Object.entries(value).map(([k, v]) => `${k} ${v ?? "–"}`).join(", ")]);
    } else pairs.push([key, valueCell(value)]);
  }
  return kvTable(pairs);
}

// -- page --------------------------------------------------------------------------------------
function renderHeader() {
  const t = trial;
  $("#trial-state").replaceWith(Object.assign(badge(t.state), { id: "trial-state" }));
  $("#trial-meta").textContent = [t.family, t.attempt > 1 ? `attempt ${t.attempt}` : null, t.worker_id ? `worker ${t.worker_id}` : null].filter(Boolean).join(" · ");
  const failure = $("#trial-failure");
  if (t.failure_reason || t.failure_message) {
    failure.replaceChildren(el("b", {}, `${t.state}: ${t.failure_reason || "failure"}`),
      t.failure_epoch !== null && t.failure_epoch !== undefined ? ` at epoch ${t.failure_epoch + 1}` : "",
      t.failure_message ? el("pre", { class: "spaced" }, t.failure_message) : null);
    failure.classList.remove("hidden");
  } else failure.classList.add("hidden");
  const card = (label, value, sub = "") => el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value), el("div", { class: "sub" }, sub));
  const live = liveOf(t);
  const prep = dataPrep(t.record || {});
  const timeSub = [t.img_per_s ? `${num(t.img_per_s)} img/s` : null, prep === null ? null : `incl. data prep ${duration(prep)}`];
  $("#trial-cards").replaceChildren(
    card("Validation accuracy", t.value === null ? "–" : pct(t.value), t.value_std ? `± ${(100 * t.value_std).toFixed(2)} over seeds` : "objective"),
    card("Test accuracy", pct(t.test_acc), "recorded, never optimised"),
    card("Epochs", String(t.epochs_done), live && live.epochs ? `of ${live.epochs} · running` : t.state === "running" ? "running" : t.state),
    live ? card("Time left", live.eta_s === null || live.eta_s === undefined ? "–" : duration(live.eta_s), live.img_per_s ? `${num(live.img_per_s)} img/s now` : "at the current rate")
      : card("Time", duration(t.duration_s), timeSub.filter(Boolean).join(" · ")),
  );
  renderProgress(live);
}

const liveOf = (t) => (t.state === "running" && t.progress ? t.progress : null);

// The running trial's line: phase, seed/epoch/step, rate and ETA, over a bar of the whole trial.
function renderProgress(live) {
  const line = $("#trial-progress");
  line.classList.toggle("hidden", !live);
  if (!live) return;
  const fraction = liveFraction(live);
  const bar = line.querySelector(".live-bar span");
  bar.style.width = `${100 * (fraction ?? 0)}%`;
  line.dataset.phase = live.phase || "";
  const text = live.phase === "data"
    ? ["preparing data: decoding the data set (timed apart from training)"]
    : [liveStep(live), live.img_per_s ? `${num(live.img_per_s)} img/s` : null, liveEta(live), fraction === null ? null : `${Math.floor(100 * fraction)}% of the trial`];
  $("#trial-progress-text").textContent = text.filter(Boolean).join(" · ");
}

// ReLU and other fixed activations learn nothing: no curves or table of learned parameters.
function learnsNothing(t) {
  if (fixedFamilies.has(t.family)) return true;
  const params = t.activation_params;
  if (!t.record || !params || typeof params !== "object") return false;
  // A finished trial whose record holds no learned parameter at any site ({} or empty sides).
  const sides = params.initial || params.final ? [params.initial || {}, params.final || {}] : [params];
  return sides.every((sites) => Object.keys(sites).length === 0);
}

function renderFixed(t) {
  const fixed = learnsNothing(t);
  $("#curves-panel").classList.toggle("hidden", fixed);
  $("#act-params-box").classList.toggle("hidden", fixed);
  const message = $("#fixed-activation");
  message.classList.toggle("hidden", !fixed);
  message.textContent = fixed ? `${t.family || "This activation"} has no learnable parameters: nothing was learned to plot against ReLU.` : "";
  return fixed;
}

async function load() {
  trial = await getJSON(`/api/v1/studies/${studyId}/trials/${number}`);
  renderHeader();
  $("#trial-params").replaceChildren(kvTable(Object.entries(trial.params || {}).map(([k, v]) => [k, formatParam(v)])));
  const fixed = renderFixed(trial);
  $("#act-params").replaceChildren(activationParamsTable(trial.activation_params));
  $("#trial-record").replaceChildren(recordTable(trial.record));
  $("#trial-manifest").replaceChildren(manifestTable((trial.record || {}).manifest));
  $("#trial-log").textContent = trial.log_tail || "–";
  $("#log-panel").classList.toggle("hidden", !trial.log_tail);
  $("#trial-config").textContent = JSON.stringify(trial.config, null, 2);
  sites = normalizeCurves(trial.curves || (trial.record || {}).activation_curves || (trial.record || {}).curves);
  fillSites();
  await Promise.all([fixed ? null : drawActivation(), drawEpochs()]);
}

$("#site-select").addEventListener("change", () => drawActivation().catch((error) => reportError("activation plot", error)));
load()
  .catch((error) => reportError("loading the trial failed", error))
  .finally(() => poll(load, 3000, () => trial !== null && LIVE.has(trial.state)));
