"""The Moodle web-services client against a small programmable Moodle stub, over real HTTP.

The stub is a stdlib HTTP server on a local port. It decodes PHP-style form bodies the way PHP
does (dropping fields past its ``max_input_vars``, silently, like PHP), records every request,
answers with HTTP 200 for errors as Moodle does, and serves scripted answers (503s, dropped
connections, HTML pages) ahead of its normal behaviour. Its ``core_user_create_users`` is
all-or-nothing and refuses uppercase usernames, duplicate usernames and short passwords, so the
client's batch halving runs against the behaviour it was written for. The client's sleep is a
recorder and its jitter takes the top of the range, so nothing waits.
"""

import itertools
import json
import logging
import math
import pickle
import re
import socket
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from sync_pipelines.moodle.client import (
    ItemResult,
    MoodleAuthError,
    MoodleClient,
    MoodleError,
    MoodleRecordError,
    MoodleStats,
    MoodleUnavailable,
    php_form,
)

TENANT = "school-a"
TOKEN = "0123456789abcdef0123456789abcdef"
REST_PATH = "/webservice/rest/server.php"

INVALID_TOKEN = {
    "exception": "moodle_exception",
    "errorcode": "invalidtoken",
    "message": "Invalid token - token not found",
}
PASSWORD_POLICY_HTML = "<div>Passwords must be at least 8 characters long.</div><div>Passwords must have at least 1 digit(s).</div>"

DROP = "drop"


@dataclass(frozen=True)
class Raw:
    """A non-JSON answer."""

    status: int
    body: bytes
    content_type: str


Answer = tuple[int, Any] | Raw | str


# --- PHP's view of a form body --------------------------------------------------------------------

