"""Alerts: a failed run, dead-lettered webhook events and a stale school, told to that school.

**Where an alert goes.** To the school's own ``alerts:`` in the tenants file (a Slack-compatible
incoming webhook, e-mail, or both), else to the deployment default (``SYNC_ALERT_*``), else to the
sensor's log as a warning that says no target is configured. A run's school is its partition
(tag ``dagster/partition``); a run without one, or of a school whose entry is broken, goes to the
default. Secrets (the webhook URL, the SMTP password) are read from the environment at send time
and appear nowhere else: not in logs, not in run config or metadata, not in the alert folder.

**What sends them.**

* :data:`run_failure_alerts` (``dg.run_failure_sensor``, every job of the code location): one
  alert per failed run, naming the school, the job, the failed steps with their error's first
  line, and a link to the run when ``DAGSTER_WEBSERVER_URL`` is set. The same failure of the same
  school and job (same steps, same first line) again within ``SYNC_ALERT_REPEAT_MINUTES``
  (default 60; 0 turns it off) is logged, not sent: a school whose Zoho token was revoked is told
  once an hour, not every 15 minutes.
* :data:`dead_letter_alerts`: the observations of ``events/dead_letters`` (one per event the
  webhook sensors gave up on), one alert per school per tick listing them, each once (the
  cursor is the last observation's storage id). It also re-sends what could not be delivered.
* ``school_health`` (:mod:`sync_pipelines.health`): a school that has not synced for
  ``SYNC_FRESHNESS_FAIL_HOURS``, and its recovery.

**Delivery, at least once, never twice on purpose.** A webhook POST has timeouts and up to three
attempts for connection errors, timeouts, 429 and 5xx; an e-mail goes through ``smtplib`` with
STARTTLS (or SMTPS) and a login when configured. Dagster's run-status sensors advance their cursor
past a run whatever the sensor function does, so a failed delivery cannot be retried by raising:
what fails for a reason that may pass (no answer, 5xx, 4xx SMTP) is written to the **outbox**
(``<alert dir>/outbox/``, the channels still owed, no secret) and :data:`dead_letter_alerts` sends
it again on its ticks, with a growing delay (1, 2, 4 … 60 minutes), for ``SYNC_ALERT_RETRY_HOURS``
(default 24); then it moves to ``undelivered/`` and the alert is logged as an error. What cannot
pass (a 4xx from the webhook, a refused login, a variable that is not set) is logged as an error
with the alert's text at once. Each alert, once handled, leaves a marker in ``sent/``: a replayed
tick or a second evaluation never sends it again. A channel that gave no answer is not tried again
by this process for a minute (its alerts go straight to the outbox), so one dead endpoint cannot
hold a sensor tick past its timeout.

The alert folder is ``SYNC_ALERT_DIR``, by default ``<local_dir()>/alerts``.
"""

import contextlib
import hashlib
import json
import logging
import os
import smtplib
import ssl
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import requests

from sync_pipelines.http import RetryingSession, RetryPolicy, TransportError
from sync_pipelines.sensors import DEAD_LETTERS, first_line, step_error
from sync_pipelines.settings import local_dir
from sync_pipelines.tenants import (
    TENANT_ID,
    AlertsConfig,
    EmailAlerts,
    TenantConfigError,
    TenantSet,
    parse_alerts,
    read_tenants,
)
from sync_pipelines.webhooks.drop import DEAD, DEAD_SUFFIX, SOURCES, drop_dir

logger = logging.getLogger(__name__)

ALERT_DIR_ENV = "SYNC_ALERT_DIR"
#: The UI's base URL, for links to runs and assets (e.g. ``https://dagster.school-sync.example``).
WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
RETRY_HOURS_ENV = "SYNC_ALERT_RETRY_HOURS"
REPEAT_MINUTES_ENV = "SYNC_ALERT_REPEAT_MINUTES"

