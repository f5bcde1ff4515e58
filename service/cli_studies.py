"""The `actsearch` commands that call the API: submit, follow, status, steer, clone, retry, logs.

Each takes the parsed arguments and returns the exit status; a user's mistake is a CliError,
an API error an ApiError (service.cli prints either as one message, never a traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from service import cli_campaigns
from service.cli_spec import CliError, clone_changes, invalid, load_yaml, read_spec_file
from service.cli_views import (
    live_progress,
    print_study,
    print_warnings,
    progress_counts,
    studies_table,
    workers_table,
)
from service.client import ApiError, Client

log = logging.getLogger("actsearch")

FINAL_STATUSES = ("completed", "cancelled", "failed")
POLL_OUTAGE_S = 300.0  # how long --follow rides out an unreachable API or database


def client_of(args: argparse.Namespace) -> Client:
    """The API client of --url / --token (wherever given), the environment or `actsearch up`."""
    return Client.resolve(args.url, args.token)


def _created(client: Client, study: dict[str, Any], what: str, where: str = "") -> None:
    """The new study's id and page, then its spec's warnings."""
    print(f"study {study['id']} {what}: {client.url}/studies/{study['id']}")
    print_warnings(study.get("warnings") or [], where)


# -- submit and follow -------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    """POST a spec file; with --follow, show a progress bar until the study ends."""
    path, text = read_spec_file(args.spec)
    document = load_yaml(path, text)  # a syntax error names this file and line, before sending
    client = client_of(args)
    headers = {"Content-Type": "application/yaml"}
    if args.idempotency_key:
        headers["Idempotency-Key"] = args.idempotency_key
    if cli_campaigns.is_campaign(document):  # a spec with `stages`: POST /campaigns
        return cli_campaigns.submit(client, path, text, headers, args)
    try:
        study = client.post("/studies", content=text.encode(), headers=headers)
    except ApiError as error:
        if error.status == 422 and error.fields:
            raise invalid(path, error.fields) from error
        raise
    _created(client, study, "submitted", f"{path}: ")
    return follow(client, int(study["id"]), args.interval) if args.follow else 0


def _running_trial(client: Client, study_id: int) -> str:
    """The first running trial's progress inside its epoch ("" if none reported)."""
    try:
        page = client.poll(f"/studies/{study_id}/trials", params={"state": "running", "limit": 1})
    except ApiError:
        return ""  # a detail: the bar goes on without it
    for trial in page.get("items") or []:
        text = live_progress(trial.get("progress"))
        if text:
            return f"trial {trial.get('number')}: {text}"
    return ""


def _watch(client: Client, study_id: int, interval: float) -> dict[str, Any]:
    """Poll with a progress bar of trials until the study ends; its last state."""
    from tqdm import tqdm

    study = client.poll(f"/studies/{study_id}")
    bar = tqdm(total=int(study.get("n_trials", 0)), unit="trial", desc=f"study {study_id}")
    try:
        while True:
            finished, total, label = progress_counts(study)
            running = int((study.get("progress") or {}).get("running", 0))
            live = _running_trial(client, study_id) if running else ""
            bar.total, bar.n = total, finished
            bar.set_postfix_str(" · ".join(x for x in (study["status"], label, live) if x))
            bar.refresh()
            if study["status"] in FINAL_STATUSES:
                return study
            time.sleep(interval)
            study = _poll(client, study_id)
    finally:
        bar.close()


def follow(client: Client, study_id: int, interval: float = 2.0) -> int:
    """Follow a study until it ends: 0 when it completed. Ctrl-C stops following only."""
    try:
        study = _watch(client, study_id, interval)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; study {study_id} keeps running. Re-attach with "
            f"`actsearch status {study_id} --follow`; stop it with `actsearch cancel {study_id}`",
            file=sys.stderr,
        )
        return 130
    print_study(study, client.get(f"/studies/{study_id}/leaderboard"))
    if study["status"] != "completed":
        error = f": {study['error']}" if study.get("error") else ""
        print(f"actsearch: error: study {study_id} ended {study['status']}{error}", file=sys.stderr)
        return 1
    return 0


