"""Hostile input at the API's edge: nesting, YAML aliases, body size, racing deletes, bounds.

Each case was a 500, a stalled server or a wrong answer before its fix (a black-box review):
deep nesting drove the parsers past Python's recursion limit; a 300-byte YAML alias bomb held the
event loop for 12 s; a 400 MB body was read into memory before the 1 MB limit was checked; two of
ten racing deletes of one study both answered 204.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from sqlalchemy import update

from search_space.spec import MAX_DESCRIPTION_CHARS, parse_spec
from service.api.documents import MAX_DEPTH, MAX_NODES
from service.api.limits import MAX_BODY_BYTES
from service.db import Study
from service.store import NotFound, Store
from tests.service.conftest import Person, Server, add_trial, spec

pytestmark = pytest.mark.timeout(300)

JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}
TOO_DEEP = f"nesting too deep (at most {MAX_DEPTH} levels"


def nested(levels: int) -> str:
    """`levels` lists, one inside the other, as JSON (and YAML flow) text."""
    return "[" * levels + "]" * levels


def with_description(text: str) -> str:
    """A valid spec as JSON text whose description is the given JSON text."""
    body = json.dumps(spec())
    return body[:-1] + f', "description": {text}}}'


def post(
    api: httpx.Client, person: Person, path: str, body: str | bytes, headers: dict[str, str]
) -> httpx.Response:
    return api.post(path, content=body, headers={**person.headers, **headers})


def refused_at_body(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 422, response.text[:300]
    (error,) = response.json()["detail"]
    assert error["loc"] == "body" and fragment in error["msg"], error


# -- nesting -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(nested(100_000), JSON, id="json-100000-levels"),
        pytest.param(with_description(nested(1000)), JSON, id="json-description-1000-levels"),
        pytest.param(with_description(nested(MAX_DEPTH)), JSON, id="json-one-level-too-deep"),
        pytest.param(
            yaml.safe_dump(spec()) + f"description: {nested(500)}\n", YAML, id="yaml-500-levels"
        ),
        pytest.param(
            yaml.safe_dump(spec()) + f"description: {nested(1500)}\n", YAML, id="yaml-1500-levels"
        ),
    ],
)
def test_deeply_nested_specs_are_422_not_500(
    api: httpx.Client, alice: Person, body: str, headers: dict[str, str]
) -> None:
    refused_at_body(post(api, alice, "/api/v1/studies", body, headers), TOO_DEEP)


def test_nesting_up_to_the_limit_is_decoded_and_validated(
    client: httpx.Client, alice: Person
) -> None:
    # The top-level object is level 1: a description of MAX_DEPTH - 1 lists is as deep as allowed,
    # so the spec's own validation answers (a description is text).
    response = post(client, alice, "/api/v1/studies", with_description(nested(MAX_DEPTH - 1)), JSON)
    assert response.status_code == 422, response.text[:300]
    assert [e["loc"] for e in response.json()["detail"]] == ["description"]


@pytest.mark.parametrize("levels", [500, 900])
def test_a_deeply_nested_clone_body_is_422_not_500(
    api: httpx.Client, alice: Person, levels: int
) -> None:
    study_id = post(api, alice, "/api/v1/studies", json.dumps(spec()), JSON).json()["id"]
    url = f"/api/v1/studies/{study_id}/clone"
    refused_at_body(post(api, alice, url, nested(levels), JSON), "must be a mapping")
    refused_at_body(post(api, alice, url, f'{{"description": {nested(levels)}}}', JSON), TOO_DEEP)
    deep_object = '{"training": ' * levels + "1" + "}" * levels
    refused_at_body(post(api, alice, url, deep_object, JSON), TOO_DEEP)


# -- YAML aliases and size ---------------------------------------------------------------------
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefg", "bcdefgh", strict=True)
)


def test_a_yaml_alias_bomb_is_refused_at_once(api: httpx.Client, alice: Person) -> None:
    assert len(ALIAS_BOMB) < 400  # expanded: 9**8 = 43 million scalars
    body = yaml.safe_dump(spec()) + ALIAS_BOMB
    started = time.monotonic()
    response = post(api, alice, "/api/v1/studies", body, YAML)
    refused_at_body(response, "YAML anchors and aliases (&name, *name) are not accepted")
    assert time.monotonic() - started < 5  # was 12 s, the server stalled meanwhile


def test_any_yaml_anchor_is_refused_naming_its_line(client: httpx.Client, alice: Person) -> None:
    body = yaml.safe_dump(spec(name="anchored")) + "extra: &shared {epochs: 1}\n"
    refused_at_body(post(client, alice, "/api/v1/studies", body, YAML), "(line ")


@pytest.mark.parametrize("headers", [JSON, YAML], ids=["json", "yaml"])
def test_a_document_of_too_many_values_is_refused(
    client: httpx.Client, alice: Person, headers: dict[str, str]
) -> None:
    body = with_description("[" + ",".join(["0"] * MAX_NODES) + "]")
    assert len(body) < MAX_BODY_BYTES
    refused_at_body(post(client, alice, "/api/v1/studies", body, headers), "too many values")


def test_a_large_submission_does_not_stall_other_requests(server: Server, alice: Person) -> None:
    # Within the bounds and slow to decode (about MAX_NODES values); meanwhile the server answers
    # others: decoding runs in the threadpool, not on the event loop.
    entries = MAX_NODES // 4 - 1_000  # a key, a list and two numbers each
    notes = "".join(f"  k{i}: [{i}, {i}]\n" for i in range(entries))
    body = yaml.safe_dump(spec()) + "notes:\n" + notes
    assert len(body) < MAX_BODY_BYTES
    done = threading.Event()
    answers: list[httpx.Response] = []
    meanwhile: list[float] = []

    def submit() -> None:
        try:
            headers = {**alice.headers, **YAML}
            url = f"{server.url}/api/v1/studies"
            answers.append(httpx.post(url, content=body, headers=headers, timeout=120))
        finally:
            done.set()

    worker = threading.Thread(target=submit)
    worker.start()
    while not done.is_set():
        started = time.monotonic()
        assert httpx.get(f"{server.url}/api/v1/health", timeout=60).status_code == 200
        if not done.is_set():
            meanwhile.append(time.monotonic() - started)
    worker.join()
    (answer,) = answers
    assert answer.status_code == 422 and "notes" in answer.text, answer.text[:300]  # validated
    assert meanwhile and max(meanwhile) < 1, meanwhile


# -- body size -----------------------------------------------------------------------------------
def too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    body = response.json()
    assert str(MAX_BODY_BYTES) in body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


def test_a_body_over_the_limit_is_413_on_every_route(
    client: httpx.Client, alice: Person, admin: Person
) -> None:
    study_id = post(client, alice, "/api/v1/studies", json.dumps(spec()), JSON).json()["id"]
    big = json.dumps(spec(description="x" * MAX_BODY_BYTES))
    too_large(post(client, alice, "/api/v1/studies", big, JSON))
    too_large(post(client, alice, f"/api/v1/studies/{study_id}/clone", big, JSON))
    # Routes whose JSON body FastAPI parses (before any dependency ran, the token too).
    too_large(client.post("/api/v1/users", content=big, headers=JSON))
    too_large(post(client, admin, "/api/v1/users", big, JSON))
    assert len(json.dumps(spec(description="x" * 900_000))) <= MAX_BODY_BYTES
    under = post(
        client, alice, "/api/v1/studies", json.dumps(spec(description="x" * 900_000)), JSON
    )
    assert under.status_code == 422, under.text[:300]  # read; the description is over its cap


def test_a_streamed_body_over_the_limit_is_413(client: httpx.Client, alice: Person) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield json.dumps(spec())[:-1].encode() + b', "description": "'
        for _ in range(MAX_BODY_BYTES // 65_536 + 1):
            yield b"x" * 65_536
        yield b'"}'

    too_large(client.post("/api/v1/studies", content=chunks(), headers={**alice.headers, **JSON}))


def exchange(server: Server, head: str, body: bytes = b"") -> bytes:
    """Send a raw request (headers, then `body` as is) and read the answer until it closes."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65_536):
            answer += chunk
    return answer


