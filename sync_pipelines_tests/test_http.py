"""The HTTP session helper against a local scripted server, over real HTTP.

The server answers from a script: an HTTP status, a dropped connection, or a slow answer. The
helper's sleep is a recorder, so no test waits for a backoff.
"""

import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from sync_pipelines.http import (
    RETRIABLE_STATUSES,
    RetryingSession,
    RetryPolicy,
    TransportError,
    redact_url,
)

DROP = "drop"


@dataclass(frozen=True)
class Slow:
    """Answer 200, but only after ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Reply:
    """An HTTP answer."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Step = Reply | Slow | str


class ScriptedServer(ThreadingHTTPServer):
    """Answers each request with the next step of ``script``, then with ``default``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script: deque[Step] = deque()
        self.default: Step = Reply(200, b"ok")
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def next_step(self, path: str) -> Step:
        with self.lock:
            self.paths.append(path)
            return self.script.popleft() if self.script else self.default


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def _answer(self) -> None:
        step = self.server.next_step(self.path)
        if step == DROP:
            self.close_connection = True  # no answer at all: the client sees the connection drop
            return
        if isinstance(step, Slow):
            time.sleep(step.seconds)
            step = Reply(200, b"late")
        assert isinstance(step, Reply)
        self.send_response(step.status)
        for name, value in step.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(step.body)))
        self.end_headers()
        self.wfile.write(step.body)


class CeilingRandom(random.Random):
    """A "random" source that always picks the top of the range: the jitter ceiling itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _session(
    sleeps: list[float],
    *,
    max_retries: int = 3,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    rng: random.Random | None = None,
    timeout: tuple[float, float] = (2.0, 5.0),
    session: requests.Session | None = None,
) -> RetryingSession:
    return RetryingSession(
        timeout=timeout,
        policy=RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max),
        session=session,
        sleep=sleeps.append,
        rng=rng or CeilingRandom(),
    )


@pytest.mark.parametrize("status", sorted(RETRIABLE_STATUSES))
def test_retriable_status_is_retried_with_growing_backoff(
    server: ScriptedServer, sleeps: list[float], status: int
) -> None:
    """429 and 5xx are retried; each sleep doubles (ceiling of the full-jitter range)."""
    server.script.extend([Reply(status)] * 3)
    attempts: list[int] = []
    response = _session(sleeps).request("GET", server.url + "/x", on_attempt=attempts.append)
    assert response.status_code == 200
    assert attempts == [0, 1, 2, 3]
    assert sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_fatal_status_is_returned_at_once(server: ScriptedServer, sleeps: list[float], status: int) -> None:
    """Other 4xx are not retried: the caller gets the answer to raise its own error."""
    server.script.append(Reply(status, b'{"code":"NOPE"}'))
    response = _session(sleeps).request("GET", server.url + "/x")
    assert response.status_code == status
    assert response.text == '{"code":"NOPE"}'
    assert sleeps == []
    assert len(server.paths) == 1


