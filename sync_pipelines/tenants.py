"""Tenants (schools): the tenants file, and the dynamic partitions kept in step with it.

The file names, for each school, where its Zoho and Moodle live and *which environment variables*
hold its secrets; the secrets themselves never appear in the file, in logs or in metadata.

.. code-block:: yaml

    tenants:
      - id: demo_school                       # letters, digits, "_" and "-" only
        name: Demo BTEC School
        zoho:
          data_centre: eu                      # com, eu, in, com.au, jp, com.cn, sa, ca ...
          # or, for any Zoho-compatible endpoint, explicit URLs (they win over data_centre):
          accounts_url: https://accounts.zoho.eu
          api_domain: https://www.zohoapis.eu  # used when the token answer names none
          client_id_env: DEMO_ZOHO_CLIENT_ID
          client_secret_env: DEMO_ZOHO_CLIENT_SECRET
          refresh_token_env: DEMO_ZOHO_REFRESH_TOKEN
          # The secret of the Zoho webhook routes: the token Zoho's workflow webhooks send as
          # "Authorization: Bearer <secret>" (so only letters, digits and -._~+/, "=" at the end),
          # or the HMAC key of signed deliveries to those routes.
          webhook_secret_env: DEMO_ZOHO_WEBHOOK_SECRET
          # Only for an org that names things otherwise than the shipped module table
          # (sync_pipelines/zoho/modules.py); the warehouse tables and columns stay the same.
          modules:                             # our module (name or API name): the org's API name
            students: Students                 #   (BTEC_Students: Students would do the same)
          fields:                              # our module (name or API name):
            students:                          #   {our field API name: the org's API name}
              Frist_Name_Native: First_Name_Native
              Sub_Major: null                  # the org has no such field: the column stays empty
        moodle:
          base_url: https://moodle.school.example
          token_env: DEMO_MOODLE_TOKEN
          # The HMAC key the local_zohosync plugin signs its deliveries with.
          webhook_secret_env: DEMO_MOODLE_WEBHOOK_SECRET
        # Only for an org that names its grading otherwise (every key optional; see GradingConfig).
        grading:
          subform: Learning_Outcomes_Assessm   # BTEC_Grades' criteria subform (its API name)
          subform_fields: {code: Criterion_Code, title: Criterion, achieved: Achieved, feedback: Feedback}
          grades: {D: D, M: M, P: P, R: R, RR: RR}  # our letter: the org's Grade picklist value
          statuses: {marked: Marking completed, forward: [In review, Ready for release, Released]}
          attempts: {last: 2, missed_on_last: RR}   # a Pass criterion missed on attempt 2 → RR
        # Where this school's alerts go (run failures, dead letters, staleness; see
        # sync_pipelines/alerts.py). Without it, the deployment default (SYNC_ALERT_*), else a log line.
        alerts:
          slack_webhook_env: DEMO_SLACK_WEBHOOK_URL   # a Slack-compatible incoming webhook (its URL is a secret)
          email:
            to: [it@school.example]                  # one address, or a list
            from: sync@school.example
            smtp_host: smtp.school.example
            smtp_port: 587                           # default 587
            smtp_username_env: DEMO_SMTP_USERNAME    # both or neither
            smtp_password_env: DEMO_SMTP_PASSWORD
            starttls: true                           # default true; or ssl: true (port 465)

A top-level ``webhook_secret_env`` (one secret for both webhook routes) is still read, for each
route whose own key is absent, with a warning: the Zoho secret travels as a bearer token and is
stored in Zoho's workflow settings, so a leaked Zoho secret should not also forge Moodle events.

One school's bad entry never stops another school: each tenant is parsed on its own, and a broken
one is reported (:class:`TenantSet` ``.broken``) with what is wrong, while the others sync. Only a
file that is unusable as a whole (missing, not YAML, no ``tenants`` list) raises
:class:`TenantConfigError`. A broken school keeps its partition, so its runs fail with its own error.

Each school's org is checked against the module table before any of its data moves (see
:mod:`sync_pipelines.zoho.org`): a module or field the org lacks, and not mapped above, is an
error naming the tenant, the module and the field; picklists are validated against the school's
own values.
"""

import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import yaml

from sync_pipelines.btec import (
    LAST_ATTEMPT_LETTERS,
    LETTERS,
    GradeValues,
    Outcome,
    StatusValues,
    SubformFields,
    criteria_grade,
    next_status,
)
from sync_pipelines.zoho.bulk import BULK_READ_THRESHOLD
from sync_pipelines.zoho.modules import MODULES, MODULES_BY_API_NAME, MODULES_BY_NAME

#: A tenant id; ``\Z``, not ``$``, which would let ``TENANT_ID.match`` accept a trailing newline.
TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
TENANTS_FILE_ENV = "SYNC_TENANTS_FILE"
#: What a ``*_env`` key may name: a portable environment variable name.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: What ``Authorization: Bearer`` carries exactly (RFC 6750 ``b64token``).
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

logger = logging.getLogger(__name__)

tenant_partitions = dg.DynamicPartitionsDefinition(name="tenants")

#: Zoho data centres: accounts server and API domain.
DATA_CENTRES: dict[str, tuple[str, str]] = {
    "com": ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    "com.au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    "com.cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
}


class TenantConfigError(ValueError):
    """The tenants file, or the environment it points at, is not usable."""


@dataclass(frozen=True)
class OrgMapping:
    """How one school's org names our modules and fields (``zoho.modules``, ``zoho.fields``).

    Keys are our module *names* (``students``) and our field API names; pairs are sorted, so
    that two equal mappings compare equal and the config stays hashable.

    Attributes:
        modules: ``(our module name, the org's module API name)`` pairs.
        fields: ``(our module name, our field API name, the org's API name or None)`` triples;
            ``None``: the org has no such field.
    """

    modules: tuple[tuple[str, str], ...] = ()
    fields: tuple[tuple[str, str, str | None], ...] = ()

    def module_api_name(self, name: str) -> str:
        """The org's API name of our module ``name`` (its own API name unless mapped)."""
        for ours, theirs in self.modules:
            if ours == name:
                return theirs
        return MODULES_BY_NAME[name].api_name

    def field_api_name(self, module: str, api_name: str) -> str | None:
        """The org's API name of our field ``api_name`` of module ``module`` (its own unless
        mapped), or ``None`` if the org has no such field."""
        for ours, field_name, theirs in self.fields:
            if ours == module and field_name == api_name:
                return theirs
        return api_name

    def is_field_mapped(self, module: str, api_name: str) -> bool:
        """Whether ``zoho.fields`` names this field (to another API name, or to null)."""
        return any(ours == module and f == api_name for ours, f, _ in self.fields)


