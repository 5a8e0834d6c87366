"""The Zoho CRM client against a small programmable Zoho stub, over real HTTP.

The stub plays both Zoho servers (accounts and CRM) on one local port. It issues access tokens,
rejects unknown ones with ``INVALID_TOKEN``, pages a module the way Zoho does (refusing ``page``
past 2,000 records and ``page`` together with ``page_token``), answers upserts per record, and
records every request it got. Scripted answers (429, 503, a dropped connection, recorded error
bodies) are served ahead of the normal behaviour. The client's sleep is a recorder and its clock a
fake, so nothing waits.
"""

import json
import logging
import pickle
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sync_pipelines.zoho.client import (
    CallStats,
    UpsertResult,
    ZohoAuthError,
    ZohoClient,
    ZohoError,
    ZohoRateLimitError,
)

TENANT = "school-a"
CLIENT_SECRET = "cs-0123456789abcdef-SECRET"
REFRESH_TOKEN = "1000.refresh-0123456789-SECRET"
MODULE = "BTEC_Students"
SINCE = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)

INVALID_TOKEN = {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"}
TOO_MANY_REQUESTS = {
    "code": "TOO_MANY_REQUESTS",
    "details": {},
    "message": "The number of requests exceeds the limit",
    "status": "error",
}
ACCESS_DENIED = {
    "error_description": "You have made too many requests continuously. Please try again after some time.",
    "error": "Access Denied",
    "status": "failure",
}

DROP = "drop"
Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]] | str


# --- the stub -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the stub received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]
    body: Any

    @property
    def token(self) -> str:
        return self.headers.get("Authorization", "").removeprefix("Zoho-oauthtoken ")

    @property
    def fields(self) -> list[str]:
        return self.query["fields"].split(",") if "fields" in self.query else []


class ZohoStub:
    """Zoho's accounts and CRM servers, as far as the client needs them."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.token_script: deque[Answer] = deque()
        self.api_script: deque[Answer] = deque()
        self.routes: dict[tuple[str, str], Callable[[Seen], Answer]] = {}
        self.expires_in = 3600
        self.api_domain: str | None = None
        self.issued: list[str] = []
        self.valid: set[str] = set()
        self.lock = threading.Lock()
        self.url = ""

    def requests_to(self, path_suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith(path_suffix)]

    @property
    def token_requests(self) -> list[Seen]:
        return self.requests_to("/oauth/v2/token")

    def handle(self, seen: Seen) -> Answer:
        with self.lock:
            self.seen.append(seen)
            if seen.path == "/oauth/v2/token":
                if self.token_script:
                    return self.token_script.popleft()
                token = f"tok-{len(self.issued) + 1}"
                self.issued.append(token)
                self.valid.add(token)
                answer: dict[str, Any] = {"access_token": token, "expires_in": self.expires_in}
                if self.api_domain:
                    answer["api_domain"] = self.api_domain
                answer["token_type"] = "Bearer"
                return 200, answer
            if self.api_script:
                return self.api_script.popleft()
            if seen.token not in self.valid:
                return 401, INVALID_TOKEN
            handler = self.routes.get((seen.method, seen.path))
        if handler is None:
            return 404, {
                "code": "INVALID_URL_PATTERN",
                "details": {},
                "message": "invalid url",
                "status": "error",
            }
        return handler(seen)


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: ZohoStub) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.stub = stub


class _StubHandler(BaseHTTPRequestHandler):
    server: _StubServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        content_type = self.headers.get("Content-Type", "")
        seen = Seen(
            method=self.command,
            path=url.path,
            query={k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
            headers=dict(self.headers.items()),
            form={k: v[-1] for k, v in parse_qs(raw.decode()).items()} if "form" in content_type else {},
            body=json.loads(raw) if raw and "json" in content_type else None,
        )
        answer = self.server.stub.handle(seen)
        if answer == DROP:
            self.close_connection = True  # no answer: the client sees the connection drop
            return
        assert isinstance(answer, tuple)
        status, payload = answer[0], answer[1]
        headers = answer[2] if len(answer) > 2 else {}
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeModule:
    """A module's records, paged like Zoho pages them.

    ``view`` lets a test change what a request sees (records created or edited mid-read).
    """

    def __init__(
        self, records: list[dict], view: Callable[[Seen, list[dict]], list[dict]] | None = None
    ) -> None:
        self.records = records
        self.view = view

    def __call__(self, seen: Seen) -> Answer:
        fields = seen.fields
        if not fields:
            return 400, {
                "code": "REQUIRED_PARAM_MISSING",
                "details": {"param_name": "fields"},
                "status": "error",
            }
        if len(fields) > 50:
            return 400, {"code": "LIMIT_EXCEEDED", "details": {"limit": 50}, "status": "error"}
        if "page" in seen.query and "page_token" in seen.query:
            return 400, {"code": "AMBIGUITY_DURING_PROCESSING", "details": {}, "status": "error"}
        per_page = int(seen.query.get("per_page", 200))
        if "page_token" in seen.query:
            start = int(seen.query["page_token"].removeprefix("npt-"))
        else:
            page = int(seen.query.get("page", 1))
            if page * per_page > 2000:
                return 400, {
                    "code": "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    "details": {"limit": 2000},
                    "message": "You can only get the first 2000 records without using page_token param",
                    "status": "error",
                }
            start = (page - 1) * per_page
        records = self.view(seen, self.records) if self.view else self.records
        if not records:
            return 204, None
        chunk = records[start : start + per_page]
        more = start + per_page < len(records)
        data = [{"id": r["id"], **{f: r.get(f) for f in fields}} for r in chunk]
        info = {
            "per_page": per_page,
            "count": len(data),
            "more_records": more,
            "next_page_token": f"npt-{start + per_page}" if more else None,
        }
        return 200, {"data": data, "info": info}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CeilingRandom(random.Random):
    """Always picks the top of the jitter range, so backoff sleeps are exactly the ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def stub() -> Iterator[ZohoStub]:
    zoho = ZohoStub()
    server = _StubServer(zoho)
    host, port = server.server_address[:2]
    zoho.url = f"http://{host}:{port}"
    zoho.api_domain = zoho.url
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield zoho
    server.shutdown()
    server.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(stub: ZohoStub, sleeps: list[float], clock: FakeClock) -> Iterator[Callable[..., ZohoClient]]:
    made: list[ZohoClient] = []

    def make(**overrides: Any) -> ZohoClient:
        kwargs: dict[str, Any] = {
            "tenant_id": TENANT,
            "accounts_url": stub.url,
            "client_id": "1000.CLIENTID",
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
            "timeout": (2.0, 5.0),
            "max_retries": 3,
            "backoff_base": 0.5,
            "backoff_max": 4.0,
            "sleep": sleeps.append,
            "clock": clock,
            "rng": CeilingRandom(),
        }
        kwargs.update(overrides)
        client = ZohoClient(**kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., ZohoClient]) -> ZohoClient:
    return make_client()


