// The study page's trial table: one page at a time from /api/v1 (sorted, filtered and paged in SQL).

import { $, badge, duration, el, getJSON, liveEta, liveStep, num, paramsText, pct, readJSON, reportError } from "./common.js";

// The Time column is wall time from start to end: it includes preparing the data (decoding the
// data set, for the first trial on a machine), which the trial page shows apart.
const TIME_NOTE = "wall time from start to end, data preparation included (the trial page shows it apart)";
const DESCENDING_FIRST = new Set(["value", "test_acc", "img_per_s", "epochs_done", "duration_s"]);

export class TrialTable {
  constructor(studyId, onLoaded = () => {}) {
    this.studyId = studyId;
    this.onLoaded = onLoaded;
    this.query = { offset: 0, limit: 50, sort: "number", family: "", state: "", min: null, max: null };
    this.total = 0;
    this.body = $("#trials-table tbody");
    this.wire();
  }

  url() {
    const q = this.query;
    const params = new URLSearchParams({ limit: String(q.limit), offset: String(q.offset), sort: q.sort });
    if (q.family) params.append("family", q.family);
    if (q.state) params.append("state", q.state);
    if (q.min !== null) params.set("value_min", String(q.min));
    if (q.max !== null) params.set("value_max", String(q.max));
    return `/api/v1/studies/${this.studyId}/trials?${params}`;
  }

  async load() {
    const page = await this.fetchPage();
    this.total = page.total;
    this.render(page.items);
    // User Timing mark: bench/dashboard_paint.py reads when the first page was on screen.
    if (!performance.getEntriesByName("actsearch:trials-table").length) performance.mark("actsearch:trials-table");
    this.onLoaded(page);
    return page;
  }

  // The first page may already be on its way: the page's head starts that request before the
  // modules have loaded (see study.html), which takes a round trip off the first paint.
  fetchPage() {
    const early = window.actsearchFirstTrials;
    window.actsearchFirstTrials = null; // taken, or too late: first_trials.js asks nothing now
    if (early && early.url === this.url()) return early.response.then(readJSON);
    return getJSON(this.url());
  }

  render(items) {
    const rows = items.map((t) => this.row(t));
    this.body.replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 9, class: "empty" }, this.filtered() ? "No trial matches the filters." : "No trials yet: they appear here as workers pick them up."))]));
    const q = this.query;
    const first = this.total ? q.offset + 1 : 0;
    const last = Math.min(q.offset + q.limit, this.total);
    $("#page-info").textContent = `${num(first)}–${num(last)} of ${num(this.total)}`;
    $("#trials-total").textContent = this.filtered() ? `${num(this.total)} matching` : `${num(this.total)} trials`;
    $("#page-prev").disabled = q.offset === 0;
    $("#page-next").disabled = q.offset + q.limit >= this.total;
    for (const th of document.querySelectorAll("#trials-table th.sortable")) {
      const key = th.dataset.sort;
      th.classList.toggle("sorted-asc", q.sort === key);
      th.classList.toggle("sorted-desc", q.sort === `-${key}`);
    }
  }

  row(t) {
    // A running trial shows its worker's last heartbeat: where it is, how fast, how long to go.
    const live = t.state === "running" ? t.progress : null;
    const step = liveStep(live);
    const eta = liveEta(live);
    return el("tr", { dataset: { number: t.number ?? "", state: t.state, family: t.family ?? "" } },
      el("td", { class: "num" }, t.number === null ? "–" : el("a", { href: `/studies/${this.studyId}/trials/${t.number}` }, String(t.number))),
      el("td", {}, t.family ?? "–"),
      el("td", {}, badge(t.state),
        // A cancelled trial's reason is "cancelled": the badge says it already.
        t.failure_reason && t.failure_reason !== t.state ? el("span", { class: "notice" }, ` ${t.failure_reason}`) : null,
        t.attempt > 1 ? el("span", { class: "notice", title: "attempt" }, ` #${t.attempt}`) : null,
        step ? el("span", { class: "notice live-step" }, ` ${step}`) : null),
      el("td", { class: "num" }, t.value === null ? "–" : pct(t.value), t.value_std ? el("span", { class: "notice" }, ` ±${(100 * t.value_std).toFixed(2)}`) : null),
      el("td", { class: "num" }, pct(t.test_acc)),
      el("td", { class: "num" }, String(t.epochs_done)),
      eta ? el("td", { class: "num live-eta", title: "time left at the current rate" }, eta)
        : el("td", { class: "num", title: TIME_NOTE }, duration(t.duration_s)),
      live ? el("td", { class: "num live-rate", title: "the current epoch's training rate" }, num(live.img_per_s))
        : el("td", { class: "num" }, num(t.img_per_s)),
      el("td", { class: "params" }, paramsText(t.params)),
    );
  }

  filtered() {
    const q = this.query;
    return Boolean(q.family || q.state || q.min !== null || q.max !== null);
  }

  setFamilies(families) {
    const select = $("#f-family");
    const current = select.value;
    const known = new Set([...select.options].map((o) => o.value));
    for (const family of families) if (!known.has(family)) select.append(el("option", { value: family }, family));
    select.value = current;
  }

  readFilters() {
    const percent = (id) => {
      const raw = $(id).value.trim();
      return raw === "" ? null : Number(raw) / 100; // typed in %, sent as a fraction
    };
    Object.assign(this.query, {
      family: $("#f-family").value, state: $("#f-state").value, min: percent("#f-min"), max: percent("#f-max"), offset: 0,
    });
  }

  wire() {
    const reload = () => this.load().catch((error) => this.onError(error));
    $("#f-apply").addEventListener("click", () => { this.readFilters(); reload(); });
    for (const id of ["#f-family", "#f-state"]) $(id).addEventListener("change", () => { this.readFilters(); reload(); });
    for (const id of ["#f-min", "#f-max"]) $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") { this.readFilters(); reload(); } });
    $("#f-clear").addEventListener("click", () => {
      for (const id of ["#f-family", "#f-state", "#f-min", "#f-max"]) $(id).value = "";
      this.readFilters();
      reload();
    });
    $("#page-prev").addEventListener("click", () => { this.query.offset = Math.max(0, this.query.offset - this.query.limit); reload(); });
    $("#page-next").addEventListener("click", () => { this.query.offset += this.query.limit; reload(); });
    $("#page-size").addEventListener("change", (e) => { this.query.limit = Number(e.target.value); this.query.offset = 0; reload(); });
    for (const th of document.querySelectorAll("#trials-table th.sortable")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        const q = this.query;
        if (q.sort === key) q.sort = `-${key}`;
        else if (q.sort === `-${key}`) q.sort = key;
        else q.sort = DESCENDING_FIRST.has(key) ? `-${key}` : key;
        q.offset = 0;
        reload();
      });
    }
  }

  onError(error) {
    this.body.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "empty" }, `Could not load trials: ${error.message}`)));
    reportError("loading trials failed", error);
  }
}