#: The deployment default target: variables read at send time. The URL and the password are
#: secrets; the alert folder and the logs only ever name the variables.
DEFAULT_SLACK_ENV = "SYNC_ALERT_SLACK_WEBHOOK_URL"
DEFAULT_EMAIL_TO_ENV = "SYNC_ALERT_EMAIL_TO"  # comma-separated
DEFAULT_EMAIL_FROM_ENV = "SYNC_ALERT_EMAIL_FROM"
DEFAULT_SMTP_HOST_ENV = "SYNC_ALERT_SMTP_HOST"
DEFAULT_SMTP_PORT_ENV = "SYNC_ALERT_SMTP_PORT"
DEFAULT_SMTP_USERNAME_ENV = "SYNC_ALERT_SMTP_USERNAME"
DEFAULT_SMTP_PASSWORD_ENV = "SYNC_ALERT_SMTP_PASSWORD"
DEFAULT_SMTP_STARTTLS_ENV = "SYNC_ALERT_SMTP_STARTTLS"
DEFAULT_SMTP_SSL_ENV = "SYNC_ALERT_SMTP_SSL"
DEFAULT_LABEL = "the deployment default (SYNC_ALERT_*)"

#: ``(connect, read)`` seconds for one webhook POST; attempts per delivery; first backoff.
WEBHOOK_TIMEOUT = (3.05, 10.0)
WEBHOOK_ATTEMPTS = 3
BACKOFF_SECONDS = 0.5
SMTP_TIMEOUT = 15.0
#: A channel that failed for a reason that may pass is left alone by this process for this long.
CIRCUIT_SECONDS = 60.0
#: Steps and dead letters listed in one alert (the rest are counted).
MAX_LISTED = 20
MAX_STEPS = 5
#: Markers in ``sent/`` older than this are swept.
SENT_TTL_SECONDS = 30 * 24 * 3600.0

PARTITION_TAG = "dagster/partition"


def _float_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        logger.warning("%s is not a number; using %s", name, default)
        return default
    return value if value >= 0 else default


def alert_dir() -> Path:
    """The alert folder: ``SYNC_ALERT_DIR`` when set, else ``<local_dir()>/alerts``."""
    value = os.environ.get(ALERT_DIR_ENV)
    return Path(value).resolve() if value else local_dir() / "alerts"


def webserver_url() -> str | None:
    value = os.environ.get(WEBSERVER_URL_ENV, "").strip().rstrip("/")
    return value or None