def _get_route(stub: ZohoStub, record_id: str = "1", record: dict | None = None) -> str:
    path = f"/crm/v8/{MODULE}/{record_id}"
    stub.routes[("GET", path)] = lambda seen: (200, {"data": [record or {"id": record_id, "Name": "x"}]})
    return path


def _records(n: int) -> list[dict]:
    return [{"id": str(5843017000000000000 + i), "Name": f"S{i:05d}"} for i in range(1, n + 1)]


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert CLIENT_SECRET not in text
        assert REFRESH_TOKEN not in text


# --- OAuth ----------------------------------------------------------------------------------------


def test_token_request_and_header_follow_zoho(stub: ZohoStub, client: ZohoClient) -> None:
    _get_route(stub)
    assert client.get_record(MODULE, "1") == {"id": "1", "Name": "x"}
    (token_request,) = stub.token_requests
    assert token_request.method == "POST"
    assert token_request.form == {
        "grant_type": "refresh_token",
        "client_id": "1000.CLIENTID",
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }
    assert token_request.query == {}  # secrets travel in the body, never in the URL
    api_request = stub.requests_to(f"/{MODULE}/1")[0]
    assert api_request.headers["Authorization"] == "Zoho-oauthtoken tok-1"


def test_token_is_cached_across_calls(stub: ZohoStub, client: ZohoClient) -> None:
    _get_route(stub)
    for _ in range(5):
        client.get_record(MODULE, "1")
    assert len(stub.token_requests) == 1
    assert client.stats.token_refreshes == 1
    assert client.stats.by_endpoint == {"token": 1, "get": 5}


