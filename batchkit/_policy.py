"""Policies as values: retries and backoff, and how an error is classified.

A bad setting fails when the policy is made, before any work starts.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from dataclasses import dataclass

from ._errors import ConfigError, Permanent, Transient

__all__ = ["ErrorInfo", "RetryPolicy", "classify", "redact"]

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a row's transient errors are retried.

    The delay before attempt ``n + 1`` is ``min(max_backoff, backoff * 2 ** (n - 1))``
    scaled by a random factor in ``[1 - jitter, 1 + jitter]``, and never shorter
    than a ``Retry-After`` the error carried. Permanent errors are never retried.

    Args:
        retries: how many times a row is retried after its first attempt.
        backoff: seconds before the first retry (1, 2, 4 s ... by default).
        max_backoff: the longest delay.
        jitter: the random share of the delay, 0 to 1.

    Example:
        >>> p = RetryPolicy(retries=3, jitter=0)
        >>> [p.delay(n) for n in (1, 2, 3)]
        [1.0, 2.0, 4.0]
    """

    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(
                f"retries must be a whole number >= 0, got {self.retries!r}; "
                "use 0 to never retry"
            )
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be seconds >= 0, got {value!r}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    @property
    def max_attempts(self) -> int:
        """Attempts a row gets in one run: the first plus ``retries``."""
        return self.retries + 1

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.backoff * 2 ** max(0, attempt - 1))
        if self.jitter:
            base *= 1 + self.jitter * (2 * (rng or random).random() - 1)
        if retry_after is not None:
            base = max(base, min(retry_after, 3600.0))
        return float(base)


@dataclass(frozen=True)
class ErrorInfo:
    """A row's error as stored: type name, redacted message, whether it is transient."""

    type: str
    message: str
    transient: bool
    retry_after: float | None = None


def _retry_after(headers: object) -> float | None:
    try:
        value = headers.get("retry-after")  # type: ignore[attr-defined]
    except Exception:
        return None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_of(exc: BaseException) -> tuple[int | None, object]:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status, getattr(response, "headers", None)
    return None, None


def _is_transient_exception(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    module = type(exc).__module__ or ""
    if module.startswith(("httpx", "httpcore")):
        import httpx

        return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError,
                                httpx.RemoteProtocolError))
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"Timeout", "ConnectTimeout", "ReadTimeout", "ConnectionError"})


def classify(exc: BaseException) -> ErrorInfo:
    """Classify an exception a row raised as transient (retry) or permanent (fail now).

    Transient: ``bk.Transient``, timeouts, connection errors, and HTTP errors whose
    response has status 408, 425, 429 or 5xx (their ``Retry-After`` is honoured).
    Everything else, and ``bk.Permanent``, is permanent.

    Example:
        >>> classify(TimeoutError("slow")).transient
        True
        >>> classify(KeyError("x")).transient
        False
    """
    message = redact(str(exc))
    name = type(exc).__name__
    if isinstance(exc, Transient):
        return ErrorInfo(name, message, True, exc.retry_after)
    if isinstance(exc, Permanent):
        return ErrorInfo(name, message, False)
    status, headers = _status_of(exc)
    if status is not None:
        if status in _TRANSIENT_STATUS or status >= 500:
            return ErrorInfo(name, message, True, _retry_after(headers))
        return ErrorInfo(name, message, False)
    return ErrorInfo(name, message, _is_transient_exception(exc))


_SECRET_PARAM = re.compile(
    r"(?i)\b([\w-]*(?:api[_-]?key|apikey|token|secret|password|passwd|signature|auth)[\w-]*)"
    r"(=|:\s*|[\"']?\s*:\s*[\"']?)"
    r"(?!(?:bearer|basic)\b|\*\*\*|[A-Za-z][\w.-]*(?:\s+|%20|\+)\*\*\*)([^&\s\"',;]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[A-Za-z0-9._~+/=-]{6,}")
# an Authorization header of any scheme ("Token abc", "Digest ...", or a bare credential)
_AUTH_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
    r"(?:([A-Za-z][\w.-]*)(\s+|%20|\+))?[^\s\"',;&]+"
)
_USERINFO = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")  # https://user:password@host
_MAX_MESSAGE = 2000


def redact(text: str, *, limit: int = _MAX_MESSAGE) -> str:
    """Mask secrets (API keys, tokens, passwords, bearer credentials) and cap the length.

    Example:
        >>> redact("GET https://api.example/v1?q=acme&api_key=s3cr3t failed")
        'GET https://api.example/v1?q=acme&api_key=*** failed'
        >>> redact("Authorization: Bearer abcdef123456")
        'Authorization: Bearer ***'
    """
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _AUTH_HEADER.sub(
        lambda m: f"{m.group(1)}{m.group(2) + m.group(3) if m.group(2) else ''}***", text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}***@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    if len(text) > limit:
        text = text[: limit - 15] + " …[truncated]"
    return text
