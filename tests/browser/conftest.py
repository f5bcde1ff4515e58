"""Fixtures of the dashboard tests: the real app under uvicorn, Debian's chromium, a watched page.

One uvicorn subprocess per test session serves a fresh, migrated SQLite database; the test
process opens the same database through the store to make users, studies and trials. Every page
is watched: console errors, failed requests, HTTP errors, Content-Security-Policy violations and
any request leaving localhost fail the test (a test may allow a response it provokes, e.g. a 422
from a bad spec).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest

from service import migrate
from service.db import make_engine
from service.store import Store
from tests.support import free_port, uvicorn_command, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
LOCAL_URL = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost)(:\d+)?/")
# In every frame, before the page's own scripts: a CSP violation becomes a console error that
# names what was refused (the watch fails on it), and is kept in window.cspViolations.
REPORT_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const what = `${event.violatedDirective} refused ${event.blockedURI || "inline"}`
    + ` at ${event.sourceFile}:${event.lineNumber}:${event.columnNumber} (${(event.sample || "").slice(0, 80)})`;
  window.cspViolations.push(what);
  console.error(`CSP violation: ${what}`);
});
"""

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Server:
    """The app under uvicorn, its database and an admin who can sign in."""

    url: str
    database_url: str
    store: Store
    admin_token: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-chars:]


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    wait_healthy(url, process, log_path)


def start_server(home: Path, database_url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """uvicorn serving create_app() on database_url at a free port; (process, url, log path)."""
    port = free_port()
    env = {
        **os.environ,
        "ACTSEARCH_HOME": str(home),
        "ACTSEARCH_DATABASE_URL": database_url,
        "ACTSEARCH_LOG_LEVEL": "WARNING",
    }
    log_path = home / "uvicorn.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            uvicorn_command(port), cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log_path)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, url, log_path


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop uvicorn (SIGTERM, then SIGKILL after 10 s)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def migrated_sqlite(path: Path) -> str:
    """A new SQLite database with our tables; its URL."""
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The dashboard served by uvicorn on a temporary SQLite database, with an admin token."""
    home = tmp_path_factory.mktemp("dashboard")
    database_url = migrated_sqlite(home / "actsearch.db")
    store = Store.open(database_url)
    _, admin_token = store.users.create("admin", is_admin=True)
    process, url, log_path = start_server(home, database_url)
    try:
        yield Server(url, database_url, store, admin_token, process, log_path)
    finally:
        stop_server(process)
        store.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class PageWatch:
    """What a page did that a test must fail on, and every URL it requested."""

    console_errors: list[tuple[str, str]] = field(default_factory=list)  # (text, source URL)
    failed_requests: list[str] = field(default_factory=list)
    http_errors: list[tuple[int, str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    allowed: list[tuple[int, str]] = field(default_factory=list)
    allowed_console: list[str] = field(default_factory=list)

    def allow(self, status: int, url_part: str) -> None:
        """Expect responses with `status` whose URL contains `url_part` (a provoked error)."""
        self.allowed.append((status, url_part))

    def allow_console(self, text_part: str) -> None:
        """Expect console errors whose "text (source URL)" contains `text_part` (e.g. the
        browser refusing a frame)."""
        self.allowed_console.append(text_part)

    def _is_allowed(self, status: int, url: str) -> bool:
        return any(status == s and part in url for s, part in self.allowed)

    def _browser_echo(self, text: str, url: str) -> bool:
        # Chromium repeats every HTTP error on the console; an allowed one is not a new problem.
        match = re.match(
            r"Failed to load resource: the server responded with a status of (\d+)", text
        )
        return bool(match) and self._is_allowed(int(match.group(1)), url)

    def problems(self) -> list[str]:
        """Everything that went wrong on the page, one line each."""
        out = [
            f"console error: {text} ({url})"
            for text, url in self.console_errors
            if not self._browser_echo(text, url)
            and not any(part in f"{text} ({url})" for part in self.allowed_console)
        ]
        out += [f"request failed: {r}" for r in self.failed_requests]
        out += [f"HTTP {s}: {u}" for s, u in self.http_errors if not self._is_allowed(s, u)]
        out += [f"left localhost: {u}" for u in self.requests if not LOCAL_URL.match(u)]
        return out


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser page, watched; a screenshot lands in test-output/browser/ at the end."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    page = context.new_page()
    watch = PageWatch()
    page.on("console", lambda m: _on_console(watch, m))
    page.on("pageerror", lambda e: watch.console_errors.append((f"uncaught: {e}", "")))
    page.on("requestfailed", lambda r: _on_failed(watch, r))
    page.on(
        "request", lambda r: watch.requests.append(r.url) if not r.url.startswith("data:") else None
    )
    page.on(
        "response",
        lambda r: watch.http_errors.append((r.status, r.url)) if r.status >= 400 else None,
    )
    page.watch = watch
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()


def _on_console(watch: PageWatch, message: Any) -> None:
    if message.type == "error":
        watch.console_errors.append((message.text, (message.location or {}).get("url", "")))


def _on_failed(watch: PageWatch, request: Any) -> None:
    # A page navigating away aborts its pending polls: that is not a failure of the page.
    if request.failure and "ERR_ABORTED" in request.failure:
        return
    watch.failed_requests.append(f"{request.url} ({request.failure})")


def assert_clean(page: Any) -> None:
    """Fail with every console error, failed request, HTTP error or non-local request seen."""
    problems = page.watch.problems()
    assert not problems, "the page misbehaved:\n" + "\n".join(problems)


def sign_in(page: Any, server: Server, token: str | None = None) -> None:
    """Sign in through the `?token=` link (what `actsearch up` prints)."""
    page.goto(f"{server.url}/login?token={token or server.admin_token}")
    page.wait_for_url(f"{server.url}/")
