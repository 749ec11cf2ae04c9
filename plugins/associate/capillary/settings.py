"""An Airflow connection -> the client's typed settings, base URL and Basic auth header."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def _configuration_error(message: str) -> Exception:
    """An ``associate.exceptions.ConfigurationError``, imported when needed: Airflow imports this
    module while it discovers providers (``provider_info``), before ``associate.exceptions`` can be."""
    from associate.exceptions import ConfigurationError

    return ConfigurationError(message)


def _as_bool(value: Any, default: bool) -> bool:
    """Extras from a URI are strings; only an explicit false-like value is False."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("false", "0", "no", "off")


def _as_number(extras: Mapping[str, Any], name: str, default: float) -> Any:
    """Return a numeric extra of the default's type (URI extras arrive as strings), with a clear error if it is not a number."""
    kind = type(default)
    value = extras.get(name)
    if value is None or value == "":
        return kind(default)
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise _configuration_error(f"Capillary connection extra {name!r} must be a number, got {value!r}") from None
    if number < 0:
        raise _configuration_error(f"Capillary connection extra {name!r} must not be negative, got {value!r}")
    return number


def base_url_of(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """Return the cluster URL: the host's own scheme, else the schema field (http/https), else https."""
    if not host:
        raise _configuration_error("Capillary connection has no host (e.g. https://eu.api.capillarytech.com)")
    host = host.strip().rstrip("/")
    if "://" in host:
        url = host
    else:
        scheme = schema if schema in ("http", "https") else "https"
        url = f"{scheme}://{host}"
    if port and url.count(":") < 2:
        url = f"{url}:{port}"
    return url


def basic_authorization(login: str, password: str) -> str:
    """Return ``Basic base64("<login>:" + md5_hex(password))``, as Capillary wants it."""
    digest = hashlib.md5(password.encode("utf-8")).hexdigest()  # noqa: S324 - the API's scheme
    return "Basic " + base64.b64encode(f"{login}:{digest}".encode()).decode("ascii")


def phone_region_of(value: Any, where: str) -> str | None:
    """A default phone region (``"in"`` -> ``"IN"``, blank -> None), or a ConfigurationError naming ``where``."""
    try:
        from associate.identifiers import default_region  # phonenumbers: only when a region is read

        return default_region(value)
    except ValueError as exc:
        raise _configuration_error(f"{where}: {exc}") from None


def _extra(default: float, *, minimum: float = 0) -> Any:
    """Declare a tuning field, read from the connection extra of the same name (of the default's type)."""
    return field(default=default, metadata={"minimum": minimum})


@dataclass(frozen=True)
class ClientSettings:
    """Everything the client needs from an Airflow connection."""

    base_url: str
    # Basic auth with login and password, unless an OAuth key is set.
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    oauth_key: str | None = None
    oauth_secret: str | None = field(default=None, repr=False)
    # The budget is the API key's, shared by every thread; concurrency also sizes the HTTP pool.
    rate_limit_rpm: float = _extra(100.0)
    concurrency: int = _extra(2, minimum=1)
    batch_size: int = _extra(100, minimum=1)
    # Seconds; retries come after the first try, with exponential backoff and full jitter.
    connect_timeout: float = _extra(5.0)
    read_timeout: float = _extra(30.0)
    max_retries: int = _extra(6)
    backoff_base: float = _extra(1.0)
    backoff_max: float = _extra(60.0)
    # Seconds a task may wait in all after 429s (they do not count as retries); past it the
    # task fails for Airflow to retry it, and no customer is failed with 429.
    max_throttle_wait: float = _extra(900.0)
    # Only an explicit false turns TLS verification off.
    verify: bool = True
    attribution_entity_type: str | None = None
    attribution_entity_code: str | None = None
    # ISO 3166 alpha-2 region national mobiles are read with (validation); None: they need a country code.
    default_phone_region: str | None = None

    @property
    def uses_oauth(self) -> bool:
        """OAuth when a key is configured, Basic otherwise."""
        return bool(self.oauth_key)

    @property
    def credential_id(self) -> str:
        """The non-secret name of the credential: the rate budget is per API key."""
        return f"oauth:{self.oauth_key}" if self.uses_oauth else f"basic:{self.login}"

    @property
    def session_headers(self) -> dict[str, str]:
        """Headers of every request: JSON both ways, and the attribution when configured."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.attribution_entity_type:
            headers["X-CAP-API-ATTRIBUTION-ENTITY-TYPE"] = self.attribution_entity_type
        if self.attribution_entity_code:
            headers["X-CAP-API-ATTRIBUTION-ENTITY-CODE"] = self.attribution_entity_code
        return headers

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
            verify=_as_bool(extras.get("verify"), True),
            attribution_entity_type=extras.get("attribution_entity_type") or None,
            attribution_entity_code=extras.get("attribution_entity_code") or None,
            default_phone_region=phone_region_of(extras.get("default_phone_region"),
                                                 "Capillary connection extra 'default_phone_region'"),
            **{f.name: max(f.metadata["minimum"], _as_number(extras, f.name, f.default))
               for f in fields(cls) if "minimum" in f.metadata},
        )
        if settings.uses_oauth and not settings.oauth_secret:
            raise _configuration_error("Capillary connection has extra oauth_key but no oauth_secret")
        if not settings.uses_oauth and not (settings.login and settings.password):
            raise _configuration_error(
                "Capillary connection needs login + password (Basic) or extras oauth_key + oauth_secret"
            )
        if settings.rate_limit_rpm <= 0:
            raise _configuration_error("Capillary connection extra 'rate_limit_rpm' must be positive")
        return settings
