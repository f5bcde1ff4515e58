"""Exports (CSV, JSON) and the per-family leaderboard (JSON, CSV, LaTeX)."""

from __future__ import annotations

import csv
import io
import statistics
from typing import Any

import httpx
import pytest

from service.store import Store
from tests.service.conftest import add_trial, new_person, spec

pytestmark = pytest.mark.timeout(300)

VALUES = {"relu": [0.80, 0.82, 0.81], "smu": [0.85, 0.83], "gelu": [0.79]}


@pytest.fixture(scope="module")
def scored(store: Store) -> dict[str, Any]:
    """A study with complete trials of three families, one pruned and one running."""
    owner = new_person(store, "exports")
    study, _ = store.studies.create(owner.info, spec(name="lb", n_trials=10, baselines=["relu"]))
    for family, values in VALUES.items():
        for i, value in enumerate(values):
            params = {
                "activation": family,
                **({f"{family}.alpha": 0.1 * (i + 1)} if family == "smu" else {}),
            }
            add_trial(
                store, study.id, family=family, params=params, value=value, test_acc=value - 0.02
            )
    add_trial(store, study.id, family="smu", value=None, state="pruned")
    add_trial(store, study.id, family="relu", value=None, state="running")
    return {"study_id": study.id, "owner": owner}


