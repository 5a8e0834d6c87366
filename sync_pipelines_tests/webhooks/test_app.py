"""The webhook receiver: routes, authentication, limits, normalisation, and one run on real uvicorn.

Starlette's ``TestClient`` needs httpx, which is not a dependency of this project, so requests are
driven through the ASGI interface directly (:func:`call`): that also lets a test hand the body over in
chunks and count how many the app pulled in before it refused.
"""

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlencode

import anyio
import pytest
import requests
import uvicorn
import yaml
from starlette.applications import Starlette

from sync_pipelines.webhooks.app import AUTH_FAILED, SEED_MOODLE_EVENTS, SYNC_ENTITIES, create_app
from sync_pipelines.webhooks.drop import FIELDS, pending_files, read_event
from sync_pipelines.webhooks.signing import sign

NOW = 1_769_337_000  # 2026-01-25T10:30:00Z
MAX_BODY = 4096
SECRETS = {"school_a": "secret-of-school-a-5f2c9e", "school_b": "secret-of-school-b-81d4a0"}
ZOHO_CONFIG = {
    "accounts_url": "http://127.0.0.1:9",
    "client_id_env": "X_ID",
    "client_secret_env": "X_SECRET",
    "refresh_token_env": "X_REFRESH",
}
FIXTURES = Path(__file__).parent / "fixtures"

ZOHO_BODY = {
    "event_id": "zevt-1",
    "module": "BTEC_Students",
    "event_type": "updated",
    "record_id": "5843017000000123456",
    "timestamp": "2026-01-25T10:30:00Z",
}
ZOHO_PAYLOAD = {"module": "BTEC_Students", "event_type": "updated", "record_ids": ["5843017000000123456"]}
GRADED_BODY = {
    "eventname": "\\core\\event\\user_graded",
    "component": "core",
    "objectid": "1187",
    "contextinstanceid": "12",
    "userid": "2",
    "courseid": "12",
    "relateduserid": "57",
    "other": {"itemid": "341", "overridden": False, "finalgrade": "87.50000"},
    "timecreated": 1769337000,
    "grade_item": {"id": 341, "itemtype": "mod", "itemmodule": "assign", "grademax": "100.00000"},
}
GRADED_PAYLOAD = {
    "eventname": "\\core\\event\\user_graded",
    "objectid": 1187,
    "relateduserid": 57,
    "courseid": 12,
    "userid": 2,
    "contextinstanceid": 12,
    "other": {"itemid": 341, "overridden": False, "finalgrade": 87.5},
    "timecreated": 1769337000,
    "grade_item": {
        "id": 341,
        "itemtype": "mod",
        "itemmodule": "assign",
        "grademax": 100.0,
        "is_course_total": False,
    },
}
ENROLMENT_BODY = {
    "eventname": "\\core\\event\\user_enrolment_created",
    "objectid": 77,
    "relateduserid": 57,
    "courseid": 12,
    "userid": 2,
    "contextinstanceid": 12,
    "other": {"enrol": "manual"},
    "timecreated": 1769336990,
}
ENROLMENT_PAYLOAD = {**ENROLMENT_BODY, "grade_item": None}
USER_CREATED_BODY = {
    "eventname": "\\core\\event\\user_created",
    "objectid": "57",
    "relateduserid": "57",
    "courseid": "0",
    "userid": "2",
    "contextinstanceid": "57",
    "other": [],
    "timecreated": "1769336900",
}
USER_CREATED_PAYLOAD = {
    "eventname": "\\core\\event\\user_created",
    "objectid": 57,
    "relateduserid": 57,
    "courseid": 0,
    "userid": 2,
    "contextinstanceid": 57,
    "other": None,
    "timecreated": 1769336900,
    "grade_item": None,
}
STUDENT = {
    "id": "5843017000000123456",
    "First_Name": "Amal",
    "Classes": {"name": "IT-3A", "id": "584301700000009"},
}


# --- an ASGI driver -------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the app answered, and how many body chunks it pulled in."""

    status: int
    body: bytes
    headers: dict[str, str]
    chunks_read: int

    def json(self) -> dict:
        """The answer's JSON body."""
        return json.loads(self.body)


def call(
    app: Starlette,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
    stall: bool = False,
) -> Reply:
    """Drive one HTTP request through the ASGI app, as uvicorn would.

    Args:
        app: the app.
        method: HTTP method.
        path: the raw path (percent-escapes are decoded into ``scope["path"]``, as servers do).
        body: the body, sent in one piece with a Content-Length.
        headers: request headers.
        chunks: send the body in these pieces instead, without a Content-Length (chunked).
        stall: after the pieces, never send the rest (a slow client).
    """
    header_list = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if chunks is None:
        chunks = [body]
        if not any(k == b"content-length" for k, _ in header_list):
            header_list.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": header_list,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    pieces = list(chunks)
    read = 0
    messages: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if read < len(pieces):
            read += 1
            return {
                "type": "http.request",
                "body": pieces[read - 1],
                "more_body": stall or read < len(pieces),
            }
        if stall:
            await anyio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        messages.append(message)

    async def run() -> None:
        await app(scope, receive, send)

    anyio.run(run)
    start = next(m for m in messages if m["type"] == "http.response.start")
    return Reply(
        status=start["status"],
        body=b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"),
        headers={k.decode(): v.decode() for k, v in start["headers"]},
        chunks_read=read,
    )


