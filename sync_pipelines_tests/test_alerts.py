"""Alerts, against the real thing: runs that fail in a Dagster instance, the run-failure and
dead-letter sensors ticked through Dagster, a real HTTP server on 127.0.0.1 standing in for a
Slack incoming webhook, and a real SMTP server (aiosmtpd) that requires a login."""

import email
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from dagster._core.storage.tags import RUN_KEY_TAG

from sync_pipelines import alerts
from sync_pipelines.alerts import (
    Alert,
    AlertStore,
    dead_letter_alerts,
    default_alerts,
    dispatch,
    flush_outbox,
    run_failure_alerts,
)
from sync_pipelines.sensors import _dead_letter_events, evaluate, instance_lookup
from sync_pipelines.tenants import TenantConfigError, read_tenants, tenant_partitions
from sync_pipelines.webhooks.drop import write_event
from sync_pipelines.zoho.modules import module

#: The SMTP stand-in requires a login on loopback without TLS, which aiosmtpd (rightly) warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

#: The secret part of a Slack webhook URL is its path; the SMTP password is the other secret.
SLACK_SECRET = "T0SCHOOLA/B0ALERTS/hunter2SlackSecretPath"
SMTP_USER = "alerts-school-a"
SMTP_PASSWORD = "smtp-Pa55word-never-logged"
ZOHO = {
    "accounts_url": "http://127.0.0.1:9",
    "client_id_env": "A",
    "client_secret_env": "B",
    "refresh_token_env": "C",
}
UI = "http://dagster.test:3000"
DEFAULT_ENVS = [
    alerts.DEFAULT_SLACK_ENV,
    alerts.DEFAULT_EMAIL_TO_ENV,
    alerts.DEFAULT_EMAIL_FROM_ENV,
    alerts.DEFAULT_SMTP_HOST_ENV,
    alerts.DEFAULT_SMTP_PORT_ENV,
    alerts.DEFAULT_SMTP_USERNAME_ENV,
    alerts.DEFAULT_SMTP_PASSWORD_ENV,
    alerts.DEFAULT_SMTP_STARTTLS_ENV,
    alerts.DEFAULT_SMTP_SSL_ENV,
    alerts.REPEAT_MINUTES_ENV,
    alerts.RETRY_HOURS_ENV,
]


# --- stand-ins ------------------------------------------------------------------------------------


class Hook:
    """A real HTTP server on 127.0.0.1 answering like a Slack incoming webhook: it records every
    POST and answers 200 ``ok``, or the statuses queued in :attr:`statuses` first."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.statuses: list[int] = []
        self.always: int | None = None
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.posts.append(
                    {"path": self.path, "type": self.headers.get("Content-Type"), "json": json.loads(body)}
                )
                status = hook.statuses.pop(0) if hook.statuses else (hook.always or 200)
                reply = b"ok" if status == 200 else b"no_service"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str = "/services/" + SLACK_SECRET) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    @property
    def texts(self) -> list[str]:
        return [p["json"]["text"] for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """The aiosmtpd handler: every message accepted, parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.port = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"


def _login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.port = _free_port()
    # A login is required (auth_required): the message arrives only if the password from the
    # environment was sent. No TLS on loopback, so the test server allows AUTH without it.
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        authenticator=_login,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield box
    controller.stop()


@dataclass
class World:
    hooks: dict[str, Hook]
    mailbox: Mailbox
    tmp: Path

    @property
    def drop(self) -> Path:
        return self.tmp / "drop"

    @property
    def alert_dir(self) -> Path:
        return self.tmp / "alerts"

    def posts(self) -> dict[str, int]:
        return {name: len(h.posts) for name, h in self.hooks.items()}


