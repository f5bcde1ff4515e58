"""The `actsearch` command line: run the service, submit and follow studies, manage users.

Training commands (`worker`, `train`) run in the `workers` package; this module starts them as
`python -m workers …` so that the service never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from service.client import ApiError, Client, TokenRequired

log = logging.getLogger("actsearch")

FINAL_STATUSES = ("completed", "cancelled", "failed")


def _settings(args: argparse.Namespace) -> Any:
    from service.settings import Settings  # pydantic-settings import is slow: only when needed

    overrides = {
        k: v
        for k, v in {
            "database_url": getattr(args, "database_url", None),
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "data": getattr(args, "data", None),
        }.items()
        if v is not None
    }
    return Settings(**overrides)


def _fail(message: str, code: int = 2) -> int:
    print(f"actsearch: error: {message}", file=sys.stderr)
    return code


# -- service -----------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    """API + dashboard + one local worker on the embedded database."""
    from service.runner import run_up

    return run_up(
        _settings(args), gpus=args.gpus, with_worker=not args.no_worker, open_browser=args.open
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """API + dashboard only."""
    from service.runner import run_serve

    return run_serve(_settings(args))


def cmd_db(args: argparse.Namespace) -> int:
    """Schema migrations of our tables."""
    from service import migrate
    from service.db import make_engine

    settings = _settings(args)
    engine = make_engine(settings.resolved_database_url)
    if args.action == "upgrade":
        migrate.upgrade(engine, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(engine, args.revision or "-1")
    print(
        f"schema revision: {migrate.current_revision(engine) or 'none'} "
        f"(this actsearch: {migrate.head_revision()})"
    )
    return 0


def forward_to_workers(command: str, argv: list[str]) -> int:
    """Replace this process by `python -m workers COMMAND ARGV` (signals reach it directly)."""
    os.execv(sys.executable, [sys.executable, "-m", "workers", command, *argv])
    return 0  # not reached


# -- client ------------------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Client:
    return Client.resolve(args.url, args.token)


def cmd_submit(args: argparse.Namespace) -> int:
    """POST a spec file; with --follow, show a progress bar until the study ends."""
    path = Path(args.spec)
    if not path.exists():
        return _fail(f"spec file {path} does not exist")
    client = _client(args)
    headers = {"Content-Type": "application/yaml"}
    if args.idempotency_key:
        headers["Idempotency-Key"] = args.idempotency_key
    study = client.post("/studies", content=path.read_text(), headers=headers)
    print(f"study {study['id']} submitted: {client.url}/studies/{study['id']}")
    if not args.follow:
        return 0
    return follow(client, int(study["id"]), args.interval)


def _progress(study: dict[str, Any]) -> tuple[int, int, str]:
    progress = study.get("progress") or {}
    finished = sum(int(progress.get(k, 0)) for k in ("complete", "pruned", "failed", "cancelled"))
    running = int(progress.get("running", 0))
    best = study.get("best") or {}
    label = f"running {running}"
    if best.get("value") is not None:
        label += f" · best {best['value']:.4f} ({best.get('family', '?')})"
    return finished, int(study.get("n_trials", 0)), label


def follow(client: Client, study_id: int, interval: float = 2.0) -> int:
    """Poll a study with a progress bar of trials; exit 0 when it completed."""
    from tqdm import tqdm

    study = client.get(f"/studies/{study_id}")
    bar = tqdm(total=int(study.get("n_trials", 0)), unit="trial", desc=f"study {study_id}")
    try:
        while True:
            finished, total, label = _progress(study)
            bar.total = total
            bar.n = finished
            bar.set_postfix_str(f"{study['status']} · {label}")
            bar.refresh()
            if study["status"] in FINAL_STATUSES:
                break
            time.sleep(interval)
            study = _poll(client, study_id)
    finally:
        bar.close()
    print_study(study, client.get(f"/studies/{study_id}/leaderboard"))
    if study["status"] != "completed":
        return _fail(
            f"study {study_id} ended {study['status']}"
            + (f": {study['error']}" if study.get("error") else ""),
            1,
        )
    return 0


POLL_OUTAGE_S = 300.0  # how long --follow rides out an unreachable API or database


def _poll(client: Client, study_id: int) -> dict[str, Any]:
    """The study's current state; a server restart or database outage is waited out."""
    deadline = time.monotonic() + POLL_OUTAGE_S
    while True:
        try:
            return dict(client.get(f"/studies/{study_id}"))
        except ApiError as error:
            if not (error.status == 0 or error.status >= 500) or time.monotonic() > deadline:
                raise
            log.warning("API unavailable (%s); retrying", error)
            time.sleep(2.0)


