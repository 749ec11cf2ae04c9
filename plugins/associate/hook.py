"""Hook for Capillary's customer, company and fleet hierarchy APIs (../shared/capillary-api.md).

Modelled on ``airflow.providers.http.hooks.http.HttpHook``: the connection holds the
cluster URL and the credentials, extras hold the client's tuning. ``requests`` is
imported inside methods so that DAG files importing this module stay cheap to parse.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from associate.exceptions import CapillaryAuthError, CapillaryError
from associate.masking import PiiMaskingFilter, mask_text
from associate.models import Codes, HierarchyDefinition

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
log.addFilter(PiiMaskingFilter())
# urllib3 logs request lines with their query string (lookup values are mobiles/emails).
logging.getLogger("urllib3.connectionpool").addFilter(PiiMaskingFilter())

BULK_PATH = "/v2/customers/bulk"
TOKEN_PATH = "/v3/oauth/token/generate"
COMPANIES_PATH = "/v2/companies"
HIERARCHIES_PATH = "/v2/fleetHierarchy/all"
LOOKUP_PATH = "/v2/customers/lookup"
DETAILS_PATH = "/v2/customers/lookup/customerDetails"
COMPANY_EXISTS = 91040

STATUS_SUCCESS, STATUS_WARNING, STATUS_FAILED = "success", "warning", "failed"


# --- connection settings ------------------------------------------------------------------


def _as_bool(value: Any, default: bool) -> bool:
    """Extras from a URI are strings; only an explicit false-like value is False."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("false", "0", "no", "off")


def _as_number(extras: Mapping[str, Any], name: str, default: float, kind: type = int) -> Any:
    """A numeric extra (URI extras arrive as strings), with a clear error if it is not a number."""
    value = extras.get(name)
    if value is None or value == "":
        return kind(default)
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"Capillary connection extra {name!r} must be a number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"Capillary connection extra {name!r} must not be negative, got {value!r}")
    return number


