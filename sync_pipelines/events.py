"""Every webhook event the pipeline takes, described once.

Each kind of event is one pydantic model. The receiver builds it from what the sender posted
(:func:`parse`: lax, because Moodle sends ids as ``2`` or ``"2"`` and grades as ``"87.50000"``), the
drop file holds the model's dump and is checked against the same model when a sensor reads it back
(:func:`check`), and the sensors route by the tables here (:data:`MOODLE_EVENTS`: which assets an
event affects). Nothing else describes an event's shape.

Pydantic comes with Dagster (its config system is built on it); a model per kind gives one place
for types, coercion and error messages, where the first version had the same shape written three
times (receiver coercion, drop-file check, sensor dictionary access).

=====================  =======  ==============================================================
kind                   source   payload
=====================  =======  ==============================================================
``zoho.notification``  zoho     :class:`ZohoNotification`: ``module``, ``event_type``, ``record_ids``
``zoho.records``       zoho     :class:`ZohoRecords`: ``module``, ``records`` (Zoho API JSON, as sent)
``moodle.event``       moodle   :class:`MoodleEvent`: a Moodle core event's ``get_data()`` (+ ``grade_item``)
=====================  =======  ==============================================================
"""

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sync_pipelines.zoho.modules import MODULES_BY_API_NAME

Source = Literal["zoho", "moodle"]

#: JSON nested deeper than this is refused: the drop file must stay readable by the sensors.
MAX_JSON_DEPTH = 64

_RECORD_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_INT_TEXT = re.compile(r"^[+-]?[0-9]+(\.0*)?$")
_FLOAT_TEXT = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class PayloadError(ValueError):
    """Valid JSON or form data that does not have the shape of the event (answered 422)."""


def short(value: object) -> str:
    """``repr(value)``, cut to 60 characters (for error messages)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests lists and objects more than ``limit`` levels deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


# --- coercion -------------------------------------------------------------------------------------


def coerce_int(value: object, name: str, *, optional: bool = False) -> int | None:
    """An integer from ``2``, ``"2"``, ``2.0`` or ``"2.00000"`` (Moodle sends any of them).

    Raises:
        PayloadError: anything else, booleans included (``None``/``""`` unless ``optional``).
    """
    if value is None or value == "":
        if optional:
            return None
        raise PayloadError(f"{name} is required")
    if isinstance(value, bool):
        raise PayloadError(f"{name} must be an integer, got {short(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.match(value.strip()) and len(value) <= 40:
        return int(value.strip().split(".")[0])
    raise PayloadError(f"{name} must be an integer, got {short(value)}")


def coerce_float(value: object, name: str, *, optional: bool = False) -> float | None:
    """A finite float from ``87.5``, ``"87.50000"`` or ``87``.

    Raises:
        PayloadError: not a finite number (``None``/``""`` unless ``optional``).
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
        raise PayloadError(f"{name} must be a number, got {short(value)}")
    return number


def coerce_bool(value: object, name: str, *, default: bool | None = None) -> bool:
    """A boolean from ``true``, ``1``, ``"1"``, ``"true"``, ``""`` (PHP's false) and the like.

    Raises:
        PayloadError: not recognisably a boolean (``None`` unless a ``default`` is given).
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
    raise PayloadError(f"{name} must be true or false, got {short(value)}")


def _int(name: str, *, optional: bool = False) -> BeforeValidator:
    return BeforeValidator(lambda v: coerce_int(v, name, optional=optional))


def _text(name: str) -> BeforeValidator:
    def check(value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise PayloadError(f"{name} is required")
        return value.strip()

    return BeforeValidator(check)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: ClassVar[str]
    source: ClassVar[Source]


def _module(value: object) -> str:
    if not isinstance(value, str) or value not in MODULES_BY_API_NAME:
        raise PayloadError(f"unknown module {short(value)}: expected one of {', '.join(MODULES_BY_API_NAME)}")
    return value


# --- Zoho -----------------------------------------------------------------------------------------

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


def _event_type(value: object) -> str:
    if isinstance(value, str) and (canonical := ZOHO_EVENT_TYPES.get(value.strip().lower())):
        return canonical
    if not isinstance(value, str) or not value.strip():
        raise PayloadError("event_type is required")
    raise PayloadError("event_type must be created, updated or deleted")


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
            raise PayloadError(f"record id {short(item)} is not a string")
        if item := item.strip():
            if not _RECORD_ID.match(item):
                raise PayloadError(f"record id {short(item)} is not a Zoho record id")
            ids.append(item)
    if not ids:
        raise PayloadError("record_id (or ids, comma-separated) is required")
    return list(dict.fromkeys(ids))


class ZohoNotification(_Event):
    """A Zoho workflow-rule webhook: these records of this module were created, edited or deleted.

    Zoho's documented body (``module``, ``event_type``, ``record_id``) carries no time and no
    delivery id: the event says *which* records changed, and the run reads them by id. Applying it
    twice reads the same records twice, so a redelivery costs a read, never a wrong state.
    """

    kind: ClassVar[str] = "zoho.notification"
    source: ClassVar[Source] = "zoho"

    module: Annotated[str, BeforeValidator(_module)]
    event_type: Annotated[Literal["created", "updated", "deleted"], BeforeValidator(_event_type)]
    record_ids: Annotated[list[str], BeforeValidator(_record_ids)]

    @classmethod
    def from_fields(cls, fields: Mapping[str, object]) -> "ZohoNotification":
        """From the JSON object or form fields Zoho posts: ``record_id`` or ``ids`` (comma-separated,
        or a JSON list); other fields (``event_id``, ``timestamp``...) are not the payload's."""
        raw_ids = fields["record_id"] if fields.get("record_id") not in (None, "") else fields.get("ids")
        return cls(module=fields.get("module"), event_type=fields.get("event_type"), record_ids=raw_ids)

    def references(self) -> list[str]:
        return list(self.record_ids)