_NAME = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def php_decode(fields: list[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild nested parameters from PHP-style field names, as PHP fills ``$_POST``.

    Args:
        fields: ``(name, value)`` pairs in body order.

    Returns:
        Nested dicts, with every dict whose keys are all integers turned into a list.
    """
    root: dict[str, Any] = {}
    for name, value in fields:
        match = _NAME.match(name)
        assert match, f"not a PHP field name: {name!r}"
        keys = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


# --- the stub -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the stub received it (after PHP's ``max_input_vars`` cut)."""

    method: str
    path: str
    query: dict[str, str]
    fields: list[tuple[str, str]]
    sent_fields: int

    @property
    def function(self) -> str:
        return self.query.get("wsfunction", "")

    @property
    def params(self) -> dict[str, Any]:
        return php_decode(self.fields)


def moodle_error(errorcode: str, message: str, debuginfo: str | None = None, exception: str = "") -> dict:
    """A Moodle error body, as the REST server encodes it."""
    body: dict[str, Any] = {
        "exception": exception
        or ("invalid_parameter_exception" if errorcode == "invalidparameter" else "moodle_exception"),
        "errorcode": errorcode,
        "message": message,
    }
    if debuginfo is not None:
        body["debuginfo"] = debuginfo
    return body


class MoodleStub:
    """Moodle's REST server, as far as the client needs it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: deque[Answer] = deque()
        self.functions: dict[str, Callable[[Seen], Answer]] = {
            "core_webservice_get_site_info": lambda seen: (200, {"sitename": "Demo", "release": "4.5"}),
            "core_user_create_users": self.create_users,
            "local_echo": lambda seen: (200, None),
        }
        self.users: dict[str, dict] = {}
        self.created: Counter[str] = Counter()
        self.max_input_vars = 1000
        self.lock = threading.Lock()
        self.url = ""

    def calls_to(self, function: str) -> list[Seen]:
        return [s for s in self.seen if s.function == function]

    def handle(self, seen: Seen) -> Answer:
        with self.lock:
            self.seen.append(seen)
            if self.script:
                return self.script.popleft()
            if seen.query.get("wstoken") != TOKEN:
                return 200, INVALID_TOKEN
            handler = self.functions.get(seen.function)
            if handler is None:
                return 200, moodle_error(
                    "invalidrecord",
                    "Can't find data record in database table external_functions.",
                    exception="dml_missing_record_exception",
                )
            return handler(seen)

    def create_users(self, seen: Seen) -> Answer:
        """All-or-nothing, like Moodle: one refused user and none is created."""
        users = seen.params.get("users")
        if not users:
            return 200, moodle_error(
                "invalidparameter",
                "Invalid parameter value detected",
                "Missing required key in single structure: users",
            )
        pending: dict[str, dict] = {}
        for user in users:
            name = user.get("username", "")
            if name != name.lower():
                return 200, moodle_error(
                    "invalidparameter",
                    "Invalid parameter value detected",
                    f'users => Invalid parameter value detected (username => Invalid external api parameter: the value is "{name}", the server was expecting "username" type)',
                )
            if name in self.users or name in pending:
                return 200, moodle_error(
                    "invalidparameter", "Invalid parameter value detected", f"Username already exists: {name}"
                )
            if "password" in user and len(user["password"]) < 8:
                return 200, moodle_error(PASSWORD_POLICY_HTML, f"error/{PASSWORD_POLICY_HTML}")
            pending[name] = {**user, "id": len(self.users) + len(pending) + 2}
        self.users.update(pending)
        self.created.update(pending.keys())
        return 200, [{"id": u["id"], "username": name} for name, u in pending.items()]


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: MoodleStub) -> None:
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
        raw = self.rfile.read(length).decode() if length else ""
        url = urlsplit(self.path)
        fields = parse_qsl(raw, keep_blank_values=True)
        stub = self.server.stub
        seen = Seen(
            method=self.command,
            path=url.path,
            query={k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
            fields=fields[: stub.max_input_vars],  # PHP drops the rest, without a word
            sent_fields=len(fields),
        )
        answer = stub.handle(seen)
        if answer == DROP:
            self.close_connection = True  # no answer: the client sees the connection drop
            return
        if isinstance(answer, Raw):
            status, data, content_type = answer.status, answer.body, answer.content_type
        else:
            assert isinstance(answer, tuple)
            status, data, content_type = answer[0], json.dumps(answer[1]).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class CeilingRandom:
    """Always picks the top of the jitter range, so backoff sleeps are exactly the ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def stub() -> Iterator[MoodleStub]:
    moodle = MoodleStub()
    server = _StubServer(moodle)
    host, port = server.server_address[:2]
    moodle.url = f"http://{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield moodle
    server.shutdown()
    server.server_close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(stub: MoodleStub, sleeps: list[float]) -> Iterator[Callable[..., MoodleClient]]:
    made: list[MoodleClient] = []

    def make(**overrides: Any) -> MoodleClient:
        kwargs: dict[str, Any] = {
            "tenant_id": TENANT,
            "base_url": stub.url,
            "token": TOKEN,
            "timeout": (2.0, 5.0),
            "max_retries": 3,
            "backoff_base": 0.5,
            "backoff_max": 4.0,
            "sleep": sleeps.append,
            "rng": CeilingRandom(),
        }
        kwargs.update(overrides)
        client = MoodleClient(**kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., MoodleClient]) -> MoodleClient:
    return make_client()


def _users(names: list[str], **extra: Any) -> list[dict]:
    return [
        {"username": n, "firstname": "F", "lastname": n, "email": f"{n.lower()}@school.example", **extra}
        for n in names
    ]


# --- protocol and encoding ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/moodle", "/moodle/"])
def test_credentials_and_function_travel_in_the_query(
    stub: MoodleStub, make_client: Callable[..., MoodleClient], suffix: str
) -> None:
    """wstoken, wsfunction and moodlewsrestformat go in the URL query; parameters in the body."""
    client = make_client(base_url=stub.url + suffix)
    client.call("local_echo", {"courseid": 7})
    seen = stub.seen[-1]
    assert seen.method == "POST"
    assert seen.path == suffix.rstrip("/") + REST_PATH
    assert seen.query == {"wstoken": TOKEN, "wsfunction": "local_echo", "moodlewsrestformat": "json"}
    assert seen.fields == [("courseid", "7")]


class Colour(Enum):
    RED = "red"


# A (str, Enum) on purpose: its str() is "Shade.DARK", and the client must send "dark".
class Shade(str, Enum):  # noqa: UP042
    DARK = "dark"


@pytest.mark.parametrize(
    ("params", "fields", "decoded"),
    [
        pytest.param(
            {
                "users": [
                    {
                        "username": "amal",
                        "suspended": False,
                        "city": None,
                        "customfields": [
                            {"type": "zohoid", "value": 5843},
                            {"type": "active", "value": True},
                        ],
                    },
                    {"username": "ben", "createpassword": True},
                ]
            },
            [
                ("users[0][username]", "amal"),
                ("users[0][suspended]", "0"),
                ("users[0][customfields][0][type]", "zohoid"),
                ("users[0][customfields][0][value]", "5843"),
                ("users[0][customfields][1][type]", "active"),
                ("users[0][customfields][1][value]", "1"),
                ("users[1][username]", "ben"),
                ("users[1][createpassword]", "1"),
            ],
            {
                "users": [
                    {
                        "username": "amal",
                        "suspended": "0",
                        "customfields": [
                            {"type": "zohoid", "value": "5843"},
                            {"type": "active", "value": "1"},
                        ],
                    },
                    {"username": "ben", "createpassword": "1"},
                ]
            },
            id="nested-lists-and-dicts",
        ),
        pytest.param(
            {"field": "idnumber", "values": ["Z1", 22]},
            [("field", "idnumber"), ("values[0]", "Z1"), ("values[1]", "22")],
            {"field": "idnumber", "values": ["Z1", "22"]},
            id="scalar-list",
        ),
        pytest.param(
            {
                "yes": True,
                "no": False,
                "grade": 87.5,
                "nan": math.nan,
                "none": None,
                "empty": [],
                "tag": Shade.DARK,
            },
            [("yes", "1"), ("no", "0"), ("grade", "87.5"), ("tag", "dark")],
            {"yes": "1", "no": "0", "grade": "87.5", "tag": "dark"},
            id="scalars-bools-and-missing",
        ),
        pytest.param(
            {"name": "Zoë & Ådne = 1+1 [x]"},
            [("name", "Zoë & Ådne = 1+1 [x]")],
            {"name": "Zoë & Ådne = 1+1 [x]"},
            id="reserved-characters",
        ),
    ],
)
def test_parameters_are_encoded_php_style(
    stub: MoodleStub, client: MoodleClient, params: dict, fields: list[tuple[str, str]], decoded: dict
) -> None:
    """Nested lists and dicts become PHP field names; bools are 1/0; None, NaN and [] send nothing."""
    client.call("local_echo", params)
    seen = stub.seen[-1]
    assert seen.fields == fields
    assert seen.params == decoded


@pytest.mark.parametrize("value", [{1, 2}, b"raw", Colour.RED, object()])
def test_unencodable_values_are_refused_before_sending(value: Any) -> None:
    """A value Moodle cannot receive raises TypeError naming the parameter."""
    with pytest.raises(TypeError, match=r"users\[0\]\[x\]"):
        php_form({"users": [{"x": value}]})


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "cls", "errorcode"),
    [
        (INVALID_TOKEN, MoodleAuthError, "invalidtoken"),
        (
            moodle_error(
                "accessexception",
                "Access control exception",
                exception="webservice_access_exception",
            ),
            MoodleAuthError,
            "accessexception",
        ),
        (
            moodle_error(
                "nopermissions", "Sorry, but you do not currently have permissions to do that (Create users)."
            ),
            MoodleAuthError,
            "nopermissions",
        ),
        (
            moodle_error(
                "invalidrecord",
                "Can't find data record in database table external_functions.",
                exception="dml_missing_record_exception",
            ),
            MoodleAuthError,
            "invalidrecord",
        ),
        (
            moodle_error(
                "invalidparameter",
                "Invalid parameter value detected",
                "Missing required key in single structure: firstname",
            ),
            MoodleRecordError,
            "invalidparameter",
        ),
        (
            moodle_error("shortnametaken", "Short name is already used for another course (BTEC-1)"),
            MoodleRecordError,
            "shortnametaken",
        ),
        (
            moodle_error(
                "invalidrecord",
                "Can't find data record in database table course.",
                exception="dml_missing_record_exception",
            ),
            MoodleRecordError,
            "invalidrecord",
        ),
        (
            {"exception": "coding_exception", "message": "Coding error detected"},
            MoodleRecordError,
            "coding_exception",
        ),
        (
            moodle_error("sitemaintenance", "The site is undergoing maintenance"),
            MoodleUnavailable,
            "sitemaintenance",
        ),
    ],
)
def test_errors_at_http_200_are_typed(
    stub: MoodleStub, client: MoodleClient, body: dict, cls: type[MoodleError], errorcode: str
) -> None:
    """Moodle's error bodies (HTTP 200) become the matching typed error, unretried."""
    stub.script.append((200, body))
    with pytest.raises(MoodleError) as caught:
        client.call("core_user_create_users", {"users": [{"username": "amal"}]})
    error = caught.value
    assert type(error) is cls
    assert (error.tenant_id, error.function, error.errorcode) == (TENANT, "core_user_create_users", errorcode)
    assert error.message == body["message"]
    assert error.exception == body["exception"]
    assert error.debuginfo == body.get("debuginfo")
    for part in (
        TENANT,
        "core_user_create_users",
        errorcode,
        body["message"],
        *filter(None, [body.get("debuginfo")]),
    ):
        assert part in str(error)
    assert client.stats.calls == 1


