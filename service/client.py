"""A small HTTP client of our API for the CLI: URL and token from flags, env or `actsearch up`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from service.settings import default_home

CLIENT_FILE = "client.json"  # written by `actsearch up`: the local URL and the admin's login token
DEFAULT_URL = "http://127.0.0.1:8000"
POLL_MAX_STALE_S = 10  # a followed study may show an answer this old (seconds); see poll()


class ApiError(Exception):
    """The API answered with an error; str() is the message to show.

    `status` is the HTTP status (0: no answer); `fields` the API's field errors
    ({"loc", "msg"}: an invalid spec), empty for other errors.
    """

    def __init__(
        self, status: int, message: str, fields: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields or []


class TokenRequired(Exception):
    """A URL was given without a token, and the saved one belongs to another URL."""


def field_lines(fields: list[dict[str, Any]]) -> list[str]:
    """Field errors or warnings as `field: message` lines."""
    return [f"{f.get('loc') or '(spec)'}: {f.get('msg', f)}" for f in fields]


def _error(response: httpx.Response) -> ApiError:
    """The API's error answer as the message a user reads: its detail, one field per line."""
    status = response.status_code
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:500]
    fields = [d for d in detail if isinstance(d, dict)] if isinstance(detail, list) else []
    if fields:
        message = "\n".join(["invalid request:", *("  " + line for line in field_lines(fields))])
    else:
        message = str(detail)
    if status == 401:
        message += " (give a token with --token or ACTSEARCH_TOKEN)"
    elif status >= 500:
        message = f"the API failed (HTTP {status}): {message}"
    return ApiError(status, message, fields)


def local_client_file(home: Path | None = None) -> Path:
    """Where `actsearch up` leaves the local URL and token."""
    return (home or Path(os.environ.get("ACTSEARCH_HOME", default_home()))) / CLIENT_FILE


def write_local_client(url: str, token: str, home: Path) -> None:
    """Remember the local service for later CLI calls (readable by the owner only)."""
    path = local_client_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "token": token}))
    path.chmod(0o600)


def saved_client(home: Path | None = None) -> tuple[str | None, str | None]:
    """(url, token) that `actsearch up` saved on this machine, or (None, None)."""
    path = local_client_file(home)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # none saved, or not ours to read
        return None, None
    if not isinstance(data, dict):
        return None, None
    return data.get("url") or None, data.get("token") or None


def same_service(a: str, b: str) -> bool:
    """Whether two base URLs name the same service (case of scheme and host, default port and
    trailing slashes aside)."""

    def key(text: str) -> tuple[str, str, int | None, str]:
        try:
            url = httpx.URL(text.strip())
        except httpx.InvalidURL:
            return "", "", None, text.strip().rstrip("/")
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
        return url.scheme, url.host.lower(), port, url.path.rstrip("/")

    return key(a) == key(b)


@dataclass
class Client:
    """Calls /api/v1 with a bearer token."""

    url: str
    token: str | None
    timeout: float = 30.0
    # poll(): the last answer and its ETag per path and query
    _kept: dict[str, tuple[str, str]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def resolve(cls, url: str | None, token: str | None) -> Client:
        """Flags first, then ACTSEARCH_URL / ACTSEARCH_TOKEN, then what `actsearch up` wrote.

        The token `actsearch up` saved is the local admin's: it is sent only to the URL saved
        with it, never to another server named by --url / ACTSEARCH_URL.
        """
        url = url or os.environ.get("ACTSEARCH_URL")
        token = token or os.environ.get("ACTSEARCH_TOKEN")
        saved_url, saved_token = saved_client()
        if not url:
            url = saved_url or DEFAULT_URL
            if saved_url:
                token = token or saved_token
        elif not token:
            if saved_url and same_service(url, saved_url):
                token = saved_token
            else:
                why = (
                    f" (the token `actsearch up` saved is for {saved_url} only)"
                    if saved_url
                    else ""
                )
                raise TokenRequired(
                    f"no token for {url.rstrip('/')}: give --token or ACTSEARCH_TOKEN{why}"
                )
        return cls(url=url.rstrip("/"), token=token)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; raises ApiError with the API's message on 4xx/5xx or no connection."""
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = httpx.request(
                method, f"{self.url}/api/v1{path}", headers=headers, timeout=self.timeout, **kwargs
            )
        except httpx.TransportError as error:
            raise ApiError(
                0,
                f"cannot reach the actsearch API at {self.url} ({error}); is "
                "`actsearch up` (or `actsearch serve`) running? Set --url or "
                "ACTSEARCH_URL",
            ) from error
        if response.status_code >= 400:
            raise _error(response)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET → JSON."""
        return self.request("GET", path, **kwargs).json()

    def poll(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET → JSON, conditionally: the ETag of this path and query's last answer goes along
        as If-None-Match, and while the API answers 304 (unchanged; no body) that answer is
        returned again (a fresh copy). For following a study: an answer up to POLL_MAX_STALE_S
        old is accepted (the server computes the current one meanwhile, for the next poll)."""
        key = f"{path}?{urlencode(sorted((params or {}).items()))}"
        kept = self._kept.get(key)
        headers = {}
        if kept:  # a repeat poll: it may keep its copy while the server computes the new one
            headers = {"If-None-Match": kept[0], "Cache-Control": f"max-stale={POLL_MAX_STALE_S}"}
        response = self.request("GET", path, params=params, headers=headers)
        if response.status_code == 304 and kept:
            return json.loads(kept[1])
        tag = response.headers.get("ETag")
        if tag:
            self._kept[key] = (tag, response.text)
        return response.json()

    def post(self, path: str, **kwargs: Any) -> Any:
        """POST → JSON."""
        return self.request("POST", path, **kwargs).json()
