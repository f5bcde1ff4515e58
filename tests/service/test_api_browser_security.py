"""The browser-facing rules, request by request (httpx, the app in-process): security headers on
every answer; changes made with the session cookie need same-origin proof and the CSRF token,
bearer tokens need neither; the token link signs in at once only when opened from outside; proxy
headers count only when trusted; the cookie's flags. The browser side: tests/browser.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.security import CONTENT_SECURITY_POLICY
from service.app import create_app
from service.settings import Settings
from service.store import Store
from tests.service.conftest import Person, spec

BASE = "http://testserver"  # TestClient's origin
OUTSIDE = {"Sec-Fetch-Site": "none"}  # a link typed, bookmarked or clicked in a terminal
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


def browser(app: Any, person: Person | None = None) -> TestClient:
    """A client with its own cookie jar, signed in as `person` through the token link."""
    client = TestClient(app)
    if person is not None:
        response = client.get(
            f"/login?token={person.token}", headers=OUTSIDE, follow_redirects=False
        )
        assert response.status_code == 303, response.text
    return client


def csrf_of(client: TestClient) -> str:
    """The CSRF token a dashboard page gives its scripts."""
    page = client.get("/workers")
    assert page.status_code == 200
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def me(client: TestClient) -> str:
    return str(client.get("/api/v1/me").json()["name"])


def with_app(store: Store, settings: Settings, **changes: Any) -> Any:
    """Another app on the same store with some settings changed."""
    return create_app(settings.model_copy(update=changes), store, reap_interval_s=None)


# -- headers ------------------------------------------------------------------------------------
def test_every_kind_of_answer_carries_the_security_headers(
    app: Any, alice: Person, store: Store
) -> None:
    client = browser(app)
    answers = {
        "health (JSON)": client.get("/api/v1/health"),
        "401": client.get("/api/v1/studies"),
        "API with a token": client.get("/api/v1/studies", headers=alice.headers),
        "404": client.get("/api/v1/studies/987654", headers=alice.headers),
        "422": client.post("/api/v1/studies", json={"name": 1}, headers=alice.headers),
        "openapi": client.get("/api/v1/openapi.json"),
        "api docs": client.get("/api/v1/docs"),
        "login page": client.get("/login"),
        "static file": client.get("/dashboard/static/app.css"),
        "no such page": client.get("/no-such-page"),
        "redirect to login": client.get("/workers", follow_redirects=False),
    }
    for what, response in answers.items():
        headers = response.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, what
        assert headers["x-frame-options"] == "DENY", what
        assert headers["x-content-type-options"] == "nosniff", what
        assert headers["referrer-policy"] == "same-origin", what
    policy = CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy
    assert "unsafe" not in policy and "style-src 'self';" in policy
    # Pages that may carry a token are never stored; static files are revalidated as before.
    assert answers["login page"].headers["cache-control"] == "no-store"
    assert answers["api docs"].headers["cache-control"] == "no-store"
    assert answers["static file"].headers["cache-control"] == "no-cache"
    signed_in = browser(app, alice)
    assert signed_in.get("/workers").headers["cache-control"] == "no-store"


def test_the_api_docs_are_served_without_a_cdn_or_inline_script(app: Any) -> None:
    page = TestClient(app).get("/api/v1/docs")
    assert page.status_code == 200
    assert "https://" not in page.text and "<script>" not in page.text
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert [s.split("?")[0] for s in scripts] == [
        "/dashboard/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/dashboard/static/js/api_docs.js",
    ]
    for script in scripts:
        assert TestClient(app).get(script).status_code == 200


# -- changes made with the session cookie ----------------------------------------------------------
REFUSALS = [
    pytest.param({}, False, "no Origin or Sec-Fetch-Site header", id="no-origin-no-token"),
    pytest.param({}, True, "no Origin or Sec-Fetch-Site header", id="no-origin"),
    pytest.param({"Origin": BASE}, False, "X-CSRF-Token", id="origin-but-no-token"),
    pytest.param(SAME_ORIGIN, False, "X-CSRF-Token", id="same-origin-but-no-token"),
    pytest.param({"Origin": "http://127.0.0.1:9999"}, True, "is not this server", id="other-port"),
    pytest.param({"Origin": "null"}, True, "is not this server", id="null-origin"),
    pytest.param({"Sec-Fetch-Site": "same-site"}, True, "same-site", id="same-site"),
    pytest.param({"Sec-Fetch-Site": "cross-site", "Origin": BASE}, True, "cross-site", id="cross"),
]


@pytest.mark.parametrize(("headers", "send_token", "why"), REFUSALS)
def test_a_change_with_the_cookie_without_same_origin_proof_is_refused(
    app: Any, alice: Person, store: Store, headers: dict[str, str], send_token: bool, why: str
) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    client = browser(app, alice)
    token = {"X-CSRF-Token": csrf_of(client)} if send_token else {}
    for method, path in (
        ("POST", f"/studies/{study_id}/pause"),
        ("DELETE", f"/studies/{study_id}"),
    ):
        response = client.request(method, f"/api/v1{path}", headers={**headers, **token})
        assert response.status_code == 403, (method, response.text)
        body = response.json()
        assert why in body["detail"] and "Authorization: Bearer" in body["detail"]
        assert body["request_id"] == response.headers["x-request-id"]
    assert store.studies.get(study_id).status == "queued"


@pytest.mark.parametrize(
    "headers",
    [pytest.param({"Origin": BASE}, id="origin"), pytest.param(SAME_ORIGIN, id="fetch-metadata")],
)
def test_a_change_from_the_dashboard_itself_works(
    app: Any, alice: Person, store: Store, headers: dict[str, str]
) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    client = browser(app, alice)
    token = {"X-CSRF-Token": csrf_of(client)}
    response = client.post(f"/api/v1/studies/{study_id}/pause", headers={**headers, **token})
    assert response.status_code == 200, response.text
    assert store.studies.get(study_id).status == "paused"


def test_the_csrf_token_belongs_to_its_session(
    app: Any, alice: Person, bob: Person, store: Store
) -> None:
    """Another user's token, or the token of an earlier session, does not do."""
    study_id = store.studies.create(alice.info, spec())[0].id
    alices = browser(app, alice)
    bobs_token = csrf_of(browser(app, bob))
    assert bobs_token != csrf_of(alices)
    refused = alices.post(
        f"/api/v1/studies/{study_id}/pause", headers={**SAME_ORIGIN, "X-CSRF-Token": bobs_token}
    )
    assert refused.status_code == 403 and "not this session's" in refused.json()["detail"]
    assert store.studies.get(study_id).status == "queued"