def print_study(study: dict[str, Any], board: dict[str, Any] | None = None) -> None:
    """A readable summary of one study, with its families' evidence when `board` (the API's
    leaderboard) is given."""
    finished, total, label = _progress(study)
    print(
        f"study {study['id']} · {study['name']} · {study['status']} · {finished}/{total} trials"
        f" · {label}"
    )
    if study.get("error"):  # why it failed, or why it completed short of its budget
        print(f"  note: {study['error']}")
    if study.get("confirms"):
        print(f"  confirms study {study['confirms']['id']} ({study['confirms']['name']})")
    for confirm in study.get("confirmed_by") or []:
        print(f"  confirmed by study {confirm['id']} ({confirm['status']})")
    if board is not None:
        for line in family_table(board):
            print(line)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _interval(low: float | None, high: float | None, points: bool = False) -> str:
    if low is None or high is None:
        return ""
    if points:
        return f" [{100 * low:+.2f}, {100 * high:+.2f}]"
    return f" [{100 * low:.2f}, {100 * high:.2f}]"


def _family_line(row: dict[str, Any], confirmed: bool) -> str:
    """One family: n, mean [95 % CI], Δ [95 % CI] in points, verdict (and p after Holm)."""
    c = row.get("confirmation") if confirmed else row["search"]
    if c is None:
        return f"  {row['family']:<12} {0:>4}  {'—':<26} {'—':<28} not in the confirm study"
    mean = _percent(c["mean"]) + _interval(c["ci_low"], c["ci_high"])
    if row["is_baseline"] or c["delta"] is None or c["verdict"] == "too few runs":
        delta = "—"
    else:
        points = _interval(c["delta_ci_low"], c["delta_ci_high"], points=True)
        delta = f"{100 * c['delta']:+.2f} pp{points}"
    verdict = c["verdict"] + (f" (p={c['p_value']:.3g})" if c["p_value"] is not None else "")
    return f"  {row['family']:<12} {c['trainings']:>4}  {mean:<26} {delta:<28} {verdict}"


def family_table(board: dict[str, Any]) -> list[str]:
    """The leaderboard's families as text: which trainings back the numbers, then a table."""
    confirm_id = board.get("confirmation_study_id")
    if confirm_id is not None:
        source = "this study" if confirm_id == board["study_id"] else f"study {confirm_id}"
        what = f"confirmation by {source}: fresh seeds, test accuracy"
    else:
        what = (
            "search-time, validation accuracy: 'promising' at most; "
            f"`actsearch confirm {board['study_id']}` re-trains the best with fresh seeds"
        )
    delta = f"Δ vs {board['baseline']} [95% CI]"
    header = f"  {'family':<12} {'n':>4}  {'mean [95% CI]':<26} {delta:<28} verdict"
    rows = [_family_line(row, confirm_id is not None) for row in board.get("rows") or []]
    return [f"  evidence: {what}", header, *rows]


