"""The `actsearch` command line: run the service, submit and follow studies, manage users.

Training commands (`worker`, `train`) run in the `workers` package; this module starts them as
`python -m workers …` so that the service never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any

from service import cli_campaigns, cli_studies
from service.cli_spec import CliError
from service.cli_views import users_table
from service.client import ApiError, TokenRequired

log = logging.getLogger("actsearch")


def _settings(args: argparse.Namespace) -> Any:
    from service.settings import Settings  # pydantic-settings import is slow: only when needed

    overrides = {
        k: v
        for k, v in {
            "database_url": getattr(args, "database_url", None),
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "processes": getattr(args, "processes", None),
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
        _settings(args),
        gpus=args.gpus,
        with_worker=not args.no_worker,
        open_browser=args.open,
        new_login=args.new_login,
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


def cmd_users(args: argparse.Namespace) -> int:
    """Create or list users, through the API or (--local) straight in the database."""
    if args.local:
        return _users_local(args)
    client = cli_studies.client_of(args)
    if args.action == "create":
        created = client.post("/users", json={"name": args.name, "is_admin": args.admin})
        print(f"user {created['user']['name']} created; token (shown once): {created['token']}")
    else:
        for line in users_table(client.get("/users")):
            print(line)
    return 0


def _users_local(args: argparse.Namespace) -> int:
    from service.store import Store

    store = Store.open(_settings(args).resolved_database_url)
    if args.action == "create":
        user, token = store.users.create(args.name, is_admin=args.admin)
        print(f"user {user.name} created; token (shown once): {token}")
    else:
        for line in users_table(store.users.list()):
            print(line)
    return 0


# -- parser ------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse that answers a misspelt command or choice with "did you mean …?"."""

    def error(self, message: str) -> Any:  # NoReturn, as argparse's
        found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if found:
            from search_space.spelling import did_you_mean

            choices = [c.strip().strip("'") for c in found.group(2).split(",")]
            hint = did_you_mean(found.group(1), choices)
            message += f"; {hint}" if hint else ""
        super().error(message)


def _common(client: bool, *, top: bool = False) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (the command's own value wins:
    on subcommands they default to "not given" so as not to overwrite the main parser's)."""
    unset = None if top else argparse.SUPPRESS
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
        help="debug logging, and the traceback of an unexpected error",
    )  # fmt: skip
    if client:
        options.add_argument(
            "--url", default=unset,
            help="API base URL (env ACTSEARCH_URL; default: the local `actsearch up`, else "
            "http://127.0.0.1:8000)",
        )  # fmt: skip
        options.add_argument(
            "--token", default=unset,
            help="bearer token (env ACTSEARCH_TOKEN; default: the one `actsearch up` saved, "
            "only for the URL it saved it with)",
        )  # fmt: skip
    return options


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default 127.0.0.1; env ACTSEARCH_HOST)")
    parser.add_argument("--port", type=int, help="listen port (default 8000; env ACTSEARCH_PORT)")
    parser.add_argument(
        "--processes", type=int, metavar="N",
        help="API server processes sharing the port (default: one per core, at most 4; "
        "env ACTSEARCH_PROCESSES)",
    )  # fmt: skip
    _add_db_flag(parser)


def _add_db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL (env ACTSEARCH_DATABASE_URL; "
        "default: SQLite file ~/.actsearch/actsearch.db)",
    )


def _add_follow(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--follow", "-f", action="store_true",
        help=f"{what}; Ctrl-C stops following, not the study",
    )  # fmt: skip
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")


def _add_study_or_campaign(parser: argparse.ArgumentParser, action: str) -> None:
    parser.add_argument("study", nargs="?", type=int, help="study id")
    parser.add_argument(
        "--campaign", type=int, metavar="ID",
        help=f"{action} a whole campaign (every stage's studies) instead of a study",
    )  # fmt: skip


def _add_yes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--yes", "-y", action="store_true",
        help="do not ask for confirmation (needed when not at a terminal)",
    )  # fmt: skip


