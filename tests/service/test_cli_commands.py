"""The `actsearch` CLI as a researcher uses it, run as a real process against the served app:
every command of issue 18 and the errors a user can meet (no traceback, no "HTTP 422:")."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from service.db import Study
from service.store import Store
from tests.service.conftest import ROOT, Person, Server, add_trial, new_person, spec

pytestmark = pytest.mark.timeout(300)

QUICKSTART = ROOT / "examples" / "quickstart.yaml"
PROXY_ONE_EPOCH = "name: p1\nmodel: proxy\ntraining: {epochs: 1}\nactivations: {relu: {}}\n"


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    return {**env, "ACTSEARCH_HOME": str(home), "COLUMNS": "200"}


def run(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`actsearch ARGS` with nothing saved by `actsearch up` and stdin not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=environment(home),
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def cli(server: Server, person: Person, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`actsearch ARGS --url … --token …` against the test server, as `person`."""
    return run(home, *args, "--url", server.url, "--token", person.token)


def clean(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The result, after checking that nothing printed a traceback or a raw HTTP status."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert "HTTP 4" not in result.stderr, result.stderr
    return result


def set_status(store: Store, study_id: int, status: str) -> None:
    with store.db.session() as session:
        session.execute(update(Study).where(Study.id == study_id).values(status=status))


@pytest.fixture
def owner(store: Store) -> Person:
    return new_person(store, "cli-owner")


# -- global options, version, did you mean ---------------------------------------------------
def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = clean(run(tmp_path, "--version"))
    assert result.returncode == 0 and result.stdout.strip() == f"actsearch {version('actsearch')}"


def test_url_and_token_go_before_or_after_the_command(
    server: Server, owner: Person, tmp_path: Path
) -> None:
    flags = ["--url", server.url, "--token", owner.token]
    before = clean(run(tmp_path, *flags, "status"))
    after = clean(run(tmp_path, "status", *flags))
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert before.stdout == after.stdout
    # The command's own value wins over the one before it.
    both = clean(run(tmp_path, "--url", "http://127.0.0.1:9", "--token", "x", "status", *flags))
    assert both.returncode == 0, both.stderr
    wrong = clean(run(tmp_path, *flags, "status", "--url", "http://127.0.0.1:9"))
    assert wrong.returncode == 1 and "cannot reach the actsearch API at http://127.0.0.1:9" in (
        wrong.stderr
    )


def test_a_misspelt_command_gets_a_suggestion(tmp_path: Path) -> None:
    result = run(tmp_path, "stauts")
    assert result.returncode == 2 and "did you mean 'status'?" in result.stderr


# -- validate (local, no server) ---------------------------------------------------------------
def test_validate_prints_the_trials_and_search_space_without_a_server(tmp_path: Path) -> None:
    result = clean(run(tmp_path, "validate", str(QUICKSTART), "--url", "http://127.0.0.1:9"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{QUICKSTART}: valid" in out
    assert "6 trials, tpe sampler, none pruner" in out
    assert "lenet on cifar10" in out and "families: relu (baseline), smu, pau" in out
    assert re.search(r"smu\.mu\s+0\.5 … 5\.0 \(log\)", out)
    assert "no warnings" in out


def test_validate_shows_warnings_and_errors_with_suggestions(tmp_path: Path) -> None:
    proxy = tmp_path / "proxy.yaml"
    proxy.write_text(PROXY_ONE_EPOCH)
    warned = clean(run(tmp_path, "validate", str(proxy)))
    assert warned.returncode == 0
    assert f"warning: {proxy}: training.warmup_epochs: warmup_epochs (2.3" in warned.stdout
    assert "training.lookahead.start_epoch" in warned.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nactivations: {smuu: {}}\n")
    refused = clean(run(tmp_path, "validate", str(bad)))
    assert refused.returncode == 2
    assert f"invalid spec {bad}:\n  activations.smuu: unknown activation family 'smuu'; " in (
        refused.stderr
    )
    assert "did you mean 'smu'?" in refused.stderr

    fields = tmp_path / "fields.yaml"
    fields.write_text("name: x\ntraining: {batchsize: 64}\nactivations: {relu: {}}\n")
    refused = clean(run(tmp_path, "validate", str(fields)))
    assert "training.batchsize: unknown field; did you mean 'batch_size'?" in refused.stderr


@pytest.mark.parametrize("command", ["validate", "submit"])
def test_yaml_errors_name_the_file_and_line(command: str, tmp_path: Path) -> None:
    broken = tmp_path / "quickstart.yaml"
    broken.write_text("name: x\nactivations:\n  relu: {}\n smu: {}\n")
    result = clean(run(tmp_path, command, str(broken), "--url", "http://127.0.0.1:9"))
    assert result.returncode == 2
    assert f"{broken}, line 4, column 2:" in result.stderr
    assert "<unicode string>" not in result.stderr
    assert "cannot reach" not in result.stderr  # refused before anything was sent


@pytest.mark.parametrize("command", ["validate", "submit"])
def test_a_directory_or_missing_file_is_refused_plainly(command: str, tmp_path: Path) -> None:
    result = clean(run(tmp_path, command, str(ROOT / "examples")))
    assert result.returncode == 2
    assert "examples is a directory: give a spec file (YAML or JSON), e.g. " in result.stderr
    assert "quickstart.yaml" in result.stderr
    missing = clean(run(tmp_path, command, str(tmp_path / "nope.yaml")))
    assert missing.returncode == 2 and "nope.yaml does not exist" in missing.stderr


# -- submit ------------------------------------------------------------------------------------
def test_submit_shows_field_errors_one_per_line_with_suggestions(
    server: Server, owner: Person, tmp_path: Path
) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("name: t\ntraining: {batchsize: 64, epochs: 2}\nactivations: {relu: {}}\n")
    result = clean(cli(server, owner, tmp_path, "submit", str(bad)))
    assert result.returncode == 2  # as `validate`: the spec is wrong
    assert result.stderr == (
        f"actsearch: error: invalid spec {bad}:\n"
        "  training.batchsize: unknown field; did you mean 'batch_size'?\n"
    )


def test_submit_prints_the_specs_warnings(
    server: Server, owner: Person, tmp_path: Path, store: Store
) -> None:
    proxy = tmp_path / "proxy.yaml"
    proxy.write_text(PROXY_ONE_EPOCH)
    result = clean(cli(server, owner, tmp_path, "submit", str(proxy)))
    assert result.returncode == 0, result.stderr
    study_id = int(re.search(r"study (\d+) submitted: ", result.stdout).group(1))  # type: ignore[union-attr]
    assert store.studies.get(study_id).owner == owner.name
    assert f"warning: {proxy}: training.warmup_epochs: " in result.stderr
    assert f"warning: {proxy}: training.lookahead.start_epoch: " in result.stderr


# -- listings: one header each -----------------------------------------------------------------
def _headers(stdout: str, first: str) -> int:
    return sum(1 for line in stdout.splitlines() if line.split()[:1] == [first])


def test_status_users_and_workers_list_under_one_header(
    server: Server, store: Store, tmp_path: Path
) -> None:
    admin = new_person(store, "cli-admin", admin=True)
    for n in range(3):
        store.studies.create(admin.info, spec(name=f"listed-{n}"))
    store.workers.register("w-cli-a", hostname="gpu-box", pid=11, device="cuda:0")
    store.workers.register("w-cli-b", hostname="gpu-box", pid=12, device="cuda:1", slot=1)

    studies = clean(cli(server, admin, tmp_path, "status"))
    assert studies.returncode == 0, studies.stderr
    assert studies.stdout.splitlines()[0].split() == [
        "id", "status", "trials", "owner", "name", "progress",
    ]  # fmt: skip
    assert _headers(studies.stdout, "id") == 1 and "listed-2" in studies.stdout

    users = clean(cli(server, admin, tmp_path, "users", "list"))
    assert users.stdout.splitlines()[0].split() == ["id", "name", "role"]
    assert _headers(users.stdout, "id") == 1 and admin.name in users.stdout

    workers = clean(cli(server, admin, tmp_path, "workers"))
    assert workers.returncode == 0, workers.stderr
    lines = workers.stdout.splitlines()
    assert lines[0].split()[:4] == ["worker", "host", "device", "status"]
    assert _headers(workers.stdout, "worker") == 1
    row = next(line for line in lines if line.startswith("w-cli-b"))
    assert row.split()[1:4] == ["gpu-box", "cuda:1", "idle"]


# -- clone, retry, resume's hint ---------------------------------------------------------------
def test_clone_with_set_and_changes_file(
    server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    source, _ = store.studies.create(owner.info, spec(name="src", training={"epochs": 2}))
    changes = tmp_path / "changes.yaml"
    changes.write_text("training: {batch_size: 32}\nn_trials: 3\n")
    result = clean(
        cli(
            server, owner, tmp_path, "clone", str(source.id), "--changes", str(changes),
            "--set", "training.epochs=4", "--set", "name=cloned", "--set", "n_trials=5",
        )
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = re.search(
        rf"study (\d+) cloned from study {source.id}: {server.url}/studies/", result.stdout
    )
    assert found, result.stdout
    clone = store.studies.get(int(found.group(1)))
    assert clone.name == "cloned" and clone.n_trials == 5
    assert (clone.spec["training"]["epochs"], clone.spec["training"]["batch_size"]) == (4, 32)

    warned = clean(
        cli(server, owner, tmp_path, "clone", str(source.id), "--set", "training.epochs=1")
    )
    assert "warning: training.warmup_epochs: warmup_epochs (1) is not below epochs (1)" in (
        warned.stderr
    )
    refused = clean(cli(server, owner, tmp_path, "clone", str(source.id), "--set", "epochs"))
    assert refused.returncode == 2 and "give KEY=VALUE, e.g. --set training.epochs=5" in (
        refused.stderr
    )
    typo = clean(cli(server, owner, tmp_path, "clone", str(source.id), "--set", "trainng.epochs=3"))
    assert typo.returncode == 1
    assert "trainng: unknown field; did you mean 'training'?" in typo.stderr


def test_retry_of_a_failed_study_and_the_hints_of_resume_and_retry(
    server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    study, _ = store.studies.create(owner.info, spec(name="doomed", training={"epochs": 2}))
    store.studies.fail(study.id, "no machine can run it")

    resumed = clean(cli(server, owner, tmp_path, "resume", str(study.id)))
    assert resumed.returncode == 1
    assert f"cannot resume study {study.id}: it is failed" in resumed.stderr
    assert f"`actsearch retry {study.id}`" in resumed.stderr

    retried = clean(cli(server, owner, tmp_path, "retry", str(study.id)))
    assert retried.returncode == 0, retried.stderr
    found = re.search(rf"study (\d+) retries study {study.id}: ", retried.stdout)
    assert found, retried.stdout
    new = store.studies.get(int(found.group(1)))
    assert new.name == "doomed (retry)" and new.description == f"retry of study {study.id}"

    refused = clean(cli(server, owner, tmp_path, "retry", str(new.id)))  # queued, not over
    assert refused.returncode == 1
    assert "only a failed or cancelled study is retried" in refused.stderr


# -- logs --------------------------------------------------------------------------------------
def test_logs_of_a_study_and_of_one_trial(
    server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    study, _ = store.studies.create(owner.info, spec(name="logs", n_trials=4))
    add_trial(store, study.id, family="relu", value=0.7)
    failed = add_trial(store, study.id, family="smu", state="failed", epochs=3)

    listed = clean(cli(server, owner, tmp_path, "logs", str(study.id)))
    assert listed.returncode == 0, listed.stderr
    assert f"  trial {failed} (smu): diverged: loss became NaN (epoch 2)" in listed.stdout
    assert f"actsearch logs {study.id} TRIAL" in listed.stdout

    one = clean(cli(server, owner, tmp_path, "logs", str(study.id), str(failed)))
    assert one.returncode == 0, one.stderr
    assert f"trial {failed} · smu · failed" in one.stdout
    assert "attempt 1: diverged: loss became NaN (epoch 2)" in one.stdout

    quiet, _ = store.studies.create(owner.info, spec(name="quiet"))
    assert "no failed trials" in clean(cli(server, owner, tmp_path, "logs", str(quiet.id))).stdout
    missing = clean(cli(server, owner, tmp_path, "logs", str(study.id), "999"))
    assert missing.returncode == 1 and "999" in missing.stderr


# -- destructive commands ask first ------------------------------------------------------------
@pytest.mark.parametrize("command", ["delete", "cancel"])
def test_delete_and_cancel_refuse_without_yes_when_not_at_a_terminal(
    command: str, server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    study, _ = store.studies.create(owner.info, spec(name=f"keep-{command}"))
    refused = clean(cli(server, owner, tmp_path, command, str(study.id)))
    assert refused.returncode == 2
    assert "without confirmation (no terminal to ask on): pass --yes" in refused.stderr
    assert store.studies.get(study.id).status == "queued"  # untouched

    done = clean(cli(server, owner, tmp_path, command, str(study.id), "--yes"))
    assert done.returncode == 0, done.stderr
    if command == "delete":
        assert f"study {study.id} deleted" in done.stdout
        assert [s.id for s in [study] if _exists(store, s.id)] == []
    else:
        assert store.studies.get(study.id).status == "cancelled"


def _exists(store: Store, study_id: int) -> bool:
    with store.db.session() as session:
        return session.get(Study, study_id) is not None


def _at_a_terminal(home: Path, args: list[str], answer: str) -> tuple[int, str]:
    """Run with stdin (and stdout) on a pseudo-terminal, answer the question; (status, output)."""
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=environment(home),
        stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in output and time.monotonic() < deadline:
        output += os.read(leader, 4096)
    os.write(leader, answer.encode() + b"\n")
    status = process.wait(timeout=60)
    try:
        while chunk := os.read(leader, 4096):
            output += chunk
    except OSError:  # the terminal closed with the process
        pass
    os.close(leader)
    return status, output.decode()


def test_delete_asks_at_a_terminal(
    server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    study, _ = store.studies.create(owner.info, spec(name="asked"))
    flags = ["--url", server.url, "--token", owner.token]
    status, output = _at_a_terminal(tmp_path, ["delete", str(study.id), *flags], "n")
    assert status == 1 and f"delete study {study.id} 'asked' (queued, 0/4 trials" in output
    assert f"study {study.id} not deleted" in output and _exists(store, study.id)
    status, output = _at_a_terminal(tmp_path, ["delete", str(study.id), *flags], "y")
    assert status == 0 and f"study {study.id} deleted" in output
    assert not _exists(store, study.id)


# -- follow and re-attach ----------------------------------------------------------------------
def test_status_follow_of_a_finished_study_prints_it_and_ends(
    server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    study, _ = store.studies.create(owner.info, spec(name="over"))
    add_trial(store, study.id, family="relu", value=0.7)
    set_status(store, study.id, "completed")
    result = clean(cli(server, owner, tmp_path, "status", str(study.id), "--follow"))
    assert result.returncode == 0, result.stderr
    assert f"study {study.id} · over · completed · 1/4 trials" in result.stdout
    refused = clean(cli(server, owner, tmp_path, "status", "--follow"))
    assert refused.returncode == 2 and "status --follow needs a study ID" in refused.stderr


@pytest.mark.parametrize("command", ["status", "submit"])
def test_ctrl_c_on_follow_says_the_study_keeps_running(
    command: str, server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    if command == "status":
        study, _ = store.studies.create(owner.info, spec(name="long"))
        args = ["status", str(study.id)]
    else:
        quick = tmp_path / "q.yaml"
        quick.write_text("name: q\ntraining: {epochs: 2}\nactivations: {relu: {}}\n")
        args = ["submit", str(quick)]
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args, "--follow", "--interval", "0.2",
         "--url", server.url, "--token", owner.token],
        cwd=ROOT, env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    # Following: its progress bar is on stderr (a fixed sleep was a guess on a slow machine).
    if "study " not in _read_until(process, "study "):
        process.kill()
        pytest.fail(f"no progress bar within 60 s: {process.communicate()}")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    study_id = int(re.search(r"study (\d+) keeps running", stderr).group(1))  # type: ignore[union-attr]
    assert f"`actsearch status {study_id} --follow`" in stderr
    assert store.studies.get(study_id).status == "queued"  # following stopped, not the study


def _read_until(process: subprocess.Popen[str], text: str, timeout_s: float = 60.0) -> str:
    """What the process wrote on stderr until `text` appeared (or the timeout, or its end)."""
    assert process.stderr is not None
    stderr = process.stderr
    seen: list[str] = []

    def read() -> None:
        while text not in "".join(seen[-len(text) :]):
            char = stderr.read(1)
            if not char:
                return
            seen.append(char)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    return "".join(seen)


def test_live_progress_reads_as_a_sentence() -> None:
    from service.cli_views import live_progress

    progress = {"phase": "train", "epoch": 0, "epochs": 10, "step": 120, "steps": 391,
                "img_per_s": 63.4, "eta_s": 250}  # fmt: skip
    assert live_progress(progress) == "epoch 1/10 · step 120/391 · 63 img/s · ETA 4m10s"
    assert live_progress({"phase": "data", "eta_s": None}) == "data"
    assert live_progress(None) == ""


def test_the_cli_starts_without_server_or_training_modules() -> None:
    # The client commands import the HTTP client only: no torch, web framework or database.
    code = "import sys, service.cli\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(result.stdout.split())
    heavy = {"torch", "fastapi", "sqlalchemy", "optuna", "uvicorn", "service.app", "service.store"}
    assert not heavy & loaded, heavy & loaded


def test_the_readme_commands_table_names_every_command() -> None:
    from service.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Commands") : readme.index("## Settings")]
    missing = [
        name for name in sub.choices  # type: ignore[union-attr]
        if f"`actsearch {name}" not in table and f"`{name} " not in table
    ]  # fmt: skip
    assert missing == []
