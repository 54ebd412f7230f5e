"""The consent journey in a real browser: log in to the sample agent, ask, consent at the
provider, come back through the vault's callback (via the local API Gateway) to the agent's return
page, and get the calendar answer; then see the account on the "Connected accounts" page,
disconnect it there, and need consent again."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent_vault_local.runner import LocalInfo
from tests.local.helpers import fresh_grants

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 20_000


def sign_in_at_provider(page: Any, info: LocalInfo, username: str) -> None:
    page.wait_for_selector("input[name=login]")
    assert page.url.startswith(info.provider["issuer"])
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", info.users[username])
    with page.expect_navigation():  # the whole redirect chain, to the next page that loads
        page.click("button[type=submit]")


def allow_if_asked(page: Any, info: LocalInfo) -> None:
    allow = page.locator("button[name=decision][value=allow]")
    if page.url.startswith(info.provider["issuer"]) and allow.count():
        with page.expect_navigation():
            allow.click()


def test_consent_in_a_real_browser(local_with_agent: LocalInfo, browser: Any) -> None:
    from playwright.sync_api import expect

    # Every wait below may take TIMEOUT_MS (the page's default too): on a busy machine an answer
    # of /ask, through the vault and the provider, can take longer than expect's 5 s.
    expect.set_options(timeout=TIMEOUT_MS)
    info = local_with_agent
    assert info.agent_url is not None
    fresh_grants(info, "alice")
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        # 1. Log in to the agent (its OIDC login at the local identity provider).
        page.goto(f"{info.agent_url}/")
        page.click("#login")
        sign_in_at_provider(page, info, "alice")
        allow_if_asked(page, info)  # the app's own OIDC consent, if the provider asks
        page.wait_for_url(re.compile(re.escape(info.agent_url) + r"/(\?.*)?$"))
        expect(page.locator("#who")).to_contain_text("Logged in")

        # 2. Ask: consent is needed, the agent shows the provider's authorization URL.
        page.click("form#ask button")
        consent_link = page.locator("#consent")
        expect(consent_link).to_be_visible()
        href = consent_link.get_attribute("href")
        assert href is not None and href.startswith(info.provider["authorization_endpoint"])
        # the flow is tied to this browser (a cookie), never shown to it
        flow_cookies = [c for c in context.cookies() if c["name"] == "agent_consent_flow"]
        assert len(flow_cookies) == 1 and flow_cookies[0]["httpOnly"]
        assert flow_cookies[0]["value"] not in page.content()

        # 3. Consent at the provider (already signed in there); the provider redirects to the
        #    vault's callback, which redirects to the agent's return page, which binds the grant.
        callbacks: list[str] = []
        page.on(
            "request",
            lambda r: callbacks.append(r.url) if r.url.startswith(info.callback_url) else None,
        )
        with page.expect_navigation():
            consent_link.click()
        assert page.url.startswith(info.provider["issuer"])
        if page.locator("input[name=login]").count():
            sign_in_at_provider(page, info, "alice")
        allow_if_asked(page, info)
        page.wait_for_url(re.compile(re.escape(info.return_url) + r"\?"))
        expect(page.locator("#status")).to_contain_text("Connected")
        assert len(callbacks) == 1
        assert "code=" in callbacks[0] and "state=" in callbacks[0]
        assert "status=pending_binding" in page.url and "binding_code=" in page.url
        assert not [c for c in context.cookies() if c["name"] == "agent_consent_flow"]

        # 4. Ask again: the agent gets its session-bound token and reads the calendar.
        page.goto(f"{info.agent_url}/")
        page.click("form#ask button")
        expect(page.locator("#answer")).to_contain_text("Team stand-up")
        expect(page.locator("#answer")).to_contain_text("Quarterly planning")

        # 5. Connected accounts: the calendar is listed (last used: the token step 4 minted);
        #    disconnect it with the page's button (a same-origin JSON POST).
        page.click("#connected")
        page.wait_for_url(re.compile(re.escape(info.agent_url) + r"/connections$"))
        rows = page.locator("#connections tr[id^=connection-]")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(info.provider_name)
        expect(rows.first).not_to_contain_text("never")
        rows.first.locator("button.revoke").click()
        expect(page.locator("#connections-status")).to_contain_text(
            f"Disconnected {info.provider_name}"
        )
        expect(rows).to_have_count(0)
        page.reload()
        expect(page.locator("#none")).to_be_visible()

        # 6. Ask again: the grant is gone (revoked upstream), so consent is needed again.
        page.goto(f"{info.agent_url}/")
        page.click("form#ask button")
        expect(page.locator("#consent")).to_be_visible()
    finally:
        context.close()
