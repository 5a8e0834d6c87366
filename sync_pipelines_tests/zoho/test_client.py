"""The Zoho CRM client against a small programmable Zoho stub, over real HTTP.

The stub plays both Zoho servers (accounts and CRM) on one local port. It issues access tokens
(with ``scope`` when told to), rejects unknown ones with ``INVALID_TOKEN``, and answers as Zoho's
docs describe:

* ``FakeModule`` (get-records): ``page=N`` is positional, so a record deleted between two pages
  shifts the later ones; ``page`` is refused past 2,000 records and together with ``page_token``;
  every answer with more records carries ``next_page_token``, a cursor that resumes after the last
  record returned and is bound to the request's other parameters (``TOKEN_BOUND_DATA_MISMATCH``);
  ``ids=`` answers the held records among at most 100 ids, 204 when it holds none.
* ``FakeDeleted`` (get-deleted-records): ``page`` and ``per_page`` only, never a
  ``next_page_token``; 204 when there is nothing; optionally a discrete-paging limit.
* ``FakeOrg``: ``/settings/modules``, ``/settings/modules/{name}``, ``/settings/fields`` and
  ``/org``, with ``INVALID_MODULE`` for a module the org lacks.

It answers upserts per record and records every request it got. Scripted answers (429, 503, a
dropped connection, recorded error bodies) are served ahead of the normal behaviour. The client's
sleep is a recorder and its clock a fake, so nothing waits.
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
    DeletedRead,
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
        #: Handlers of every path under a prefix, e.g. ``/crm/v8/settings/modules/``.
        self.prefix_routes: dict[tuple[str, str], Callable[[Seen], Answer]] = {}
        self.expires_in = 3600
        #: The ``scope`` of token answers (Zoho: space-separated), or ``None`` to leave it out.
        self.scope: str | None = None
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
                if self.scope is not None:
                    answer["scope"] = self.scope
                answer["token_type"] = "Bearer"
                return 200, answer
            if self.api_script:
                return self.api_script.popleft()
            if seen.token not in self.valid:
                return 401, INVALID_TOKEN
            handler = self.routes.get((seen.method, seen.path))
            if handler is None:
                handler = next(
                    (
                        h
                        for (method, prefix), h in self.prefix_routes.items()
                        if method == seen.method and seen.path.startswith(prefix)
                    ),
                    None,
                )
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


def _order(record_id: str) -> tuple[int, str]:
    """The stub's record order: by id (Zoho's ids are numbers of one length; shorter ids first)."""
    return (len(record_id), record_id)


def _error_body(code: str, message: str, **details: Any) -> dict:
    return {"code": code, "details": details, "message": message, "status": "error"}


class FakeModule:
    """A module's records, served like Zoho's get-records serves them.

    * ``page=N`` is positional: records ``(N-1)*per_page`` on of the module as it is *at that
      request*, so a record deleted between two pages shifts every later page by one. Refused past
      2,000 records (``DISCRETE_PAGINATION_LIMIT_EXCEEDED``) and together with ``page_token``
      (``AMBIGUITY_DURING_PROCESSING``).
    * Every answer with more records carries ``next_page_token`` (``tokens=False`` leaves it out):
      a cursor that resumes after the last record returned, bound to the request's other
      parameters (``TOKEN_BOUND_DATA_MISMATCH`` if they change; ``INVALID_DATA`` for a token never
      issued).
    * ``ids=a,b,...`` answers the held records among the ids (at most 100; ``fields`` optional,
      all fields without it), 204 when it holds none.

    Records are kept in id order. ``view`` lets a test change what a request sees (records created,
    edited or deleted mid-read).
    """

    def __init__(
        self,
        records: list[dict],
        view: Callable[[Seen, list[dict]], list[dict]] | None = None,
        *,
        tokens: bool = True,
    ) -> None:
        self.records = records
        self.view = view
        self.tokens = tokens
        self.issued: dict[str, tuple[tuple[int, str], dict[str, str]]] = {}
        self.lock = threading.Lock()

    def __call__(self, seen: Seen) -> Answer:
        query = seen.query
        fields = seen.fields
        if len(fields) > 50:
            return 400, _error_body("LIMIT_EXCEEDED", "fields limit exceeded", limit=50)
        rows = self.view(seen, self.records) if self.view else self.records
        rows = sorted(rows, key=lambda r: _order(str(r["id"])))
        if "ids" in query:
            return self._by_ids(query["ids"], fields, rows)
        if not fields:
            return 400, _error_body("REQUIRED_PARAM_MISSING", "fields is required", param_name="fields")
        if "page" in query and "page_token" in query:
            return 400, _error_body("AMBIGUITY_DURING_PROCESSING", "page and page_token together")
        per_page = int(query.get("per_page", 200))
        bound = {k: v for k, v in query.items() if k not in ("page", "page_token")}
        if "page_token" in query:
            with self.lock:
                issued = self.issued.get(query["page_token"])
            if issued is None:
                return 400, _error_body("INVALID_DATA", "The token given seems to be invalid")
            after, params = issued
            if params != bound:
                return 400, _error_body(
                    "TOKEN_BOUND_DATA_MISMATCH",
                    "The page_token given seems to be invalid or input param is added, altered, or deleted",
                )
            start = next((i for i, r in enumerate(rows) if _order(str(r["id"])) > after), len(rows))
        else:
            page = int(query.get("page", 1))
            if page * per_page > 2000:
                return 400, _error_body(
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    "You can only get the first 2000 records without using page_token param",
                    limit=2000,
                )
            start = (page - 1) * per_page
        if not rows:
            return 204, None
        chunk = rows[start : start + per_page]
        more = start + per_page < len(rows)
        data = [{"id": r["id"], **{f: r.get(f) for f in fields}} for r in chunk]
        token = None
        if more and self.tokens and chunk:
            with self.lock:
                token = f"npt-{len(self.issued) + 1}"
                self.issued[token] = (_order(str(chunk[-1]["id"])), bound)
        info = {
            "per_page": per_page,
            "count": len(data),
            "more_records": more,
            "next_page_token": token,
            "previous_page_token": None,
            "page_token_expiry": "2026-11-02T10:00:00+00:00" if token else None,
        }
        return 200, {"data": data, "info": info}

    @staticmethod
    def _by_ids(ids_param: str, fields: list[str], rows: list[dict]) -> Answer:
        ids = [i for i in ids_param.split(",") if i]
        if len(ids) > 100:
            # Zoho names no number for ``ids`` in v2-v8 (API 1.0's idlist took 100): the stub holds
            # the client to 100 and refuses more as Zoho refuses too many fields.
            return 400, _error_body("LIMIT_EXCEEDED", "ids limit exceeded", limit=100, param_name="ids")
        wanted = set(ids)
        held = [r for r in rows if str(r["id"]) in wanted]
        if not held:
            return 204, None
        data = [{"id": r["id"], **({f: r.get(f) for f in fields} if fields else r)} for r in held]
        return 200, {
            "data": data,
            "info": {"per_page": 200, "count": len(data), "page": 1, "more_records": False},
        }


class FakeDeleted:
    """A module's deleted records, served like Zoho's get-deleted-records serves them.

    Paged by ``page`` and ``per_page`` only (positional; no ``next_page_token`` in ``info``),
    filtered by ``type`` (``PATTERN_NOT_MATCHED`` for another value), HTTP 204 when there is
    nothing. Zoho documents no discrete-paging limit here; ``discrete_limit`` adds one.
    """

    def __init__(
        self,
        entries: list[dict],
        view: Callable[[Seen, list[dict]], list[dict]] | None = None,
        *,
        discrete_limit: int | None = None,
    ) -> None:
        self.entries = entries
        self.view = view
        self.discrete_limit = discrete_limit

    def __call__(self, seen: Seen) -> Answer:
        query = seen.query
        type_ = query.get("type", "all")
        if type_ not in ("all", "recycle", "permanent"):
            return 400, _error_body(
                "PATTERN_NOT_MATCHED", "Please check whether the input values are correct"
            )
        page = int(query.get("page", 1))
        per_page = int(query.get("per_page", 200))
        if self.discrete_limit is not None and page * per_page > self.discrete_limit:
            return 400, _error_body(
                "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                f"You can only get the first {self.discrete_limit} records",
                limit=self.discrete_limit,
            )
        rows = self.view(seen, self.entries) if self.view else self.entries
        rows = [e for e in rows if type_ == "all" or e["type"] == type_]
        start = (page - 1) * per_page
        chunk = rows[start : start + per_page]
        if not chunk:
            return 204, None
        more = start + per_page < len(rows)
        info = {"per_page": per_page, "count": len(chunk), "page": page, "more_records": more}
        return 200, {"data": chunk, "info": info}


class FakeOrg:
    """The org's metadata: modules, each module's fields, the org record."""

    def __init__(self, modules: dict[str, list[dict]], org: dict) -> None:
        self.modules = modules  # api_name -> fields
        self.org = org

    def module(self, api_name: str) -> dict:
        return {"api_name": api_name, "id": f"m-{api_name}", "plural_label": api_name, "api_supported": True}

    def install(self, stub: "ZohoStub") -> None:
        invalid = _error_body(
            "INVALID_MODULE", "the module name given seems to be invalid", resource_path_index=2
        )

        def one_module(seen: Seen) -> Answer:
            name = seen.path.removeprefix("/crm/v8/settings/modules/")
            if name not in self.modules:
                return 400, invalid
            return 200, {"modules": [self.module(name)]}

        def fields(seen: Seen) -> Answer:
            if "module" not in seen.query:
                return 400, _error_body("REQUIRED_PARAM_MISSING", "module is required", param_name="module")
            name = seen.query["module"]
            if name not in self.modules:
                return 400, _error_body(
                    "INVALID_MODULE", "the module name given seems to be invalid", param_name="module"
                )
            return 200, {"fields": self.modules[name]}

        stub.routes[("GET", "/crm/v8/settings/modules")] = lambda seen: (
            200,
            {"modules": [self.module(name) for name in self.modules]},
        )
        stub.prefix_routes[("GET", "/crm/v8/settings/modules/")] = one_module
        stub.routes[("GET", "/crm/v8/settings/fields")] = fields
        stub.routes[("GET", "/crm/v8/org")] = lambda seen: (200, {"org": [self.org]})


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


def test_token_throttle_is_waited_out_then_asked_once_more(
    stub: ZohoStub, make_client: Callable[..., ZohoClient], sleeps: list[float], clock: FakeClock
) -> None:
    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    client = make_client(sleep=sleep, token_throttle_seconds=30.0)
    stub.token_script.append((400, ACCESS_DENIED))
    _get_route(stub)
    assert client.get_record(MODULE, "1") is not None
    assert sleeps == [30.0]  # the throttle's window, not a backoff ladder
    assert client.stats.by_endpoint["token"] == 2
    assert client.stats.token_refreshes == 1


@pytest.mark.parametrize("answer", [(400, ACCESS_DENIED), (200, ACCESS_DENIED), (429, TOO_MANY_REQUESTS)])
def test_token_throttle_past_the_wait_raises_at_once_and_keeps_the_endpoint_alone(
    stub: ZohoStub, client: ZohoClient, sleeps: list[float], clock: FakeClock, answer: Answer
) -> None:
    stub.token_script.append(answer)
    _get_route(stub)
    with pytest.raises(ZohoRateLimitError) as excinfo:
        client.get_record(MODULE, "1")
    error = excinfo.value
    assert error.endpoint == "token"
    assert error.status == answer[0]
    assert error.details == {"throttled_until": "1970-01-01T00:26:40+00:00", "retry_after_seconds": 600}
    assert "1970-01-01T00:26:40+00:00" in str(error)  # when it may be tried again
    assert sleeps == []  # 600 s of Zoho's window is past the 120 s the client waits: no retry
    assert len(stub.token_requests) == 1
    clock.now += 599
    with pytest.raises(ZohoRateLimitError):
        client.get_record(MODULE, "1")
    assert len(stub.token_requests) == 1  # still within the window: not asked
    clock.now += 1
    assert client.get_record(MODULE, "1") is not None
    assert len(stub.token_requests) == 2


def test_token_endpoint_5xx_is_retried_with_backoff(
    stub: ZohoStub, client: ZohoClient, sleeps: list[float]
) -> None:
    stub.token_script.extend([(503, None), (500, {"error": "internal"})])
    _get_route(stub)
    assert client.get_record(MODULE, "1") is not None
    assert sleeps == [0.5, 1.0]
    assert client.stats.by_endpoint["token"] == 3
    assert client.stats.token_refreshes == 1


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


def _list_requests(stub: ZohoStub) -> list[Seen]:
    return stub.requests_to(f"/crm/v8/{MODULE}")


@pytest.mark.parametrize("per_page", [200, 150])
def test_full_read_follows_next_page_token_from_page_two_on(
    stub: ZohoStub, client: ZohoClient, per_page: int
) -> None:
    records = _records(2450)
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records)
    got = list(client.iter_records(MODULE, ["Name"], per_page=per_page))
    assert [r["id"] for r in got] == [r["id"] for r in records]
    first, *rest = _list_requests(stub)
    assert first.query["page"] == "1" and "page_token" not in first.query
    assert rest and all("page_token" in s.query and "page" not in s.query for s in rest)
    assert [s.query["page_token"] for s in rest] == [f"npt-{i}" for i in range(1, len(rest) + 1)]
    assert all(s.query["per_page"] == str(per_page) and s.query["fields"] == "Name" for s in rest)
    assert 1 + len(rest) == -(-2450 // per_page)
    assert client.stats.credits == 1 + len(rest)


def test_paging_falls_back_to_page_within_2000_when_zoho_gives_no_token(
    stub: ZohoStub, client: ZohoClient
) -> None:
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(_records(450), tokens=False)
    assert len(list(client.iter_records(MODULE, ["Name"], sort_by="id", sort_order="asc"))) == 450
    requests_ = _list_requests(stub)
    assert [s.query["page"] for s in requests_] == ["1", "2", "3"]
    assert all("page_token" not in s.query for s in requests_)
    assert all(s.query["sort_by"] == "id" and s.query["sort_order"] == "asc" for s in requests_)
    assert all(s.query["per_page"] == "200" for s in requests_)


def test_a_page_without_a_token_falls_back_to_page_then_follows_the_next_token(
    stub: ZohoStub, client: ZohoClient
) -> None:
    def page(ids: list[str], token: str | None) -> Answer:
        info = {"more_records": True, "next_page_token": token}
        return 200, {"data": [{"id": i} for i in ids], "info": info}

    stub.api_script.extend(
        [
            page(["1"], "t-a"),
            page(["2"], None),  # no token this time: page=3 is still within 2,000
            page(["3"], "t-b"),
            (200, {"data": [{"id": "4"}], "info": {"more_records": False}}),
        ]
    )
    assert [r["id"] for r in client.iter_records(MODULE, ["Name"])] == ["1", "2", "3", "4"]
    asked = [(s.query.get("page"), s.query.get("page_token")) for s in _list_requests(stub)]
    assert asked == [("1", None), (None, "t-a"), ("3", None), (None, "t-b")]


@pytest.mark.parametrize("tokens", [True, False], ids=["zoho-gives-tokens", "page-only"])
def test_a_deletion_between_page_one_and_two_leaves_no_live_record_unreturned(
    stub: ZohoStub, client: ZohoClient, tokens: bool
) -> None:
    """The bug: with ``page=2`` after a deletion on page 1, record 201 moves onto page 1 and is
    never returned (and the sync later marks it deleted). Following the token, it is returned.
    The ``page-only`` case shows the stub shifts pages the way Zoho does, so the check can fail."""
    records = _records(600)
    deleted = records[5]

    def view(seen: Seen, rows: list[dict]) -> list[dict]:
        if len(_list_requests(stub)) == 1:
            return rows
        return [r for r in rows if r is not deleted]  # deleted in Zoho after page 1 was read

    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records, view, tokens=tokens)
    got = [r["id"] for r in client.iter_records(MODULE, ["Name"])]
    live = [r["id"] for r in records if r is not deleted]
    assert len(_list_requests(stub)) == 3
    if tokens:
        assert sorted(set(got) - {deleted["id"]}) == live
        assert len(got) == len(set(got)) == 600  # the deleted one came on page 1, before it went
    else:
        assert records[200]["id"] not in got  # shifted onto page 1 after it was read: lost


def test_chunked_full_read_binds_each_chunks_tokens_to_its_own_fields(
    stub: ZohoStub, client: ZohoClient
) -> None:
    fields = _wide(120)
    records = [{"id": str(1000 + i), **{f: f"{f}-{i}" for f in fields}} for i in range(450)]
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records)
    got = list(client.iter_records(MODULE, fields))
    assert got == records  # TOKEN_BOUND_DATA_MISMATCH would have raised
    requests_ = _list_requests(stub)
    assert len(requests_) == 3 * 3
    assert sum("page" in s.query for s in requests_) == 3  # page 1 of each chunk, then tokens


def test_missing_page_token_past_the_limit_is_an_error(stub: ZohoStub, client: ZohoClient) -> None:
    """Stopping quietly at 2,000 records is the bug users of other connectors complain about."""
    page = {"data": [{"id": "1"}], "info": {"more_records": True, "next_page_token": None}}
    stub.api_script.extend([(200, page)] * 10)
    with pytest.raises(ZohoError) as excinfo:
        list(client.iter_records(MODULE, ["Name"]))
    assert excinfo.value.code == "MISSING_PAGE_TOKEN"


def test_page_only_paging_stops_at_2000_with_an_error_not_a_refused_page_11(
    stub: ZohoStub, client: ZohoClient
) -> None:
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(_records(2450), tokens=False)
    with pytest.raises(ZohoError) as excinfo:
        list(client.iter_records(MODULE, ["Name"]))
    assert excinfo.value.code == "MISSING_PAGE_TOKEN"
    assert [s.query["page"] for s in _list_requests(stub)] == [str(p) for p in range(1, 11)]


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("reader", ["records", "read_deleted"])
def test_no_content_and_not_modified_mean_no_records(
    stub: ZohoStub, client: ZohoClient, status: int, reader: str
) -> None:
    stub.api_script.append((status, None))
    if reader == "records":
        got = list(client.iter_records(MODULE, ["Name"], modified_since=SINCE))
    else:
        read = client.read_deleted(MODULE, since=SINCE)
        assert read == DeletedRead(entries=[], complete=True)
        got = read.entries
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
        lambda c: c.iter_records(MODULE, []),
        lambda c: c.iter_records(MODULE, ["Name"], per_page=201),
        lambda c: c.read_deleted(MODULE, since=datetime(2026, 11, 1, 10, 0)),
        lambda c: c.read_deleted(MODULE, type="trash"),
        lambda c: c.read_deleted(MODULE, limit=0),
        lambda c: c.read_deleted(MODULE, limit=True),
        lambda c: c.get_records_by_ids(MODULE, "5843017000000000001"),
        lambda c: c.get_records_by_ids(MODULE, ["1", ""]),
        lambda c: c.get_fields(""),
        lambda c: c.get_module(""),
    ],
    ids=[
        "naive-modified_since",
        "no-fields",
        "per_page-over-200",
        "read_deleted-naive-since",
        "read_deleted-bad-type",
        "read_deleted-limit-0",
        "read_deleted-limit-bool",
        "ids-one-string",
        "ids-empty-id",
        "fields-no-module",
        "module-no-name",
    ],
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


def _deleted(n: int, type_: str = "recycle", first: int = 0) -> list[dict]:
    return [
        {
            "id": str(5843017000900000000 + i),
            "display_name": f"d{i}",
            "type": type_,
            "deleted_time": "2026-11-01T10:00:00+00:00",
            "deleted_by": {"name": "Admin", "id": "5843017000000000001"},
        }
        for i in range(first, first + n)
    ]


def _deleted_route(stub: ZohoStub, fake: FakeDeleted) -> None:
    stub.routes[("GET", f"/crm/v8/{MODULE}/deleted")] = fake


def test_read_deleted_pages_with_page_and_type_only(stub: ZohoStub, client: ZohoClient) -> None:
    entries = _deleted(250) + _deleted(30, "permanent", first=250)
    _deleted_route(stub, FakeDeleted(entries))
    read = client.read_deleted(MODULE, since=SINCE, type="recycle")
    assert read == DeletedRead(entries=entries[:250], complete=True)
    requests_ = stub.requests_to("/deleted")
    assert [(s.query["type"], s.query["per_page"], s.query["page"]) for s in requests_] == [
        ("recycle", "200", "1"),
        ("recycle", "200", "2"),
    ]
    assert all(set(s.query) == {"type", "page", "per_page"} for s in requests_)  # no page_token
    assert all(s.headers["If-Modified-Since"] == "2026-11-01T10:00:00+00:00" for s in requests_)
    assert client.stats.by_endpoint["deleted"] == 2
    assert client.stats.credits == 2


@pytest.mark.parametrize("n", [2001, 2400, 5000])
def test_read_deleted_past_2000_is_incomplete_after_exactly_10_calls(
    stub: ZohoStub, client: ZohoClient, n: int
) -> None:
    """``/deleted`` gives no next_page_token: past 2,000 the read must stop and say so, not raise
    (raising left the module stuck on every run)."""
    entries = _deleted(n)
    _deleted_route(stub, FakeDeleted(entries))
    read = client.read_deleted(MODULE)
    assert read.complete is False
    assert read.entries == entries[:2000]
    assert [s.query["page"] for s in stub.requests_to("/deleted")] == [str(p) for p in range(1, 11)]
    assert client.stats.by_endpoint["deleted"] == 10


@pytest.mark.parametrize(("n", "calls"), [(1, 1), (1999, 10), (2000, 10)])
def test_read_deleted_up_to_2000_is_complete(stub: ZohoStub, client: ZohoClient, n: int, calls: int) -> None:
    entries = _deleted(n)
    _deleted_route(stub, FakeDeleted(entries))
    read = client.read_deleted(MODULE)
    assert read == DeletedRead(entries=entries, complete=True)
    assert len(stub.requests_to("/deleted")) == calls


@pytest.mark.parametrize(
    ("n", "limit", "discrete_limit", "complete", "calls", "got"),
    [
        (1000, 300, None, False, 2, 400),  # rounded up to whole pages of 200
        (2400, 2400, None, True, 12, 2400),  # a larger limit pages on
        (3000, 2400, 2000, False, 11, 2000),  # ...and a refused page 11 is incomplete, not an error
    ],
    ids=["limit-300", "limit-2400", "limit-2400-refused-past-2000"],
)
def test_read_deleted_limit(
    stub: ZohoStub,
    client: ZohoClient,
    n: int,
    limit: int,
    discrete_limit: int | None,
    complete: bool,
    calls: int,
    got: int,
) -> None:
    entries = _deleted(n)
    _deleted_route(stub, FakeDeleted(entries, discrete_limit=discrete_limit))
    read = client.read_deleted(MODULE, limit=limit)
    assert (read.complete, len(stub.requests_to("/deleted"))) == (complete, calls)
    assert read.entries == entries[:got]


def test_read_deleted_lists_an_entry_shifted_by_a_new_deletion_once(
    stub: ZohoStub, client: ZohoClient
) -> None:
    entries = _deleted(300)
    newest = _deleted(1, first=900)

    def view(seen: Seen, rows: list[dict]) -> list[dict]:
        # Newest first: a deletion after page 1 pushes entry 200 back onto page 2's first slot.
        return rows if seen.query["page"] == "1" else newest + rows

    _deleted_route(stub, FakeDeleted(entries, view))
    read = client.read_deleted(MODULE)
    ids = [e["id"] for e in read.entries]
    assert read.complete is True
    assert len(ids) == len(set(ids)) == 300
    assert ids == [e["id"] for e in entries]


def test_read_deleted_raises_zoho_errors(stub: ZohoStub, client: ZohoClient) -> None:
    _deleted_route(stub, FakeDeleted(_deleted(10)))
    stub.api_script.append((400, _error_body("INVALID_MODULE", "the module name given seems to be invalid")))
    with pytest.raises(ZohoError) as excinfo:
        client.read_deleted(MODULE)
    assert (excinfo.value.code, excinfo.value.endpoint) == ("INVALID_MODULE", "deleted")


# --- reading by ids -------------------------------------------------------------------------------


def _ids_requests(stub: ZohoStub) -> list[Seen]:
    return [s for s in _list_requests(stub) if "ids" in s.query]


def test_get_records_by_ids_splits_at_100_and_leaves_unknown_ids_out(
    stub: ZohoStub, client: ZohoClient
) -> None:
    records = _records(500)
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records)
    held = [r["id"] for r in records[::2]][:230]  # every other record
    unknown = [str(6843017000000000000 + i) for i in range(20)]
    asked = [*reversed(held[:115]), *unknown, *held[115:], held[0]]  # order kept, duplicate read once
    got = client.get_records_by_ids(MODULE, asked, ["Name"])
    assert [r["id"] for r in got] == [*reversed(held[:115]), *held[115:]]
    assert all(
        r == {"id": r["id"], "Name": next(x["Name"] for x in records if x["id"] == r["id"])} for r in got
    )
    batches = [s.query["ids"].split(",") for s in _ids_requests(stub)]
    assert [len(b) for b in batches] == [100, 100, 50]
    assert [i for b in batches for i in b] == list(dict.fromkeys(asked))
    assert all(s.query["fields"] == "Name" and "page" not in s.query for s in _ids_requests(stub))
    assert client.stats.by_endpoint["ids"] == 3
    assert client.stats.credits == 3


def test_get_records_by_ids_merges_field_chunks(stub: ZohoStub, client: ZohoClient) -> None:
    fields = _wide(120)
    records = [{"id": str(1000 + i), **{f: f"{f}-{i}" for f in fields}} for i in range(150)]
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records)
    got = client.get_records_by_ids(MODULE, [r["id"] for r in records], fields)
    assert got == records
    requests_ = _ids_requests(stub)
    assert [(len(s.query["ids"].split(",")), len(s.fields)) for s in requests_] == [
        (100, 50),
        (100, 50),
        (100, 20),
        (50, 50),
        (50, 50),
        (50, 20),
    ]
    assert client.stats.credits == 6


def test_get_records_by_ids_rereads_a_record_edited_between_chunks_instead_of_dropping_it(
    stub: ZohoStub, client: ZohoClient
) -> None:
    """Absent means deleted to the caller: a record edited mid-read must not go missing."""
    fields = [*_wide(60), "Modified_Time"]
    old, new = "2026-11-01T10:00:00+00:00", "2026-11-01T10:05:00+00:00"
    records = [{"id": str(i), "Modified_Time": old, **dict.fromkeys(_wide(60), f"v{i}")} for i in (1, 2, 3)]
    edited = {**records[1], "F000": "edited", "F055": "edited", "Modified_Time": new}

    def view(seen: Seen, rows: list[dict]) -> list[dict]:
        if len(_ids_requests(stub)) == 1:
            return rows  # first chunk of the first read: before the edit and the deletion
        return [rows[0], edited]  # record 2 edited, record 3 deleted

    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records, view)
    got = client.get_records_by_ids(MODULE, ["1", "2", "3"], fields)
    assert got == [records[0], edited]
    requests_ = _ids_requests(stub)
    assert all("Modified_Time" in s.fields and len(s.fields) <= 50 for s in requests_)
    assert [s.query["ids"] for s in requests_] == ["1,2,3", "1,2,3", "2", "2"]


def test_get_records_by_ids_raises_when_a_record_keeps_changing(stub: ZohoStub, client: ZohoClient) -> None:
    fields = [*_wide(60), "Modified_Time"]
    records = [{"id": "1", "Modified_Time": "t0", **dict.fromkeys(_wide(60), "v")}]

    def view(seen: Seen, rows: list[dict]) -> list[dict]:
        return [{**rows[0], "Modified_Time": f"t{len(_ids_requests(stub))}"}]  # edited before every read

    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records, view)
    with pytest.raises(ZohoError) as excinfo:
        client.get_records_by_ids(MODULE, ["1"], fields)
    assert (excinfo.value.code, excinfo.value.endpoint) == ("RECORD_CHANGED_DURING_READ", "ids")


def test_get_records_by_ids_without_fields_asks_for_all(stub: ZohoStub, client: ZohoClient) -> None:
    records = [{"id": "1", "Name": "a", "Email": "a@school.test"}]
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(records)
    assert client.get_records_by_ids(MODULE, ["1"]) == records
    assert "fields" not in _ids_requests(stub)[0].query


def test_get_records_by_ids_none_held_or_none_asked(stub: ZohoStub, client: ZohoClient) -> None:
    stub.routes[("GET", f"/crm/v8/{MODULE}")] = FakeModule(_records(3))
    assert client.get_records_by_ids(MODULE, ["404", "405"], ["Name"]) == []  # Zoho: HTTP 204
    assert len(_ids_requests(stub)) == 1
    assert client.get_records_by_ids(MODULE, [], ["Name"]) == []
    assert len(_ids_requests(stub)) == 1  # no call for no ids


def test_get_records_by_ids_raises_zoho_errors(stub: ZohoStub, client: ZohoClient) -> None:
    stub.api_script.append((400, _error_body("INVALID_MODULE", "the module name given seems to be invalid")))
    with pytest.raises(ZohoError) as excinfo:
        client.get_records_by_ids("Nope", ["1"], ["Name"])
    assert (excinfo.value.status, excinfo.value.code, excinfo.value.endpoint) == (
        400,
        "INVALID_MODULE",
        "ids",
    )


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


# --- org metadata ---------------------------------------------------------------------------------


SCHOOL_FIELDS = {
    "BTEC_Students": [{"api_name": "Name", "data_type": "text"}, {"api_name": "Student_Moodle_ID"}],
    "Products": [{"api_name": "Product_Name", "data_type": "text"}],
}
ORG = {"id": "20081234", "company_name": "A BTEC School", "time_zone": "Asia/Riyadh", "type": "production"}


@pytest.fixture
def org(stub: ZohoStub) -> FakeOrg:
    fake = FakeOrg(SCHOOL_FIELDS, ORG)
    fake.install(stub)
    return fake


def test_get_modules(stub: ZohoStub, client: ZohoClient, org: FakeOrg) -> None:
    modules = client.get_modules()
    assert [m["api_name"] for m in modules] == ["BTEC_Students", "Products"]
    assert [s.path for s in stub.seen if s.path.startswith("/crm/")] == ["/crm/v8/settings/modules"]
    assert client.stats.by_endpoint["settings"] == 1
    assert client.stats.credits == 1


def test_get_module_is_none_for_a_module_the_org_lacks(
    stub: ZohoStub, client: ZohoClient, org: FakeOrg
) -> None:
    assert client.get_module("Products") == org.module("Products")
    assert client.get_module("BTEC_Unknown") is None
    paths = [s.path for s in stub.seen if s.path.startswith("/crm/")]
    assert paths == ["/crm/v8/settings/modules/Products", "/crm/v8/settings/modules/BTEC_Unknown"]


def test_get_module_raises_other_errors(stub: ZohoStub, client: ZohoClient, org: FakeOrg) -> None:
    stub.api_script.append((403, _error_body("NO_PERMISSION", "permission denied")))
    with pytest.raises(ZohoAuthError) as excinfo:
        client.get_module("Products")
    assert (excinfo.value.status, excinfo.value.code) == (403, "NO_PERMISSION")


def test_get_fields(stub: ZohoStub, client: ZohoClient, org: FakeOrg) -> None:
    assert client.get_fields("BTEC_Students") == SCHOOL_FIELDS["BTEC_Students"]
    (request,) = [s for s in stub.seen if s.path.startswith("/crm/")]
    assert (request.path, request.query) == ("/crm/v8/settings/fields", {"module": "BTEC_Students"})


def test_get_fields_of_a_module_the_org_lacks_raises_invalid_module(
    stub: ZohoStub, client: ZohoClient, org: FakeOrg
) -> None:
    with pytest.raises(ZohoError) as excinfo:
        client.get_fields("BTEC_Unknown")
    error = excinfo.value
    assert (type(error), error.status, error.code, error.endpoint) == (
        ZohoError,
        400,
        "INVALID_MODULE",
        "settings",
    )
    assert error.details == {"param_name": "module"}


def test_get_org(stub: ZohoStub, client: ZohoClient, org: FakeOrg) -> None:
    assert client.get_org() == ORG
    assert client.stats.by_endpoint["org"] == 1


@pytest.mark.parametrize(
    ("call", "body"),
    [
        (lambda c: c.get_modules(), {"data": []}),
        (lambda c: c.get_module("Products"), {"modules": []}),
        (lambda c: c.get_fields("Products"), {"fields": None}),
        (lambda c: c.get_org(), {"org": []}),
    ],
    ids=["modules", "module", "fields", "org"],
)
def test_metadata_answers_without_their_key_are_errors_not_empty(
    stub: ZohoStub, client: ZohoClient, call: Callable[[ZohoClient], Any], body: dict
) -> None:
    stub.api_script.append((200, body))
    with pytest.raises(ZohoError) as excinfo:
        call(client)
    assert excinfo.value.code == "INVALID_RESPONSE"


# --- granted scopes -------------------------------------------------------------------------------


def test_granted_scopes_are_kept_from_the_token_answer(
    stub: ZohoStub, make_client: Callable[..., ZohoClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub.scope = "ZohoCRM.modules.ALL ZohoCRM.settings.ALL ZohoCRM.org.READ"
    client = make_client()
    _get_route(stub)
    assert client.granted_scopes == ()  # no token asked for yet
    client.get_record(MODULE, "1")
    assert client.granted_scopes == ("ZohoCRM.modules.ALL", "ZohoCRM.settings.ALL", "ZohoCRM.org.READ")
    assert isinstance(client.granted_scopes, tuple)
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(client) + repr(client._slot)
    assert "tok-1" not in text


def test_granted_scopes_follow_the_latest_answer_that_names_them(
    stub: ZohoStub, client: ZohoClient, clock: FakeClock
) -> None:
    _get_route(stub)
    client.get_record(MODULE, "1")
    assert client.granted_scopes == ()  # the answer had no scope
    stub.scope = "ZohoCRM.modules.READ,ZohoCRM.settings.fields.READ"
    clock.now += 3600
    client.get_record(MODULE, "1")
    assert client.granted_scopes == ("ZohoCRM.modules.READ", "ZohoCRM.settings.fields.READ")
    stub.scope = None
    clock.now += 3600
    client.get_record(MODULE, "1")
    assert len(stub.token_requests) == 3
    assert client.granted_scopes == ("ZohoCRM.modules.READ", "ZohoCRM.settings.fields.READ")


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
    assert client.read_deleted(MODULE).complete  # 1
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
    stub.token_script.append((503, None))  # a retried token request logs no secret either
    list(client.iter_records(MODULE, ["Name"]))
    client.upsert(MODULE, [{"Name": private}, {"Name": "b"}])
    ours = [r for r in caplog.records if r.name.startswith("sync_pipelines")]
    assert ours
    assert all(r.levelno == logging.DEBUG for r in ours)
    text = "\n".join(r.getMessage() for r in ours)
    _assert_no_secret(text)
    assert "tok-1" not in text
    assert private not in text
