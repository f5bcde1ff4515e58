"""`actsearch confirm` and the family table of `actsearch status ID`, run as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.store import Store
from tests.service.conftest import ROOT, Person, Server, new_person, spec
from tests.service.test_api_evidence import ACTIVATIONS, add_training, trained
from tests.service.test_evidence_stats import ELU, PAU, RELU, SMU

pytestmark = pytest.mark.timeout(300)


def cli(server: Server, person: Person, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args, "--url", server.url, "--token", person.token],
        cwd=ROOT, env={**environment, "ACTSEARCH_HOME": str(home)}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def table(stdout: str) -> dict[str, str]:
    """The family lines of `status ID`, by family."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["family", "n"])
    return {line.split()[0]: line for line in lines[start + 1 :] if line.startswith("  ")}


def test_confirm_then_status_shows_intervals_and_verdicts(
    server: Server, store: Store, tmp_path: Path
) -> None:
    owner = new_person(store, "cli-evidence")
    study, _ = store.studies.create(
        owner.info, spec(name="cli", n_trials=20, baselines=["relu"], activations=ACTIVATIONS)
    )
    trained(store, study.id, "relu", RELU, {"activation": "relu"})
    trained(store, study.id, "smu", SMU, {"activation": "smu", "smu.alpha": 0.2})
    trained(store, study.id, "pau", ELU, {"activation": "pau"})

    searched = cli(server, owner, tmp_path, "status", str(study.id))
    assert searched.returncode == 0, searched.stderr
    assert "search-time, validation accuracy" in searched.stdout
    assert f"actsearch confirm {study.id}" in searched.stdout
    rows = table(searched.stdout)
    assert rows["smu"].split()[1] == "5" and "promising (p=" in rows["smu"]
    assert re.search(r"\+\d+\.\d\d pp \[\+\d+\.\d\d, \+\d+\.\d\d\]", rows["smu"])
    assert (
        re.search(r"\d+\.\d\d% \[\d+\.\d\d, \d+\.\d\d\]", rows["relu"])
        and "baseline" in rows["relu"]
    )
    assert rows["pau"].split()[1] == "1" and rows["pau"].endswith("too few runs")
    assert "±" not in searched.stdout and "0.0000" not in searched.stdout

    created = cli(server, owner, tmp_path, "confirm", str(study.id), "--top", "1", "--seeds", "6")
    assert created.returncode == 0, created.stderr
    match = re.search(
        rf"study (\d+) confirms study {study.id}: 3 configurations × 6 seeds: (\S+)", created.stdout
    )
    assert match, created.stdout
    confirm_id = int(match.group(1))
    assert match.group(2) == f"{server.url}/studies/{confirm_id}"
    assert store.studies.get(confirm_id).confirms_study_id == study.id

    for family, values in {"relu": RELU, "smu": SMU, "pau": PAU}.items():
        for seed, value in enumerate(values):
            add_training(store, confirm_id, family, value + 0.002, value, seed=50 + seed)
    confirmed = cli(server, owner, tmp_path, "status", str(study.id))
    assert confirmed.returncode == 0, confirmed.stderr
    assert f"confirmed by study {confirm_id}" in confirmed.stdout
    assert f"confirmation by study {confirm_id}: fresh seeds, test accuracy" in confirmed.stdout
    rows = table(confirmed.stdout)
    assert "better (p=" in rows["smu"] and "worse (p=" in rows["pau"]
    assert rows["pau"].split()[1] == "7"

    itself = cli(server, owner, tmp_path, "status", str(confirm_id))
    assert f"confirms study {study.id} (cli)" in itself.stdout

    again = cli(server, owner, tmp_path, "confirm", str(confirm_id))
    assert again.returncode == 1 and f"confirm study {study.id} instead" in again.stderr
    empty, _ = store.studies.create(owner.info, spec(name="empty"))
    nothing = cli(server, owner, tmp_path, "confirm", str(empty.id))
    assert nothing.returncode == 1 and "HTTP" not in nothing.stderr  # the message, no status
    assert "no complete trial to confirm yet" in nothing.stderr
