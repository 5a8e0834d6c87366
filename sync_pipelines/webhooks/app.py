"""The webhook receiver: a small Starlette app that authenticates POSTs and turns them into drop files.

Routes (every answer is JSON):

========================================  ===============================================================
``POST /v1/webhooks/zoho/{tenant}``       Zoho workflow-rule webhook (JSON or form) → ``zoho.notification``
``POST /v1/webhooks/moodle/{tenant}``     Moodle observer event, ``get_data()`` (+ ``grade_item``) → ``moodle.event``
``POST /v1/sync/{entity}``                seed path: ``{"data": [records]}``, ``X-Tenant-ID`` → ``zoho.records``
``POST /v1/events/moodle/{name}``         seed path: a Moodle event, ``X-Tenant-ID`` → ``moodle.event``
``GET /v1/health``                        ``{"status": "ok"}``
========================================  ===============================================================

Authentication is per tenant and per source, each with its own secret (``zoho.webhook_secret_env``,
``moodle.webhook_secret_env``; a single legacy ``webhook_secret_env`` still works, with a warning):
an HMAC-SHA256 signature with a five-minute replay window (:mod:`sync_pipelines.webhooks.signing`),
or, on the Zoho and ``/v1/sync`` routes only, ``Authorization: Bearer <secret>`` (Zoho workflow
webhooks cannot sign; the bearer token travels in clear inside TLS, so it is never the key Moodle
signs with). A tenant without a secret is refused, never open. Unknown and broken tenants get the
same 401 as bad signatures, so tenant ids cannot be probed; the log names a broken tenant's error.

Redeliveries are recognised by delivery, never by content (:func:`~sync_pipelines.webhooks.drop.write_event`):
the sender's ``event_id`` (the Moodle plugin sends one, the same on every retry), or the same signed
delivery (timestamp and signature) inside the replay window. A delivery with neither, such as
Zoho's documented workflow body, is always a new event: two edits of one record are two events.
A redelivery is answered 202 with ``duplicate: true`` and the stored event's id.

Checks run cheapest first, and the body is read only once the headers are acceptable: route (404),
``Content-Length`` (413), tenant and credentials (401), body size while streaming (413) and time
(408), signature (401), content type (415), syntax (400), shape (422). Then the event is written
(:func:`sync_pipelines.webhooks.drop.write_event`) and answered 202, a duplicate included.
"""

import json
import logging
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

