"""Basic and OAuth authentication, and the per-credential rate limit."""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import json
import math
import threading
import time
import uuid


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AuthError(Exception):
    """The request is not authenticated (HTTP 401)."""


class Authenticator:
    """Checks Basic (``user:md5(password)``) and ``X-CAP-API-OAUTH-TOKEN`` headers."""

    def __init__(self, credentials, oauth, token_ttl: int, signing_key: bytes, clock=time.time):
        self._basic = {user: hashlib.md5(password.encode()).hexdigest() for user, password in credentials}
        self._oauth = dict(oauth)
        self.token_ttl = token_ttl
        self._key = signing_key
        self._clock = clock

    def issue_token(self, key: str, secret: str) -> str:
        """A signed JWT (HS256) for a known key/secret; raises AuthError otherwise."""
        expected = self._oauth.get(key)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            raise AuthError("Invalid key or secret")
        now = int(self._clock())
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = _b64url(json.dumps({"sub": key, "iat": now, "exp": now + self.token_ttl,
                                     "jti": uuid.uuid4().hex}).encode())
        signature = _b64url(hmac.new(self._key, f"{header}.{claims}".encode(), hashlib.sha256).digest())
        return f"{header}.{claims}.{signature}"

    def principal(self, headers) -> str:
        """The credential name a request authenticates as (Basic user or OAuth key)."""
        token = headers.get("X-CAP-API-OAUTH-TOKEN")
        if token:
            return self._check_token(token.strip())
        authorization = headers.get("Authorization") or ""
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise AuthError("Authentication required: Basic or X-CAP-API-OAUTH-TOKEN")
        try:
            user, sep, digest = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthError("Malformed Basic authorization") from None
        expected = self._basic.get(user)
        if not sep or expected is None or not hmac.compare_digest(expected, digest.lower()):
            raise AuthError("Invalid till credentials")
        return user

    def _check_token(self, token: str) -> str:
        try:
            header, claims, signature = token.split(".")
            expected = _b64url(hmac.new(self._key, f"{header}.{claims}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(expected, signature):
                raise AuthError("Invalid token")
            payload = json.loads(_unb64url(claims))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise AuthError("Invalid token") from None
        if not isinstance(payload, dict) or payload.get("sub") not in self._oauth:
            raise AuthError("Invalid token")
        if not isinstance(payload.get("exp"), int) or payload["exp"] <= self._clock():
            raise AuthError("Token expired")
        return payload["sub"]


class CredentialWindowLimiter:
    """At most N requests per credential in any sliding 60-second window (the server's side of a rate limit)."""

    WINDOW = 60.0

    def __init__(self, rpm: int, clock=time.monotonic):
        self.rpm = rpm
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def admit(self, principal: str) -> int | None:
        """None if the request may go on, else the seconds to wait (for ``Retry-After``)."""
        if self.rpm <= 0:
            return None
        now = self._clock()
        with self._lock:
            seen = self._seen[principal]
            while seen and seen[0] <= now - self.WINDOW:
                seen.popleft()
            if len(seen) >= self.rpm:
                return max(1, math.ceil(seen[0] + self.WINDOW - now))
            seen.append(now)
            return None
