// Workers page: every worker process, what it trains, how far it is, how fast, and whether it
// still heartbeats. A stopped or lost worker's times stand still at its last heartbeat.

import { $, ageSince, badge, clockTime, duration, el, getJSON, liveEta, liveStep, num, poll, reportError } from "./common.js";

const GONE = new Set(["stopped", "lost"]);

function current(w) {
  if (w.current_study_id === null || w.current_study_id === undefined) return "–";
  if (w.current_trial_number === null || w.current_trial_number === undefined) return el("a", { href: `/studies/${w.current_study_id}` }, `study ${w.current_study_id}`);
  return el("a", { href: `/studies/${w.current_study_id}/trials/${w.current_trial_number}` }, `study ${w.current_study_id} · trial ${w.current_trial_number}`);
}

function epochCell(w) {
  const live = w.progress;
  if (live && live.epoch !== null && live.epoch !== undefined) return `${live.epoch + 1}${live.epochs ? `/${live.epochs}` : ""}`;
  return w.current_epoch === null || w.current_epoch === undefined ? "–" : String(w.current_epoch + 1);
}

// Where the current trial is inside its epoch (or what it does instead: preparing data…).
function stepCell(w) {
  const live = w.progress;
  if (!live) return "–";
  if (live.phase === "training" && live.step !== null && live.step !== undefined) {
    return `${num(live.step)}${live.steps ? `/${num(live.steps)}` : ""}`;
  }
  return liveStep(live) || "–";
}

// A live worker's heartbeat age counts; a stopped or lost one's says when it was last heard.
function heartbeatCell(w) {
  if (GONE.has(w.status)) {
    return el("td", { class: "num gone", title: `last heartbeat ${w.heartbeat_at}` }, `${w.status} ${clockTime(w.heartbeat_at)}`);
  }
  return el("td", { class: `num ${w.stale ? "stale" : ""}`, title: `last heartbeat ${clockTime(w.heartbeat_at)}` }, `${duration(w.heartbeat_age_s)} ago`);
}

// Up: from its start to now, or to its last heartbeat once it stopped or was lost.
function upCell(w) {
  const gone = GONE.has(w.status);
  const up = gone ? Math.max(0, (Date.parse(w.heartbeat_at) - Date.parse(w.started_at)) / 1000) : ageSince(w.started_at);
  const title = `started ${clockTime(w.started_at)}${gone ? `, ${w.status} ${clockTime(w.heartbeat_at)}` : ""}`;
  return el("td", { class: `num${gone ? " gone" : ""}`, title }, duration(up), gone ? el("span", { class: "notice" }, " (ended)") : null);
}

function row(w) {
  const live = w.progress;
  return el("tr", { dataset: { id: w.id, status: w.status } },
    el("td", { class: "mono wrap" }, w.id),
    el("td", { class: "wrap" }, `${w.hostname} · pid ${w.pid}`),
    el("td", { class: "wrap" }, w.device, w.slot ? el("span", { class: "notice" }, ` slot ${w.slot}`) : null),
    el("td", {}, badge(w.status), w.stale ? badge("stale", "beside") : null),
    el("td", {}, current(w)),
    el("td", { class: "num" }, epochCell(w)),
    el("td", { class: "num live-step" }, stepCell(w)),
    heartbeatCell(w),
    el("td", { class: "num live-rate", title: "its current trial's training rate" }, num(w.img_per_s)),
    el("td", { class: "num live-eta", title: "time left in its current trial, at that rate" }, liveEta(live) ? duration(live.eta_s) : "–"),
    el("td", { class: "num" }, String(w.trials_done)),
    upCell(w),
  );
}

async function refresh() {
  const workers = await getJSON("/api/v1/workers");
  const body = $("#workers-table tbody");
  body.replaceChildren(...(workers.length ? workers.map(row)
    : [el("tr", {}, el("td", { colspan: 12, class: "empty" }, "No workers yet: start one with `actsearch worker --gpus 0`."))]));
  const busy = workers.filter((w) => w.status === "busy").length;
  const stale = workers.filter((w) => w.stale).length;
  $("#workers-summary").textContent = `${workers.length} ${workers.length === 1 ? "worker" : "workers"} · ${busy} busy${stale ? ` · ${stale} silent` : ""}`;
}

refresh()
  .catch((error) => reportError("loading workers failed", error))
  .finally(() => poll(refresh, 5000, () => true));