def test_exhausted_retries_return_the_last_failure_and_sleeps_are_capped(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    """When the retries run out the failing answer comes back (never a fake success)."""
    server.default = Reply(503)
    response = _session(sleeps, max_retries=5, backoff_base=1.0, backoff_max=3.0).request(
        "GET", server.url + "/x"
    )
    assert response.status_code == 503
    assert len(server.paths) == 6
    assert sleeps == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_full_jitter_is_seeded_and_bounded(server: ScriptedServer, sleeps: list[float]) -> None:
    """Each sleep is uniform in [0, min(max, base * 2**attempt)], reproducible with a seed."""
    server.default = Reply(429)
    policy = RetryPolicy(max_retries=6, backoff_base=0.5, backoff_max=4.0)
    _session(sleeps, max_retries=6, backoff_base=0.5, backoff_max=4.0, rng=random.Random(42)).request(
        "GET", server.url + "/x"
    )
    reference = random.Random(42)
    assert sleeps == [reference.uniform(0.0, policy.ceiling(i)) for i in range(6)]
    assert [policy.ceiling(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for attempt, slept in enumerate(sleeps):
        assert 0.0 <= slept <= policy.ceiling(attempt)


def test_dropped_connection_is_retried(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script.extend([DROP, DROP])
    response = _session(sleeps).request("POST", server.url + "/x", data={"a": "1"})
    assert response.status_code == 200
    assert sleeps == [0.5, 1.0]


def test_persistent_connection_failure_raises_transport_error_without_query(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    """The error names the request but never its query string (tokens travel there)."""
    server.default = DROP
    with pytest.raises(TransportError) as excinfo:
        _session(sleeps, max_retries=2).request("GET", server.url + "/webservice?wstoken=SECRET123")
    error = excinfo.value
    assert error.attempts == 3
    assert error.url == server.url + "/webservice"
    assert "SECRET123" not in str(error)
    assert "SECRET123" not in repr(error)
    assert error.__cause__ is None
    assert len(sleeps) == 2


def test_connection_refused_is_retried_then_raised(sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed again: nothing listens there.
    with pytest.raises(TransportError, match="ConnectionError"):
        _session(sleeps, max_retries=1).request("GET", f"http://127.0.0.1:{port}/x?token=SECRET123")
    assert sleeps == [0.5]


def test_read_timeout_is_retried(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script.append(Slow(0.5))
    response = _session(sleeps, timeout=(2.0, 0.1)).request("GET", server.url + "/x")
    assert response.status_code == 200
    assert sleeps == [0.5]


class RecordingSession(requests.Session):
    """A real session that also notes the timeout of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[Any] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.timeouts.append(kwargs.get("timeout"))
        return super().request(method, url, *args, **kwargs)


def test_every_attempt_carries_the_timeout(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script.extend([Reply(502), Reply(504)])
    recording = RecordingSession()
    _session(sleeps, timeout=(3.0, 7.0), session=recording).request("GET", server.url + "/x")
    assert recording.timeouts == [(3.0, 7.0)] * 3


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("2", 2.0),  # asked for more than the jitter: honoured
        ("100", 5.0),  # capped at backoff_max
        ("0", 0.5),  # asked for less than the jitter: the jitter stands
        ("Wed, 21 Oct 2026 07:28:00 GMT", 0.5),  # HTTP dates are ignored
    ],
)
def test_retry_after_is_honoured_within_the_cap(
    server: ScriptedServer, sleeps: list[float], retry_after: str, expected: float
) -> None:
    server.script.append(Reply(429, headers={"Retry-After": retry_after}))
    _session(sleeps, backoff_max=5.0).request("GET", server.url + "/x")
    assert sleeps == [expected]


def test_retry_if_adds_caller_specific_retriable_answers(server: ScriptedServer, sleeps: list[float]) -> None:
    """E.g. Zoho's token throttle, which answers HTTP 400."""
    server.script.extend([Reply(400, b"throttled"), Reply(400, b"throttled"), Reply(400, b"bad")])
    response = _session(sleeps).request("GET", server.url + "/x", retry_if=lambda r: r.text == "throttled")
    assert response.status_code == 400
    assert response.text == "bad"
    assert len(sleeps) == 2


def test_header_factory_is_called_before_every_attempt(server: ScriptedServer, sleeps: list[float]) -> None:
    server.script.append(Reply(500))
    calls: list[int] = []

    def headers() -> dict[str, str]:
        calls.append(1)
        return {"X-Attempt": str(len(calls))}

    _session(sleeps).request("GET", server.url + "/x", headers=headers)
    assert len(calls) == 2


def test_logs_are_debug_only_and_never_show_the_query(
    server: ScriptedServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sync_pipelines.http")
    server.script.extend([Reply(503), DROP])
    _session(sleeps).request("GET", server.url + "/x?wstoken=SECRET123")
    records = [r for r in caplog.records if r.name == "sync_pipelines.http"]
    assert records
    assert all(r.levelno == logging.DEBUG for r in records)
    assert "SECRET123" not in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"backoff_base": -0.1}, {"backoff_max": -1.0}],
)
def test_policy_rejects_negative_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_redact_url_keeps_scheme_host_and_path() -> None:
    assert redact_url("https://h.example:8443/a/b?wstoken=x#frag") == "https://h.example:8443/a/b"
