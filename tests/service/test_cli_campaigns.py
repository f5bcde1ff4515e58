"""The `actsearch` CLI with campaigns, run as a real process against the served app: submit
detects a campaign, `status --campaign` prints the funnel and the transfer table (also when
following one to its end), and cancel / pause / resume / delete act on the whole campaign."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.store import Store
from tests.service.campaign_helpers import at_stage, campaign, stage_studies, train_study
from tests.service.conftest import ROOT, Person, Server, new_person
from tests.service.test_cli_commands import clean, cli, environment, run

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def owner(store: Store) -> Person:
    return new_person(store, "cli-campaigner")


def write_campaign(tmp_path: Path, name: str, **changes: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(campaign(name=name, **changes), sort_keys=False))
    return path


def submitted_id(stdout: str) -> int:
    found = re.search(r"campaign (\d+) submitted", stdout)
    assert found, stdout
    return int(found.group(1))


def run_stages(store: Store, campaign_id: int, stages: range) -> None:
    """Train these stages' studies to the end, and move on."""
    for stage in stages:
        at_stage(store, campaign_id, stage)
        for study in stage_studies(store, campaign_id, stage):
            train_study(store, study.id)
    at_stage(store, campaign_id, stages.stop)


def test_submit_detects_a_campaign_and_status_prints_its_funnel(
    server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path, "cli-funnel")
    result = clean(cli(server, owner, tmp_path, "submit", str(path)))
    assert result.returncode == 0, result.stderr
    campaign_id = submitted_id(result.stdout)
    assert f"{server.url}/campaigns/{campaign_id}" in result.stdout
    info = store.campaigns.get(campaign_id)
    assert info.owner == owner.name and info.stages == 3
    (screen,) = stage_studies(store, campaign_id, 0)
    assert screen.name == "cli-funnel · screen"

    waiting = clean(cli(server, owner, tmp_path, "status", "--campaign", str(campaign_id)))
    assert waiting.returncode == 0, waiting.stderr
    lines = waiting.stdout.splitlines()
    assert lines[0].startswith(f"campaign {campaign_id} · cli-funnel · running · stage 1 of 3")
    assert re.search(rf"1\. screen +(queued|running) .*#{screen.id} lenet 0/14", waiting.stdout)
    assert re.search(r"3\. confirm +waiting .*resnet18, mobilenet_v2", waiting.stdout)
    assert "transfer of stage" not in waiting.stdout

    # The transfer stage set up, nothing trained on it yet: the promote stage's verdicts.
    run_stages(store, campaign_id, range(2))
    middle = clean(cli(server, owner, tmp_path, "status", "--campaign", str(campaign_id)))
    assert middle.returncode == 0, middle.stderr
    assert "verdicts of stage 2 (promote): Δ vs relu" in middle.stdout
    assert "transfer of stage" not in middle.stdout

    run_stages(store, campaign_id, range(2, 3))
    assert store.campaigns.get(campaign_id).status == "completed"
    done = clean(cli(server, owner, tmp_path, "status", "--campaign", str(campaign_id)))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"campaign {campaign_id} · cli-funnel · completed · stage 3 of 3" in out
    # The funnel: the screen's 14 trainings; what each stage let out entered the next, with
    # the baseline.
    screen_row = re.search(r"1\. screen +ended +(\d+) +(\d+) +(\d+)", out)
    promote_row = re.search(r"2\. promote +ended +(\d+) +(\d+)", out)
    confirm_row = re.search(r"3\. confirm +ended +(\d+) +— +(\d+)", out)
    assert screen_row and promote_row and confirm_row, out
    assert int(screen_row.group(3)) == 14
    assert int(promote_row.group(1)) == int(screen_row.group(2)) + 1
    assert int(confirm_row.group(1)) == int(promote_row.group(2)) + 1
    # The transfer table: a column per model, SMU better than ReLU on both.
    assert "transfer of stage 3 (confirm): Δ vs relu in points [95% CI], test accuracy" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("family"))
    assert header.split() == ["family", "resnet18", "mobilenet_v2"]
    smu = next(line for line in out.splitlines() if line.strip().startswith("smu "))
    assert smu.count("better") == 2 and smu.count(" pp [+") == 2, smu
    relu = next(line for line in out.splitlines() if line.strip().startswith("relu "))
    assert relu.count("(baseline)") == 2
    assert f"page: {server.url}/campaigns/{campaign_id}" in out

    # Following a campaign that has ended prints it and says how it ended.
    followed = clean(
        cli(server, owner, tmp_path, "status", "--campaign", str(campaign_id), "--follow")
    )
    assert followed.returncode == 0, followed.stderr
    first = followed.stdout.splitlines()[0]
    assert re.fullmatch(
        rf"campaign {campaign_id} · completed · stage 3 of 3 \(confirm\) · (\d+)/\1 trials", first
    ), first
    assert "transfer of stage 3" in followed.stdout

    # The list of campaigns names it.
    listed = clean(cli(server, owner, tmp_path, "status", "--campaign"))
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(f"{campaign_id} "))
    assert row.split()[:4] == [str(campaign_id), "completed", "3/3", owner.name]


