"""The dashboard's server side in-process: sign-in rules, chart data, importance, exports.

Runs on SQLite and on PostgreSQL (its own fresh database), with the real app and real trials
made through the worker-facing store API. No browser needed.
"""

from __future__ import annotations

import csv
import io
import statistics
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import migrated_sqlite
from dashboard_helpers import FakeWorker
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from search_space.spec import parse_spec
from service import migrate
from service.app import create_app
from service.dashboard.importance import MIN_TRIALS, ImportanceCache, family_importance
from service.db import make_engine
from service.settings import Settings
from service.store import Store

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
# What a browser says of a link opened from outside (it signs in at once) and of a form posted
# by one of the dashboard's own pages.
OPENED_FROM_OUTSIDE = {"Sec-Fetch-Site": "none"}
FROM_OUR_PAGE = {"Sec-Fetch-Site": "same-origin"}
SPEC: dict[str, Any] = {
    "version": 1,
    "name": "data_routes",
    "dataset": {"name": "cifar10"},
    "model": {"name": "proxy"},
    "training": {"epochs": 2},
    "activations": {
        "relu": {},
        "smu": {"alpha": {"low": 0.0, "high": 0.5}, "mu": {"low": 0.5, "high": 5.0, "log": True}},
    },
    "baselines": ["relu"],
    "sampler": {"name": "random", "seed": 0},  # the same trials every run
    "n_trials": 40,
}


def _pg_database() -> str:
    name = f"as_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = f"{PG_SERVER}/{name}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def _drop_pg(url: str) -> None:
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh migrated database of each backend."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path_factory.mktemp("dash-data") / "a.db")
        return
    url = _pg_database()
    try:
        yield url
    finally:
        _drop_pg(url)