# --- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def tenants_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two schools with secrets, one whose secret variable is unset, one naming no variable."""
    monkeypatch.setenv("SCHOOL_A_WEBHOOK", SECRETS["school_a"])
    monkeypatch.setenv("SCHOOL_B_WEBHOOK", SECRETS["school_b"])
    monkeypatch.delenv("UNSET_WEBHOOK", raising=False)
    tenants = [
        {"id": "school_a", "zoho": ZOHO_CONFIG, "webhook_secret_env": "SCHOOL_A_WEBHOOK"},
        {"id": "school_b", "zoho": ZOHO_CONFIG, "webhook_secret_env": "SCHOOL_B_WEBHOOK"},
        {"id": "unset_secret", "zoho": ZOHO_CONFIG, "webhook_secret_env": "UNSET_WEBHOOK"},
        {"id": "no_secret", "zoho": ZOHO_CONFIG},
    ]
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": tenants}))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The drop root."""
    return tmp_path / "drop"


@pytest.fixture
def app(tenants_file: Path, root: Path) -> Starlette:
    """The receiver, with a 4 KiB body limit and the clock stopped at :data:`NOW`."""
    return create_app(tenants_file=tenants_file, drop_root=root, max_body_bytes=MAX_BODY, clock=lambda: NOW)


def encode(body: dict | bytes) -> bytes:
    """A dict as JSON bytes; bytes as they are."""
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def auth_headers(body: bytes, auth: str, secret: str = SECRETS["school_a"], ts: int = NOW) -> dict[str, str]:
    """Headers for ``auth``: ``"sign"``, ``"bearer"`` or ``"none"``."""
    if auth == "sign":
        return sign(secret, body, ts)
    if auth == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    return {}


