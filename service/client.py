"""A small HTTP client of our API for the CLI: URL and token from flags, env or `actsearch up`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.settings import default_home

CLIENT_FILE = "client.json"  # written by `actsearch up`: the local URL and the admin's login token


class ApiError(Exception):
    """The API answered with an error; str() is the message to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(f"{d.get('loc', '?')}: {d.get('msg', d)}" for d in detail)
    return str(detail)


def local_client_file(home: Path | None = None) -> Path:
    """Where `actsearch up` leaves the local URL and token."""
    return (home or Path(os.environ.get("ACTSEARCH_HOME", default_home()))) / CLIENT_FILE


def write_local_client(url: str, token: str, home: Path) -> None:
    """Remember the local service for later CLI calls (readable by the owner only)."""
    path = local_client_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "token": token}))
    path.chmod(0o600)


@dataclass
class Client:
    """Calls /api/v1 with a bearer token."""

    url: str
    token: str | None
    timeout: float = 30.0

    @classmethod
    def resolve(cls, url: str | None, token: str | None) -> Client:
        """Flags first, then ACTSEARCH_URL / ACTSEARCH_TOKEN, then what `actsearch up` wrote."""
        url = url or os.environ.get("ACTSEARCH_URL")
        token = token or os.environ.get("ACTSEARCH_TOKEN")
        saved = local_client_file()
        if (not url or not token) and saved.exists():
            data = json.loads(saved.read_text())
            url = url or data.get("url")
            token = token or data.get("token")
        return cls(url=(url or "http://127.0.0.1:8000").rstrip("/"), token=token)

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
            try:
                detail = _detail_text(response.json().get("detail"))
            except ValueError:
                detail = response.text[:500]
            if response.status_code == 401:
                detail += " (give a token with --token or ACTSEARCH_TOKEN)"
            raise ApiError(response.status_code, f"HTTP {response.status_code}: {detail}")
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET → JSON."""
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        """POST → JSON."""
        return self.request("POST", path, **kwargs).json()