def test_csv_export_has_every_attempt_and_a_column_per_param(
    api: httpx.Client, scored: dict[str, Any]
) -> None:
    response = api.get(
        f"/api/v1/studies/{scored['study_id']}/export.csv", headers=scored["owner"].headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 8
    assert {
        "number",
        "state",
        "family",
        "value",
        "test_acc",
        "param.activation",
        "param.smu.alpha",
    } <= set(rows[0])
    smu = [r for r in rows if r["family"] == "smu" and r["state"] == "complete"]
    assert sorted(float(r["param.smu.alpha"]) for r in smu) == pytest.approx([0.1, 0.2])
    assert [int(r["number"]) for r in rows] == sorted(int(r["number"]) for r in rows)


def test_json_export_has_study_and_trials(client: httpx.Client, scored: dict[str, Any]) -> None:
    body = client.get(
        f"/api/v1/studies/{scored['study_id']}/export.json", headers=scored["owner"].headers
    ).json()
    assert body["study"]["id"] == scored["study_id"]
    assert body["study"]["spec"]["name"] == "lb"
    assert len(body["trials"]) == 8
    assert all("config" in t and "params" in t for t in body["trials"])


def test_leaderboard_ranks_families_against_the_baseline(
    api: httpx.Client, scored: dict[str, Any]
) -> None:
    response = api.get(
        f"/api/v1/studies/{scored['study_id']}/leaderboard", headers=scored["owner"].headers
    )
    assert response.status_code == 200, response.text
    board = response.json()
    assert board["baseline"] == "relu"
    rows = {r["family"]: r for r in board["rows"]}
    assert [r["family"] for r in board["rows"]] == ["smu", "relu", "gelu"]  # by best
    relu_mean = statistics.mean(VALUES["relu"])
    for family, values in VALUES.items():
        row = rows[family]
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(statistics.mean(values))
        assert row["best"] == pytest.approx(max(values))
        assert row["mean_test_acc"] == pytest.approx(statistics.mean(values) - 0.02)
        assert row["delta_vs_baseline"] == pytest.approx(statistics.mean(values) - relu_mean)
        if len(values) > 1:
            assert row["std"] == pytest.approx(statistics.stdev(values))
        else:
            assert row["std"] is None
    assert rows["relu"]["is_baseline"] and not rows["smu"]["is_baseline"]
    assert rows["smu"]["best_number"] is not None
    # Added fields (the earlier ones keep their meaning): how the rows are ranked, and the
    # dashboard's columns.
    assert board["ranked_by"] == "best" and "best" in board["ranking"]
    assert [r["rank"] for r in board["rows"]] == [1, 2, 3]
    relu_best = max(VALUES["relu"])
    for family, values in VALUES.items():
        row = rows[family]
        assert row["median"] == pytest.approx(statistics.median(values))
        assert row["delta_best_vs_baseline"] == pytest.approx(max(values) - relu_best)
        assert row["best_test_acc"] == pytest.approx(max(values) - 0.02)
    assert rows["smu"]["states"]["pruned"] == 1 and rows["relu"]["states"]["running"] == 1


def test_leaderboard_as_csv_and_latex(client: httpx.Client, scored: dict[str, Any]) -> None:
    url = f"/api/v1/studies/{scored['study_id']}/leaderboard"
    as_csv = client.get(url, params={"format": "csv"}, headers=scored["owner"].headers)
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [r["family"] for r in rows] == ["smu", "relu", "gelu"]
    latex = client.get(url, params={"format": "latex"}, headers=scored["owner"].headers)
    assert latex.headers["content-type"].startswith("application/x-latex")
    text = latex.text
    assert text.startswith(r"\begin{tabular}") and r"\bottomrule" in text
    assert r"$\Delta$ vs relu" in text
    smu_line = next(line for line in text.splitlines() if line.startswith("smu &"))
    # Percent and points, mean ± the 95 % interval's half-width (two trainings: wide).
    assert smu_line.startswith(r"smu & 2 & 84.00 $\pm$ 12.71 & 85.00 & +3.00 $\pm$ ")
    assert "std" not in text and "0.0000" not in text


def test_api_and_dashboard_rank_families_the_same_way(client: httpx.Client, store: Store) -> None:
    # Families whose best and mean disagree: the API ranked by mean (steady first), the
    # dashboard by best (spiky first). Both now use one ranking: best, then mean, then name.
    owner = new_person(store, "rank")
    study, _ = store.studies.create(
        owner.info,
        spec(name="rank", n_trials=10, activations={"relu": {}, "elu": {}, "gelu": {}}),
    )
    values = {"elu": [0.90, 0.60, 0.66], "relu": [0.80, 0.80], "gelu": [0.70, 0.80]}
    for family, family_values in values.items():
        for value in family_values:
            add_trial(store, study.id, family=family, value=value)
    add_trial(store, study.id, family="swish", value=None, state="failed")
    api_board = client.get(f"/api/v1/studies/{study.id}/leaderboard", headers=owner.headers).json()
    dash_board = client.get(
        f"/dashboard/data/studies/{study.id}/summary", headers=owner.headers
    ).json()
    # relu and gelu share their best (0.80): the higher mean (relu) goes first.
    expected = ["elu", "relu", "gelu"]
    assert [r["family"] for r in api_board["rows"]] == expected
    assert [r["family"] for r in dash_board["families"]] == [*expected, "swish"]  # no result: last
    assert api_board["ranked_by"] == dash_board["ranked_by"] == "best"
    assert dash_board["headline"]["family"] == "elu"
    for api_row, dash_row in zip(api_board["rows"], dash_board["families"], strict=False):
        assert api_row["rank"] == dash_row["rank"]
        # The dashboard's mean is the evidence's: over trainings (the API's `mean` is over trials).
        assert (api_row["best"], api_row["search"]["mean"], api_row["median"]) == (
            dash_row["best"], dash_row["mean"], dash_row["median"]
        )  # fmt: skip
        assert api_row["verdict"] == dash_row["verdict"]
    csv_rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(
                    f"/api/v1/studies/{study.id}/leaderboard",
                    params={"format": "csv"},
                    headers=owner.headers,
                ).text
            )
        )
    )
    assert [r["family"] for r in csv_rows] == expected
    dash_csv = client.get(
        f"/dashboard/data/studies/{study.id}/leaderboard.csv", headers=owner.headers
    ).text
    assert [r["family"] for r in csv.DictReader(io.StringIO(dash_csv))] == expected  # the API's


def test_leaderboard_without_results_is_empty(client: httpx.Client, store: Store) -> None:
    owner = new_person(store, "empty")
    study, _ = store.studies.create(owner.info, spec())
    board = client.get(f"/api/v1/studies/{study.id}/leaderboard", headers=owner.headers).json()
    assert board["rows"] == [] and board["baseline"] == "relu"
    assert (
        client.get("/api/v1/studies/999999/leaderboard", headers=owner.headers).status_code == 404
    )