def post(
    app: Starlette,
    path: str,
    body: dict | bytes,
    *,
    auth: str = "sign",
    secret: str = SECRETS["school_a"],
    ctype: str = "application/json",
    tenant_header: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """POST ``body`` to ``path``, authenticated as asked."""
    raw = encode(body)
    all_headers = {"Content-Type": ctype, **auth_headers(raw, auth, secret)}
    if tenant_header is not None:
        all_headers["X-Tenant-ID"] = tenant_header
    all_headers.update(headers or {})
    return call(app, "POST", path, body=raw, headers=all_headers)


def files_under(folder: Path) -> list[Path]:
    """Every file under ``folder``, hidden ones included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_rejected(reply: Reply, status: int, reason: str, root: Path) -> None:
    """The answer is a rejection and nothing at all was written."""
    assert reply.status == status, reply.body
    assert reply.json()["status"] == "rejected"
    assert reason in reply.json()["reason"]
    assert files_under(root) == []


# --- accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "auth", "ctype", "tenant_header", "kind", "payload", "event_id"),
    [
        pytest.param(
            "/v1/webhooks/zoho/school_a", ZOHO_BODY, "sign", "application/json", None,
            "zoho.notification", ZOHO_PAYLOAD, "zevt-1", id="zoho-json-signed",
        ),
        pytest.param(
            "/v1/webhooks/zoho/school_a", ZOHO_BODY, "bearer", "application/json; charset=utf-8", None,
            "zoho.notification", ZOHO_PAYLOAD, "zevt-1", id="zoho-json-bearer",
        ),
        pytest.param(
            "/v1/webhooks/zoho/school_a",
            urlencode({"module": "BTEC_Grades", "event_type": "Edit", "ids": "11, 12,11,13", "timestamp": "t"}).encode(),
            "bearer", "application/x-www-form-urlencoded", None,
            "zoho.notification", {"module": "BTEC_Grades", "event_type": "updated", "record_ids": ["11", "12", "13"]},
            None, id="zoho-form-bearer",
        ),
        pytest.param(
            "/v1/webhooks/moodle/school_a", {**GRADED_BODY, "event_id": "m-1"}, "sign", "application/json", None,
            "moodle.event", GRADED_PAYLOAD, "m-1", id="moodle-user-graded",
        ),
        pytest.param(
            "/v1/webhooks/moodle/school_a", ENROLMENT_BODY, "sign", "application/json", None,
            "moodle.event", ENROLMENT_PAYLOAD, None, id="moodle-enrolment",
        ),
        pytest.param(
            "/v1/webhooks/moodle/school_a", USER_CREATED_BODY, "sign", "application/json", None,
            "moodle.event", USER_CREATED_PAYLOAD, None, id="moodle-user-created",
        ),
        pytest.param(
            "/v1/sync/students", {"data": [STUDENT]}, "bearer", "application/json", "school_a",
            "zoho.records", {"module": "BTEC_Students", "records": [STUDENT]}, None, id="seed-sync-bearer",
        ),
        pytest.param(
            "/v1/sync/programs", {"data": [{"id": 5843017000000000001}]}, "sign", "application/json", "school_a",
            "zoho.records", {"module": "Products", "records": [{"id": 5843017000000000001}]}, None,
            id="seed-sync-signed",
        ),
        pytest.param(
            "/v1/events/moodle/grade_updated", {k: v for k, v in GRADED_BODY.items() if k != "eventname"}, "sign",
            "application/json", "school_a", "moodle.event", GRADED_PAYLOAD, None, id="seed-grade-updated",
        ),
        pytest.param(
            "/v1/events/moodle/enrollment_created", ENROLMENT_BODY, "sign", "application/json", "school_a",
            "moodle.event", ENROLMENT_PAYLOAD, None, id="seed-enrollment-created",
        ),
    ],
)  # fmt: skip
def test_each_route_accepts_and_writes_the_drop_file(
    app: Starlette,
    root: Path,
    path: str,
    body: dict | bytes,
    auth: str,
    ctype: str,
    tenant_header: str | None,
    kind: str,
    payload: dict,
    event_id: str | None,
) -> None:
    reply = post(app, path, body, auth=auth, ctype=ctype, tenant_header=tenant_header)
    assert reply.status == 202, reply.body
    answer = reply.json()
    assert answer["status"] == "accepted" and answer["duplicate"] is False
    if event_id is not None:
        assert answer["event_id"] == event_id
    source = kind.split(".")[0]
    [file] = pending_files(root, source)
    assert file.parent == root / "school_a" / source
    assert file.name == f"20260125T103000000000Z-{answer['event_id']}.json"
    assert list(json.loads(file.read_text("utf-8"))) == list(FIELDS)
    event = read_event(file)
    assert (event.event_id, event.tenant_id, event.kind) == (answer["event_id"], "school_a", kind)
    assert event.received_at == datetime.fromtimestamp(NOW, UTC)
    assert event.payload == payload


@pytest.mark.parametrize(("entity", "module"), sorted(SYNC_ENTITIES.items()))
def test_every_seed_entity_maps_to_its_module(app: Starlette, root: Path, entity: str, module: str) -> None:
    reply = post(app, f"/v1/sync/{entity}", {"data": [{"id": "1"}]}, auth="bearer", tenant_header="school_a")
    assert reply.status == 202
    [file] = pending_files(root, "zoho")
    assert read_event(file).payload == {"module": module, "records": [{"id": "1"}]}


@pytest.mark.parametrize(("name", "eventname"), sorted(SEED_MOODLE_EVENTS.items()))
def test_every_seed_moodle_event_maps_to_its_core_event(
    app: Starlette, root: Path, name: str, eventname: str
) -> None:
    body = {**ENROLMENT_BODY, "eventname": None, "other": {"itemid": 341}}
    reply = post(app, f"/v1/events/moodle/{name}", body, tenant_header="school_a")
    assert reply.status == 202, reply.body
    [file] = pending_files(root, "moodle")
    assert read_event(file).payload["eventname"] == eventname


def test_the_recorded_plugin_delivery_is_accepted(
    tenants_file: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture = json.loads((FIXTURES / "moodle_user_graded.json").read_text("utf-8"))
    body = fixture["body"].encode("utf-8")
    headers = fixture["headers"]
    assert sign(fixture["secret"], body, fixture["timestamp"]) == {
        k: v for k, v in headers.items() if k.startswith("X-Sync-")
    }
    tenants_file.write_text(
        yaml.safe_dump(
            {"tenants": [{"id": fixture["tenant"], "zoho": ZOHO_CONFIG, "webhook_secret_env": "FIX_SECRET"}]}
        )
    )
    monkeypatch.setenv("FIX_SECRET", fixture["secret"])
    app = create_app(tenants_file=tenants_file, drop_root=root, clock=lambda: fixture["timestamp"] + 60)
    reply = call(app, "POST", fixture["path"], body=body, headers=headers)
    expected = fixture["expected"]
    assert reply.status == expected["status"], reply.body
    assert reply.json()["event_id"] == expected["event_id"]
    [file] = pending_files(root, "moodle")
    event = read_event(file)
    assert (event.kind, event.payload) == (expected["kind"], expected["payload"])


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        pytest.param({}, {}, id="strings"),
        pytest.param(
            {"objectid": 1187, "courseid": 12.0, "other": {"itemid": 341, "overridden": 1, "finalgrade": 87.5}},
            {"other": {"itemid": 341, "overridden": True, "finalgrade": 87.5}},
            id="numbers",
        ),
        pytest.param(
            {"other": {"itemid": "341", "overridden": "", "finalgrade": None}},
            {"other": {"itemid": 341, "overridden": False, "finalgrade": None}},
            id="null-grade",
        ),
        pytest.param(
            {"other": {"itemid": "341", "finalgrade": "92"}, "relateduserid": "", "contextinstanceid": None},
            {"other": {"itemid": 341, "overridden": False, "finalgrade": 92.0}, "relateduserid": None, "contextinstanceid": None},
            id="missing-optional",
        ),
        pytest.param(
            {"eventname": "core\\event\\user_graded", "grade_item": {"id": "341", "itemtype": "course", "itemmodule": "", "grademax": 100}},
            {"grade_item": {"id": 341, "itemtype": "course", "itemmodule": None, "grademax": 100.0, "is_course_total": True}},
            id="course-total",
        ),
        pytest.param(
            {"grade_item": {"id": 341, "itemtype": "manual", "grademax": "20", "is_course_total": "0"}, "other": '{"itemid": 341}'},
            {
                "grade_item": {"id": 341, "itemtype": "manual", "itemmodule": None, "grademax": 20.0, "is_course_total": False},
                "other": {"itemid": 341, "overridden": False, "finalgrade": None},
            },
            id="manual-item-other-as-text",
        ),
    ],
)  # fmt: skip
def test_moodle_type_quirks_are_coerced(app: Starlette, root: Path, variant: dict, expected: dict) -> None:
    reply = post(app, "/v1/webhooks/moodle/school_a", {**GRADED_BODY, **variant})
    assert reply.status == 202, reply.body
    [file] = pending_files(root, "moodle")
    payload = read_event(file).payload
    assert payload == {**GRADED_PAYLOAD, **expected}
    assert all(type(payload[k]) is int for k in ("objectid", "timecreated"))


# --- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        pytest.param("/v1/webhooks/zoho/school_a", ZOHO_BODY, sign("forged", encode(ZOHO_BODY), NOW), id="forged"),
        pytest.param(
            "/v1/webhooks/moodle/school_a", GRADED_BODY, sign(SECRETS["school_b"], encode(GRADED_BODY), NOW),
            id="other-tenants-signature",
        ),
        pytest.param(
            "/v1/webhooks/moodle/school_a", GRADED_BODY, sign(SECRETS["school_a"], encode(ENROLMENT_BODY), NOW),
            id="signature-of-another-body",
        ),
        pytest.param(
            "/v1/webhooks/moodle/school_a", GRADED_BODY, sign(SECRETS["school_a"], encode(GRADED_BODY), NOW - 301),
            id="stale",
        ),
        pytest.param(
            "/v1/webhooks/moodle/school_a", GRADED_BODY, sign(SECRETS["school_a"], encode(GRADED_BODY), NOW + 301),
            id="future",
        ),
        pytest.param(
            "/v1/webhooks/moodle/school_a", GRADED_BODY,
            {"X-Sync-Timestamp": str(NOW), "X-Sync-Signature": sign(SECRETS["school_a"], encode(GRADED_BODY), NOW)["X-Sync-Signature"][7:]},
            id="no-scheme",
        ),
        pytest.param(
            "/v1/webhooks/moodle/school_a", GRADED_BODY,
            {"X-Sync-Timestamp": f"{NOW}.0", "X-Sync-Signature": sign(SECRETS["school_a"], encode(GRADED_BODY), NOW)["X-Sync-Signature"]},
            id="timestamp-not-integer",
        ),
        pytest.param("/v1/webhooks/moodle/school_a", GRADED_BODY, {}, id="unsigned"),
        pytest.param("/v1/webhooks/zoho/school_a", ZOHO_BODY, {}, id="zoho-no-credentials"),
        pytest.param("/v1/webhooks/zoho/school_a", ZOHO_BODY, {"Authorization": "Bearer nope"}, id="bad-bearer"),
        pytest.param("/v1/webhooks/zoho/school_a", ZOHO_BODY, {"Authorization": f"Basic {SECRETS['school_a']}"}, id="not-bearer"),
        pytest.param(
            "/v1/webhooks/moodle/school_a", GRADED_BODY, {"Authorization": f"Bearer {SECRETS['school_a']}"},
            id="bearer-refused-on-moodle",
        ),
        pytest.param(
            "/v1/webhooks/zoho/nobody", ZOHO_BODY, sign(SECRETS["school_a"], encode(ZOHO_BODY), NOW), id="unknown-tenant",
        ),
        pytest.param(
            "/v1/webhooks/zoho/unset_secret", ZOHO_BODY, sign("", encode(ZOHO_BODY), NOW), id="secret-variable-unset",
        ),
        pytest.param(
            "/v1/webhooks/zoho/unset_secret", ZOHO_BODY, {"Authorization": "Bearer "}, id="empty-bearer-unset-secret",
        ),
        pytest.param(
            "/v1/webhooks/moodle/no_secret", GRADED_BODY, sign("", encode(GRADED_BODY), NOW), id="no-secret-configured",
        ),
    ],
)  # fmt: skip
def test_bad_credentials_are_401_with_one_message_and_nothing_written(
    app: Starlette, root: Path, path: str, body: dict, headers: dict[str, str]
) -> None:
    reply = call(
        app, "POST", path, body=encode(body), headers={"Content-Type": "application/json", **headers}
    )
    assert_rejected(reply, 401, "authentication failed", root)
    assert reply.json() == {"status": "rejected", "reason": "authentication failed"}


@pytest.mark.parametrize(
    ("path", "tenant_header", "auth"),
    [
        ("/v1/sync/students", "nobody", "bearer"),
        ("/v1/sync/students", "school_a", "none"),
        ("/v1/sync/students", None, "bearer"),
        ("/v1/events/moodle/user_created", "school_a", "bearer"),
        ("/v1/events/moodle/user_created", "school_b", "sign"),
    ],
)
def test_seed_routes_authenticate_the_tenant_of_the_header(
    app: Starlette, root: Path, path: str, tenant_header: str | None, auth: str
) -> None:
    body = {"data": [STUDENT]} if path.startswith("/v1/sync") else USER_CREATED_BODY
    assert_rejected(
        post(app, path, body, auth=auth, tenant_header=tenant_header), 401, "authentication failed", root
    )


@pytest.mark.parametrize(
    ("path", "tenant_header"),
    [
        ("/v1/webhooks/zoho/..%2Fx", None),
        ("/v1/webhooks/zoho/..%2F..%2Fetc", None),
        ("/v1/webhooks/zoho/a%2Fb", None),
        ("/v1/webhooks/zoho/%2e%2e", None),
        ("/v1/webhooks/zoho/.", None),
        ("/v1/webhooks/moodle/%2Ftmp%2Fx", None),
        ("/v1/webhooks/zoho/school_a%00", None),
        ("/v1/sync/students", "../x"),
        ("/v1/sync/students", "a/b"),
        ("/v1/sync/students", ".."),
        ("/v1/sync/students", "school_a/../school_b"),
    ],
)
def test_path_looking_tenant_ids_write_nothing_anywhere(
    app: Starlette, tmp_path: Path, path: str, tenant_header: str | None
) -> None:
    body = {"data": [STUDENT]} if tenant_header is not None else ZOHO_BODY
    reply = post(app, path, body, auth="bearer", tenant_header=tenant_header)
    assert reply.status in (401, 404), reply.body
    assert reply.json()["status"] == "rejected"
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [Path("tenants.yaml")]


def test_secrets_signatures_and_bodies_are_not_logged(
    app: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = {**ZOHO_BODY, "secret_marker": "body-marker-7c1e"}
    signed = sign(SECRETS["school_a"], encode(body), NOW)
    assert post(app, "/v1/webhooks/zoho/school_a", body).status == 202
    assert post(app, "/v1/webhooks/zoho/school_a", body, secret="forged-secret").status == 401
    assert post(app, "/v1/webhooks/zoho/school_a", {**body, "event_id": "z2"}, auth="bearer").status == 202
    assert post(app, "/v1/webhooks/zoho/school_a", {**body, "module": "Leads"}, auth="bearer").status == 422
    text = caplog.text
    assert "accepted zoho.notification event zevt-1 for tenant school_a" in text
    for leaked in (SECRETS["school_a"], "forged-secret", signed["X-Sync-Signature"][7:], "body-marker-7c1e"):
        assert leaked not in text


# --- limits and malformed requests ----------------------------------------------------------------


def test_a_declared_oversized_body_is_refused_unread(app: Starlette, root: Path) -> None:
    reply = call(
        app,
        "POST",
        "/v1/webhooks/zoho/school_a",
        body=b"x" * (MAX_BODY + 1),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['school_a']}"},
    )
    assert_rejected(reply, 413, f"larger than {MAX_BODY} bytes", root)
    assert reply.chunks_read == 0


def test_a_chunked_body_growing_past_the_limit_is_cut_off(app: Starlette, root: Path) -> None:
    reply = call(
        app,
        "POST",
        "/v1/webhooks/zoho/school_a",
        chunks=[b"{" + b" " * 1023] * 20,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['school_a']}"},
    )
    assert_rejected(reply, 413, f"larger than {MAX_BODY} bytes", root)
    assert reply.chunks_read == MAX_BODY // 1024 + 1


def test_a_body_exactly_at_the_limit_is_accepted(app: Starlette, root: Path) -> None:
    raw = encode(ZOHO_BODY)
    raw = raw + b" " * (MAX_BODY - len(raw))
    reply = post(app, "/v1/webhooks/zoho/school_a", raw)
    assert reply.status == 202, reply.body


def test_a_client_that_stops_sending_is_cut_off(tenants_file: Path, root: Path) -> None:
    app = create_app(tenants_file=tenants_file, drop_root=root, clock=lambda: NOW, body_timeout=0.1)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['school_a']}"}
    started = time.monotonic()
    reply = call(
        app, "POST", "/v1/webhooks/zoho/school_a", chunks=[b'{"module"'], headers=headers, stall=True
    )
    assert_rejected(reply, 408, "not received within", root)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("path", "body", "ctype", "status", "reason"),
    [
        pytest.param("/v1/webhooks/zoho/school_a", b"module=BTEC", "text/plain", 415, "unsupported content type 'text/plain'", id="zoho-text"),
        pytest.param("/v1/webhooks/zoho/school_a", b"--x\r\n", "multipart/form-data; boundary=x", 415, "application/x-www-form-urlencoded", id="zoho-multipart"),
        pytest.param("/v1/webhooks/zoho/school_a", ZOHO_BODY, "", 415, "unsupported content type 'none'", id="no-type"),
        pytest.param("/v1/webhooks/moodle/school_a", b"objectid=1", "application/x-www-form-urlencoded", 415, "send application/json", id="moodle-form"),
        pytest.param("/v1/webhooks/zoho/school_a", b'{"module": ', "application/json", 400, "not valid JSON", id="bad-json"),
        pytest.param("/v1/webhooks/zoho/school_a", b'{"module": NaN}', "application/json", 400, "not valid JSON", id="json-nan"),
        pytest.param("/v1/webhooks/zoho/school_a", b'{"m": "\xff"}', "application/json", 400, "not valid JSON", id="json-not-utf8"),
        pytest.param("/v1/webhooks/zoho/school_a", b"[" * 100_000, "application/json", 413, "larger than", id="deep-json-too-big"),
        pytest.param("/v1/webhooks/zoho/school_a", b"[" * 4000, "application/json", 400, "not valid JSON", id="deep-json"),
        pytest.param("/v1/webhooks/zoho/school_a", b"module=a&module=b", "application/x-www-form-urlencoded", 400, "given twice", id="form-twice"),
        pytest.param("/v1/webhooks/zoho/school_a", b"module=%ff", "application/x-www-form-urlencoded", 400, "not valid form data", id="form-not-utf8"),
        pytest.param("/v1/webhooks/zoho/school_a", b"[1]", "application/json", 422, "expected a JSON object", id="json-array"),
        pytest.param("/v1/webhooks/zoho/school_a", {**ZOHO_BODY, "module": "Leads"}, "application/json", 422, "unknown module 'Leads': expected one of", id="unknown-module"),
        pytest.param("/v1/webhooks/zoho/school_a", {**ZOHO_BODY, "event_type": "merged"}, "application/json", 422, "event_type must be", id="event-type"),
        pytest.param("/v1/webhooks/zoho/school_a", {k: v for k, v in ZOHO_BODY.items() if k != "record_id"}, "application/json", 422, "record_id", id="no-record-id"),
        pytest.param("/v1/webhooks/zoho/school_a", {**ZOHO_BODY, "record_id": "1 OR 1=1"}, "application/json", 422, "not a Zoho record id", id="bad-record-id"),
        pytest.param("/v1/webhooks/zoho/school_a", {**ZOHO_BODY, "event_id": "../../x"}, "application/json", 422, "invalid event id", id="bad-event-id"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "objectid": "abc"}, "application/json", 422, "objectid must be an integer", id="objectid"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "objectid": True}, "application/json", 422, "objectid must be an integer", id="objectid-bool"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "timecreated": None}, "application/json", 422, "timecreated is required", id="no-time"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "other": {"itemid": 341, "finalgrade": "NaN"}}, "application/json", 422, "finalgrade must be a number", id="grade-nan"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "other": None}, "application/json", 422, "other.itemid is required", id="graded-no-other"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "other": {"itemid": 9}}, "application/json", 422, "does not match other.itemid", id="item-mismatch"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "eventname": "\\core\\event\\course_viewed"}, "application/json", 422, "unsupported eventname", id="other-event"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "grade_item": {"id": 341}}, "application/json", 422, "grade_item.itemtype is required", id="grade-item"),
    ],
)  # fmt: skip
def test_malformed_requests_are_refused_with_a_reason(
    app: Starlette, root: Path, path: str, body: dict | bytes, ctype: str, status: int, reason: str
) -> None:
    raw = encode(body)
    headers = {**sign(SECRETS["school_a"], raw, NOW), **({"Content-Type": ctype} if ctype else {})}
    assert_rejected(call(app, "POST", path, body=raw, headers=headers), status, reason, root)


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/sync/students", {"data": []}, "'data' must be a non-empty list"),
        ("/v1/sync/students", {"records": [STUDENT]}, "'data' must be a non-empty list"),
        ("/v1/sync/students", {"data": [STUDENT, "x"]}, "data[1] is not an object"),
        ("/v1/sync/students", {"data": [{"Name": "no id"}]}, "data[0] has no id"),
        ("/v1/events/moodle/user_created", {**GRADED_BODY}, "does not match the route"),
    ],
)
def test_malformed_seed_requests_are_422(
    app: Starlette, root: Path, path: str, body: dict, reason: str
) -> None:
    assert_rejected(post(app, path, body, tenant_header="school_a"), 422, reason, root)


def test_a_bad_content_length_is_400(app: Starlette, root: Path) -> None:
    reply = call(app, "POST", "/v1/webhooks/zoho/school_a", body=b"{}", headers={"Content-Length": "-1"})
    assert_rejected(reply, 400, "invalid Content-Length", root)


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("POST", "/v1/webhooks/canvas/school_a", 404, "unknown route"),
        ("POST", "/v1/webhooks/zoho", 404, "unknown route"),
        ("POST", "/v1/sync/leads", 404, "unknown entity 'leads'"),
        ("POST", "/v1/events/moodle/course_viewed", 404, "unknown event 'course_viewed'"),
        ("GET", "/v1/webhooks/zoho/school_a", 405, "method not allowed"),
        ("POST", "/v1/health", 405, "method not allowed"),
    ],
)
def test_unknown_routes_and_methods_answer_json(
    app: Starlette, root: Path, method: str, path: str, status: int, reason: str
) -> None:
    assert_rejected(call(app, method, path), status, reason, root)


def test_health(app: Starlette) -> None:
    reply = call(app, "GET", "/v1/health")
    assert (reply.status, reply.json()) == (200, {"status": "ok"})


def test_a_failing_disk_is_503_so_the_sender_retries(app: Starlette, root: Path) -> None:
    root.write_text("a file where the drop folder should be")
    reply = post(app, "/v1/webhooks/zoho/school_a", ZOHO_BODY)
    assert (reply.status, reply.json()["reason"]) == (503, "could not store the event, retry later")


# --- duplicates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "first", "second"),
    [
        pytest.param("/v1/webhooks/zoho/school_a", ZOHO_BODY, {**ZOHO_BODY, "record_id": "99"}, id="zoho-same-event-id"),
        pytest.param(
            "/v1/webhooks/zoho/school_a",
            {k: v for k, v in ZOHO_BODY.items() if k != "event_id"},
            {k: v for k, v in ZOHO_BODY.items() if k != "event_id"},
            id="zoho-same-content-no-id",
        ),
        pytest.param("/v1/webhooks/moodle/school_a", GRADED_BODY, GRADED_BODY, id="moodle-same-signed-delivery"),
        pytest.param("/v1/webhooks/moodle/school_a", {**GRADED_BODY, "event_id": "m-1"}, {**ENROLMENT_BODY, "event_id": "m-1"}, id="moodle-same-event-id"),
    ],
)  # fmt: skip
def test_a_redelivery_is_accepted_but_not_written_twice(
    app: Starlette, root: Path, path: str, first: dict, second: dict
) -> None:
    one = post(app, path, first)
    two = post(app, path, second)
    assert (one.status, two.status) == (202, 202)
    assert (one.json()["duplicate"], two.json()["duplicate"]) == (False, True)
    assert one.json()["event_id"] == two.json()["event_id"]
    source = path.split("/")[3]
    assert len(pending_files(root, source)) == 1


@pytest.mark.parametrize("auth", ["bearer", "sign"])
def test_two_edits_of_one_record_are_two_events_whatever_their_bodies(
    tenants_file: Path, root: Path, auth: str
) -> None:
    """Zoho's documented body carries no time: the second edit of a record looks exactly like the
    first. Over bearer auth it is always a new event; signed, a new signing time makes it one."""
    now = [NOW]
    app = create_app(tenants_file=tenants_file, drop_root=root, clock=lambda: now[0])
    body = {k: v for k, v in ZOHO_BODY.items() if k != "event_id"}
    replies = []
    for at in (NOW, NOW + 40):
        now[0] = at
        raw = encode(body)
        headers = {"Content-Type": "application/json", **auth_headers(raw, auth, SECRETS["school_a"], at)}
        replies.append(call(app, "POST", "/v1/webhooks/zoho/school_a", body=raw, headers=headers))
    assert [r.json()["duplicate"] for r in replies] == [False, False]
    assert len({r.json()["event_id"] for r in replies}) == 2
    assert len(pending_files(root, "zoho")) == 2


def test_equal_moodle_bodies_of_two_deliveries_are_two_events(app: Starlette, root: Path) -> None:
    """Two signed deliveries whose bytes differ (here only in how an id is spelled) are two
    deliveries; without an event id the receiver cannot know they are one Moodle event."""
    one = post(app, "/v1/webhooks/moodle/school_a", {**GRADED_BODY, "objectid": 1187})
    two = post(app, "/v1/webhooks/moodle/school_a", GRADED_BODY)
    assert (one.json()["duplicate"], two.json()["duplicate"]) == (False, False)
    assert len(pending_files(root, "moodle")) == 2


def test_the_same_event_for_two_tenants_is_written_for_each(app: Starlette, root: Path) -> None:
    assert post(app, "/v1/webhooks/zoho/school_a", ZOHO_BODY).json()["duplicate"] is False
    assert (
        post(app, "/v1/webhooks/zoho/school_b", ZOHO_BODY, secret=SECRETS["school_b"]).json()["duplicate"]
        is False
    )
    assert {p.parent.parent.name for p in pending_files(root, "zoho")} == {"school_a", "school_b"}


def test_a_tenant_added_to_the_file_is_served_without_a_restart(
    app: Starlette, root: Path, tenants_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert post(app, "/v1/webhooks/zoho/school_c", ZOHO_BODY, secret="c-secret").status == 401
    document = yaml.safe_load(tenants_file.read_text())
    document["tenants"].append(
        {"id": "school_c", "zoho": ZOHO_CONFIG, "webhook_secret_env": "SCHOOL_C_WEBHOOK"}
    )
    tenants_file.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("SCHOOL_C_WEBHOOK", "c-secret")
    assert post(app, "/v1/webhooks/zoho/school_c", ZOHO_BODY, secret="c-secret").status == 202
    tenants_file.write_text("tenants: [")  # a broken edit keeps the last good tenants
    assert (
        post(app, "/v1/webhooks/zoho/school_c", {**ZOHO_BODY, "event_id": "z2"}, secret="c-secret").status
        == 202
    )


# --- over real HTTP -------------------------------------------------------------------------------


@pytest.fixture
def server(app: Starlette) -> Iterator[str]:
    """The app on uvicorn, on a free loopback port, in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=5)
    sock.close()