def test_password_policy_html_is_made_readable(stub: MoodleStub, client: MoodleClient) -> None:
    """An HTML errorcode is stripped to text, and is still a record error of that user only."""
    users = _users(["amal", "ben"], password="Secret-123")
    users[1]["password"] = "short"
    results = client.create_users(users)
    assert results[0].ok
    failed = results[1]
    assert not failed.ok
    readable = "Passwords must be at least 8 characters long. Passwords must have at least 1 digit(s)."
    assert failed.errorcode == readable
    assert failed.message == readable
    with pytest.raises(MoodleRecordError) as caught:
        client.call("core_user_create_users", {"users": [users[1]]})
    assert "<" not in str(caught.value)
    assert caught.value.message == readable


@pytest.mark.parametrize(
    ("answer", "cls", "excerpt"),
    [
        (
            Raw(200, b"<html><body><h1>Moodle</h1><p>Log in</p></body></html>", "text/html"),
            MoodleUnavailable,
            "Moodle Log in",
        ),
        (
            Raw(
                200,
                b'<?xml version="1.0" encoding="UTF-8" ?>\n<EXCEPTION class="invalid_parameter_exception">'
                b"<MESSAGE>Invalid parameter value detected</MESSAGE></EXCEPTION>",
                "application/xml",
            ),
            MoodleUnavailable,
            "Invalid parameter value detected",
        ),
        (Raw(200, b"", "application/json"), MoodleUnavailable, "empty body"),
        (
            Raw(404, b"<html><title>404 Not Found</title></html>", "text/html"),
            MoodleUnavailable,
            "404 Not Found",
        ),
        (Raw(403, b"", "text/html"), MoodleAuthError, "HTTP 403"),
    ],
)
def test_non_json_answers_are_clear_errors(
    stub: MoodleStub, client: MoodleClient, answer: Raw, cls: type[MoodleError], excerpt: str
) -> None:
    """HTML, XML or empty answers raise with the status, the content type and what the page says."""
    stub.script.append(answer)
    with pytest.raises(MoodleError) as caught:
        client.site_info()
    error = caught.value
    assert type(error) is cls
    assert error.errorcode == "invalidresponse"
    assert "is not JSON" in error.message
    assert excerpt in error.message