def _poll(client: Client, study_id: int) -> dict[str, Any]:
    """The study's current state; a server restart or database outage is waited out."""
    deadline = time.monotonic() + POLL_OUTAGE_S
    while True:
        try:
            return dict(client.poll(f"/studies/{study_id}"))  # 304 while unchanged
        except ApiError as error:
            if not (error.status == 0 or error.status >= 500) or time.monotonic() > deadline:
                raise
            log.warning("API unavailable (%s); retrying", error)
            time.sleep(2.0)


# -- status and steering -----------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """One study (--follow: until it ends), or the list of studies; with --campaign, a
    campaign's funnel or the list of campaigns."""
    client = client_of(args)
    if args.campaign is not None:
        return cli_campaigns.status(client, args)
    if args.study is None:
        if args.follow:
            raise CliError("status --follow needs a study ID: actsearch status ID --follow")
        page = client.get("/studies", params={"limit": args.limit})
        items = page.get("items") or []
        if not items:
            print("no studies yet: `actsearch submit SPEC.yaml`")
            return 0
        for line in studies_table(items):
            print(line)
        return 0
    if args.follow:
        return follow(client, args.study, args.interval)
    study = client.get(f"/studies/{args.study}")
    print_study(study, client.get(f"/studies/{args.study}/leaderboard"))
    return 0


def can_ask(args: argparse.Namespace, refused: str) -> None:
    """CliError, before anything is done, when confirmation is needed and cannot be asked."""
    if not args.yes and not sys.stdin.isatty():
        raise CliError(f"{refused} without confirmation (no terminal to ask on): pass --yes")


def confirmed(args: argparse.Namespace, question: str) -> bool:
    """Whether the user agrees: --yes, or "y" typed at the terminal."""
    if args.yes:
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def _described(study: dict[str, Any]) -> str:
    finished, total, _ = progress_counts(study)
    return (
        f"study {study['id']} {study['name']!r} ({study['status']}, {finished}/{total} trials, "
        f"owner {study['owner']})"
    )


def _campaign_given(args: argparse.Namespace) -> bool:
    """Whether the command acts on a campaign (--campaign ID) rather than a study (ID)."""
    if (args.campaign is None) == (args.study is None):
        raise CliError(f"{args.command} needs a study ID or --campaign ID (one of them)")
    return args.campaign is not None


