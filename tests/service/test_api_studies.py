"""Studies over the API: submit (JSON/YAML, idempotent), list, detail, lifecycle, delete, clone."""

from __future__ import annotations

import statistics
import uuid

import httpx
import optuna
import pytest
import yaml
from sqlalchemy import update

from search_space.spec import parse_spec
from service.db import Study
from service.store import Store
from tests.service.conftest import Person, add_trial, spec

pytestmark = pytest.mark.timeout(300)


def submit(
    api: httpx.Client, person: Person, body: dict | None = None, **headers: str
) -> httpx.Response:
    return api.post("/api/v1/studies", json=body or spec(), headers={**person.headers, **headers})


def test_submit_json_answers_201_with_id_status_and_links(api: httpx.Client, alice: Person) -> None:
    response = submit(api, alice, spec(name="first", description="relu vs smu"))
    assert response.status_code == 201, response.text
    study = response.json()
    assert study["status"] == "queued"
    assert study["owner"] == alice.name
    assert study["progress"] == {
        "budget": 4, "complete": 0, "pruned": 0, "failed": 0, "cancelled": 0, "running": 0,
        "queued": 4,
    }  # fmt: skip
    assert study["links"]["self"] == f"/api/v1/studies/{study['id']}"
    assert response.headers["location"] == study["links"]["self"]
    detail = api.get(study["links"]["self"], headers=alice.headers).json()
    assert detail["name"] == "first" and detail["description"] == "relu vs smu"
    assert detail["spec"]["n_trials"] == 4


