// ECharts, vendored and loaded on demand (after a page's table is up, so it never delays first paint).

let loading = null;

export function loadECharts() {
  if (window.echarts) return Promise.resolve(window.echarts);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/dashboard/static/vendor/echarts.min.js";
      script.onload = () => resolve(window.echarts);
      script.onerror = () => reject(new Error("could not load the chart library"));
      document.head.append(script);
    });
  }
  return loading;
}

// A tooltip's position as a function that leaves the placement to ECharts (it returns nothing):
// given a side's name instead (as a tooltip shown by dispatchAction defaults to), ECharts adds an
// arrow written as HTML with a style="…" attribute, which the page's CSP refuses.
const ownPlacement = () => undefined;

const instances = new Map();
const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) instances.get(entry.target)?.resize();
});

// Draw (or redraw) `option` into `container`; `replace` drops series from an earlier draw.
export async function draw(container, option, replace = true) {
  const echarts = await loadECharts();
  let chart = instances.get(container);
  if (!chart) {
    container.textContent = "";
    chart = echarts.init(container, null, { renderer: "canvas" });
    instances.set(container, chart);
    resizer.observe(container);
  }
  const tooltip = option.tooltip ? { tooltip: { position: ownPlacement, ...option.tooltip } } : {};
  chart.setOption({ animation: false, textStyle: { fontFamily: "system-ui, sans-serif" }, ...option, ...tooltip }, replace);
  return chart;
}

export function note(container, message) {
  const chart = instances.get(container);
  if (chart) { chart.dispose(); instances.delete(container); resizer.unobserve(container); }
  container.innerHTML = "";
  const div = document.createElement("div");
  div.className = "chart-note";
  div.textContent = message;
  container.append(div);
}

// Tooltips are DOM nodes, never HTML strings: ECharts parses a string as HTML, and the markers of
// its own formatters are style="…" attributes, which the page's CSP (style-src 'self') refuses.
// Text goes in as text, so a family or parameter name is never markup either.
export function tip(...lines) {
  const box = document.createElement("div");
  lines.forEach((line, i) => {
    if (i) box.append(document.createElement("br"));
    box.append(String(line));
  });
  return box;
}

// The tooltip of trigger "axis": the axis value, then each series' colour, name and value.
export function axisTip(format = (value) => String(value)) {
  return (params) => {
    const items = Array.isArray(params) ? params : [params];
    const box = document.createElement("div");
    if (items.length) box.append(String(items[0].axisValueLabel ?? items[0].axisValue ?? ""));
    for (const p of items) {
      const marker = document.createElement("span");
      marker.className = "tip-marker";
      marker.style.backgroundColor = typeof p.color === "string" ? p.color : "#98a2b3";
      const value = document.createElement("span");
      value.className = "tip-value";
      value.textContent = format(Array.isArray(p.value) ? p.value[p.value.length - 1] : p.value, p);
      const row = document.createElement("div");
      row.className = "tip-row";
      row.append(marker, String(p.seriesName ?? ""), value);
      box.append(row);
    }
    return box;
  };
}

const PALETTE = ["#2f6fed", "#2e9e5b", "#d99a1e", "#d0453a", "#8a63d2", "#1b9aaa", "#c2569b", "#6b7a2a",
  "#e07b39", "#4f5d75", "#9c6644", "#3a86ff", "#06a77d", "#f25c54", "#7209b7"];
const assigned = new Map();

// A stable colour per family name across every chart of the page (baselines get grey-blue).
export function familyColor(name) {
  if (name === "relu") return "#4f5d75";
  if (!assigned.has(name)) assigned.set(name, PALETTE[assigned.size % PALETTE.length]);
  return assigned.get(name);
}

export const AXIS = {
  axisLine: { lineStyle: { color: "#b8bfcc" } },
  axisLabel: { color: "#667085", fontSize: 11 },
  splitLine: { lineStyle: { color: "#eef0f4" } },
  nameTextStyle: { color: "#667085", fontSize: 11 },
};

export const GRID = { left: 52, right: 16, top: 28, bottom: 36, containLabel: false };

export const pctAxis = (extra = {}) => ({
  ...AXIS, type: "value", scale: true,
  axisLabel: { ...AXIS.axisLabel, formatter: (v) => `${(100 * v).toFixed(1)}%` }, ...extra,
});