@pytest.mark.parametrize(
    ("expires_in", "stale_after"),
    [(3600, 3300.0), (600, 540.0), (60, 54.0)],  # 5 minutes early, or 10% of a shorter life
)
def test_token_is_refreshed_shortly_before_it_expires(
    stub: ZohoStub, client: ZohoClient, clock: FakeClock, expires_in: int, stale_after: float
) -> None:
    stub.expires_in = expires_in
    _get_route(stub)
    start = clock.now
    client.get_record(MODULE, "1")
    clock.now = start + stale_after - 1
    client.get_record(MODULE, "1")
    assert len(stub.token_requests) == 1
    clock.now = start + stale_after
    client.get_record(MODULE, "1")
    assert len(stub.token_requests) == 2
    assert stub.seen[-1].token == "tok-2"


def test_concurrent_calls_share_one_refresh(stub: ZohoStub, client: ZohoClient) -> None:
    _get_route(stub)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        try:
            client.get_record(MODULE, "1")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stub.token_requests) == 1
    assert client.stats.by_endpoint["get"] == 8


@pytest.mark.parametrize(
    ("token_domain", "configured", "works"),
    [
        ("stub", "http://127.0.0.1:9", True),  # the token answer's api_domain wins
        (None, "stub", True),  # no api_domain in the answer: the configured one
        (None, None, False),  # neither: an error, not a guess
    ],
)
def test_api_domain_comes_from_the_token_answer(
    stub: ZohoStub,
    make_client: Callable[..., ZohoClient],
    token_domain: str | None,
    configured: str | None,
    works: bool,
) -> None:
    stub.api_domain = stub.url if token_domain == "stub" else None
    client = make_client(api_domain=stub.url if configured == "stub" else configured)
    _get_route(stub)
    if works:
        assert client.get_record(MODULE, "1") is not None
        assert client.api_domain == stub.url
    else:
        with pytest.raises(ZohoError) as excinfo:
            client.get_record(MODULE, "1")
        assert excinfo.value.code == "NO_API_DOMAIN"


def test_invalid_token_refreshes_once_and_retries(stub: ZohoStub, client: ZohoClient) -> None:
    _get_route(stub)
    client.get_record(MODULE, "1")
    stub.valid.clear()  # Zoho revoked or expired the token early
    assert client.get_record(MODULE, "1") == {"id": "1", "Name": "x"}
    assert len(stub.token_requests) == 2
    assert [s.token for s in stub.requests_to(f"/{MODULE}/1")] == ["tok-1", "tok-1", "tok-2"]
    assert client.stats.token_refreshes == 2
    assert client.stats.retries == 1
    assert client.stats.credits == 2  # the refused call is not charged


def test_second_invalid_token_is_fatal(stub: ZohoStub, client: ZohoClient) -> None:
    stub.api_script.extend([(401, INVALID_TOKEN), (401, INVALID_TOKEN), (200, {"data": []})])
    with pytest.raises(ZohoAuthError) as excinfo:
        client.get_record(MODULE, "1")
    assert excinfo.value.code == "INVALID_TOKEN"
    assert excinfo.value.status == 401
    assert len(stub.token_requests) == 2
    assert client.stats.by_endpoint["get"] == 2


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (200, {"error": "invalid_code"}, "invalid_code"),  # refresh token wrong or revoked
        (200, {"error": "invalid_client"}, "invalid_client"),  # client id/secret, or wrong DC
        (400, {"error": "invalid_client"}, "invalid_client"),
        (
            200,
            {"error": "invalid_client", "error_description": f"secret {CLIENT_SECRET} unknown"},
            "invalid_client",
        ),
        (401, {"error": "unauthorized_client"}, "unauthorized_client"),
    ],
)
def test_refused_credentials_raise_auth_error_without_secrets(
    stub: ZohoStub, client: ZohoClient, status: int, body: dict, code: str
) -> None:
    stub.token_script.append((status, body))
    with pytest.raises(ZohoAuthError) as excinfo:
        client.get_record(MODULE, "1")
    error = excinfo.value
    assert error.code == code
    assert error.status == status
    assert error.endpoint == "token"
    assert TENANT in str(error)
    assert code in str(error)
    _assert_no_secret(str(error), repr(error), repr(client), repr(error.args))
    assert len(stub.token_requests) == 1  # fatal: not retried
    assert stub.requests_to(f"/{MODULE}/1") == []


def test_token_throttle_is_retried_with_backoff(
    stub: ZohoStub, client: ZohoClient, sleeps: list[float]
) -> None:
    stub.token_script.extend([(400, ACCESS_DENIED), (400, ACCESS_DENIED)])
    _get_route(stub)
    assert client.get_record(MODULE, "1") is not None
    assert sleeps == [0.5, 1.0]
    assert client.stats.by_endpoint["token"] == 3
    assert client.stats.token_refreshes == 1


