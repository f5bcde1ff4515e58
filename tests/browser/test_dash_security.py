"""The dashboard in a hostile browser: pages of another origin on the same host (127.0.0.1, another
port: the same *site*, so the Lax session cookie goes along) try to act for the signed-in user.

The other origin is a stdlib HTTP server in a thread serving pages the tests write. Every page,
ours and theirs, reports Content-Security-Policy violations (conftest.REPORT_CSP_VIOLATIONS).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Server, assert_clean, sign_in
from dashboard_helpers import FakeWorker
from playwright.sync_api import expect
from test_dash_studies import spec_text
from test_dash_study import CHARTS, run_study

from service.store import UserInfo

pytestmark = pytest.mark.browser

REFUSED_FRAME = (
    "violates the following Content Security Policy directive: \"frame-ancestors 'none'\""
)
NO_FAVICON = '<!doctype html><link rel="icon" href="data:,">'


@dataclass
class OtherOrigin:
    """Pages served from http://127.0.0.1:<another port>: another origin, the same site."""

    url: str
    pages: dict[str, str] = field(default_factory=dict)

    def serve(self, html: str) -> str:
        """Serve `html` at a new path; its URL."""
        path = f"/{uuid.uuid4().hex[:8]}.html"
        self.pages[path] = NO_FAVICON + html
        return f"{self.url}{path}"


@pytest.fixture(scope="module")
def other_origin() -> Iterator[OtherOrigin]:
    """A second local HTTP server (another port), serving the pages a test gives it."""
    site = OtherOrigin("")

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            html = site.pages.get(self.path.split("?", 1)[0])
            if html is None:
                self.send_error(404)
                return
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test output is for failures

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    site.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def admin_of(server: Server) -> UserInfo:
    admin = server.store.users.authenticate(server.admin_token)
    assert admin is not None
    return admin


def signed_in_as(page: Any, server: Server) -> str:
    """The name the API sees for this browser's session cookie."""
    return str(page.evaluate("url => fetch(url).then((r) => r.json()).then((me) => me.name)",
                             f"{server.url}/api/v1/me"))  # fmt: skip


def no_violations(page: Any) -> None:
    violations = page.evaluate("() => window.cspViolations")
    assert violations == [], "the page broke its CSP:\n" + "\n".join(violations)


# -- 1. cross-origin writes ------------------------------------------------------------------------
def test_another_origin_cannot_cancel_a_study_but_the_dashboard_can(
    page: Any, server: Server, other_origin: OtherOrigin
) -> None:
    """A form POST and a credentialed fetch from another origin are refused (403, study unchanged);
    the dashboard's own Cancel button still works."""
    study, _ = server.store.studies.create(admin_of(server), spec_text("csrf-target", 4))
    cancel = f"{server.url}/api/v1/studies/{study.id}/cancel"
    attack = other_origin.serve(f"""<title>free kittens</title>
<form id="form" method="post" action="{cancel}" enctype="text/plain">
  <input type="hidden" name="x" value="y"></form>
<script>
// As a script would: a "simple" request (no preflight) with the cookie; CORS then hides the
// answer from the script, but the server has acted on it by then, unless it refuses.
window.fetched = fetch("{cancel}", {{ method: "POST", credentials: "include",
    headers: {{ "Content-Type": "text/plain" }}, body: "x" }})
  .then((r) => `answered ${{r.status}}`, (e) => `failed: ${{e.message}}`);
// The same in no-cors mode: an opaque answer, whose status the browser's network log still shows.
window.opaque = () => fetch("{cancel}", {{ method: "POST", mode: "no-cors", credentials: "include",
    body: "x" }}).then((r) => r.type);
</script>""")
    sign_in(page, server)
    page.watch.allow(403, cancel)
    page.watch.allow_console("blocked by CORS policy")
    page.watch.allow_console(f"net::ERR_FAILED ({cancel})")  # the same, as chromium logs it
    page.watch.allow(404, f"{server.url}/favicon.ico")  # asked for by our 403's JSON page
    page.goto(attack)
    assert page.evaluate("() => window.fetched").startswith("failed")
    assert server.store.studies.get(study.id).status == "queued"
    with page.expect_response(cancel) as fetched:
        assert page.evaluate("() => window.opaque()") == "opaque"
    assert fetched.value.status == 403
    assert server.store.studies.get(study.id).status == "queued"

    # The form: the browser navigates to our answer, a 403 that says why.
    with page.expect_response(cancel) as posted:
        page.evaluate("() => document.getElementById('form').submit()")
    assert posted.value.status == 403
    expect(page.locator("body")).to_contain_text("Sec-Fetch-Site: same-site")
    assert server.store.studies.get(study.id).status == "queued"
    # The first fetch, failed by CORS on the attacker's page, is no fault of ours.
    page.watch.failed_requests[:] = [r for r in page.watch.failed_requests if cancel not in r]

    # The dashboard itself: same cookie, same route, with the page's CSRF token.
    page.goto(f"{server.url}/")
    row = page.locator(f'#studies-table tr[data-id="{study.id}"]')
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator('button[data-action="cancel"]').click()
    expect(row.locator(".badge")).to_have_text("cancelled")
    assert server.store.studies.get(study.id).status == "cancelled"
    no_violations(page)
    assert_clean(page)


