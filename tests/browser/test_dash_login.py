"""Signing in and out of the dashboard in a real browser."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Server, assert_clean
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_every_page_sends_a_signed_out_browser_to_login(page: Any, server: Server) -> None:
    """Pages redirect to /login, remembering where the browser was going."""
    for path in ("/", "/workers", "/studies/1", "/studies/1/trials/0"):
        page.goto(f"{server.url}{path}")
        expected = "/login" if path == "/" else f"/login?next={path}"
        assert page.url == f"{server.url}{expected}"
        expect(page.locator("#token")).to_be_visible()
    assert_clean(page)


def test_login_form_cookie_and_logout(page: Any, server: Server) -> None:
    """A wrong token is refused with a message; the right one sets an HttpOnly, Lax cookie."""
    page.watch.allow(401, "/login")
    page.goto(f"{server.url}/workers")
    page.fill("#token", "as_not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("unknown or revoked token")

    page.fill("#token", server.admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/workers")  # back where it was going
    cookie = next(c for c in page.context.cookies() if c["name"] == "actsearch_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert server.admin_token not in page.content()  # never echoed into the page

    page.click("#logout")
    page.wait_for_url(f"{server.url}/login")
    assert not [c for c in page.context.cookies() if c["name"] == "actsearch_session"]
    page.goto(f"{server.url}/")
    assert page.url == f"{server.url}/login"
    assert_clean(page)


def test_token_link_signs_in_directly(page: Any, server: Server) -> None:
    """`/login?token=…` (printed by `actsearch up`) signs in and drops the token from the URL."""
    page.watch.allow(401, "/login?token=")
    page.goto(f"{server.url}/login?token=as_wrong")
    expect(page.locator("#login-error")).to_contain_text("not valid")
    page.goto(f"{server.url}/login?token={server.admin_token}&next=/workers")
    page.wait_for_url(f"{server.url}/workers")
    expect(page.locator("header .who")).to_contain_text("admin")
    assert_clean(page)