def test_created_rows_that_do_not_match_the_batch_are_not_trusted(
    stub: MoodleStub, client: MoodleClient
) -> None:
    """``[]`` for a batch of users (the symptom of silently dropped fields) raises, never "ok"."""
    stub.script.append((200, []))
    with pytest.raises(MoodleUnavailable, match="sent 2 records and got 0 rows back") as caught:
        client.create_users(_users(["amal", "ben"]))
    assert caught.value.errorcode == "invalidresponse"
    assert caught.value.partial_results == []


@pytest.mark.parametrize("cls", [MoodleError, MoodleAuthError, MoodleRecordError, MoodleUnavailable])
def test_errors_pickle_as_themselves(cls: type[MoodleError]) -> None:
    """Errors survive pickling (Dagster moves them between processes) with their partial results."""
    error = cls(
        TENANT, "core_user_create_users", "invalidparameter", "Invalid parameter value detected", "x", "dbg"
    )
    error.partial_results = [ItemResult(index=0, ok=True, value={"id": 2, "username": "amal"})]
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    assert copy.partial_results == error.partial_results


# --- retries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "outcome", "calls", "sleeps_expected"),
    [
        pytest.param([(503, {}), (502, {})], "ok", 3, [0.5, 1.0], id="5xx-then-ok"),
        pytest.param([DROP], "ok", 2, [0.5], id="drop-then-ok"),
        pytest.param([(503, {})] * 4, "http_503", 4, [0.5, 1.0, 2.0], id="5xx-exhausted"),
        pytest.param([DROP] * 4, "connection_error", 4, [0.5, 1.0, 2.0], id="drops-exhausted"),
    ],
)
def test_server_errors_are_retried_then_unavailable(
    stub: MoodleStub,
    client: MoodleClient,
    sleeps: list[float],
    script: list[Answer],
    outcome: str,
    calls: int,
    sleeps_expected: list[float],
) -> None:
    """5xx and dropped connections are retried with backoff; after the last, MoodleUnavailable."""
    stub.script.extend(script)
    if outcome == "ok":
        assert client.site_info()["sitename"] == "Demo"
    else:
        with pytest.raises(MoodleUnavailable) as caught:
            client.site_info()
        assert caught.value.errorcode == outcome
    assert client.stats.calls == calls
    assert client.stats.retries == calls - 1
    assert sleeps == sleeps_expected


