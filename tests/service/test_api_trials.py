"""Trials over the API: filters, every sort, offset and cursor pagination, detail, retries."""

from __future__ import annotations

import math
from typing import Any

import httpx
import optuna
import pytest

from service.store import Store
from tests.service.conftest import Person, add_trial, new_person, spec

pytestmark = pytest.mark.timeout(300)

SORTS = ["number", "value", "test_acc", "duration_s", "img_per_s", "epochs_done", "finished"]


@pytest.fixture(scope="module")
def populated(store: Store) -> dict[str, Any]:
    """A study with a mix of families, states, params and values (built once per backend)."""
    owner = new_person(store, "trials")
    study, _ = store.studies.create(owner.info, spec(name="mix", n_trials=14))
    made = []
    for i in range(12):
        family = ("relu", "smu", "pau")[i % 3]
        state = "complete" if i % 4 else ("pruned", "failed", "complete")[i // 4 % 3]
        value = round(0.5 + 0.03 * ((i * 7) % 12), 4) if state == "complete" else None
        params: dict[str, Any] = {"activation": family}
        if family == "smu":
            params["smu.alpha"] = round(0.05 * i, 3)
        if family == "pau":
            params["pau.init_target"] = "gelu"
        number = add_trial(
            store, study.id, family=family, params=params, value=value, state=state,
            epochs=1 + i % 3, record={"img_per_s": 100.0 + i, "peak_memory_bytes": 1000 * (i % 5)},
        )  # fmt: skip
        made.append(
            {"number": number, "family": family, "state": state, "value": value, "params": params}
        )
    add_trial(store, study.id, family="relu", value=None, state="running")
    return {"study_id": study.id, "owner": owner, "made": made}


def get_trials(api: httpx.Client, person: Person, study_id: int, **params: Any) -> dict[str, Any]:
    response = api.get(f"/api/v1/studies/{study_id}/trials", params=params, headers=person.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_filters_by_state_family_value_and_param(
    api: httpx.Client, populated: dict[str, Any]
) -> None:
    sid, who, made = populated["study_id"], populated["owner"], populated["made"]
    everything = get_trials(api, who, sid, limit=500)
    assert everything["total"] == 13 and len(everything["items"]) == 13

    complete = get_trials(api, who, sid, state="complete")
    assert complete["total"] == sum(m["state"] == "complete" for m in made)
    two = get_trials(api, who, sid, state=["pruned", "failed"])
    assert {t["state"] for t in two["items"]} == {"pruned", "failed"}

    smu = get_trials(api, who, sid, family="smu")
    assert smu["total"] == sum(m["family"] == "smu" for m in made)
    assert all(t["family"] == "smu" for t in smu["items"])

    ranged = get_trials(api, who, sid, value_min=0.6, value_max=0.75)
    expected = {m["number"] for m in made if m["value"] is not None and 0.6 <= m["value"] <= 0.75}
    assert {t["number"] for t in ranged["items"]} == expected

    alpha = get_trials(api, who, sid, param="smu.alpha:0.1:0.4")
    expected = {m["number"] for m in made if 0.1 <= m["params"].get("smu.alpha", -1) <= 0.4}
    assert expected and {t["number"] for t in alpha["items"]} == expected
    open_low = get_trials(api, who, sid, param="smu.alpha::0.2")
    assert {t["number"] for t in open_low["items"]} == {
        m["number"] for m in made if m["params"].get("smu.alpha", 1) <= 0.2
    }
    # A categorical parameter never matches a numeric range (and never errors).
    assert get_trials(api, who, sid, param="pau.init_target:0:1")["total"] == 0
    # A range whose low is above its high is refused (test_api_input_limits.py), not empty.
    reversed_range = {"param": "smu.alpha:0.4:0.1"}
    url = f"/api/v1/studies/{sid}/trials"
    assert api.get(url, params=reversed_range, headers=who.headers).status_code == 422


def _key(item: dict[str, Any], sort: str) -> Any:
    field = {"finished": "finished_at"}.get(sort, sort)
    return item[field]


@pytest.mark.parametrize("sort", SORTS)
def test_every_sort_orders_with_unfinished_last(
    client: httpx.Client, populated: dict[str, Any], sort: str
) -> None:
    sid, who = populated["study_id"], populated["owner"]
    for descending in (False, True):
        key = f"-{sort}" if descending else sort
        items = get_trials(client, who, sid, sort=key, limit=500)["items"]
        values = [_key(t, sort) for t in items]
        present = [v for v in values if v is not None]
        assert values[: len(present)] == present, f"{key}: nulls must come last"
        assert present == sorted(present, reverse=descending), key


@pytest.mark.parametrize("sort", ["-value", "number", "test_acc", "-epochs_done", "finished"])
def test_cursor_walk_equals_offset_walk(
    api: httpx.Client, populated: dict[str, Any], sort: str
) -> None:
    sid, who = populated["study_id"], populated["owner"]
    by_offset = [
        t["run_id"]
        for off in range(0, 13, 4)
        for t in get_trials(api, who, sid, sort=sort, limit=4, offset=off)["items"]
    ]
    walked: list[int] = []
    cursor = None
    for _ in range(10):
        page = get_trials(
            api, who, sid, sort=sort, limit=4, **({"cursor": cursor} if cursor else {})
        )
        assert page["total"] == 13
        walked += [t["run_id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == by_offset
    assert len(set(walked)) == 13


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"param": "smu.alpha"}, "query.param"),
        ({"param": "smu.alpha:x:1"}, "query.param"),
        ({"param": "smu.alpha::"}, "query.param"),
        ({"sort": "colour"}, "query.sort"),
        ({"state": "sleeping"}, "query.state.0"),
        ({"limit": 0}, "query.limit"),
        ({"value_min": "nan"}, "query.value_min"),
    ],
)
def test_bad_filters_are_422_naming_the_parameter(
    client: httpx.Client, populated: dict[str, Any], params: dict[str, Any], loc: str
) -> None:
    response = client.get(
        f"/api/v1/studies/{populated['study_id']}/trials",
        params=params,
        headers=populated["owner"].headers,
    )
    assert response.status_code == 422, response.text
    assert loc in [e["loc"] for e in response.json()["detail"]]


