"""The leaderboard's evidence (trainings, intervals, Holm-adjusted Welch tests, verdicts) and the
confirm action, through the API on SQLite and PostgreSQL.

Trainings are rows of the ledger (as_trainings) inserted as a worker leaves them; runs come
through the worker-facing store API. Every number is checked against scipy.stats.
"""

from __future__ import annotations

import csv
import io
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import optuna
import pytest
from scipy import stats
from sqlalchemy import select, update

from service.db import Run, Training, TrainingState, utcnow
from service.store import Store
from service.store import confirm as confirm_module
from service.store.confirm import create_confirm_study
from tests.service.conftest import Person, add_trial, new_person, spec
from tests.service.test_evidence_stats import ELU, GELU, PAU, RELU, SMU

pytestmark = pytest.mark.timeout(300)

ACTIVATIONS = {"relu": {}, "smu": {"alpha": {"low": 0.0, "high": 0.5}}, "gelu": {}, "pau": {}}


def run_id(store: Store, study_id: int, number: int) -> int:
    """The run of a trial number."""
    with store.db.session() as session:
        found = session.scalar(
            select(Run.id).where(Run.study_id == study_id, Run.trial_number == number)
        )
    assert found is not None
    return int(found)


def add_training(
    store: Store,
    study_id: int,
    family: str,
    val: float,
    test: float | None,
    *,
    run: int | None = None,
    seed: int = 0,
    key: str | None = None,
    state: str = TrainingState.COMPLETE,
) -> str:
    """One row of the ledger, as a worker leaves it; returns its key."""
    key = key or uuid.uuid4().hex
    with store.db.session() as session:
        session.add(
            Training(
                study_id=study_id, run_id=run, key=key, config_key=f"{family}-config",
                lock_key=None, family=family, seed=seed, state=state, val_acc=val,
                test_acc=test, data_checksum="sha256:data", code_version="test",
                created_at=utcnow(), finished_at=utcnow(),
            )
        )  # fmt: skip
    return key


def trained(
    store: Store, study_id: int, family: str, vals: list[float], params: dict[str, Any]
) -> int:
    """One complete trial of `family` whose seeds are trainings with these accuracies."""
    number = add_trial(store, study_id, family=family, params=params, value=sum(vals) / len(vals))
    run = run_id(store, study_id, number)
    for seed, val in enumerate(vals):
        add_training(store, study_id, family, val, val - 0.01, run=run, seed=seed)
    return run


def leaderboard(api: httpx.Client, owner: Person, study_id: int, **params: str) -> Any:
    response = api.get(
        f"/api/v1/studies/{study_id}/leaderboard", params=params, headers=owner.headers
    )
    assert response.status_code == 200, response.text
    return response.json() if not params else response.text


def check_interval(c: dict[str, Any], values: list[float]) -> None:
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=stats.tmean(values), scale=stats.sem(values)
    )
    assert c["mean"] == pytest.approx(stats.tmean(values), rel=1e-12)
    assert (c["ci_low"], c["ci_high"]) == (
        pytest.approx(low, rel=1e-9),
        pytest.approx(high, rel=1e-9),
    )