def base_url_of(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """The cluster URL: the host's own scheme, else the schema field (http/https), else https."""
    if not host:
        raise ValueError("Capillary connection has no host (e.g. https://eu.api.capillarytech.com)")
    host = host.strip().rstrip("/")
    if "://" in host:
        url = host
    else:
        scheme = schema if schema in ("http", "https") else "https"
        url = f"{scheme}://{host}"
    if port and url.count(":") < 2:
        url = f"{url}:{port}"
    return url


@dataclass(frozen=True)
class ClientSettings:
    """Everything the client needs from an Airflow connection."""

    base_url: str
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    oauth_key: str | None = None
    oauth_secret: str | None = field(default=None, repr=False)
    rate_limit_rpm: float = 100
    concurrency: int = 2
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    batch_size: int = 100
    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    verify: bool = True
    attribution_entity_type: str | None = None
    attribution_entity_code: str | None = None

    @property
    def uses_oauth(self) -> bool:
        """OAuth when a key is configured, Basic otherwise."""
        return bool(self.oauth_key)

    @property
    def credential_id(self) -> str:
        """The non-secret name of the credential: the rate budget is per API key."""
        return f"oauth:{self.oauth_key}" if self.uses_oauth else f"basic:{self.login}"

    @classmethod
    def from_connection(cls, conn: Any) -> ClientSettings:
        """Read and check host, credentials and extras of an Airflow connection."""
        extras = dict(conn.extra_dejson or {})
        settings = cls(
            base_url=base_url_of(conn.host, conn.schema, conn.port),
            login=conn.login or None,
            password=conn.password or None,
            oauth_key=extras.get("oauth_key") or None,
            oauth_secret=extras.get("oauth_secret") or None,
            rate_limit_rpm=_as_number(extras, "rate_limit_rpm", 100, float),
            concurrency=max(1, _as_number(extras, "concurrency", 2)),
            connect_timeout=_as_number(extras, "connect_timeout", 5, float),
            read_timeout=_as_number(extras, "read_timeout", 30, float),
            batch_size=max(1, _as_number(extras, "batch_size", 100)),
            max_retries=_as_number(extras, "max_retries", 6),
            backoff_base=_as_number(extras, "backoff_base", 1.0, float),
            backoff_max=_as_number(extras, "backoff_max", 60.0, float),
            verify=_as_bool(extras.get("verify"), True),
            attribution_entity_type=extras.get("attribution_entity_type") or None,
            attribution_entity_code=extras.get("attribution_entity_code") or None,
        )
        if settings.uses_oauth and not settings.oauth_secret:
            raise ValueError("Capillary connection has extra oauth_key but no oauth_secret")
        if not settings.uses_oauth and not (settings.login and settings.password):
            raise ValueError(
                "Capillary connection needs login + password (Basic) or extras oauth_key + oauth_secret"
            )
        if settings.rate_limit_rpm <= 0:
            raise ValueError("Capillary connection extra 'rate_limit_rpm' must be positive")
        return settings


def basic_authorization(login: str, password: str) -> str:
    """``Basic base64("<login>:" + md5_hex(password))``, as Capillary wants it."""
    digest = hashlib.md5(password.encode("utf-8")).hexdigest()  # noqa: S324 - the API's scheme
    return "Basic " + base64.b64encode(f"{login}:{digest}".encode()).decode("ascii")


# --- OAuth tokens: one per cluster and key, per worker process ---------------------------------


class _TokenCache:
    """Tokens by (cluster, key), refreshed a little before they expire."""

    def __init__(self):
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.generated = 0

    def lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def valid(self, key: tuple[str, str]) -> str | None:
        entry = self._tokens.get(key)
        if entry and time.monotonic() < entry[1]:
            return entry[0]
        return None

    def store(self, key: tuple[str, str], token: str, ttl_seconds: float) -> None:
        # Refresh ahead of expiry so that a request in flight never carries a dying token.
        margin = min(30.0, ttl_seconds * 0.2)
        self._tokens[key] = (token, time.monotonic() + max(0.0, ttl_seconds - margin))
        self.generated += 1

    def invalidate(self, key: tuple[str, str], token: str | None) -> None:
        entry = self._tokens.get(key)
        if entry and (token is None or entry[0] == token):
            del self._tokens[key]

    def clear(self) -> None:
        self._tokens.clear()


TOKENS = _TokenCache()


# --- results ------------------------------------------------------------------------------------


@dataclass
class CallStats:
    """Counters of one hook: what a progress line reports."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    timeouts: int = 0
    dropped: int = 0
    server_errors: int = 0
    first_sent: float | None = None  # monotonic time of the first request
    last_sent: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
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
        """Requests per minute between the first and the last request."""
        with self._lock:
            if self.requests < 2 or self.last_sent == self.first_sent:
                return None
            return (self.requests - 1) / (self.last_sent - self.first_sent) * 60

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class CustomerOutcome:
    """What happened to one customer (a bulk element's main customer or one of its children)."""

    status: str = STATUS_FAILED
    capillary_id: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BulkOutcome(CustomerOutcome):
    """One bulk element's outcome, its children's (in ``childCustomers`` order) and its attempts."""

    index: int = 0
    attempts: int = 0
    children: list[CustomerOutcome] = field(default_factory=list)


@dataclass
class CompanyOutcome:
    """What ``ensure_companies`` did with one company."""

    external_id: str
    action: str  # created | updated | unchanged | failed
    company_id: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    attempts: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The outcome status of the staged format."""
        if self.action == "failed":
            return STATUS_FAILED
        return STATUS_WARNING if self.warnings else STATUS_SUCCESS


@dataclass
class _Answer:
    """A response (or the transport error that replaced it) and how many tries it took."""

    response: requests.Response | None
    attempts: int
    failure: str | None = None

    def json(self) -> Any:
        try:
            return self.response.json() if self.response is not None else None
        except ValueError:
            return None

    def first_error(self) -> tuple[int | None, str]:
        """(code, message) of a whole-request error body, masked."""
        if self.response is None:
            return None, self.failure or "no answer"
        body = self.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors and isinstance(errors, list) and isinstance(errors[0], dict):
            first = errors[0]
            return _int_or_none(first.get("code")), mask_text(first.get("message") or "")
        return self.response.status_code, mask_text(f"HTTP {self.response.status_code}: {self.response.text[:200]}")


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _messages(items: Any) -> list[dict[str, Any]]:
    """API messages as ``{code, message}`` with masked text, without repeats."""
    out: list[dict[str, Any]] = []
    for item in items or []:
        if not isinstance(item, dict):
            continue
        entry = {"code": _int_or_none(item.get("code")), "message": mask_text(item.get("message") or "")}
        if entry not in out:
            out.append(entry)
    return out


def _customer_outcome(result: Mapping[str, Any], extra_warnings: Any = ()) -> CustomerOutcome:
    """Map one answered customer (element or child entity) to an outcome."""
    entity = result.get("entity") if "entity" in result else result
    entity = entity if isinstance(entity, Mapping) else {}
    errors = _messages(result.get("errors")) or _messages(entity.get("errors"))
    warnings = _messages(list(result.get("warnings") or []) + list(entity.get("warnings") or []) + list(extra_warnings))
    capillary_id = _int_or_none(entity.get("id"))
    if errors or capillary_id is None:
        first = errors[0] if errors else {"code": None, "message": "Capillary answered no customer id"}
        return CustomerOutcome(
            status=STATUS_FAILED,
            error_code=first["code"],
            error_message="; ".join(e["message"] for e in errors) or first["message"],
            warnings=warnings,
        )
    return CustomerOutcome(
        status=STATUS_WARNING if warnings else STATUS_SUCCESS, capillary_id=capillary_id, warnings=warnings
    )


def _per_element_answer(body: Any) -> bool:
    """Whether a body is the bulk call's per-element list (also sent with 500 "all failed")."""
    return isinstance(body, list) or (isinstance(body, dict) and isinstance(body.get("response"), list))


def _elements_of(body: Any) -> list[Any]:
    return body if isinstance(body, list) else body.get("response")


# --- the hook --------------------------------------------------------------------------------------


class CapillaryHook(BaseHook):
    """Talk to Capillary's v2 customer, company and fleet hierarchy APIs."""

    conn_name_attr = "capillary_conn_id"
    default_conn_name = "capillary_default"
    conn_type = "http"
    hook_name = "Capillary"

    def __init__(self, capillary_conn_id: str = default_conn_name, *, settings: ClientSettings | None = None):
        super().__init__()
        self.capillary_conn_id = capillary_conn_id
        self._settings = settings
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._batch_limit: int | None = None
        self.stats = CallStats()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Labels of the connection form."""
        return {
            "hidden_fields": [],
            "relabeling": {"host": "Cluster URL", "login": "Till user", "password": "Till password"},
            "placeholders": {
                "host": "https://eu.api.capillarytech.com",
                "extra": '{"oauth_key": "...", "oauth_secret": "...", "rate_limit_rpm": 100}',
            },
        }

    # -- connection ---------------------------------------------------------------------------

    @property
    def settings(self) -> ClientSettings:
        """The connection's settings (read once per hook)."""
        if self._settings is None:
            self._settings = ClientSettings.from_connection(self.get_connection(self.capillary_conn_id))
        return self._settings

    @property
    def batch_limit(self) -> int:
        """Elements per bulk request: the configured size, halved for good after a 1060."""
        return self._batch_limit or self.settings.batch_size

    def get_conn(self) -> requests.Session:
        """One pooled session per hook, sized to the configured concurrency."""
        with self._session_lock:
            if self._session is None:
                import requests
                from requests.adapters import HTTPAdapter

                settings = self.settings
                session = requests.Session()
                pool = max(2, settings.concurrency)
                # Retries are ours (with backoff, jitter and Retry-After); urllib3 must not add any.
                adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                session.verify = settings.verify
                session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
                if settings.attribution_entity_type:
                    session.headers["X-CAP-API-ATTRIBUTION-ENTITY-TYPE"] = settings.attribution_entity_type
                if settings.attribution_entity_code:
                    session.headers["X-CAP-API-ATTRIBUTION-ENTITY-CODE"] = settings.attribution_entity_code
                self._session = session
            return self._session

    def close(self) -> None:
        """Close the pooled connections."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def test_connection(self) -> tuple[bool, str]:
        """Check credentials by reading the hierarchy definitions (the UI's Test button)."""
        try:
            count = len(self.get_hierarchies())
        except Exception as exc:  # the UI wants a message, not a traceback
            return False, str(exc)
        return True, f"Connected: {count} hierarchy definitions"

    @property
    def limiter(self):
        """The process-wide rate limiter of this cluster and credential."""
        from associate.ratelimit import limiter_for

        settings = self.settings
        return limiter_for(settings.base_url, settings.credential_id, settings.rate_limit_rpm)

    # -- auth ---------------------------------------------------------------------------------

    def _token_key(self) -> tuple[str, str]:
        return (self.settings.base_url, self.settings.oauth_key or "")

    def _auth_headers(self) -> dict[str, str]:
        settings = self.settings
        if not settings.uses_oauth:
            return {"Authorization": basic_authorization(settings.login, settings.password)}
        return {"X-CAP-API-OAUTH-TOKEN": self.oauth_token()}

    def oauth_token(self) -> str:
        """A valid OAuth token, generated when missing or about to expire."""
        key = self._token_key()
        token = TOKENS.valid(key)
        if token:
            return token
        with TOKENS.lock_for(key):
            token = TOKENS.valid(key)  # another thread may have refreshed it meanwhile
            if token:
                return token
            settings = self.settings
            answer = self._send(
                "POST", TOKEN_PATH, json_body={"key": settings.oauth_key, "secret": settings.oauth_secret},
                authenticated=False,
            )
            body = answer.json() if answer.response is not None and answer.response.status_code == 200 else None
            data = body.get("data") if isinstance(body, dict) else None
            if answer.response is None or answer.response.status_code >= 500:
                raise CapillaryError(
                    f"no OAuth token after {answer.attempts} attempt(s): {answer.failure}",
                    status=answer.response.status_code if answer.response is not None else None,
                )
            if not isinstance(data, dict) or not data.get("accessToken"):
                status = answer.response.status_code
                code, message = answer.first_error()
                raise CapillaryAuthError(
                    f"Capillary refused to generate an OAuth token for key {settings.oauth_key!r}: {message}",
                    status=status, code=code,
                )
            TOKENS.store(key, data["accessToken"], float(data.get("ttlSeconds") or 300))
            log.info("Generated a Capillary OAuth token (valid %s s)", data.get("ttlSeconds"))
            return data["accessToken"]

    # -- transport ----------------------------------------------------------------------------

    def _backoff(self, retry: int) -> float:
        """Exponential backoff with full jitter (AWS architecture blog's variant)."""
        settings = self.settings
        return random.uniform(0, min(settings.backoff_max, settings.backoff_base * (2 ** retry)))

    @staticmethod
    def _retry_after(response: requests.Response) -> float | None:
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

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        authenticated: bool = True,
        final_5xx: Callable[[Any], bool] | None = None,
    ) -> _Answer:
        """Send one call with retries; answer the last response (or transport failure) and the attempts."""
        # Retried: 429 (after Retry-After), 5xx, timeouts, dropped connections; an OAuth 401
        # once after a new token. Other 4xx are contract errors for the caller to interpret.
        # Every call here is safe to repeat: bulk sends match customers by identifier, the
        # rest are reads or company writes that ensure_companies reconciles.
        import requests

        settings = self.settings
        session = self.get_conn()
        url = settings.base_url + path
        timeout = (settings.connect_timeout, settings.read_timeout)
        attempts, retries, refreshed = 0, 0, False
        while True:
            self.limiter.acquire()
            headers = self._auth_headers() if authenticated else {}
            attempts += 1
            self.stats.sent()
            delay: float | None = None
            try:
                # verify goes with every request: requests lets REQUESTS_CA_BUNDLE override a
                # session-level verify=False (psf/requests#3829), never a per-request one.
                response = session.request(
                    method, url, params=params, json=json_body, headers=headers, timeout=timeout,
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
                    TOKENS.invalidate(self._token_key(), headers.get("X-CAP-API-OAUTH-TOKEN"))
                    refreshed = True
                    log.info("%s %s: 401 with an OAuth token; generating a new one", method, path)
                    continue
                if status == 429:
                    self.stats.add(throttled=1)
                    delay = self._retry_after(response)
                    delay = self._backoff(retries) if delay is None else delay + random.uniform(0, 0.25)
                    self.limiter.pause(delay)  # every thread sharing the budget holds off
                    failure = f"HTTP 429 rate limited (Retry-After {response.headers.get('Retry-After')})"
                elif status >= 500 and not (final_5xx and final_5xx(response)):
                    self.stats.add(server_errors=1)
                    failure = f"HTTP {status} from Capillary"
                else:
                    return _Answer(response, attempts)
            if retries >= settings.max_retries:
                log.warning("%s %s: giving up after %d attempts: %s", method, path, attempts, failure)
                return _Answer(response, attempts, failure)
            if delay is None:
                delay = self._backoff(retries)
            retries += 1
            self.stats.add(retries=1)
            log.info("%s %s: %s; retry %d/%d in %.2f s", method, path, failure, retries, settings.max_retries, delay)
            if response is None or response.status_code != 429:
                time.sleep(delay)
            if response is not None:
                response.close()

    def _call(self, method: str, path: str, *, params=None, json_body=None, not_found_ok: bool = False) -> Any:
        """A call whose non-2xx answer is an error; answer the JSON body (None for an allowed 404)."""
        answer = self._send(method, path, params=params, json_body=json_body)
        response = answer.response
        if response is not None and 200 <= response.status_code < 300:
            return answer.json()
        code, message = answer.first_error()
        status = response.status_code if response is not None else None
        if not_found_ok and (status == 404 or code == Codes.CUSTOMER_NOT_FOUND):
            return None
        error = CapillaryAuthError if status in (401, 403) else CapillaryError
        raise error(f"{method} {path} failed after {answer.attempts} attempt(s): {message}", status=status, code=code)

    # -- reads --------------------------------------------------------------------------------

    def get_hierarchies(self) -> list[HierarchyDefinition]:
        """Every active fleet hierarchy definition."""
        body = self._call("GET", HIERARCHIES_PATH)
        return [HierarchyDefinition.model_validate(item) for item in (body or {}).get("entity") or []]

    def lookup_customer(self, identifier_name: str, value: str, *, source: str = "ALL") -> int | None:
        """Capillary's user id of the customer with this identifier, or None."""
        params = {"source": source, "identifierName": identifier_name, "identifierValue": value}
        body = self._call("GET", LOOKUP_PATH, params=params, not_found_ok=True)
        return None if body is None else _int_or_none(body.get("entity"))

    def customer_details(self, identifier_name: str, value: str, *, source: str = "ALL") -> dict[str, Any] | None:
        """The full customer with this identifier, or None."""
        params = {"source": source, "identifierName": identifier_name, "identifierValue": value}
        return self._call("GET", DETAILS_PATH, params=params, not_found_ok=True)

    def get_company(self, external_id: str) -> dict[str, Any] | None:
        """The fleet company with this external id, or None."""
        return self._call("GET", COMPANIES_PATH, params={"externalId": external_id}, not_found_ok=True)

    # -- customers ------------------------------------------------------------------------------

    def post_customers_bulk(self, elements: Sequence[Mapping[str, Any] | str]) -> list[BulkOutcome]:
        """Send customer elements in order; answer one outcome per element (never raises for one bad element)."""
        # A 1060 (batch limit) halves the batch size for the rest of this hook's life; a
        # whole-request 400 is bisected until the offending element stands alone; a 500 "all
        # failed" with per-element results is mapped element by element.
        bodies = [json.loads(e) if isinstance(e, str) else dict(e) for e in elements]
        outcomes = [BulkOutcome(index=i) for i in range(len(bodies))]
        self._send_in_batches(list(range(len(bodies))), bodies, outcomes)
        return outcomes

    def _send_in_batches(self, indices: list[int], bodies: list[dict], outcomes: list[BulkOutcome]) -> None:
        start = 0
        while start < len(indices):
            limit = self.batch_limit
            self._send_chunk(indices[start:start + limit], bodies, outcomes)
            start += limit

    def _send_chunk(self, chunk: list[int], bodies: list[dict], outcomes: list[BulkOutcome]) -> None:
        answer = self._send("POST", BULK_PATH, json_body=[bodies[i] for i in chunk],
                            final_5xx=lambda r: _per_element_answer(_safe_json(r)))
        for i in chunk:
            outcomes[i].attempts += answer.attempts
        response, body = answer.response, answer.json()
        if response is not None and response.status_code in (200, 500) and _per_element_answer(body):
            results = _elements_of(body)
            if len(results) == len(chunk):
                for i, result in zip(chunk, results):
                    self._apply(outcomes[i], result)
                return
            self._fail(chunk, outcomes, None, f"Capillary answered {len(results)} results for {len(chunk)} elements")
            return
        code, message = answer.first_error()
        status = response.status_code if response is not None else None
        if status in (401, 403):
            raise CapillaryAuthError(f"POST {BULK_PATH} refused: {message}", status=status, code=code)
        if (code == Codes.BATCH_LIMIT_EXCEEDED or status == 413) and len(chunk) > 1:
            self._batch_limit = max(1, len(chunk) // 2)
            log.warning("Capillary batch limit exceeded with %d elements; sending at most %d per request from now on",
                        len(chunk), self._batch_limit)
            self._send_in_batches(chunk, bodies, outcomes)
            return
        if status == 400 and len(chunk) > 1:
            # One bad element spoils the whole request: halves isolate it, the rest still go through.
            log.info("Bulk request of %d elements refused (%s: %s); bisecting", len(chunk), code, message)
            middle = len(chunk) // 2
            self._send_chunk(chunk[:middle], bodies, outcomes)
            self._send_chunk(chunk[middle:], bodies, outcomes)
            return
        self._fail(chunk, outcomes, code, message)

    @staticmethod
    def _apply(outcome: BulkOutcome, result: Any) -> None:
        result = result if isinstance(result, Mapping) else {}
        main = _customer_outcome(result)
        outcome.status, outcome.capillary_id = main.status, main.capillary_id
        outcome.error_code, outcome.error_message, outcome.warnings = main.error_code, main.error_message, main.warnings
        outcome.children = [
            _customer_outcome(child) if isinstance(child, Mapping) else CustomerOutcome(error_message="no child result")
            for child in result.get("childEntities") or []
        ]

    @staticmethod
    def _fail(chunk: list[int], outcomes: list[BulkOutcome], code: int | None, message: str) -> None:
        for i in chunk:
            outcome = outcomes[i]
            outcome.status, outcome.capillary_id = STATUS_FAILED, None
            outcome.error_code, outcome.error_message = code, mask_text(message)

    # -- companies ------------------------------------------------------------------------------

    def ensure_companies(self, companies: Iterable[Mapping[str, Any]]) -> list[CompanyOutcome]:
        """Create or update fleet companies, holding companies first; one outcome per company."""
        requests_by_id: dict[str, dict[str, Any]] = {}
        outcomes: dict[str, CompanyOutcome] = {}
        for company in companies:
            request = {k: v for k, v in dict(company).items() if v is not None}
            external_id = str(request.get("externalId") or "")
            if not external_id:
                raise ValueError("every company needs an externalId (validation should have quarantined it)")
            if external_id in requests_by_id:
                log.warning("Company %s appears twice in the input; ensuring its first row only", external_id)
                continue
            requests_by_id[external_id] = request
        for external_id in _parents_first(requests_by_id, outcomes):
            parent = (requests_by_id[external_id].get("parentCompany") or {}).get("externalId")
            if parent in outcomes and outcomes[parent].action == "failed":
                outcomes[external_id] = CompanyOutcome(
                    external_id, "failed", error_message=f"holding company {parent} could not be ensured"
                )
                continue
            outcomes[external_id] = self._ensure_company(requests_by_id[external_id])
        return [outcomes[key] for key in requests_by_id]

    def _ensure_company(self, request: dict[str, Any]) -> CompanyOutcome:
        external_id = request["externalId"]
        outcome = CompanyOutcome(external_id, "failed")
        try:
            existing = self._counted(outcome, "GET", COMPANIES_PATH, params={"externalId": external_id}, missing_ok=True)
            if existing is None:
                created = self._counted(outcome, "POST", COMPANIES_PATH, json_body=request, exists_ok=True)
                if created is not None:
                    outcome.action, outcome.company_id = "created", _int_or_none(created.get("companyId"))
                    outcome.warnings = _messages(created.get("warnings"))
                    return outcome
                # A POST whose answer was lost already created it: reconcile as an existing one.
                existing = self._counted(outcome, "GET", COMPANIES_PATH, params={"externalId": external_id})
            outcome.company_id = _int_or_none(existing.get("companyId"))
            stored_code = existing.get("hierarchyDefinitionCode")
            if stored_code and stored_code != request.get("hierarchyDefinitionCode"):
                outcome.error_code = Codes.INVALID_INPUT
                outcome.error_message = (
                    f"company is in hierarchy {stored_code} in Capillary, not {request.get('hierarchyDefinitionCode')}; "
                    "a company's hierarchy cannot change"
                )
                return outcome
            if existing.get("name") == request.get("name") and (existing.get("extendedFields") or {}) == (
                request.get("extendedFields") or {}
            ):
                outcome.action = "unchanged"
                return outcome
            update = {k: v for k, v in request.items() if k != "parentCompany"}
            updated = self._counted(outcome, "PUT", COMPANIES_PATH, params={"externalId": external_id}, json_body=update)
            outcome.action = "updated"
            outcome.warnings = _messages((updated or {}).get("warnings"))
            return outcome
        except CapillaryAuthError:
            raise
        except CapillaryError as exc:
            outcome.action, outcome.error_code, outcome.error_message = "failed", exc.code, str(exc)
            return outcome

    def _counted(self, outcome: CompanyOutcome, method: str, path: str, *, params=None, json_body=None,
                 missing_ok: bool = False, exists_ok: bool = False) -> Any:
        """One company call, its attempts added to the outcome; None for an allowed 404 / "exists"."""
        answer = self._send(method, path, params=params, json_body=json_body)
        outcome.attempts += answer.attempts
        response = answer.response
        if response is not None and 200 <= response.status_code < 300:
            return answer.json()
        code, message = answer.first_error()
        status = response.status_code if response is not None else None
        if (missing_ok and status == 404) or (exists_ok and code == COMPANY_EXISTS):
            return None
        error = CapillaryAuthError if status in (401, 403) else CapillaryError
        raise error(f"{method} company {outcome.external_id}: {message}", status=status, code=code)


def _safe_json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _parents_first(requests_by_id: Mapping[str, Mapping[str, Any]], outcomes: dict[str, CompanyOutcome]) -> list[str]:
    """Companies ordered so a holding company comes before its subsidiaries; cycles fail."""
    ordered: list[str] = []
    state: dict[str, str] = {}

    def visit(external_id: str, path: tuple[str, ...]) -> bool:
        if state.get(external_id) == "done":
            return True
        if external_id in path:
            return False
        parent = (requests_by_id[external_id].get("parentCompany") or {}).get("externalId")
        if parent in requests_by_id and not visit(parent, path + (external_id,)):
            state[external_id] = "cycle"
            return False
        state[external_id] = "done"
        ordered.append(external_id)
        return True

    for external_id in requests_by_id:
        visit(external_id, ())
    for external_id in requests_by_id:
        if state.get(external_id) != "done":
            outcomes[external_id] = CompanyOutcome(
                external_id, "failed", error_message="parentCompany chain forms a cycle"
            )
    return ordered
