// Workers page: every worker process, what it trains, how fast, and whether it still heartbeats.

import { $, ageSince, badge, duration, el, getJSON, num, poll, reportError } from "./common.js";

function current(w) {
  if (w.current_study_id === null || w.current_study_id === undefined) return "–";
  if (w.current_trial_number === null || w.current_trial_number === undefined) return el("a", { href: `/studies/${w.current_study_id}` }, `study ${w.current_study_id}`);
  return el("a", { href: `/studies/${w.current_study_id}/trials/${w.current_trial_number}` }, `study ${w.current_study_id} · trial ${w.current_trial_number}`);
}

function row(w) {
  return el("tr", { dataset: { id: w.id, status: w.status } },
    el("td", { class: "mono" }, w.id),
    el("td", {}, `${w.hostname} · pid ${w.pid}`),
    el("td", {}, w.device, w.slot ? el("span", { class: "notice" }, ` slot ${w.slot}`) : null),
    el("td", {}, badge(w.status), w.stale ? badge("stale") : null),
    el("td", {}, current(w)),
    el("td", { class: "num" }, w.current_epoch === null || w.current_epoch === undefined ? "–" : String(w.current_epoch + 1)),
    el("td", { class: `num ${w.stale ? "stale" : ""}` }, `${duration(w.heartbeat_age_s)} ago`),
    el("td", { class: "num" }, num(w.img_per_s)),
    el("td", { class: "num" }, String(w.trials_done)),
    el("td", { class: "num", title: w.started_at }, duration(ageSince(w.started_at))),
  );
}

async function refresh() {
  const workers = await getJSON("/api/v1/workers");
  const body = $("#workers-table tbody");
  body.replaceChildren(...(workers.length ? workers.map(row)
    : [el("tr", {}, el("td", { colspan: 10, class: "empty" }, "No workers yet: start one with `actsearch worker --gpus 0`."))]));
  const busy = workers.filter((w) => w.status === "busy").length;
  const stale = workers.filter((w) => w.stale).length;
  $("#workers-summary").textContent = `${workers.length} ${workers.length === 1 ? "worker" : "workers"} · ${busy} busy${stale ? ` · ${stale} silent` : ""}`;
}

refresh()
  .catch((error) => reportError("loading workers failed", error))
  .finally(() => poll(refresh, 5000, () => true));
