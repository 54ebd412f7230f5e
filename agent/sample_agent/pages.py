"""The agent's HTML pages: one small template, strict headers (no caching, a tight CSP)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

from fastapi.responses import HTMLResponse

from agent_vault import Connection

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_HOME_SCRIPT = """
const form = document.getElementById('ask');
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const out = document.getElementById('answer');
  out.textContent = '...';
  const r = await fetch('ask', {method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({question: document.getElementById('q').value})});
  const body = await r.json();
  out.textContent = '';
  if (body.consent_url) {
    const a = document.createElement('a');
    a.href = body.consent_url; a.id = 'consent'; a.textContent = 'Connect your calendar';
    out.append(body.message + ' ', a);
  } else {
    out.textContent = body.answer || body.detail || JSON.stringify(body);
  }
});
"""


_CONNECTIONS_SCRIPT = """
document.querySelectorAll('button.revoke').forEach((button) => {
  button.addEventListener('click', async () => {
    const out = document.getElementById('connections-status');
    button.disabled = true;
    const r = await fetch('connections/revoke', {method: 'POST',
      headers: {'content-type': 'application/json'},
      body: JSON.stringify({grant_id: button.dataset.grant})});
    const body = await r.json();
    if (r.ok) {
      button.closest('tr').remove();
      out.textContent = 'Disconnected ' + button.dataset.provider + '.';
    } else {
      button.disabled = false;
      out.textContent = body.detail || 'The vault refused.';
    }
  });
});
"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A page: ``title`` is escaped here, ``body`` is HTML (escape what goes into it)."""
    document = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;"
        "padding:0 1rem}code{background:#eee;padding:0 .2em}</style>"
        f"<h1>{html.escape(title)}</h1>{body}</html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _when(epoch: int | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def connections(items: Sequence[Connection]) -> HTMLResponse:
    """The accounts the logged-in user connected to this agent, each with a revoke button."""
    if not items:
        table = "<p id=none>No connected accounts.</p>"
    else:
        rows = "".join(
            f"<tr id='connection-{html.escape(c.grant_id)}'><td>{html.escape(c.provider)}</td>"
            f"<td><code>{html.escape(' '.join(c.scopes))}</code></td>"
            f"<td>{html.escape(c.status)}</td><td>{_when(c.since)}</td>"
            f"<td>{_when(c.last_used_at)}</td><td><button class=revoke type=button "
            f"data-grant='{html.escape(c.grant_id)}' data-provider='{html.escape(c.provider)}'>"
            "Disconnect</button></td></tr>"
            for c in items
        )
        table = (
            "<table id=connections><tr><th>account</th><th>scopes</th><th>status</th>"
            f"<th>since</th><th>last used</th><th></th></tr>{rows}</table>"
        )
    body = (
        f"{table}<p id=connections-status aria-live=polite></p>"
        "<p>Last used: the last time the agent got a new access token from that account.</p>"
        f"<p><a href='./'>Back to the agent</a></p><script>{_CONNECTIONS_SCRIPT}</script>"
    )
    return page("Connected accounts", body)


def home(*, logged_in: bool, can_log_in: bool, default_user: bool) -> HTMLResponse:
    """Who the agent acts for, the question form, and the answer (filled in by the script)."""
    if logged_in:
        who = (
            "<p id=who>Logged in. <a id=connected href='connections'>Connected accounts</a> "
            "<a href='logout'>Log out</a></p>"
        )
    elif can_log_in:
        meanwhile = " (meanwhile this agent acts for its configured user)" if default_user else ""
        who = f"<p id=who>You are not logged in. <a id=login href='login'>Log in</a>{meanwhile}</p>"
    elif default_user:
        who = "<p id=who>Acting for the configured user.</p>"
    else:
        who = "<p id=who>No user: send <code>Authorization: Bearer &lt;id_token&gt;</code>.</p>"
    body = (
        who + "<form id=ask><input id=q name=question size=40 "
        "value='what is on my calendar today?'> <button>Ask</button></form>"
        f"<p id=answer aria-live=polite></p><script>{_HOME_SCRIPT}</script>"
    )
    return page("Calendar agent", body)


def not_connected(message: str, status: int) -> HTMLResponse:
    """The return page when nothing was bound; ``message`` is HTML."""
    return page("Not connected", f"<p id=status>{message}</p>", status)


def connected(provider: str, scopes: list[str]) -> HTMLResponse:
    return page(
        "Connected",
        f"<p id=status>Connected: <b>{html.escape(provider)}</b> "
        f"(<code>{html.escape(' '.join(scopes))}</code>). You can ask again now.</p>"
        "<p><a href='../'>Back to the agent</a></p>",
    )


def no_login() -> HTMLResponse:
    return page("No login", "<p>This agent has no OIDC login configured.</p>", 404)


def login_failed(reason: str, status: int = 400) -> HTMLResponse:
    return page("Login failed", f"<p id=status>{html.escape(reason)}</p>", status)
