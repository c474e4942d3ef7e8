"""Policies as values: RetryPolicy validation and backoff, error classification, redaction."""

from __future__ import annotations

import dataclasses
import email.utils
import random
import time

import httpx
import pytest

import batchkit as bk

# -- RetryPolicy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retries": -1}, "retries must be a whole number >= 0, got -1"),
        ({"retries": 1.5}, "retries must be"),
        ({"retries": True}, "retries must be"),
        ({"backoff": -0.1}, "backoff must be seconds >= 0"),
        ({"max_backoff": -1}, "max_backoff must be seconds >= 0"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"jitter": -0.1}, "jitter must be between 0 and 1"),
    ],
)
def test_retry_policy_rejects_bad_values(kwargs, match):
    """A bad RetryPolicy setting raises ConfigError (a ValueError) when the policy is made."""
    with pytest.raises(bk.ConfigError, match=match):
        bk.RetryPolicy(**kwargs)
    with pytest.raises(ValueError):
        bk.RetryPolicy(**kwargs)


def test_retry_policy_is_frozen():
    """A RetryPolicy is an immutable value."""
    policy = bk.RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.retries = 5  # type: ignore[misc]
    assert policy == bk.RetryPolicy(retries=3, backoff=1.0, max_backoff=300.0, jitter=0.1)


def test_max_attempts_is_first_plus_retries():
    """max_attempts counts the first attempt plus the retries."""
    assert bk.RetryPolicy(retries=0).max_attempts == 1
    assert bk.RetryPolicy(retries=4).max_attempts == 5


def test_delay_doubles_up_to_max_backoff():
    """Without jitter the delay doubles per attempt and stops at max_backoff."""
    policy = bk.RetryPolicy(retries=10, backoff=0.5, max_backoff=5, jitter=0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_zero_backoff_means_no_wait():
    """backoff=0 retries at once."""
    policy = bk.RetryPolicy(retries=3, backoff=0)
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.0, 0.0, 0.0]


def test_jitter_stays_within_its_share_and_follows_the_seed():
    """Jittered delays stay within +-jitter of the base and repeat for the same seed."""
    policy = bk.RetryPolicy(backoff=2, jitter=0.25)
    first = [policy.delay(2, rng=random.Random(7)) for _ in range(3)]
    again = [policy.delay(2, rng=random.Random(7)) for _ in range(3)]
    assert first == again
    spread = [policy.delay(2, rng=rng) for rng in [random.Random(1)] * 200]
    assert all(3.0 <= d <= 5.0 for d in spread)
    assert max(spread) - min(spread) > 0.5


def test_retry_after_is_a_floor_capped_at_an_hour():
    """A Retry-After longer than the backoff wins; absurd values are capped at 3600 s."""
    policy = bk.RetryPolicy(backoff=1, jitter=0)
    assert policy.delay(1, retry_after=30) == 30.0
    assert policy.delay(1, retry_after=0.2) == 1.0
    assert policy.delay(1, retry_after=10**9) == 3600.0


# -- classify ----------------------------------------------------------------------------


def _http_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example.test/v1/items")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


def test_transient_exception_is_transient_with_retry_after():
    """bk.Transient is retried and carries its retry_after."""
    info = bk.classify(bk.Transient("busy", retry_after=2.5))
    assert (info.type, info.message, info.transient, info.retry_after) == (
        "Transient", "busy", True, 2.5)


def test_permanent_exception_is_permanent():
    """bk.Permanent fails at once."""
    info = bk.classify(bk.Permanent("no such company"))
    assert (info.type, info.transient) == ("Permanent", False)


@pytest.mark.parametrize(
    "exc",
    [TimeoutError("slow"), ConnectionResetError("reset"), ConnectionRefusedError("no"),
     bk.ItemTimeout("too long"),
     httpx.ConnectError("refused"), httpx.ReadTimeout("read timed out"),
     httpx.RemoteProtocolError("server hung up")],
    ids=lambda e: type(e).__name__,
)
def test_timeouts_and_connection_errors_are_transient(exc):
    """Timeouts and connection errors (stdlib and httpx) are transient."""
    assert bk.classify(exc).transient is True


@pytest.mark.parametrize(
    "exc", [KeyError("x"), ValueError("bad"), ZeroDivisionError(), TypeError("t"),
            httpx.InvalidURL("not a url")],
    ids=lambda e: type(e).__name__)
def test_other_errors_are_permanent(exc):
    """Everything else is permanent."""
    info = bk.classify(exc)
    assert info.transient is False
    assert info.type == type(exc).__name__


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_http_retryable_statuses_are_transient(status):
    """HTTP 408, 425, 429 and every 5xx are transient."""
    info = bk.classify(_http_error(status))
    assert info.transient is True
    assert info.type == "HTTPStatusError"
    assert info.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_http_client_errors_are_permanent(status):
    """Other 4xx statuses (e.g. 404) are permanent."""
    assert bk.classify(_http_error(status)).transient is False


def test_retry_after_seconds_header_is_read():
    """A 429 with Retry-After: 30 is transient with retry_after 30 s."""
    info = bk.classify(_http_error(429, {"Retry-After": "30"}))
    assert (info.transient, info.retry_after) == (True, 30.0)


def test_retry_after_http_date_header_is_read():
    """A 503 with an HTTP-date Retry-After gives the seconds until that date."""
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    info = bk.classify(_http_error(503, {"Retry-After": when}))
    assert info.transient is True
    assert 100 <= info.retry_after <= 121


@pytest.mark.parametrize("value", ["soon", "", "-5"])
def test_unreadable_or_negative_retry_after_is_ignored(value):
    """A Retry-After that is not a number or date is ignored; a negative one means 0."""
    info = bk.classify(_http_error(503, {"Retry-After": value}))
    assert info.transient is True
    assert info.retry_after in (None, 0.0)
    if value == "-5":
        assert info.retry_after == 0.0


def test_any_exception_with_a_response_status_code_is_classified():
    """Errors of other HTTP clients (``exc.response.status_code``) are classified alike."""

    class Response:
        status_code = 429
        headers = {"retry-after": "7"}

    class ClientError(Exception):
        response = Response()

    info = bk.classify(ClientError("too many requests"))
    assert (info.type, info.transient, info.retry_after) == ("ClientError", True, 7.0)
    Response.status_code = 404
    assert bk.classify(ClientError("missing")).transient is False


def test_classify_redacts_secrets_in_messages():
    """The stored message of an error has its secrets masked."""
    info = bk.classify(ValueError("GET /v1?api_key=abc123&q=x failed"))
    assert "abc123" not in info.message
    assert "api_key=***" in info.message


# -- redact ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("https://x.test/?token=tok_live_123&page=2", "tok_live_123"),
        ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi.abc.def"),
        ('{"password": "hunter2"}', "hunter2"),
        ("client_secret=s3cr3t", "s3cr3t"),
        ("X-Api-Key: 0123456789abcdef", "0123456789abcdef"),
    ],
)
def test_redact_masks_secrets(text, secret):
    """redact() masks API keys, tokens, passwords and bearer credentials."""
    out = bk.redact(text)
    assert secret not in out
    assert "***" in out


def test_redact_leaves_plain_text_alone():
    """Text without secrets is unchanged."""
    text = "company acme not found (HTTP 404) at https://x.test/v1/companies?q=acme"
    assert bk.redact(text) == text


def test_redact_caps_the_length():
    """Long messages are truncated to the limit with a marker."""
    out = bk.redact("x" * 5000, limit=100)
    assert len(out) <= 100
    assert out.endswith("[truncated]")