@dataclass(frozen=True)
class ZohoTenantConfig:
    accounts_url: str
    api_domain: str | None
    client_id_env: str
    client_secret_env: str
    refresh_token_env: str
    mapping: OrgMapping = field(default_factory=OrgMapping)
    #: ``zoho.bulk_read_threshold``: a full read of a module holding more records goes through
    #: Zoho's Bulk Read (:mod:`sync_pipelines.zoho.bulk`); ``null`` never uses it.
    bulk_read_threshold: int | None = BULK_READ_THRESHOLD


@dataclass(frozen=True)
class DriftPolicy:
    """What the reconciliation does with a difference between Zoho and Moodle (``moodle.drift``).

    Attributes:
        restore: put back what Zoho holds when Moodle lacks or contradicts it (an enrolment
            removed by hand, a course renamed, an active student's account suspended). Default
            true; false only reports it.
        moodle_only: per entity (``users``, ``courses``, ``enrolments``), what to do with what
            Moodle holds and Zoho does not say, in the words of Moodle's external-database
            enrolment plugin's "external unenrol action": ``keep`` (the default: report it, change
            nothing), ``suspend`` (accounts, enrolments), ``hide`` (courses), ``unenrol``
            (enrolments). Nothing is ever deleted.
    """

    restore: bool = True
    moodle_only: Mapping[str, str] = field(default_factory=dict)

    def moodle_only_action(self, entity: str) -> str:
        return self.moodle_only.get(entity, "keep")


@dataclass(frozen=True)
class MoodleTenantConfig:
    base_url: str
    token_env: str
    drift: DriftPolicy = field(default_factory=DriftPolicy)


@dataclass(frozen=True)
class AttemptPolicy:
    """How many attempts a unit allows (``grading.attempts``).

    Attributes:
        last: the last attempt allowed (2: one resubmission), or ``None`` for no limit.
        missed_on_last: the letter a Pass criterion still missed on the last attempt gives:
            ``RR`` (the default), ``R`` or ``F``.
    """

    last: int | None = 2
    missed_on_last: str = "RR"


#: Our name of the grades module's criteria subform field (its API name in the shipped org).
GRADES_SUBFORM_FIELD = "Learning_Outcomes_Assessm"


@dataclass(frozen=True)
class GradingConfig:
    """How one school's org names what criteria grading reads and writes (``grading:``).

    Every part is optional; the defaults are the shipped org's names.

    Attributes:
        subform: the API name of ``BTEC_Grades``' criteria subform, or ``None`` if the org has
            none (then only the grade is written). One setting with
            ``zoho.fields.grades.Learning_Outcomes_Assessm``: giving one sets the other, giving
            both differently is an error.
        subform_fields: the field API names of one row of that subform (the field metadata does not
            list a subform's own fields, so these are the school's to say).
        grades: the ``Grade`` picklist value of each letter (D, M, P, R, RR, F).
        statuses: the ``Grade_Status`` values of the status rule (marked, forward, before).
        attempts: the attempt limit and what missing a Pass criterion on the last attempt gives.
        assessment_prefix: the assignments of a class's course that assess its unit's criteria
            (and get its rubric): those whose name starts with it (case-insensitive); ``""``: all.
    """

    subform: str | None = GRADES_SUBFORM_FIELD
    subform_fields: SubformFields = field(default_factory=SubformFields)
    grades: GradeValues = field(default_factory=GradeValues)
    statuses: StatusValues = field(default_factory=StatusValues)
    attempts: AttemptPolicy = field(default_factory=AttemptPolicy)
    assessment_prefix: str = "BTEC"

    def grade(self, achieved: Mapping[str, bool | None], codes: Sequence[str], *, attempt: int) -> Outcome:
        """:func:`sync_pipelines.btec.criteria_grade` with this school's values and attempt limit."""
        return criteria_grade(
            achieved,
            codes,
            attempt=attempt,
            last_attempt=self.attempts.last,
            values=self.grades,
            missed_on_last=self.attempts.missed_on_last,
        )

    def next_status(self, current_zoho_status: str | None, marked: bool) -> str | None:
        """:func:`sync_pipelines.btec.next_status` with this school's status values."""
        return next_status(current_zoho_status, marked, self.statuses)

    @property
    def letters_used(self) -> tuple[str, ...]:
        """The letters this school's grading can write: D, M, P, R and, with an attempt limit, the
        last-attempt letter."""
        used = ["D", "M", "P", "R"]
        if self.attempts.last is not None and self.attempts.missed_on_last not in used:
            used.append(self.attempts.missed_on_last)
        return tuple(used)

    def org_problems(self, grade_picklist: Iterable[str], status_picklist: Iterable[str]) -> tuple[str, ...]:
        """What this config names that the org's picklists lack: one sentence each, empty when
        it fits. The picklists are ``BTEC_Grades.Grade`` and ``Grade_Status`` as the org's field
        metadata lists them (the values as text). The tenants file is read without the org, so
        this is for the org check to call once the metadata is in."""
        grades, statuses = set(grade_picklist), set(status_picklist)
        problems = [
            f"grading.grades.{letter}: {self.grades.value(letter)!r} is not a value of the Grade picklist"
            for letter in self.letters_used
            if self.grades.value(letter) not in grades
        ]
        named = [("marked", self.statuses.marked)]
        named += [("forward", v) for v in self.statuses.forward] + [
            ("before", v) for v in self.statuses.before
        ]
        problems += [
            f"grading.statuses.{key}: {value!r} is not a value of the Grade_Status picklist"
            for key, value in named
            if value not in statuses
        ]
        return tuple(problems)