@pytest.mark.parametrize("content_type", ["application/yaml", "text/plain", "application/x-yaml"])
def test_submit_yaml_text(client: httpx.Client, alice: Person, content_type: str) -> None:
    body = yaml.safe_dump(spec(name="from-yaml"))
    response = client.post(
        "/api/v1/studies", content=body, headers={**alice.headers, "Content-Type": content_type}
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "from-yaml"


def test_baselines_are_enqueued_in_optuna(
    client: httpx.Client, alice: Person, store: Store
) -> None:
    study = submit(client, alice, spec(baselines=["relu"])).json()
    optuna_study = optuna.load_study(study_name=f"actsearch-{study['id']}", storage=store.db.optuna)
    waiting = optuna_study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting and waiting[0].system_attrs["fixed_params"].get("activation") == "relu"


def test_idempotency_key_replays_and_refuses_another_spec(api: httpx.Client, alice: Person) -> None:
    key = uuid.uuid4().hex
    first = submit(api, alice, spec(name="idem"), **{"Idempotency-Key": key})
    again = submit(api, alice, spec(name="idem"), **{"Idempotency-Key": key})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    other = submit(api, alice, spec(name="idem", n_trials=9), **{"Idempotency-Key": key})
    assert other.status_code == 409
    assert key in other.json()["detail"] and str(first.json()["id"]) in other.json()["detail"]


def test_invalid_spec_is_422_naming_the_field(api: httpx.Client, alice: Person) -> None:
    bad = spec(activations={"relu": {}, "smu": {"alpha": {"low": 0.5, "high": 0.1}}})
    response = submit(api, alice, bad)
    assert response.status_code == 422
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    locs = [error["loc"] for error in body["detail"]]
    assert any(loc.startswith("activations.smu.alpha") for loc in locs), body


@pytest.mark.parametrize(
    ("section", "given", "loc", "users"),
    [
        ("pruner", {"name": "median", "percentile": 10.0}, "pruner.percentile", "percentile"),
        ("sampler", {"name": "random", "constant_liar": False}, "sampler.constant_liar", "tpe"),
        ("sampler", {"name": "grid", "n_startup_trials": 3}, "sampler.n_startup_trials", "tpe"),
        (
            "pruner",
            {"name": "median", "reduction_factor": 4},
            "pruner.reduction_factor",
            "hyperband",
        ),
    ],
)
def test_a_field_the_sampler_or_pruner_ignores_is_422_naming_it(
    api: httpx.Client, alice: Person, section: str, given: dict, loc: str, users: str
) -> None:
    body = spec(**{section: given})
    if given["name"] == "grid":
        body["activations"] = {"relu": {}, "smu": {"alpha": {"choices": [0.1, 0.2]}}}
    response = submit(api, alice, body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    field = loc.split(".")[1]
    assert error["loc"] == loc
    assert f"the {given['name']} {section} does not use {field}" in error["msg"]
    assert f"leave {field} out" in error["msg"] and users in error["msg"]
    # The same spec as the workers parse a stored one: accepted (stored specs are spared).
    assert getattr(getattr(parse_spec(body), section), field) == given[field]


# Checks added since the first release that refuse only what the code ran harmlessly or ignored
# (tests/search_space/test_study_spec.py: SUBMISSION_ONLY), one case each: the request that
# makes the study refuses them; the workers' parse of a stored spec does not.
_BIG_GRID = {
    "epochs": 1,
    "batch_size": {"low": 1, "high": 1001},
    "eval_batch_size": {"low": 1, "high": 1000},
}


@pytest.mark.parametrize(
    ("changes", "loc", "text"),
    [
        (
            {"dataset": {"name": "cifar10", "path": "/data/cifar"}},
            "dataset.path",
            "path is only for name: folder",
        ),
        ({"baselines": ["relu", "relu"]}, "baselines.1", "relu is listed twice"),
        ({"name": " "}, "name", "name must not be blank"),
        (
            {"pruner": {"name": "hyperband", "min_resource": 5, "max_resource": 3}},
            "pruner.max_resource",
            "at least its min_resource (5)",
        ),
        (
            {"sampler": {"name": "grid"}, "activations": {"relu": {}}, "training": _BIG_GRID},
            "sampler.name",
            "1001000 configurations, more than 1000000",
        ),
        ({"timeouts": {"trial_s": 10**8}}, "timeouts.trial_s", "between 1 and 2592000"),
        ({"timeouts": {"study_s": 10**9}}, "timeouts.study_s", "between 1 and 31622400"),
        (
            {"sampler": {"name": "tpe", "n_startup_trials": 10**6}},
            "sampler.n_startup_trials",
            "between 0 and 100000",
        ),
        (
            {"pruner": {"name": "median", "n_startup_trials": 10**6}},
            "pruner.n_startup_trials",
            "between 0 and 100000",
        ),
        (
            {"pruner": {"name": "median", "n_warmup_steps": 10**5}},
            "pruner.n_warmup_steps",
            "between 0 and 10000",
        ),
        (
            {"pruner": {"name": "median", "interval_steps": 10**5}},
            "pruner.interval_steps",
            "between 1 and 10000",
        ),
        (
            {"pruner": {"name": "hyperband", "min_resource": 10**5}},
            "pruner.min_resource",
            "auto or an integer between 1 and 10000",
        ),
        (
            {"pruner": {"name": "hyperband", "max_resource": 10**5}},
            "pruner.max_resource",
            "auto or an integer between 1 and 10000",
        ),
        (
            {"pruner": {"name": "hyperband", "reduction_factor": 10**5}},
            "pruner.reduction_factor",
            "between 2 and 10000",
        ),
        (
            {"pruner": {"name": "successive_halving", "min_early_stopping_rate": 10**5}},
            "pruner.min_early_stopping_rate",
            "between 0 and 10000",
        ),
    ],
)
def test_a_check_of_intent_is_422_naming_the_field_and_spares_stored_specs(
    api: httpx.Client, alice: Person, changes: dict, loc: str, text: str
) -> None:
    body = spec(**changes)
    response = submit(api, alice, body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc and text in error["msg"], error
    # The same spec as the workers parse a stored one: accepted (stored specs are spared).
    assert parse_spec(body)


def test_fields_at_their_defaults_are_accepted_whatever_the_sampler_and_pruner(
    client: httpx.Client, alice: Person
) -> None:
    # Stored specs state every field; a resubmitted one (or a clone's) holds them all.
    body = spec(
        sampler={
            "name": "random",
            "constant_liar": True,
            "n_startup_trials": 10,
            "qmc_type": "sobol",
        },
        pruner={"name": "hyperband", "n_startup_trials": 5, "percentile": 25.0, "min_resource": 2},
    )
    response = submit(client, alice, body)
    assert response.status_code == 201, response.text
    stored = client.get(response.json()["links"]["self"], headers=alice.headers).json()["spec"]
    assert stored["pruner"]["min_resource"] == 2 and stored["pruner"]["n_warmup_steps"] == 0
    again = submit(client, alice, stored)  # the full stored dump, every default stated
    assert again.status_code == 201, again.text


def test_values_our_columns_cannot_hold_are_422(client: httpx.Client, alice: Person) -> None:
    for field in ("n_trials", "priority"):
        response = submit(client, alice, spec(**{field: 2**40}))
        assert response.status_code == 422, response.text
        assert [e["loc"] for e in response.json()["detail"]] == [field]
        assert "must be between" in response.json()["detail"][0]["msg"]


def test_out_of_range_counts_are_422_naming_the_range(client: httpx.Client, alice: Person) -> None:
    # The spec bounds them (it accepted any n_trials up to 2**31 - 1 before).
    for field, value, allowed in (("n_trials", 100_001, "between 1 and 100000"),
                                  ("seeds", 1_000, "between 1 and 100")):  # fmt: skip
        response = submit(client, alice, spec(**{field: value}))
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == field and allowed in error["msg"], error


def test_unknown_family_and_missing_field_are_named(client: httpx.Client, alice: Person) -> None:
    unknown = submit(client, alice, spec(activations={"nosuchact": {}}))
    assert unknown.status_code == 422
    assert any("nosuchact" in e["loc"] or "nosuchact" in e["msg"] for e in unknown.json()["detail"])
    missing = {k: v for k, v in spec().items() if k != "activations"}
    response = submit(client, alice, missing)
    assert response.status_code == 422
    assert any(e["loc"].startswith("activations") for e in response.json()["detail"])


@pytest.mark.parametrize(
    ("content", "content_type", "fragment"),
    [
        ("[1, 2]", "application/json", "mapping"),
        ("{not json", "application/json", "not valid JSON"),
        ("a: [unclosed", "application/yaml", "not valid YAML"),
        ('{"name": "x\\u0000y"}', "application/json", "NUL"),
    ],
)
def test_undecodable_bodies_are_422(
    client: httpx.Client, alice: Person, content: str, content_type: str, fragment: str
) -> None:
    response = client.post(
        "/api/v1/studies", content=content, headers={**alice.headers, "Content-Type": content_type}
    )
    assert response.status_code == 422
    assert any(fragment in e["msg"] for e in response.json()["detail"]), response.json()


def test_other_media_types_are_415(client: httpx.Client, alice: Person) -> None:
    response = client.post(
        "/api/v1/studies", content=b"x", headers={**alice.headers, "Content-Type": "image/png"}
    )
    assert response.status_code == 415
    assert "application/yaml" in response.json()["detail"]


def test_list_filters_sorts_and_paginates(api: httpx.Client, alice: Person, bob: Person) -> None:
    names = ["delta", "alpha", "charlie", "bravo"]
    ids = {
        n: submit(api, alice, spec(name=n, priority=i, description=f"about {n}")).json()["id"]
        for i, n in enumerate(names)
    }
    submit(api, bob, spec(name="bobs"))
    api.post(f"/api/v1/studies/{ids['charlie']}/pause", headers=alice.headers)

    def listing(**params: object) -> dict:
        response = api.get(
            "/api/v1/studies", params={"owner": alice.name, **params}, headers=bob.headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    assert listing()["total"] == 4
    assert [s["name"] for s in listing(sort="name")["items"]] == sorted(names)
    assert [s["name"] for s in listing(sort="-name")["items"]] == sorted(names, reverse=True)
    assert [s["name"] for s in listing(sort="-priority")["items"]] == names[::-1]
    assert [s["name"] for s in listing(status="paused")["items"]] == ["charlie"]
    both = listing(status=["paused", "queued"], sort="name")
    assert both["total"] == 4
    assert [s["name"] for s in listing(q="BRAV")["items"]] == ["bravo"]
    assert listing(q="about")["total"] == 4
    assert listing(q="100%_")["total"] == 0  # LIKE wildcards are matched literally

    page = listing(sort="name", limit=3)
    assert page["total"] == 4 and len(page["items"]) == 3 and page["next_cursor"]
    rest = listing(sort="name", limit=3, cursor=page["next_cursor"])
    assert [s["name"] for s in page["items"] + rest["items"]] == sorted(names)
    assert rest["next_cursor"] is None
    assert [s["name"] for s in listing(sort="name", limit=2, offset=2)["items"]] == [
        "charlie",
        "delta",
    ]


def test_list_sorts_by_best_value(client: httpx.Client, alice: Person, store: Store) -> None:
    low = submit(client, alice, spec(name="low")).json()["id"]
    high = submit(client, alice, spec(name="high")).json()["id"]
    none = submit(client, alice, spec(name="none")).json()["id"]
    add_trial(store, low, value=0.3)
    add_trial(store, high, value=0.9)
    items = client.get(
        "/api/v1/studies", params={"owner": alice.name, "sort": "-best"}, headers=alice.headers
    ).json()["items"]
    assert [s["id"] for s in items] == [high, low, none]  # studies without results last
    assert items[0]["best"]["value"] == pytest.approx(0.9)


def test_cursor_of_another_sort_is_refused(client: httpx.Client, alice: Person) -> None:
    for name in ("a", "b"):
        submit(client, alice, spec(name=name))
    page = client.get(
        "/api/v1/studies",
        params={"owner": alice.name, "limit": 1, "sort": "name"},
        headers=alice.headers,
    ).json()
    response = client.get(
        "/api/v1/studies",
        params={"cursor": page["next_cursor"], "sort": "-created"},
        headers=alice.headers,
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == "query.cursor"
    garbage = client.get("/api/v1/studies", params={"cursor": "%%%"}, headers=alice.headers)
    assert garbage.status_code == 422


def test_detail_has_progress_best_and_family_summary(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    study_id = submit(api, alice, spec(n_trials=8)).json()["id"]
    relu = [0.80, 0.84, 0.82]
    for value in relu:
        add_trial(store, study_id, family="relu", value=value)
    add_trial(
        store, study_id, family="smu", params={"activation": "smu", "smu.alpha": 0.2}, value=0.9
    )
    add_trial(store, study_id, family="smu", value=None, state="pruned")
    add_trial(store, study_id, family="smu", value=None, state="failed")
    add_trial(store, study_id, family="smu", value=0.7, state="running")

    study = api.get(f"/api/v1/studies/{study_id}", headers=alice.headers).json()
    assert study["status"] == "running"
    assert study["progress"] == {
        "budget": 8, "complete": 4, "pruned": 1, "failed": 1, "cancelled": 0, "running": 1,
        "queued": 1,
    }  # fmt: skip
    assert study["best"]["value"] == pytest.approx(0.9)
    assert study["best"]["family"] == "smu"
    assert study["best"]["params"] == {"activation": "smu", "smu.alpha": 0.2}
    families = {f["family"]: f for f in study["families"]}
    assert families["relu"]["n"] == 3 and families["relu"]["runs"] == 3
    assert families["relu"]["mean"] == pytest.approx(statistics.mean(relu))
    assert families["relu"]["std"] == pytest.approx(statistics.stdev(relu))
    assert families["relu"]["best"] == pytest.approx(0.84)
    assert families["smu"]["n"] == 1 and families["smu"]["runs"] == 4
    assert families["smu"]["std"] is None  # one value has no spread
    paused = api.post(f"/api/v1/studies/{study_id}/pause", headers=alice.headers).json()
    assert paused["status"] == "paused" and paused["best"]["value"] == pytest.approx(0.9)
    assert paused["progress"] == {**study["progress"]}


def test_unknown_study_is_404(api: httpx.Client, alice: Person) -> None:
    response = api.get("/api/v1/studies/999999", headers=alice.headers)
    assert response.status_code == 404
    assert "999999" in response.json()["detail"]


def test_cancel_pause_resume_and_conflicts(api: httpx.Client, alice: Person, store: Store) -> None:
    study_id = submit(api, alice).json()["id"]
    url = f"/api/v1/studies/{study_id}"
    assert api.post(f"{url}/pause", headers=alice.headers).json()["status"] == "paused"
    assert store.runs.claim_next("w-paused", [study_id]) is None  # a paused study hands out nothing
    assert api.post(f"{url}/resume", headers=alice.headers).json()["status"] == "queued"
    again = api.post(f"{url}/resume", headers=alice.headers)
    assert again.status_code == 409 and "queued" in again.json()["detail"]
    assert api.post(f"{url}/cancel", headers=alice.headers).json()["status"] == "cancelled"
    assert api.post(f"{url}/pause", headers=alice.headers).status_code == 409
    assert api.get(url, headers=alice.headers).json()["progress"]["queued"] == 0


def test_cancel_stops_a_running_trial_within_an_epoch(
    client: httpx.Client, alice: Person, store: Store
) -> None:
    study_id = submit(client, alice).json()["id"]
    claim = store.runs.claim_next("w-cancel", [study_id])
    assert claim is not None
    client.post(f"/api/v1/studies/{study_id}/cancel", headers=alice.headers)
    status = store.runs.report_epoch(
        claim.run_id, 0, train_loss=1.0, val_acc=0.1, img_per_s=1.0, elapsed_s=1.0
    )
    assert status.stop_reason == "cancelled"


def test_delete_removes_study_trials_and_optuna_study(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    study_id = submit(api, alice).json()["id"]
    add_trial(store, study_id)
    response = api.delete(f"/api/v1/studies/{study_id}", headers=alice.headers)
    assert response.status_code == 204 and response.content == b""
    assert api.get(f"/api/v1/studies/{study_id}", headers=alice.headers).status_code == 404
    assert api.get(f"/api/v1/studies/{study_id}/trials", headers=alice.headers).status_code == 404
    names = {s.study_name for s in optuna.get_all_study_summaries(store.db.optuna)}
    assert f"actsearch-{study_id}" not in names
    assert api.delete(f"/api/v1/studies/{study_id}", headers=alice.headers).status_code == 404


def test_admin_may_act_on_any_study(client: httpx.Client, alice: Person, admin: Person) -> None:
    study_id = submit(client, alice).json()["id"]
    response = client.post(f"/api/v1/studies/{study_id}/cancel", headers=admin.headers)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_clone_merges_changes_and_belongs_to_the_caller(
    api: httpx.Client, alice: Person, bob: Person
) -> None:
    source = submit(
        api, alice, spec(name="source", training={"epochs": 1, "batch_size": 64})
    ).json()
    response = api.post(
        f"/api/v1/studies/{source['id']}/clone",
        json={"name": "copy", "n_trials": 7, "training": {"epochs": 3}},
        headers=bob.headers,
    )
    assert response.status_code == 201, response.text
    clone = response.json()
    assert clone["id"] != source["id"] and clone["owner"] == bob.name
    detail = api.get(clone["links"]["self"], headers=bob.headers).json()
    assert detail["name"] == "copy" and detail["n_trials"] == 7
    assert detail["spec"]["training"]["epochs"] == 3
    assert detail["spec"]["training"]["batch_size"] == 64  # deep merge kept the sibling


def test_a_clone_to_another_pruner_names_the_field_the_new_one_ignores(
    client: httpx.Client, alice: Person
) -> None:
    source = submit(client, alice, spec(pruner={"name": "median", "n_warmup_steps": 2})).json()
    url = f"/api/v1/studies/{source['id']}/clone"
    response = client.post(url, json={"pruner": {"name": "hyperband"}}, headers=alice.headers)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == "pruner.n_warmup_steps"
    assert "the hyperband pruner does not use n_warmup_steps" in error["msg"]
    # A clone's changes keep what they leave out: the message says how to drop the field.
    assert "leave n_warmup_steps out (in a clone's changes: set it to null)" in error["msg"]
    changes = {"pruner": {"name": "hyperband", "n_warmup_steps": None}}  # null: back to default
    response = client.post(url, json=changes, headers=alice.headers)
    assert response.status_code == 201, response.text


def test_a_clone_of_a_study_stored_before_a_check_says_to_set_the_field_to_null(
    client: httpx.Client, alice: Person, store: Store
) -> None:
    # Submitted before dataset.path was checked: stored with a CIFAR dataset and a path, which
    # the workers ignore and a new spec may not have. A clone is a new spec.
    source = submit(client, alice).json()
    stored = store.studies.get(source["id"]).spec
    stored["dataset"]["path"] = "/data/cifar"
    with store.db.session() as session:
        session.execute(update(Study).where(Study.id == source["id"]).values(spec=stored))
    url = f"/api/v1/studies/{source['id']}/clone"
    response = client.post(url, json={"name": "again"}, headers=alice.headers)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == "dataset.path"
    assert "leave path out (in a clone's changes: set it to null)" in error["msg"]
    changes = {"name": "again", "dataset": {"path": None}}
    response = client.post(url, json=changes, headers=alice.headers)
    assert response.status_code == 201, response.text
    detail = client.get(response.json()["links"]["self"], headers=alice.headers).json()
    assert detail["spec"]["dataset"]["path"] is None
    assert detail["spec"]["dataset"]["name"] == "cifar10"


def test_clone_revalidates(client: httpx.Client, alice: Person) -> None:
    source = submit(client, alice).json()
    response = client.post(
        f"/api/v1/studies/{source['id']}/clone",
        json={"activations": {"smu": {"alpha": {"low": 0.9, "high": 0.1}}}},
        headers=alice.headers,
    )
    assert response.status_code == 422
    assert any(e["loc"].startswith("activations.smu.alpha") for e in response.json()["detail"])
    assert (
        client.post("/api/v1/studies/999999/clone", json={}, headers=alice.headers).status_code
        == 404
    )
