"""Settings of every actsearch process, read from the environment (prefix ACTSEARCH_)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_AUTO_PROCESSES = 4


def default_home() -> Path:
    """Where the embedded database, cache and logs live unless ACTSEARCH_HOME says otherwise."""
    return Path.home() / ".actsearch"


class Settings(BaseSettings):
    """Validated configuration; built once per process by its entry point, never at import."""

    model_config = SettingsConfigDict(env_prefix="ACTSEARCH_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="state directory")
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means the SQLite file <home>/actsearch.db"
    )
    # A transaction-pooling PgBouncer between the processes and PostgreSQL (docs/scale.md):
    # the same as `?pgbouncer=true` in the URL; the resolved URL carries it to every process.
    database_pooler: Literal["none", "pgbouncer"] = Field(
        default="none", description="pgbouncer: the database URL names a transaction pooler"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # API server processes behind one port (`serve`/`up --processes`): 0 = one per core, at most
    # MAX_AUTO_PROCESSES (each holds up to 16 database connections: service.app.POOL).
    processes: int = Field(default=0, ge=0, le=64, description="API server processes; 0: auto")
    data: str | None = Field(
        default=None,
        description="where workers find CIFAR: a torchvision root, an image folder or a tarball",
    )
    download: bool = Field(
        default=True, description="let workers download torchvision CIFAR when it is missing"
    )
    cache_dir: Path | None = Field(default=None, description="decoded-data cache; <home>/cache")
    # Heartbeats: a run whose worker is silent for `grace_s` seconds is failed as worker_lost.
    heartbeat_s: float = Field(default=5.0, gt=0)
    grace_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, description="attempts per trial incl. the first")
    session_secret: str = Field(default="", description="signs dashboard cookies; random if empty")
    # Behind a reverse proxy (docs/security.md): believe its X-Forwarded-Host / X-Forwarded-Proto /
    # Forwarded headers. Only safe when every request reaches the API through that proxy.
    trust_proxy: bool = Field(
        default=False, description="trust a reverse proxy's X-Forwarded-* and Forwarded headers"
    )
    secure_cookies: bool = Field(
        default=False, description="mark the session cookie Secure even on plain-HTTP requests"
    )
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                "ACTSEARCH_DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL"
            )
        return value

    @model_validator(mode="after")
    def _pooler_needs_postgresql(self) -> Settings:
        if self.database_pooler != "none" and not self.database_url.startswith("postgresql"):
            raise ValueError(
                "ACTSEARCH_DATABASE_POOLER=pgbouncer needs a postgresql+psycopg:// "
                "ACTSEARCH_DATABASE_URL naming the pooler's host and port"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file; flagged for a pooler."""
        if not self.database_url:
            return f"sqlite:///{self.home / 'actsearch.db'}"
        if (
            self.database_pooler == "pgbouncer"
            and "pgbouncer=" not in urlsplit(self.database_url).query
        ):
            separator = "&" if urlsplit(self.database_url).query else "?"
            return f"{self.database_url}{separator}pgbouncer=true"
        return self.database_url

    @property
    def resolved_processes(self) -> int:
        """How many API server processes to run: `processes`, or one per core (bounded)."""
        return self.processes or max(1, min(os.cpu_count() or 1, MAX_AUTO_PROCESSES))

    @property
    def resolved_cache_dir(self) -> Path:
        """Directory for decoded datasets."""
        return self.cache_dir or self.home / "cache"