def test_over_real_http(server: str, root: Path) -> None:
    with requests.Session() as http:
        assert http.get(f"{server}/v1/health", timeout=5).json() == {"status": "ok"}

        body = encode({**GRADED_BODY, "event_id": "m-http"})
        headers = {"Content-Type": "application/json", **sign(SECRETS["school_a"], body, NOW)}
        reply = http.post(f"{server}/v1/webhooks/moodle/school_a", data=body, headers=headers, timeout=5)
        assert (reply.status_code, reply.json()) == (
            202,
            {"status": "accepted", "event_id": "m-http", "duplicate": False},
        )
        assert read_event(pending_files(root, "moodle")[0]).payload == GRADED_PAYLOAD

        form = urlencode(
            {"module": "BTEC_Classes", "event_type": "created", "record_id": "42", "timestamp": "t"}
        )
        bearer = {"Authorization": f"Bearer {SECRETS['school_a']}"}
        reply = http.post(
            f"{server}/v1/webhooks/zoho/school_a",
            data=form,
            headers={**bearer, "Content-Type": "application/x-www-form-urlencoded"},
            timeout=5,
        )
        assert reply.status_code == 202, reply.text

        too_big = http.post(
            f"{server}/v1/webhooks/zoho/school_a", data=b"{" + b" " * MAX_BODY, headers=bearer, timeout=5
        )
        assert too_big.status_code == 413

    # Chunked (a generator body has no Content-Length); a fresh connection, as the server closes this one.
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b" " * 1024

    reply = requests.post(
        f"{server}/v1/webhooks/zoho/school_a",
        data=chunks(),
        headers={**bearer, "Content-Type": "application/json"},
        timeout=5,
    )
    assert (reply.status_code, reply.json()["status"]) == (413, "rejected")
    assert len(pending_files(root, "zoho")) == 1


