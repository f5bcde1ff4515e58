"""Dashboard pages: login, studies, a study, a trial, a campaign, workers; static files, data.

Pages are thin server-rendered shells (header, headline facts); each page's JS module fetches
its data from /api/v1 and /dashboard/data with the session cookie and polls while live.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Scope

from search_space.registry import resolve_settings
from service.api import polls
from service.api.security import cross_origin_reason
from service.dashboard.auth import (
    LoginRequired,
    PageUser,
    csrf_token,
    redirect_to_login,
    safe_next,
    session_user,
    signed_in,
    signed_out,
)
from service.dashboard.data import router as data_router
from service.dashboard.importance import ImportanceCache
from service.store import NotFound, UserInfo

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_PREFIX = "/dashboard/static"

router = APIRouter(include_in_schema=False)

# Modules each page's script imports: preloaded from <head> so they load in parallel, not as a
# waterfall of imports (the study page's first paint depends on it).
PAGE_MODULES = {
    "studies": ("common.js", "spec_editor.js"),
    "study": ("common.js", "charts.js", "study_charts.js", "trial_table.js"),
    "trial": ("common.js", "charts.js"),
    "workers": ("common.js",),
    "campaign": ("common.js",),
}


class RevalidatedStatic(StaticFiles):
    """Static files the browser must revalidate (ETag → 304), so a new version shows at once."""

    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        """The file, marked `Cache-Control: no-cache`."""
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _static_version() -> str:
    """A short hash of the static files' names and times: busts caches on upgrade."""
    digest = hashlib.sha1()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(STATIC)}:{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()[:10]


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    version = _static_version()
    templates.env.globals["static"] = lambda path: f"{STATIC_PREFIX}/{path}?v={version}"
    return templates


def _render(
    request: Request,
    name: str,
    user: UserInfo | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.dashboard_templates
    modules = PAGE_MODULES.get(context.get("page", ""), ())
    # The page's scripts send it back with every change they make (service.api.security).
    csrf = csrf_token(request) if user is not None else None
    return templates.TemplateResponse(
        request,
        name,
        {"user": user, "modules": modules, "csrf_token": csrf, **context},
        status_code=status_code,
    )


def _not_found(request: Request, user: UserInfo, message: str) -> HTMLResponse:
    return _render(request, "error.html", user, status_code=404, message=message)


# -- login ------------------------------------------------------------------------------------
def _login_error(request: Request, status_code: int, error: str, next: str | None) -> HTMLResponse:
    return _render(
        request, "login.html", None, status_code=status_code, error=error, next=safe_next(next)
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, token: str | None = None, next: str | None = None) -> Response:
    """The login form; `?token=…` (the link `actsearch up` prints) signs in directly only when the
    browser says the link was opened from outside: typed, a bookmark, clicked in a terminal
    (`Sec-Fetch-Site: none`). From a page it asks first, so that no page can switch the user."""
    if token:
        owner = request.app.state.store.users.authenticate(token)
        if owner is None:
            return _login_error(
                request,
                401,
                "that token is not valid (revoked or mistyped); ask an admin for a new one "
                "with `actsearch users token <name>`",
                next,
            )
        if request.headers.get("sec-fetch-site") == "none":
            return signed_in(request, token, next)
        current = session_user(request)
        if current is not None and current.id == owner.id:
            return RedirectResponse(safe_next(next), status_code=303)
        return _render(
            request, "login_confirm.html", current, owner=owner, token=token, next=safe_next(next)
        )
    if session_user(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _render(request, "login.html", None, error=None, next=safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the posted token; on success set the session cookie and go on.

    Only this server's own forms (the login form, the confirmation) may post here: a form on
    another page of the site could otherwise sign the browser in as someone else."""
    refused = cross_origin_reason(request)
    if refused is not None:
        return _login_error(
            request, 403, f"sign-in refused: {refused}; sign in on this server's login page", next
        )
    token = token.strip()
    if not token or request.app.state.store.users.authenticate(token) is None:
        return _login_error(
            request,
            401,
            "unknown or revoked token; paste the token printed by `actsearch up` or "
            "`actsearch users create`",
            next,
        )
    return signed_in(request, token, next)


@router.post("/logout")
def logout(request: Request) -> Response:
    """Drop the session cookie and return to the login form (only from our own pages)."""
    refused = cross_origin_reason(request)
    if refused is not None:
        message = f"sign-out refused: {refused}; use the Sign out button of the dashboard"
        return _render(request, "error.html", None, 403, title="Not signed out", message=message)
    return signed_out(request)


# -- pages ------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request, user: PageUser) -> HTMLResponse:
    """All studies: progress, best result, submit, cancel/pause/resume."""
    return _render(request, "studies.html", user, page="studies")


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, study_id: int, user: PageUser) -> HTMLResponse:
    """One study: headline vs baseline, family comparison, history, importance, trials."""
    try:
        study = request.app.state.store.studies.get(study_id)
    except NotFound as error:
        return _not_found(request, user, str(error))
    can_manage = user.is_admin or study.owner_id == user.id
    return _render(request, "study.html", user, page="study", study=study, can_manage=can_manage)


@router.get("/studies/{study_id}/trials/{number}", response_class=HTMLResponse)
def trial_page(request: Request, study_id: int, number: int, user: PageUser) -> HTMLResponse:
    """One trial: parameters, curves, learned activations, record, manifest, failure."""
    try:
        study = request.app.state.store.studies.get(study_id)
    except NotFound as error:
        return _not_found(request, user, str(error))
    fixed = fixed_families(study.spec)
    return _render(
        request, "trial.html", user, page="trial", study=study, number=number, fixed_families=fixed
    )


def fixed_families(spec: dict[str, Any]) -> list[str]:
    """The spec's activation choices with nothing to train (ReLU, GELU; SMU with its parameters
    frozen): their trials learned no activation, so the trial page shows none."""
    fixed = []
    for key, entry in (spec.get("activations") or {}).items():
        trainable = (entry or {}).get("trainable") or {}
        try:
            _, _, _, flags = resolve_settings(key, trainable=trainable)
        except ValueError:  # a family this version does not know: show what the record holds
            continue
        if not any(flags.values()):
            fixed.append(key)
    return fixed


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(request: Request, campaign_id: int, user: PageUser) -> HTMLResponse:
    """One campaign: its stages as a funnel, its verdicts, the family × model transfer table."""
    try:
        campaign = request.app.state.store.campaigns.get(campaign_id)
    except NotFound as error:
        return _not_found(request, user, str(error))
    can_manage = user.is_admin or campaign.owner_id == user.id
    return _render(
        request, "campaign.html", user, page="campaign", campaign=campaign, can_manage=can_manage
    )


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request, user: PageUser) -> HTMLResponse:
    """Every worker: device, current trial and epoch, heartbeat, throughput."""
    return _render(request, "workers.html", user, page="workers")


# -- the API's documentation ------------------------------------------------------------------
def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI for /api/v1, vendored and started from a file (the CSP allows no CDN and no
    inline script)."""
    return _render(request, "api_docs.html", None, openapi_url=request.app.openapi_url)


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages and static files, and the API's documentation page."""
    app.state.dashboard_templates = _templates()
    app.state.importance = ImportanceCache()
    app.add_exception_handler(LoginRequired, redirect_to_login)
    app.mount(STATIC_PREFIX, RevalidatedStatic(directory=STATIC), name="dashboard-static")
    # Both through polls: its table of GET routes follows the app's order (data_router polls).
    polls.include_router(app, router)
    polls.include_router(app, data_router)
    # A plain route, like FastAPI's own docs route: it is not an API operation.
    app.add_route("/api/v1/docs", api_docs, include_in_schema=False)