# --- alerts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One message to one school.

    Attributes:
        keys: what it covers (``run-failure:<run id>``, ``dead-letter:<storage id>``, …); an alert
            all of whose keys were handled is never sent again.
        kind: ``run_failure``, ``dead_letters``, ``stale`` or ``recovered``.
        tenant_id: the school, or ``None`` (the deployment default's).
        subject: one line (the e-mail subject, the Slack message's first line).
        lines: the body, one fact a line.
        signature: for run failures, what makes two failures "the same" (repeat suppression).
    """

    keys: tuple[str, ...]
    kind: str
    tenant_id: str | None
    subject: str
    lines: tuple[str, ...] = ()
    signature: str | None = None

    def text(self) -> str:
        return "\n".join([self.subject, *self.lines])

    def one_line(self) -> str:
        return " | ".join([self.subject, *self.lines])

    def slack_text(self) -> str:
        """The text for a Slack-compatible webhook: ``&``, ``<`` and ``>`` escaped as Slack asks, so
        an error message can neither mention ``<!channel>`` nor forge a link."""
        return "\n".join([f"*{_slack_escape(self.subject)}*", *(_slack_escape(x) for x in self.lines)])

    def as_json(self) -> dict:
        return {**asdict(self), "keys": list(self.keys), "lines": list(self.lines)}

    @classmethod
    def from_json(cls, doc: Mapping) -> "Alert":
        return cls(
            keys=tuple(doc["keys"]),
            kind=doc["kind"],
            tenant_id=doc.get("tenant_id"),
            subject=doc["subject"],
            lines=tuple(doc.get("lines") or ()),
            signature=doc.get("signature"),
        )


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _school(tenant_id: str | None, tenants: TenantSet | None) -> str:
    if tenant_id is None:
        return "no school (the run has no tenant partition)"
    tenant = tenants.tenants.get(tenant_id) if tenants else None
    return f"{tenant.name} ({tenant_id})" if tenant and tenant.name != tenant_id else tenant_id


def _job_label(run: dg.DagsterRun) -> str:
    if run.job_name.startswith("__ASSET_JOB") or run.job_name.startswith("__ephemeral"):
        return "assets run"
    return run.job_name


def step_failures(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """``(step key, error's first line)`` of each step of a run that failed, in order."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    failures: list[tuple[str, str]] = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None:
            failures.append((event.step_key or "?", step_error(event)))
    return failures


def run_failure_alert(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent | None,
    tenants: TenantSet | None,
) -> Alert:
    """The alert for one failed run: school, job, failed steps with their error, link."""
    tenant_id = run.tags.get(PARTITION_TAG)
    school = _school(tenant_id, tenants)
    job = _job_label(run)
    failures = step_failures(instance, run.run_id)
    trigger = run.tags.get("sync/trigger")
    lines = [
        f"School: {school}",
        f"Job: {job} · run {run.run_id[:8]}" + (f" · trigger {trigger}" if trigger else ""),
    ]
    for step, error in failures[:MAX_STEPS]:
        lines.append(f"Failed step {step}: {error}")
    if len(failures) > MAX_STEPS:
        lines.append(f"…and {len(failures) - MAX_STEPS} more failed steps")
    run_error = first_line(failure_event.message if failure_event else None) or "the run failed"
    if not failures:
        lines.append(f"Error: {run_error}")
    if base := webserver_url():
        lines.append(f"Run: {base}/runs/{run.run_id}")
    steps = ", ".join(step for step, _ in failures[:3]) or "run"
    subject = f"Sync failed for {school}: {job} ({steps})" if tenant_id else f"Run failed: {job} ({steps})"
    first_error = failures[0][1] if failures else run_error
    signature = "\x1f".join(
        ["run", tenant_id or "", job, ",".join(sorted(s for s, _ in failures)), first_error]
    )
    return Alert(
        keys=(f"run-failure:{run.run_id}",),
        kind="run_failure",
        tenant_id=tenant_id,
        subject=subject,
        lines=tuple(lines),
        signature=signature,
    )


def _meta(metadata: Mapping[str, object], key: str, default: object = "") -> object:
    value = metadata.get(key, default)
    return getattr(value, "value", value)


def _dead_letter_reason(
    instance: dg.DagsterInstance | None, root: Path, tenant_id: str | None, meta: Mapping[str, object]
) -> str:
    """Why an event died: the failed step and its error's own first line, from the last attempt's
    run (the dead note names it), else the reason the observation carries."""
    reason = first_line(str(_meta(meta, "reason"))) or "no reason recorded"
    source, name = str(_meta(meta, "source")), str(_meta(meta, "file"))
    if (
        instance is None
        or not tenant_id
        or not TENANT_ID.match(tenant_id)
        or source not in SOURCES
        or Path(name).name != name
        or name.startswith(".")
    ):
        return reason
    try:
        note = json.loads((root / tenant_id / source / DEAD / (name + DEAD_SUFFIX)).read_text("utf-8"))
        run_id = (note.get("attempts") or [{}])[-1].get("run_id")
        failures = step_failures(instance, run_id) if run_id else []
    except (OSError, ValueError, AttributeError, TypeError):
        return reason
    return f"{failures[0][0]}: {failures[0][1]}" if failures else reason


def dead_letter_alerts_for(
    records: Sequence[dg.EventLogRecord],
    tenants: TenantSet | None,
    instance: dg.DagsterInstance | None = None,
    drop_root: Path | None = None,
) -> list[Alert]:
    """One alert per school for the ``events/dead_letters`` observations ``records``."""
    root = drop_root or drop_dir()
    by_tenant: dict[str | None, list[tuple[int, Mapping[str, object]]]] = defaultdict(list)
    for record in records:
        observation = record.asset_observation
        if observation is None:
            continue
        by_tenant[observation.partition].append((record.storage_id, observation.metadata))
    alerts: list[Alert] = []
    base = webserver_url()
    for tenant_id, notes in by_tenant.items():
        school = _school(tenant_id, tenants)
        lines = [f"School: {school}"]
        for _, meta in notes[:MAX_LISTED]:
            lines.append(
                f"{_meta(meta, 'source', '?')} event {_meta(meta, 'event_id') or '?'}: "
                f"{_dead_letter_reason(instance, root, tenant_id, meta)} "
                f"({_meta(meta, 'attempts', '?')} attempts; file {_meta(meta, 'file', '?')})"
            )
        if len(notes) > MAX_LISTED:
            lines.append(f"…and {len(notes) - MAX_LISTED} more")
        lines.append(
            "Every retry failed: the files lie in <drop>/<school>/<source>/dead/ beside a .reason.json "
            "note; move one back into its folder to retry it."
        )
        if base:
            lines.append(f"Dead letters: {base}/assets/{'/'.join(DEAD_LETTERS.path)}")
        n = len(notes)
        alerts.append(
            Alert(
                keys=tuple(f"dead-letter:{storage_id}" for storage_id, _ in notes),
                kind="dead_letters",
                tenant_id=tenant_id,
                subject=f"{n} webhook event{'s' if n != 1 else ''} dead-lettered for {school}",
                lines=tuple(lines),
            )
        )
    return alerts


# --- targets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A resolved destination: the channels of a school's ``alerts:`` or of the default."""

    config: AlertsConfig
    label: str

    @property
    def channels(self) -> tuple[str, ...]:
        return (("slack",) if self.config.slack_webhook_env else ()) + (
            ("email",) if self.config.email else ()
        )


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def default_alerts() -> AlertsConfig:
    """The deployment default target from ``SYNC_ALERT_*`` (empty when none is set).

    Raises:
        TenantConfigError: the variables are set but do not make a target (naming the variable).
    """
    raw: dict = {}
    if os.environ.get(DEFAULT_SLACK_ENV):
        raw["slack_webhook_env"] = DEFAULT_SLACK_ENV
    host, to = os.environ.get(DEFAULT_SMTP_HOST_ENV, ""), os.environ.get(DEFAULT_EMAIL_TO_ENV, "")
    if host.strip() or to.strip():
        email: dict = {
            "to": [a.strip() for a in to.split(",") if a.strip()],
            "from": os.environ.get(DEFAULT_EMAIL_FROM_ENV) or None,
            "smtp_host": host,
        }
        if port := os.environ.get(DEFAULT_SMTP_PORT_ENV, "").strip():
            if not port.isdigit():
                raise TenantConfigError(f"{DEFAULT_SMTP_PORT_ENV} must be a port number")
            email["smtp_port"] = int(port)
        if os.environ.get(DEFAULT_SMTP_USERNAME_ENV):
            email["smtp_username_env"] = DEFAULT_SMTP_USERNAME_ENV
        if os.environ.get(DEFAULT_SMTP_PASSWORD_ENV):
            email["smtp_password_env"] = DEFAULT_SMTP_PASSWORD_ENV
        if (value := os.environ.get(DEFAULT_SMTP_SSL_ENV)) is not None:
            email["ssl"] = _truthy(value)
        if (value := os.environ.get(DEFAULT_SMTP_STARTTLS_ENV)) is not None:
            email["starttls"] = _truthy(value)
        raw["email"] = email
    return parse_alerts(raw, "the SYNC_ALERT_* settings")


def resolve_target(
    tenant_id: str | None, tenants: TenantSet | None, log: logging.Logger | None = None
) -> tuple[Target | None, str]:
    """The target of a school's alerts, and why that one (for the log)."""
    tenant = tenants.tenants.get(tenant_id) if tenants and tenant_id else None
    if tenant is not None and tenant.alerts.configured:
        return Target(tenant.alerts, f"tenant {tenant_id}"), "its alerts: section"
    if tenant_id is None:
        why = "the run has no tenant partition"
    elif tenant is not None:
        why = f"tenant {tenant_id} has no alerts: section"
    elif tenants is not None and tenant_id in tenants.broken:
        why = f"tenant {tenant_id}'s entry in the tenants file is broken"
    else:
        why = f"tenant {tenant_id} is not in the tenants file"
    try:
        default = default_alerts()
    except TenantConfigError as exc:
        (log or logger).error(f"alerts: the deployment default target is unusable: {exc}")
        default = AlertsConfig()
    if default.configured:
        return Target(default, DEFAULT_LABEL), why
    return None, why


# --- delivery -------------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A channel did not take an alert. The message is safe to log: it never holds a URL or secret.

    Attributes:
        retriable: whether trying again later may succeed (no answer, 5xx, 4xx SMTP).
    """

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


_quiet_until: dict[str, float] = {}


def reset_circuits() -> None:
    """Forget which channels gave no answer (for tests)."""
    _quiet_until.clear()


def _circuit_key(kind: str, value: str) -> str:
    return kind + ":" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _scrub(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class _Redact(logging.Filter):
    """Blanks the webhook URLs' secret parts in urllib3's and the HTTP helper's records: at DEBUG
    both log every request line (``"POST /services/T…/B…/secret HTTP/1.1" 200``)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            scrubbed = _scrub(message, *sorted(self.secrets, key=len, reverse=True))
            if scrubbed != message:
                record.msg, record.args = scrubbed, ()
        return True


_redact = _Redact()
for _name in ("urllib3.connectionpool", "sync_pipelines.http"):
    logging.getLogger(_name).addFilter(_redact)


def post_webhook(url: str, text: str) -> None:
    """POST ``{"text": text}`` to a Slack-compatible incoming webhook.

    Raises:
        DeliveryError: after :data:`WEBHOOK_ATTEMPTS` attempts for no answer, 429 or 5xx
            (retriable), or at once for any other answer (not retriable). The URL is never part of it.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError("the variable does not hold an http(s) URL", retriable=False)
    _redact.secrets.update(x for x in (parts.path, parts.query) if len(x) > 1)
    # The project's one HTTP helper (sync_pipelines.http): timeouts, backoff with jitter, Retry-After.
    policy = RetryPolicy(max_retries=WEBHOOK_ATTEMPTS - 1, backoff_base=BACKOFF_SECONDS, backoff_max=5.0)
    with requests.Session() as session:
        session.max_redirects = 0  # a webhook that redirects is misconfigured: say so, do not follow
        http = RetryingSession(timeout=WEBHOOK_TIMEOUT, policy=policy, session=session)
        try:
            response = http.request("POST", url, json={"text": text})
        except TransportError as exc:
            raise DeliveryError(
                f"no answer ({exc.reason.split(':', 1)[0]}) after {WEBHOOK_ATTEMPTS} attempts", retriable=True
            ) from None
        except requests.RequestException as exc:
            raise DeliveryError(f"request failed ({type(exc).__name__})", retriable=False) from None
    if 200 <= response.status_code < 300:
        return
    detail = _scrub(first_line(response.text, 120), parts.path, parts.query)
    answer = f"HTTP {response.status_code}" + (f" {detail}" if detail else "")
    if http.is_retriable(response):
        raise DeliveryError(f"{answer} after {WEBHOOK_ATTEMPTS} attempts", retriable=True)
    raise DeliveryError(answer, retriable=False)


def _secret_env(name: str | None, what: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise DeliveryError(f"{name} ({what}) is not set (or empty)", retriable=False)
    return value


def send_email(config: EmailAlerts, alert: Alert) -> list[str]:
    """Send ``alert`` as one e-mail to ``config.to``.

    Returns:
        The recipients the server refused (the others got it).

    Raises:
        DeliveryError: no connection, TLS or login failure, or the server refused the message;
            retriable for no answer and 4xx answers. Never holds the password.
    """
    username = _secret_env(config.smtp_username_env, "the SMTP user name")
    password = _secret_env(config.smtp_password_env, "the SMTP password")
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=config.sender.rsplit("@", 1)[-1])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(alert.text() + "\n")
    where = f"SMTP {config.smtp_host}:{config.smtp_port}"
    smtp: smtplib.SMTP | None = None
    try:
        if config.ssl:
            smtp = smtplib.SMTP_SSL(
                config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT)
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if username:
            smtp.login(username, password or "")
        refused = smtp.send_message(message)
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"{where}: {_scrub(first_line(str(exc)), password)}", retriable=False) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{where}: login refused ({exc.smtp_code})", retriable=False) from None
    except smtplib.SMTPRecipientsRefused:
        raise DeliveryError(f"{where}: every recipient refused", retriable=False) from None
    except smtplib.SMTPResponseException as exc:
        error = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        detail = _scrub(first_line(error, 120), password, username)
        raise DeliveryError(
            f"{where}: {exc.smtp_code} {detail}", retriable=400 <= exc.smtp_code < 500
        ) from None
    except ssl.SSLError as exc:
        raise DeliveryError(
            f"{where}: TLS failed ({exc.reason or type(exc).__name__})", retriable=False
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{where}: no answer ({type(exc).__name__})", retriable=True) from None
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
    return sorted(refused)


def deliver(
    alert: Alert, target: Target, channels: Iterable[str], log: logging.Logger | None = None
) -> dict[str, DeliveryError | None]:
    """Send ``alert`` by each of ``channels`` of ``target``: channel → ``None`` (sent) or its error."""
    results: dict[str, DeliveryError | None] = {}
    for channel in channels:
        try:
            if channel == "slack" and target.config.slack_webhook_env:
                url = _secret_env(target.config.slack_webhook_env, "the webhook URL") or ""
                _guarded(_circuit_key("slack", url), lambda url=url: post_webhook(url, alert.slack_text()))
            elif channel == "email" and target.config.email:
                email = target.config.email
                key = _circuit_key("smtp", f"{email.smtp_host}:{email.smtp_port}")
                refused = _guarded(key, lambda email=email: send_email(email, alert))
                if refused:
                    (log or logger).warning(
                        f"alert e-mail to {target.label}: {len(refused)} recipient(s) refused, the others got it"
                    )
            else:
                raise DeliveryError(f"{target.label} no longer has a {channel} channel", retriable=False)
            results[channel] = None
        except DeliveryError as exc:
            results[channel] = exc
    return results


def _guarded(key: str, send):
    now = time.monotonic()
    if _quiet_until.get(key, 0.0) > now:
        raise DeliveryError(
            f"not tried: it failed to answer less than {CIRCUIT_SECONDS:.0f} s ago", retriable=True
        )
    try:
        return send()
    except DeliveryError as exc:
        if exc.retriable:
            _quiet_until[key] = time.monotonic() + CIRCUIT_SECONDS
        raise


# --- the alert folder -----------------------------------------------------------------------------


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AlertStore:
    """The alert folder.

    * ``sent/<digest>``: one marker per alert key handled (sent, queued, logged or suppressed);
    * ``repeats/<digest>``: when a run-failure signature was last alerted (its modification time);
    * ``outbox/<digest>.json``: an alert with the channels still owed, its attempts and next try;
    * ``undelivered/``: what the outbox gave up on after ``SYNC_ALERT_RETRY_HOURS``.

    Nothing in it is a secret: targets are named by tenant, channels by name.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else alert_dir()

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]

    def handled(self, key: str) -> bool:
        return (self.root / "sent" / self._digest(key)).is_file()

    def mark_handled(self, keys: Iterable[str]) -> None:
        for key in keys:
            _atomic_write(self.root / "sent" / self._digest(key), key.encode("utf-8"))

    def repeat_age(self, signature: str, now: float) -> float | None:
        try:
            return now - (self.root / "repeats" / self._digest(signature)).stat().st_mtime
        except FileNotFoundError:
            return None

    def note_repeat(self, signature: str, now: float) -> None:
        path = self.root / "repeats" / self._digest(signature)
        _atomic_write(path, signature.encode("utf-8"))
        os.utime(path, (now, now))

    def queue(self, alert: Alert, channels: Sequence[str], error: str, now: float) -> Path:
        path = self.root / "outbox" / f"{self._digest(alert.keys[0])}.json"
        entry = {
            "alert": alert.as_json(),
            "channels": list(channels),
            "attempts": 1,
            "first_failed_at": now,
            "next_at": now + 60.0,
            "last_error": error,
        }
        _atomic_write(path, json.dumps(entry, ensure_ascii=False, indent=1).encode("utf-8"))
        return path

    def outbox(self) -> list[tuple[Path, dict]]:
        entries: list[tuple[Path, dict]] = []
        folder = self.root / "outbox"
        if not folder.is_dir():
            return entries
        for path in sorted(folder.glob("*.json")):
            try:
                entries.append((path, json.loads(path.read_text("utf-8"))))
            except (OSError, ValueError) as exc:
                logger.error("alerts: outbox entry %s unreadable (%s); moved to undelivered/", path.name, exc)
                self.give_up(path)
        return entries

    def rewrite(self, path: Path, entry: dict) -> None:
        _atomic_write(path, json.dumps(entry, ensure_ascii=False, indent=1).encode("utf-8"))

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def give_up(self, path: Path) -> None:
        target = self.root / "undelivered" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, target)

    def sweep(self, now: float, max_age: float = SENT_TTL_SECONDS) -> int:
        removed = 0
        for folder in (self.root / "sent", self.root / "repeats"):
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                try:
                    if now - entry.stat().st_mtime > max_age:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


# --- dispatch -------------------------------------------------------------------------------------


def _who(alert: Alert) -> str:
    return f"tenant {alert.tenant_id}" if alert.tenant_id else "no tenant"


def dispatch(
    alert: Alert,
    *,
    log: logging.Logger,
    store: AlertStore | None = None,
    tenants: TenantSet | None = None,
    now: float | None = None,
) -> str:
    """Send ``alert`` to its school's target, once.

    Returns:
        ``sent`` (every channel took it), ``queued`` (some channel will be retried from the outbox),
        ``failed`` (some channel cannot take it: logged as an error with the alert), ``logged`` (no
        target: a warning with the alert), ``duplicate`` (handled before) or ``suppressed`` (the same
        run failure was alerted within ``SYNC_ALERT_REPEAT_MINUTES``).
    """
    store = store or AlertStore()
    now = time.time() if now is None else now
    if all(store.handled(key) for key in alert.keys):
        log.info(f"alert already handled, not sent again: {alert.subject}")
        return "duplicate"
    window = _float_env(REPEAT_MINUTES_ENV, 60.0) * 60.0
    if alert.signature and window > 0:
        age = store.repeat_age(alert.signature, now)
        if age is not None and age < window:
            log.info(
                f"alert not sent: the same failure ({_who(alert)}) was alerted {age / 60:.0f} min ago "
                f"({REPEAT_MINUTES_ENV}={window / 60:g}): {alert.one_line()}"
            )
            store.mark_handled(alert.keys)
            return "suppressed"
    target, why = resolve_target(alert.tenant_id, tenants, log)
    outcome = _send(alert, target, why, log, store, now)
    store.mark_handled(alert.keys)
    if alert.signature:
        store.note_repeat(alert.signature, now)
    return outcome


def _send(
    alert: Alert, target: Target | None, why: str, log: logging.Logger, store: AlertStore, now: float
) -> str:
    if target is None:
        log.warning(
            f"ALERT ({_who(alert)}; no alert target configured: {why}, and no {DEFAULT_SLACK_ENV} or "
            f"{DEFAULT_SMTP_HOST_ENV} + {DEFAULT_EMAIL_TO_ENV} is set): {alert.one_line()}"
        )
        return "logged"
    results = deliver(alert, target, target.channels, log)
    return _report(alert, target, results, log, store, now, queued_path=None)


def _report(
    alert: Alert,
    target: Target,
    results: Mapping[str, DeliveryError | None],
    log: logging.Logger,
    store: AlertStore,
    now: float,
    queued_path: Path | None,
) -> str:
    sent = [c for c, e in results.items() if e is None]
    retry = {c: e for c, e in results.items() if e is not None and e.retriable}
    fatal = {c: e for c, e in results.items() if e is not None and not e.retriable}
    if sent:
        log.info(f"alert sent to {target.label} by {' and '.join(sent)}: {alert.subject}")
    for channel, error in fatal.items():
        log.error(
            f"alert to {target.label} cannot be delivered by {channel}: {error}. The alert: {alert.one_line()}"
        )
    if retry:
        summary = "; ".join(f"{c}: {e}" for c, e in retry.items())
        if queued_path is None:
            store.queue(alert, list(retry), summary, now)
            hours = _float_env(RETRY_HOURS_ENV, 24.0)
            log.warning(
                f"alert to {target.label} not delivered yet ({summary}); the dead_letter_alerts sensor "
                f"retries it for up to {hours:g} h: {alert.subject}"
            )
        return "queued"
    return "failed" if fatal else "sent"


def flush_outbox(
    *,
    log: logging.Logger,
    store: AlertStore | None = None,
    tenants: TenantSet | None = None,
    now: float | None = None,
) -> dict[str, int]:
    """Send again what the outbox owes, when due; give up after ``SYNC_ALERT_RETRY_HOURS``.

    The target is resolved again (the school's ``alerts:`` may have changed); without ``tenants``
    (the file unusable) a school's alerts wait.

    Returns:
        Counts: ``sent``, ``waiting`` (still owed), ``given_up``.
    """
    store = store or AlertStore()
    now = time.time() if now is None else now
    limit = _float_env(RETRY_HOURS_ENV, 24.0) * 3600.0
    counts = {"sent": 0, "waiting": 0, "given_up": 0}
    for path, entry in store.outbox():
        try:
            alert = Alert.from_json(entry["alert"])
            channels = list(entry["channels"])
            first_failed = float(entry["first_failed_at"])
        except (KeyError, TypeError, ValueError) as exc:
            log.error(f"alerts: outbox entry {path.name} is damaged ({exc}); moved to undelivered/")
            store.give_up(path)
            counts["given_up"] += 1
            continue
        if float(entry.get("next_at", 0)) > now or (tenants is None and alert.tenant_id is not None):
            counts["waiting"] += 1  # not due, or the school's target cannot be read right now
            continue
        target, _ = resolve_target(alert.tenant_id, tenants, log)
        if target is None:
            log.warning(f"ALERT (queued; {_who(alert)} has no alert target any more): {alert.one_line()}")
            store.done(path)
            continue
        results = deliver(alert, target, [c for c in channels if c in target.channels], log)
        for channel in channels:
            if channel not in target.channels:
                log.warning(f"alert for {target.label}: the {channel} channel is gone; not retried")
        _report(alert, target, results, log, store, now, queued_path=path)
        owed = [c for c, e in results.items() if e is not None and e.retriable]
        if not owed:
            store.done(path)
            counts["sent"] += 1
        elif now - first_failed >= limit:
            store.give_up(path)
            counts["given_up"] += 1
            log.error(
                f"alert to {target.label} given up after {limit / 3600:g} h by {', '.join(owed)} "
                f"(moved to undelivered/). The alert: {alert.one_line()}"
            )
        else:
            attempts = int(entry.get("attempts", 1)) + 1
            entry.update(
                channels=owed,
                attempts=attempts,
                next_at=now + min(60.0 * 2 ** (attempts - 1), 3600.0),
                last_error="; ".join(f"{c}: {results[c]}" for c in owed),
            )
            store.rewrite(path, entry)
            counts["waiting"] += 1
            log.warning(
                f"alert to {target.label} still not delivered after {attempts} attempts "
                f"({entry['last_error']}); next try in {(entry['next_at'] - now) / 60:.0f} min: {alert.subject}"
            )
    return counts


def _tenants(log: logging.Logger) -> TenantSet | None:
    try:
        return read_tenants()
    except TenantConfigError as exc:
        log.warning(f"alerts: tenants file unusable, every alert goes to the deployment default: {exc}")
        return None


# --- the sensors ----------------------------------------------------------------------------------


@dg.run_failure_sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One alert per failed run of this code location, to the run's school (its `tenants` "
    "partition): school, job, failed steps and their error, a link to the run. Targets: the school's "
    "alerts: in the tenants file, else SYNC_ALERT_*, else a warning in this log.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext) -> None:
    tenants = _tenants(context.log)
    alert = run_failure_alert(context.instance, context.dagster_run, context.failure_event, tenants)
    dispatch(alert, log=context.log, tenants=tenants)


def _cursor_id(cursor: str | None) -> int | None:
    try:
        return int(cursor) if cursor else None
    except ValueError:
        return None


@dg.sensor(
    name="dead_letter_alerts",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One alert per school per tick for the webhook events dead-lettered since the last tick "
    "(the events/dead_letters observations), each once; also re-sends alerts whose delivery failed.",
)
def dead_letter_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    now = time.time()
    store = AlertStore()
    tenants = _tenants(context.log)
    after = _cursor_id(context.cursor)
    said: list[str] = []
    if after is None:
        # Like Dagster's run-status sensors: start from now, not with the whole history (the
        # school_health asset counts the dead letters still lying in dead/).
        latest = context.instance.fetch_observations(DEAD_LETTERS, limit=1).records
        after = latest[0].storage_id if latest else 0
        context.update_cursor(str(after))
        said.append(f"started after observation {after}")
    else:
        records = context.instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=DEAD_LETTERS, after_storage_id=after), limit=1000, ascending=True
        ).records
        fresh = [r for r in records if not store.handled(f"dead-letter:{r.storage_id}")]
        for alert in dead_letter_alerts_for(fresh, tenants, context.instance):
            dispatch(alert, log=context.log, store=store, tenants=tenants, now=now)
        if records:
            context.update_cursor(str(records[-1].storage_id))
        said.append(f"{len(records)} dead letter(s)")
    counts = flush_outbox(log=context.log, store=store, tenants=tenants, now=now)
    store.sweep(now)
    said.append(f"outbox: {counts['sent']} sent, {counts['waiting']} waiting, {counts['given_up']} given up")
    return dg.SkipReason("; ".join(said))
