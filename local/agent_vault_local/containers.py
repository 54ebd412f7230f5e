"""Lambda-like containers for local mode: one request at a time per container, a pool of
containers per function.

Lambda never runs two requests in one container at once, and nothing of one container (module
globals, the logger's keys, caches) is shared with another. Local mode keeps that promise with
processes (DESIGN invariant 12, SECURITY.md row 31):

* one **init process** per local mode (the "zygote") imports the vault's handler modules once,
  with the function's environment, and never serves a request. It works like Lambda SnapStart:
  init once, then each new container starts from that snapshot — here a ``fork`` of the init
  process, which takes milliseconds instead of the 1-2 s an import costs;
* a **container** is one forked process. It serves one event at a time over its own socket and
  keeps its own module state (services, caches, data keys) between requests, as a warm Lambda
  container does;
* a **pool** per function keeps the idle containers. A request takes an idle one; when every
  container of the function is busy and there are fewer than ``max_containers``, a new container
  starts (a cold start); otherwise the request waits for the next idle container.

The containers' output (the vault's Powertools JSON log lines, audit events included) goes to
the parent over the same socket with each answer, and the pool writes it to the vault log with
one ``platform.report`` record per invocation naming the container that served it.

This module is also the init process's entry point:
``python -m agent_vault_local.containers FD`` (the handlers come from the installed service package;
the working directory is importable too, as with ``python -m``).
It imports nothing of the vault until the init message arrives.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import io
import json
import logging
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from agent_vault_local.events import LambdaContext

__all__ = [
    "DEFAULT_MAX_CONTAINERS",
    "ContainerError",
    "FunctionPool",
    "HandlerFailed",
    "LambdaFleet",
    "VaultLog",
]

log = logging.getLogger("agent_vault_local.containers")

DEFAULT_MAX_CONTAINERS = 4
"""Containers per function at most; a request beyond waits for an idle one."""
PRELOAD = (
    "boto3",
    "botocore.session",
    "urllib3",
    "pydantic",
    "cryptography.hazmat.primitives.hashes",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.tracing",
    "aws_lambda_powertools.utilities.parameters",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_xray_sdk.core",
    "vault.models",
    "vault.schemas",
    "vault.config",
)
"""What the init process imports while local mode starts: libraries and the vault's declarative
modules, none of which reads the environment at import. The handler modules (which build their
routers, loggers and clients at import) are imported later, with the complete environment."""

_LENGTH = struct.Struct("!I")
_START_TIMEOUT = 60.0


class ContainerError(RuntimeError):
    """A container could not start or died while serving."""


# -- the wire: length-prefixed JSON ------------------------------------------------------------


def _send(sock: socket.socket, message: Mapping[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> dict[str, Any] | None:
    header = _recv_exact(sock, _LENGTH.size)
    if header is None:
        return None
    body = _recv_exact(sock, _LENGTH.unpack(header)[0])
    if body is None:
        return None
    message = json.loads(body)
    return message if isinstance(message, dict) else None


# -- inside the init process and the containers ------------------------------------------------


class _Output(io.TextIOBase):
    """The container's stdout (where Powertools Logger writes): kept until the next answer."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
        return len(text)

    def drain(self) -> str:
        with self._lock:
            text, self._parts = "".join(self._parts), []
        return text


