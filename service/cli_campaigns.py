"""The `actsearch` commands of campaigns (docs/campaigns.md): submit a spec with `stages`, its
funnel and verdicts (`status --campaign ID`, `--follow`), the list of campaigns, and
cancel / pause / resume / delete of the whole campaign (`--campaign ID`).

Plain text from the API's JSON (GET /api/v1/campaigns/{id}); like service.cli_studies, each
command returns the exit status and reports a user's mistake as a CliError.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service import cli_spec
from service.cli_spec import CliError, describe, invalid, load_yaml, read_spec_file
from service.cli_views import duration, print_warnings, progress_counts, table
from service.client import ApiError, Client

log = logging.getLogger("actsearch")

FINAL_STATUSES = ("completed", "cancelled", "failed")
POLL_OUTAGE_S = 300.0  # how long --follow rides out an unreachable API or database


def is_campaign(document: Any) -> bool:
    """Whether a spec document is a campaign: a study spec with `stages`."""
    return isinstance(document, dict) and "stages" in document


# -- submit ------------------------------------------------------------------------------------
def submit(
    client: Client, path: Path, text: str, headers: dict[str, str], args: argparse.Namespace
) -> int:
    """POST a campaign file; with --follow, follow it until it ends."""
    try:
        created = client.post("/campaigns", content=text.encode(), headers=headers)
    except ApiError as error:
        if error.status == 422 and error.fields:
            raise invalid(path, error.fields) from error
        raise
    print(
        f"campaign {created['id']} submitted ({created['stages']} stages; the first one's "
        f"studies are queued): {client.url}/campaigns/{created['id']}"
    )
    print_warnings(created.get("warnings") or [], f"{path}: ")
    return follow(client, int(created["id"]), args.interval) if args.follow else 0


# -- validate ----------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    """`validate`: a campaign checked here as the API would check it (every stage's study spec,
    the promotion rules), then what each stage runs; a study spec as service.cli_spec does."""
    from search_space.spec import SpecError, campaign_warnings, parse_campaign

    path, text = read_spec_file(args.spec)
    data = load_yaml(path, text)
    if not is_campaign(data):
        return cli_spec.cmd_validate(args)
    try:
        parsed = parse_campaign(data, submission=True)
    except SpecError as error:
        raise invalid(path, error.errors) from error
    print(f"{path}: valid campaign, {parsed.stage_count} stages")
    for index in range(parsed.stage_count):
        print(_stage_text(parsed, index))
    print("  the first stage in detail:")
    for line in describe(parsed.first):
        print(f"  {line}")
    warnings = campaign_warnings(parsed)
    print_warnings(warnings, f"{path}: ", file=sys.stdout)  # here they are the answer
    if not warnings:
        print("  no warnings")
    return 0


def _stage_text(campaign: Any, index: int) -> str:
    """ "  2. promote: the promoted configurations and baselines on resnet18; epochs 30,
    1 seed(s) each; promotes the top 1 per family"."""
    from search_space.spec import parse_spec
    from search_space.spec.campaign import model_name

    stage, models = campaign.stages[index], campaign.models(index)
    spec = parse_spec(campaign.study_spec(index, models[0]))
    epochs = spec.training.epochs
    if hasattr(epochs, "low"):
        epochs = f"{epochs.low} … {epochs.high}"
    what = f"{spec.n_trials} trials" if index == 0 else "the promoted configurations and baselines"
    names = ", ".join(model_name(m) or str(spec.model.name) for m in models)
    rule = "the last stage"
    if stage.promote is not None:
        p = stage.promote
        limit = f", at least {p.min_delta:+g} pp vs the baseline" if p.min_delta is not None else ""
        rule = f"promotes the top {p.top} {'per family' if p.per == 'family' else 'overall'}{limit}"
    return (
        f"  {index + 1}. {campaign.label(index)}: {what} on {names}; epochs {epochs}, "
        f"{spec.seeds} seed(s) each; {rule}"
    )


# -- what status prints ------------------------------------------------------------------------
def _model(model: str | None) -> str:
    return model or "(base model)"


def _studies(stage: dict[str, Any]) -> str:
    if not stage["studies"]:
        return ", ".join(_model(m) for m in stage["models"])
    parts = []
    for study in stage["studies"]:
        done, total, _ = progress_counts({**study, "n_trials": study["progress"]["budget"]})
        parts.append(f"#{study['id']} {_model(study['model'])} {done}/{total}")
    return ", ".join(parts)


