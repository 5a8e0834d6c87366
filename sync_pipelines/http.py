"""The one HTTP session helper: timeouts on every call, retries with backoff, a clear error split.

Every client of an outside service (Zoho CRM, Moodle) sends its requests through
:class:`RetryingSession`. It knows nothing about the services: it only decides whether an answer is
worth trying again.

* **Retriable**: HTTP 429, 500, 502, 503, 504 (plus whatever a caller's ``retry_if`` recognises,
  e.g. Zoho's token-endpoint throttle, which answers HTTP 400), connection errors and timeouts.
  They are retried up to ``max_retries`` times, sleeping ``uniform(0, min(backoff_max,
  backoff_base * 2**attempt))`` between attempts ("full jitter"), or the server's ``Retry-After``
  when it sends one (capped at ``backoff_max``).
* **Fatal**: every other answer. It is returned at once, unretried, for the caller to turn into its
  own typed error.

The session never swallows a failure: when the retries run out it either returns the last
(still failing) response, which the caller must check like any other, or raises
:class:`TransportError` if the server could not be reached at all. Query strings never appear in
logs or in :class:`TransportError` (Moodle, for one, takes its token as a query parameter).

The retry loop is written out rather than delegated to urllib3's ``Retry``: the caller must be able
to count every attempt (API credits are metered per call) and tests must be able to replace the
sleep.
"""

import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

logger = logging.getLogger(__name__)

#: HTTP statuses that say "try again later" rather than "this request is wrong".
RETRIABLE_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})

#: Exceptions that mean the request may not have reached the server, or its answer was lost.
RETRIABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)

_QUERY = re.compile(r"\?[^\s'\"()]*")


def redact_url(url: str) -> str:
    """Return ``url`` without its query string and fragment, safe to log.

    Args:
        url: any URL.

    Returns:
        Scheme, host and path only.
    """
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _redact_text(text: str) -> str:
    """Blank every query string in free text (e.g. a requests exception message)."""
    return _QUERY.sub("?<redacted>", text)


class TransportError(Exception):
    """The server could not be reached (connection refused or dropped, timeout), retries exhausted.

    Attributes:
        method: HTTP method of the request.
        url: the request URL without its query string.
        attempts: how many attempts were made.
        reason: the last low-level error, query strings blanked.
    """

    def __init__(self, method: str, url: str, attempts: int, reason: str) -> None:
        self.method = method
        self.url = url
        self.attempts = attempts
        self.reason = reason
        super().__init__(method, url, attempts, reason)

    def __str__(self) -> str:
        return f"{self.method} {self.url} failed after {self.attempts} attempt(s): {self.reason}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        max_retries: retries after the first attempt (so at most ``max_retries + 1`` attempts).
        backoff_base: the backoff ceiling for the first retry, in seconds; it doubles each retry.
        backoff_max: the largest sleep ever requested, in seconds.
        statuses: HTTP statuses that are retried.
    """

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    statuses: frozenset[int] = RETRIABLE_STATUSES

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be >= 0")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the sleep before retry number ``attempt + 1`` (``attempt`` from 0)."""
        # min() first keeps 2**attempt from overflowing a float for absurd attempt counts.
        return min(self.backoff_max, self.backoff_base * 2 ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A full-jitter delay: uniform between 0 and :meth:`ceiling`.

        Full jitter (rather than a fixed or "equal" jitter) spreads the retries of many workers hit
        by the same outage, which is what a per-org concurrency limit like Zoho's needs.
        """
        return rng.uniform(0.0, self.ceiling(attempt))


def _retry_after(response: requests.Response) -> float | None:
    """Seconds asked for by a numeric ``Retry-After`` header, if any (HTTP dates are ignored)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


class RetryingSession:
    """A ``requests.Session`` with timeouts on every call and retries with backoff and full jitter.

    Args:
        timeout: ``(connect, read)`` timeout in seconds, applied to every request.
        policy: the retry policy.
        session: the underlying session (one is created, and owned, if omitted).
        sleep: called with each backoff delay; tests pass a recorder so they never sleep.
        rng: random source for the jitter; tests pass a seeded one.
    """

    def __init__(
        self,
        *,
        timeout: tuple[float, float] = (5.0, 60.0),
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self._owns_session = session is None
        self.session = session or requests.Session()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def close(self) -> None:
        """Close the underlying session if this object created it."""
        if self._owns_session:
            self.session.close()

    def is_retriable(
        self,
        response: requests.Response,
        retry_if: Callable[[requests.Response], bool] | None = None,
    ) -> bool:
        """Whether ``response`` is worth another attempt under this policy.

        Args:
            response: an answer from the server.
            retry_if: an extra, caller-specific test (OR-ed with the status check).
        """
        if response.status_code in self.policy.statuses:
            return True
        return retry_if is not None and retry_if(response)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        retry_if: Callable[[requests.Response], bool] | None = None,
        on_attempt: Callable[[int], None] | None = None,
    ) -> requests.Response:
        """Send a request, retrying retriable failures.

        Args:
            method: HTTP method.
            url: full URL.
            params: query parameters.
            data: form body.
            json: JSON body.
            headers: request headers, or a function returning them (called before every attempt,
                so a caller can put a freshly refreshed token in).
            retry_if: an extra, caller-specific test that marks a response as retriable.
            on_attempt: called with the attempt number (0 for the first) before every attempt, so
                the caller can count calls and retries.

        Returns:
            The first non-retriable response, or the last response when retries ran out. Its status
            may well be an error: the caller must check it.

        Raises:
            TransportError: the last attempt failed with a connection error or timeout.
        """
        safe_url = redact_url(url)
        attempt = 0
        while True:
            if on_attempt is not None:
                on_attempt(attempt)
            sent_headers = headers() if callable(headers) else headers
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json,
                    headers=dict(sent_headers) if sent_headers else None,
                    timeout=self.timeout,
                )
            except RETRIABLE_EXCEPTIONS as exc:
                reason = f"{type(exc).__name__}: {_redact_text(str(exc))}"
                if attempt >= self.policy.max_retries:
                    raise TransportError(method, safe_url, attempt + 1, reason) from None
                delay = self.policy.delay(attempt, self._rng)
                logger.debug(
                    "%s %s: %s; retry %d/%d in %.2fs",
                    method,
                    safe_url,
                    type(exc).__name__,
                    attempt + 1,
                    self.policy.max_retries,
                    delay,
                )
            else:
                if not self.is_retriable(response, retry_if):
                    logger.debug("%s %s -> %d", method, safe_url, response.status_code)
                    return response
                if attempt >= self.policy.max_retries:
                    logger.debug("%s %s -> %d, retries exhausted", method, safe_url, response.status_code)
                    return response
                delay = self.policy.delay(attempt, self._rng)
                asked = _retry_after(response)
                if asked is not None:
                    delay = min(self.policy.backoff_max, max(delay, asked))
                logger.debug(
                    "%s %s -> %d; retry %d/%d in %.2fs",
                    method,
                    safe_url,
                    response.status_code,
                    attempt + 1,
                    self.policy.max_retries,
                    delay,
                )
                response.close()
            self._sleep(delay)
            attempt += 1


__all__ = [
    "RETRIABLE_EXCEPTIONS",
    "RETRIABLE_STATUSES",
    "RetryPolicy",
    "RetryingSession",
    "TransportError",
    "redact_url",
]
