"""Play the browser's part of an authorization request over plain HTTP: log in, then consent.

This drives the login and consent pages of Agent Vault's local authorization server (see
``provider/server.mjs`` beside this module) with a cookie jar and an HTML form parser, so tests, the
demo and local mode can complete a real authorization code flow without a browser. It follows
redirects only while they stay on the provider's origin and stops at the first redirect that leaves
it: that target is the client's redirect URI, returned unvisited, carrying ``code``, ``state`` and
``iss`` (or ``error``).

Only the standard library is used, so the SDK gains no dependency.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Literal

__all__ = ["ConsentFormError", "complete_consent"]

Decision = Literal["allow", "deny"]

_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_STEPS = 20
_MAX_PAGE_BYTES = 256 * 1024


class ConsentFormError(RuntimeError):
    """The provider's pages did not lead to the client's redirect URI (bad login, error page...)."""


@dataclass
class _Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    """Inputs that are always sent (hidden and text inputs with their values)."""
    inputs: set[str] = field(default_factory=set)
    """Names of all inputs."""
    buttons: list[tuple[str, str]] = field(default_factory=list)
    """Named submit buttons as (name, value)."""


_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }
)
_INVISIBLE = frozenset({"head", "script", "style", "template"})


class _PageParser(HTMLParser):
    """Collects the forms, the error messages and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self._form: _Form | None = None
        self._open: list[tuple[bool, bool]] = []  # (hidden, error) per open element
        self._hidden = 0
        self._error = 0
        self._error_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = _Form(action=a.get("action", ""), method=a.get("method", "get").lower())
            self.forms.append(self._form)
        elif tag in {"input", "button"} and self._form is not None:
            self._add_control(self._form, tag, a)
        if tag in _VOID:
            return
        hidden = tag in _INVISIBLE or "hidden" in a
        error = a.get("id") == "error" or "error" in a.get("class", "").split()
        error = error or a.get("role") == "alert"
        self._open.append((hidden, error))
        self._hidden += hidden
        if error:
            self._error += 1
            if self._error == 1:
                self._error_parts = []

    @staticmethod
    def _add_control(form: _Form, tag: str, a: dict[str, str]) -> None:
        name = a.get("name", "")
        kind = a.get("type", "text" if tag == "input" else "submit").lower()
        if not name:
            return
        if kind in {"submit", "image"}:
            form.buttons.append((name, a.get("value", "")))
        elif (
            tag == "input"
            and kind != "button"
            and (kind not in {"checkbox", "radio"} or "checked" in a)
        ):
            form.inputs.add(name)
            form.fields.append((name, a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        if tag in _VOID or not self._open:
            return
        hidden, error = self._open.pop()
        self._hidden -= hidden
        if error:
            self._error -= 1
            message = " ".join(" ".join(self._error_parts).split())
            if self._error == 0 and message:
                self.errors.append(message)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._error:
            self._error_parts.append(data)
        if data.strip():
            self.text.append(data.strip())


class _NoRedirects(urllib.request.HTTPErrorProcessor):
    """Hand every response back as is: no redirect following, no exception on 4xx/5xx."""

    def http_response(
        self, request: urllib.request.Request, response: http.client.HTTPResponse
    ) -> http.client.HTTPResponse:
        return response

    https_response = http_response


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _parse(body: bytes, charset: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(body.decode(charset, errors="replace"))
    parser.close()
    return parser


def _visible(page: _PageParser) -> str:
    text = " ".join(page.text)
    return text[:300] + ("..." if len(text) > 300 else "")


def complete_consent(
    authorization_url: str,
    username: str,
    password: str,
    decision: Decision = "allow",
    *,
    timeout: float = 10,
) -> str:
    """Log in as ``username`` and answer the consent page with ``decision``.

    Returns the absolute URL of the first redirect that leaves the provider's origin (the client's
    redirect URI with ``code``/``state``/``iss`` or ``error``), without requesting it.
    Raises ``ConsentFormError`` with the page's visible error when login fails or the provider
    shows an error page, and ``OSError`` subclasses for network failures.
    """
    if decision not in ("allow", "deny"):
        raise ValueError("decision must be 'allow' or 'deny'")
    origin = _origin(authorization_url)
    if origin[0] not in {"http", "https"} or not origin[1]:
        raise ValueError("authorization_url must be an absolute http(s) URL")

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # the provider is on loopback: never via a proxy
        urllib.request.HTTPCookieProcessor(jar),
        _NoRedirects(),
    )
    url, method, body = authorization_url, "GET", None
    logged_in = consented = False

    for _ in range(_MAX_STEPS):
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (checked)
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        request.add_header("Accept", "text/html")
        with opener.open(request, timeout=timeout) as response:
            status: int = response.status
            location: str | None = response.headers.get("Location")
            charset = response.headers.get_content_charset() or "utf-8"
            content = response.read(_MAX_PAGE_BYTES)

        if status in _REDIRECTS and location:
            target = urllib.parse.urljoin(url, location)
            if _origin(target) != origin:
                return target
            if status not in {307, 308}:
                method, body = "GET", None
            url = target
            continue

        page = _parse(content, charset)
        if page.errors:
            raise ConsentFormError("; ".join(page.errors))
        if status != 200:
            raise ConsentFormError(f"the provider answered HTTP {status}: {_visible(page)}")

        form = next((f for f in page.forms if {"login", "password"} <= f.inputs), None)
        if form is not None:
            if logged_in:
                raise ConsentFormError(f"login as {username!r} did not succeed: {_visible(page)}")
            fields = [(k, v) for k, v in form.fields if k not in {"login", "password"}]
            fields += [("login", username), ("password", password)]
            logged_in = True
        else:
            form = next((f for f in page.forms if any(n == "decision" for n, _ in f.buttons)), None)
            if form is None:
                raise ConsentFormError(f"no login or consent form on the page: {_visible(page)}")
            if consented:
                raise ConsentFormError("the consent page was shown again after answering it")
            if ("decision", decision) not in form.buttons:
                raise ConsentFormError(f"the consent page has no {decision!r} button")
            fields = [*form.fields, ("decision", decision)]
            consented = True

        target = urllib.parse.urljoin(url, form.action or url)
        if _origin(target) != origin:
            raise ConsentFormError("a form posts outside the provider's origin")
        encoded = urllib.parse.urlencode(fields).encode("ascii")
        if form.method == "post":
            url, method, body = target, "POST", encoded
        else:
            split = urllib.parse.urlsplit(target)
            url = urllib.parse.urlunsplit(split._replace(query=encoded.decode("ascii")))
            method, body = "GET", None

    raise ConsentFormError(f"no redirect to the client after {_MAX_STEPS} steps")