def test_token_throttle_that_persists_raises_rate_limit_error(
    stub: ZohoStub, client: ZohoClient, sleeps: list[float]
) -> None:
    stub.token_script.extend([(400, ACCESS_DENIED)] * 4)
    with pytest.raises(ZohoRateLimitError) as excinfo:
        client.get_record(MODULE, "1")
    assert excinfo.value.code == "Access Denied"
    assert excinfo.value.status == 400
    assert len(sleeps) == 3


def test_client_repr_has_no_secrets(client: ZohoClient) -> None:
    text = repr(client)
    assert TENANT in text
    _assert_no_secret(text)


# --- retries and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [(429, TOO_MANY_REQUESTS), (500, None), (503, {"code": "INTERNAL_ERROR", "status": "error"}), DROP],
    ids=["429", "500", "503", "dropped-connection"],
)
def test_transient_failures_are_retried_with_growing_bounded_backoff(
    stub: ZohoStub, client: ZohoClient, sleeps: list[float], failure: Answer
) -> None:
    _get_route(stub)
    stub.api_script.extend([failure] * 3)
    assert client.get_record(MODULE, "1") == {"id": "1", "Name": "x"}
    assert sleeps == [0.5, 1.0, 2.0]  # the ceilings of full jitter: base * 2**attempt
    assert client.stats.by_endpoint["get"] == 4
    assert client.stats.retries == 3
    assert client.stats.credits == 1  # only the answered call is charged


def test_jittered_backoff_stays_within_its_bounds(
    stub: ZohoStub, make_client: Callable[..., ZohoClient], sleeps: list[float]
) -> None:
    client = make_client(max_retries=5, backoff_base=0.5, backoff_max=3.0, rng=random.Random(7))
    _get_route(stub)
    stub.api_script.extend([(429, TOO_MANY_REQUESTS)] * 5)
    client.get_record(MODULE, "1")
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(sleeps) == 5
    for slept, ceiling in zip(sleeps, ceilings, strict=True):
        assert 0.0 <= slept <= ceiling


@pytest.mark.parametrize(
    ("failure", "error_type", "status", "code"),
    [
        ((429, TOO_MANY_REQUESTS), ZohoRateLimitError, 429, "TOO_MANY_REQUESTS"),
        ((503, None), ZohoError, 503, "HTTP_503"),
        (DROP, ZohoError, None, "CONNECTION_ERROR"),
    ],
    ids=["429", "503", "dropped-connection"],
)
def test_failures_that_outlast_the_retries_are_raised(
    stub: ZohoStub,
    make_client: Callable[..., ZohoClient],
    sleeps: list[float],
    failure: Answer,
    error_type: type[ZohoError],
    status: int | None,
    code: str,
) -> None:
    client = make_client(backoff_max=1.5)
    _get_route(stub)
    stub.token_script.append((200, {"access_token": "tok-x", "expires_in": 3600, "api_domain": stub.url}))
    stub.api_script.extend([failure] * 4)
    with pytest.raises(ZohoError) as excinfo:
        client.get_record(MODULE, "1")
    assert type(excinfo.value) is error_type
    assert excinfo.value.status == status
    assert excinfo.value.code == code
    assert TENANT in str(excinfo.value)
    assert sleeps == [0.5, 1.0, 1.5]  # capped at backoff_max
    assert client.stats.by_endpoint["get"] == 4


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (
            400,
            {
                "code": "INVALID_MODULE",
                "details": {"resource_path_index": 0},
                "message": "the module name given seems to be invalid",
                "status": "error",
            },
            ZohoError,
        ),
        (
            401,
            {
                "code": "OAUTH_SCOPE_MISMATCH",
                "details": {},
                "message": "invalid oauth scope",
                "status": "error",
            },
            ZohoAuthError,
        ),
        (
            403,
            {
                "code": "NO_PERMISSION",
                "details": {"permissions": ["Crm_Implied_View_Students"]},
                "message": "p",
            },
            ZohoAuthError,
        ),
        (
            404,
            {"code": "INVALID_URL_PATTERN", "details": {}, "message": "invalid url", "status": "error"},
            ZohoError,
        ),
        (
            400,
            {
                "code": "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                "details": {"limit": 2000},
                "message": "You can only get the first 2000 records without using page_token param",
                "status": "error",
            },
            ZohoError,
        ),
    ],
    ids=[
        "INVALID_MODULE",
        "OAUTH_SCOPE_MISMATCH",
        "NO_PERMISSION",
        "INVALID_URL_PATTERN",
        "DISCRETE_PAGINATION",
    ],
)
def test_other_4xx_are_fatal_at_once(
    stub: ZohoStub,
    client: ZohoClient,
    sleeps: list[float],
    status: int,
    body: dict,
    error_type: type[ZohoError],
) -> None:
    stub.api_script.append((status, body))
    with pytest.raises(ZohoError) as excinfo:
        list(client.iter_records(MODULE, ["Name"]))
    error = excinfo.value
    assert type(error) is error_type
    assert (error.status, error.code, error.details) == (status, body["code"], body["details"])
    assert error.message == body["message"]
    assert error.endpoint == "list"
    assert f"tenant {TENANT!r}" in str(error)
    assert f"HTTP {status} {body['code']}" in str(error)
    assert sleeps == []
    assert client.stats.by_endpoint["list"] == 1


