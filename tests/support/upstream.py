"""A provider API stand-in on loopback, for what the bundled calendar API cannot show: the exact
request the proxy forwarded (headers, body), and answers the calendar never gives (redirects,
`Set-Cookie`, oversized bodies, a 401 to a POST). The token the proxy attaches is still the real
provider's: the tests introspect it there."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Seen:
    """One request as it arrived."""

    method: str
    target: str
    """Path and query, as sent."""
    headers: dict[str, list[str]]
    """Lower-cased names, every value."""
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b'{"ok":true}'
    chunked: bool = False
    """Send the body with chunked transfer encoding (no Content-Length)."""


def echo(seen: Seen) -> Reply:
    return Reply(200, [("Content-Type", "application/json")], b'{"ok":true}')


class Upstream:
    """`with Upstream(answer) as api:` a ThreadingHTTPServer on 127.0.0.1; `api.url` is its base
    URL, `api.seen` every request it got, `answer(seen)` decides each reply."""

    def __init__(self, answer: Callable[[Seen], Reply] = echo) -> None:
        self.answer = answer
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                seen = Seen(self.command, self.path, headers, body)
                outer.seen.append(seen)
                reply = outer.answer(seen)
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    step = 64 * 1024
                    for start in range(0, len(reply.body), step):
                        chunk = reply.body[start : start + step]
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def upstream(answer: Callable[[Seen], Reply] = echo) -> Iterator[Upstream]:
    with Upstream(answer) as api:
        yield api