def cmd_status(args: argparse.Namespace) -> int:
    """One study, or the list of studies."""
    client = _client(args)
    if args.study is not None:
        study = client.get(f"/studies/{args.study}")
        print_study(study, client.get(f"/studies/{args.study}/leaderboard"))
        return 0
    page = client.get("/studies", params={"limit": args.limit})
    for study in page.get("items", []):
        finished, total, label = _progress(study)
        print(
            f"{study['id']:>5}  {study['status']:<10} {finished:>4}/{total:<4} "
            f"{study['owner']:<12} {study['name']}  {label}"
        )
    if not page.get("items"):
        print("no studies yet: `actsearch submit SPEC.yaml`")
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    """cancel / pause / resume a study."""
    study = _client(args).post(f"/studies/{args.study}/{args.command}")
    print(f"study {study['id']} is now {study['status']}")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    """Create a confirm study: the best configurations re-trained with fresh seeds."""
    client = _client(args)
    study = client.post(
        f"/studies/{args.study}/confirm", json={"top": args.top, "seeds": args.seeds}
    )
    print(
        f"study {study['id']} confirms study {args.study}: {study['n_trials']} configurations × "
        f"{args.seeds} seeds: {client.url}/studies/{study['id']}"
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete a study and its trials."""
    _client(args).request("DELETE", f"/studies/{args.study}")
    print(f"study {args.study} deleted")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Download a study's trials (CSV/JSON) or its family leaderboard (CSV/JSON/LaTeX)."""
    client = _client(args)
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


def cmd_users(args: argparse.Namespace) -> int:
    """Create or list users, through the API or (--local) straight in the database."""
    if args.local:
        return _users_local(args)
    client = _client(args)
    if args.action == "create":
        created = client.post("/users", json={"name": args.name, "is_admin": args.admin})
        print(f"user {created['user']['name']} created; token (shown once): {created['token']}")
    else:
        for user in client.get("/users"):
            print(f"{user['id']:>4}  {user['name']:<20} {'admin' if user['is_admin'] else ''}")
    return 0


def _users_local(args: argparse.Namespace) -> int:
    from service.store import Store

    store = Store.open(_settings(args).resolved_database_url)
    if args.action == "create":
        user, token = store.users.create(args.name, is_admin=args.admin)
        print(f"user {user.name} created; token (shown once): {token}")
    else:
        for user in store.users.list():
            print(f"{user.id:>4}  {user.name:<20} {'admin' if user.is_admin else ''}")
    return 0


# -- parser ------------------------------------------------------------------------------------
def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="API base URL (env ACTSEARCH_URL; default: the local "
        "`actsearch up`, else http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--token",
        help="bearer token (env ACTSEARCH_TOKEN; default: the one `actsearch up` saved, "
        "only for the URL it saved it with)",
    )


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default 127.0.0.1; env ACTSEARCH_HOST)")
    parser.add_argument("--port", type=int, help="listen port (default 8000; env ACTSEARCH_PORT)")
    _add_db_flag(parser)