def test_a_large_declared_body_is_refused_before_it_is_sent(server: Server, alice: Person) -> None:
    # 400 MB announced, none sent: a server that read before refusing would wait for it.
    head = (
        "POST /api/v1/studies HTTP/1.1\nHost: test\nContent-Type: application/json\n"
        f"Authorization: Bearer {alice.token}\nContent-Length: 400000000\n"
    )
    answer = exchange(server, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert str(MAX_BODY_BYTES).encode() in answer


def test_a_streamed_body_stops_being_read_at_the_limit(server: Server, alice: Person) -> None:
    # Chunked, just past the limit and never finished: refused without waiting for its end.
    head = (
        "POST /api/v1/studies HTTP/1.1\nHost: test\nContent-Type: application/json\n"
        f"Authorization: Bearer {alice.token}\nTransfer-Encoding: chunked\n"
    )
    chunk = b"x" * (MAX_BODY_BYTES + 1)
    answer = exchange(server, head, f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


# -- racing deletes --------------------------------------------------------------------------------
def test_racing_deletes_of_one_study_have_one_winner(
    server: Server, alice: Person, store: Store
) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as api:
        for _ in range(5):
            study_id = post(api, alice, "/api/v1/studies", json.dumps(spec()), JSON).json()["id"]
            add_trial(store, study_id)

            def delete(_: int, study_id: int = study_id) -> int:
                with httpx.Client(base_url=server.url, timeout=60) as own:
                    return own.delete(
                        f"/api/v1/studies/{study_id}", headers=alice.headers
                    ).status_code

            with ThreadPoolExecutor(10) as pool:
                answers = Counter(pool.map(delete, range(10)))
            assert answers == {204: 1, 404: 9}, answers
            assert api.get(f"/api/v1/studies/{study_id}", headers=alice.headers).status_code == 404


def test_the_store_deletes_a_study_once(store: Store, alice: Person) -> None:
    study_id = store.studies.create(alice.info, spec())[0].id
    barrier = threading.Barrier(8)

    def delete(_: int) -> str:
        barrier.wait()
        try:
            store.studies.delete(study_id)
        except NotFound:
            return "not found"
        return "deleted"

    with ThreadPoolExecutor(8) as pool:
        assert Counter(pool.map(delete, range(8))) == {"deleted": 1, "not found": 7}


# -- description, trial filters ----------------------------------------------------------------
def test_a_new_description_is_capped_but_a_stored_longer_one_still_loads(
    api: httpx.Client, alice: Person, store: Store
) -> None:
    at_cap = post(
        api,
        alice,
        "/api/v1/studies",
        json.dumps(spec(description="d" * MAX_DESCRIPTION_CHARS)),
        JSON,
    )
    assert at_cap.status_code == 201, at_cap.text[:300]
    over = post(
        api,
        alice,
        "/api/v1/studies",
        json.dumps(spec(description="d" * (MAX_DESCRIPTION_CHARS + 1))),
        JSON,
    )
    assert over.status_code == 422
    (error,) = over.json()["detail"]
    assert error["loc"] == "description"
    assert (
        f"at most {MAX_DESCRIPTION_CHARS} characters, not {MAX_DESCRIPTION_CHARS + 1}"
        in error["msg"]
    )

    # Stored before the cap: shown, and parsed the way every worker parses it at each claim.
    study_id = at_cap.json()["id"]
    stored = {**store.studies.get(study_id).spec, "description": "long " * 10_000}
    with store.db.session() as session:
        session.execute(update(Study).where(Study.id == study_id).values(spec=stored))
    detail = api.get(f"/api/v1/studies/{study_id}", headers=alice.headers)
    assert (
        detail.status_code == 200 and detail.json()["spec"]["description"] == stored["description"]
    )
    assert parse_spec(store.studies.get(study_id).spec).description == stored["description"]
    # A clone is a new spec: it is held to the cap, and says which field to change.
    url = f"/api/v1/studies/{study_id}/clone"
    refused = api.post(url, json={"name": "again"}, headers=alice.headers)
    assert [e["loc"] for e in refused.json()["detail"]] == ["description"]
    assert api.post(url, json={"description": "short"}, headers=alice.headers).status_code == 201


def test_a_trial_filter_whose_low_is_above_its_high_is_422(
    api: httpx.Client, alice: Person
) -> None:
    study_id = post(api, alice, "/api/v1/studies", json.dumps(spec()), JSON).json()["id"]
    url = f"/api/v1/studies/{study_id}/trials"
    for params, loc in (
        ({"param": "smu.alpha:1:0"}, "query.param"),
        ({"value_min": 0.9, "value_max": 0.1}, "query.value_min"),
    ):
        response = api.get(url, params=params, headers=alice.headers)
        assert response.status_code == 422, response.text[:300]
        (error,) = response.json()["detail"]
        assert error["loc"] == loc and "above" in error["msg"], error
    for params in ({"param": "smu.alpha:0.5:0.5"}, {"value_min": 0.5, "value_max": 0.5}):
        assert api.get(url, params=params, headers=alice.headers).status_code == 200