def test_an_invalid_campaign_names_the_file_and_field(
    server: Server, owner: Person, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path, "cli-bad", stages=[{"model": "lenet"}, {}])
    result = clean(cli(server, owner, tmp_path, "submit", str(path)))
    assert result.returncode == 2
    assert f"invalid spec {path}:" in result.stderr
    assert "stages.0.promote:" in result.stderr


def test_validate_checks_a_campaign_here_and_says_what_each_stage_runs(tmp_path: Path) -> None:
    result = clean(run(tmp_path, "validate", str(ROOT / "examples" / "campaign-cpu.yaml")))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("campaign-cpu.yaml: valid campaign, 3 stages")
    assert lines[1].startswith("  1. screen: 8 trials on lenet; epochs 1, 1 seed(s) each")
    assert lines[1].endswith("promotes the top 2 per family")
    assert lines[3].startswith("  3. confirm: the promoted configurations and baselines on ")
    assert "3 seed(s) each; the last stage" in lines[3]
    assert "smu.alpha" in result.stdout  # the first stage's search space

    bad = write_campaign(tmp_path, "cli-bad-rule", stages=[{"promote": {"top": 0}}, {}])
    refused = clean(run(tmp_path, "validate", str(bad)))
    assert refused.returncode == 2
    assert f"invalid spec {bad}:" in refused.stderr
    assert "stages.0.promote.top:" in refused.stderr


def test_pause_resume_cancel_and_delete_act_on_the_whole_campaign(
    server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path, "cli-steer")
    campaign_id = submitted_id(clean(cli(server, owner, tmp_path, "submit", str(path))).stdout)
    (study,) = stage_studies(store, campaign_id, 0)
    flag = ["--campaign", str(campaign_id)]

    paused = clean(cli(server, owner, tmp_path, "pause", *flag))
    assert paused.returncode == 0 and f"campaign {campaign_id} is now paused" in paused.stdout
    assert store.studies.get(study.id).status == "paused"
    resumed = clean(cli(server, owner, tmp_path, "resume", *flag))
    assert resumed.returncode == 0 and "is now running" in resumed.stdout
    assert store.studies.get(study.id).status == "queued"

    refused = clean(cli(server, owner, tmp_path, "cancel", *flag))  # no terminal to ask on
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    cancelled = clean(cli(server, owner, tmp_path, "cancel", *flag, "--yes"))
    assert cancelled.returncode == 0 and "is now cancelled" in cancelled.stdout
    assert store.studies.get(study.id).status == "cancelled"

    neither = clean(cli(server, owner, tmp_path, "delete", "--yes"))
    assert neither.returncode == 2 and "a study ID or --campaign ID" in neither.stderr
    both = clean(cli(server, owner, tmp_path, "delete", str(study.id), *flag, "--yes"))
    assert both.returncode == 2
    deleted = clean(cli(server, owner, tmp_path, "delete", *flag, "--yes"))
    assert deleted.returncode == 0 and f"campaign {campaign_id} deleted" in deleted.stdout
    gone = clean(cli(server, owner, tmp_path, "status", *flag))
    assert gone.returncode == 1 and f"campaign {campaign_id}" in gone.stderr


def test_following_a_running_campaign_and_ctrl_c(
    server: Server, owner: Person, store: Store, tmp_path: Path
) -> None:
    path = write_campaign(tmp_path, "cli-follow")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "submit", str(path), "--follow", "--interval",
         "0.2", "--url", server.url, "--token", owner.token],
        cwd=ROOT, env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    seen = []  # until it follows: its first progress line (however slow the machine is)
    while not seen or "stage 1 of 3 (screen)" not in seen[-1]:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line, process.communicate()
        seen.append(line)
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=30)
    stdout = "".join(seen) + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    campaign_id = submitted_id(stdout)
    assert re.search(rf"campaign {campaign_id} · running · stage 1 of 3 \(screen\) · 0/14", stdout)
    assert f"campaign {campaign_id} keeps running" in stderr
    assert f"`actsearch status --campaign {campaign_id} --follow`" in stderr
    assert store.campaigns.get(campaign_id).status == "running"  # following stopped, not it