def test_an_unavailable_site_stops_a_batch_write(stub: MoodleStub, client: MoodleClient) -> None:
    """A write whose answer never came is raised, not split or recorded as a record failure."""
    stub.script.extend([(503, {})] * 4)
    with pytest.raises(MoodleUnavailable):
        client.create_users(_users(["amal", "ben", "carl"]))
    assert len(stub.calls_to("core_user_create_users")) == 4


# --- the input-vars budget ------------------------------------------------------------------------


def test_batched_writes_stay_within_the_field_budget(
    stub: MoodleStub, make_client: Callable[..., MoodleClient]
) -> None:
    """Users are packed greedily under max_input_vars - headroom; each is sent exactly once."""
    stub.max_input_vars = 60
    client = make_client(max_input_vars=60, input_vars_headroom=10)
    users = _users([f"u{i:02d}" for i in range(40)])
    for i, user in enumerate(users):
        user["customfields"] = [{"type": f"f{j}", "value": str(j)} for j in range(i % 6)]
    users.insert(
        17, {"username": "huge", "customfields": [{"type": f"f{j}", "value": "x"} for j in range(30)]}
    )

    results = client.create_users(users)

    requests = stub.calls_to("core_user_create_users")
    assert len(requests) > 1
    assert all(r.sent_fields <= client.field_budget for r in requests)
    sent = Counter(u["username"] for r in requests for u in r.params["users"])
    assert sent == Counter(u["username"] for u in users if u["username"] != "huge")
    assert [r.index for r in results] == list(range(len(users)))
    assert results[17] == ItemResult(
        index=17,
        ok=False,
        errorcode="too_many_fields",
        message="the record needs 61 form fields; the budget per request is 50",
    )
    assert all(
        r.ok and r.value["username"] == u["username"]
        for r, u in zip(results, users, strict=True)
        if r.index != 17
    )
    # Greedy: no request could have taken the first user of the next one.
    for before, after in itertools.pairwise(requests):
        first_next = len(php_form({"users": [after.params["users"][0]]}))
        assert before.sent_fields + first_next > client.field_budget


def test_lookups_stay_within_the_field_budget(
    stub: MoodleStub, make_client: Callable[..., MoodleClient]
) -> None:
    """Look-up values are split over requests of at most the budget; duplicates are sent once."""
    stub.max_input_vars = 60
    client = make_client(max_input_vars=60, input_vars_headroom=10)
    known = {f"Z{i}": {"id": 100 + i, "idnumber": f"Z{i}"} for i in range(0, 130, 3)}
    stub.functions["core_user_get_users_by_field"] = lambda seen: (
        200,
        [known[v] for v in seen.params["values"] if v in known],
    )
    values = [f"Z{i}" for i in range(130)] + ["Z5", "Z6"]

    users = client.get_users_by_field("idnumber", values)

    requests = stub.calls_to("core_user_get_users_by_field")
    assert len(requests) == math.ceil(130 / 49)
    assert all(r.sent_fields <= client.field_budget and r.params["field"] == "idnumber" for r in requests)
    assert Counter(v for r in requests for v in r.params["values"]) == Counter(f"Z{i}" for i in range(130))
    assert sorted(u["id"] for u in users) == sorted(u["id"] for u in known.values())


def test_a_call_over_the_budget_is_never_sent(
    stub: MoodleStub, make_client: Callable[..., MoodleClient]
) -> None:
    """call() refuses parameters that PHP would truncate, before any request."""
    client = make_client(max_input_vars=30, input_vars_headroom=5)
    with pytest.raises(MoodleRecordError, match="need 26 form fields; the budget is 25") as caught:
        client.call("core_user_get_users_by_field", {"field": "id", "values": list(range(25))})
    assert caught.value.errorcode == "too_many_fields"
    assert stub.seen == []
    assert client.stats.calls == 0