def _records(value: object) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise PayloadError("'data' must be a non-empty list of records")
    for i, record in enumerate(value):
        if not isinstance(record, dict):
            raise PayloadError(f"data[{i}] is not an object")
        rid = record.get("id")
        if isinstance(rid, bool) or not isinstance(rid, str | int) or rid == "":
            raise PayloadError(f"data[{i}] has no id")
    return value


class ZohoRecords(_Event):
    """Whole records pushed by the school (``POST /v1/sync/{entity}``), applied as sent.

    Pushes apply in Zoho's order: by ``Modified_Time`` when the records carry it, then by arrival;
    a push older than what the warehouse holds is not applied over it (see
    :func:`sync_pipelines.zoho.sync.order_pushed`).
    """

    kind: ClassVar[str] = "zoho.records"
    source: ClassVar[Source] = "zoho"

    module: Annotated[str, BeforeValidator(_module)]
    records: Annotated[list[dict], BeforeValidator(_records)]


# --- Moodle ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoodleEventSpec:
    """One Moodle core event the observer plugin forwards. What a run does for it (which assets)
    is not here: the Moodle entity table says which entities each event triggers
    (``EntitySpec.events``, :data:`sync_pipelines.moodle.entities.GRADE_EVENTS`).

    Attributes:
        name: the event class, ``\\core\\event\\user_graded``.
        seed_name: its name on the seed route ``/v1/events/moodle/{seed_name}``, if it has one.
        reads_course: the run reads only the event's course (``courseid``), not every course.
    """

    name: str
    seed_name: str | None = None
    reads_course: bool = False

    @property
    def short_name(self) -> str:
        """``user_graded`` for ``\\core\\event\\user_graded``."""
        return self.name.rsplit("\\", 1)[-1]


def _core(name: str) -> str:
    return "\\core\\event\\" + name


#: The Moodle events the pipeline acts on.
MOODLE_EVENTS: dict[str, MoodleEventSpec] = {
    spec.name: spec
    for spec in (
        MoodleEventSpec(_core("user_graded"), "grade_updated", reads_course=True),
        MoodleEventSpec(_core("user_created"), "user_created"),
        MoodleEventSpec(_core("user_updated"), "user_updated"),
        MoodleEventSpec(_core("user_enrolment_created"), "enrollment_created"),
        MoodleEventSpec(_core("user_enrolment_deleted")),
        MoodleEventSpec(_core("user_enrolment_updated")),  # suspended or dates changed by hand
        MoodleEventSpec(_core("course_updated")),  # renamed, moved or hidden by hand
    )
}
#: Seed route ``/v1/events/moodle/{name}`` → Moodle core event name.
SEED_MOODLE_EVENTS: dict[str, str] = {s.seed_name: s.name for s in MOODLE_EVENTS.values() if s.seed_name}


def _eventname(value: object) -> str:
    if not isinstance(value, str):
        raise PayloadError("eventname must be a string" if value is not None else "eventname is required")
    name = "\\" + value.strip().lstrip("\\")
    if name not in MOODLE_EVENTS:
        raise PayloadError(
            f"unsupported eventname {short(value)}: expected one of {', '.join(sorted(MOODLE_EVENTS))}"
        )
    return name


