"""The webhook receiver: a small Starlette app that authenticates POSTs and turns them into drop files.

Routes (every answer is JSON):

========================================  ===============================================================
``POST /v1/webhooks/zoho/{tenant}``       Zoho workflow-rule webhook (JSON or form) → ``zoho.notification``
``POST /v1/webhooks/moodle/{tenant}``     Moodle observer event, ``get_data()`` (+ ``grade_item``) → ``moodle.event``
``POST /v1/sync/{entity}``                seed path: ``{"data": [records]}``, ``X-Tenant-ID`` → ``zoho.records``
``POST /v1/events/moodle/{name}``         seed path: a Moodle event, ``X-Tenant-ID`` → ``moodle.event``
``GET /v1/health``                        ``{"status": "ok"}``
========================================  ===============================================================

Authentication is per tenant, with the secret named by the tenant's ``webhook_secret_env``: an
HMAC-SHA256 signature with a five-minute replay window (:mod:`sync_pipelines.webhooks.signing`), or,
on the Zoho and ``/v1/sync`` routes only, ``Authorization: Bearer <secret>`` (Zoho workflow webhooks
cannot sign). A tenant without a secret is refused, never open. Unknown tenants get the same 401 as
bad signatures, so tenant ids cannot be probed.

Checks run cheapest first, and the body is read only once the headers are acceptable: route (404),
``Content-Length`` (413), tenant and credentials (401), body size while streaming (413) and time
(408), signature (401), content type (415), syntax (400), shape (422). Then the event is written
(:func:`sync_pipelines.webhooks.drop.write_event`) and answered 202, a duplicate included.
"""

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync_pipelines.tenants import TENANT_ID, Tenant, TenantConfigError, load_tenants
from sync_pipelines.webhooks.drop import (
    MOODLE_EVENTS,
    DropSource,
    validate_event_id,
    write_event,
)
from sync_pipelines.webhooks.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    check_bearer,
    check_timestamp,
    verify,
)
from sync_pipelines.zoho.modules import MODULES_BY_API_NAME

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_048_576
#: JSON nested deeper than this is refused: the drop file must stay readable by the sensors, whose
#: stack is deeper than the receiver's (Python's JSON parser gives up near 1000 levels).
MAX_JSON_DEPTH = 64
#: A client that has not sent its whole body after this many seconds is cut off (slow-loris guard).
BODY_TIMEOUT_SECONDS = 30.0
TENANT_HEADER = "X-Tenant-ID"
AUTH_FAILED = "authentication failed"
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"

