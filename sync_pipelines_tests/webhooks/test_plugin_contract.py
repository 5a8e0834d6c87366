"""The Moodle plugin's deliveries, as its PHPUnit suite recorded them, are accepted by the receiver.

``moodle_plugin/local_zohosync/tests/fixtures/signed_deliveries.json`` holds requests the plugin's
``send_event`` task made (captured by the PHPUnit suite from the plugin's own code, committed so that
this test runs where PHP is not installed). Here each one must pass the receiver's signature check,
normalise to the event the pipeline expects, and be accepted by the app, a retried delivery as a
redelivery. The PHPUnit suite in turn checks that the plugin still sends exactly what the file
records, and reproduces the receiver's own fixture (``fixtures/moodle_user_graded.json``): neither
side can change the contract without the other's tests failing.
"""

import importlib.util
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
import yaml
from starlette.applications import Starlette

from sync_pipelines.events import MOODLE_EVENTS
from sync_pipelines.webhooks.app import create_app, moodle_event
from sync_pipelines.webhooks.drop import pending_files, read_event
from sync_pipelines.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, sign, verify

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "moodle_plugin" / "local_zohosync"
PLUGIN_FIXTURE = PLUGIN / "tests" / "fixtures" / "signed_deliveries.json"
SHARED_FIXTURE = Path(__file__).parent / "fixtures" / "moodle_user_graded.json"
ZOHO_CONFIG = {
    "accounts_url": "http://127.0.0.1:9",
    "client_id_env": "X_ID",
    "client_secret_env": "X_SECRET",
    "refresh_token_env": "X_REFRESH",
}
SECRET_ENV = "PLUGIN_CONTRACT_WEBHOOK_SECRET"

#: The normalised payload each recorded delivery must become (event ids and times as the PHP test set them).
EXPECTED: dict[str, dict[str, Any]] = {
    "user_created": {
        "eventname": "\\core\\event\\user_created",
        "objectid": 57,
        "relateduserid": 57,
        "courseid": 0,
        "userid": 2,
        "contextinstanceid": 57,
        "other": None,
        "timecreated": 1769336000,
        "grade_item": None,
    },
    "user_updated": {
        "eventname": "\\core\\event\\user_updated",
        "objectid": 57,
        "relateduserid": 57,
        "courseid": 0,
        "userid": 2,
        "contextinstanceid": 57,
        "other": None,
        "timecreated": 1769336100,
        "grade_item": None,
    },
    "user_enrolment_created": {
        "eventname": "\\core\\event\\user_enrolment_created",
        "objectid": 901,
        "relateduserid": 57,
        "courseid": 12,
        "userid": 2,
        "contextinstanceid": 12,
        "other": {"enrol": "manual"},
        "timecreated": 1769336200,
        "grade_item": None,
    },
    "user_enrolment_deleted": {
        "eventname": "\\core\\event\\user_enrolment_deleted",
        "objectid": 901,
        "relateduserid": 57,
        "courseid": 12,
        "userid": 2,
        "contextinstanceid": 12,
        "other": {
            "userenrolment": {
                "id": "901",
                "status": "0",
                "enrolid": "31",
                "userid": "57",
                "timestart": "1769300000",
                "timeend": "0",
                "modifierid": "2",
                "timecreated": "1769336200",
                "timemodified": "1769336200",
                "courseid": "12",
                "enrol": "manual",
                "lastenrol": True,
            },
            "enrol": "manual",
        },
        "timecreated": 1769336300,
        "grade_item": None,
    },
    "user_enrolment_updated": {
        "eventname": "\\core\\event\\user_enrolment_updated",
        "objectid": 901,
        "relateduserid": 57,
        "courseid": 12,
        "userid": 2,
        "contextinstanceid": 12,
        "other": {"enrol": "manual"},
        "timecreated": 1769336500,
        "grade_item": None,
    },
    "user_graded": {
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
    },
    "user_graded_course_total": {
        "eventname": "\\core\\event\\user_graded",
        "objectid": 1188,
        "relateduserid": 57,
        "courseid": 12,
        "userid": 2,
        "contextinstanceid": 12,
        "other": {"itemid": 340, "overridden": False, "finalgrade": 87.5},
        "timecreated": 1769337000,
        "grade_item": {
            "id": 340,
            "itemtype": "course",
            "itemmodule": None,
            "grademax": 100.0,
            "is_course_total": True,
        },
    },
    "course_updated": {
        "eventname": "\\core\\event\\course_updated",
        "objectid": 12,
        "relateduserid": None,
        "courseid": 12,
        "userid": 2,
        "contextinstanceid": 12,
        "other": {
            "shortname": "BTEC-IT-L3-26A",
            "fullname": "BTEC IT Level 3, group A (renamed by hand)",
            "updatedfields": {"fullname": "BTEC IT Level 3, group A (renamed by hand)", "visible": 0},
        },
        "timecreated": 1769336600,
        "grade_item": None,
    },
    "user_enrolment_created_retried": {
        "eventname": "\\core\\event\\user_enrolment_created",
        "objectid": 902,
        "relateduserid": 58,
        "courseid": 12,
        "userid": 2,
        "contextinstanceid": 12,
        "other": {"enrol": "manual"},
        "timecreated": 1769336400,
        "grade_item": None,
    },
}
# The plugin's tests run its observer outside a web-service request and outside a CLI script.
for _payload in EXPECTED.values():
    _payload["origin"] = "web"