# --- all-or-nothing batches -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "calls"),
    [((0,), 7), ((3,), 7), ((9,), 5), ((2, 7), 9)],
)
def test_halving_isolates_bad_records(
    stub: MoodleStub, client: MoodleClient, bad: tuple[int, ...], calls: int
) -> None:
    """Bad users end as their own failures with Moodle's error; every other user is created."""
    names = [f"user{i}" for i in range(10)]
    for i in bad:
        names[i] = names[i].upper()

    results = client.create_users(_users(names))

    assert [r.index for r in results] == list(range(10))
    for i, result in enumerate(results):
        if i in bad:
            assert not result.ok
            assert result.errorcode == "invalidparameter"
            assert f'the value is "{names[i]}"' in (result.message or "")
        else:
            assert result.ok
            assert result.value == {"id": stub.users[names[i]]["id"], "username": names[i]}
    assert set(stub.users) == {n for i, n in enumerate(names) if i not in bad}
    assert all(count == 1 for count in stub.created.values())
    assert len(stub.calls_to("core_user_create_users")) == calls
    if len(bad) == 1:
        assert calls <= 1 + 2 * math.ceil(math.log2(10))


@pytest.mark.parametrize(
    ("max_input_vars", "revoke_at", "settled_ok"),
    [
        pytest.param(1000, 3, [0, 1, 2, 3, 4, 5], id="while-halving"),
        pytest.param(24, 2, [0, 1, 2, 3, 4, 5], id="between-batches"),
    ],
)
def test_an_auth_error_mid_batch_stops_the_write(
    stub: MoodleStub,
    make_client: Callable[..., MoodleClient],
    max_input_vars: int,
    revoke_at: int,
    settled_ok: list[int],
) -> None:
    """A revoked token stops the write at once; partial_results says what was already written."""
    client = make_client(max_input_vars=max_input_vars, input_vars_headroom=0)
    names = [f"user{i}" for i in range(12)]
    names[7] = "USER7"
    create = stub.functions["core_user_create_users"]
    count = 0

    def revoking(seen: Seen) -> Answer:
        nonlocal count
        count += 1
        return (200, INVALID_TOKEN) if count >= revoke_at else create(seen)

    stub.functions["core_user_create_users"] = revoking

    with pytest.raises(MoodleAuthError) as caught:
        client.create_users(_users(names))

    assert count == revoke_at
    assert [r.index for r in caught.value.partial_results if r.ok] == settled_ok
    assert all(r.ok for r in caught.value.partial_results)
    assert set(stub.users) == {names[i] for i in settled_ok}
    assert client.stats.retries == 0


# --- per-record answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "function", "warning"),
    [
        (
            "update_users",
            "core_user_update_users",
            {"item": "user", "warningcode": "invaliduserid", "message": "Invalid user ID"},
        ),
        (
            "update_courses",
            "core_course_update_courses",
            {
                "item": "course",
                "warningcode": "shortnametaken",
                "message": "Short name is already used for another course (C1)",
            },
        ),
    ],
)
def test_update_warnings_become_record_errors(
    stub: MoodleStub, client: MoodleClient, method: str, function: str, warning: dict
) -> None:
    """Warnings name records by itemid; each becomes that record's failure, the rest succeed."""
    existing = {"3", "5"}

    def update(seen: Seen) -> Answer:
        key = "users" if function == "core_user_update_users" else "courses"
        missing = [r["id"] for r in seen.params[key] if r["id"] not in existing]
        return 200, {"warnings": [{**warning, "itemid": int(i)} for i in missing]}

    stub.functions[function] = update
    records = [{"id": 3, "firstname": "A"}, {"id": 4, "firstname": "B"}, {"id": 5, "firstname": "C"}]

    results = getattr(client, method)(records)

    assert results == [
        ItemResult(index=0, ok=True),
        ItemResult(index=1, ok=False, errorcode=warning["warningcode"], message=warning["message"]),
        ItemResult(index=2, ok=True),
    ]
    assert len(stub.calls_to(function)) == 1


