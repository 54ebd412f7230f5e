"""The agent's HTML pages: one small template, strict headers (no caching, a tight CSP)."""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

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


def home(*, logged_in: bool, can_log_in: bool, default_user: bool) -> HTMLResponse:
    """Who the agent acts for, the question form, and the answer (filled in by the script)."""
    if logged_in:
        who = "<p id=who>Logged in. <a href='logout'>Log out</a></p>"
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