def load(path: Path) -> dict[str, Any]:
    """A JSON fixture."""
    return json.loads(path.read_text("utf-8"))


def deliveries() -> list[dict[str, Any]]:
    """The plugin's recorded deliveries."""
    return load(PLUGIN_FIXTURE)["deliveries"]


def delivery_id(delivery: dict[str, Any]) -> str:
    """A pytest id: the scenario and the attempt."""
    return f"{delivery['name']}-{delivery['attempt']}"


class Clock:
    """The receiver's clock, set by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def post(app: Starlette, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``path`` through the ASGI app, as a server would; the status and JSON answer."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("sync.example.org", 443),
    }
    messages: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def run() -> None:
        await app(scope, receive, send)

    anyio.run(run)
    start = next(m for m in messages if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], json.loads(answer)


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Starlette, Clock, Path]:
    """The receiver serving the fixture's tenant with the fixture's secret: app, its clock, drop root."""
    fixture = load(PLUGIN_FIXTURE)
    monkeypatch.setenv(SECRET_ENV, fixture["secret"])
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        yaml.safe_dump(
            {"tenants": [{"id": fixture["tenant"], "zoho": ZOHO_CONFIG, "webhook_secret_env": SECRET_ENV}]}
        )
    )
    clock = Clock(0.0)
    root = tmp_path / "drop"
    return create_app(tenants_file=tenants, drop_root=root, clock=clock), clock, root


def test_the_fixture_covers_every_forwarded_event_and_a_retry() -> None:
    fixture = load(PLUGIN_FIXTURE)
    assert [(d["name"], d["attempt"], d["answered"]) for d in fixture["deliveries"]] == [
        ("user_created", 1, 202),
        ("user_updated", 1, 202),
        ("user_enrolment_created", 1, 202),
        ("user_enrolment_deleted", 1, 202),
        ("user_enrolment_updated", 1, 202),
        ("user_graded", 1, 202),
        ("user_graded_course_total", 1, 202),
        ("course_updated", 1, 202),
        ("user_enrolment_created_retried", 1, 503),
        ("user_enrolment_created_retried", 2, 202),
    ]
    assert set(EXPECTED) == {d["name"] for d in fixture["deliveries"]}
    # Every event the plugin observes (db/events.php) is one the pipeline takes, and is recorded.
    observed = re.findall(r"'eventname' => '(.+?)'", (PLUGIN / "db" / "events.php").read_text("utf-8"))
    recorded = {json.loads(d["body"])["eventname"] for d in fixture["deliveries"]}
    assert sorted(observed) == sorted(MOODLE_EVENTS) == sorted(recorded)


@pytest.mark.parametrize("delivery", deliveries(), ids=delivery_id)
def test_each_delivery_is_signed_as_the_receiver_checks(delivery: dict[str, Any]) -> None:
    fixture = load(PLUGIN_FIXTURE)
    body = delivery["body"].encode("utf-8")
    headers = delivery["headers"]
    assert set(headers) == {"Content-Type", TIMESTAMP_HEADER, SIGNATURE_HEADER}
    assert headers["Content-Type"] == "application/json"
    assert headers[TIMESTAMP_HEADER] == str(delivery["timestamp"])
    assert sign(fixture["secret"], body, delivery["timestamp"]) == {
        TIMESTAMP_HEADER: headers[TIMESTAMP_HEADER],
        SIGNATURE_HEADER: headers[SIGNATURE_HEADER],
    }
    verified = verify(
        fixture["secret"],
        body,
        headers[TIMESTAMP_HEADER],
        headers[SIGNATURE_HEADER],
        now=delivery["timestamp"] + 299,
    )
    assert verified == delivery["timestamp"]
    assert urlsplit(delivery["url"]).path == delivery["path"] == f"/v1/webhooks/moodle/{fixture['tenant']}"


@pytest.mark.parametrize(
    ("edit_body", "secret_suffix", "delay", "problem"),
    [
        pytest.param(True, "", 0, "signature", id="body-edited"),
        pytest.param(False, "x", 0, "signature", id="other-secret"),
        pytest.param(False, "", 301, "300 s", id="replayed-too-late"),
    ],
)
def test_a_tampered_or_stale_delivery_is_refused(
    edit_body: bool, secret_suffix: str, delay: int, problem: str
) -> None:
    fixture = load(PLUGIN_FIXTURE)
    delivery = deliveries()[0]
    body = delivery["body"].replace('"objectid":57', '"objectid":58') if edit_body else delivery["body"]
    assert (body != delivery["body"]) == edit_body
    headers = delivery["headers"]
    with pytest.raises(SignatureError, match=problem):
        verify(
            fixture["secret"] + secret_suffix,
            body.encode("utf-8"),
            headers[TIMESTAMP_HEADER],
            headers[SIGNATURE_HEADER],
            now=delivery["timestamp"] + delay,
        )


@pytest.mark.parametrize("delivery", deliveries(), ids=delivery_id)
def test_each_body_normalises_to_the_event_the_pipeline_expects(delivery: dict[str, Any]) -> None:
    fields = json.loads(delivery["body"])
    event = moodle_event(fields)
    assert event.kind == "moodle.event"
    assert event.payload == EXPECTED[delivery["name"]]
    assert event.event_id == fields["event_id"]


def test_the_receiver_accepts_every_delivery_and_takes_the_retry_for_a_redelivery(
    receiver: tuple[Starlette, Clock, Path],
) -> None:
    app, clock, root = receiver
    answers = []
    for delivery in deliveries():
        clock.now = delivery["timestamp"] + 30  # cron sends within seconds; the window is ±300 s
        status, answer = post(app, delivery["path"], delivery["body"].encode("utf-8"), delivery["headers"])
        assert status == 202, answer
        answers.append((delivery["name"], answer["event_id"], answer["duplicate"]))
    ids = {d["name"]: json.loads(d["body"])["event_id"] for d in deliveries()}
    assert answers == [
        (name, ids[name], attempt == 2) for name, attempt in ((d["name"], d["attempt"]) for d in deliveries())
    ]

    written = {read_event(path).event_id: read_event(path) for path in pending_files(root, "moodle")}
    assert len(written) == len(EXPECTED)
    for name, expected in EXPECTED.items():
        event = written[ids[name]]
        assert (event.tenant_id, event.kind, event.payload) == ("demo_school", "moodle.event", expected)


def test_a_delivery_signed_with_another_tenants_secret_is_refused(
    receiver: tuple[Starlette, Clock, Path],
) -> None:
    app, clock, root = receiver
    delivery = deliveries()[0]
    body = delivery["body"].encode("utf-8")
    clock.now = delivery["timestamp"]
    status, answer = post(
        app,
        delivery["path"],
        body,
        {**delivery["headers"], **sign("another-secret", body, delivery["timestamp"])},
    )
    assert (status, answer["reason"]) == (401, "authentication failed")
    assert pending_files(root, "moodle") == []


def test_the_plugin_sends_the_receivers_recorded_delivery() -> None:
    # The plugin's own recording of the graded assignment is byte for byte the receiver's fixture.
    shared = load(SHARED_FIXTURE)
    [graded] = [d for d in deliveries() if d["name"] == "user_graded"]
    assert graded["path"] == shared["path"]
    assert graded["timestamp"] == shared["timestamp"]
    assert graded["body"] == shared["body"]
    assert graded["headers"] == shared["headers"]
    assert load(PLUGIN_FIXTURE)["secret"] == shared["secret"]
    assert EXPECTED["user_graded"] == shared["expected"]["payload"]


def test_the_installable_zip_has_the_plugin_under_zohosync_and_no_tests(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("build_zip", REPO / "moodle_plugin" / "build_zip.py")
    assert spec is not None and spec.loader is not None
    build_zip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_zip)

    output = tmp_path / "local_zohosync.zip"
    names = build_zip.build(output)
    files = sorted(n for n in names if not n.endswith("/"))
    assert all(n.startswith("zohosync/") for n in names)
    assert not any("/tests/" in n or n.startswith("zohosync/tests") for n in names)
    expected = sorted(
        "zohosync/" + p.relative_to(PLUGIN).as_posix()
        for p in PLUGIN.rglob("*")
        if p.is_file() and p.relative_to(PLUGIN).parts[0] != "tests"
    )
    assert files == expected
    for required in (
        "version.php",
        "settings.php",
        "db/events.php",
        "lang/en/local_zohosync.php",
        "README.md",
    ):
        assert f"zohosync/{required}" in files
    first = output.read_bytes()
    build_zip.build(output)
    assert output.read_bytes() == first, "the same sources make the same zip"