def tenants_doc(mail_port: int) -> dict:
    return {
        "tenants": [
            {
                "id": "school_a",
                "name": "School A",
                "zoho": ZOHO,
                "alerts": {
                    "slack_webhook_env": "A_SLACK_URL",
                    "email": {
                        "to": ["it@school-a.example"],
                        "from": "sync@school-a.example",
                        "smtp_host": "127.0.0.1",
                        "smtp_port": mail_port,
                        "smtp_username_env": "A_SMTP_USER",
                        "smtp_password_env": "A_SMTP_PASSWORD",
                        "starttls": False,
                    },
                },
            },
            {"id": "school_b", "zoho": ZOHO, "alerts": {"slack_webhook_env": "B_SLACK_URL"}},
            {"id": "school_c", "zoho": ZOHO},
        ]
    }


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailbox: Mailbox) -> Iterator[World]:
    hooks = {name: Hook() for name in ("a", "b", "default")}
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump(tenants_doc(mailbox.port)))
    (tmp_path / "drop").mkdir()
    for name in DEFAULT_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(tenants))
    monkeypatch.setenv("SYNC_ALERT_DIR", str(tmp_path / "alerts"))
    monkeypatch.setenv("SYNC_DROP_DIR", str(tmp_path / "drop"))
    monkeypatch.setenv("A_SLACK_URL", hooks["a"].url())
    monkeypatch.setenv("B_SLACK_URL", hooks["b"].url("/services/TB/BB/school-b-path"))
    monkeypatch.setenv("A_SMTP_USER", SMTP_USER)
    monkeypatch.setenv("A_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", UI + "/")
    monkeypatch.setattr(alerts, "BACKOFF_SECONDS", 0.01)
    alerts.reset_circuits()
    yield World(hooks, mailbox, tmp_path)
    for hook in hooks.values():
        hook.close()
    alerts.reset_circuits()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real instance with in-memory storage (runs, event log, sensor cursors); a tenth of the time
    of a SQLite one on this machine."""
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions(tenant_partitions.name, ["school_a", "school_b", "school_c"])
    yield inst
    inst.dispose()


# --- a job that fails for one school --------------------------------------------------------------


class SyncConfig(dg.Config):
    fail: bool = False


@dg.asset(key=["zoho", "students"], partitions_def=tenant_partitions)
def students(context: dg.AssetExecutionContext, config: SyncConfig) -> None:
    if config.fail:
        raise RuntimeError(
            f"tenant {context.partition_key}: Zoho answered INVALID_TOKEN <!channel>\n  second line of the trace"
        )


def sync(instance: dg.DagsterInstance, tenant: str, *, fail: bool, tags: dict | None = None):
    return dg.materialize(
        [students],
        partition_key=tenant,
        instance=instance,
        run_config={"ops": {"zoho__students": {"config": {"fail": fail}}}},
        tags=tags,
        raise_on_error=False,
    )


class Ticker:
    """A sensor ticked through Dagster, the cursor carried from tick to tick as the daemon does."""

    def __init__(self, sensor: dg.SensorDefinition, instance: dg.DagsterInstance) -> None:
        self.sensor, self.instance, self.cursor = sensor, instance, None
        self.tick()  # the first tick only sets the cursor

    def tick(self):
        data = self.sensor.evaluate_tick(dg.build_sensor_context(instance=self.instance, cursor=self.cursor))
        assert [r.error for r in data.dagster_run_reactions if r.error] == []
        self.cursor = data.cursor
        return data


# --- run failures ---------------------------------------------------------------------------------


def test_a_failed_run_is_alerted_once_to_its_schools_webhook_and_e_mail(
    world: World, instance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(alerts.REPEAT_MINUTES_ENV, "0")  # once by the cursor and the sent marker alone
    ticker = Ticker(run_failure_alerts, instance)
    failed = sync(instance, "school_a", fail=True)
    sync(instance, "school_b", fail=False)
    assert not failed.success

    ticker.tick()
    assert world.posts() == {"a": 1, "b": 0, "default": 0}
    post = world.hooks["a"].posts[0]
    assert post["path"] == "/services/" + SLACK_SECRET and post["type"] == "application/json"
    text = post["json"]["text"]
    run_id = failed.dagster_run.run_id
    assert text.splitlines()[0].startswith("*Sync failed for School A (school_a)")
    assert "Failed step zoho__students: RuntimeError: tenant school_a: Zoho answered INVALID_TOKEN" in text
    assert f"Run: {UI}/runs/{run_id}" in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text  # no @channel from an error message
    assert "second line of the trace" not in text  # the error's first line only

    assert len(world.mailbox.messages) == 1
    message = world.mailbox.messages[0]
    assert world.mailbox.envelopes[0] == ("sync@school-a.example", ["it@school-a.example"])
    assert message["To"] == "it@school-a.example" and message["From"] == "sync@school-a.example"
    assert message["Subject"] == "Sync failed for School A (school_a): assets run (zoho__students)"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert "INVALID_TOKEN <!channel>" in body and f"{UI}/runs/{run_id}" in body

    # The second evaluation sends nothing more ...
    ticker.tick()
    # ... and neither does the same run handed to the sensor again (a replayed tick).
    event = failed.get_run_failure_event()
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
    ).for_run_failure()
    run_failure_alerts(context)
    assert world.posts() == {"a": 1, "b": 0, "default": 0}
    assert len(world.mailbox.messages) == 1


def test_each_schools_failure_goes_to_its_own_target_and_a_school_without_one_to_the_default(
    world: World, instance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(alerts.DEFAULT_SLACK_ENV, world.hooks["default"].url("/services/TD/BD/default"))
    ticker = Ticker(run_failure_alerts, instance)
    sync(instance, "school_b", fail=True)
    ticker.tick()
    assert world.posts() == {"a": 0, "b": 1, "default": 0} and world.mailbox.messages == []
    assert "Sync failed for school_b" in world.hooks["b"].texts[0]

    sync(instance, "school_c", fail=True)  # no alerts: section: the deployment default
    ticker.tick()
    assert world.posts() == {"a": 0, "b": 1, "default": 1}
    assert "school_c" in world.hooks["default"].texts[0]


def test_without_any_target_the_alert_is_a_warning_in_the_log_and_the_sensor_goes_on(
    world: World, instance, capfd: pytest.CaptureFixture
):
    ticker = Ticker(run_failure_alerts, instance)
    sync(instance, "school_c", fail=True)
    capfd.readouterr()
    ticker.tick()
    err = capfd.readouterr().err
    [line] = [x for x in err.splitlines() if "no alert target configured" in x]
    assert "WARNING" in line and "tenant school_c" in line
    assert "Failed step zoho__students: RuntimeError: tenant school_c" in line
    assert world.posts() == {"a": 0, "b": 0, "default": 0}

    sync(instance, "school_b", fail=True)  # the next failure still goes out
    ticker.tick()
    assert world.posts()["b"] == 1
    assert "no alert target configured" not in capfd.readouterr().err  # school_c's not repeated


def test_a_secret_never_reaches_the_logs_the_run_config_or_the_alert_folder(
    world: World, instance, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # urllib3 logs every request line at DEBUG
    hook = world.hooks["a"]
    hook.statuses = [500, 502, 503]  # every attempt of this tick fails: the webhook alert is queued
    ticker = Ticker(run_failure_alerts, instance)
    sync(instance, "school_a", fail=True)
    data = ticker.tick()
    assert len(hook.posts) == 3  # tried three times (5xx is retried) ...
    assert len(world.mailbox.messages) == 1  # ... while the e-mail, with its login, went out
    [(path, entry)] = AlertStore(world.alert_dir).outbox()
    assert entry["channels"] == ["slack"] and "HTTP 503" in entry["last_error"]

    # The outbox is re-sent once due: exactly one more POST, and nothing after that. (The webhook
    # failed a moment ago, so this process leaves it alone for a minute: forget that here.)
    alerts.reset_circuits()
    tenants = read_tenants()
    assert flush_outbox(log=_Log(), tenants=tenants, now=time.time() + 30)["waiting"] == 1  # not due yet
    assert flush_outbox(log=_Log(), tenants=tenants, now=time.time() + 61)["sent"] == 1
    assert flush_outbox(log=_Log(), tenants=tenants, now=time.time() + 3600) == {
        "sent": 0,
        "waiting": 0,
        "given_up": 0,
    }
    assert len(hook.posts) == 4 and len(world.mailbox.messages) == 1
    assert not path.exists()

    logged = capfd.readouterr()
    seen = [logged.out, logged.err, caplog.text, repr(data)]
    seen += [p.read_text("utf-8", "replace") for p in world.alert_dir.rglob("*") if p.is_file()]
    seen += [json.dumps(r.run_config) + json.dumps(r.tags) for r in instance.get_runs()]
    assert "HTTP 503" in logged.err and '"POST *** HTTP/1.1"' in caplog.text  # the failure was logged ...
    for secret in ("hunter2SlackSecretPath", SLACK_SECRET, SMTP_PASSWORD, hook.url()):
        assert all(secret not in text for text in seen), secret  # ... without the URL or the password


class _Log:
    """A logger that keeps what it is told (for calls outside a sensor)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str) -> None:
        self.lines.append(("info", msg))

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))

    def error(self, msg: str) -> None:
        self.lines.append(("error", msg))

    def text(self, level: str) -> str:
        return "\n".join(m for lvl, m in self.lines if lvl == level)


