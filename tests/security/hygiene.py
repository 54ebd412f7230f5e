"""Log and answer hygiene for the whole test suite (SECURITY.md row 27, DESIGN invariant 9).

A pytest plugin. Registered for the whole suite by tests/conftest.py:

    pytest_plugins = ["tests.security.hygiene"]

While the suite runs it collects, without changing any behaviour:

- every secret that is issued or exchanged: DPoP proofs the test agents send, API keys admins
  set, users' identity
  tokens, `code` and `state` of every callback, every access, refresh and ID token the
  provider answers, every authorization code, PKCE verifier, refresh token, client secret and
  revoked token the vault sends to the provider (observed at urllib3, the vault's HTTP client),
  the provider's client secrets, and the KMS data keys the vault receives (a botocore hook);
- every log record of every logger (message, arguments, extras, exception text, and the JSON
  line Powertools prints for the vault's logger);
- every answer the handlers return (`tests.support.apigw.invoke`), with its `Location`;
- every trace segment a test hands it (`observe_trace`): the suite runs with tracing disabled, so
  tests/security/test_tracing.py runs a whole story in a Lambda-like process with tracing
  enabled, its X-Ray daemon address at a `TraceCollector` (a UDP socket on loopback), and feeds
  every datagram received here (SECURITY.md row 47).

After each test it fails the test if a secret known so far appears in a log line, in an answer
body (a successful token answer may carry its access token: that is what it is for) or in a URL
the vault built (an authorization URL may carry `state` and `code_challenge`, nothing else; the
callback's redirect to the return URL alone may carry the binding code).
At the end of the session everything is scanned again against every secret seen, so a secret
logged before it was recognised is caught too; a finding fails the last test's teardown.
Findings never print a secret: only its kind, a 4-character prefix and where it appeared.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pytest
import urllib3
from joserfc import jws
from joserfc.jwk import ECKey

from vault import jsondoc

WINDOW, STRIDE = 16, 4
"""Secrets are indexed by 16-character windows every 4 characters, so any 19 or more contiguous
characters of a secret are found, not only the whole of it (a truncated token is still a leak)."""
MIN_SECRET = 16
_TOKENISH = re.compile(rf"[A-Za-z0-9_\-.~+/=]{{{WINDOW},}}")
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}
_FORM_SECRETS = {
    "code": "authorization code",
    "code_verifier": "PKCE verifier",
    "refresh_token": "refresh token",
    "client_secret": "client secret",
    "client_assertion": "client assertion",
    "token": "revoked token",
    "state": "state",
}
_ANSWER_SECRETS = {
    "access_token": "access token",
    "refresh_token": "refresh token",
    "id_token": "ID token",
}
_URL_ALLOWED = ("state", "code_challenge")


@dataclass(frozen=True)
class Finding:
    kind: str
    prefix: str
    where: str
    what: str
    partial: bool = False

    def __str__(self) -> str:
        part = ", in part" if self.partial else ""
        return f"{self.kind} ({self.prefix}…{part}) in {self.what} during {self.where}"


@dataclass
class Hygiene:
    """The suite-wide registry: secrets seen, and every text that must not contain them."""

    secrets: dict[str, str] = field(default_factory=dict)
    """secret -> its kind"""
    index: dict[str, tuple[str, str]] = field(default_factory=dict)
    """window -> (the secret, the part of it that is indexed: a JWS's signature, else itself)"""
    texts: list[tuple[str, str, str]] = field(default_factory=list)
    """(where: test id, what: log line / answer body / URL, text)"""
    reported: set[Finding] = field(default_factory=set)
    current: str = "session"
    installed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- registering ------------------------------------------------------------------------

    def add_secret(self, value: Any, kind: str) -> None:
        if not isinstance(value, str):
            return
        value = value.strip()
        if len(value) < MIN_SECRET or len(set(value)) < 8:
            return  # too short or too regular to be a secret (or to match anything safely)
        # a JWS is found by its signature (its header and claims may be shared or public)
        indexed = value.rsplit(".", 1)[1] if value.count(".") == 2 else value
        if len(indexed) < MIN_SECRET:
            return
        starts = {*range(0, len(indexed) - WINDOW + 1, STRIDE), len(indexed) - WINDOW}
        with self.lock:
            if value in self.secrets:
                return
            self.secrets[value] = kind
            for i in starts:
                self.index.setdefault(indexed[i : i + WINDOW], (value, indexed))

    def add_text(self, what: str, text: str) -> None:
        if text:
            self.texts.append((self.current, what, text))

    # --- scanning ---------------------------------------------------------------------------

    def scan(self, texts: list[tuple[str, str, str]]) -> list[Finding]:
        """Every (text, secret) where 19+ contiguous characters of the secret appear."""
        index, kinds = self.index, self.secrets  # lookups only: safe while others register
        findings: list[Finding] = []
        for where, what, text in texts:
            found: set[str] = set()
            for token in _TOKENISH.findall(text):
                for i in range(len(token) - WINDOW + 1):
                    hit = index.get(token[i : i + WINDOW])
                    if hit is not None and hit[0] not in found:
                        secret = hit[0]
                        found.add(secret)
                        findings.append(
                            Finding(kinds[secret], secret[:4], where, what, secret not in token)
                        )
        return findings

    def new_findings(self, texts: list[tuple[str, str, str]]) -> list[Finding]:
        found = [f for f in dict.fromkeys(self.scan(texts)) if f not in self.reported]
        self.reported.update(found)
        return found

    # --- observers --------------------------------------------------------------------------

    def install(self) -> None:
        if self.installed:
            return
        self.installed = True
        logging.getLogger().addHandler(_LogCollector(self))
        _observe_urllib3(self)
        from tests.support import apigw

        observers: list[Callable[[dict[str, Any], Any], None]] | None = getattr(
            apigw, "OBSERVERS", None
        )
        if observers is not None:
            observers.append(self.observe_http)

    def observe_http(self, event: dict[str, Any], answer: Any) -> None:
        """One API Gateway event and the handler's answer (tests.support.apigw.invoke)."""
        method = event.get("requestContext", {}).get("http", {}).get("method", "")
        path = str(event.get("rawPath", ""))
        route = f"{method} {path}"
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        proof = headers.get("dpop")
        if isinstance(proof, str) and _is_signed_proof(proof):
            self.add_secret(proof, "DPoP proof")
        self._register_body(
            event.get("body"),
            bool(event.get("isBase64Encoded")),
            api_key=path.startswith("/v1/admin/api-keys/"),
        )
        if path == "/v1/oauth/callback" or path.startswith("/v1/oauth/callback/"):
            query = dict(parse_qsl(str(event.get("rawQueryString", "")), keep_blank_values=True))
            self.add_secret(query.get("code"), "authorization code")
            self.add_secret(query.get("state"), "state")
        body = answer.body or ""
        if path.endswith("/tokens") and answer.status == 200:
            try:
                self.add_secret(json.loads(body).get("access_token"), "access token")
            except (ValueError, AttributeError):
                self.add_text(f"token answer of {route} (not JSON)", body)
            return
        if path.endswith("/api-key") and answer.status == 200:
            # an API key handed to an agent with `returned` delivery: what the answer is for
            try:
                self.add_secret(json.loads(body).get("api_key"), "API key")
            except (ValueError, AttributeError):
                self.add_text(f"API key answer of {route} (not JSON)", body)
            return
        if answer.status == 201 and path.endswith("/authorizations"):
            url = (answer.json or {}).get("authorization_url", "")
            self.add_secret(_query(url).get("state"), "state")
            self.add_text(f"authorization URL built by {route}", _without(url, _URL_ALLOWED))
            body = body.replace(url.replace("/", "\\/"), "").replace(url, "")
        self.add_text(f"answer body of {route} ({answer.status})", body)
        location = answer.headers.get("location")
        if location:
            # the binding code belongs in the callback's redirect and nowhere else
            self.add_secret(_query(location).get("binding_code"), "binding code")
            self.add_text(f"redirect built by {route}", _without(location, ("binding_code",)))

    def _register_body(self, raw: Any, is_base64: bool, *, api_key: bool = False) -> None:
        if not isinstance(raw, str):
            return
        try:
            document = json.loads(base64.b64decode(raw) if is_base64 else raw)
        except (ValueError, binascii.Error, RecursionError):
            return
        if isinstance(document, dict):
            self.add_secret(document.get("binding_code"), "binding code")
            if api_key:  # an admin's PUT /v1/admin/api-keys/{provider}
                self.add_secret(document.get("key"), "API key")
        user = document.get("user") if isinstance(document, dict) else None
        token = user.get("id_token") if isinstance(user, dict) else None
        if isinstance(token, str) and "iss" in _jws_parts(token)[1]:
            self.add_secret(token, "ID token")

    def observe_trace(self, datagram: bytes) -> None:
        """One datagram sent to the X-Ray daemon's address: a header line and a segment document
        (or anything else: all of it is scanned)."""
        text = datagram.decode("utf-8", "replace")
        try:
            segment = json.loads(text.partition("\n")[2])
            name = segment.get("name", "?") if isinstance(segment, dict) else "?"
        except (ValueError, RecursionError):
            name = "not JSON"
        self.add_text(f"trace segment {str(name)[:64]}", text)

    def observe_vault(self, vault: Any) -> None:
        """The secrets a test's vault fixture holds: client secrets, users' ID tokens, and the
        KMS data keys its envelope receives."""
        server = vault.server
        for name in ("client_secret", "app_client_secret", "calendar_api_secret"):
            self.add_secret(getattr(server, name, None), "client secret")
        for token in vault.id_tokens.values():
            self.add_secret(token, "ID token")

        def data_key(parsed: dict[str, Any], **_: Any) -> None:
            plaintext = parsed.get("Plaintext") if isinstance(parsed, dict) else None
            if isinstance(plaintext, bytes):
                self.add_secret(base64.b64encode(plaintext).decode(), "KMS data key")
                self.add_secret(plaintext.hex(), "KMS data key")

        # clients copy the session's hooks when created: the vault's own KMS client exists
        # already, so observe it directly, and the session for containers built later
        kms = getattr(getattr(vault.services, "envelope", None), "_kms", None)
        for events in (vault.session.events, getattr(getattr(kms, "meta", None), "events", None)):
            if events is not None:
                events.register("after-call.kms.GenerateDataKey", data_key)
                events.register("after-call.kms.Decrypt", data_key)


# --- observers' plumbing ------------------------------------------------------------------------


class _LogCollector(logging.Handler):
    def __init__(self, hygiene: Hygiene) -> None:
        super().__init__(logging.NOTSET)
        self.hygiene = hygiene

    def filter(self, record: logging.LogRecord) -> bool:
        """Sees every record: Powertools adds a SuppressFilter for its own service to every
        root handler (against duplicate output), which would hide the vault's lines here."""
        return True

    def emit(self, record: logging.LogRecord) -> None:
        parts: list[str] = []
        try:
            parts.append(record.getMessage())
        except Exception:  # a broken format string is still a line to scan
            parts.append(f"{record.msg!r} {record.args!r}")
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        extras = {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}
        if extras:
            parts.append(json.dumps(extras, default=repr, ensure_ascii=False))
        # the exact line Powertools prints for the vault's logger
        for handler in logging.getLogger(record.name).handlers:
            if handler.formatter is not None and handler is not self:
                try:
                    parts.append(handler.format(record))
                except Exception:  # noqa: S112 (a formatter failing is not ours to judge here)
                    continue
        self.hygiene.add_text(f"log line of {record.name} ({record.levelname})", "\n".join(parts))


class TraceCollector:
    """A stand-in for the X-Ray daemon: a UDP socket on loopback keeping every datagram sent to it
    (AWS_XRAY_DAEMON_ADDRESS=`address`), read by a thread until `close()`."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._stop = b"stop-" + os.urandom(16).hex().encode()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def address(self) -> str:
        host, port = self._socket.getsockname()
        return f"{host}:{port}"

    def _read(self) -> None:
        while True:
            datagram = self._socket.recv(65_535)
            if datagram == self._stop:
                return
            self.datagrams.append(datagram)

    def close(self) -> None:
        """Stop reading once everything sent so far is read (the stop datagram comes last)."""
        if self._reader.is_alive():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(self._stop, self._socket.getsockname())
            self._reader.join(timeout=30)
        self._socket.close()

    def __enter__(self) -> TraceCollector:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _observe_urllib3(hygiene: Hygiene) -> None:
    """Wrap urllib3's connection pool so every request the vault makes to a provider and every
    answer it reads are registered. Pure observation: arguments and answers pass unchanged."""
    pool = urllib3.connectionpool.HTTPConnectionPool
    original = pool.urlopen
    if getattr(original, "_hygiene", False):
        return

    def urlopen(
        self: Any,
        method: str,
        url: str,
        body: Any = None,
        headers: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        _register_request(hygiene, body, headers)
        response = original(self, method, url, body, headers, *args, **kwargs)
        preloaded = getattr(response, "_body", None)
        if preloaded:
            _register_answer(hygiene, preloaded)
        else:
            read = response.read
            seen: list[bytes] = []

            def reading(*a: Any, **kw: Any) -> Any:
                data = read(*a, **kw)
                if isinstance(data, bytes) and data and sum(map(len, seen)) < 1 << 20:
                    seen.append(data)
                    _register_answer(hygiene, b"".join(seen))
                return data

            response.read = reading
        return response

    urlopen._hygiene = True  # type: ignore[attr-defined]
    pool.urlopen = urlopen  # type: ignore[method-assign]


def _register_request(hygiene: Hygiene, body: Any, headers: Any) -> None:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and "=" in body:
        for name, value in parse_qsl(body, keep_blank_values=True):
            if name in _FORM_SECRETS:
                hygiene.add_secret(value, _FORM_SECRETS[name])
    for name, value in dict(headers or {}).items():
        if str(name).lower() == "authorization" and str(value).startswith("Basic "):
            try:
                pair = base64.b64decode(str(value)[6:]).decode()
            except (binascii.Error, UnicodeError):
                continue
            hygiene.add_secret(unquote(pair.partition(":")[2]), "client secret")
            hygiene.add_secret(str(value)[6:], "client credentials")


def _register_answer(hygiene: Hygiene, data: bytes) -> None:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return
    if isinstance(document, dict):
        for name, kind in _ANSWER_SECRETS.items():
            hygiene.add_secret(document.get(name), kind)


def _jws_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A compact JWS's header and payload, unverified (`vault.jsondoc`), or empty ones."""
    try:
        header, payload = jsondoc.unverified_jws(token)
    except ValueError:
        return {}, {}
    return header, payload if isinstance(payload, dict) else {}


def _is_signed_proof(proof: str) -> bool:
    """A DPoP proof signed by the key in its header: a secret (a replayable credential while it
    is fresh). A fuzzer's look-alike with a made-up signature is not one: its "signature" is the
    fuzzer's own text, which may turn up anywhere."""
    header = _jws_parts(proof)[0]
    if header.get("typ") != "dpop+jwt" or not isinstance(header.get("jwk"), dict):
        return False
    try:
        jws.deserialize_compact(proof, ECKey.import_key(header["jwk"]), algorithms=["ES256"])
    except Exception:  # any failure means: not a signed proof
        return False
    return True


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _without(url: str, names: tuple[str, ...]) -> str:
    """The URL with the named query parameters' values removed (they may carry secrets)."""
    parts = urlsplit(url)
    kept = [(k, "" if k in names else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))


HYGIENE = Hygiene()


def report(findings: list[Finding]) -> str:
    lines = [str(f) for f in findings[:50]]
    more = f"\n  ... and {len(findings) - 50} more" if len(findings) > 50 else ""
    return "secrets leaked (SECURITY.md row 27):\n  " + "\n  ".join(lines) + more


@pytest.fixture(scope="session", autouse=True)
def _secret_hygiene_session() -> Iterator[Hygiene]:
    HYGIENE.install()
    yield HYGIENE
    HYGIENE.current = "session end"
    found = HYGIENE.new_findings(HYGIENE.texts)
    if found:
        pytest.fail(report(found), pytrace=False)


@pytest.fixture(autouse=True)
def _secret_hygiene_per_test(
    request: pytest.FixtureRequest, _secret_hygiene_session: Hygiene
) -> Iterator[None]:
    hygiene = _secret_hygiene_session
    hygiene.current = request.node.nodeid
    start = len(hygiene.texts)
    for name in request.fixturenames:  # `vault`, and the suite's other vaults (`steady_vault`)
        if name == "vault" or name.endswith("_vault"):
            hygiene.observe_vault(request.getfixturevalue(name))
    yield
    found = hygiene.new_findings(hygiene.texts[start:])
    hygiene.current = "between tests"
    if found:
        pytest.fail(report(found), pytrace=False)