def test_bearer_tokens_and_reads_are_unaffected(
    app: Any, alice: Person, bob: Person, store: Store
) -> None:
    """A script with a token (even from a browser page elsewhere) needs no proof; reads with the
    cookie need none either (the browser keeps their answers from other origins)."""
    study_id = store.studies.create(alice.info, spec())[0].id
    client = browser(app, bob)  # bob's cookie rides along; the bearer token wins
    hostile = {"Origin": "http://127.0.0.1:9999", "Sec-Fetch-Site": "cross-site"}
    paused = client.post(f"/api/v1/studies/{study_id}/pause", headers={**alice.headers, **hostile})
    assert paused.status_code == 200, paused.text
    assert client.get("/api/v1/me", headers=hostile).json()["name"] == bob.name
    assert client.get(f"/api/v1/studies/{study_id}", headers=hostile).status_code == 200
    assert (
        TestClient(app)
        .post(f"/api/v1/studies/{study_id}/resume", headers=alice.headers)
        .status_code
        == 200
    )


# -- a reverse proxy ------------------------------------------------------------------------------
PROXIED = [
    pytest.param({"X-Forwarded-Host": "dash.example.org"}, id="x-forwarded-host"),
    pytest.param({"Forwarded": 'for=10.0.0.1;host="dash.example.org";proto=https'}, id="forwarded"),
]


@pytest.mark.parametrize("forwarded", PROXIED)
def test_a_proxys_host_counts_only_when_trusted(
    store: Store, settings: Settings, alice: Person, forwarded: dict[str, str]
) -> None:
    """Origin https://dash.example.org reaching us as Host testserver through a proxy."""
    study_id = store.studies.create(alice.info, spec())[0].id
    headers = {"Origin": "https://dash.example.org", **forwarded}
    for trusted, expected in ((False, 403), (True, 200)):
        client = browser(with_app(store, settings, trust_proxy=trusted), alice)
        token = {"X-CSRF-Token": csrf_of(client)}
        response = client.post(f"/api/v1/studies/{study_id}/pause", headers={**headers, **token})
        assert response.status_code == expected, (trusted, response.text)
        if expected == 403:
            assert "ACTSEARCH_TRUST_PROXY" in response.json()["detail"]
    assert store.studies.get(study_id).status == "paused"