# -- 2. framing ----------------------------------------------------------------------------------
def test_another_origin_cannot_frame_the_study_page(
    page: Any, server: Server, other_origin: OtherOrigin
) -> None:
    """The browser refuses to render the study page inside another origin's iframe."""
    study, _ = server.store.studies.create(admin_of(server), spec_text("framed", 4))
    framer = other_origin.serve(f"""<title>click here</title>
<iframe id="victim" src="{server.url}/studies/{study.id}" width="1000" height="600"></iframe>""")
    sign_in(page, server)
    page.watch.allow_console(REFUSED_FRAME)
    with page.expect_response(f"{server.url}/studies/{study.id}") as framed:
        page.goto(framer)
    headers = framed.value.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    page.wait_for_load_state("load")
    victim = page.frame_locator("#victim")
    expect(victim.locator("body")).to_be_attached()
    frame = next(f for f in page.frames if f != page.main_frame)
    assert victim.locator("#study").count() == 0
    assert frame.url.startswith("chrome-error://"), frame.url  # chromium's error page instead
    assert any(REFUSED_FRAME in text for text, _ in page.watch.console_errors)
    blocked = f"{server.url}/studies/{study.id} (net::ERR_BLOCKED_BY_RESPONSE)"
    assert blocked in page.watch.failed_requests
    page.watch.failed_requests.remove(blocked)
    assert_clean(page)


# -- 3. every page under the CSP -------------------------------------------------------------------
def show_every_tooltip(page: Any, chart_id: str) -> list[str]:
    """Show the tooltip of each series' first item of the chart; the texts shown."""
    count = int(page.evaluate(
        """id => { const c = echarts.getInstanceByDom(document.getElementById(id));
                   return c ? c.getOption().series.length : 0; }""", chart_id))  # fmt: skip
    texts = []
    for index in range(count):
        text = page.evaluate(
            """async ([id, index]) => {
                 const box = document.getElementById(id);
                 const chart = echarts.getInstanceByDom(box);
                 const series = chart.getOption().series[index];
                 if (!series.data || !series.data.length || series.tooltip?.show === false) return null;
                 chart.dispatchAction({ type: "hideTip" });
                 chart.dispatchAction({ type: "showTip", seriesIndex: index, dataIndex: 0 });
                 for (let i = 0; i < 40 && !box.innerText.trim(); i += 1) {
                   await new Promise((resolve) => setTimeout(resolve, 25));
                 }
                 return box.innerText.trim();
               }""",
            [chart_id, index],
        )
        if text is not None:
            texts.append(text)
    return texts


def charts_drawn(page: Any, ids: tuple[str, ...]) -> None:
    page.wait_for_function(
        """ids => window.echarts && ids.every((id) => { const box = document.getElementById(id);
             return echarts.getInstanceByDom(box) || box.querySelector(".chart-note"); })""",
        arg=list(ids),
    )


def visit(page: Any, url: str) -> None:
    """Open a page of ours; it must carry the CSP."""
    response = page.goto(url)
    assert response is not None and response.ok, url
    assert "script-src 'self'" in response.headers["content-security-policy"], url