def _alert(key: str = "run-failure:r1", tenant: str = "school_b") -> Alert:
    return Alert(
        keys=(key,), kind="run_failure", tenant_id=tenant, subject=f"Sync failed for {tenant}", lines=("x",)
    )


def test_a_refused_delivery_is_an_error_with_the_alert_and_is_not_retried(world: World):
    world.hooks["b"].always = 404
    log = _Log()
    assert dispatch(_alert(), log=log, tenants=read_tenants()) == "failed"
    assert len(world.hooks["b"].posts) == 1  # a 4xx is not retried
    assert "cannot be delivered by slack: HTTP 404 no_service" in log.text("error")
    assert "Sync failed for school_b" in log.text("error")  # the alert is in the log, not lost
    assert "school-b-path" not in log.text("error")
    assert AlertStore(world.alert_dir).outbox() == []


def test_a_webhook_that_gives_no_answer_is_not_tried_again_for_a_minute(world: World):
    world.hooks["b"].always = 503
    log = _Log()
    assert dispatch(_alert("run-failure:r1"), log=log, tenants=read_tenants()) == "queued"
    started = time.monotonic()
    assert dispatch(_alert("run-failure:r2"), log=log, tenants=read_tenants()) == "queued"
    assert time.monotonic() - started < 0.5 and len(world.hooks["b"].posts) == 3  # the second one waits
    assert len(AlertStore(world.alert_dir).outbox()) == 2
    assert "not tried: it failed to answer" in log.text("warning")