# --- one secret per source and broken schools -----------------------------------------------------


@pytest.fixture
def split_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Starlette:
    """school_s with a Zoho bearer secret and a different Moodle HMAC key; school_x broken."""
    monkeypatch.setenv("S_ZOHO_HOOK", "zoho-bearer-only")
    monkeypatch.setenv("S_MOODLE_HOOK", "moodle-hmac-only")
    tenants = [
        {"id": "school_s", "zoho": {**ZOHO_CONFIG, "webhook_secret_env": "S_ZOHO_HOOK"}},
        {
            "id": "school_x",
            "zoho": {**ZOHO_CONFIG, "data_centre": "mars"},
            "webhook_secret_env": "S_ZOHO_HOOK",
        },
    ]
    tenants[0]["moodle"] = {"base_url": "http://m", "token_env": "T", "webhook_secret_env": "S_MOODLE_HOOK"}
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": tenants}))
    return create_app(tenants_file=path, drop_root=tmp_path / "drop", clock=lambda: NOW)


def test_each_source_has_its_own_secret_and_neither_opens_the_other(split_app: Starlette, tmp_path: Path):
    zoho, moodle = "/v1/webhooks/zoho/school_s", "/v1/webhooks/moodle/school_s"
    assert post(split_app, zoho, ZOHO_BODY, auth="bearer", secret="zoho-bearer-only").status == 202
    assert post(split_app, moodle, GRADED_BODY, secret="moodle-hmac-only").status == 202
    # The bearer token Zoho sends in clear cannot sign a Moodle event, and the Moodle key opens no Zoho route.
    assert (
        post(split_app, moodle, {**GRADED_BODY, "event_id": "m-2"}, secret="zoho-bearer-only").status == 401
    )
    assert (
        post(
            split_app, zoho, {**ZOHO_BODY, "event_id": "z-2"}, auth="bearer", secret="moodle-hmac-only"
        ).status
        == 401
    )


def test_a_broken_school_is_refused_and_the_receiver_serves_the_others(
    split_app: Starlette, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level("WARNING", logger="sync_pipelines.webhooks.app"):
        refused = post(
            split_app, "/v1/webhooks/zoho/school_x", ZOHO_BODY, auth="bearer", secret="zoho-bearer-only"
        )
    assert (refused.status, refused.json()["reason"]) == (401, AUTH_FAILED)
    assert "unknown data_centre 'mars'" in caplog.text  # the log says why, the answer does not
    assert (
        post(
            split_app, "/v1/webhooks/zoho/school_s", ZOHO_BODY, auth="bearer", secret="zoho-bearer-only"
        ).status
        == 202
    )