def version() -> str:
    """This installation's version of actsearch."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("actsearch")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _service_commands(sub: Any, local: argparse.ArgumentParser) -> None:
    up = sub.add_parser(
        "up", parents=[local],
        help="API + dashboard + a local worker (SQLite by default); prints the login URL",
    )  # fmt: skip
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
    up.add_argument(
        "--new-login", action="store_true",
        help="revoke the saved login link and print a new one (by default the link stays the "
        "same across restarts)",
    )  # fmt: skip
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser(
        "serve", parents=[local], help="API + dashboard only (the schema must be current)"
    )
    _add_server_flags(serve)
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run training workers: `actsearch worker --help`", add_help=False)
    sub.add_parser(
        "train",
        help="train one configuration from the shell: `actsearch train --help`",
        add_help=False,
    )

    db = sub.add_parser("db", parents=[local], help="migrate our tables: `actsearch db upgrade`")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", help="target (default: head / one step down)")
    _add_db_flag(db)
    db.set_defaults(func=cmd_db)


def _study_commands(sub: Any, remote: argparse.ArgumentParser) -> None:
    submit = sub.add_parser("submit", parents=[remote], help="submit a study spec (YAML or JSON)")
    submit.add_argument("spec", help="path of the spec file, e.g. examples/quickstart.yaml")
    _add_follow(submit, "show a progress bar of trials until the study ends")
    submit.add_argument("--idempotency-key", help="resubmitting with the same key is a no-op")
    submit.set_defaults(func=cli_studies.cmd_submit)

    validate = sub.add_parser(
        "validate", parents=[remote],
        help="check a spec here (no server needed): its errors, or its trials, search space "
        "and warnings",
    )  # fmt: skip
    validate.add_argument("spec", help="path of the spec file")
    validate.set_defaults(func=cli_campaigns.cmd_validate)  # a study spec: cli_spec's

    status = sub.add_parser(
        "status", parents=[remote], help="list studies, or show one; --campaign: campaigns"
    )
    status.add_argument("study", nargs="?", type=int, help="study id")
    status.add_argument(
        "--campaign", nargs="?", type=int, const=0, metavar="ID",
        help="a campaign's funnel, verdicts and transfer table; alone: the list of campaigns",
    )  # fmt: skip
    status.add_argument("--limit", type=int, default=20, help="how many to list")
    _add_follow(status, "follow the study or campaign until it ends (re-attach after Ctrl-C)")
    status.set_defaults(func=cli_studies.cmd_status)

    for action, text in (
        ("cancel", "cancel a study (asks first; running trials stop within a few steps)"),
        ("pause", "pause a study (no new trials start)"),
        ("resume", "resume a paused study (a failed or cancelled one: `retry`)"),
    ):
        p = sub.add_parser(action, parents=[remote], help=text)
        _add_study_or_campaign(p, action)
        if action == "cancel":
            _add_yes(p)
        p.set_defaults(func=cli_studies.cmd_action)

    retry = sub.add_parser(
        "retry", parents=[remote],
        help="run a failed or cancelled study's spec again as a new study (owner or admin)",
    )  # fmt: skip
    retry.add_argument("study", type=int, help="study id")
    _add_follow(retry, "follow the new study until it ends")
    retry.set_defaults(func=cli_studies.cmd_retry)

    clone = sub.add_parser(
        "clone", parents=[remote], help="a new study from another's spec, with changes"
    )
    clone.add_argument("study", type=int, help="study id")
    clone.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="change one field, e.g. --set training.epochs=5 (YAML values; null removes a "
        "field); repeatable",
    )  # fmt: skip
    clone.add_argument(
        "--changes", metavar="FILE", help="a YAML/JSON mapping merged into the spec (--set on top)"
    )
    _add_follow(clone, "follow the new study until it ends")
    clone.set_defaults(func=cli_studies.cmd_clone)

    confirm = sub.add_parser(
        "confirm", parents=[remote],
        help="re-train a study's best configurations with fresh seeds in a linked study "
        "(owner or admin), so that verdicts can say better or worse",
    )  # fmt: skip
    confirm.add_argument("study", type=int, help="study id")
    confirm.add_argument(
        "--top", type=int, default=1, help="configurations per family, best first (default 1)"
    )
    confirm.add_argument(
        "--seeds", type=int, default=5, help="fresh seeds per configuration, ≥ 2 (default 5)"
    )
    confirm.set_defaults(func=cli_studies.cmd_confirm)

    delete = sub.add_parser(
        "delete", parents=[remote], help="delete a study and its trials (asks first)"
    )
    _add_study_or_campaign(delete, "delete")
    _add_yes(delete)
    delete.set_defaults(func=cli_studies.cmd_delete)


def _other_commands(sub: Any, remote: argparse.ArgumentParser) -> None:
    export = sub.add_parser(
        "export", parents=[remote], help="download a study's trials or leaderboard"
    )
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
    export.set_defaults(func=cli_studies.cmd_export, command_parser=export)

    logs = sub.add_parser(
        "logs", parents=[remote],
        help="why a study's trials failed; with TRIAL, that trial's failure and log tail",
    )  # fmt: skip
    logs.add_argument("study", type=int, help="study id")
    logs.add_argument("trial", nargs="?", type=int, help="trial number")
    logs.set_defaults(func=cli_studies.cmd_logs)

    workers = sub.add_parser(
        "workers", parents=[remote], help="the workers: what each trains, how fast, heartbeat"
    )
    workers.set_defaults(func=cli_studies.cmd_workers)

    users = sub.add_parser("users", parents=[remote], help="create or list users (admin)")
    users.add_argument("action", choices=["create", "list"])
    users.add_argument("name", nargs="?", help="user name (for create)")
    users.add_argument("--admin", action="store_true", help="make the user an admin")
    users.add_argument(
        "--local",
        action="store_true",
        help="write to the database directly instead of calling the API "
        "(to create the first admin of a team database)",
    )
    _add_db_flag(users)
    users.set_defaults(func=cmd_users)


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar. --url, --token and -v go before or after the command."""
    parser = Parser(
        prog="actsearch",
        description="Search activation functions: a service, its workers and its client.",
        parents=[_common(client=True, top=True)],
    )
    parser.add_argument("--version", action="version", version=f"actsearch {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _service_commands(sub, _common(client=False))
    remote = _common(client=True)
    _study_commands(sub, remote)
    _other_commands(sub, remote)
    return parser


def _refused_combination(args: argparse.Namespace) -> str | None:
    """Options each valid alone that the API cannot serve together."""
    if args.command == "export" and args.format == "latex" and args.what != "leaderboard":
        return (
            "--format latex exists for the leaderboard only: use --what leaderboard "
            "--format latex (trials export as csv or json)"
        )
    return None


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Migrations and the HTTP client narrate every step at INFO; users want results.
        for noisy in ("alembic", "httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    """The command, its expected errors as one message each (exit 1: the API refused; 2: a
    usage mistake; 130: interrupted)."""
    try:
        return int(args.func(args))
    except ApiError as error:
        return _fail(str(error), 1)
    except (CliError, TokenRequired) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as error:  # a user-facing message, never a bare traceback
        from service.errors import user_message

        message = user_message(error)
        if message is not None:
            return _fail(message)
        if args.verbose:
            raise
        return _fail(
            f"unexpected error: {type(error).__name__}: {error} (run again with -v for the "
            "traceback, and report it)",
            1,
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `actsearch` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("worker", "train"):
        return forward_to_workers(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    problem = _refused_combination(args)
    if problem:
        args.command_parser.error(problem)  # usage of the command, then exit 2
    _logging(args.verbose)
    if args.command == "users" and args.action == "create" and not args.name:
        return _fail("users create needs a NAME")
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
