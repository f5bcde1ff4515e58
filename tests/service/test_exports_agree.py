"""One study exports as the same bytes from the API, the dashboard's buttons and `actsearch export`.

A real study with runs in several states (and a family without a complete trial, which no
export lists), served by uvicorn; the dashboard is followed the way a browser does (sign in,
read the study page, download what its buttons link to) and the CLI runs as a subprocess.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.store import Store
from service.store.exports import (
    LEADERBOARD_CSV_FIELDS,
    TRIAL_CSV_FIELDS,
    latex_escape,
    leaderboard_latex,
)
from service.store.queries import leaderboard
from tests.service.conftest import ROOT, Person, Server, add_trial, new_person, spec

pytestmark = pytest.mark.timeout(300)

VALUES = {"relu": [0.80, 0.82, 0.81], "smu": [0.85, 0.83], "gelu": [0.79]}


@pytest.fixture(scope="module")
def study(store: Store) -> dict[str, Any]:
    """Complete trials of three families, one pruned, one running and one failed family."""
    owner = new_person(store, "agree")
    created, _ = store.studies.create(
        owner.info, spec(name="agree_on_bytes", n_trials=12, baselines=["relu"])
    )
    for family, values in VALUES.items():
        for i, value in enumerate(values):
            params = {
                "activation": family,
                **({"smu.alpha": 0.1 * (i + 1)} if family == "smu" else {}),
            }
            add_trial(store, created.id, family=family, params=params, value=value)
    add_trial(store, created.id, family="smu", value=None, state="pruned")
    add_trial(store, created.id, family="relu", value=None, state="running")
    add_trial(store, created.id, family="swish_2", value=None, state="failed")
    return {"id": created.id, "owner": owner}


def _api(server: Server, owner: Person, path: str, **params: str) -> bytes:
    response = httpx.get(f"{server.url}/api/v1{path}", params=params, headers=owner.headers)
    assert response.status_code == 200, response.text
    return response.content


def _dashboard_buttons(server: Server, owner: Person, study_id: int) -> dict[str, bytes]:
    """What the study page's export buttons download, signed in with a session cookie."""
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        # As a link opened from outside the browser: it signs in at once.
        browser.get(
            f"/login?token={owner.token}",
            headers={"Sec-Fetch-Site": "none"},
            follow_redirects=False,
        )
        page = browser.get(f"/studies/{study_id}")
        assert page.status_code == 200, page.text
        links = dict(re.findall(r'<a [^>]*href="([^"]+)"[^>]*download>([^<]+)</a>', page.text))
        by_label = {label: href for href, label in links.items()}
        downloads = {}
        for label in ("Leaderboard CSV", "Leaderboard LaTeX", "All trials CSV"):
            response = browser.get(by_label[label])
            assert response.status_code == 200, (label, response.text)
            assert response.headers["content-disposition"].startswith("attachment; filename=")
            downloads[label] = response.content
    return downloads


def _cli_export(server: Server, owner: Person, home: Path, study_id: int, *args: str) -> bytes:
    """`actsearch export` into a file, as a user runs it."""
    output = home / f"export-{'-'.join(args)}.out"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "export", str(study_id), *args,
         "--url", server.url, "--token", owner.token, "--output", str(output)],
        cwd=ROOT, env={**environment, "ACTSEARCH_HOME": str(home)}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return output.read_bytes()


def test_api_dashboard_and_cli_export_the_same_bytes(
    server: Server, study: dict[str, Any], tmp_path: Path
) -> None:
    sid, owner = study["id"], study["owner"]
    api = {
        "Leaderboard CSV": _api(server, owner, f"/studies/{sid}/leaderboard", format="csv"),
        "Leaderboard LaTeX": _api(server, owner, f"/studies/{sid}/leaderboard", format="latex"),
        "All trials CSV": _api(server, owner, f"/studies/{sid}/export.csv"),
    }
    cli = {
        "Leaderboard CSV": _cli_export(server, owner, tmp_path, sid, "--what", "leaderboard"),
        "Leaderboard LaTeX": _cli_export(
            server, owner, tmp_path, sid, "--what", "leaderboard", "--format", "latex"
        ),
        "All trials CSV": _cli_export(server, owner, tmp_path, sid),
    }
    assert _dashboard_buttons(server, owner, sid) == api == cli

    # And they are the API's documented files: its columns, fractions, its row filter.
    board = list(csv.DictReader(io.StringIO(api["Leaderboard CSV"].decode())))
    assert tuple(board[0]) == LEADERBOARD_CSV_FIELDS
    assert [r["family"] for r in board] == ["smu", "relu", "gelu"]  # swish_2: no result, no row
    assert float(board[0]["best"]) == pytest.approx(0.85)
    latex = api["Leaderboard LaTeX"].decode()
    assert latex.startswith(r"\begin{tabular}") and r"$\Delta$ vs relu" in latex
    trials = list(csv.DictReader(io.StringIO(api["All trials CSV"].decode())))
    assert tuple(trials[0])[: len(TRIAL_CSV_FIELDS)] == TRIAL_CSV_FIELDS
    assert len(trials) == 9 and {r["family"] for r in trials} >= {"swish_2", "smu"}
    assert all(r["created_at"].endswith("+00:00") for r in trials)  # UTC on both databases


def test_the_dashboard_summary_is_the_leaderboard_read_model(
    client: TestClient, store: Store, study: dict[str, Any]
) -> None:
    """The summary's families, ranks, deltas and headline are the read model's, reshaped."""
    sid, owner = study["id"], study["owner"]
    summary = client.get(f"/dashboard/data/studies/{sid}/summary", headers=owner.headers).json()
    board = leaderboard(store.db, sid)
    assert [f["family"] for f in summary["families"]] == [r.family for r in board.rows]
    assert summary["families"][-1]["family"] == "swish_2"  # listed here (its failed attempt)
    for shown, row in zip(summary["families"], board.rows, strict=True):
        assert (shown["rank"], shown["delta_best"], shown["verdict"]) == (
            row.rank, row.delta_best_vs_baseline, row.verdict
        )  # fmt: skip
        assert shown["search"]["delta"] == row.search.delta
        assert shown["trainings"] == row.trainings and "std" not in shown
    headline = summary["headline"]
    assert headline["family"] == "smu" and headline["baseline"]["family"] == "relu"
    assert headline["delta"] == pytest.approx(0.85 - 0.82)
    assert headline["evidence"]["delta"] == pytest.approx(0.84 - 0.81)
    assert headline["verdict"] == "no evidence" and "family_std" not in headline


def test_latex_escapes_every_special_and_leaves_empty_values_empty(
    store: Store, study: dict[str, Any]
) -> None:
    assert latex_escape("a_b&c%d$e#f{g}h~i^j\\k") == (
        "a\\_b\\&c\\%d\\$e\\#f\\{g\\}h\\textasciitilde{}i\\textasciicircum{}j\\textbackslash{}k"
    )
    tex = leaderboard_latex(leaderboard(store.db, study["id"]))
    gelu = next(line for line in tex.splitlines() if line.startswith("gelu &"))
    assert gelu == r"gelu & 1 & 79.00 & 79.00 & too few runs \\"  # one training: no interval
    assert "swish" not in tex