@dataclass(frozen=True)
class EmailAlerts:
    """Alert e-mail of one school (``alerts.email``), sent with the standard ``smtplib``.

    Attributes:
        to: the recipients (plain addresses).
        sender: the ``From`` address (``from:`` in the file).
        smtp_host: the SMTP server.
        smtp_port: its port (587, the submission port, by default).
        smtp_username_env: the variable holding the SMTP user name, or ``None`` (no login).
        smtp_password_env: the variable holding the SMTP password (a secret: read at send time).
        starttls: upgrade the connection with STARTTLS before logging in (default true).
        ssl: connect with TLS from the start (SMTPS, port 465) instead; excludes ``starttls``.
    """

    to: tuple[str, ...]
    sender: str
    smtp_host: str
    smtp_port: int = 587
    smtp_username_env: str | None = None
    smtp_password_env: str | None = None
    starttls: bool = True
    ssl: bool = False


@dataclass(frozen=True)
class AlertsConfig:
    """Where one school's alerts go (``alerts:``); both channels may be set, each gets every alert.

    Attributes:
        slack_webhook_env: the variable holding a Slack-compatible incoming-webhook URL (the URL is
            the secret), or ``None``.
        email: the alert e-mail, or ``None``.
    """

    slack_webhook_env: str | None = None
    email: EmailAlerts | None = None

    @property
    def configured(self) -> bool:
        """Whether any channel is set."""
        return bool(self.slack_webhook_env or self.email)