def _left(stage: dict[str, Any]) -> str:
    left = "—" if stage["left"] is None else str(stage["left"])
    dropped = ", ".join(stage.get("dropped") or {})
    return f"{left} (dropped {dropped})" if dropped else left


def funnel_lines(campaign: dict[str, Any]) -> list[str]:
    """The stages as a table: configurations in and out, trainings, time, studies."""
    rows = [
        [f"{s['index'] + 1}. {s['name']}", s["state"], s["entered"], _left(s), s["trainings"],
         duration(s["train_s"]) if s["studies"] else None,
         None if s["wall_s"] is None else duration(s["wall_s"]), _studies(s)]
        for s in campaign["funnel"]
    ]  # fmt: skip
    header = ["stage", "state", "entered", "left", "trainings", "train", "wall", "studies"]
    return ["  " + line for line in table(header, rows)]


def _cell_text(comparison: dict[str, Any]) -> str:
    """Δ in points with its 95 % interval and the verdict; the baseline's mean."""
    c = comparison
    if c["verdict"] == "baseline":
        return "baseline" if c["mean"] is None else f"{100 * c['mean']:.2f}% (baseline)"
    if c["delta"] is None or c["verdict"] == "too few runs":
        return "too few runs"
    interval = ""
    if c["delta_ci_low"] is not None and c["delta_ci_high"] is not None:
        interval = f" [{100 * c['delta_ci_low']:+.2f}, {100 * c['delta_ci_high']:+.2f}]"
    return f"{100 * c['delta']:+.2f} pp{interval} {c['verdict']}"


def comparison_lines(
    campaign: dict[str, Any], stage: dict[str, Any], cells: list[Any]
) -> list[str]:
    """A stage's comparisons as a family × model table under a line saying what they are."""
    models: list[str | None] = [s["model"] for s in stage["studies"]] or stage["models"]
    by_cell = {(c["family"], c["model"]): c["comparison"] for c in cells}
    families = sorted({c["family"] for c in cells})
    metric = "test" if cells[0]["comparison"]["metric"] == "test_acc" else "validation"
    what = "transfer" if len(models) > 1 else "verdicts"
    title = (
        f"  {what} of stage {stage['index'] + 1} ({stage['name']}): Δ vs {campaign['baseline']}"
        f" in points [95% CI], {metric} accuracy"
    )
    rows = [
        [family, *(_cell_text(by_cell[(family, m)]) if (family, m) in by_cell else None
                   for m in models)]
        for family in families
    ]  # fmt: skip
    return [title, *("  " + line for line in table(["family", *map(_model, models)], rows))]


def campaign_lines(campaign: dict[str, Any], url: str) -> list[str]:
    """A campaign as `actsearch status --campaign ID` prints it."""
    lines = [
        f"campaign {campaign['id']} · {campaign['name']} · {campaign['status']} · stage "
        f"{campaign['stage'] + 1} of {campaign['stages']} · baseline {campaign['baseline']} · "
        f"owner {campaign['owner']}"
    ]
    if campaign.get("error"):
        lines.append(f"  note: {campaign['error']}")
    lines += funnel_lines(campaign)
    latest = next((s for s in reversed(campaign["funnel"]) if s["cells"]), None)
    if latest is not None:
        lines += comparison_lines(campaign, latest, latest["cells"])
    transfer = campaign.get("transfer")
    if transfer and transfer["cells"] and (latest is None or transfer["stage"] != latest["index"]):
        lines += comparison_lines(
            campaign, campaign["funnel"][transfer["stage"]], transfer["cells"]
        )
    lines.append(f"  page: {url}/campaigns/{campaign['id']}")
    return lines


def campaigns_table(items: list[dict[str, Any]]) -> list[str]:
    """The campaign list: one header, one line per campaign."""
    rows = [
        [c["id"], c["status"], f"{c['stage'] + 1}/{c['stages']}", c["owner"], c["name"]]
        for c in items
    ]
    return table(["id", "status", "stage", "owner", "name"], rows)