def _other(value: object) -> dict | None:
    if value is None or value == [] or value == "":
        return None  # PHP's json_encode writes an empty array as []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON text nested too deep
            raise PayloadError("other must be an object or null") from exc
        if too_deep(value):
            raise PayloadError(f"other is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(value, dict):
        raise PayloadError("other must be an object or null")
    return value


class GradeItem(BaseModel):
    """The grade item of a ``user_graded`` event, looked up by the plugin when the event fired."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    id: Annotated[int, _int("grade_item.id")]
    itemtype: Annotated[str, _text("grade_item.itemtype")]
    itemmodule: str | None = None
    grademax: Annotated[float, BeforeValidator(lambda v: coerce_float(v, "grade_item.grademax"))]
    is_course_total: bool

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, value: object) -> object:
        if not isinstance(value, dict):
            raise PayloadError("grade_item must be an object or null")
        value = dict(value)
        module = value.get("itemmodule")
        if module is not None and not isinstance(module, str):
            raise PayloadError("grade_item.itemmodule must be a string or null")
        value["itemmodule"] = module or None
        if not isinstance(value.get("itemtype"), str) or not value["itemtype"].strip():
            raise PayloadError("grade_item.itemtype is required")
        value["is_course_total"] = coerce_bool(
            value.get("is_course_total"),
            "grade_item.is_course_total",
            default=value["itemtype"].strip() == "course",
        )
        return value


class MoodleEvent(_Event):
    """A Moodle core event's ``get_data()`` as the observer plugin forwards it (plus ``grade_item``
    for ``user_graded``). ``userid`` is who acted: the pipeline's own web-services user for the
    echoes of its own writes (see :func:`sync_pipelines.sensors.is_echo`)."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)
    kind: ClassVar[str] = "moodle.event"
    source: ClassVar[Source] = "moodle"

    eventname: Annotated[str, BeforeValidator(_eventname)]
    objectid: Annotated[int, _int("objectid")]
    relateduserid: Annotated[int | None, _int("relateduserid", optional=True)] = None
    courseid: Annotated[int | None, _int("courseid", optional=True)] = None
    userid: Annotated[int | None, _int("userid", optional=True)] = None
    contextinstanceid: Annotated[int | None, _int("contextinstanceid", optional=True)] = None
    other: Annotated[dict | None, BeforeValidator(_other)] = None
    timecreated: Annotated[int, _int("timecreated")]
    grade_item: GradeItem | None = None
    #: Where the action came from, as the plugin reports it: ``ws`` (a web-service call), ``cli``
    #: or ``web``; ``None`` from a plugin too old to say (and then left out of the drop file).
    origin: Literal["ws", "cli", "web"] | None = Field(default=None, exclude_if=lambda v: v is None)

    @field_validator("origin", mode="before")
    @classmethod
    def _origin(cls, value: object) -> object:
        if value in (None, ""):
            return None
        if value not in ("ws", "cli", "web"):
            raise PayloadError(f"origin must be ws, cli or web, got {short(value)}")
        return value

    @field_validator("grade_item", mode="before")
    @classmethod
    def _grade_item(cls, value: object) -> object:
        if value is not None and not isinstance(value, dict | GradeItem):
            raise PayloadError("grade_item must be an object or null")
        return value

    @model_validator(mode="after")
    def _graded(self) -> "MoodleEvent":
        other = self.other
        if self.eventname == _core("user_graded"):
            if other is None:
                raise PayloadError("other.itemid is required for user_graded")
            other = {
                **other,
                "itemid": coerce_int(other.get("itemid"), "other.itemid"),
                "overridden": coerce_bool(other.get("overridden"), "other.overridden", default=False),
                "finalgrade": coerce_float(other.get("finalgrade"), "other.finalgrade", optional=True),
            }
            object.__setattr__(self, "other", other)
        item = self.grade_item
        if item is not None and other is not None and "itemid" in other and other["itemid"] != item.id:
            raise PayloadError("grade_item.id does not match other.itemid")
        return self

    @property
    def spec(self) -> MoodleEventSpec:
        return MOODLE_EVENTS[self.eventname]


# --- one table of kinds ---------------------------------------------------------------------------

EventModel = ZohoNotification | ZohoRecords | MoodleEvent
#: Every kind of event → its model.
KINDS: dict[str, type[_Event]] = {m.kind: m for m in (ZohoNotification, ZohoRecords, MoodleEvent)}
#: Every kind of event → the source whose drop folder it lives in.
KIND_SOURCES: dict[str, Source] = {kind: model.source for kind, model in KINDS.items()}


def _message(exc: ValidationError) -> str:
    """The first error of a validation, as one sentence naming the field."""
    error = exc.errors(include_url=False)[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ValueError):
        return str(cause)
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"{where} is required"
    if error["type"] == "extra_forbidden":
        return f"unexpected field {where}"
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def build(model: type[_Event], fields: Any) -> _Event:
    """``model`` from ``fields``; any problem is a :class:`PayloadError` naming the field.

    Raises:
        PayloadError: the fields do not have the shape of the event.
    """
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise PayloadError(_message(exc)) from None


def payload_of(event: _Event) -> dict:
    """The JSON payload a drop file holds for ``event``."""
    return event.model_dump(mode="json")


def check(kind: str, payload: object) -> _Event:
    """The event a drop file's ``kind`` and ``payload`` describe.

    Raises:
        ValueError: unknown kind, or a payload of the wrong shape (the message names the field).
    """
    model = KINDS.get(kind)
    if model is None:
        raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(payload, dict):
        raise ValueError("payload is not an object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ValueError(f"payload: {_message(exc)}") from None