def test_errors_survive_pickling(stub: ZohoStub, client: ZohoClient) -> None:
    """Dagster ships errors between processes."""
    stub.api_script.append(
        (403, {"code": "NO_PERMISSION", "details": {"a": 1}, "message": "no", "status": "error"})
    )
    with pytest.raises(ZohoAuthError) as excinfo:
        client.get_record(MODULE, "1")
    copy = pickle.loads(pickle.dumps(excinfo.value))
    assert type(copy) is ZohoAuthError
    assert str(copy) == str(excinfo.value)
    assert (copy.tenant_id, copy.status, copy.code, copy.details) == (TENANT, 403, "NO_PERMISSION", {"a": 1})


# --- reading --------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_page", [200, 150])
def test_paging_switches_from_page_to_page_token_at_2000(
    stub: ZohoStub, client: ZohoClient, per_page: int
) -> None:
    records = _records(2450)
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records)
    got = list(client.iter_records(MODULE, ["Name"], per_page=per_page))
    assert [r["id"] for r in got] == [r["id"] for r in records]
    requests_ = stub.requests_to(f"/{MODULE}")
    by_page = [s for s in requests_ if "page" in s.query]
    by_token = [s for s in requests_ if "page_token" in s.query]
    assert len(requests_) == -(-2450 // per_page)
    assert [int(s.query["page"]) for s in by_page] == list(range(1, 2000 // per_page + 1))
    assert all(int(s.query["page"]) * per_page <= 2000 for s in by_page)
    assert by_token and all("page" not in s.query for s in by_token)
    assert requests_[: len(by_page)] == by_page  # page first, page_token after, never mixed
    assert client.stats.credits == len(requests_)


def test_paging_stops_when_more_records_is_false(stub: ZohoStub, client: ZohoClient) -> None:
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(_records(450))
    assert len(list(client.iter_records(MODULE, ["Name"], sort_by="id", sort_order="asc"))) == 450
    requests_ = stub.requests_to(f"/{MODULE}")
    assert [s.query["page"] for s in requests_] == ["1", "2", "3"]
    assert all(s.query["sort_by"] == "id" and s.query["sort_order"] == "asc" for s in requests_)
    assert all(s.query["per_page"] == "200" for s in requests_)


def test_missing_page_token_past_the_limit_is_an_error(stub: ZohoStub, client: ZohoClient) -> None:
    """Stopping quietly at 2,000 records is the bug users of other connectors complain about."""
    page = {"data": [{"id": "1"}], "info": {"more_records": True, "next_page_token": None}}
    stub.api_script.extend([(200, page)] * 10)
    with pytest.raises(ZohoError) as excinfo:
        list(client.iter_records(MODULE, ["Name"]))
    assert excinfo.value.code == "MISSING_PAGE_TOKEN"


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("reader", ["records", "deleted"])
def test_no_content_and_not_modified_mean_no_records(
    stub: ZohoStub, client: ZohoClient, status: int, reader: str
) -> None:
    stub.api_script.append((status, None))
    if reader == "records":
        got = list(client.iter_records(MODULE, ["Name"], modified_since=SINCE))
    else:
        got = list(client.iter_deleted(MODULE, since=SINCE))
    assert got == []
    (request,) = [s for s in stub.seen if s.path.startswith("/crm/")]
    assert request.headers["If-Modified-Since"] == "2026-11-01T10:00:00+00:00"


def test_if_modified_since_keeps_the_offset(stub: ZohoStub, client: ZohoClient) -> None:
    stub.api_script.append((304, None))
    since = datetime(2026, 11, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=3)))
    list(client.iter_records(MODULE, ["Name"], modified_since=since))
    assert stub.seen[-1].headers["If-Modified-Since"] == "2026-11-01T13:00:00+03:00"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.iter_records(MODULE, ["Name"], modified_since=datetime(2026, 11, 1, 10, 0)),
        lambda c: c.iter_deleted(MODULE, since=datetime(2026, 11, 1, 10, 0)),
        lambda c: c.iter_records(MODULE, []),
        lambda c: c.iter_records(MODULE, ["Name"], per_page=201),
        lambda c: c.iter_deleted(MODULE, type="trash"),
    ],
    ids=["naive-modified_since", "naive-since", "no-fields", "per_page-over-200", "bad-deleted-type"],
)
def test_bad_arguments_are_refused_before_any_call(
    stub: ZohoStub, client: ZohoClient, call: Callable[[ZohoClient], Any]
) -> None:
    with pytest.raises(ValueError):
        call(client)
    assert stub.seen == []


