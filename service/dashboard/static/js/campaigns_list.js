// The studies page's campaigns panel: each campaign, its status and current stage, linked to its
// page; hidden while there is none. Polled (conditionally) while one runs.

import { $, ageSince, duration, el, getJSON, poll, reportError } from "./common.js";

let campaigns = [];

function row(c) {
  const stage = c.status === "running" && !c.stage_ready ? "setting up" : "";
  return el("tr", { dataset: { campaignId: String(c.id) } },
    el("td", { class: "num" }, String(c.id)),
    el("td", { class: "name" }, el("a", { href: c.links.dashboard }, c.name)),
    el("td", {}, el("span", { class: `badge ${c.status}` }, c.status)),
    el("td", {}, c.owner),
    el("td", {}, `${c.stage + 1} of ${c.stages}`, stage ? ` · ${stage}` : ""),
    el("td", { class: "num" }, duration(ageSince(c.created_at))));
}

async function refresh() {
  const page = await getJSON("/api/v1/campaigns?limit=20");
  campaigns = page.items;
  $("#campaigns-table tbody").replaceChildren(...campaigns.map(row));
  $("#campaigns-panel").hidden = !campaigns.length;
}

refresh()
  .catch((error) => reportError("loading the campaigns failed", error))
  .finally(() => poll(refresh, 10000, () => campaigns.some((c) => c.status === "running")));
