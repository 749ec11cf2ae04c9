"""The one way a request reaches Capillary: pooled session, auth, rate limit, retries.

``requests`` is imported when the first request is made, so that importing the client
(DAG files import the hook) stays cheap.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from associate import json_codec
from associate.capillary import endpoints
from associate.capillary.outcomes import CallResult, carries_answer
from associate.capillary.budget import limiter_for
from associate.capillary.ratelimit import ThrottleWaits
from associate.capillary.settings import ClientSettings, basic_authorization
from associate.exceptions import CapillaryAuthError, CapillaryError
from associate.masking import PiiMaskingFilter

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())
# urllib3 logs request lines with their query string (lookup values are mobiles/emails).
logging.getLogger("urllib3.connectionpool").addFilter(PiiMaskingFilter())

TOKEN_HEADER = "X-CAP-API-OAUTH-TOKEN"


class TokenCache:
    """OAuth tokens by (cluster, key), per worker process, refreshed a little before they expire."""

    def __init__(self):
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.generated = 0

    def lock_for(self, key: tuple[str, str]) -> threading.Lock:
        """Return the lock that serialises generating the token of one key."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def valid(self, key: tuple[str, str]) -> str | None:
        """Return the key's token while it is still good, else None."""
        entry = self._tokens.get(key)
        if entry and time.monotonic() < entry[1]:
            return entry[0]
        return None

    def store(self, key: tuple[str, str], token: str, ttl_seconds: float) -> None:
        """Keep a new token for a little less than its lifetime."""
        # Refresh ahead of expiry so that a request in flight never carries a dying token.
        margin = min(30.0, ttl_seconds * 0.2)
        self._tokens[key] = (token, time.monotonic() + max(0.0, ttl_seconds - margin))
        self.generated += 1

    def invalidate(self, key: tuple[str, str], token: str | None) -> None:
        """Forget the key's token (only if it is still ``token``, when given)."""
        entry = self._tokens.get(key)
        if entry and (token is None or entry[0] == token):
            del self._tokens[key]

    def clear(self) -> None:
        """Forget every token."""
        self._tokens.clear()


TOKENS = TokenCache()