from sync_pipelines import events
from sync_pipelines.events import SEED_MOODLE_EVENTS, PayloadError, short, too_deep
from sync_pipelines.tenants import TENANT_ID, Tenant, TenantConfigError, TenantSet, read_tenants
from sync_pipelines.webhooks.drop import (
    DropSource,
    signature_key,
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
from sync_pipelines.zoho.modules import MODULES

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_048_576
#: A client that has not sent its whole body after this many seconds is cut off (slow-loris guard).
BODY_TIMEOUT_SECONDS = 30.0
TENANT_HEADER = "X-Tenant-ID"
AUTH_FAILED = "authentication failed"
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"

#: Seed path ``/v1/sync/{entity}`` → Zoho module API name, from the module table.
SYNC_ENTITIES: dict[str, str] = {m.seed_name: m.api_name for m in MODULES if m.seed_name}


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


@dataclass(frozen=True)
class Normalised:
    """A request body turned into a drop event.

    Attributes:
        kind: the drop kind.
        payload: the normalised payload (the dump of the kind's model).
        event_id: the sender's event id, if it gave one: a redelivery carries the same.
    """

    kind: str
    payload: dict
    event_id: str | None = None


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


def _normalised(model: type, fields: object, event_id: str | None) -> Normalised:
    return Normalised(model.kind, events.payload_of(events.build(model, fields)), event_id)


def zoho_notification(fields: Mapping[str, object]) -> Normalised:
    """A Zoho workflow-rule webhook body → ``zoho.notification``.

    Args:
        fields: the JSON object or form fields: ``module``, ``event_type``, ``record_id`` (or
            ``ids``, comma-separated, or a JSON list), optional ``event_id``.

    Returns:
        The event. Zoho's documented body carries no delivery id and no time, so without an
        ``event_id`` every delivery is a new event: two edits of one record are two events.

    Raises:
        PayloadError: unknown module, unknown event type, no record id, bad event id.
    """
    raw_ids = fields["record_id"] if fields.get("record_id") not in (None, "") else fields.get("ids")
    body = {"module": fields.get("module"), "event_type": fields.get("event_type"), "record_ids": raw_ids}
    return _normalised(events.ZohoNotification, body, _event_id(fields))


def zoho_records(fields: Mapping[str, object], module: str) -> Normalised:
    """A seed push ``{"data": [records]}`` → ``zoho.records`` (records kept as sent).

    Raises:
        PayloadError: ``data`` missing, empty, or holding something other than records with an id.
    """
    return _normalised(
        events.ZohoRecords, {"module": module, "records": fields.get("data")}, _event_id(fields)
    )


def moodle_event(fields: Mapping[str, object], *, eventname: str | None = None) -> Normalised:
    """A Moodle event's ``get_data()`` (plus optional ``grade_item``) → ``moodle.event``.

    Types are coerced as :class:`sync_pipelines.events.MoodleEvent` describes: ids and times arrive
    as ``2`` or ``"2"``, ``finalgrade`` as ``87.5``, ``"87.50000"`` or null, booleans as ``true``,
    ``1`` or ``""``. Fields the pipeline does not use (``component``, ``crud``...) are dropped.

    Args:
        fields: the JSON object.
        eventname: the event a seed route implies; a body naming another event is refused.

    Raises:
        PayloadError: unsupported event, a field that cannot be coerced, ids that disagree.
    """
    given = fields.get("eventname")
    if given is not None and not isinstance(given, str):
        raise PayloadError("eventname must be a string")
    if eventname is not None:
        name = "\\" + given.strip().lstrip("\\") if given else None
        if name is not None and name != eventname:
            raise PayloadError(f"eventname {short(given)} does not match the route ({short(eventname)})")
        fields = {**fields, "eventname": eventname}
    return _normalised(events.MoodleEvent, fields, _event_id(fields))


# --- the receiver ---------------------------------------------------------------------------------


class TenantsFile:
    """The tenants file, re-read when it changes (a new school needs no restart).

    Each school is read on its own: a broken entry is logged by name and refused (401) while every
    other school is served. A change that makes the whole file unusable (not YAML, no ``tenants``
    list) is logged and ignored: the receiver keeps the last good tenants.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._set = read_tenants(self.path)  # a file that is unusable as a whole stops the start
        self._stamp = self._fingerprint()
        self._report()

    def _fingerprint(self) -> tuple[int, int, int] | None:
        # Size and inode as well as the time: file times are only as fine as the kernel's clock tick.
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _report(self) -> None:
        for name, error in sorted(self._set.broken.items()):
            logger.error("tenant %s is not usable, its webhooks will be refused: %s", name, error)
        for warning in self._set.warnings:
            logger.warning("%s", warning)

    def current(self) -> TenantSet:
        """The tenants, reloaded if the file changed since the last look."""
        stamp = self._fingerprint()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self._set = read_tenants(self.path)
                logger.info("tenants file %s reloaded: %d tenant(s)", self.path, len(self._set.tenants))
                self._report()
            except TenantConfigError as exc:
                logger.error("tenants file changed but is not usable, keeping the previous tenants: %s", exc)
        return self._set

    def tenants(self) -> dict[str, Tenant]:
        """The usable tenants by id."""
        return self.current().tenants


def _reject(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "rejected", "reason": reason}, status_code=status, headers=headers)


def _reject_json(text: str) -> object:
    raise ValueError(f"{text} is not JSON")


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

    def _authenticate(self, tenant_id: str | None, source: DropSource) -> tuple[str, str]:
        """``(tenant_id, secret)`` of a usable tenant with a secret for ``source``, else a 401.

        Zoho routes use the tenant's Zoho webhook secret (the bearer token Zoho sends), Moodle
        routes its Moodle one (the HMAC key the plugin signs with).
        """
        if tenant_id is None or not TENANT_ID.match(tenant_id):
            raise Rejected(401, AUTH_FAILED, f"invalid tenant id {short(tenant_id)}")
        current = self.tenants.current()
        tenant = current.tenants.get(tenant_id)
        if tenant is None:
            broken = current.broken.get(tenant_id)
            raise Rejected(401, AUTH_FAILED, broken or f"unknown tenant {tenant_id}")
        try:
            secret = tenant.zoho_webhook_secret() if source == "zoho" else tenant.moodle_webhook_secret()
        except TenantConfigError as exc:
            raise Rejected(401, AUTH_FAILED, str(exc)) from exc
        return tenant_id, secret

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
            if too_deep(doc):
                raise Rejected(422, f"JSON nested deeper than {events.MAX_JSON_DEPTH} levels")
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
                    raise Rejected(400, f"form field {short(key)} given twice")
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
            tenant_id, secret = self._authenticate(tenant_id, route.source)
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
                    # A signed delivery sent again inside the replay window is the same delivery.
                    redelivery_keys=[]
                    if use_bearer
                    else [signature_key(headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])],
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
            " (a redelivery, not written again)" if duplicate else "",
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
            return _reject(404, f"unknown entity {short(entity)}: expected one of {', '.join(SYNC_ENTITIES)}")
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
                404, f"unknown event {short(name)}: expected one of {', '.join(SEED_MOODLE_EVENTS)}"
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
        TenantConfigError: the tenants file is missing or unusable as a whole (one school's bad
            entry only refuses that school's webhooks).
    """
    tenants = TenantsFile(tenants_file)
    for tenant in tenants.tenants().values():
        for check in (tenant.zoho_webhook_secret, tenant.moodle_webhook_secret):
            try:
                check()
            except TenantConfigError as exc:
                logger.warning("%s: those webhooks will be refused", exc)
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