def test_the_same_failure_again_within_the_hour_is_logged_not_sent(
    world: World, instance, monkeypatch: pytest.MonkeyPatch
):
    ticker = Ticker(run_failure_alerts, instance)
    sync(instance, "school_b", fail=True)
    sync(instance, "school_b", fail=True)
    ticker.tick()
    assert len(world.hooks["b"].posts) == 1  # two runs, one failure: told once
    monkeypatch.setenv(alerts.REPEAT_MINUTES_ENV, "0")
    sync(instance, "school_b", fail=True)
    ticker.tick()
    assert len(world.hooks["b"].posts) == 2


# --- dead letters ---------------------------------------------------------------------------------


def test_a_dead_lettered_event_is_alerted_once_to_its_school(world: World, instance):
    ticker = Ticker(dead_letter_alerts, instance)
    payload = {
        "module": module("students").api_name,
        "event_type": "edit",
        "record_ids": ["5843017000000999001"],
    }
    event_id, _ = write_event(world.drop, "school_a", "zoho", "zoho.notification", payload)
    schools = {"school_a", "school_b", "school_c"}
    first = evaluate("zoho", world.drop, None, schools, instance_lookup(instance), max_attempts=1)
    [request] = first.requests
    sync(instance, "school_a", fail=True, tags={RUN_KEY_TAG: request.run_key})
    second = evaluate("zoho", world.drop, first.cursor, schools, instance_lookup(instance), max_attempts=1)
    assert len(second.dead) == 1
    # What the daemon does with the webhook sensor's SensorResult.asset_events:
    for observation in _dead_letter_events("zoho", second.dead):
        instance.report_runless_asset_event(observation)

    before = ticker.cursor
    ticker.tick()
    assert world.posts() == {"a": 1, "b": 0, "default": 0}
    text = world.hooks["a"].texts[0]
    assert text.startswith("*1 webhook event dead-lettered for School A (school_a)*")
    # The failed step and its own error, from the run the dead note names (not Dagster's wrapper).
    assert f"zoho event {event_id}: zoho__students: RuntimeError: tenant school_a: Zoho answered" in text
    assert "(1 attempts;" in text and f"{UI}/assets/events/dead_letters" in text
    assert len(world.mailbox.messages) == 1

    replayed = ticker.cursor
    ticker.tick()
    assert world.posts() == {"a": 1, "b": 0, "default": 0} and len(world.mailbox.messages) == 1
    # A tick that sent the alert but died before Dagster stored its cursor is replayed: not again.
    ticker.cursor = before
    ticker.tick()
    assert world.posts() == {"a": 1, "b": 0, "default": 0} and len(world.mailbox.messages) == 1
    assert ticker.cursor == replayed


# --- the deployment default -----------------------------------------------------------------------


def test_the_deployment_default_comes_from_sync_alert_variables(monkeypatch: pytest.MonkeyPatch):
    for name in DEFAULT_ENVS:
        monkeypatch.delenv(name, raising=False)
    assert not default_alerts().configured
    monkeypatch.setenv(alerts.DEFAULT_SLACK_ENV, "https://hooks.example/services/x")
    monkeypatch.setenv(alerts.DEFAULT_SMTP_HOST_ENV, "smtp.example")
    monkeypatch.setenv(alerts.DEFAULT_EMAIL_TO_ENV, "ops@example.org, data@example.org")
    monkeypatch.setenv(alerts.DEFAULT_EMAIL_FROM_ENV, "sync@example.org")
    monkeypatch.setenv(alerts.DEFAULT_SMTP_PORT_ENV, "465")
    monkeypatch.setenv(alerts.DEFAULT_SMTP_SSL_ENV, "true")
    monkeypatch.setenv(alerts.DEFAULT_SMTP_USERNAME_ENV, "u")
    monkeypatch.setenv(alerts.DEFAULT_SMTP_PASSWORD_ENV, "p")
    config = default_alerts()
    assert config.slack_webhook_env == alerts.DEFAULT_SLACK_ENV  # the variable's name, never its value
    assert config.email is not None and config.email.to == ("ops@example.org", "data@example.org")
    assert (config.email.smtp_port, config.email.ssl, config.email.starttls) == (465, True, False)
    assert config.email.smtp_password_env == alerts.DEFAULT_SMTP_PASSWORD_ENV
    monkeypatch.delenv(alerts.DEFAULT_EMAIL_FROM_ENV)
    with pytest.raises(TenantConfigError, match=r"alerts\.email\.from is required"):
        default_alerts()