@dataclass
class CallStats:
    """Counters of one client: what a progress line reports."""

    requests: int = 0
    # Monotonic times of the first and the last request, for the sustained rate.
    first_sent: float | None = None
    last_sent: float | None = None
    retries: int = 0
    # Why a request was retried (or given up): 429, timeout, dropped connection, 5xx.
    throttled: int = 0
    timeouts: int = 0
    dropped: int = 0
    server_errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to named counters."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def sent(self) -> None:
        """Count one request put on the wire now."""
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            self.first_sent = now if self.first_sent is None else self.first_sent
            self.last_sent = now

    def sustained_rpm(self) -> float | None:
        """Return requests per minute between the first and the last request."""
        with self._lock:
            if self.requests < 2 or self.last_sent == self.first_sent:
                return None
            return (self.requests - 1) / (self.last_sent - self.first_sent) * 60

    def snapshot(self) -> dict[str, Any]:
        """Return the counters as a dict."""
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class WallTime:
    """Wall seconds during which at least one thread is inside a span; overlapping spans count once.

    Threads of one task send side by side: summing their spans would count the same second
    once per thread, so the clock runs while any thread is inside (monotonic, one lock).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._inside = 0
        self._since = 0.0
        self._seconds = 0.0

    def enter(self) -> None:
        """A thread enters a span."""
        with self._lock:
            if self._inside == 0:
                self._since = time.monotonic()
            self._inside += 1

    def leave(self) -> None:
        """A thread leaves its span."""
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                self._seconds += time.monotonic() - self._since

    @property
    def seconds(self) -> float:
        """The seconds counted so far (a span still open counts up to now)."""
        with self._lock:
            return self._seconds + (time.monotonic() - self._since if self._inside else 0.0)


def retry_after(response: requests.Response) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (seconds or HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class Transport:
    """Requests to one cluster with one credential: session, auth headers, limiter, retries."""

    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self.stats = CallStats()
        # One bound on 429 waits for the transport's life: one task (a hook per task).
        self.throttle = ThrottleWaits(settings.max_throttle_wait)
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._limiter = None
        # Where the task's time goes: inside requests (retries and backoff included), or
        # blocked on the rate budget (429 pauses included: the limiter holds them).
        self.request_time = WallTime()
        self.budget_time = WallTime()
        # Either of the two, counted once: the task's seconds with Capillary, the rest is local work.
        self.call_time = WallTime()

    def api_time(self) -> dict[str, Any]:
        """Requests, seconds in requests, seconds waiting for the rate budget and 429s so far."""
        stats = self.stats.snapshot()
        return {"api_seconds": round(self.request_time.seconds, 3),
                "budget_wait_seconds": round(self.budget_time.seconds, 3),
                "api_wall_seconds": round(self.call_time.seconds, 3),
                "requests": int(stats["requests"]), "http_429": int(stats["throttled"])}

    def _acquire(self) -> None:
        """Wait for the rate budget: this thread's time counts as waiting, not as in a request."""
        self.request_time.leave()
        self.budget_time.enter()
        try:
            self.limiter.acquire()
        finally:
            self.budget_time.leave()
            self.request_time.enter()

    def session(self) -> requests.Session:
        """Return the pooled session, sized to the configured concurrency (made on first use)."""
        with self._session_lock:
            if self._session is None:
                import requests
                from requests.adapters import HTTPAdapter

                session = requests.Session()
                pool = max(2, self.settings.concurrency)
                # Retries are ours (with backoff, jitter and Retry-After); urllib3 must not add any.
                adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                session.verify = self.settings.verify
                session.headers.update(self.settings.session_headers)
                self._session = session
            return self._session

    def close(self) -> None:
        """Close the pooled connections."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    @property
    def limiter(self):
        """The rate limiter of this cluster and credential, shared as the deployment allows (``budget_mode``)."""
        with self._session_lock:
            if self._limiter is None:
                settings = self.settings
                self._limiter = limiter_for(settings.base_url, settings.credential_id, settings.rate_limit_rpm)
                # Once per transport (one task): which budget this task's requests count against.
                log.info("%s", self._limiter.describe())
            return self._limiter

    # -- auth ---------------------------------------------------------------------------------

    def _token_key(self) -> tuple[str, str]:
        return (self.settings.base_url, self.settings.oauth_key or "")

    def _auth_headers(self) -> dict[str, str]:
        settings = self.settings
        if not settings.uses_oauth:
            return {"Authorization": basic_authorization(settings.login, settings.password)}
        return {TOKEN_HEADER: self.oauth_token()}

    def oauth_token(self) -> str:
        """Return a valid OAuth token, generated when missing or about to expire."""
        key = self._token_key()
        token = TOKENS.valid(key)
        if token:
            return token
        with TOKENS.lock_for(key):
            token = TOKENS.valid(key)  # another thread may have refreshed it meanwhile
            if token:
                return token
            settings = self.settings
            answer = self.send(
                "POST", endpoints.TOKEN, json_body={"key": settings.oauth_key, "secret": settings.oauth_secret},
                authenticated=False,
            )
            if answer.status is None or answer.status >= 500:
                raise CapillaryError(f"no OAuth token after {answer.attempts} attempt(s): {answer.failure}",
                                     status=answer.status)
            data = answer.body.get("data") if answer.status == 200 and isinstance(answer.body, dict) else None
            if not isinstance(data, dict) or not data.get("accessToken"):
                code, message = answer.first_error()
                raise CapillaryAuthError(
                    f"Capillary refused to generate an OAuth token for key {settings.oauth_key!r}: {message}",
                    status=answer.status, code=code,
                )
            TOKENS.store(key, data["accessToken"], float(data.get("ttlSeconds") or 300))
            log.info("Generated a Capillary OAuth token (valid %s s)", data.get("ttlSeconds"))
            return data["accessToken"]

    # -- sending ------------------------------------------------------------------------------

    def _backoff(self, retry: int) -> float:
        """Exponential backoff with full jitter (AWS architecture blog's variant)."""
        settings = self.settings
        return random.uniform(0, min(settings.backoff_max, settings.backoff_base * (2 ** retry)))

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        authenticated: bool = True,
    ) -> CallResult:
        """Send one call with retries; return the last response (or transport failure) and the attempts."""
        self.call_time.enter()
        self.request_time.enter()
        try:
            return self._send(method, path, params=params, json_body=json_body, authenticated=authenticated)
        finally:
            self.request_time.leave()
            self.call_time.leave()

    def _send(self, method: str, path: str, *, params: Mapping[str, Any] | None, json_body: Any,
              authenticated: bool) -> CallResult:
        """``send`` itself (its time is counted by the caller)."""
        # Waited out, not counted as retries: 429 (``ThrottleWaits``; past its bound
        # ``CapillaryThrottled`` is raised). Retried: 5xx, timeouts, dropped connections; an OAuth 401
        # once after a new token. Other 4xx are contract errors for the caller to interpret, and
        # so is a 5xx that carries Capillary's answer (``carries_answer``: a documented code).
        # Every call here is safe to repeat: bulk sends match customers by identifier, the
        # rest are reads or company writes that ensure_companies reconciles.
        import requests

        settings = self.settings
        session = self.session()
        url = settings.base_url + path
        timeout = (settings.connect_timeout, settings.read_timeout)
        attempts, retries, refreshed = 0, 0, False
        # Encoded once for every try (requests' json= would encode it with the slower json module each time).
        body = None if json_body is None else json_codec.dumps(json_body)
        while True:
            self._acquire()
            headers = self._auth_headers() if authenticated else {}
            if body is not None:
                headers["Content-Type"] = "application/json"
            attempts += 1
            self.stats.sent()
            try:
                # verify goes with every request: requests lets REQUESTS_CA_BUNDLE override a
                # session-level verify=False (psf/requests#3829), never a per-request one.
                response = session.request(
                    method, url, params=params, data=body, headers=headers, timeout=timeout,
                    verify=settings.verify,
                )
            except requests.Timeout as exc:
                self.stats.add(timeouts=1)
                failure = f"no answer within the timeout ({type(exc).__name__})"
                response = None
            except requests.ConnectionError as exc:
                self.stats.add(dropped=1)
                failure = f"connection failed or dropped ({type(exc).__name__})"
                response = None
            else:
                failure = None
                status = response.status_code
                if status == 401 and authenticated and settings.uses_oauth and not refreshed:
                    # The token expired earlier than we thought: one new token, one more try.
                    TOKENS.invalidate(self._token_key(), headers.get(TOKEN_HEADER))
                    refreshed = True
                    log.info("%s %s: 401 with an OAuth token; generating a new one", method, path)
                    continue
                if status == 429:
                    # A reason to wait, not a retry: past the server's window, within the task's bound.
                    self.stats.add(throttled=1)
                    asked = response.headers.get("Retry-After")
                    response.close()
                    delay = self.throttle.next_wait(retry_after(response))  # raises past the bound
                    self.limiter.pause(delay)  # every thread sharing the budget holds off
                    log.warning("%s %s: HTTP 429; waiting %.1f s (Retry-After %s); waited %.0f s of at most %.0f s "
                                "after 429s in this task", method, path, delay, asked, self.throttle.waited,
                                self.throttle.bound)
                    continue
                if status >= 500 and not carries_answer(response):
                    self.stats.add(server_errors=1)
                    failure = f"HTTP {status} from Capillary"
                else:
                    return CallResult(response, attempts)
            if retries >= settings.max_retries:
                log.warning("%s %s: giving up after %d attempts: %s", method, path, attempts, failure)
                return CallResult(response, attempts, failure)
            delay = self._backoff(retries)
            retries += 1
            self.stats.add(retries=1)
            log.info("%s %s: %s; retry %d/%d in %.2f s", method, path, failure, retries, settings.max_retries, delay)
            time.sleep(delay)
            if response is not None:
                response.close()

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json_body: Any = None,
             tolerate: Collection[int] = ()) -> Any:
        """Send one call; return its JSON body, None when the error's code is in ``tolerate``; else raise."""
        answer = self.send(method, path, params=params, json_body=json_body)
        return answer.expect(f"{method} {path} failed after {answer.attempts} attempt(s)", tolerate=tolerate)