def _add_db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL (env ACTSEARCH_DATABASE_URL; "
        "default: SQLite file ~/.actsearch/actsearch.db)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="actsearch",
        description="Search activation functions: a service, its workers and its client.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up", help="API + dashboard + a local worker (SQLite by default); prints the login URL"
    )
    _add_server_flags(up)
    up.add_argument(
        "--data",
        help="CIFAR data for the worker: a torchvision CIFAR root, an "
        "image folder or a tarball of one (env ACTSEARCH_DATA)",
    )
    up.add_argument(
        "--gpus", default="auto", help="the worker's GPUs: auto (default), cpu, all, or 0,1"
    )
    up.add_argument("--no-worker", action="store_true", help="start no local worker")
    up.add_argument("--open", action="store_true", help="open the login URL in a browser")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="API + dashboard only (the schema must be current)")
    _add_server_flags(serve)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run training workers: `actsearch worker --help`", add_help=False)
    sub.add_parser(
        "train",
        help="train one configuration from the shell: `actsearch train --help`",
        add_help=False,
    )

    db = sub.add_parser("db", help="migrate our tables: `actsearch db upgrade`")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", help="target (default: head / one step down)")
    _add_db_flag(db)
    db.set_defaults(func=cmd_db)

    submit = sub.add_parser("submit", help="submit a study spec (YAML or JSON)")
    submit.add_argument("spec", help="path of the spec file, e.g. examples/quickstart.yaml")
    submit.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="show a progress bar of trials until the study ends",
    )
    submit.add_argument("--idempotency-key", help="resubmitting with the same key is a no-op")
    submit.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    _add_client_flags(submit)
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="list studies, or show one")
    status.add_argument("study", nargs="?", type=int, help="study id")
    status.add_argument("--limit", type=int, default=20, help="how many studies to list")
    _add_client_flags(status)
    status.set_defaults(func=cmd_status)

    for action, text in (
        ("cancel", "cancel a study (running trials stop within one epoch)"),
        ("pause", "pause a study (no new trials start)"),
        ("resume", "resume a paused study"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("study", type=int, help="study id")
        _add_client_flags(p)
        p.set_defaults(func=cmd_action)

    confirm = sub.add_parser(
        "confirm",
        help="re-train a study's best configurations with fresh seeds in a linked study "
        "(owner or admin), so that verdicts can say better or worse",
    )
    confirm.add_argument("study", type=int, help="study id")
    confirm.add_argument(
        "--top", type=int, default=1, help="configurations per family, best first (default 1)"
    )
    confirm.add_argument(
        "--seeds", type=int, default=5, help="fresh seeds per configuration, ≥ 2 (default 5)"
    )
    _add_client_flags(confirm)
    confirm.set_defaults(func=cmd_confirm)

    delete = sub.add_parser("delete", help="delete a study and its trials")
    delete.add_argument("study", type=int, help="study id")
    _add_client_flags(delete)
    delete.set_defaults(func=cmd_delete)

    export = sub.add_parser("export", help="download a study's trials or leaderboard")
    export.add_argument("study", type=int, help="study id")
    export.add_argument(
        "--what",
        choices=["trials", "leaderboard"],
        default="trials",
        help="trials: one row per trial with its parameters and results (csv or json); "
        "leaderboard: one row per activation family, ranked (csv, json or latex). "
        "Default: trials",
    )
    export.add_argument(
        "--format",
        choices=["csv", "json", "latex"],
        default="csv",
        help="csv (default), json, or latex (only with --what leaderboard)",
    )
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    _add_client_flags(export)
    export.set_defaults(func=cmd_export, command_parser=export)

    users = sub.add_parser("users", help="create or list users (admin)")
    users.add_argument("action", choices=["create", "list"])
    users.add_argument("name", nargs="?", help="user name (for create)")
    users.add_argument("--admin", action="store_true", help="make the user an admin")
    users.add_argument(
        "--local",
        action="store_true",
        help="write to the database directly instead of calling the API "
        "(to create the first admin of a team database)",
    )
    _add_client_flags(users)
    _add_db_flag(users)
    users.set_defaults(func=cmd_users)
    return parser


def _refused_combination(args: argparse.Namespace) -> str | None:
    """Options each valid alone that the API cannot serve together."""
    if args.command == "export" and args.format == "latex" and args.what != "leaderboard":
        return (
            "--format latex exists for the leaderboard only: use --what leaderboard "
            "--format latex (trials export as csv or json)"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `actsearch` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("worker", "train"):
        return forward_to_workers(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    problem = _refused_combination(args)
    if problem:
        args.command_parser.error(problem)  # usage of the command, then exit 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Migrations and the HTTP client narrate every step at INFO; users want results.
        for noisy in ("alembic", "httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "users" and args.action == "create" and not args.name:
        return _fail("users create needs a NAME")
    try:
        return int(args.func(args))
    except ApiError as error:
        return _fail(str(error), 1)
    except TokenRequired as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a user-facing message, never a bare traceback
        from service.errors import user_message

        message = user_message(error)
        if message is None:
            raise
        return _fail(message)


if __name__ == "__main__":
    sys.exit(main())