def session_cookie(response: Any) -> str:
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("actsearch_session=")
    return str(cookie)


def test_the_session_cookie_is_secure_over_https(
    store: Store, settings: Settings, alice: Person
) -> None:
    link = f"/login?token={alice.token}"
    plain = TestClient(with_app(store, settings)).get(link, headers=OUTSIDE, follow_redirects=False)
    cookie = session_cookie(plain)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert plain.headers["cache-control"] == "no-store"

    tls = TestClient(with_app(store, settings), base_url="https://testserver")
    assert "Secure" in session_cookie(tls.get(link, headers=OUTSIDE, follow_redirects=False))

    forwarded = {**OUTSIDE, "X-Forwarded-Proto": "https"}
    untrusted = TestClient(with_app(store, settings))
    assert "Secure" not in session_cookie(
        untrusted.get(link, headers=forwarded, follow_redirects=False)
    )
    trusted = TestClient(with_app(store, settings, trust_proxy=True))
    assert "Secure" in session_cookie(trusted.get(link, headers=forwarded, follow_redirects=False))
    always = TestClient(with_app(store, settings, secure_cookies=True))
    assert "Secure" in session_cookie(always.get(link, headers=OUTSIDE, follow_redirects=False))


# -- signing in and out ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "site",
    [pytest.param(None, id="no-fetch-metadata"), pytest.param("same-site", id="same-site"),
     pytest.param("cross-site", id="cross-site"), pytest.param("same-origin", id="same-origin")],
)  # fmt: skip
def test_a_token_link_from_a_page_asks_first(
    app: Any, alice: Person, bob: Person, site: str | None
) -> None:
    client = browser(app, alice)
    headers = {"Sec-Fetch-Site": site} if site else {}
    asked = client.get(f"/login?token={bob.token}&next=/workers", headers=headers)
    assert asked.status_code == 200 and "set-cookie" not in asked.headers
    assert f"Sign in as {bob.name}?" in asked.text
    assert alice.name in asked.text  # who is signed in now
    assert asked.headers["cache-control"] == "no-store"  # it holds bob's token
    assert me(client) == alice.name

    # Confirmed: the page's own form posts the token.
    confirmed = client.post(
        "/login",
        data={"token": bob.token, "next": "/workers"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/workers"
    assert me(client) == bob.name


def test_a_token_link_of_the_signed_in_user_goes_straight_on(app: Any, alice: Person) -> None:
    client = browser(app, alice)
    again = client.get(
        f"/login?token={alice.token}&next=/workers",
        headers={"Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert again.status_code == 303 and again.headers["location"] == "/workers"


def test_a_token_link_opened_from_outside_signs_in_at_once(
    app: Any, alice: Person, bob: Person
) -> None:
    client = browser(app, alice)
    link = client.get(f"/login?token={bob.token}", headers=OUTSIDE, follow_redirects=False)
    assert link.status_code == 303 and "set-cookie" in link.headers
    assert me(client) == bob.name


@pytest.mark.parametrize(
    "headers",
    [pytest.param({"Origin": "http://127.0.0.1:9999"}, id="other-origin"),
     pytest.param({"Sec-Fetch-Site": "same-site"}, id="same-site"),
     pytest.param({}, id="no-origin")],
)  # fmt: skip
def test_login_and_logout_forms_only_from_our_pages(
    app: Any, alice: Person, bob: Person, headers: dict[str, str]
) -> None:
    client = browser(app, alice)
    login = client.post(
        "/login", data={"token": bob.token}, headers=headers, follow_redirects=False
    )
    assert login.status_code == 403 and "sign-in refused" in login.text
    assert "set-cookie" not in login.headers
    logout = client.post("/logout", headers=headers, follow_redirects=False)
    assert logout.status_code == 403 and "sign-out refused" in logout.text
    assert me(client) == alice.name
    ours = client.post("/logout", headers={"Origin": BASE}, follow_redirects=False)
    assert ours.status_code == 303
    assert client.get("/api/v1/me").status_code == 401