#: Seed path ``/v1/sync/{entity}`` → Zoho module API name.
SYNC_ENTITIES: dict[str, str] = {
    "students": "BTEC_Students",
    "teachers": "BTEC_Teachers",
    "programs": "Products",
    "units": "BTEC",
    "classes": "BTEC_Classes",
    "enrollments": "BTEC_Enrollments",
    "registrations": "BTEC_Registrations",
    "payments": "BTEC_Payments",
    "grades": "BTEC_Grades",
}
#: Seed path ``/v1/events/moodle/{name}`` → Moodle core event name.
SEED_MOODLE_EVENTS: dict[str, str] = {
    "user_created": "\\core\\event\\user_created",
    "user_updated": "\\core\\event\\user_updated",
    "enrollment_created": "\\core\\event\\user_enrolment_created",
    "grade_updated": "\\core\\event\\user_graded",
}
#: What a Zoho admin may write as ``event_type`` → the canonical value.
ZOHO_EVENT_TYPES: dict[str, str] = {
    "created": "created",
    "create": "created",
    "updated": "updated",
    "update": "updated",
    "edited": "updated",
    "edit": "updated",
    "deleted": "deleted",
    "delete": "deleted",
}
_RECORD_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INT_TEXT = re.compile(r"^[+-]?[0-9]+(\.0*)?$")
_FLOAT_TEXT = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class Rejected(Exception):
    """A request refused with a 4xx (or 503) answer.

    Attributes:
        status: the HTTP status.
        reason: the message sent back to the client.
        detail: what went wrong, for the log only (401s all send the same reason).
    """

    def __init__(self, status: int, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail or reason


class PayloadError(ValueError):
    """Valid JSON or form data that does not have the shape of the event (answered 422)."""


@dataclass(frozen=True)
class Normalised:
    """A request body turned into a drop event.

    Attributes:
        kind: the drop kind.
        payload: the normalised payload.
        event_id: the sender's event id, if it gave one.
        dedup_key: what identifies the content for duplicate detection, when not the payload alone.
    """

    kind: str
    payload: dict
    event_id: str | None = None
    dedup_key: object | None = None


# --- coercion -------------------------------------------------------------------------------------


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def coerce_int(value: object, name: str, *, optional: bool = False) -> int | None:
    """An integer from ``2``, ``"2"``, ``2.0`` or ``"2.00000"`` (Moodle sends any of them).

    Args:
        value: the value as received.
        name: the field name, for the error.
        optional: ``None`` and ``""`` give ``None`` instead of an error.

    Returns:
        The integer, or ``None`` for an optional missing value.

    Raises:
        PayloadError: anything else, booleans included.
    """
    if value is None or value == "":
        if optional:
            return None
        raise PayloadError(f"{name} is required")
    if isinstance(value, bool):
        raise PayloadError(f"{name} must be an integer, got {_short(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.match(value.strip()) and len(value) <= 40:
        return int(value.strip().split(".")[0])
    raise PayloadError(f"{name} must be an integer, got {_short(value)}")


def coerce_float(value: object, name: str, *, optional: bool = False) -> float | None:
    """A finite float from ``87.5``, ``"87.50000"`` or ``87``.

    Args:
        value: the value as received.
        name: the field name, for the error.
        optional: ``None`` and ``""`` give ``None`` instead of an error.

    Returns:
        The float, or ``None`` for an optional missing value.

    Raises:
        PayloadError: not a finite number.
    """
    if value is None or value == "":
        if optional:
            return None
        raise PayloadError(f"{name} is required")
    number: float | None = None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            number = float(value.strip())
    except OverflowError:  # an integer beyond any float: JSON allows 4300 digits
        number = None
    if number is None or not math.isfinite(number):
        raise PayloadError(f"{name} must be a number, got {_short(value)}")
    return number


def coerce_bool(value: object, name: str, *, default: bool | None = None) -> bool:
    """A boolean from ``true``, ``1``, ``"1"``, ``"true"``, ``""`` (PHP's false) and the like.

    Args:
        value: the value as received.
        name: the field name, for the error.
        default: the answer for ``None``; ``None`` makes a missing value an error.

    Raises:
        PayloadError: not recognisably a boolean.
    """
    if value is None:
        if default is None:
            raise PayloadError(f"{name} is required")
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise PayloadError(f"{name} must be true or false, got {_short(value)}")


def _text(fields: Mapping[str, object], name: str) -> str:
    value = fields.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{name} is required")
    return value.strip()


def _event_id(fields: Mapping[str, object]) -> str | None:
    value = fields.get("event_id")
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    try:
        return validate_event_id(value.strip() if isinstance(value, str) else value)
    except ValueError as exc:
        raise PayloadError(str(exc)) from exc


# --- normalisers ----------------------------------------------------------------------------------


def _record_ids(value: object) -> list[str]:
    if isinstance(value, str):
        items: list[object] = value.split(",")
    elif isinstance(value, list):
        items = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        raise PayloadError("record_id (or ids, comma-separated) is required")
    ids: list[str] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str):
            raise PayloadError(f"record id {_short(item)} is not a string")
        if item := item.strip():
            if not _RECORD_ID.match(item):
                raise PayloadError(f"record id {_short(item)} is not a Zoho record id")
            ids.append(item)
    if not ids:
        raise PayloadError("record_id (or ids, comma-separated) is required")
    return list(dict.fromkeys(ids))


def zoho_notification(fields: Mapping[str, object]) -> Normalised:
    """A Zoho workflow-rule webhook body → ``zoho.notification``.

    Args:
        fields: the JSON object or form fields: ``module``, ``event_type``, ``record_id`` (or
            ``ids``, comma-separated, or a JSON list), optional ``event_id`` and ``timestamp``.

    Returns:
        The event. Without an ``event_id``, the id is derived from the payload and the sender's
        ``timestamp``, so a redelivery collapses but two edits of the same record do not.

    Raises:
        PayloadError: unknown module, unknown event type, no record id, bad event id.
    """
    module = _text(fields, "module")
    if module not in MODULES_BY_API_NAME:
        raise PayloadError(
            f"unknown module {_short(module)}: expected one of {', '.join(MODULES_BY_API_NAME)}"
        )
    event_type = ZOHO_EVENT_TYPES.get(_text(fields, "event_type").lower())
    if event_type is None:
        raise PayloadError("event_type must be created, updated or deleted")
    raw_ids = fields["record_id"] if fields.get("record_id") not in (None, "") else fields.get("ids")
    payload = {"module": module, "event_type": event_type, "record_ids": _record_ids(raw_ids)}
    event_id = _event_id(fields)
    timestamp = fields.get("timestamp")
    # The payload carries no time: without one, two genuine edits of a record would look identical.
    if timestamp not in (None, ""):
        dedup_key: object | None = {"payload": payload, "timestamp": str(timestamp).strip()}
    elif event_id is not None:
        dedup_key = {"payload": payload, "event_id": event_id}
    else:
        dedup_key = None
    return Normalised("zoho.notification", payload, event_id, dedup_key)


def zoho_records(fields: Mapping[str, object], module: str) -> Normalised:
    """A seed push ``{"data": [records]}`` → ``zoho.records`` (records kept as sent).

    Args:
        fields: the JSON object.
        module: the Zoho module API name the route names.

    Raises:
        PayloadError: ``data`` missing, empty, or holding something other than records with an id.
    """
    data = fields.get("data")
    if not isinstance(data, list) or not data:
        raise PayloadError("'data' must be a non-empty list of records")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise PayloadError(f"data[{i}] is not an object")
        rid = record.get("id")
        if isinstance(rid, bool) or not isinstance(rid, str | int) or rid == "":
            raise PayloadError(f"data[{i}] has no id")
    return Normalised("zoho.records", {"module": module, "records": data}, _event_id(fields))


def _other(value: object) -> dict | None:
    if value is None or value == [] or value == "":
        return None  # PHP's json_encode writes an empty array as []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON text nested too deep
            raise PayloadError("other must be an object or null") from exc
        if _too_deep(value):
            raise PayloadError(f"other is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(value, dict):
        raise PayloadError("other must be an object or null")
    return value


def _grade_item(value: object) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PayloadError("grade_item must be an object or null")
    itemtype = value.get("itemtype")
    if not isinstance(itemtype, str) or not itemtype.strip():
        raise PayloadError("grade_item.itemtype is required")
    itemtype = itemtype.strip()
    itemmodule = value.get("itemmodule")
    if itemmodule is not None and not isinstance(itemmodule, str):
        raise PayloadError("grade_item.itemmodule must be a string or null")
    return {
        "id": coerce_int(value.get("id"), "grade_item.id"),
        "itemtype": itemtype,
        "itemmodule": itemmodule or None,
        "grademax": coerce_float(value.get("grademax"), "grade_item.grademax"),
        "is_course_total": coerce_bool(
            value.get("is_course_total"), "grade_item.is_course_total", default=itemtype == "course"
        ),
    }


def moodle_event(fields: Mapping[str, object], *, eventname: str | None = None) -> Normalised:
    """A Moodle event's ``get_data()`` (plus optional ``grade_item``) → ``moodle.event``.

    Types are coerced explicitly: ids and times arrive as ``2`` or ``"2"``, ``finalgrade`` as
    ``87.5``, ``"87.50000"`` or null, booleans as ``true``, ``1`` or ``""``.

    Args:
        fields: the JSON object.
        eventname: the event a seed route implies; a body naming another event is refused.

    Raises:
        PayloadError: unsupported event, a field that cannot be coerced, ids that disagree.
    """
    given = fields.get("eventname")
    if given is not None and not isinstance(given, str):
        raise PayloadError("eventname must be a string")
    name = "\\" + given.strip().lstrip("\\") if given else None
    if eventname is not None:
        if name is not None and name != eventname:
            raise PayloadError(f"eventname {_short(given)} does not match the route ({_short(eventname)})")
        name = eventname
    if name is None:
        raise PayloadError("eventname is required")
    if name not in MOODLE_EVENTS:
        raise PayloadError(
            f"unsupported eventname {_short(given)}: expected one of {', '.join(sorted(MOODLE_EVENTS))}"
        )
    other = _other(fields.get("other"))
    if name.endswith("\\user_graded"):
        if other is None:
            raise PayloadError("other.itemid is required for user_graded")
        other = {
            **other,
            "itemid": coerce_int(other.get("itemid"), "other.itemid"),
            "overridden": coerce_bool(other.get("overridden"), "other.overridden", default=False),
            "finalgrade": coerce_float(other.get("finalgrade"), "other.finalgrade", optional=True),
        }
    grade_item = _grade_item(fields.get("grade_item"))
    if (
        grade_item is not None
        and other is not None
        and "itemid" in other
        and other["itemid"] != grade_item["id"]
    ):
        raise PayloadError("grade_item.id does not match other.itemid")
    payload = {
        "eventname": name,
        "objectid": coerce_int(fields.get("objectid"), "objectid"),
        "relateduserid": coerce_int(fields.get("relateduserid"), "relateduserid", optional=True),
        "courseid": coerce_int(fields.get("courseid"), "courseid", optional=True),
        "userid": coerce_int(fields.get("userid"), "userid", optional=True),
        "contextinstanceid": coerce_int(fields.get("contextinstanceid"), "contextinstanceid", optional=True),
        "other": other,
        "timecreated": coerce_int(fields.get("timecreated"), "timecreated"),
        "grade_item": grade_item,
    }
    return Normalised("moodle.event", payload, _event_id(fields))


# --- the receiver ---------------------------------------------------------------------------------


class TenantsFile:
    """The tenants file, re-read when it changes (a new school needs no restart).

    A change that does not parse is logged and ignored: the receiver keeps the last good tenants.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._tenants = load_tenants(self.path)  # fail fast at start-up
        self._stamp = self._fingerprint()

    def _fingerprint(self) -> tuple[int, int, int] | None:
        # Size and inode as well as the time: file times are only as fine as the kernel's clock tick.
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def tenants(self) -> dict[str, Tenant]:
        """The tenants by id, reloaded if the file changed since the last look."""
        stamp = self._fingerprint()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._tenants = load_tenants(self.path)
                logger.info("tenants file %s reloaded: %d tenant(s)", self.path, len(self._tenants))
            except TenantConfigError as exc:
                logger.error("tenants file changed but is not usable, keeping the previous tenants: %s", exc)
        return self._tenants


def _reject(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "rejected", "reason": reason}, status_code=status, headers=headers)


def _reject_json(text: str) -> object:
    raise ValueError(f"{text} is not JSON")


def _too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests lists and objects more than ``limit`` levels deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


@dataclass(frozen=True)
class _Route:
    source: DropSource
    bearer: bool  # Authorization: Bearer accepted as well as a signature
    form: bool  # application/x-www-form-urlencoded accepted as well as JSON


_ZOHO = _Route("zoho", bearer=True, form=True)
_SEED_RECORDS = _Route("zoho", bearer=True, form=False)
_MOODLE = _Route("moodle", bearer=False, form=False)


class Receiver:
    """The request handlers, sharing the tenants, the drop root, the limits and the clock."""

    def __init__(
        self,
        tenants: TenantsFile,
        drop_root: Path,
        *,
        max_body_bytes: int,
        clock: Callable[[], float],
        body_timeout: float,
    ) -> None:
        self.tenants = tenants
        self.drop_root = Path(drop_root)
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self.body_timeout = body_timeout

    # -- steps --

    def _check_length(self, request: Request) -> None:
        value = request.headers.get("content-length")
        if value is None:
            return
        if not value.strip().isdigit():
            raise Rejected(400, "invalid Content-Length")
        if int(value) > self.max_body_bytes:
            raise Rejected(413, f"body larger than {self.max_body_bytes} bytes")

    def _authenticate(self, tenant_id: str | None) -> tuple[str, str]:
        """``(tenant_id, secret)`` of a known tenant with a configured secret, else a 401."""
        if tenant_id is None or not TENANT_ID.match(tenant_id):
            raise Rejected(401, AUTH_FAILED, f"invalid tenant id {_short(tenant_id)}")
        tenant = self.tenants.tenants().get(tenant_id)
        if tenant is None:
            raise Rejected(401, AUTH_FAILED, f"unknown tenant {tenant_id}")
        if not tenant.webhook_secret_env:
            raise Rejected(401, AUTH_FAILED, f"tenant {tenant_id} has no webhook_secret_env")
        try:
            return tenant_id, tenant.secret(tenant.webhook_secret_env)
        except TenantConfigError as exc:
            raise Rejected(401, AUTH_FAILED, str(exc)) from exc

    async def _read_body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        # Stop reading: the rest of a chunked body is never pulled in.
                        raise Rejected(413, f"body larger than {self.max_body_bytes} bytes")
                    chunks.append(chunk)
        except TimeoutError as exc:
            raise Rejected(408, f"body not received within {self.body_timeout:g} s") from exc
        except ClientDisconnect as exc:
            raise Rejected(400, "client disconnected before the body was complete") from exc
        return b"".join(chunks)

    def _fields(self, request: Request, body: bytes, route: _Route) -> Mapping[str, object]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == JSON_TYPE or (ctype.startswith("application/") and ctype.endswith("+json")):
            try:
                doc = json.loads(body.decode("utf-8"), parse_constant=_reject_json)
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise Rejected(400, "body is not valid JSON") from exc
            if not isinstance(doc, dict):
                raise Rejected(422, f"expected a JSON object, got {type(doc).__name__}")
            if _too_deep(doc):
                raise Rejected(422, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            return doc
        if route.form and ctype == FORM_TYPE:
            try:
                text = body.decode("utf-8")
                pairs = parse_qsl(
                    text,
                    keep_blank_values=True,
                    strict_parsing=bool(text),
                    errors="strict",
                    max_num_fields=100,
                )
            except (UnicodeDecodeError, ValueError) as exc:
                raise Rejected(400, "body is not valid form data") from exc
            fields: dict[str, object] = {}
            for key, value in pairs:
                if key in fields:
                    raise Rejected(400, f"form field {_short(key)} given twice")
                fields[key] = value
            return fields
        accepted = f"{JSON_TYPE} or {FORM_TYPE}" if route.form else JSON_TYPE
        raise Rejected(415, f"unsupported content type {ctype or 'none'!r}: send {accepted}")

    async def _receive(
        self,
        request: Request,
        tenant_id: str | None,
        route: _Route,
        normalise: Callable[[Mapping[str, object]], Normalised],
    ) -> JSONResponse:
        try:
            self._check_length(request)
            tenant_id, secret = self._authenticate(tenant_id)
            headers = request.headers
            use_bearer = route.bearer and SIGNATURE_HEADER not in headers and "authorization" in headers
            try:
                if use_bearer:
                    if not check_bearer(secret, headers.get("authorization")):
                        raise SignatureError("bearer token does not match")
                else:
                    # The timestamp is checked before the body is read: stale requests cost nothing.
                    check_timestamp(headers.get(TIMESTAMP_HEADER), now=self.clock())
                body = await self._read_body(request)
                if not use_bearer:
                    verify(
                        secret,
                        body,
                        headers.get(TIMESTAMP_HEADER),
                        headers.get(SIGNATURE_HEADER),
                        now=self.clock(),
                    )
            except SignatureError as exc:
                raise Rejected(401, AUTH_FAILED, f"tenant {tenant_id}: {exc}") from exc
            fields = self._fields(request, body, route)
            try:
                event = normalise(fields)
            except ValueError as exc:  # PayloadError, or a value no coercion could take
                raise Rejected(422, str(exc)) from exc
            received_at = datetime.fromtimestamp(self.clock(), UTC)
            try:
                event_id, path = await run_in_threadpool(
                    write_event,
                    self.drop_root,
                    tenant_id,
                    route.source,
                    event.kind,
                    event.payload,
                    event_id=event.event_id,
                    received_at=received_at,
                    dedup_key=event.dedup_key,
                )
            except OSError as exc:
                logger.exception("could not store a %s event for tenant %s", event.kind, tenant_id)
                raise Rejected(503, "could not store the event, retry later") from exc
            except ValueError as exc:
                raise Rejected(422, str(exc)) from exc
        except Rejected as exc:
            logger.warning(
                "rejected %s %r: %d %s", request.method, request.url.path[:200], exc.status, exc.detail
            )
            return _reject(exc.status, exc.reason)
        duplicate = path is None
        logger.info(
            "accepted %s event %s for tenant %s%s",
            event.kind,
            event_id,
            tenant_id,
            " (duplicate, not written again)" if duplicate else "",
        )
        return JSONResponse(
            {"status": "accepted", "event_id": event_id, "duplicate": duplicate}, status_code=202
        )

    # -- endpoints --

    async def zoho(self, request: Request) -> JSONResponse:
        """``POST /v1/webhooks/zoho/{tenant}``."""
        return await self._receive(request, request.path_params["tenant"], _ZOHO, zoho_notification)

    async def moodle(self, request: Request) -> JSONResponse:
        """``POST /v1/webhooks/moodle/{tenant}``."""
        return await self._receive(request, request.path_params["tenant"], _MOODLE, moodle_event)

    async def seed_records(self, request: Request) -> JSONResponse:
        """``POST /v1/sync/{entity}`` with ``X-Tenant-ID``."""
        entity = request.path_params["entity"]
        module = SYNC_ENTITIES.get(entity)
        if module is None:
            return _reject(
                404, f"unknown entity {_short(entity)}: expected one of {', '.join(SYNC_ENTITIES)}"
            )
        return await self._receive(
            request,
            request.headers.get(TENANT_HEADER),
            _SEED_RECORDS,
            lambda fields: zoho_records(fields, module),
        )

    async def seed_moodle(self, request: Request) -> JSONResponse:
        """``POST /v1/events/moodle/{name}`` with ``X-Tenant-ID``."""
        name = request.path_params["name"]
        eventname = SEED_MOODLE_EVENTS.get(name)
        if eventname is None:
            return _reject(
                404, f"unknown event {_short(name)}: expected one of {', '.join(SEED_MOODLE_EVENTS)}"
            )
        return await self._receive(
            request,
            request.headers.get(TENANT_HEADER),
            _MOODLE,
            lambda fields: moodle_event(fields, eventname=eventname),
        )


async def health(request: Request) -> JSONResponse:
    """``GET /v1/health``: the process is up (no tenant data)."""
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    reason = {404: "unknown route", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    return _reject(exc.status_code, reason, exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"status": "error", "reason": "internal error"}, status_code=500)


def create_app(
    *,
    tenants_file: str | Path,
    drop_root: Path,
    max_body_bytes: int = MAX_BODY_BYTES,
    clock: Callable[[], float] = time.time,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> Starlette:
    """Build the receiver.

    Args:
        tenants_file: the tenants file (re-read when it changes).
        drop_root: where drop files are written.
        max_body_bytes: larger bodies are refused with 413, without being read.
        clock: Unix seconds now; for the replay window and ``received_at``.
        body_timeout: seconds a client has to send its whole body (408 after).

    Returns:
        The Starlette app.

    Raises:
        TenantConfigError: the tenants file is missing or invalid.
    """
    tenants = TenantsFile(tenants_file)
    for tenant in tenants.tenants().values():
        if not tenant.webhook_secret_env:
            logger.warning("tenant %s has no webhook_secret_env: its webhooks will be refused", tenant.id)
        else:
            try:
                tenant.secret(tenant.webhook_secret_env)
            except TenantConfigError as exc:
                logger.warning("%s: its webhooks will be refused", exc)
    receiver = Receiver(
        tenants, Path(drop_root), max_body_bytes=max_body_bytes, clock=clock, body_timeout=body_timeout
    )
    routes = [
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/webhooks/zoho/{tenant}", receiver.zoho, methods=["POST"]),
        Route("/v1/webhooks/moodle/{tenant}", receiver.moodle, methods=["POST"]),
        Route("/v1/sync/{entity}", receiver.seed_records, methods=["POST"]),
        Route("/v1/events/moodle/{name}", receiver.seed_moodle, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _server_error})