@dataclass(frozen=True)
class Tenant:
    """One school.

    Attributes:
        id: the tenant id, also its partition key.
        name: a display name.
        zoho: where its Zoho lives and which variables hold its OAuth credentials.
        moodle: where its Moodle lives, or ``None``.
        webhook_secret_env: the legacy top-level key as written (one secret for both routes), or
            ``None``; read :attr:`zoho_webhook_secret_env` and :attr:`moodle_webhook_secret_env`.
        zoho_webhook_secret_env: the variable holding the Zoho routes' secret (bearer token or
            HMAC key): ``zoho.webhook_secret_env``, else the legacy key, else ``None``.
        moodle_webhook_secret_env: the variable holding the HMAC key Moodle signs with:
            ``moodle.webhook_secret_env``, else the legacy key, else ``None``.
        grading: how its org names criteria grading (``grading:``; the shipped names by default).
        alerts: where its alerts go (``alerts:``); empty: the deployment default.
    """

    id: str
    name: str
    zoho: ZohoTenantConfig
    moodle: MoodleTenantConfig | None = None
    webhook_secret_env: str | None = None
    zoho_webhook_secret_env: str | None = None
    moodle_webhook_secret_env: str | None = None
    grading: GradingConfig = field(default_factory=GradingConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def __post_init__(self) -> None:
        # A Tenant built by hand with only the legacy key behaves as one read from a file.
        if self.webhook_secret_env:
            if self.zoho_webhook_secret_env is None:
                object.__setattr__(self, "zoho_webhook_secret_env", self.webhook_secret_env)
            if self.moodle_webhook_secret_env is None:
                object.__setattr__(self, "moodle_webhook_secret_env", self.webhook_secret_env)

    def secret(self, env_name: str) -> str:
        """Read a secret from the environment; the error names the variable, never a value."""
        value = os.environ.get(env_name)
        if not value:
            raise TenantConfigError(
                f"tenant {self.id}: environment variable {env_name} is not set (or empty)"
            )
        return value

    def zoho_webhook_secret(self) -> str:
        """The secret of the Zoho webhook routes: the bearer token Zoho sends, or the HMAC key.

        Raises:
            TenantConfigError: no variable configured, the variable unset or empty, or a value an
                ``Authorization: Bearer`` header cannot carry exactly (leading or trailing
                whitespace, characters outside RFC 6750's ``b64token``). The message names the
                tenant and the variable, never the value.
        """
        value = self._webhook_secret("Zoho", self.zoho_webhook_secret_env, "zoho.webhook_secret_env")
        if not BEARER_TOKEN.fullmatch(value):
            raise TenantConfigError(
                f"tenant {self.id}: the Zoho webhook secret in {self.zoho_webhook_secret_env} has characters "
                "an 'Authorization: Bearer' header cannot carry, so no delivery could ever match it: use "
                "only letters, digits and -._~+/ (with '=' only at the end)"
            )
        return value

    def moodle_webhook_secret(self) -> str:
        """The HMAC key the Moodle plugin signs its deliveries with.

        Raises:
            TenantConfigError: no variable configured, the variable unset or empty, or a value with
                leading or trailing whitespace (Moodle trims its settings, so it would sign with
                another key). The message names the tenant and the variable, never the value.
        """
        return self._webhook_secret("Moodle", self.moodle_webhook_secret_env, "moodle.webhook_secret_env")

    def _webhook_secret(self, side: str, env_name: str | None, key: str) -> str:
        if not env_name:
            raise TenantConfigError(
                f"tenant {self.id}: no {key} in the tenants file: its {side} webhooks are refused"
            )
        value = self.secret(env_name)
        if value != value.strip():
            raise TenantConfigError(
                f"tenant {self.id}: the {side} webhook secret in {env_name} has leading or trailing "
                "whitespace: remove it"
            )
        return value


@dataclass(frozen=True)
class TenantSet:
    """What the tenants file says: the usable tenants, and what is wrong with the others.

    Attributes:
        tenants: the usable tenants by id, in file order.
        broken: for every unusable entry, its tenant id when that is a valid id (else a label such
            as ``tenants[3]``) and the error, which names the tenant, the key and what is wrong,
            never a secret value.
        warnings: what is usable but should change (e.g. the legacy single webhook secret).
        source: the file (or the name given to a parsed document), for error messages.
    """

    tenants: dict[str, Tenant] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    source: str = "tenants file"

    @property
    def ids(self) -> frozenset[str]:
        """The ids of the usable tenants."""
        return frozenset(self.tenants)

    @property
    def partition_ids(self) -> frozenset[str]:
        """The partitions to keep: the usable tenants and the broken ones with a valid id.

        A broken school keeps its partition (and its history); its runs fail with its own error.
        """
        return self.ids | {key for key in self.broken if TENANT_ID.match(key)}

    def get(self, tenant_id: str) -> Tenant:
        """The usable tenant ``tenant_id``.

        Raises:
            TenantConfigError: the tenant's own error if its entry is broken, else that it is not
                in the tenants file.
        """
        if tenant_id in self.tenants:
            return self.tenants[tenant_id]
        if tenant_id in self.broken:
            raise TenantConfigError(self.broken[tenant_id])
        shown = tenant_id if isinstance(tenant_id, str) and TENANT_ID.match(tenant_id) else repr(tenant_id)
        raise TenantConfigError(f"tenant {shown} is not in the tenants file {self.source}")

    def log_problems(self, log: logging.Logger) -> None:
        """Log one warning per broken tenant and one per warning (a ``context.log`` will do)."""
        for message in self.broken.values():
            log.warning(f"tenant skipped: {message}")
        for message in self.warnings:
            log.warning(message)


def validate_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID.match(tenant_id):
        raise TenantConfigError(f"invalid tenant id {tenant_id!r}: use 1-64 letters, digits, '_' or '-'")
    return tenant_id


def default_tenants_file() -> Path:
    return Path(os.environ.get(TENANTS_FILE_ENV, "tenants.yaml"))


_T = TypeVar("_T")


class _Problems:
    """The errors of one tenant entry, collected so that one run names all of them."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def check(self, parse: Callable[[], _T]) -> _T | None:
        """``parse()``, or ``None`` with its error recorded."""
        try:
            return parse()
        except TenantConfigError as exc:
            self.messages.append(str(exc))
            return None


def _require(section: Mapping, key: str, where: str, prefix: str = "") -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TenantConfigError(f"{where}: {prefix}{key} is required")
    return value.strip()


def _env_name(section: Mapping, key: str, where: str, prefix: str, *, required: bool = True) -> str | None:
    """A ``*_env`` key: the *name* of an environment variable (checked, never echoed if invalid:
    a secret pasted in its place must not reach a log)."""
    value = section.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise TenantConfigError(f"{where}: {prefix}{key} is required")
        return None
    if not isinstance(value, str) or not ENV_NAME.fullmatch(value.strip()):
        raise TenantConfigError(
            f"{where}: {prefix}{key} is not an environment variable name (letters, digits and '_', "
            "not starting with a digit): it names the variable that holds the secret, not the secret"
        )
    return value.strip()


def _url(section: Mapping, key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise TenantConfigError(f"{where}: zoho.{key} must be a URL")
    return value.strip().rstrip("/")


def _zoho(raw: object, where: str, problems: _Problems) -> ZohoTenantConfig | None:
    if not isinstance(raw, Mapping):
        problems.add(f"{where}: the zoho section is required (a mapping)")
        return None
    before = len(problems.messages)
    endpoints = problems.check(lambda: _endpoints(raw, where))
    envs = {
        key: problems.check(lambda key=key: _env_name(raw, key, where, "zoho."))
        for key in ("client_id_env", "client_secret_env", "refresh_token_env")
    }
    mapping = problems.check(lambda: _mapping(raw, where))
    threshold = raw.get("bulk_read_threshold", BULK_READ_THRESHOLD)
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0
    ):
        problems.add(f"{where}: zoho.bulk_read_threshold: a record count (>= 0) or null, got {threshold!r}")
    if len(problems.messages) > before or endpoints is None or mapping is None:
        return None
    accounts, api_domain = endpoints
    return ZohoTenantConfig(
        accounts_url=accounts,
        api_domain=api_domain,
        client_id_env=envs["client_id_env"],
        client_secret_env=envs["client_secret_env"],
        refresh_token_env=envs["refresh_token_env"],
        mapping=mapping,
        bulk_read_threshold=threshold,
    )


def _endpoints(raw: Mapping, where: str) -> tuple[str, str | None]:
    """``(accounts_url, api_domain)``: explicit URLs win over ``data_centre``."""
    dc = raw.get("data_centre")
    accounts, api = None, None
    if dc is not None:
        if not isinstance(dc, str) or dc not in DATA_CENTRES:
            shown = repr(dc) if isinstance(dc, str) else f"of type {type(dc).__name__}"
            raise TenantConfigError(
                f"{where}: zoho.data_centre: unknown data_centre {shown} (one of {', '.join(DATA_CENTRES)})"
            )
        accounts, api = DATA_CENTRES[dc]
    accounts = _url(raw, "accounts_url", where) or accounts
    if not accounts:
        raise TenantConfigError(f"{where}: give zoho.data_centre or zoho.accounts_url")
    return accounts.rstrip("/"), (_url(raw, "api_domain", where) or api)


def _moodle(raw: object, where: str, problems: _Problems) -> MoodleTenantConfig | None:
    if raw is None or (isinstance(raw, Mapping) and not raw):
        return None
    if not isinstance(raw, Mapping):
        problems.add(f"{where}: moodle must be a mapping (base_url, token_env, ...)")
        return None
    base_url = problems.check(lambda: _require(raw, "base_url", where, "moodle."))
    token_env = problems.check(lambda: _env_name(raw, "token_env", where, "moodle."))
    drift = problems.check(lambda: _drift(raw.get("drift"), where))
    if base_url is None or token_env is None or drift is None:
        return None
    return MoodleTenantConfig(base_url=base_url.rstrip("/"), token_env=token_env, drift=drift)


def _drift(raw: object, where: str) -> DriftPolicy:
    """``moodle.drift``: ``{restore: bool, moodle_only: {<entity>: <action>}}`` (see DriftPolicy);
    the entities and their actions are those of the Moodle entity table."""
    from sync_pipelines.moodle.entities import ENTITIES

    if raw is None:
        return DriftPolicy()
    if not isinstance(raw, Mapping):
        raise TenantConfigError(f"{where}: moodle.drift must be a mapping (restore, moodle_only)")
    unknown = set(raw) - {"restore", "moodle_only"}
    if unknown:
        raise TenantConfigError(
            f"{where}: moodle.drift has unknown keys {sorted(unknown)}: expected restore, moodle_only"
        )
    restore = raw.get("restore", True)
    if not isinstance(restore, bool):
        raise TenantConfigError(f"{where}: moodle.drift.restore must be true or false, got {restore!r}")
    only = raw.get("moodle_only") or {}
    if not isinstance(only, Mapping):
        raise TenantConfigError(f"{where}: moodle.drift.moodle_only must map an entity to an action")
    allowed = {e.name: e.moodle_only for e in ENTITIES if e.reports_moodle_only}
    for name, action in only.items():
        if name not in allowed:
            raise TenantConfigError(
                f"{where}: moodle.drift.moodle_only.{name}: expected one of {', '.join(allowed)}"
            )
        if action not in allowed[name]:
            raise TenantConfigError(
                f"{where}: moodle.drift.moodle_only.{name} is {action!r}: expected one of {', '.join(allowed[name])}"
            )
    return DriftPolicy(restore=restore, moodle_only=dict(only))


def _webhook_secrets(
    raw: Mapping, where: str, problems: _Problems, warnings: list[str]
) -> tuple[str | None, str | None, str | None]:
    """``(legacy, zoho, moodle)`` variable names; each route falls back to the legacy key."""
    legacy = problems.check(lambda: _env_name(raw, "webhook_secret_env", where, "", required=False))
    zoho = moodle = None
    if isinstance(section := raw.get("zoho"), Mapping):
        zoho = problems.check(
            lambda: _env_name(section, "webhook_secret_env", where, "zoho.", required=False)
        )
    if isinstance(section := raw.get("moodle"), Mapping):
        moodle = problems.check(
            lambda: _env_name(section, "webhook_secret_env", where, "moodle.", required=False)
        )
    if legacy and zoho and moodle:
        warnings.append(
            f"{where}: webhook_secret_env is ignored (zoho.webhook_secret_env and "
            "moodle.webhook_secret_env are set): remove it"
        )
    elif legacy:
        uses = [
            use for use, own in (("the Zoho routes' secret", zoho), ("Moodle's HMAC key", moodle)) if not own
        ]
        warnings.append(
            f"{where}: webhook_secret_env {legacy} is {' and '.join(uses)}: split it into "
            "zoho.webhook_secret_env and moodle.webhook_secret_env, two variables with different secrets"
        )
    elif zoho and zoho == moodle:
        warnings.append(
            f"{where}: zoho.webhook_secret_env and moodle.webhook_secret_env both name {zoho}: give "
            "each its own secret"
        )
    return legacy, zoho or legacy, moodle or legacy


#: A Zoho API name: letters, digits and "_", starting with a letter.
_ZOHO_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_GRADING_KEYS = ("subform", "subform_fields", "grades", "statuses", "attempts", "assessment_prefix")


def _section(raw: object, at: str, keys: Sequence[str]) -> Mapping[str, Any]:
    """A mapping of the ``grading`` section with only ``keys`` (missing or null: empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise TenantConfigError(f"{at} must be a mapping ({', '.join(keys)})")
    unknown = [k for k in raw if k not in keys]
    if unknown:
        shown = ", ".join(repr(k) for k in unknown)
        raise TenantConfigError(f"{at} has unknown keys {shown}: expected {', '.join(keys)}")
    return raw


def _zoho_name(value: object, at: str) -> str:
    if not isinstance(value, str) or not _ZOHO_API_NAME.fullmatch(value.strip()):
        raise TenantConfigError(
            f"{at} must be a Zoho API name (letters, digits and '_', starting with a letter), got {value!r}"
        )
    return value.strip()


def _picklist_value(value: object, at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TenantConfigError(f"{at} must be a picklist value (a non-empty string), got {value!r}")
    return value.strip()


def _picklist_values(value: object, at: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TenantConfigError(f"{at} must be a list of picklist values, got {value!r}")
    values = tuple(_picklist_value(v, f"{at}[{i}]") for i, v in enumerate(value))
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise TenantConfigError(f"{at} lists {', '.join(map(repr, twice))} twice")
    return values


def _grading(raw: object, where: str, mapping: OrgMapping | None) -> tuple[GradingConfig, OrgMapping | None]:
    """``grading``: see :class:`GradingConfig`. Returns the config and ``mapping`` with the
    subform's name in it (``grading.subform`` and ``zoho.fields.grades.Learning_Outcomes_Assessm``
    are one setting), or ``None`` when there is no mapping to check it against (a broken zoho)."""
    at = f"{where}: grading"
    section = _section(raw, at, _GRADING_KEYS)
    subform, mapping = _grading_subform(section, at, mapping)
    attempts = _grading_attempts(section.get("attempts"), f"{at}.attempts")
    config = GradingConfig(
        subform=subform,
        subform_fields=_grading_row_fields(section.get("subform_fields"), f"{at}.subform_fields"),
        grades=_grading_grades(section.get("grades"), f"{at}.grades"),
        statuses=_grading_statuses(section.get("statuses"), f"{at}.statuses"),
        attempts=attempts,
        assessment_prefix=_grading_prefix(
            section.get("assessment_prefix", "BTEC"), f"{at}.assessment_prefix"
        ),
    )
    letter_of: dict[str, str] = {}
    for letter in config.letters_used:
        value = config.grades.value(letter)
        if value in letter_of:
            hint = ""
            if "RR" in (letter, letter_of[value]):
                hint = " (to write R on the last attempt, set grading.attempts.missed_on_last: R)"
            raise TenantConfigError(f"{at}.grades: {letter_of[value]} and {letter} are both {value!r}{hint}")
        letter_of[value] = letter
    return config, mapping


def _grading_prefix(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise TenantConfigError(
            f'{where} must be text (the start of the assessed assignments\' names; "" for all), got {value!r}'
        )
    return value.strip()


def _grading_subform(
    section: Mapping[str, Any], at: str, mapping: OrgMapping | None
) -> tuple[str | None, OrgMapping | None]:
    """The subform's API name, and the mapping that reads it under that name."""
    at = f"{at}.subform"
    mapped = mapping is not None and mapping.is_field_mapped("grades", GRADES_SUBFORM_FIELD)
    in_mapping = mapping.field_api_name("grades", GRADES_SUBFORM_FIELD) if mapping else GRADES_SUBFORM_FIELD
    if "subform" not in section:
        return in_mapping, mapping
    subform = None if section["subform"] is None else _zoho_name(section["subform"], at)
    if mapped and subform != in_mapping:
        raise TenantConfigError(
            f"{at} is {subform!r} but zoho.fields.grades.{GRADES_SUBFORM_FIELD} is {in_mapping!r}: "
            "they name the same subform; give it once"
        )
    if mapping is None or mapped or subform == GRADES_SUBFORM_FIELD:
        return subform, mapping
    # Another name (or null: the org has no such subform) is the grades module's mapping too.
    for spec_field in MODULES_BY_NAME["grades"].fields:
        theirs = mapping.field_api_name("grades", spec_field.api_name)
        if subform is not None and spec_field.api_name != GRADES_SUBFORM_FIELD and theirs == subform:
            raise TenantConfigError(
                f"{at} is {subform!r}, the org's name of BTEC_Grades.{spec_field.api_name} too"
            )
    fields = sorted([*mapping.fields, ("grades", GRADES_SUBFORM_FIELD, subform)], key=lambda t: t[:2])
    return subform, OrgMapping(modules=mapping.modules, fields=tuple(fields))


def _grading_row_fields(raw: object, at: str) -> SubformFields:
    roles = ("code", "title", "achieved", "feedback")
    given = _section(raw, at, roles)
    row_fields = SubformFields(**{k: _zoho_name(v, f"{at}.{k}") for k, v in given.items()})
    role_of: dict[str, str] = {}
    for role in roles:
        name = getattr(row_fields, role)
        if name in role_of:
            raise TenantConfigError(f"{at}: {role_of[name]} and {role} are both {name!r}")
        role_of[name] = role
    return row_fields


def _grading_grades(raw: object, at: str) -> GradeValues:
    given = _section(raw, at, LETTERS)
    return GradeValues(**{k: _picklist_value(v, f"{at}.{k}") for k, v in given.items()})


def _grading_statuses(raw: object, at: str) -> StatusValues:
    given = _section(raw, at, ("marked", "forward", "before"))
    statuses = StatusValues(
        **{
            key: _picklist_value(value, f"{at}.{key}")
            if key == "marked"
            else _picklist_values(value, f"{at}.{key}")
            for key, value in given.items()
        }
    )
    if statuses.marked in (*statuses.forward, *statuses.before):
        raise TenantConfigError(f"{at}: marked {statuses.marked!r} must not be listed in forward or before")
    both = [v for v in statuses.forward if v in statuses.before]
    if both:
        raise TenantConfigError(f"{at}: {', '.join(map(repr, both))} in both forward and before")
    return statuses


def _grading_attempts(raw: object, at: str) -> AttemptPolicy:
    given = _section(raw, at, ("last", "missed_on_last"))
    last = given.get("last", AttemptPolicy.last)
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise TenantConfigError(
            f"{at}.last must be a whole number, 1 or more (the last attempt allowed), or null for no "
            f"limit, got {last!r}"
        )
    missed = given.get("missed_on_last", AttemptPolicy.missed_on_last)
    if missed not in LAST_ATTEMPT_LETTERS:
        raise TenantConfigError(
            f"{at}.missed_on_last must be one of {', '.join(LAST_ATTEMPT_LETTERS)} (a letter: its "
            f"picklist value is under grading.grades), got {missed!r}"
        )
    return AttemptPolicy(last=last, missed_on_last=missed)


def _our_module(key: object, where: str) -> str:
    """Our module name for a mapping key: a module name (``students``) or API name."""
    spec = (MODULES_BY_NAME.get(key) or MODULES_BY_API_NAME.get(key)) if isinstance(key, str) else None
    if spec is None:
        names = ", ".join(m.name for m in MODULES)
        raise TenantConfigError(f"{where}: unknown module {key!r} (one of {names}, or their API names)")
    return spec.name


def _api_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TenantConfigError(f"{where}: expected the org's API name (a non-empty string), got {value!r}")
    return value.strip()


def _mapping(raw: dict, where: str) -> OrgMapping:
    """``zoho.modules`` and ``zoho.fields``: keys are checked against the module table."""
    modules_raw = raw.get("modules") or {}
    fields_raw = raw.get("fields") or {}
    if not isinstance(modules_raw, Mapping):
        raise TenantConfigError(f"{where}: zoho.modules must map our modules to the org's API names")
    if not isinstance(fields_raw, Mapping):
        raise TenantConfigError(f"{where}: zoho.fields must map our modules to {{field: API name}}")

    modules: dict[str, str] = {}
    for key, value in modules_raw.items():
        at = f"{where}: zoho.modules.{key}"
        name = _our_module(key, at)
        if name in modules:
            raise TenantConfigError(f"{at}: module {name} is mapped twice")
        modules[name] = _api_name(value, at)
    seen: dict[str, str] = {}
    for name, api in modules.items():
        if api in seen:
            raise TenantConfigError(f"{where}: zoho.modules maps both {seen[api]} and {name} to {api}")
        seen[api] = name

    fields: list[tuple[str, str, str | None]] = []
    done: set[str] = set()
    for key, per_field in fields_raw.items():
        at = f"{where}: zoho.fields.{key}"
        name = _our_module(key, at)
        if name in done:
            raise TenantConfigError(f"{at}: module {name} is mapped twice")
        done.add(name)
        if not isinstance(per_field, Mapping):
            raise TenantConfigError(f"{at}: expected {{our field API name: the org's API name or null}}")
        spec = MODULES_BY_NAME[name]
        ours = {f.api_name for f in spec.fields}
        targets: dict[str, str] = {}
        for field_name, value in per_field.items():
            field_at = f"{at}.{field_name}"
            if field_name not in ours:
                raise TenantConfigError(
                    f"{field_at}: {spec.api_name} has no field {field_name!r} in the module table "
                    f"(keys are our API names: {', '.join(sorted(ours))})"
                )
            theirs = None if value is None else _api_name(value, field_at)
            if theirs is not None:
                if theirs in targets:
                    raise TenantConfigError(
                        f"{at}: both {targets[theirs]} and {field_name} are mapped to {theirs}"
                    )
                targets[theirs] = field_name
            fields.append((name, field_name, theirs))
    return OrgMapping(
        modules=tuple(sorted(modules.items())), fields=tuple(sorted(fields, key=lambda t: t[:2]))
    )


_ALERTS_KEYS = ("slack_webhook_env", "email")
_EMAIL_KEYS = (
    "to",
    "from",
    "smtp_host",
    "smtp_port",
    "smtp_username_env",
    "smtp_password_env",
    "starttls",
    "ssl",
)
#: A plain e-mail address: no display name, no white space (so no header can be smuggled in).
_EMAIL_ADDRESS = re.compile(r"[^@\s<>,;\"()\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_alerts(raw: object, where: str, warnings: list[str] | None = None) -> AlertsConfig:
    """``alerts``: see :class:`AlertsConfig` (missing, null or empty: no channel).

    Args:
        raw: the section as written.
        where: the tenant (or the settings), for messages.
        warnings: collects what is usable but unwise (a password sent without TLS).

    Raises:
        TenantConfigError: naming the key and what is wrong, never a value that may be a secret.
    """
    at = f"{where}: alerts"
    section = _section(raw, at, _ALERTS_KEYS)
    slack = _env_name(section, "slack_webhook_env", where, "alerts.", required=False)
    email = section.get("email")
    return AlertsConfig(
        slack_webhook_env=slack,
        email=None if email is None else _email_alerts(email, where, warnings),
    )


def _email_address(value: object, at: str) -> str:
    if not isinstance(value, str) or not _EMAIL_ADDRESS.fullmatch(value.strip()):
        shown = repr(value) if isinstance(value, str) and len(value) <= 120 else f"a {type(value).__name__}"
        raise TenantConfigError(f"{at} must be a plain e-mail address (name@domain), got {shown}")
    return value.strip()


def _email_alerts(raw: object, where: str, warnings: list[str] | None) -> EmailAlerts:
    at = f"{where}: alerts.email"
    section = _section(raw, at, _EMAIL_KEYS)
    to_raw = section.get("to")
    if isinstance(to_raw, str):
        to_raw = [to_raw]
    if not isinstance(to_raw, list) or not to_raw:
        raise TenantConfigError(f"{at}.to is required: an e-mail address, or a list of them")
    to = tuple(dict.fromkeys(_email_address(v, f"{at}.to[{i}]") for i, v in enumerate(to_raw)))
    if section.get("from") is None:
        raise TenantConfigError(f"{at}.from is required (the sender's address)")
    sender = _email_address(section.get("from"), f"{at}.from")
    host = section.get("smtp_host")
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host.strip()):
        raise TenantConfigError(f"{at}.smtp_host is required (the SMTP server's host name)")
    port = section.get("smtp_port", 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise TenantConfigError(f"{at}.smtp_port must be a port number (1-65535), got {port!r}")
    flags = {}
    for key, default in (("starttls", "ssl" not in section or not section.get("ssl")), ("ssl", False)):
        value = section.get(key, default)
        if not isinstance(value, bool):
            raise TenantConfigError(f"{at}.{key} must be true or false, got {value!r}")
        flags[key] = value
    if flags["starttls"] and flags["ssl"]:
        raise TenantConfigError(
            f"{at}: starttls and ssl are both true: ssl is TLS from the start (port 465), starttls "
            "upgrades a plain connection (port 587); choose one"
        )
    username = _env_name(section, "smtp_username_env", where, "alerts.email.", required=False)
    password = _env_name(section, "smtp_password_env", where, "alerts.email.", required=False)
    if bool(username) != bool(password):
        raise TenantConfigError(
            f"{at}: give both smtp_username_env and smtp_password_env (a login), or neither"
        )
    if password and not (flags["starttls"] or flags["ssl"]) and warnings is not None:
        warnings.append(
            f"{at}: the SMTP password in {password} travels unencrypted (starttls and ssl are false)"
        )
    return EmailAlerts(
        to=to,
        sender=sender,
        smtp_host=host.strip(),
        smtp_port=port,
        smtp_username_env=username,
        smtp_password_env=password,
        starttls=flags["starttls"],
        ssl=flags["ssl"],
    )


@dataclass(frozen=True)
class _Entry:
    """One entry of the ``tenants`` list, parsed: a tenant, or the error that keeps it out."""

    key: str  # the tenant id if valid, else "tenants[i]"
    label: str  # "tenants[i]"
    tenant: Tenant | None
    error: str | None
    warnings: tuple[str, ...] = ()


def _entry(raw: object, index: int, source: str) -> _Entry:
    label = f"tenants[{index}]"
    if not isinstance(raw, Mapping):
        error = f"{source}: {label}: expected a mapping with an id, got {type(raw).__name__}"
        return _Entry(label, label, None, error)
    problems = _Problems()
    tid = problems.check(lambda: validate_tenant_id(raw.get("id")))
    if tid is None:
        problems.messages[0] = f"{source}: {label}: {problems.messages[0]}"
    key = tid or label
    where = f"{source}: tenant {tid}" if tid else f"{source}: {label}"
    warnings: list[str] = []
    zoho = _zoho(raw.get("zoho"), where, problems)
    moodle = _moodle(raw.get("moodle"), where, problems)
    legacy, zoho_secret, moodle_secret = _webhook_secrets(raw, where, problems, warnings)
    parsed = problems.check(lambda: _grading(raw.get("grading"), where, zoho.mapping if zoho else None))
    grading = GradingConfig()
    if parsed is not None:
        grading, mapping = parsed
        if zoho is not None and mapping is not None:
            zoho = replace(zoho, mapping=mapping)
    alerts = problems.check(lambda: parse_alerts(raw.get("alerts"), where, warnings))
    if problems.messages or tid is None or zoho is None:
        # Every message starts with `where`: say it once.
        details = "; ".join(m.removeprefix(f"{where}: ") for m in problems.messages)
        return _Entry(key, label, None, f"{where}: {details}")
    name = raw.get("name")
    tenant = Tenant(
        id=tid,
        name=str(name) if name not in (None, "") else tid,
        zoho=zoho,
        moodle=moodle,
        webhook_secret_env=legacy,
        zoho_webhook_secret_env=zoho_secret,
        moodle_webhook_secret_env=moodle_secret,
        grading=grading,
        alerts=alerts or AlertsConfig(),
    )
    return _Entry(key, label, tenant, None, tuple(warnings))


def parse_tenant_set(document: object, *, source: str = "tenants file") -> TenantSet:
    """Parse a tenants document, each tenant on its own.

    Args:
        document: the parsed YAML.
        source: the file's name, for messages.

    Returns:
        The usable tenants, and the error of each broken one. A tenant id listed twice is broken
        (both entries): which one is meant is ambiguous.

    Raises:
        TenantConfigError: the document has no ``tenants`` list.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("tenants"), list):
        raise TenantConfigError(f"{source}: expected a mapping with a 'tenants' list")
    entries = [_entry(raw, i, source) for i, raw in enumerate(document["tenants"])]
    by_key: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_key.setdefault(entry.key, []).append(entry)
    tenants: dict[str, Tenant] = {}
    broken: dict[str, str] = {}
    warnings: list[str] = []
    for key, same in by_key.items():
        if len(same) > 1:
            labels = ", ".join(e.label for e in same)
            broken[key] = (
                f"{source}: tenant {key}: listed twice ({labels}): neither entry is used until only one is left"
            )
        elif same[0].tenant is None:
            broken[key] = same[0].error or f"{source}: {key}: unusable"
        else:
            tenants[key] = same[0].tenant
            warnings.extend(same[0].warnings)
    return TenantSet(tenants=tenants, broken=broken, warnings=tuple(warnings), source=source)


def parse_tenants(document: object, *, source: str = "tenants file") -> dict[str, Tenant]:
    """Parse a tenants document strictly: every tenant must be usable (for tests and checks).

    Returns:
        The tenants by id.

    Raises:
        TenantConfigError: the document has no ``tenants`` list, or some tenant is broken; the
            message has one line per broken tenant.
    """
    tenant_set = parse_tenant_set(document, source=source)
    if tenant_set.broken:
        raise TenantConfigError("\n".join(tenant_set.broken.values()))
    return dict(tenant_set.tenants)


def read_tenants(path: str | Path | None = None) -> TenantSet:
    """Read the tenants file (``path``, else ``$SYNC_TENANTS_FILE``, else ``tenants.yaml``).

    Nothing is logged: see :meth:`TenantSet.log_problems`, or :func:`load_tenants`.

    Returns:
        The usable tenants and the error of each broken one.

    Raises:
        TenantConfigError: the file as a whole is unusable: missing, unreadable, not YAML, or
            without a ``tenants`` list.
    """
    path = Path(path) if path else default_tenants_file()
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError as exc:
        raise TenantConfigError(f"tenants file {path} not found (set {TENANTS_FILE_ENV})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TenantConfigError(f"tenants file {path} cannot be read: {exc}") from exc
    return _parse_text(text, str(path))


#: PyYAML's safe loader in C (libyaml, in PyYAML's wheels), else in Python: the same documents.
#: Measured by the capacity benchmark: a tenants file of 1,000 schools parses in 0.18 CPU-s with
#: it, 0.69 without, paid once by every run process.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=32)
def _parse_text(text: str, source: str) -> TenantSet:
    """The tenants file's text, parsed once per process for each text it has had: every step and
    sensor of a run reads the file again (an edit is seen at once), but YAML and the checks run
    only when it changed. The result is immutable (frozen dataclasses); secrets are read from the
    environment when used, not here."""
    try:
        document = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader: CSafeLoader or SafeLoader
    except yaml.YAMLError as exc:
        raise TenantConfigError(f"tenants file {source} is not valid YAML: {exc}") from exc
    return parse_tenant_set(document, source=source)


def load_tenants(path: str | Path | None = None) -> dict[str, Tenant]:
    """The usable tenants of the tenants file, by id; one warning logged per broken tenant.

    Raises:
        TenantConfigError: the file as a whole is unusable (see :func:`read_tenants`).
    """
    tenant_set = read_tenants(path)
    tenant_set.log_problems(logger)
    return dict(tenant_set.tenants)


def partition_changes(
    wanted: set[str] | frozenset[str], existing: set[str]
) -> list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]:
    """The requests that make the partitions equal the tenants of the file."""
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if add := sorted(wanted - existing):
        requests.append(tenant_partitions.build_add_request(add))
    if remove := sorted(existing - wanted):
        requests.append(tenant_partitions.build_delete_request(remove))
    return requests


@dg.sensor(
    name="tenants_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the `tenants` partitions equal to the schools listed in the tenants file.",
)
def tenants_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Add partitions for new schools, remove those no longer listed.

    A broken school keeps its partition; each broken school is named, with its error, in the skip
    reason, or (a result with requests carries no reason) in the sensor's log.
    """
    try:
        tenant_set = read_tenants()
    except TenantConfigError as exc:
        return dg.SkipReason(str(exc))
    existing = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    requests = partition_changes(tenant_set.partition_ids, existing)
    broken = list(tenant_set.broken.values())
    if not requests:
        reason = "partitions already match the tenants file"
        if broken:
            reason += f"; {len(broken)} tenant(s) broken: " + "; ".join(broken)
        return dg.SkipReason(reason)
    for message in broken:
        context.log.warning(f"tenant broken (its partition is kept, its runs fail): {message}")
    return dg.SensorResult(dynamic_partitions_requests=requests)


def sync_partitions(instance: dg.DagsterInstance, tenants: Mapping[str, Tenant] | TenantSet) -> None:
    """Make the instance's tenant partitions match ``tenants`` (for scripts and the demo).

    Given a :class:`TenantSet`, its :attr:`~TenantSet.partition_ids` (broken schools included).
    """
    wanted = set(tenants.partition_ids if isinstance(tenants, TenantSet) else tenants)
    existing = set(instance.get_dynamic_partitions(tenant_partitions.name))
    if add := sorted(wanted - existing):
        instance.add_dynamic_partitions(tenant_partitions.name, add)
    for gone in sorted(existing - wanted):
        instance.delete_dynamic_partition(tenant_partitions.name, gone)