# -- status and follow -------------------------------------------------------------------------
def status(client: Client, args: argparse.Namespace) -> int:
    """A campaign's funnel (--follow: until it ends), or the list of campaigns (--campaign alone)."""
    if args.study is not None:
        raise CliError("give a study ID or --campaign ID, not both")
    if not args.campaign:
        if args.follow:
            raise CliError("status --follow needs an ID: actsearch status --campaign ID --follow")
        items = client.get("/campaigns", params={"limit": args.limit}).get("items") or []
        if not items:
            print("no campaigns yet: `actsearch submit CAMPAIGN.yaml` (a spec with stages)")
            return 0
        for line in campaigns_table(items):
            print(line)
        return 0
    if args.follow:
        return follow(client, args.campaign, args.interval)
    for line in campaign_lines(client.get(f"/campaigns/{args.campaign}"), client.url):
        print(line)
    return 0


def _progress_line(campaign: dict[str, Any]) -> str:
    """ "campaign 3 · running · stage 2 of 3 (promote) · 4/6 trials", what --follow prints."""
    stage = campaign["funnel"][campaign["stage"]]
    done = sum(progress_counts({**s, "n_trials": 0})[0] for s in stage["studies"])
    budget = sum(int(s["progress"]["budget"]) for s in stage["studies"])
    trials = f" · {done}/{budget} trials" if stage["studies"] else f" · {stage['state']}"
    return (
        f"campaign {campaign['id']} · {campaign['status']} · stage {campaign['stage'] + 1} of "
        f"{campaign['stages']} ({stage['name']}){trials}"
    )


def _poll(client: Client, campaign_id: int) -> dict[str, Any]:
    """The campaign now; a server restart or database outage is waited out."""
    deadline = time.monotonic() + POLL_OUTAGE_S
    while True:
        try:
            return dict(client.poll(f"/campaigns/{campaign_id}"))
        except ApiError as error:
            if not (error.status == 0 or error.status >= 500) or time.monotonic() > deadline:
                raise
            log.warning("API unavailable (%s); retrying", error)
            time.sleep(2.0)


def follow(client: Client, campaign_id: int, interval: float = 2.0) -> int:
    """A line each time the campaign moves, then its funnel: 0 when it completed. Ctrl-C stops
    following only."""
    shown = ""
    try:
        while True:
            campaign = _poll(client, campaign_id)
            line = _progress_line(campaign)
            if line != shown:
                print(line, flush=True)
                shown = line
            if campaign["status"] in FINAL_STATUSES:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; campaign {campaign_id} keeps running. Re-attach with "
            f"`actsearch status --campaign {campaign_id} --follow`; stop it with "
            f"`actsearch cancel --campaign {campaign_id}`",
            file=sys.stderr,
        )
        return 130
    for text in campaign_lines(campaign, client.url):
        print(text)
    if campaign["status"] != "completed":
        error = f": {campaign['error']}" if campaign.get("error") else ""
        print(
            f"actsearch: error: campaign {campaign_id} ended {campaign['status']}{error}",
            file=sys.stderr,
        )
        return 1
    return 0


# -- acting on the whole campaign --------------------------------------------------------------
def _described(campaign: dict[str, Any]) -> str:
    return (
        f"campaign {campaign['id']} {campaign['name']!r} ({campaign['status']}, stage "
        f"{campaign['stage'] + 1} of {campaign['stages']}, owner {campaign['owner']})"
    )


def act(
    client: Client,
    args: argparse.Namespace,
    can_ask: Callable[[argparse.Namespace, str], None],
    confirmed: Callable[[argparse.Namespace, str], bool],
) -> int:
    """cancel / pause / resume / delete a whole campaign (cancel and delete ask first)."""
    campaign_id, action = int(args.campaign), args.command
    path = f"/campaigns/{campaign_id}"
    if action in ("cancel", "delete"):
        can_ask(
            args, f"not {'cancelling' if action == 'cancel' else 'deleting'} campaign {campaign_id}"
        )
        campaign = client.get(path)
        question = (
            f"cancel {_described(campaign)}? Its current stage's studies stop."
            if action == "cancel"
            else f"delete {_described(campaign)} with every stage's studies and trials? "
            "This cannot be undone."
        )
        if not confirmed(args, question):
            print(f"campaign {campaign_id} not {'cancelled' if action == 'cancel' else 'deleted'}")
            return 1
    if action == "delete":
        client.request("DELETE", path)
        print(f"campaign {campaign_id} deleted")
        return 0
    campaign = client.post(f"{path}/{action}")
    print(f"campaign {campaign_id} is now {campaign['status']}")
    return 0
