"""Dashboard pages."""

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages and static files."""