def _wide(n: int) -> list[str]:
    return [f"F{i:03d}" for i in range(n)]


def test_more_than_50_fields_are_split_and_merged_by_id(stub: ZohoStub, client: ZohoClient) -> None:
    fields = _wide(120)
    records = [{"id": str(i), **{f: f"{f}-{i}" for f in fields}} for i in range(1, 6)]
    created = {"id": "new", **{f: "x" for f in fields}}
    deleted_id = "3"

    def view(seen: Seen, rows: list[dict]) -> list[dict]:
        if seen.fields[0] == "F000":
            return rows
        # After the first chunk: one record was created, one was deleted.
        return [r for r in rows if r["id"] != deleted_id] + [created]

    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records, view)
    got = list(client.iter_records(MODULE, fields))
    assert [r["id"] for r in got] == ["1", "2", "4", "5"]
    assert all(r == {"id": r["id"], **{f: f"{f}-{r['id']}" for f in fields}} for r in got)
    chunks = [s.fields for s in stub.requests_to(f"/{MODULE}")]
    assert [len(c) for c in chunks] == [50, 50, 20]
    assert [f for c in chunks for f in c] == fields


def test_records_edited_between_chunks_are_left_for_the_next_read(stub: ZohoStub, client: ZohoClient) -> None:
    fields = [*_wide(60), "Modified_Time"]
    records = [
        {"id": str(i), "Modified_Time": "2026-11-01T10:00:00+00:00", **dict.fromkeys(_wide(60), i)}
        for i in (1, 2)
    ]

    def view(seen: Seen, rows: list[dict]) -> list[dict]:
        if seen.fields[0] == "F000":
            return rows
        return [rows[0], {**rows[1], "Modified_Time": "2026-11-01T10:05:00+00:00"}]

    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records, view)
    got = list(client.iter_records(MODULE, fields))
    assert [r["id"] for r in got] == ["1"]
    assert set(got[0]) == {"id", *fields}
    chunks = [s.fields for s in stub.requests_to(f"/{MODULE}")]
    assert all(len(c) <= 50 and "Modified_Time" in c for c in chunks)


def test_iter_deleted_pages_with_type(stub: ZohoStub, client: ZohoClient) -> None:
    deleted = [
        {
            "id": str(i),
            "display_name": f"d{i}",
            "type": "recycle",
            "deleted_time": "2026-11-01T10:00:00+00:00",
        }
        for i in range(250)
    ]

    def answer(seen: Seen) -> Answer:
        page = int(seen.query["page"])
        chunk = deleted[(page - 1) * 200 : page * 200]
        return 200, {"data": chunk, "info": {"more_records": page * 200 < len(deleted), "page": page}}

    stub.routes[("GET", f"/crm/v8/{MODULE}/deleted")] = answer
    got = list(client.iter_deleted(MODULE, since=SINCE, type="recycle"))
    assert got == deleted
    requests_ = stub.requests_to("/deleted")
    assert [(s.query["type"], s.query["per_page"], s.query["page"]) for s in requests_] == [
        ("recycle", "200", "1"),
        ("recycle", "200", "2"),
    ]
    assert client.stats.by_endpoint["deleted"] == 2