class World:
    """An app, its store, an admin (token) and a study with known trials."""

    def __init__(self, url: str, home: Path) -> None:
        self.store = Store.open(url)
        self.admin, self.token = self.store.users.create("admin", is_admin=True)
        self.app = create_app(
            Settings(database_url=url, home=home), self.store, reap_interval_s=None
        )
        self.client = TestClient(self.app)
        self.study, _ = self.store.studies.create(self.admin, SPEC)
        self.values: dict[int, tuple[str, float | None, str]] = {}  # number -> family, value, state
        worker = FakeWorker(self.store, f"w-{uuid.uuid4().hex[:6]}")
        for i in range(30):
            run = worker.start(self.study.id)
            assert run is not None
            alpha = float(run.params.get("smu.alpha", 0.0))
            value = round(0.80 + 0.2 * alpha, 4)  # alpha decides, mu does not
            if i in (5, 11):
                worker.prune(run, [0.3])
                self.values[run.trial.number] = (run.family, None, "pruned")
            else:
                worker.complete(run, [value - 0.1, value])
                self.values[run.trial.number] = (run.family, value, "complete")

    def auth(self) -> dict[str, str]:
        """Bearer header of the admin."""
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str) -> Any:
        """GET as the admin; the JSON body of a 200."""
        response = self.client.get(path, headers=self.auth())
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def world(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One populated world per backend."""
    w = World(database, tmp_path_factory.mktemp("home"))
    try:
        yield w
    finally:
        w.client.close()
        w.store.dispose()


# -- signing in --------------------------------------------------------------------------------
def test_pages_redirect_and_data_needs_a_user(world: World) -> None:
    """Without a session: pages send to /login (keeping the path), data answers 401."""
    client = TestClient(world.app)
    response = client.get(f"/studies/{world.study.id}?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next=/studies/{world.study.id}%3Fx%3D1"
    assert client.get(f"/dashboard/data/studies/{world.study.id}/summary").status_code == 401
    assert client.get(f"/dashboard/data/studies/{world.study.id}/values").status_code == 401
    assert client.get(f"/dashboard/data/studies/{world.study.id}/spec").status_code == 401


def test_login_sets_a_signed_httponly_cookie_and_refuses_open_redirects(world: World) -> None:
    """POST /login: 401 for a bad token; 303 with the cookie; `next` only within the site."""
    client = TestClient(world.app)
    bad = client.post(
        "/login",
        data={"token": "nope", "next": "/workers"},
        headers=FROM_OUR_PAGE,
        follow_redirects=False,
    )
    assert bad.status_code == 401 and "unknown or revoked token" in bad.text
    for target, expected in (("/workers", "/workers"), ("//evil.example/x", "/"),
                             ("https://evil.example", "/"), ("/\\evil", "/")):  # fmt: skip
        response = client.post(
            "/login",
            data={"token": world.token, "next": target},
            headers=FROM_OUR_PAGE,
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == expected
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("actsearch_session=") and world.token not in cookie.split(";")[0][-64:]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    # The cookie works for pages, data and the API alike.
    assert client.get("/", follow_redirects=False).status_code == 200
    assert client.get(f"/dashboard/data/studies/{world.study.id}/summary").status_code == 200
    assert client.get("/api/v1/me").json()["name"] == "admin"
    out = client.post("/logout", headers=FROM_OUR_PAGE, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_revoked_token_ends_the_session(world: World, tmp_path: Path) -> None:
    """A session is only as good as its token: revoking it signs the browser out."""
    user, token = world.store.users.create(f"temp-{uuid.uuid4().hex[:6]}")
    client = TestClient(world.app)
    client.get(f"/login?token={token}", headers=OPENED_FROM_OUTSIDE, follow_redirects=False)
    assert client.get("/workers", follow_redirects=False).status_code == 200
    for info in world.store.users.tokens(user.id):
        world.store.users.revoke_token(info.id)
    assert client.get("/workers", follow_redirects=False).status_code == 303


def test_unknown_study_page_is_a_404_page(world: World) -> None:
    """A missing study renders an HTML 404 that says which."""
    client = TestClient(world.app)
    client.get(f"/login?token={world.token}", headers=OPENED_FROM_OUTSIDE, follow_redirects=False)
    response = client.get("/studies/99999")
    assert response.status_code == 404 and "study 99999 does not exist" in response.text
    assert "text/html" in response.headers["content-type"]


def test_static_files_are_revalidated_and_local(world: World) -> None:
    """Static files carry no-cache (ETag revalidation); the chart library is vendored."""
    client = TestClient(world.app)
    response = client.get("/dashboard/static/vendor/echarts.min.js")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"
    assert len(response.content) > 500_000
    client.get(f"/login?token={world.token}", headers=OPENED_FROM_OUTSIDE, follow_redirects=False)
    page = client.get(f"/studies/{world.study.id}").text
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


# -- chart data ----------------------------------------------------------------------------------
def test_summary_matches_the_trials(world: World) -> None:
    """Leaderboard statistics and the headline agree with the trials' values."""
    summary = world.get(f"/dashboard/data/studies/{world.study.id}/summary")
    assert summary["baseline"] == "relu"
    by_family: dict[str, list[float]] = {}
    for family, value, _state in world.values.values():
        if value is not None:
            by_family.setdefault(family, []).append(value)
    rows = {row["family"]: row for row in summary["families"]}
    assert set(rows) == set(by_family)
    for family, values in by_family.items():
        row = rows[family]
        assert row["n_complete"] == len(values)
        assert row["best"] == pytest.approx(max(values))
        assert row["mean"] == pytest.approx(statistics.fmean(values))  # over trainings
        assert row["median"] == pytest.approx(statistics.median(values))
        assert "std" not in row
        assert row["delta_best"] == pytest.approx(max(values) - max(by_family["relu"]))
    # Every relu trial trained the same configuration with the same seed (this stand-in worker
    # keeps no ledger): one training, however many trials; each smu trial is one of its own.
    assert rows["relu"]["trainings"] == 1 < rows["relu"]["n_complete"]
    assert rows["smu"]["trainings"] == rows["smu"]["n_complete"]
    assert rows["smu"]["search"]["verdict"] == rows["smu"]["verdict"] == "too few runs"
    pruned = sum(1 for f, _, s in world.values.values() if s == "pruned")
    assert sum(row["states"]["pruned"] for row in rows.values()) == pruned
    best_family = max(by_family, key=lambda f: max(by_family[f]))
    headline = summary["headline"]
    assert headline["family"] == best_family
    assert headline["baseline"]["family"] == "relu"
    assert headline["delta"] == pytest.approx(max(by_family[best_family]) - max(by_family["relu"]))
    assert [r["best"] for r in summary["families"]] == sorted(
        (r["best"] for r in summary["families"]), reverse=True
    )
    # The API's leaderboard: the same ranking (one function ranks both).
    board = world.get(f"/api/v1/studies/{world.study.id}/leaderboard")
    assert summary["ranked_by"] == board["ranked_by"] == "best"
    assert [r["family"] for r in board["rows"]] == [r["family"] for r in summary["families"]]
    assert [r["rank"] for r in summary["families"]] == list(range(1, len(rows) + 1))


def test_values_params_and_curves(world: World) -> None:
    """Column arrays line up; parameters per family; pruned curves come with their epochs."""
    sid = world.study.id
    values = world.get(f"/dashboard/data/studies/{sid}/values")
    assert values["number"] == sorted(world.values)
    for number, family, value, state in zip(
        values["number"], values["family"], values["value"], values["state"], strict=True
    ):
        assert (family, value, state) == world.values[number]
    params = world.get(f"/dashboard/data/studies/{sid}/params?family=smu")
    assert "smu.alpha" in params["params"] and "activation" not in params["params"]
    assert params["value"] == sorted(params["value"], reverse=True)
    assert len(params["columns"]["smu.alpha"]) == len(params["number"])
    curves = world.get(f"/dashboard/data/studies/{sid}/curves?limit=3")["trials"]
    states = [t["state"] for t in curves]
    assert states.count("complete") == 3 and states.count("pruned") == 2
    assert all(len(t["epoch"]) == len(t["val_acc"]) > 0 for t in curves)
    only_relu = world.get(f"/dashboard/data/studies/{sid}/curves?family=relu")["trials"]
    assert {t["family"] for t in only_relu} == {"relu"}
    assert (
        world.client.get(
            f"/dashboard/data/studies/{sid}/curves?limit=0", headers=world.auth()
        ).status_code
        == 422
    )
    assert (
        world.client.get("/dashboard/data/studies/99999/values", headers=world.auth()).status_code
        == 404
    )


def test_spec_for_the_editor_and_the_searched_parameters(world: World) -> None:
    """Clone's YAML is the stored spec, field for field; importance names what the spec searches
    (a study without any complete trial has searched parameters too)."""
    sid = world.study.id
    source = world.get(f"/dashboard/data/studies/{sid}/spec")
    assert source["id"] == sid and source["yaml"].startswith(f"# A clone of study {sid}")
    assert yaml.safe_load(source["yaml"]) == world.store.studies.get(sid).spec
    searched = world.get(f"/dashboard/data/studies/{sid}/importance")["searched"]
    assert "smu.alpha" in searched and "activation" not in searched
    assert searched == [
        dim.name for dim in parse_spec(world.store.studies.get(sid).spec).search_space()
        if dim.name != "activation"
    ]  # fmt: skip
    missing = world.client.get("/dashboard/data/studies/99999/spec", headers=world.auth())
    assert missing.status_code == 404


def test_importance_per_family_degrades_and_caches(world: World) -> None:
    """Families with too few trials say so; SMU's alpha (which drives the value) ranks first."""
    sid = world.study.id
    result = world.get(f"/dashboard/data/studies/{sid}/importance")["families"]
    relu = result["relu"]
    assert not relu["importances"]
    assert relu["note"]  # too few trials, or nothing searched: said, not crashed
    smu = result["smu"]
    assert smu["n"] >= MIN_TRIALS and smu["note"] is None
    assert set(smu["importances"]) == {"smu.alpha", "smu.mu"}
    assert smu["importances"]["smu.alpha"] > 0.8 > smu["importances"]["smu.mu"]
    few = family_importance(world.store.db, sid, "pau")  # no trials: says so
    assert (
        few["importances"] == {}
        and few["note"] == f"needs at least {MIN_TRIALS} complete trials (has 0)"
    )
    cache = ImportanceCache()
    first = cache.for_study(world.store.db, sid)
    assert cache.for_study(world.store.db, sid)["smu"] is first["smu"]  # cached


# -- exports -------------------------------------------------------------------------------------
def test_leaderboard_csv_and_latex_downloads(world: World) -> None:
    """The dashboard's downloads are the API's leaderboard files, byte for byte, as attachments."""
    sid = world.study.id
    api = f"/api/v1/studies/{sid}/leaderboard"
    for suffix, fmt in (("csv", "csv"), ("tex", "latex")):
        response = world.client.get(
            f"/dashboard/data/studies/{sid}/leaderboard.{suffix}", headers=world.auth()
        )
        assert response.status_code == 200
        assert (
            response.headers["content-disposition"]
            == f'attachment; filename="study-{sid}-leaderboard.{suffix}"'
        )
        same = world.client.get(api, params={"format": fmt}, headers=world.auth())
        assert response.content == same.content
        assert response.headers["content-type"] == same.headers["content-type"]
    rows = list(
        csv.DictReader(
            io.StringIO(
                world.client.get(
                    f"/dashboard/data/studies/{sid}/leaderboard.csv", headers=world.auth()
                ).text
            )
        )
    )
    summary = world.get(f"/dashboard/data/studies/{sid}/summary")
    scored = [f for f in summary["families"] if f["n_complete"]]
    assert [r["family"] for r in rows] == [f["family"] for f in scored]
    for row, family in zip(rows, scored, strict=True):
        assert float(row["best"]) == pytest.approx(family["best"])  # a fraction, not %
        assert row["is_baseline"] == str(family["family"] == "relu")