@pytest.mark.parametrize(
    ("run", "function", "answer", "fields", "expected"),
    [
        pytest.param(
            lambda c: c.create_courses(
                [{"fullname": "BTEC L3", "shortname": "B3", "categoryid": 2, "visible": True}]
            ),
            "core_course_create_courses",
            [{"id": 11, "shortname": "B3"}],
            [
                ("courses[0][fullname]", "BTEC L3"),
                ("courses[0][shortname]", "B3"),
                ("courses[0][categoryid]", "2"),
                ("courses[0][visible]", "1"),
            ],
            [ItemResult(index=0, ok=True, value={"id": 11, "shortname": "B3"})],
            id="create_courses",
        ),
        pytest.param(
            lambda c: c.create_categories([{"name": "Art", "parent": 0, "idnumber": "CAT1"}]),
            "core_course_create_categories",
            [{"id": 4, "name": "Art"}],
            [
                ("categories[0][name]", "Art"),
                ("categories[0][parent]", "0"),
                ("categories[0][idnumber]", "CAT1"),
            ],
            [ItemResult(index=0, ok=True, value={"id": 4, "name": "Art"})],
            id="create_categories",
        ),
        pytest.param(
            lambda c: c.enrol([{"roleid": 5, "userid": 2, "courseid": 11, "suspend": False}]),
            "enrol_manual_enrol_users",
            None,
            [
                ("enrolments[0][roleid]", "5"),
                ("enrolments[0][userid]", "2"),
                ("enrolments[0][courseid]", "11"),
                ("enrolments[0][suspend]", "0"),
            ],
            [ItemResult(index=0, ok=True)],
            id="enrol",
        ),
        pytest.param(
            lambda c: c.unenrol([{"userid": 2, "courseid": 11}]),
            "enrol_manual_unenrol_users",
            None,
            [("enrolments[0][userid]", "2"), ("enrolments[0][courseid]", "11")],
            [ItemResult(index=0, ok=True)],
            id="unenrol",
        ),
        pytest.param(
            lambda c: c.get_courses_by_field("idnumber", "Z9"),
            "core_course_get_courses_by_field",
            {"courses": [{"id": 11, "idnumber": "Z9"}], "warnings": []},
            [("field", "idnumber"), ("value", "Z9")],
            [{"id": 11, "idnumber": "Z9"}],
            id="get_courses_by_field",
        ),
        pytest.param(
            lambda c: c.get_categories([{"key": "idnumber", "value": "CAT1"}]),
            "core_course_get_categories",
            [{"id": 4, "name": "Art", "idnumber": "CAT1"}],
            [("criteria[0][key]", "idnumber"), ("criteria[0][value]", "CAT1")],
            [{"id": 4, "name": "Art", "idnumber": "CAT1"}],
            id="get_categories",
        ),
        pytest.param(
            lambda c: c.get_grade_items(11),
            "gradereport_user_get_grade_items",
            {"usergrades": [{"userid": 2, "courseid": 11, "gradeitems": []}], "warnings": []},
            [("courseid", "11"), ("userid", "0")],
            [{"userid": 2, "courseid": 11, "gradeitems": []}],
            id="get_grade_items",
        ),
        pytest.param(
            lambda c: c.site_info(),
            "core_webservice_get_site_info",
            {"sitename": "Demo", "release": "4.5", "functions": []},
            [],
            {"sitename": "Demo", "release": "4.5", "functions": []},
            id="site_info",
        ),
    ],
)
def test_each_function_sends_and_reads_what_moodle_documents(
    stub: MoodleStub,
    client: MoodleClient,
    run: Callable[[MoodleClient], Any],
    function: str,
    answer: Any,
    fields: list[tuple[str, str]],
    expected: Any,
) -> None:
    """Every wrapper calls its function with Moodle's parameter names and unwraps its answer."""
    stub.functions[function] = lambda seen: (200, answer)
    assert run(client) == expected
    assert [s.function for s in stub.seen] == [function]
    assert stub.seen[0].fields == fields