def check_welch(c: dict[str, Any], values: list[float], base: list[float], p_holm: float) -> None:
    expected = stats.ttest_ind(values, base, equal_var=False)
    ci = expected.confidence_interval(0.95)
    assert c["delta"] == pytest.approx(stats.tmean(values) - stats.tmean(base), rel=1e-9)
    assert c["delta_ci_low"] == pytest.approx(ci.low, rel=1e-9)
    assert c["delta_ci_high"] == pytest.approx(ci.high, rel=1e-9)
    assert c["p_raw"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert c["p_value"] == pytest.approx(p_holm, rel=1e-9)


# -- a search study ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(store: Store) -> dict[str, Any]:
    """relu trained 6 seeds (one of them recorded twice), smu two configurations, gelu once."""
    owner = new_person(store, "evidence")
    study, _ = store.studies.create(
        owner.info, spec(name="search", n_trials=20, baselines=["relu"], activations=ACTIVATIONS)
    )
    relu_run = trained(store, study.id, "relu", RELU, {"activation": "relu"})
    with store.db.session() as session:  # an identical repeat: the same key, complete twice
        first = session.scalars(select(Training).where(Training.run_id == relu_run)).first()
        assert first is not None
        repeat_key, repeat_val = first.key, first.val_acc
    add_training(store, study.id, "relu", repeat_val or 0.0, None, key=repeat_key, run=relu_run)
    add_training(store, study.id, "relu", 0.99, 0.99, run=relu_run, state=TrainingState.FAILED)
    trained(store, study.id, "smu", SMU[:3], {"activation": "smu", "smu.alpha": 0.2})
    trained(store, study.id, "smu", SMU[3:], {"activation": "smu", "smu.alpha": 0.1})
    trained(store, study.id, "gelu", ELU, {"activation": "gelu"})
    return {"id": study.id, "owner": owner}


def test_search_rows_count_trainings_and_say_promising_at_most(
    api: httpx.Client, searched: dict[str, Any]
) -> None:
    board = leaderboard(api, searched["owner"], searched["id"])
    rows = {r["family"]: r for r in board["rows"]}
    assert board["confirmation_study_id"] is None and board["confirmed_by"] == []
    assert board["alpha"] == 0.05 and "trainings" in board["evidence"]
    # Trials as before; trainings: seeds of every trial, the identical repeat and the failed
    # training not counted.
    assert (rows["relu"]["n"], rows["smu"]["n"], rows["gelu"]["n"]) == (1, 2, 1)
    assert (rows["relu"]["trainings"], rows["smu"]["trainings"], rows["gelu"]["trainings"]) == (
        6,
        5,
        1,
    )
    relu, smu, gelu = rows["relu"]["search"], rows["smu"]["search"], rows["gelu"]["search"]
    assert relu["metric"] == "val_acc" and relu["stage"] == "search"
    check_interval(relu, RELU)
    check_interval(smu, SMU)
    raw = stats.ttest_ind(SMU, RELU, equal_var=False).pvalue
    check_welch(smu, SMU, RELU, raw)  # the only family tested: Holm over one p-value
    assert smu["test_mean"] == pytest.approx(stats.tmean(SMU) - 0.01)
    assert (relu["verdict"], smu["verdict"], gelu["verdict"]) == (
        "baseline",
        "promising",
        "too few runs",
    )
    assert gelu["ci_low"] is None and gelu["p_value"] is None and gelu["delta_ci_low"] is None
    assert rows["smu"]["confirmation"] is None and rows["smu"]["verdict"] == "promising"


def test_search_csv_and_latex_show_intervals_and_mark_promising(
    api: httpx.Client, searched: dict[str, Any]
) -> None:
    owner, sid = searched["owner"], searched["id"]
    rows = {
        r["family"]: r
        for r in csv.DictReader(io.StringIO(leaderboard(api, owner, sid, format="csv")))
    }
    assert rows["smu"]["trainings"] == "5" and rows["smu"]["verdict"] == "promising"
    assert float(rows["smu"]["search_ci_low"]) == pytest.approx(
        stats.t.interval(0.95, 4, loc=stats.tmean(SMU), scale=stats.sem(SMU))[0]
    )
    assert rows["gelu"]["search_verdict"] == "too few runs" and rows["gelu"]["search_p_holm"] == ""
    assert rows["smu"]["confirm_verdict"] == "" and rows["relu"]["verdict"] == "baseline"
    latex = leaderboard(api, owner, sid, format="latex")
    smu_line = next(line for line in latex.splitlines() if line.startswith("smu &"))
    half = 100 * stats.sem(SMU) * stats.t.ppf(0.975, 4)
    assert smu_line.startswith(rf"smu & 5 & {100 * stats.tmean(SMU):.2f} $\pm$ {half:.2f} & ")
    assert smu_line.endswith(r"$^{\dagger}$ \\")
    assert r"gelu & 1 & 81.99 & 81.99 & too few runs \\" in latex
    assert "promising" in latex and "0.0000" not in latex and "std" not in latex


def test_runs_stored_before_the_ledger_stand_for_their_trainings(
    api: httpx.Client, store: Store
) -> None:
    owner = new_person(store, "legacy")
    study, _ = store.studies.create(
        owner.info, spec(name="legacy", n_trials=10, baselines=["relu"], seeds=3)
    )
    for value in (0.80, 0.80, 0.80, 0.82):  # three identical repeats of one training
        add_trial(store, study.id, family="relu", value=value)
    reused = add_trial(store, study.id, family="relu", value=0.95)
    several = add_trial(store, study.id, family="smu", value=0.83)
    seeds = [{"seed": 7 + i, "val_acc": v, "test_acc": v - 0.01} for i, v in enumerate(SMU[:3])]
    with store.db.session() as session:
        session.execute(
            update(Run).where(Run.id == run_id(store, study.id, reused)).values(reused_from_run=1)
        )
        session.execute(
            update(Run)
            .where(Run.id == run_id(store, study.id, several))
            .values(value_std=0.002, record={"seeds": seeds})
        )
    rows = {r["family"]: r for r in leaderboard(api, owner, study.id)["rows"]}
    # 0.80 once, 0.82; not the reused run.
    assert rows["relu"]["n"] == 5 and rows["relu"]["trainings"] == 2
    assert rows["relu"]["search"]["mean"] == pytest.approx(0.81)
    assert rows["smu"]["trainings"] == 3
    check_interval(rows["smu"]["search"], SMU[:3])
    # A study that went on after the upgrade: the ledger's trainings join the older runs'.
    trained(store, study.id, "relu", [0.84, 0.86], {"activation": "relu"})
    relu = {r["family"]: r for r in leaderboard(api, owner, study.id)["rows"]}["relu"]
    assert relu["n"] == 6 and relu["trainings"] == 4
    check_interval(relu["search"], [0.80, 0.82, 0.84, 0.86])
    assert relu["search"]["test_mean"] == pytest.approx(0.82)


def test_a_key_recorded_twice_counts_once_with_its_first_rows_results(
    api: httpx.Client, store: Store
) -> None:
    """Repeats of one key whose results differ (a nondeterministic kernel): the first row of the
    key counts, wherever its id falls among the other keys' rows."""
    owner = new_person(store, "first-of-key")
    study, _ = store.studies.create(owner.info, spec(name="first-of-key", baselines=["relu"]))
    run = run_id(store, study.id, add_trial(store, study.id, family="relu", value=0.8))
    late = add_training(store, study.id, "relu", 0.70, 0.69, run=run, key="b" * 64)
    add_training(store, study.id, "relu", 0.80, 0.79, run=run, key="a" * 64)
    add_training(store, study.id, "relu", 0.90, 0.89, run=run, key=late)  # the repeat
    add_training(store, study.id, "relu", 0.95, 0.95, run=run, key="a" * 64)  # another
    add_training(store, study.id, "relu", 0.99, 0.99, run=run, key="c" * 64, state="failed")
    relu = {r["family"]: r for r in leaderboard(api, owner, study.id)["rows"]}["relu"]
    assert relu["trainings"] == 2
    check_interval(relu["search"], [0.70, 0.80])
    assert relu["search"]["test_mean"] == pytest.approx(0.74)


# -- confirm -------------------------------------------------------------------------------------
def test_confirm_refuses_what_it_cannot_do(
    api: httpx.Client, store: Store, searched: dict[str, Any], bob: Person
) -> None:
    owner, sid = searched["owner"], searched["id"]
    empty, _ = store.studies.create(owner.info, spec(name="nothing yet"))
    response = api.post(f"/api/v1/studies/{empty.id}/confirm", json={}, headers=owner.headers)
    assert response.status_code == 409 and "no complete trial" in response.json()["detail"]
    assert (
        api.post("/api/v1/studies/999999/confirm", json={}, headers=owner.headers).status_code
        == 404
    )
    refused = api.post(f"/api/v1/studies/{sid}/confirm", json={}, headers=bob.headers)
    assert refused.status_code == 403
    for body in ({"top": 0}, {"seeds": 1}, {"top": 21}, {"seeds": 101}, {"top": "2"}, {"k": 1}):
        response = api.post(f"/api/v1/studies/{sid}/confirm", json=body, headers=owner.headers)
        assert response.status_code == 422, (body, response.text)
    assert store.studies.get(sid).confirms_study_id is None


def test_confirm_creates_a_linked_study_of_the_best_configurations_with_fresh_seeds(
    api: httpx.Client, store: Store, admin: Person
) -> None:
    owner = new_person(store, "confirming")
    source, _ = store.studies.create(
        owner.info,
        spec(
            name="tuned", n_trials=20, baselines=["gelu"], activations=ACTIVATIONS, seed=3, seeds=2
        ),
    )
    for alpha, value in ((0.1, 0.80), (0.2, 0.85), (0.2, 0.85), (0.3, 0.83), (0.4, 0.70)):
        add_trial(
            store,
            source.id,
            family="smu",
            params={"activation": "smu", "smu.alpha": alpha},
            value=value,
        )
    add_trial(store, source.id, family="gelu", params={"activation": "gelu"}, value=0.81)
    add_trial(
        store, source.id, family="pau", params={"activation": "pau"}, value=0.5, state="failed"
    )
    add_training(store, source.id, "gelu", 0.81, 0.80, seed=41)  # a reseeded training: seed 41

    response = api.post(
        f"/api/v1/studies/{source.id}/confirm", json={"top": 2, "seeds": 3}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == f"/api/v1/studies/{created['id']}"
    assert created["owner"] == admin.name and created["n_trials"] == 3
    detail = api.get(f"/api/v1/studies/{created['id']}", headers=owner.headers).json()
    confirm_spec = detail["spec"]
    # The baseline's configuration first, then smu's two best (0.2 once, although tried twice).
    assert confirm_spec["enqueue"] == [
        {"activation": "gelu"},
        {"activation": "smu", "smu.alpha": 0.2},
        {"activation": "smu", "smu.alpha": 0.3},
    ]
    assert confirm_spec["name"] == "tuned — confirm" and confirm_spec["baselines"] == []
    assert (confirm_spec["seeds"], confirm_spec["seed"]) == (3, 42)  # past the ledger's 41
    assert (confirm_spec["repeats"], confirm_spec["reuse"]) == ("reseed", "study")
    assert confirm_spec["sampler"]["name"] == "random" and confirm_spec["pruner"]["name"] == "none"
    assert f"study {source.id}" in confirm_spec["description"]
    # Linked both ways.
    assert detail["confirms"]["id"] == source.id and detail["confirms"]["name"] == "tuned"
    assert detail["confirms"]["dashboard"] == f"/studies/{source.id}"
    source_detail = api.get(f"/api/v1/studies/{source.id}", headers=owner.headers).json()
    assert [s["id"] for s in source_detail["confirmed_by"]] == [created["id"]]
    assert source_detail["confirms"] is None
    # Every trial is enqueued in its Optuna study.
    optuna_study = optuna.load_study(
        study_name=store.studies.get(created["id"]).optuna_name, storage=store.db.optuna
    )
    waiting = [t.params for t in optuna_study.get_trials(states=(optuna.trial.TrialState.WAITING,))]
    assert len(waiting) == 3
    # A second confirm takes seeds past the first's; a confirm study is not confirmed again.
    again = api.post(
        f"/api/v1/studies/{source.id}/confirm", json={"top": 1, "seeds": 2}, headers=owner.headers
    )
    assert again.status_code == 201, again.text
    second = api.get(f"/api/v1/studies/{again.json()['id']}", headers=owner.headers).json()
    assert second["spec"]["seed"] == 45 and second["spec"]["n_trials"] == 2
    nested = api.post(f"/api/v1/studies/{created['id']}/confirm", json={}, headers=admin.headers)
    assert (
        nested.status_code == 409
        and f"confirm study {source.id} instead" in nested.json()["detail"]
    )


def test_a_baseline_without_a_complete_trial_is_confirmed_at_its_defaults(
    api: httpx.Client, store: Store
) -> None:
    owner = new_person(store, "defaults")
    source, _ = store.studies.create(owner.info, spec(name="no-base", baselines=["relu"]))
    add_trial(
        store, source.id, family="smu", params={"activation": "smu", "smu.alpha": 0.25}, value=0.8
    )
    response = api.post(
        f"/api/v1/studies/{source.id}/confirm", json={"seeds": 2}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    confirm_spec = api.get(
        f"/api/v1/studies/{response.json()['id']}", headers=owner.headers
    ).json()["spec"]
    assert confirm_spec["baselines"] == ["relu"] and confirm_spec["n_trials"] == 2
    assert confirm_spec["enqueue"] == [{"activation": "smu", "smu.alpha": 0.25}]


@pytest.fixture(scope="module")
def confirmed(store: Store) -> dict[str, Any]:
    """A search study (baseline gelu) and its confirm study, whose fresh seeds have trained."""
    owner = new_person(store, "confirmed")
    source, _ = store.studies.create(
        owner.info, spec(name="src", n_trials=30, baselines=["gelu"], activations=ACTIVATIONS)
    )
    for family, values in {
        "gelu": RELU[:2],
        "smu": SMU[:2],
        "relu": GELU[:2],
        "pau": PAU[:2],
    }.items():
        params = {"activation": family, **({"smu.alpha": 0.2} if family == "smu" else {})}
        trained(store, source.id, family, values, params)
    confirm = create_confirm_study(store.studies, owner.info, source.id, top=1, seeds=5)
    # The confirm study's fresh seeds, judged on test accuracy: the same samples as the
    # statistics tests, gelu standing in for the baseline.
    tests = {"gelu": RELU, "smu": SMU, "relu": GELU, "pau": PAU, "elu": ELU}
    for family, values in tests.items():
        for seed, value in enumerate(values):
            add_training(store, confirm.id, family, value + 0.005, value, seed=100 + seed)
    return {"source": source.id, "confirm": confirm.id, "owner": owner, "tests": tests}


def _holm(raw: dict[str, float]) -> dict[str, float]:
    names = sorted(raw, key=raw.__getitem__)
    out, running = {}, 0.0
    for i, name in enumerate(names):
        running = max(running, min(1.0, (len(names) - i) * raw[name]))
        out[name] = running
    return out


def test_a_confirmed_study_gets_better_worse_and_no_evidence_from_test_accuracy(
    api: httpx.Client, confirmed: dict[str, Any]
) -> None:
    owner, tests = confirmed["owner"], confirmed["tests"]
    board = leaderboard(api, owner, confirmed["source"])
    assert board["baseline"] == "gelu"
    assert board["confirmation_study_id"] == confirmed["confirm"]
    assert board["confirmed_by"] == [confirmed["confirm"]] and board["confirms"] is None
    rows = {r["family"]: r for r in board["rows"]}
    raw = {
        f: float(stats.ttest_ind(tests[f], tests["gelu"], equal_var=False).pvalue)
        for f in ("smu", "relu", "pau")
    }
    adjusted = _holm(raw)
    for family in ("smu", "relu", "pau"):
        c = rows[family]["confirmation"]
        assert (c["stage"], c["metric"], c["study_id"]) == (
            "confirm",
            "test_acc",
            confirmed["confirm"],
        )
        assert c["trainings"] == len(tests[family])
        check_interval(c, tests[family])
        check_welch(c, tests[family], tests["gelu"], adjusted[family])
        assert c["val_mean"] == pytest.approx(stats.tmean(tests[family]) + 0.005)
        assert rows[family]["search"]["trainings"] == 2  # the search's own, beside
    verdicts = {family: rows[family]["verdict"] for family in rows}
    assert verdicts == {"smu": "better", "relu": "no evidence", "pau": "worse", "gelu": "baseline"}


def test_the_confirm_study_judges_itself_against_its_sources_baseline(
    client: httpx.Client, store: Store, confirmed: dict[str, Any]
) -> None:
    # In-process only: it adds trials to the module's confirm study (once per backend).
    api, owner, confirm_id = client, confirmed["owner"], confirmed["confirm"]
    assert store.studies.get(confirm_id).spec["baselines"] == []  # gelu's best is enqueued
    for family in ("gelu", "smu"):  # trials of its own (that trained the seeds above)
        number = add_trial(store, confirm_id, family=family, value=0.8)
        with store.db.session() as session:
            session.execute(
                update(Training)
                .where(Training.study_id == confirm_id, Training.family == family)
                .values(run_id=run_id(store, confirm_id, number))
            )
    board = leaderboard(api, owner, confirm_id)
    assert board["baseline"] == "gelu" and board["confirms"] == confirmed["source"]
    assert board["confirmation_study_id"] == confirm_id
    rows = {r["family"]: r for r in board["rows"]}
    assert rows["smu"]["verdict"] == "better" and rows["gelu"]["verdict"] == "baseline"
    latex = leaderboard(api, owner, confirm_id, format="latex")
    assert r"Test acc.\ (\%)" in latex and "fresh seeds" in latex
    smu_line = next(line for line in latex.splitlines() if line.startswith("smu &"))
    assert smu_line.endswith(r"$^{*}$ \\") and smu_line.startswith("smu & 5 & ")
    rows_csv = {
        r["family"]: r
        for r in csv.DictReader(io.StringIO(leaderboard(api, owner, confirm_id, format="csv")))
    }
    assert rows_csv["smu"]["confirm_verdict"] == "better"
    assert rows_csv["smu"]["confirm_study_id"] == str(confirm_id)


def test_two_confirm_requests_at_once_get_disjoint_seeds(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both plan before either stores its study (held at a barrier): the second one's insert
    finds its seeds taken, plans again and gets the next fresh ones."""
    owner = new_person(store, "racing-confirms")
    source, _ = store.studies.create(owner.info, spec(name="raced", n_trials=5, seed=0, seeds=2))
    add_trial(store, source.id, family="relu", params={"activation": "relu"}, value=0.8)
    barrier = threading.Barrier(2, timeout=30)
    planned = threading.local()
    original = confirm_module.plan_confirm

    def plan_then_wait(*args: Any, **kwargs: Any) -> Any:
        plan = original(*args, **kwargs)
        if not getattr(planned, "once", False):  # the first plan of each request only
            planned.once = True
            barrier.wait()
        return plan

    monkeypatch.setattr(confirm_module, "plan_confirm", plan_then_wait)
    with ThreadPoolExecutor(2) as pool:
        made = list(
            pool.map(
                lambda _: create_confirm_study(
                    store.studies, owner.info, source.id, top=1, seeds=3
                ),
                range(2),
            )
        )
    ranges = sorted((s.spec["seed"], s.spec["seed"] + s.spec["seeds"] - 1) for s in made)
    assert ranges == [(2, 4), (5, 7)]  # one past the source's seeds 0..1, then past the first