def test_every_dashboard_page_works_under_the_csp(page: Any, server: Server) -> None:
    """Login, studies, study (charts and their tooltips), trial, workers, a 404 and the API docs:
    each carries the CSP and none breaks it."""
    page.watch.allow(404, "/studies/987654")
    visit(page, f"{server.url}/login")
    expect(page.locator("#token")).to_be_visible()
    no_violations(page)

    study_id = run_study(server.store, "under-csp", 12, complete=6, pruned=1, failed=1)
    sign_in(page, server)
    visit(page, f"{server.url}/")
    expect(
        page.locator(f'#studies-table tr[data-id="{study_id}"] .progress span').first
    ).to_be_visible()
    page.click("#new-study")
    page.click("#spec-example")
    no_violations(page)

    visit(page, f"{server.url}/studies/{study_id}")
    expect(page.locator("#trials-table tbody tr")).to_have_count(9)
    charts_drawn(page, CHARTS)
    no_violations(page)
    tooltips = {chart: show_every_tooltip(page, chart) for chart in CHARTS}
    assert any("trial" in text for text in tooltips["chart-history"]), tooltips
    assert any("median" in text for text in tooltips["chart-families"]), tooltips
    assert any("importance" in text for text in tooltips["chart-importance"] or ["importance"])
    no_violations(page)

    # A trial of a family that learns (ReLU's page has no activation charts).
    learned = '#trials-table tbody tr[data-state="complete"]:not([data-family="relu"])'
    number = page.locator(learned).first.get_attribute("data-number")
    visit(page, f"{server.url}/studies/{study_id}/trials/{number}")
    trial_charts = ("chart-f", "chart-df", "chart-epochs")
    charts_drawn(page, trial_charts)
    for chart in trial_charts:
        shown = show_every_tooltip(page, chart)
        assert shown and all(text for text in shown), (chart, shown)
    expect(page.locator(".tip-row").first).to_be_attached()
    page.hover("#chart-epochs")  # a real pointer, where ECharts places the tooltip itself
    expect(page.locator("#chart-epochs .tip-row").first).to_be_visible()
    no_violations(page)

    FakeWorker(server.store, f"w-csp-{uuid.uuid4().hex[:4]}")
    visit(page, f"{server.url}/workers")
    expect(page.locator("#workers-table tbody tr").first).not_to_contain_text("Loading")
    no_violations(page)

    assert page.goto(f"{server.url}/studies/987654") is not None
    expect(page.locator("#error-message")).to_contain_text("987654")
    no_violations(page)

    visit(page, f"{server.url}/api/v1/docs")  # Swagger UI, vendored
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("actsearch")
    expect(page.locator(".opblock").first).to_be_visible()
    page.locator(".opblock-summary").first.click()
    no_violations(page)
    assert_clean(page)


# -- 4. login CSRF ---------------------------------------------------------------------------------
def test_a_token_link_from_another_origin_does_not_switch_the_user(
    page: Any, server: Server, other_origin: OtherOrigin
) -> None:
    """Links and forms of another origin cannot sign the browser in as someone else: the link asks
    first ("Sign in as NAME?"), the form is refused; the user's own confirmation does switch."""
    name = f"mallory-{uuid.uuid4().hex[:6]}"
    _, other = server.store.users.create(name)
    login = f"{server.url}/login?token={other}"
    lure = other_origin.serve(f"""<title>docs</title>
<a id="link" href="{login}">read the docs</a>
<form id="form" method="post" action="{server.url}/login">
  <input type="hidden" name="token" value="{other}"><input type="hidden" name="next" value="/">
</form>""")
    sign_in(page, server)

    page.goto(lure)
    page.click("#link")  # a cross-origin navigation: Sec-Fetch-Site is same-site, not none
    expect(page.locator("#confirm-title")).to_have_text(f"Sign in as {name}?")
    expect(page.locator("#confirm-current")).to_have_text("admin")
    assert signed_in_as(page, server) == "admin"
    visit(page, login)  # typed into the address bar (Sec-Fetch-Site: none): signs in at once
    page.wait_for_url(f"{server.url}/")
    expect(page.locator("header .who")).to_contain_text(name)
    sign_in(page, server)  # back to admin, typed again
    assert signed_in_as(page, server) == "admin"

    page.watch.allow(403, f"{server.url}/login")
    page.goto(lure)
    with page.expect_response(f"{server.url}/login") as posted:
        page.evaluate("() => document.getElementById('form').submit()")
    assert posted.value.status == 403
    expect(page.locator("#login-error")).to_contain_text("sign-in refused")
    assert signed_in_as(page, server) == "admin"

    # The user's own choice on the confirmation page does switch.
    page.goto(lure)
    page.click("#link")
    page.click("#confirm-sign-in")
    page.wait_for_url(f"{server.url}/")
    expect(page.locator("header .who")).to_contain_text(name)
    assert signed_in_as(page, server) == name
    no_violations(page)
    assert_clean(page)