@pytest.mark.parametrize(
    ("total", "page_size", "only_active", "requests", "ignore_limits"),
    [
        (25, 10, True, 3, False),
        (20, 10, False, 3, False),
        (5, 10, False, 1, False),
        (0, 10, True, 1, False),
        (25, 10, False, 1, True),
    ],
)
def test_enrolled_users_are_read_page_by_page(
    stub: MoodleStub,
    client: MoodleClient,
    total: int,
    page_size: int,
    only_active: bool,
    requests: int,
    ignore_limits: bool,
) -> None:
    """limitfrom/limitnumber pages until a short page; a site ignoring the limits is read once."""
    enrolled = [{"id": 100 + i, "roles": [{"roleid": 5}]} for i in range(total)]

    def page(seen: Seen) -> Answer:
        options = {o["name"]: o["value"] for o in seen.params["options"]}
        start, size = int(options["limitfrom"]), int(options["limitnumber"])
        return 200, enrolled if ignore_limits else enrolled[start : start + size]

    stub.functions["core_enrol_get_enrolled_users"] = page

    users = list(client.iter_enrolled_users(42, only_active=only_active, page_size=page_size))

    assert users == enrolled
    seen = stub.calls_to("core_enrol_get_enrolled_users")
    assert len(seen) == requests
    for n, request in enumerate(seen):
        assert request.params == {
            "courseid": "42",
            "options": [
                {"name": "onlyactive", "value": "1" if only_active else "0"},
                {"name": "limitfrom", "value": str(n * page_size)},
                {"name": "limitnumber", "value": str(page_size)},
            ],
        }


def test_get_enrolled_users_returns_the_whole_list(stub: MoodleStub, client: MoodleClient) -> None:
    """The list form reads every page."""
    stub.functions["core_enrol_get_enrolled_users"] = lambda seen: (200, [])
    assert client.get_enrolled_users(42) == []


# --- secrets and accounting -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("source", ["echoed-error", "echoed-page", "echoed-warning", "unreachable"])
def test_the_token_never_leaks(
    stub: MoodleStub,
    make_client: Callable[..., MoodleClient],
    caplog: pytest.LogCaptureFixture,
    source: str,
) -> None:
    """Not in errors, reprs, or any log line at DEBUG (urllib3's URL line included)."""
    caplog.set_level(logging.DEBUG)
    client = make_client(max_retries=1)
    url = f"{stub.url}{REST_PATH}?wstoken={TOKEN}&wsfunction=x"
    texts: list[str] = [repr(client)]
    if source == "echoed-error":
        stub.script.append((200, moodle_error("invalidparameter", f"bad token {TOKEN}", f"request {url}")))
    elif source == "echoed-page":
        stub.script.append(Raw(200, f"<html>Error at {url}</html>".encode(), "text/html"))
    elif source == "echoed-warning":
        stub.script.append(
            (200, {"warnings": [{"item": "user", "warningcode": "x", "message": f"see {url}"}]})
        )
    else:
        client = make_client(base_url=f"http://127.0.0.1:{_free_port()}", max_retries=1)

    if source == "echoed-warning":
        results = client.update_users([{"id": 3}])
        assert results == [ItemResult(index=0, ok=True)]
    else:
        with pytest.raises(MoodleError) as caught:
            client.call("core_user_update_users", {"users": [{"id": 3}]})
        texts += [str(caught.value), repr(caught.value), repr(caught.value.args)]

    texts.append(caplog.text)
    assert REST_PATH in caplog.text  # the request lines were logged, just not the token
    for text in texts:
        assert TOKEN not in text


def test_stats_count_every_attempt_per_function(stub: MoodleStub, client: MoodleClient) -> None:
    """Every HTTP attempt, retries included, is counted against its function."""
    stub.script.append((503, {}))
    client.site_info()
    client.create_users(_users(["amal", "BEN"]))
    assert client.stats.as_metadata() == {
        "moodle_calls": 4,
        "moodle_retries": 1,
        "moodle_calls.core_user_create_users": 2,
        "moodle_calls.core_webservice_get_site_info": 2,
    }
    assert isinstance(client.stats, MoodleStats)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tenant_id": ""}, "tenant_id"),
        ({"base_url": ""}, "base_url"),
        ({"token": ""}, "token"),
        ({"max_input_vars": 50, "input_vars_headroom": 49}, "max_input_vars"),
        ({"input_vars_headroom": -1}, "headroom"),
    ],
)
def test_bad_configuration_is_refused(
    make_client: Callable[..., MoodleClient], overrides: Mapping[str, Any], message: str
) -> None:
    """A client that could not work is refused when built."""
    with pytest.raises(ValueError, match=message):
        make_client(**overrides)


def test_unknown_lookup_field_is_refused(client: MoodleClient) -> None:
    """get_users_by_field only accepts the fields Moodle searches on."""
    with pytest.raises(ValueError, match="field must be one of"):
        client.get_users_by_field("firstname", ["Amal"])