class _AuditCollector(logging.Handler):
    """Keeps each audit event (a log record with an ``audit`` member) until the next answer."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "audit", None)
        if isinstance(event, dict):
            self.events.append({"time": record.created, **event})

    def drain(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events


def _resolve(dotted: str) -> Callable[[dict[str, Any], Any], Any]:
    module_name, _, attr = dotted.rpartition(".")
    handler: Callable[[dict[str, Any], Any], Any] = getattr(
        importlib.import_module(module_name), attr
    )
    return handler


def _error(kind: str, exc: BaseException) -> dict[str, Any]:
    return {
        "error": {"errorType": kind, "errorMessage": str(exc), "stackTrace": traceback.format_exc()}
    }


def _serve(
    channel: socket.socket, spec: dict[str, Any], output: _Output, audit: _AuditCollector
) -> None:
    """One container: answer one event at a time until the channel closes."""
    output.drain()
    audit.drain()  # the init process's output went to the parent with its own answer
    handler = _resolve(str(spec["handler"]))
    _send(channel, {"ready": True, "pid": os.getpid()})
    while True:
        request = _recv(channel)
        if request is None:
            return
        context = LambdaContext(**request["context"], log_stream_name=str(spec["log_stream"]))
        reply: dict[str, Any]
        try:
            result = handler(request["event"], context)
        except Exception as exc:  # the runtime reports it as the invocation's error
            reply = _error(type(exc).__name__, exc)
        else:
            try:
                json.dumps(result)
                reply = {"result": result}
            except (TypeError, ValueError) as exc:
                reply = _error("Runtime.MarshalError", exc)
        reply["logs"] = output.drain()
        reply["audit"] = audit.drain()
        _send(channel, reply)


def _init_process(control_fd: int) -> None:
    """The init process: preload, wait for the environment, import the handlers, then fork one
    container per request on the control socket (which carries the container's socket)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops local mode, which closes us
    control = socket.socket(fileno=control_fd)
    output = _Output()
    sys.stdout = output  # Powertools Logger writes to sys.stdout
    for name in PRELOAD:  # a failure here shows again, with its cause, when the handlers import
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    data = control.recv(1 << 20)
    if not data:
        return
    init = json.loads(data)
    os.environ.clear()
    os.environ.update(init["environ"])
    errors: dict[str, str] = {}
    for dotted in init["handlers"]:
        try:
            _resolve(dotted)
        except Exception as exc:
            errors[dotted] = f"{type(exc).__name__}: {exc}"
    audit = _AuditCollector()
    logging.getLogger(init["service"]).addHandler(audit)
    control.sendall(
        json.dumps({"errors": errors, "logs": output.drain(), "audit": audit.drain()}).encode(
            "utf-8"
        )
    )
    if errors:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps stopped containers
    while True:
        message, fds, _flags, _addr = socket.recv_fds(control, 1 << 16, 1)
        if not message:
            return
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            code = 0
            try:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _serve(socket.socket(fileno=fds[0]), json.loads(message), output, audit)
            except BaseException:
                traceback.print_exc(file=sys.stderr)
                code = 1
            finally:
                os._exit(code)
        os.close(fds[0])


# -- in local mode's process -------------------------------------------------------------------


class VaultLog:
    """Where the containers' output goes: the vault log (JSON lines) and an audit callback."""

    def __init__(
        self, path: str | Path, on_audit: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.on_audit = on_audit
        self._lock = threading.Lock()
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")

    def write(
        self,
        text: str,
        audit: Sequence[dict[str, Any]] = (),
        report: Mapping[str, Any] | None = None,
    ) -> None:
        with self._lock:
            if self._file is None:
                return
            if report is not None:
                text += json.dumps(report, separators=(",", ":")) + "\n"
            if text:
                self._file.write(text)
                self._file.flush()
        if self.on_audit is not None:
            for event in audit:
                with contextlib.suppress(Exception):
                    self.on_audit(event)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _InitProcess:
    """The parent's side of the init process."""

    def __init__(self, cwd: str) -> None:
        self._control, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter and module  # nosec B603
                [sys.executable, "-m", "agent_vault_local.containers", str(child.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=[child.fileno()],
                cwd=cwd,
            )
        finally:
            child.close()
        self._lock = threading.Lock()

    def init(
        self, environ: Mapping[str, str], handlers: Sequence[str], service: str, timeout: float
    ) -> dict[str, Any]:
        message = json.dumps(
            {"environ": dict(environ), "handlers": list(handlers), "service": service}
        ).encode("utf-8")
        with self._lock:
            self._control.sendall(message)
            self._control.settimeout(timeout)
            try:
                answer = self._control.recv(1 << 24)
            except TimeoutError:
                raise ContainerError(f"the handlers did not import in {timeout:g} s") from None
            finally:
                self._control.settimeout(None)
        if not answer:
            raise ContainerError(f"the init process exited ({self.process.poll()})")
        result: dict[str, Any] = json.loads(answer)
        return result

    def fork(self, spec: Mapping[str, Any]) -> socket.socket:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._lock:
                socket.send_fds(
                    self._control, [json.dumps(dict(spec)).encode("utf-8")], [theirs.fileno()]
                )
        except OSError as exc:
            mine.close()
            raise ContainerError(f"the init process is gone: {exc}") from None
        finally:
            theirs.close()
        return mine

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_RDWR)
        self._control.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class _Container:
    def __init__(self, function_name: str) -> None:
        self.id = secrets.token_hex(16)
        self.function_name = function_name
        self.log_stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{self.id}"
        self.channel: socket.socket | None = None
        self.cold = True
        self.init_ms = 0.0

    def send(self, message: Mapping[str, Any]) -> None:
        assert self.channel is not None
        _send(self.channel, message)

    def receive(self) -> dict[str, Any] | None:
        assert self.channel is not None
        return _recv(self.channel)

    def close(self) -> None:
        if self.channel is not None:
            with contextlib.suppress(OSError):
                self.channel.shutdown(socket.SHUT_RDWR)
            self.channel.close()


class FunctionPool:
    """The containers of one function: one request at a time each, at most ``max_containers``."""

    def __init__(
        self,
        function_name: str,
        handler: str,
        init: _InitProcess,
        sink: VaultLog,
        *,
        max_containers: int = DEFAULT_MAX_CONTAINERS,
    ) -> None:
        if max_containers < 1:
            raise ValueError("max_containers must be at least 1")
        self.function_name = function_name
        self.handler = handler
        self.max_containers = max_containers
        self._init = init
        self._sink = sink
        self._idle: list[_Container] = []
        self._all: set[_Container] = set()
        self._starting = 0
        self._stopped = False
        self._cond = threading.Condition()

    def _start_container(self) -> _Container:
        started = time.monotonic()
        container = _Container(self.function_name)
        container.channel = self._init.fork(
            {"handler": self.handler, "log_stream": container.log_stream}
        )
        container.channel.settimeout(_START_TIMEOUT)
        try:
            ready = container.receive()
        except (OSError, ValueError):
            ready = None
        if ready is None or not ready.get("ready"):
            container.close()
            raise ContainerError(f"a container of {self.function_name} did not start")
        container.channel.settimeout(None)
        container.init_ms = (time.monotonic() - started) * 1000
        return container

    def _acquire(self) -> _Container:
        with self._cond:
            while True:
                if self._stopped:
                    raise ContainerError(f"{self.function_name} is stopped")
                if self._idle:
                    return self._idle.pop()  # the most recently used (warm) container
                if len(self._all) + self._starting < self.max_containers:
                    self._starting += 1
                    break
                self._cond.wait()
        try:
            container = self._start_container()
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._starting -= 1
            self._all.add(container)
        return container

    def _release(self, container: _Container, healthy: bool) -> None:
        with self._cond:
            if healthy and not self._stopped:
                self._idle.append(container)
            else:
                self._all.discard(container)
                container.close()
            self._cond.notify()

    def warm(self) -> None:
        """Start one container now (so the first request is not a cold start)."""
        self._release(self._acquire(), True)

    def invoke(self, event: dict[str, Any], context: LambdaContext) -> Any:
        """Run ``event`` in one container of this function; returns the handler's result."""
        container = self._acquire()
        healthy = False
        started_at = time.time()
        try:
            container.send({"event": event, "context": context.fields()})
            reply = container.receive()
            ended_at = time.time()
            if reply is None:
                raise ContainerError(
                    f"the container {container.id} of {self.function_name} exited while serving"
                )
            healthy = True
        except OSError as exc:
            raise ContainerError(
                f"the container {container.id} of {self.function_name} failed: {exc}"
            ) from None
        finally:
            self._release(container, healthy)
        error = reply.get("error")
        metrics: dict[str, float] = {"durationMs": round((ended_at - started_at) * 1000, 2)}
        if container.cold:
            metrics["initDurationMs"] = round(container.init_ms, 2)
            container.cold = False
        request_context = event.get("requestContext") if isinstance(event, dict) else None
        iam = ((request_context or {}).get("authorizer") or {}).get("iam") or {}
        report = {
            "time": datetime.datetime.fromtimestamp(ended_at, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "type": "platform.report",
            "function": self.function_name,
            "container": container.id,
            "logStream": container.log_stream,
            "startedAt": started_at,
            "endedAt": ended_at,
            "eventRequestId": (request_context or {}).get("requestId"),
            "principal": iam.get("userArn"),
            "record": {
                "requestId": context.aws_request_id,
                "status": "error" if error else "success",
                "metrics": metrics,
            },
        }
        self._sink.write(str(reply.get("logs") or ""), reply.get("audit") or (), report)
        if error:
            raise HandlerFailed(error)
        return reply.get("result")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            containers, self._idle = list(self._all), []
            self._all.clear()
            self._cond.notify_all()
        for container in containers:
            container.close()


class HandlerFailed(Exception):
    """The handler raised in its container (Lambda's ``Unhandled`` function error);
    ``stack_trace`` is the container's traceback."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        super().__init__(str(error.get("errorMessage", "")))
        self.error_type = str(error.get("errorType", "Exception"))
        self.stack_trace = str(error.get("stackTrace", ""))


class LambdaFleet:
    """Every function's pool of containers, forked from one init process.

    ``functions`` maps a function name (``agent-vault-agent-api``) to its handler's dotted path.
    Call :meth:`start` early (the init process preloads libraries meanwhile), :meth:`init` once
    the environment is complete, then use :meth:`handler` as the adapter's resolver.
    """

    def __init__(
        self,
        functions: Mapping[str, str],
        sink: VaultLog,
        *,
        cwd: str | None = None,
        max_containers: int = DEFAULT_MAX_CONTAINERS,
        service: str = "agent-vault",
    ) -> None:
        self.functions = dict(functions)
        self.sink = sink
        self.cwd = cwd or os.getcwd()
        self.max_containers = max_containers
        self.service = service
        self._init: _InitProcess | None = None
        self._pools: dict[str, FunctionPool] = {}

    def start(self) -> LambdaFleet:
        self._init = _InitProcess(self.cwd)
        return self

    def init(self, environ: Mapping[str, str], timeout: float = 60.0) -> None:
        """Import the handlers in the init process with ``environ``; raises
        :class:`ContainerError` naming a handler that fails to import."""
        if self._init is None:
            raise ContainerError("start the fleet first")
        answer = self._init.init(
            environ, sorted(set(self.functions.values())), self.service, timeout
        )
        self.sink.write(str(answer.get("logs") or ""), answer.get("audit") or ())
        errors: dict[str, str] = answer.get("errors") or {}
        if errors:
            dotted, message = next(iter(sorted(errors.items())))
            raise ContainerError(
                f"the vault handler module {dotted.rpartition('.')[0]} failed to import: {message}"
            )
        self._pools = {
            name: FunctionPool(
                name, dotted, self._init, self.sink, max_containers=self.max_containers
            )
            for name, dotted in self.functions.items()
        }

    def warm(self) -> None:
        """One container per function, started now."""
        for pool in self._pools.values():
            pool.warm()

    def handler(self, dotted: str) -> Callable[[dict[str, Any], Any], Any]:
        """The adapter's resolver: a handler that runs each event in a container."""
        for pool in self._pools.values():
            if pool.handler == dotted:
                return pool.invoke
        raise ContainerError(f"no function has the handler {dotted}")

    def stop(self) -> None:
        for pool in self._pools.values():
            pool.stop()
        if self._init is not None:
            self._init.stop()
            self._init = None


if __name__ == "__main__":
    _init_process(int(sys.argv[1]))
