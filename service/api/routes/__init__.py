"""All API routers, included by create_app under /api/v1."""

from fastapi import APIRouter

ROUTERS: list[APIRouter] = []