def cmd_action(args: argparse.Namespace) -> int:
    """cancel / pause / resume a study (cancel asks first), or a whole campaign (--campaign)."""
    client = client_of(args)
    if _campaign_given(args):
        return cli_campaigns.act(client, args, can_ask, confirmed)
    if args.command == "cancel":
        can_ask(args, f"not cancelling study {args.study}")
        study = client.get(f"/studies/{args.study}")
        if not confirmed(args, f"cancel {_described(study)}? Its running trials stop."):
            print(f"study {args.study} not cancelled")
            return 1
    study = client.post(f"/studies/{args.study}/{args.command}")
    running = int((study.get("progress") or {}).get("running", 0))
    note = ""
    if args.command in ("cancel", "pause") and running:
        note = f"; its {running} running trial(s) stop within a few training steps"
    print(f"study {study['id']} is now {study['status']}{note}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete a study and its trials (asks first), or a campaign with its studies (--campaign)."""
    if _campaign_given(args):
        return cli_campaigns.act(client_of(args), args, can_ask, confirmed)
    can_ask(args, f"not deleting study {args.study}")
    client = client_of(args)
    study = client.get(f"/studies/{args.study}")
    question = f"delete {_described(study)} and all its trials? This cannot be undone."
    if not confirmed(args, question):
        print(f"study {args.study} not deleted")
        return 1
    client.request("DELETE", f"/studies/{args.study}")
    print(f"study {args.study} deleted")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    """Create a confirm study: the best configurations re-trained with fresh seeds."""
    client = client_of(args)
    study = client.post(
        f"/studies/{args.study}/confirm", json={"top": args.top, "seeds": args.seeds}
    )
    print(
        f"study {study['id']} confirms study {args.study}: {study['n_trials']} configurations × "
        f"{args.seeds} seeds: {client.url}/studies/{study['id']}"
    )
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    """A new study from another's spec with changes (JSON merge patch)."""
    changes = clone_changes(args.changes, args.set or [])
    client = client_of(args)
    study = client.post(f"/studies/{args.study}/clone", json=changes)
    _created(client, study, f"cloned from study {args.study}")
    return follow(client, int(study["id"]), args.interval) if args.follow else 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Run a failed or cancelled study's spec again as a new study."""
    client = client_of(args)
    study = client.post(f"/studies/{args.study}/retry")
    _created(client, study, f"retries study {args.study}")
    return follow(client, int(study["id"]), args.interval) if args.follow else 0


def cmd_export(args: argparse.Namespace) -> int:
    """Download a study's trials (CSV/JSON) or its family leaderboard (CSV/JSON/LaTeX)."""
    client = client_of(args)
    if args.what == "leaderboard":
        path, params = f"/studies/{args.study}/leaderboard", {"format": args.format}
    else:
        path, params = f"/studies/{args.study}/export.{args.format}", {}
    # The bytes as served (no decoding and re-encoding): the same file the API and the
    # dashboard give, whatever this machine's locale.
    body = client.request("GET", path, params=params).content
    if args.output:
        Path(args.output).write_bytes(body)
        print(f"wrote {args.output}")
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    return 0


# -- workers and logs --------------------------------------------------------------------------
def cmd_workers(args: argparse.Namespace) -> int:
    """The workers: what each trains, how fast, whether it still heartbeats."""
    workers = client_of(args).get("/workers")
    if not workers:
        print("no workers yet: start one with `actsearch worker` (`actsearch up` starts one)")
        return 0
    for line in workers_table(workers):
        print(line)
    return 0


def _failure(item: dict[str, Any]) -> str:
    """ "diverged: loss became NaN (epoch 3)", or "" when the attempt did not fail."""
    if not item.get("failure_reason") and not item.get("failure_message"):
        return ""
    epoch = item.get("failure_epoch")
    where = f" (epoch {epoch})" if epoch is not None else ""
    message = f": {item['failure_message']}" if item.get("failure_message") else ""
    return f"{item.get('failure_reason') or 'failed'}{message}{where}"


def _trial_log(trial: dict[str, Any]) -> None:
    print(
        f"trial {trial['number']} · {trial.get('family') or '?'} · {trial['state']} · "
        f"{trial.get('epochs_done', 0)} epochs · worker {trial.get('worker_id') or '—'}"
    )
    # The trial's own attempt knows its failure's epoch; the history of attempts does not.
    attempts = [
        {**trial, **a} if a.get("run_id") == trial.get("run_id") else a
        for a in trial.get("attempts") or [trial]
    ]
    for attempt in attempts:
        if why := _failure(attempt):
            print(f"  attempt {attempt.get('attempt', 1)}: {why}")
    if trial.get("log_tail"):
        print("  log (last lines):")
        for line in str(trial["log_tail"]).splitlines():
            print(f"    {line}")
    elif not any(_failure(a) for a in attempts):
        print("  no failure and no log recorded")


def cmd_logs(args: argparse.Namespace) -> int:
    """A trial's failure and log tail; for a study, why its failed trials failed."""
    client = client_of(args)
    if args.trial is not None:
        _trial_log(client.get(f"/studies/{args.study}/trials/{args.trial}"))
        return 0
    study = client.get(f"/studies/{args.study}")
    print(f"study {study['id']} · {study['name']} · {study['status']}")
    if study.get("error"):
        print(f"  note: {study['error']}")
    page = client.get(f"/studies/{args.study}/trials", params={"state": "failed", "limit": 500})
    failed = page.get("items") or []
    if not failed:
        print("  no failed trials")
        return 0
    for trial in failed:
        print(f"  trial {trial['number']} ({trial.get('family') or '?'}): {_failure(trial)}")
    more = int(page.get("total", len(failed))) - len(failed)
    if more > 0:
        print(f"  … and {more} more")
    print(f"  one trial's log: actsearch logs {args.study} TRIAL")
    return 0