def test_get_record_returns_none_when_zoho_has_none(stub: ZohoStub, client: ZohoClient) -> None:
    stub.api_script.append((204, None))
    assert client.get_record(MODULE, "404") is None


def test_get_record_reads_wide_field_lists_in_chunks(stub: ZohoStub, client: ZohoClient) -> None:
    fields = _wide(70)
    stub.routes[("GET", f"/crm/v8/{MODULE}/7")] = lambda seen: (
        200,
        {"data": [{"id": "7", **{f: f.lower() for f in seen.fields}}]},
    )
    record = client.get_record(MODULE, "7", fields)
    assert record == {"id": "7", **{f: f.lower() for f in fields}}
    assert [len(s.fields) for s in stub.requests_to("/7")] == [50, 20]


@pytest.mark.parametrize(
    ("query", "credits"),
    [
        ("select id from BTEC_Enrollments where id is not null", 1),
        ("select id from BTEC_Enrollments where id is not null limit 200", 1),
        ("select id from BTEC_Enrollments where id is not null LIMIT 1000 offset 2000", 2),
        ("select id from BTEC_Enrollments where id is not null limit 4000, 201", 2),
        ("select id from BTEC_Enrollments where id is not null limit 2000 offset 0", 3),
    ],
)
def test_coql_is_one_call_charged_by_its_limit(
    stub: ZohoStub, client: ZohoClient, query: str, credits: int
) -> None:
    stub.routes[("POST", "/crm/v8/coql")] = lambda seen: (
        200,
        {"data": [{"id": "1"}], "info": {"count": 1, "more_records": False}},
    )
    assert client.coql(query) == [{"id": "1"}]
    assert stub.requests_to("/coql")[0].body == {"select_query": query}
    assert client.stats.credits == credits


# --- writing --------------------------------------------------------------------------------------


def _upsert_route(stub: ZohoStub, statuses: list[int]) -> None:
    """Answer the n-th batch with statuses[n]: 200 all succeed, 207 odd positions fail, 400 all fail."""
    batches = deque(statuses)

    def answer(seen: Seen) -> Answer:
        status = batches.popleft()
        results = []
        for i, record in enumerate(seen.body["data"]):
            if status == 400 or (status == 207 and i % 2):
                results.append(
                    {
                        "code": "INVALID_DATA",
                        "details": {"api_name": "Grade", "json_path": f"$.data[{i}].Grade"},
                        "message": "invalid data",
                        "status": "error",
                    }
                )
            else:
                results.append(
                    {
                        "code": "SUCCESS",
                        "duplicate_field": None,
                        "action": "insert",
                        "details": {
                            "id": f"id-{record['Name']}",
                            "Modified_Time": "2026-11-01T10:00:00+00:00",
                        },
                        "message": "record added",
                        "status": "success",
                    }
                )
        return status, {"data": results}

    stub.routes[("POST", f"/crm/v8/{MODULE}/upsert")] = answer


def test_upsert_batches_and_answers_every_record_in_order(stub: ZohoStub, client: ZohoClient) -> None:
    _upsert_route(stub, [200, 207, 400])
    records = [{"Name": f"r{i}", "Academic_Email": f"r{i}@school.test"} for i in range(250)]
    results = client.upsert(MODULE, records, duplicate_check_fields=["Academic_Email"])

    bodies = [s.body for s in stub.requests_to("/upsert")]
    assert [len(b["data"]) for b in bodies] == [100, 100, 50]
    assert [r for b in bodies for r in b["data"]] == records
    assert all(b["trigger"] == [] and b["duplicate_check_fields"] == ["Academic_Email"] for b in bodies)

    assert [r.index for r in results] == list(range(250))
    expected_ok = [True] * 100 + [i % 2 == 0 for i in range(100)] + [False] * 50
    assert [r.ok for r in results] == expected_ok
    first, failed = results[0], results[101]
    assert first == UpsertResult(
        index=0,
        status="success",
        code="SUCCESS",
        action="insert",
        record_id="id-r0",
        message="record added",
        details={"id": "id-r0", "Modified_Time": "2026-11-01T10:00:00+00:00"},
    )
    assert (failed.status, failed.code, failed.record_id, failed.action) == (
        "error",
        "INVALID_DATA",
        None,
        None,
    )
    assert failed.details["json_path"] == "$.data[1].Grade"
    assert results[200].code == "INVALID_DATA"
    assert client.stats.credits == 10 + 10 + 5
    assert client.stats.by_endpoint["upsert"] == 3


