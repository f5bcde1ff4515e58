// Charts of the study page: family distributions, optimisation history, learning curves,
// parameter importance and parallel coordinates. Data comes from /dashboard/data.

import { formatParam } from "./common.js";
import { AXIS, GRID, draw, familyColor, note, pctAxis, tip } from "./charts.js";

const pctLabel = (v) => `${(100 * v).toFixed(2)}%`;

function quantile(sorted, q) {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// Deterministic jitter so points do not dance on every refresh.
const jitter = (i) => (((i * 2654435761) % 1000) / 1000 - 0.5) * 0.5;

// Each family's mean over its trainings with its 95% interval: a bar with caps beside its box.
function intervalSeries(order, board) {
  const data = order.map((family, k) => {
    const row = board.families.find((f) => f.family === family);
    const c = row && row.search;
    return c && c.ci_low !== null ? [k + 0.3, c.ci_low, c.ci_high, c.mean, c.trainings] : null;
  }).filter(Boolean);
  return {
    name: "95% CI of the mean", id: "intervals", type: "custom", xAxisIndex: 1, z: 5, data,
    encode: { x: 0, y: [1, 2, 3] },
    renderItem: (params, api) => {
      const x = api.value(0);
      const [lx, low] = api.coord([x, api.value(1)]);
      const [, high] = api.coord([x, api.value(2)]);
      const [, mid] = api.coord([x, api.value(3)]);
      const stroke = { stroke: "#1c2230", lineWidth: 1.5 };
      return { type: "group", children: [
        { type: "line", shape: { x1: lx, y1: low, x2: lx, y2: high }, style: stroke },
        { type: "line", shape: { x1: lx - 4, y1: low, x2: lx + 4, y2: low }, style: stroke },
        { type: "line", shape: { x1: lx - 4, y1: high, x2: lx + 4, y2: high }, style: stroke },
        { type: "circle", shape: { cx: lx, cy: mid, r: 3 }, style: { fill: "#1c2230" } },
      ] };
    },
  };
}

// Box per family plus every complete trial as a jittered point, each family's mean with its 95%
// interval beside its box; baseline mean as a dashed line.
export function drawFamilies(container, values, board) {
  const byFamily = new Map();
  values.value.forEach((v, i) => {
    if (v === null || values.state[i] !== "complete") return;
    const family = values.family[i] || "?";
    if (!byFamily.has(family)) byFamily.set(family, []);
    byFamily.get(family).push([v, values.number[i]]);
  });
  if (!byFamily.size) return note(container, "No complete trials yet.");
  const order = board.families.map((f) => f.family).filter((f) => byFamily.has(f));
  for (const f of byFamily.keys()) if (!order.includes(f)) order.push(f);
  const boxes = order.map((f) => {
    const sorted = byFamily.get(f).map((p) => p[0]).sort((a, b) => a - b);
    return [sorted[0], quantile(sorted, 0.25), quantile(sorted, 0.5), quantile(sorted, 0.75), sorted[sorted.length - 1]];
  });
  const points = order.map((f, k) => ({
    name: f, type: "scatter", xAxisIndex: 1, symbolSize: 4, large: true, largeThreshold: 3000,
    itemStyle: { color: familyColor(f), opacity: 0.55 },
    data: byFamily.get(f).map(([v, n], i) => [k + jitter(i + 1), v, n]),
  }));
  const base = board.families.find((f) => f.is_baseline && f.mean !== null);
  return draw(container, {
    grid: { ...GRID, left: 60 },
    tooltip: { trigger: "item", formatter: (p) => (p.seriesType === "boxplot"
      ? tip(p.name, `max ${pctLabel(p.value[5])}`, `Q3 ${pctLabel(p.value[4])}`, `median ${pctLabel(p.value[3])}`, `Q1 ${pctLabel(p.value[2])}`, `min ${pctLabel(p.value[1])}`)
      : p.seriesType === "custom"
        ? tip(`${order[Math.round(p.value[0] - 0.3)]}: mean ${pctLabel(p.value[3])} over ${p.value[4]} trainings`, `95% CI [${pctLabel(p.value[1])}, ${pctLabel(p.value[2])}]`)
        : tip(`${p.seriesName} · trial ${p.data[2]}`, pctLabel(p.data[1]))) },
    xAxis: [
      { ...AXIS, type: "category", data: order, axisTick: { alignWithLabel: true } },
      { type: "value", min: -0.5, max: order.length - 0.5, show: false },
    ],
    // Not on the hidden value axis' zero: that is the first category's centre, and the y axis
    // would be drawn through its box.
    yAxis: pctAxis({ name: "val acc", axisLine: { ...AXIS.axisLine, show: true, onZero: false } }),
    series: [
      {
        name: "distribution", type: "boxplot", data: boxes, itemStyle: { color: "transparent", borderColor: "#4f5d75" }, boxWidth: [8, 40],
        // ECharts rounds a reference line to `precision` decimals (2 by default: 0.319 → 0.32,
        // a whole percent); the differences this chart exists to show are smaller than that.
        markLine: base ? { symbol: "none", silent: true, precision: 10, lineStyle: { type: "dashed", color: "#98a2b3" },
          label: { formatter: `${base.family} mean ${pctLabel(base.mean)}`, position: "insideEndTop", color: "#667085", fontSize: 10 },
          data: [{ yAxis: base.mean, name: `${base.family} mean` }] } : undefined,
      },
      ...points,
      intervalSeries(order, board),
    ],
  });
}

// Every complete trial's value by trial number, coloured by family, and the best so far.
export function drawHistory(container, values) {
  const families = new Map();
  const best = [];
  let top = null;
  values.number.forEach((n, i) => {
    const v = values.value[i];
    if (v === null || values.state[i] !== "complete") return;
    const f = values.family[i] || "?";
    if (!families.has(f)) families.set(f, []);
    families.get(f).push([n, v]);
    if (top === null || v > top) { top = v; best.push([n, v]); }
  });
  if (!best.length) return note(container, "No complete trials yet.");
  const last = values.number[values.number.length - 1];
  if (best[best.length - 1][0] !== last) best.push([last, top]);
  return draw(container, {
    grid: { ...GRID, left: 60, top: 36 },
    legend: { top: 0, type: "scroll", textStyle: { fontSize: 11 } },
    tooltip: { trigger: "item", formatter: (p) => tip(`${p.seriesName} · trial ${p.data[0]}`, pctLabel(p.data[1])) },
    xAxis: { ...AXIS, type: "value", name: "trial", nameLocation: "middle", nameGap: 24, minInterval: 1 },
    yAxis: pctAxis({ name: "val acc" }),
    dataZoom: [{ type: "inside" }],
    series: [
      ...[...families].map(([f, data]) => ({ name: f, type: "scatter", symbolSize: 5, large: true, data, itemStyle: { color: familyColor(f), opacity: 0.7 } })),
      { name: "best so far", type: "line", step: "end", symbol: "none", data: best, lineStyle: { color: "#1c2230", width: 1.5 }, itemStyle: { color: "#1c2230" } },
    ],
  });
}

// Validation accuracy per epoch; pruned trials dashed and faded, running ones thicker.
export function drawCurves(container, curves) {
  const trials = curves.trials.filter((t) => t.epoch.length);
  if (!trials.length) return note(container, "No epochs reported yet.");
  const families = [...new Set(trials.map((t) => t.family || "?"))];
  return draw(container, {
    grid: { ...GRID, left: 60, top: 36 },
    legend: { top: 0, type: "scroll", data: families, textStyle: { fontSize: 11 } },
    tooltip: { trigger: "item", formatter: (p) => tip(`trial ${p.seriesId.split(":")[0]} · ${p.seriesName} (${p.seriesId.split(":")[1]})`, `epoch ${p.data[0] + 1}: ${pctLabel(p.data[1])}`) },
    xAxis: { ...AXIS, type: "value", name: "epoch", nameLocation: "middle", nameGap: 24, minInterval: 1, axisLabel: { ...AXIS.axisLabel, formatter: (v) => String(v + 1) } },
    yAxis: pctAxis({ name: "val acc" }),
    series: trials.map((t) => ({
      id: `${t.number}:${t.state}`, name: t.family || "?", type: "line", showSymbol: t.epoch.length === 1, symbolSize: 4,
      data: t.epoch.map((e, i) => [e, t.val_acc[i]]),
      lineStyle: { width: t.state === "running" ? 2.5 : 1.2, type: t.state === "pruned" ? "dashed" : "solid", opacity: t.state === "pruned" ? 0.45 : 0.85 },
      itemStyle: { color: familyColor(t.family || "?") },
      emphasis: { focus: "series" },
    })),
  });
}

// One bar per (family, parameter), grouped by family; families without enough trials say why.
export function drawImportance(container, importance, noteEl) {
  const searched = importance.searched || []; // the spec's, whether or not any trial completed
  const bars = [];
  const notes = [];
  for (const [family, result] of Object.entries(importance.families)) {
    const entries = Object.entries(result.importances || {}).sort((a, b) => a[1] - b[1]);
    if (!entries.length) { if (result.note) notes.push(`${family}: ${result.note}`); continue; }
    for (const [param, score] of entries) bars.push({ label: `${family} · ${param}`, family, score, n: result.n });
  }
  noteEl.textContent = `per family, on its complete trials (Optuna PED-ANOVA)${notes.length ? ` · ${notes.join(" · ")}` : ""}`;
  if (!bars.length) {
    if (!searched.length) return note(container, "No searched parameters: every trial of a family trains the same configuration.");
    return note(container, notes.length ? "Not enough complete trials to estimate importance yet."
      : `No complete trials yet to estimate the importance of ${searched.length} searched ${searched.length === 1 ? "parameter" : "parameters"} (${searched.join(", ")}).`);
  }
  return draw(container, {
    grid: { ...GRID, left: 150, top: 10 },
    tooltip: { trigger: "item", formatter: (p) => tip(p.name, `importance ${p.value.toFixed(3)} (n=${bars[p.dataIndex].n})`) },
    xAxis: { ...AXIS, type: "value", max: 1 },
    yAxis: { ...AXIS, type: "category", data: bars.map((b) => b.label), axisLabel: { ...AXIS.axisLabel, width: 140, overflow: "truncate" } },
    series: [{ type: "bar", barMaxWidth: 14, data: bars.map((b) => ({ value: b.score, itemStyle: { color: familyColor(b.family) } })) }],
  });
}

// Parallel coordinates of one family's best trials: one axis per parameter, then the value.
export function drawParams(container, data) {
  if (!data.number.length) return note(container, `No complete ${data.family} trials yet.`);
  if (!data.params.length) return note(container, `${data.family} has no searched parameters.`);
  // One line crossing the axes compares nothing, and the axes' scales are made up around it.
  if (data.number.length < 2) return note(container, `One complete ${data.family} trial so far: parallel coordinates need two or more.`);
  const axes = data.params.map((name, dim) => {
    const column = data.columns[name].filter((v) => v !== null && v !== undefined);
    const numeric = column.every((v) => typeof v === "number");
    if (!numeric) return { dim, name, type: "category", data: [...new Set(column.map(String))] };
    const lo = Math.min(...column);
    const hi = Math.max(...column);
    return { dim, name, type: lo > 0 && hi / lo > 100 ? "log" : "value", scale: true, axisLabel: { formatter: formatParam } };
  });
  const valueDim = axes.length;
  const lo = Math.min(...data.value);
  const hi = Math.max(...data.value);
  const pad = Math.max((hi - lo) * 0.05, 0.001); // equal values still get a readable axis
  axes.push({ dim: valueDim, name: "val acc", type: "value", min: lo - pad, max: hi + pad, axisLabel: { formatter: pctLabel } });
  const rows = data.number.map((_, i) => [
    ...data.params.map((name, d) => (axes[d].type === "category" ? String(data.columns[name][i]) : data.columns[name][i])),
    data.value[i],
  ]);
  return draw(container, {
    parallel: { left: 40, right: 110, top: 40, bottom: 30, parallelAxisDefault: { nameTextStyle: { color: "#667085", fontSize: 11 }, axisLabel: { color: "#667085", fontSize: 10 } } },
    parallelAxis: axes,
    visualMap: { show: true, dimension: valueDim, min: lo, max: Math.max(hi, lo + 1e-6), right: 0, top: 40, itemHeight: 120, calculable: true, precision: 4,
      inRange: { color: ["#c9d6f2", "#2f6fed", "#1c2230"] }, textStyle: { fontSize: 10, color: "#667085" }, formatter: (v) => pctLabel(v) },
    series: [{ type: "parallel", lineStyle: { width: 1, opacity: 0.5 }, progressive: 500, data: rows }],
  });
}
