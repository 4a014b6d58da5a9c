"""The HTTP server `cds-service serve` runs: gunicorn with gevent workers.

Why gevent (docs/deployment.md, *The HTTP server*): a sync worker is held by one connection from
its first byte to its last, so a few clients that send their headers slowly stop the service, and
it closes the connection after every response. A gevent worker keeps each connection in a
greenlet: a slow one costs a little memory, never a worker; reading a request's headers is
bounded by the keep-alive timeout; honest clients keep their connections alive. Evaluation is CPU
work, so the number of worker processes still sets the throughput.

gevent patches the standard library in each worker after the fork; a module that copied a name
from `ssl` before the patch (urllib3 does) would do blocking TLS inside the event loop.
`cds-service serve` therefore patches in the master before it imports anything else (this module
included),
and the app, with its database engine, HTTP sessions and threads, is built in each worker at boot
(no preload), before the worker accepts a connection.

What gunicorn answers itself, before the app sees a request (a malformed request line, an
oversized or malformed header), leaves as a JSON OperationOutcome with CORS headers, and what it
logs passes through `safe_log_args`: no request line, header value or query string is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from gunicorn.glogging import Logger as _GunicornLogger
from gunicorn.workers.ggevent import GeventWorker as _GeventWorker

from .cors import CorsPolicy
from .errors import operation_outcome

WsgiApp = Callable[..., Any]

DEFAULT_KEEPALIVE_SECONDS = 5
DEFAULT_WORKER_CONNECTIONS = 1000


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    workers: int
    keepalive_seconds: int = DEFAULT_KEEPALIVE_SECONDS
    """Idle time a kept-alive connection stays open, and the longest a client may take to send a
    request line and headers."""
    worker_connections: int = DEFAULT_WORKER_CONNECTIONS
    """Open connections per worker (slow ones included); more wait in the listen queue."""
    cors: CorsPolicy = field(default_factory=CorsPolicy)
    on_worker_exit: Callable[[int], None] | None = None


def run(load_app: Callable[[], WsgiApp], options: ServerOptions) -> None:
    """Serve until stopped. `load_app` runs in each worker at boot, before it accepts."""
    from gunicorn.app.base import BaseApplication

    from .observability import logging_config

    if options.keepalive_seconds <= 0:
        # gunicorn bounds the header read with the keep-alive timeout; 0 would unbound it.
        raise ValueError("the keep-alive timeout must be positive")

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        cors_policy = options.cors

        def load_config(self) -> None:
            self.cfg.set("bind", f"{options.host}:{options.port}")
            self.cfg.set("workers", options.workers)
            self.cfg.set("worker_class", f"{__name__}.CdsGeventWorker")
            self.cfg.set("worker_connections", options.worker_connections)
            self.cfg.set("keepalive", options.keepalive_seconds)
            self.cfg.set("logger_class", f"{__name__}.SafeGunicornLogger")
            self.cfg.set("accesslog", None)  # our logger writes a safe access line at DEBUG
            self.cfg.set("logconfig_dict", logging_config())
            # gunicorn's default pre_request hook logs every request's method and path at DEBUG.
            self.cfg.set("pre_request", _log_nothing)
            if options.on_worker_exit is not None:
                on_exit = options.on_worker_exit
                self.cfg.set("child_exit", lambda _server, worker: on_exit(worker.pid))
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1
                # Unused, and one fixed path per user would be shared by every server on a host.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> WsgiApp:
            return load_app()

    _Gunicorn().run()


def _log_nothing(_worker: Any, _req: Any) -> None:
    """A pre_request hook that logs nothing (the path may hold what a client made up)."""


# -- what gunicorn answers before the app ---------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    issue_code: str
    text: str


def refusal(exc: BaseException) -> Refusal:
    """The answer to a request gunicorn could not hand to the app. The text is fixed per kind of
    error: it never repeats what the client sent (gunicorn's own messages do)."""
    if isinstance(exc, _kinds("InvalidResponseHeader", "InvalidResponseHeaderName")):
        pass  # the app's fault, not the client's: a 500 below
    elif isinstance(exc, _kinds("LimitRequestLine")):
        return Refusal(
            414, "URI Too Long", "too-long", "The request line is longer than this server accepts."
        )
    elif isinstance(exc, _kinds("LimitRequestHeaders")):
        return Refusal(
            431,
            "Request Header Fields Too Large",
            "too-long",
            "The request has too many header fields or one that is too large.",
        )
    elif isinstance(
        exc, _kinds("InvalidRequestLine", "InvalidRequestMethod", "InvalidHTTPVersion")
    ):
        return Refusal(400, "Bad Request", "structure", "The request line is not valid HTTP/1.1.")
    elif isinstance(
        exc, _kinds("InvalidHeader", "InvalidHeaderName", "ObsoleteFolding", "InvalidSchemeHeaders")
    ):
        return Refusal(400, "Bad Request", "structure", "A request header is malformed.")
    elif isinstance(
        exc, _kinds("InvalidChunkSize", "ChunkMissingTerminator", "InvalidChunkExtension")
    ):
        return Refusal(400, "Bad Request", "structure", "The chunked request body is malformed.")
    elif isinstance(exc, _kinds("UnsupportedTransferCoding")):
        return Refusal(
            501,
            "Not Implemented",
            "not-supported",
            "The request's transfer coding is not supported.",
        )
    elif isinstance(exc, _kinds("ExpectationFailed")):
        return Refusal(
            417,
            "Expectation Failed",
            "not-supported",
            "The request's Expect header is not supported.",
        )
    elif isinstance(
        exc,
        _kinds(
            "InvalidProxyLine", "InvalidProxyHeader", "ForbiddenProxyRequest", "InvalidH2CPreface"
        ),
    ):
        return Refusal(400, "Bad Request", "structure", "The request is not valid HTTP/1.1.")
    return Refusal(
        500, "Internal Server Error", "exception", "Internal error; the request was not evaluated."
    )


def _kinds(*names: str) -> tuple[type[BaseException], ...]:
    """gunicorn's parse errors of these names (the ones this gunicorn version has)."""
    from gunicorn.http import errors

    return tuple(getattr(errors, name) for name in names if hasattr(errors, name))


def refusal_response(refused: Refusal, cors: CorsPolicy, origin: str | None) -> bytes:
    """The whole HTTP/1.1 response: OperationOutcome body, CORS headers, connection closed."""
    severity = "fatal" if refused.status >= 500 else "error"
    body = orjson.dumps(operation_outcome(severity, refused.issue_code, refused.text))
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        "Vary": "Origin",
        **cors.response_headers(origin),
    }
    head = (
        f"HTTP/1.1 {refused.status} {refused.reason}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    )
    return head.encode("latin-1") + body


def _origin_of(req: Any) -> str | None:
    """The Origin header of a request gunicorn parsed at least partly (None otherwise)."""
    for name, value in getattr(req, "headers", None) or ():
        if isinstance(name, str) and name.upper() == "ORIGIN" and isinstance(value, str):
            return value
    return None


# -- gunicorn's logs --------------------------------------------------------------------------


def safe_log_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Arguments of gunicorn's own log calls with anything that can carry request bytes replaced:
    an exception becomes its type name (gunicorn's parse errors and NoMoreData quote the request
    line, headers or buffered bytes in their text), bytes become their length."""
    safe: list[Any] = []
    for arg in args:
        if isinstance(arg, BaseException):
            safe.append(f"{type(arg).__name__} (message withheld)")
        elif isinstance(arg, (bytes, bytearray, memoryview)):
            safe.append(f"<{len(arg)} bytes withheld>")
        else:
            safe.append(arg)
    return tuple(safe)


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class SafeGunicornLogger(_GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger, handing JSON logging (observability.logging_config) only safe values."""

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.error_log.critical(_safe_msg(msg), *safe_log_args(args), **kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.error_log.error(_safe_msg(msg), *safe_log_args(args), **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.error_log.warning(_safe_msg(msg), *safe_log_args(args), **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.error_log.info(_safe_msg(msg), *safe_log_args(args), **kwargs)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.error_log.debug(_safe_msg(msg), *safe_log_args(args), **kwargs)

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.error_log.exception(_safe_msg(msg), *safe_log_args(args), **kwargs)

    def log(self, lvl: Any, msg: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(lvl, str):
            lvl = self.LOG_LEVELS.get(lvl.lower(), logging.INFO)
        self.error_log.log(lvl, _safe_msg(msg), *safe_log_args(args), **kwargs)

    def access(
        self, resp: Any, req: Any, environ: Mapping[str, Any], request_time: timedelta
    ) -> None:
        """One JSON line per request at DEBUG: method, route, status, duration, bytes sent. No
        request line, query string, header or client address."""
        if not self.access_log.isEnabledFor(logging.DEBUG):
            return
        from .observability import route_label  # not at import: see cli._serve and metrics
        from .services import SERVICES_BY_ID

        method = str(environ.get("REQUEST_METHOD", ""))
        status = str(getattr(resp, "status", "") or "").split(" ", 1)[0]
        self.access_log.debug(
            "http request",
            extra={
                "method": method if method in KNOWN_METHODS else "(other)",
                "route": route_label(str(environ.get("PATH_INFO", "")), SERVICES_BY_ID),
                "status": int(status) if status.isdigit() else None,
                "durationMs": round(request_time.total_seconds() * 1000, 2),
                "bytes": getattr(resp, "sent", None),
            },
        )


def _safe_msg(msg: Any) -> Any:
    return safe_log_args((msg,))[0]


class CdsGeventWorker(_GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, answering its own refusals as JSON OperationOutcomes."""

    def load_wsgi(self) -> None:
        """After gevent's patching, before the app is built: errors the event loop meets are
        logged as JSON with frames and types only (gevent prints them, messages included)."""
        import gevent

        gevent.get_hub().print_exception = _log_hub_error
        super().load_wsgi()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        refused = refusal(exc)
        if refused.status >= 500:
            self.log.exception("error handling a request")  # frames and types only (observability)
        else:
            self.log.info(
                "request refused by the HTTP server",
                extra={"status": refused.status, "error": type(exc).__name__},
            )
        cors = getattr(self.app, "cors_policy", None) or CorsPolicy()
        origin = _origin_of(req) or _origin_of(getattr(exc, "req", None))
        try:
            client.sendall(refusal_response(refused, cors, origin))
        except OSError:
            self.log.debug("the refusal could not be sent: the client is gone")


def _log_hub_error(context: Any, exc_type: Any, value: Any, tb: Any) -> None:
    if exc_type is not None:
        logging.getLogger(__name__).error(
            "unhandled error in the event loop", exc_info=(exc_type, value, tb)
        )