def test_upsert_without_duplicate_check_fields_leaves_the_key_out(stub: ZohoStub, client: ZohoClient) -> None:
    _upsert_route(stub, [200])
    client.upsert(MODULE, [{"Name": "a"}], trigger=["workflow"])
    body = stub.requests_to("/upsert")[0].body
    assert body == {"data": [{"Name": "a"}], "trigger": ["workflow"]}


def test_upsert_of_nothing_makes_no_call(stub: ZohoStub, client: ZohoClient) -> None:
    assert client.upsert(MODULE, []) == []
    assert stub.seen == []


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (
            400,
            {"code": "INVALID_MODULE", "details": {}, "message": "the module name given seems to be invalid"},
            "INVALID_MODULE",
        ),
        (
            400,
            {"code": "INVALID_DATA", "details": {"expected_data_type": "jsonarray"}, "message": "bad"},
            "INVALID_DATA",
        ),
        (
            200,
            {"data": [{"code": "SUCCESS", "status": "success", "details": {"id": "1"}}]},
            "INVALID_RESPONSE",
        ),
    ],
    ids=["request-level-400", "malformed-body", "result-count-mismatch"],
)
def test_upsert_request_level_failures_are_raised(
    stub: ZohoStub, client: ZohoClient, status: int, body: dict, code: str
) -> None:
    stub.api_script.append((status, body))
    with pytest.raises(ZohoError) as excinfo:
        client.upsert(MODULE, [{"Name": "a"}, {"Name": "b"}])
    assert excinfo.value.code == code
    assert excinfo.value.status == status


# --- accounting and logging -----------------------------------------------------------------------


def test_every_call_is_counted_with_its_credits(stub: ZohoStub, client: ZohoClient) -> None:
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(_records(450))
    stub.routes[("GET", f"/crm/v8/{MODULE}/deleted")] = lambda seen: (204, None)
    stub.routes[("POST", "/crm/v8/coql")] = lambda seen: (200, {"data": [], "info": {"more_records": False}})
    _get_route(stub)
    _upsert_route(stub, [200, 200, 200])

    stub.api_script.append((429, TOO_MANY_REQUESTS))  # retried, not charged
    assert len(list(client.iter_records(MODULE, ["Name"]))) == 450  # 3 pages: 3 credits
    list(client.iter_deleted(MODULE))  # 1
    client.get_record(MODULE, "1")  # 1
    client.coql("select id from BTEC_Students limit 2000")  # 3
    client.upsert(MODULE, [{"Name": f"r{i}"} for i in range(250)])  # 10 + 10 + 5

    stats = client.stats
    assert stats.credits == 3 + 1 + 1 + 3 + 25
    assert stats.by_endpoint == {"token": 1, "list": 4, "deleted": 1, "get": 1, "coql": 1, "upsert": 3}
    assert stats.calls == 11
    assert stats.retries == 1
    assert stats.token_refreshes == 1
    assert stats.as_metadata() == {
        "zoho_calls": 11,
        "zoho_credits": 33,
        "zoho_token_refreshes": 1,
        "zoho_retries": 1,
        "zoho_calls.coql": 1,
        "zoho_calls.deleted": 1,
        "zoho_calls.get": 1,
        "zoho_calls.list": 4,
        "zoho_calls.token": 1,
        "zoho_calls.upsert": 3,
    }


def test_call_stats_start_empty() -> None:
    assert CallStats().as_metadata() == {
        "zoho_calls": 0,
        "zoho_credits": 0,
        "zoho_token_refreshes": 0,
        "zoho_retries": 0,
    }


def test_logs_are_debug_only_without_secrets_or_record_data(
    stub: ZohoStub, client: ZohoClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    private = "Alice Private-Student"
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule([{"id": "1", "Name": private}])
    _upsert_route(stub, [207])
    stub.api_script.append((503, None))
    stub.token_script.append((400, ACCESS_DENIED))
    list(client.iter_records(MODULE, ["Name"]))
    client.upsert(MODULE, [{"Name": private}, {"Name": "b"}])
    ours = [r for r in caplog.records if r.name.startswith("sync_pipelines")]
    assert ours
    assert all(r.levelno == logging.DEBUG for r in ours)
    text = "\n".join(r.getMessage() for r in ours)
    _assert_no_secret(text)
    assert "tok-1" not in text
    assert private not in text
