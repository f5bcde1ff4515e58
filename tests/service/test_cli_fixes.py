"""The `actsearch` client side: whose token goes where, and export options the API cannot serve.

The CLI runs as a real subprocess against a small HTTP server that records what it receives: the
stand-in for "whatever server --url names", so a test can see which token (if any) reached it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.client import Client, TokenRequired, same_service, write_local_client

ROOT = Path(__file__).resolve().parents[2]
SAVED_URL = "http://127.0.0.1:8123"  # where the local `actsearch up` of these tests ran
SAVED_TOKEN = "as_local-admin-token"


@dataclass
class Recorder:
    """An HTTP server that answers every GET and remembers (path, Authorization header)."""

    url: str
    requests: list[tuple[str, str | None]] = field(default_factory=list)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A foreign server on a free port."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            body = json.dumps({"items": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Recorder(url=f"http://127.0.0.1:{server.server_address[1]}", requests=seen)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home where `actsearch up` saved SAVED_URL and SAVED_TOKEN; no URL or token in env."""
    monkeypatch.setenv("ACTSEARCH_HOME", str(tmp_path))
    monkeypatch.delenv("ACTSEARCH_URL", raising=False)
    monkeypatch.delenv("ACTSEARCH_TOKEN", raising=False)
    write_local_client(SAVED_URL, SAVED_TOKEN, tmp_path)
    return tmp_path


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    environment.update(ACTSEARCH_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- which token goes where ------------------------------------------------------------------
def test_without_url_the_saved_service_and_token_are_used(home: Path) -> None:
    client = Client.resolve(None, None)
    assert (client.url, client.token) == (SAVED_URL, SAVED_TOKEN)
    assert Client.resolve(None, "as_mine").token == "as_mine"


@pytest.mark.parametrize(
    "url", [SAVED_URL, SAVED_URL + "/", SAVED_URL + "//", "HTTP://127.0.0.1:8123/"]
)
def test_the_saved_token_goes_to_the_url_it_was_saved_with(home: Path, url: str) -> None:
    client = Client.resolve(url, None)
    assert client.token == SAVED_TOKEN
    assert client.url == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8124", "http://team-server:8123", "https://127.0.0.1:8123"]
)
def test_the_saved_token_never_goes_to_another_url(home: Path, url: str) -> None:
    with pytest.raises(TokenRequired, match="--token or ACTSEARCH_TOKEN") as refused:
        Client.resolve(url, None)
    assert SAVED_URL in str(refused.value)  # says which URL the saved token is for
    assert Client.resolve(url, "as_theirs").token == "as_theirs"


def test_env_url_and_token_are_used_together(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTSEARCH_URL", "http://team-server:8000/")
    with pytest.raises(TokenRequired):
        Client.resolve(None, None)
    monkeypatch.setenv("ACTSEARCH_TOKEN", "as_team")
    client = Client.resolve(None, None)
    assert (client.url, client.token) == ("http://team-server:8000", "as_team")


def test_same_service_ignores_case_default_ports_and_slashes() -> None:
    assert same_service("http://Example.org/", "http://example.org:80")
    assert same_service("https://example.org:443//", "https://example.org")
    assert not same_service("http://example.org", "http://example.org:8000")
    assert not same_service("http://example.org/a", "http://example.org/b")


def test_cli_sends_no_token_to_a_foreign_url(home: Path, recorder: Recorder) -> None:
    result = _cli(home, "status", "--url", recorder.url)
    assert result.returncode == 2, result.stderr
    assert "give --token or ACTSEARCH_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
    assert recorder.requests == []  # refused before any request was made

    result = _cli(home, "status", ACTSEARCH_URL=recorder.url, ACTSEARCH_TOKEN="as_theirs")
    assert result.returncode == 0, result.stderr
    assert recorder.requests == [("/api/v1/studies?limit=20", "Bearer as_theirs")]


def test_cli_sends_the_saved_token_to_its_own_url(tmp_path: Path, recorder: Recorder) -> None:
    write_local_client(recorder.url, SAVED_TOKEN, tmp_path)
    result = _cli(tmp_path, "status", ACTSEARCH_URL=recorder.url + "/")
    assert result.returncode == 0, result.stderr
    assert recorder.requests == [("/api/v1/studies?limit=20", f"Bearer {SAVED_TOKEN}")]


# -- export ----------------------------------------------------------------------------------
def test_export_latex_of_trials_is_refused_up_front(home: Path, recorder: Recorder) -> None:
    for args in (["--format", "latex"], ["--what", "trials", "--format", "latex"]):
        result = _cli(home, "export", "1", *args, "--url", recorder.url, "--token", "t")
        assert result.returncode == 2
        assert "usage: actsearch export" in result.stderr
        assert "--what leaderboard --format latex" in result.stderr  # the valid combination
    assert recorder.requests == []


def test_export_leaderboard_latex_asks_the_leaderboard(home: Path, recorder: Recorder) -> None:
    result = _cli(
        home, "export", "1", "--what", "leaderboard", "--format", "latex",
        "--url", recorder.url, "--token", "t",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert recorder.requests == [("/api/v1/studies/1/leaderboard?format=latex", "Bearer t")]


def test_export_help_states_what_and_format_with_defaults(home: Path) -> None:
    result = _cli(home, "export", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Default: trials" in text
    assert "csv (default), json, or latex (only with --what leaderboard)" in text
