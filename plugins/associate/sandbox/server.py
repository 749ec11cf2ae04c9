"""The HTTP server: routing, auth, rate limit, faults, latency, and one access log line per request."""

from __future__ import annotations

import logging
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from pydantic_core import to_json

from associate.masking import mask_value

from .auth import AuthError, Authenticator, CredentialWindowLimiter
from .config import SandboxConfig
from .customers import CustomerService
from .faults import FaultInjector
from .reply import Reply, error_reply, errors_body
from .resources import Api, ApiError
from .stats import Stats
from .store import Store

log = logging.getLogger("associate.sandbox")

PUBLIC_PATHS = ("/__sandbox/stats", "/openapi.json")


class SandboxHandler(BaseHTTPRequestHandler):
    """Dispatches one request; the server object carries the shared state."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each reply on a
    # keep-alive connection waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = "CapillarySandbox/1.0"
    # A connection idle this long is closed, so silent clients cannot pin threads forever.
    timeout = 300
    server: "SandboxHTTPServer"

    def __getattr__(self, name: str):
        # Every method (GET, POST, ..., TRACE, anything) goes through _dispatch, so an
        # unsupported one gets a JSON 405 instead of the stdlib's HTML 501.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format, *args):  # the access line is written by _dispatch
        pass

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(size) if size > 0 else b""

    def _dispatch(self) -> None:
        started = time.perf_counter()
        app = self.server.app
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = self._read_body()
        principal = "-"
        fault = None
        endpoint, handler = app.route(self.command, url.path)
        try:
            if url.path in PUBLIC_PATHS:
                reply = handler(query, body, None) if handler else Reply(405, errors_body(405, "Method not allowed"))
            else:
                reply, principal, fault = self._api_call(app, endpoint, handler, query, body)
        except Exception:  # a bug must still reply with JSON, and say so in the log
            log.exception("unhandled error on %s %s", self.command, url.path)
            reply = Reply(500, errors_body(500, "Internal server error"))
        if reply is None:  # fault "drop": no reply at all
            self.close_connection = True
            app.stats.request(endpoint, "drop")
            self._access_line(url, query, "drop", started, principal, fault)
            return
        if fault == "slow":
            time.sleep(app.config.slow_ms / 1000)
        # Counted before the reply goes out: a client that has its answer finds it in the stats.
        app.stats.request(endpoint, reply.status)
        self._send(reply)
        self._access_line(url, query, reply.status, started, principal, fault)

    def _api_call(self, app: "SandboxApp", endpoint: str, handler, query: dict, body: bytes):
        if app.config.latency_ms:
            time.sleep(app.config.latency_ms / 1000)
        if handler is None:
            known = endpoint != "other"
            return Reply(405 if known else 404, errors_body(405 if known else 404,
                         "Method not allowed" if known else "No such endpoint")), "-", None
        principal = None
        if endpoint != "POST /v3/oauth/token/generate":
            try:
                principal = app.auth.principal(self.headers)
            except AuthError as exc:
                return Reply(401, errors_body(401, str(exc))), "-", None
            wait = app.limiter.admit(principal)
            if wait is not None:
                return Reply(429, errors_body(429, "Too many requests: rate limit exceeded"),
                             {"Retry-After": str(wait)}), principal, None
        fault = app.faults.draw()
        if fault:
            app.stats.fault(fault)
        if fault in ("500", "502", "503"):
            messages = {"500": "Internal server error", "502": "Bad gateway", "503": "Service unavailable"}
            return Reply(int(fault), errors_body(int(fault), messages[fault])), principal or "-", fault
        if fault == "drop":
            return None, principal or "-", fault
        try:
            reply = handler(query, body, principal)
        except ApiError as exc:
            reply = error_reply(exc.status, exc.code, exc.message, app.config.error_form)
        if fault == "commit500":
            reply = Reply(500, errors_body(500, "Internal server error"))
        return reply, principal or "-", fault

    def _send(self, reply: Reply) -> None:
        # pydantic's serializer writes what json.dumps(ensure_ascii=False, compact) writes (NaN and
        # Infinity as constants too), in a quarter of the CPU: a bulk reply is ~3 KB per element.
        payload = to_json(reply.body, inf_nan_mode="constants")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True  # the client gave up (e.g. timed out on a slow reply)

    def _access_line(self, url, query: dict, status, started: float, principal: str, fault: str | None) -> None:
        masked = "&".join(f"{k}={self._masked(k, v, query)}" for k, v in query.items())
        target = url.path + (f"?{masked}" if masked else "")
        elapsed = (time.perf_counter() - started) * 1000
        sys.stderr.write(f'{self.client_address[0]} "{self.command} {target}" {status} {elapsed:.1f}ms '
                         f'user={principal}{" fault=" + fault if fault else ""}\n')

    @staticmethod
    def _masked(name: str, value: str, query: dict) -> str:
        if name == "identifierValue":
            return mask_value(query.get("identifierName", "").lower(), value)
        return mask_value(name, value)


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threading server with the sandbox state attached."""

    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address, app: "SandboxApp"):
        self.app = app
        super().__init__(address, SandboxHandler)


class SandboxApp:
    """The state shared by all requests: config, store, auth, limiter, faults, stats, routes."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.store = Store(config.db_path)
        self.stats = Stats()
        self.auth = Authenticator(config.credentials, config.oauth, config.token_ttl, self.store.signing_key())
        self.limiter = CredentialWindowLimiter(config.rate_limit_rpm)
        self.faults = FaultInjector(config.faults, config.fault_seed)
        self.customers = CustomerService(self.store)
        self.api = Api(config, self.store, self.auth, self.stats, self.customers)
        self.api.seed_hierarchies(config.hierarchy_file)
        self.routes: dict[str, dict[str, Callable]] = self.api.routes()

    def route(self, method: str, path: str) -> tuple[str, Callable | None]:
        """The stats label and the handler of a request (handler None if the method is wrong)."""
        path = path.rstrip("/") or "/"
        methods = self.routes.get(path)
        if methods is None:
            return "other", None
        return f"{method} {path}", methods.get(method)


def serve(config: SandboxConfig) -> None:
    """Run the sandbox until interrupted; the first stdout line is the URL."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = SandboxApp(config)
    httpd = SandboxHTTPServer((config.host, config.port), app)
    host, port = httpd.server_address[:2]
    print(f"associate.sandbox listening on http://{host}:{port}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        app.store.close()