def test_trial_detail_has_epochs_record_and_learned_parameters(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    record = {
        "val_acc": 0.8,
        "activation_params": {"final": {"layer1": {"alpha": [0.25]}}},
        "activation_curves": {"final": {"layer1": {"x": [0, 1], "f": [0, 1], "df": [1, 1]}}},
    }
    number = add_trial(
        store,
        study_id,
        family="smu",
        params={"activation": "smu", "smu.alpha": 0.3},
        value=0.8,
        epochs=3,
        record=record,
    )
    plain = add_trial(store, study_id, family="relu", value=0.7, record=None)

    trial = api.get(f"/api/v1/studies/{study_id}/trials/{number}", headers=alice.headers).json()
    assert trial["params"] == {"activation": "smu", "smu.alpha": 0.3}
    assert trial["config"] == {"activation": {"family": "smu"}}
    assert [e["epoch"] for e in trial["epochs"]] == [0, 1, 2]
    assert trial["epochs"][-1]["val_acc"] == pytest.approx(0.8)
    assert trial["activation_params"] == record["activation_params"]
    assert trial["curves"] == record["activation_curves"]
    assert trial["record"]["val_acc"] == 0.8
    assert [a["attempt"] for a in trial["attempts"]] == [1]

    bare = api.get(f"/api/v1/studies/{study_id}/trials/{plain}", headers=alice.headers).json()
    assert bare["record"] is None and bare["activation_params"] is None and bare["curves"] is None


def test_trial_detail_shows_the_retry_history(
    client: httpx.Client, alice: Person, store: Store
) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    optuna_study = optuna.load_study(study_name=f"actsearch-{study_id}", storage=store.db.optuna)
    lost = store.runs.claim_next("w-dies", [study_id])
    assert lost is not None
    first_try = optuna_study.ask()
    store.runs.attach_trial(
        lost.run_id, trial_id=first_try._trial_id, number=first_try.number,
        params={"activation": "relu"}, family="relu", config=None,
    )  # fmt: skip
    store.runs.hand_back(lost.run_id, "worker stopped")  # the worker went away; a retry is queued
    retry = store.runs.claim_next("w-lives", [study_id])
    assert retry is not None and retry.retry_of == lost.run_id
    second_try = optuna_study.ask()
    store.runs.attach_trial(
        retry.run_id, trial_id=second_try._trial_id, number=second_try.number,
        params={"activation": "relu"}, family="relu", config=None,
    )  # fmt: skip
    store.runs.finish(retry.run_id, state="complete", value=0.75)
    assert (first_try.number, second_try.number) == (0, 1)

    trial = client.get(f"/api/v1/studies/{study_id}/trials/1", headers=alice.headers).json()
    assert trial["attempt"] == 2 and trial["retry_of"] == lost.run_id
    history = trial["attempts"]
    assert [(a["attempt"], a["state"]) for a in history] == [(1, "failed"), (2, "complete")]
    assert history[0]["failure_reason"] == "worker_lost" and history[0]["worker_id"] == "w-dies"
    first = client.get(f"/api/v1/studies/{study_id}/trials/0", headers=alice.headers).json()
    assert [a["run_id"] for a in first["attempts"]] == [a["run_id"] for a in history]
    listed = client.get(f"/api/v1/studies/{study_id}/trials", headers=alice.headers).json()
    assert listed["total"] == 2  # each attempt is a row
    progress = client.get(f"/api/v1/studies/{study_id}", headers=alice.headers).json()["progress"]
    assert progress["failed"] == 0 and progress["complete"] == 1  # the lost attempt used no budget


def test_unknown_trial_and_study_are_404(api: httpx.Client, populated: dict[str, Any]) -> None:
    who = populated["owner"]
    missing = api.get(f"/api/v1/studies/{populated['study_id']}/trials/4242", headers=who.headers)
    assert missing.status_code == 404 and "4242" in missing.json()["detail"]
    assert api.get("/api/v1/studies/999999/trials", headers=who.headers).status_code == 404


def test_metrics_are_finite_json(client: httpx.Client, alice: Person, store: Store) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    add_trial(store, study_id, value=0.5)
    items = client.get(f"/api/v1/studies/{study_id}/trials", headers=alice.headers).json()["items"]
    assert all(v is None or math.isfinite(v) for t in items for v in (t["value"], t["duration_s"]))


def test_peak_memory_above_2_gib_is_stored(api: httpx.Client, alice: Person, store: Store) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    record = {"img_per_s": 30000.0, "peak_memory_bytes": 34 * 2**30}  # an H100 ResNet-18 trial
    number = add_trial(store, study_id, value=0.9, record=record)
    trial = api.get(f"/api/v1/studies/{study_id}/trials/{number}", headers=alice.headers).json()
    assert trial["peak_mem_bytes"] == 34 * 2**30
