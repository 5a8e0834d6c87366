"""A local, faithful simulator of Moodle 4.5's REST web services (``webservice/rest/server.php``).

One stdlib ``ThreadingHTTPServer`` on loopback answers ``GET``/``POST {base}/webservice/rest/server.php``
the way a Moodle 4.5 site (version 2024100700) does, quirks included, so that code which works here
works against a real site. What it reproduces, and where each rule comes from (Moodle's source:
``webservice/rest/locallib.php``, ``lib/external/classes/external_api.php``, ``user/externallib.php``,
``user/lib.php``, ``course/externallib.php``, ``course/lib.php``, ``enrol/manual/externallib.php``,
``enrol/externallib.php``, ``grade/report/user/classes/external/user.php``, ``lib/accesslib.php``):

* **Request parsing as PHP does it.** ``wstoken``, ``wsfunction`` and ``moodlewsrestformat`` are read
  from ``array_merge($_GET, $_POST)`` (the body wins). Form fields use PHP's array syntax
  (``users[0][customfields][0][type]=x``, ``values[]=a``) and are decoded into nested arrays.
  ``max_input_vars`` is applied as PHP applies it, silently: the query keeps its first
  ``max_input_vars`` fields, the body its first ``max_input_vars + 1`` (``add_post_vars`` in
  ``main/php_variables.c`` registers a field before counting it; the PHP manual's user notes report
  the same off-by-one). Whatever is left is then validated, so a record cut in two fails with
  "Missing required key in single structure: …" while a cut between records, or of an optional
  field, goes unnoticed. A JSON body is ignored, as PHP ignores it.
* **Errors are HTTP 200** with ``{"exception","errorcode","message"}``, plus ``"debuginfo"`` only when
  the site is in debug mode (``debug=True``; the message itself is not changed, as at
  ``DEBUG_NORMAL``). Core exceptions are named by their 4.5 class, ``core\\exception\\moodle_exception``
  (``dml_missing_record_exception``, ``webservice_access_exception`` are not namespaced); a PHP
  ``Error``/``TypeError`` answers with no ``errorcode``. Whole floats go out as JSON integers, as
  ``json_encode()`` writes them (``grademax`` ``100``). Without ``moodlewsrestformat=json`` the answer
  is XML (``<RESPONSE>`` or ``<EXCEPTION>``). Order of checks: token (``invalidtoken``), function (``invalidrecord`` on table
  ``external_functions``), the token's service (``accessexception``), then the parameters against the
  function's description (``invalidparameter`` with Moodle's nested debuginfo, e.g.
  ``users => Invalid parameter value detected: Missing required key in single structure: email``;
  ``Unexpected keys (x) detected in parameter array.``; PARAM_* cleaning that must not change the
  value, so an upper-case username fails as ``the server was expecting "username" type``).
* **Batches are transactions.** ``core_user_create_users``, ``core_course_create_courses``,
  ``core_course_create_categories``, ``enrol_manual_enrol_users`` and ``enrol_manual_unenrol_users``
  apply all records or none. ``core_user_update_users`` and ``core_course_update_courses`` work per
  record and report failures as ``{"warnings":[{"item","itemid","warningcode","message"}]}``.
* **Users.** Usernames must be lower-case PARAM_USERNAME; "Username already exists: x"; "Email address
  already exists: x" (case-insensitive; the site does not allow accounts sharing an e-mail);
  ``auth`` defaults to ``manual``, which needs ``password`` or ``createpassword``; a password is held
  to Moodle's default policy and a failure puts HTML into ``errorcode`` (``password_policy=False``
  turns the policy off). ``core_user_get_users_by_field`` leaves ``idnumber``, ``city``, ``country``
  and ``customfields`` out when empty and answers ``suspended`` as a boolean.
* **Courses and categories.** The site course (id 1, format ``site``, category 0) and the
  "Miscellaneous" category (id 1) exist from the start; ``core_course_get_courses_by_field`` with an
  empty field returns every course *including the site course*, as Moodle does
  (``$DB->get_records('course')``). Duplicate shortname → ``shortnametaken``; duplicate idnumber →
  ``courseidnumbertaken`` (Moodle's code, not ``idnumbertaken``); unknown category →
  ``errorcatcontextnotvalid``; duplicate category idnumber → ``categoryidnumbertaken``; an absent id
  in ``field=ids`` → a PHP ``Error`` (a 4.5 bug). ``core_course_get_contents`` lists the sections and
  the modules (Announcements forum, graded activities).
* **Enrolments.** Roles 5 (student) and 3 (editing teacher), also 1 (manager) and 4 (teacher), can be
  assigned in a course. Enrolling an enrolled user again is no error: it updates the enrolment's
  ``timestart``/``timeend``/status (a missing ``suspend`` means active) and *adds* the role. An unknown
  user fails in the welcome message with a PHP ``TypeError``; an unknown course with
  ``invalidparameter`` ("Context does not exist"); a role that cannot be assigned with
  ``wsusercannotassign``. Unenrolling removes the enrolment and its roles (``roleid`` is ignored).
* **Grades.** Every course has a course-total grade item (``itemtype`` ``course``, ``itemname`` null)
  aggregated with Moodle's default, Natural with "exclude empty grades": the total is the sum of the
  user's graded items, and its ``grademax`` for that user the sum of those items' ``grademax``.
  ``gradereport_user_get_grade_items`` with ``userid`` 0 lists the students (``gradebookroles``) with
  an active enrolment, sorted by last then first name; values come typed as Moodle sends them
  (``graderaw`` float or null, ``gradeformatted`` ``"87.50"``, ``percentageformatted`` ``"87.50 %"``,
  ``"-"`` when ungraded).
* **Assignments and advanced grading** (recorded from Moodle 4.5: fixtures/moodle45/grading/):
  :meth:`MoodleSimulator.add_assignment` makes an assignment; ``core_grading_get_definitions``,
  ``core_grading_save_definitions`` (rubrics), ``core_grading_get_gradingform_instances``,
  ``mod_assign_get_assignments``, ``mod_assign_get_grades`` and ``mod_assign_save_grade`` answer as
  the real site did, traps included (criteria saved without ids are re-created and orphan the
  fillings; a plain grade on a rubric assignment is stored as -1; the gradebook gets the share of
  rubric points): see "assignments and advanced grading" in the class.

Failures can be injected: :meth:`MoodleSimulator.fail_next` answers the next calls with an HTTP 5xx
page (optionally after applying them: the answer was lost), :meth:`MoodleSimulator.fail_function`
with a Moodle exception body; a seeded :class:`~sync_pipelines.sandbox.faults.FaultPlan` (``faults=``,
:meth:`MoodleSimulator.set_faults`) injects 5xx pages, dropped connections, slow answers and lost answers
at a rate. Every request is logged in :attr:`MoodleSimulator.requests`.

A token's role can lack capabilities (``missing_capabilities=``,
:meth:`MoodleSimulator.set_missing_capabilities`): ``mod/<module>:view``, ``moodle/user:viewalldetails``,
``moodle/site:viewuseridentity`` and ``moodle/site:viewfullnames`` then leave things out of the answers,
silently, as a real Moodle 4.5 does (recorded from Moodle 4.5: fixtures/moodle45/preflight_probe.json).
"""

import copy
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as _field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from sync_pipelines.sandbox.faults import FaultPlan
from sync_pipelines.sandbox.server import LoopbackServer, SimulatorHTTPServer

logger = logging.getLogger(__name__)

#: The token every default simulator accepts (for the service that allows every function).
DEFAULT_TOKEN = "sandbox-moodle-token"
#: Path of the REST server below the site's base URL.
REST_PATH = "/webservice/rest/server.php"
#: What ``core_webservice_get_site_info`` reports.
RELEASE = "4.5 (Build: 20241007)"
VERSION = "2024100700"
#: Fixed ids of a fresh Moodle site.
GUEST_USER_ID = 1
ADMIN_USER_ID = 2
SITE_COURSE_ID = 1
MISC_CATEGORY_ID = 1
#: Standard role ids.
ROLE_MANAGER = 1
ROLE_EDITINGTEACHER = 3
ROLE_TEACHER = 4
ROLE_STUDENT = 5

# Standard roles: id -> (shortname, sortorder). Only the course-level ones can be assigned in a course.
_ROLES: dict[int, tuple[str, int]] = {
    1: ("manager", 1),
    2: ("coursecreator", 2),
    3: ("editingteacher", 3),
    4: ("teacher", 4),
    5: ("student", 5),
    6: ("guest", 6),
    7: ("user", 7),
    8: ("frontpage", 8),
}
_COURSE_ROLES = frozenset({ROLE_MANAGER, ROLE_EDITINGTEACHER, ROLE_TEACHER, ROLE_STUDENT})
_GRADEBOOK_ROLES = frozenset({ROLE_STUDENT})
_INSTALLED_AUTHS = frozenset(
    {
        "cas",
        "db",
        "email",
        "ldap",
        "lti",
        "manual",
        "mnet",
        "nologin",
        "none",
        "oauth2",
        "shibboleth",
        "webservice",
    }
)
_CREATABLE_AUTHS = _INSTALLED_AUTHS - {"mnet", "webservice"}
_INTERNAL_AUTHS = frozenset({"manual", "email", "nologin"})
_INSTALLED_THEMES = frozenset({"boost", "classic"})
_INSTALLED_LANGS = frozenset({"en"})
_MSG_INVALID_PARAM = "Invalid parameter value detected"
#: Where the simulated site's code lives (PHP errors name their files).
_DIRROOT = "/var/www/moodle"
_MSG_CODING = "Coding error detected, it must be fixed by a programmer: "
_EMAIL_RE = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
_PHP_INT_KEY = re.compile(r"^(0|-?[1-9][0-9]*)$")
_TIMEZONE_RE = re.compile(
    r"^(([+-]?(0?[0-9](\.[5|0])?|1[0-3](\.0)?|1[0-2]\.5))|(99)|[A-Za-z0-9]+(/?[A-Za-z_-])+)$"
)
_PLUGIN_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9_](?!__))*[a-z0-9]+$")
_FLOAT_RE = re.compile(r"^[+-]?[0-9]*\.?[0-9]*(e[-+]?[0-9]+)?$", re.IGNORECASE)
_TAG_RE = re.compile(r"<(?=[^\s<])[^>]*>?")


@dataclass(frozen=True)
class MoodleRequest:
    """One request the simulator answered.

    Attributes:
        method: HTTP method.
        function: ``wsfunction`` as sent (``None`` when missing).
        params: the function's parameters as Moodle saw them: decoded from PHP's array syntax, after
            ``max_input_vars`` truncation, without ``wstoken``/``wsfunction``/``moodlewsrestformat``.
            PHP arrays with keys 0..n-1 are shown as lists.
        status: HTTP status answered (200 for Moodle's own errors); 0 when the connection was closed
            without an answer (an injected ``drop`` or ``lost_answer``).
        field_count: form fields in the request body, before truncation.
        truncated: whether ``max_input_vars`` dropped any field (body or query).
        format: ``json`` or ``xml``.
        errorcode: Moodle's ``errorcode`` when the answer was an exception, else ``None``.
        time: the simulator clock when the request was answered.
        fault: the fault the simulator's :class:`FaultPlan` injected into this request, if any.
    """

    method: str
    function: str | None
    params: Any
    status: int
    field_count: int
    truncated: bool
    format: str
    errorcode: str | None
    time: datetime
    fault: str | None = None


class MoodleException(Exception):
    """A Moodle exception, answered as ``{"exception","errorcode","message"[,"debuginfo"]}``.

    Args:
        exception: PHP class name, e.g. ``core\\exception\\moodle_exception``.
        errorcode: Moodle's error code; ``None`` for a PHP ``Error`` (``TypeError``...), which has
            none: the answer then has no ``errorcode`` key (fixtures/moodle45/
            enrol_manual_enrol_users.json, "an unknown user").
        message: the (English) message.
        debuginfo: extra detail Moodle only shows in debug mode.
    """

    def __init__(
        self, exception: str, errorcode: str | None, message: str, debuginfo: str | None = None
    ) -> None:
        super().__init__(f"{exception} {errorcode}: {message}")
        self.exception = exception
        self.errorcode = errorcode
        self.message = message
        self.debuginfo = debuginfo

    def body(self, *, debug: bool) -> dict[str, Any]:
        """The JSON error body (``debuginfo`` only in debug mode, and only when there is one)."""
        out: dict[str, Any] = {"exception": self.exception}
        if self.errorcode is not None:
            out["errorcode"] = self.errorcode
        out["message"] = self.message
        if debug and self.debuginfo is not None:
            out["debuginfo"] = self.debuginfo
        return out


# Moodle 4.5 answers its core exceptions with their namespaced class names (the old names are
# aliases of core\exception\*); dml_* and webservice_access_exception keep theirs. Seen in every
# error case of fixtures/moodle45/*.json (e.g. core_user_create_users.json, "a taken username").
EXC_MOODLE = "core\\exception\\moodle_exception"
EXC_INVALID_PARAMETER = "core\\exception\\invalid_parameter_exception"
EXC_CODING = "core\\exception\\coding_exception"


def _invalid(debuginfo: str) -> MoodleException:
    return MoodleException(EXC_INVALID_PARAMETER, "invalidparameter", _MSG_INVALID_PARAM, debuginfo)


def _missing_record(table: str, where: str, values: Iterable[Any]) -> MoodleException:
    listed = "".join(f"  {i} => {_php_export(v)},\n" for i, v in enumerate(values))
    return MoodleException(
        "dml_missing_record_exception",
        "invalidrecord",
        f"Can't find data record in database table {table}.",
        f"SELECT * FROM {{{table}}} WHERE {where}\n[array (\n{listed})]",
    )


def _coding(message: str, debuginfo: str | None = None) -> MoodleException:
    return MoodleException(EXC_CODING, "codingerror", _MSG_CODING + message, debuginfo)


def _moodle(errorcode: str, message: str, debuginfo: str | None = None) -> MoodleException:
    return MoodleException(EXC_MOODLE, errorcode, message, debuginfo)


# --- PHP value helpers --------------------------------------------------------------------------------


def _php_export(value: Any) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "\\'") + "'"


def _php_str(value: Any) -> str:
    """PHP's ``(string)`` of a scalar."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def _format_float(value: float, decimals: int = 2) -> str:
    """Moodle's ``format_float()``: half-up rounding, '.' as decimal point, no thousands separator."""
    quantum = Decimal(1).scaleb(-decimals) if decimals else Decimal(1)
    return str(Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP))


def _strip_tags(text: str) -> str:
    return _TAG_RE.sub("", text)


def _valid_email(address: str) -> bool:
    """Moodle's ``validate_email()`` (PHPMailer's html5 pattern, and no ``<`` or ``>``)."""
    return bool(address) and bool(_EMAIL_RE.match(address)) and not re.search(r"[<>]", address)


def _clean_username(value: str) -> str:
    """``clean_param($value, PARAM_USERNAME)`` without ``$CFG->extendedusernamechars``."""
    cleaned = value.strip().lower().replace(" ", "")
    return re.sub(r"[^-.@_a-z0-9]", "", cleaned)


def _clean_plugin(value: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]", "", value)
    return cleaned if _PLUGIN_NAME_RE.match(cleaned) else ""


def _clean_component(value: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "", value)
    if "__" in cleaned or (cleaned.startswith("mod_") and cleaned.count("_") != 1):
        return ""
    return cleaned if re.match(r"^[a-z]+(_[a-z][a-z0-9_]*)?[a-z0-9]+$", cleaned) else ""


def _php_int(value: str) -> int:
    match = re.match(r"^\s*[+-]?\d+", value)
    return int(match.group(0)) if match else 0


def _clean_param(value: str, ptype: str) -> Any:
    """``clean_param()`` for the PARAM_* types the simulated functions use (value is a form string)."""
    if ptype == "int":
        return _php_int(value)
    if ptype == "raw":
        return value
    if ptype == "raw_trimmed":
        return value.strip()
    if ptype in ("text", "notags"):
        return _strip_tags(value)
    if ptype == "alpha":
        return re.sub(r"[^a-zA-Z]", "", value)
    if ptype == "alphanum":
        return re.sub(r"[^a-zA-Z0-9]", "", value)
    if ptype in ("alphanumext", "safedir"):
        return re.sub(r"[^a-zA-Z0-9_-]", "", value)
    if ptype == "sequence":
        return re.sub(r"[^0-9,]", "", value)
    if ptype == "plugin":
        return _clean_plugin(value)
    if ptype == "auth":
        name = _clean_plugin(value)
        return name if name in _INSTALLED_AUTHS else ""
    if ptype == "theme":
        name = _clean_plugin(value)
        return name if name in _INSTALLED_THEMES else ""
    if ptype == "lang":
        name = re.sub(r"[^a-zA-Z0-9_-]", "", value)
        return name if name in _INSTALLED_LANGS else ""
    if ptype == "component":
        return _clean_component(value)
    if ptype == "username":
        return _clean_username(value)
    if ptype == "email":
        return value if _valid_email(value) else ""
    if ptype == "timezone":
        return value if _TIMEZONE_RE.match(value) else ""
    if ptype == "bool":
        low = value.lower()
        if low in ("on", "yes", "true"):
            return True
        if low in ("off", "no", "false"):
            return False
        return value not in ("", "0")
    if ptype == "area":  # PARAM_AREA: is_valid_plugin_name() or nothing
        return value if _PLUGIN_NAME_RE.match(value) else ""
    if ptype == "capability":  # PARAM_CAPABILITY: an existing capability's name (its form, here)
        return value if _CAPABILITY_RE.match(value) else ""
    raise ValueError(f"unsupported PARAM type {ptype!r}")


def _validate_param(value: Any, ptype: str, allownull: bool, debuginfo: str) -> Any:
    """``validate_param()``: the cleaned value must equal the value sent, else invalid_parameter_exception."""
    if value is None:
        if allownull:
            return None
        raise _invalid(debuginfo)
    if not isinstance(value, str):  # a default of the description, already clean
        return value
    if ptype == "float":
        if not _FLOAT_RE.match(value) or not re.match(
            r"^\s*[+-]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$", value, re.I
        ):
            raise _invalid(debuginfo)
        return float(value)
    cleaned = _clean_param(value, ptype)
    if value != _php_str(cleaned):
        raise _invalid(debuginfo)
    return cleaned


# --- external_description and validate_parameters() ---------------------------------------------------

_REQUIRED, _DEFAULT, _OPTIONAL = 1, 0, 2


@dataclass(frozen=True)
class _Value:
    type: str
    required: int = _REQUIRED
    default: Any = None
    allownull: bool = True


@dataclass(frozen=True)
class _Single:
    keys: dict[str, Any]
    required: int = _REQUIRED
    default: Any = None


@dataclass(frozen=True)
class _Multiple:
    content: Any
    required: int = _REQUIRED
    default: Any = None


def _opt(ptype: str) -> _Value:
    return _Value(ptype, _OPTIONAL)


def _dflt(ptype: str, default: Any, *, allownull: bool = True) -> _Value:
    return _Value(ptype, _DEFAULT, default, allownull)


def _validate(desc: Any, value: Any) -> Any:
    """``external_api::validate_parameters()``, with its error messages and nesting of debuginfo."""
    if isinstance(desc, _Value):
        if isinstance(value, dict):
            raise _invalid("Scalar type expected, array or object received.")
        if desc.type == "bool" and (isinstance(value, bool) or value in (0, 1, "0", "1")):
            return bool(int(value))
        debuginfo = (
            f'Invalid external api parameter: the value is "{_php_str(value)}", '
            f'the server was expecting "{desc.type}" type'
        )
        return _validate_param(value, desc.type, desc.allownull, debuginfo)
    if not isinstance(value, dict):
        raise _invalid(f"Only arrays accepted. The bad value is: '{_php_str(value)}'")
    if isinstance(desc, _Multiple):
        return [_validate(desc.content, item) for item in value.values()]
    rest = dict(value)
    result: dict[str, Any] = {}
    for key, sub in desc.keys.items():
        if key not in rest:
            if sub.required == _REQUIRED:
                raise _invalid(f"Missing required key in single structure: {key}")
            if sub.required == _DEFAULT:
                result[key] = copy.deepcopy(sub.default)
            continue
        try:
            result[key] = _validate(sub, rest.pop(key))
        except MoodleException as exc:
            if exc.errorcode != "invalidparameter":
                raise
            raise _invalid(f"{key} => {exc.message}: {exc.debuginfo}") from None
    if rest:
        raise _invalid(f"Unexpected keys ({', '.join(str(k) for k in rest)}) detected in parameter array.")
    return result


# --- PHP request-variable parsing --------------------------------------------------------------------


def _php_pairs(raw: str, limit: int) -> tuple[list[tuple[str, str]], int, bool]:
    """Split an urlencoded string into PHP variables, keeping the first ``limit`` of them.

    Returns:
        (the kept name/value pairs, how many fields there were, whether any was dropped).
    """
    if not raw:
        return [], 0, False
    segments = raw.split("&")
    if segments and segments[-1] == "":
        segments.pop()
    kept = segments[:limit]
    pairs = []
    for segment in kept:
        name, _, value = segment.partition("=")
        pairs.append((unquote_plus(name, errors="replace"), unquote_plus(value, errors="replace")))
    return pairs, len(segments), len(segments) > limit


def _php_key(text: str) -> int | str:
    return int(text) if _PHP_INT_KEY.match(text) else text


def _php_next_index(target: dict) -> int:
    ints = [k for k in target if isinstance(k, int)]
    return max(ints) + 1 if ints and max(ints) >= 0 else 0


def _php_register(target: dict, name: str, value: str) -> None:
    """``php_register_variable_ex()``: put ``a[b][]=v`` into nested arrays (dicts, PHP key semantics)."""
    name = name.lstrip(" ")
    bracket = name.find("[")
    base = name if bracket < 0 else name[:bracket]
    base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return
    indexes: list[str | None] = []
    if bracket >= 0:
        rest = name[bracket:]
        while rest.startswith("["):
            close = rest.find("]")
            if close < 0:
                if not indexes:  # "a[b" is the plain variable "a_b"
                    base, indexes = base + "_" + rest[1:], []
                break
            inner = rest[1:close]
            indexes.append(None if inner.strip() == "" else inner)
            rest = rest[close + 1 :]
    keys: list[int | str | None] = [_php_key(base), *(None if i is None else _php_key(i) for i in indexes)]
    node = target
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if key is None:
            key = _php_next_index(node)
        if last:
            node[key] = value
        else:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]


def _php_decode(pairs: Iterable[tuple[str, str]]) -> dict:
    out: dict = {}
    for name, value in pairs:
        _php_register(out, name, value)
    return out


def _plain(value: Any) -> Any:
    """A decoded PHP array for logs: arrays keyed 0..n-1 become lists."""
    if isinstance(value, dict):
        if value and list(value) == list(range(len(value))):
            return [_plain(v) for v in value.values()]
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- output ---------------------------------------------------------------------------------------------


def _php_numbers(value: Any) -> Any:
    """Whole floats as ints, as ``json_encode()`` without ``JSON_PRESERVE_ZERO_FRACTION`` writes them:
    a PARAM_FLOAT ``100.0`` arrives as ``100`` (fixtures/moodle45/gradereport_user_get_grade_items.json:
    ``grademax`` 100, ``grademin`` 0, ``weightraw`` 1), ``87.5`` as ``87.5``."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e15 else value
    if isinstance(value, dict):
        return {k: _php_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_php_numbers(v) for v in value]
    return value


def _json(value: Any) -> bytes:
    """``json_encode()``: compact, ASCII with \\u escapes, ``/`` escaped as ``\\/``, whole floats as ints."""
    return json.dumps(_php_numbers(value), separators=(",", ":")).replace("/", "\\/").encode("ascii")


def _escape(text: str) -> str:
    """PHP's ``htmlspecialchars($text, ENT_COMPAT)``: ``& < > "`` escaped, single quotes left alone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _xmlize(value: Any) -> str:
    if isinstance(value, dict):
        keys = "".join(f'<KEY name="{_escape(str(k))}">{_xmlize(v)}</KEY>\n' for k, v in value.items())
        return f"<SINGLE>\n{keys}</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(_xmlize(v) for v in value) + "</MULTIPLE>\n"
    if value is None:
        return '<VALUE null="null"/>\n'
    return f"<VALUE>{_escape(_php_str(value))}</VALUE>\n"


def _xml_response(value: Any) -> bytes:
    inner = "" if value is None else _xmlize(value)
    return f'<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n{inner}</RESPONSE>\n'.encode()


def _xml_error(exc: MoodleException, *, debug: bool) -> bytes:
    text = '<?xml version="1.0" encoding="UTF-8" ?>\n'
    text += f'<EXCEPTION class="{_escape(exc.exception)}">\n'
    if exc.errorcode is not None:
        text += f"<ERRORCODE>{_escape(exc.errorcode)}</ERRORCODE>\n"
    text += f"<MESSAGE>{_escape(exc.message)}</MESSAGE>\n"
    if debug and exc.debuginfo is not None:
        text += f"<DEBUGINFO>{_escape(exc.debuginfo)}</DEBUGINFO>\n"
    return (text + "</EXCEPTION>\n").encode()


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str
    drop: bool = False  # close the connection without answering


# --- function descriptions ------------------------------------------------------------------------------

_NAME_FIELDS: dict[str, Any] = {
    "firstnamephonetic": _opt("notags"),
    "lastnamephonetic": _opt("notags"),
    "middlename": _opt("notags"),
    "alternatename": _opt("notags"),
    "interests": _opt("text"),
}
_OPTIONAL_USER_FIELDS: dict[str, Any] = {
    "institution": _opt("text"),
    "department": _opt("text"),
    "phone1": _opt("notags"),
    "phone2": _opt("notags"),
    "address": _opt("text"),
}
_USER_CUSTOMFIELDS = _Multiple(_Single({"type": _Value("alphanumext"), "value": _Value("raw")}), _OPTIONAL)
_USER_PREFERENCES = _Multiple(_Single({"type": _Value("raw"), "value": _Value("raw")}), _OPTIONAL)

_CREATE_USER = _Single(
    {
        "createpassword": _opt("bool"),
        "username": _Value("username"),
        "auth": _dflt("auth", "manual", allownull=False),
        "password": _opt("raw"),
        "firstname": _Value("notags"),
        "lastname": _Value("notags"),
        "email": _Value("raw_trimmed"),
        "maildisplay": _opt("int"),
        "city": _opt("text"),
        "country": _opt("alpha"),
        "timezone": _opt("timezone"),
        "description": _opt("raw"),
        **_NAME_FIELDS,
        "idnumber": _dflt("raw", ""),
        **_OPTIONAL_USER_FIELDS,
        "lang": _dflt("lang", "en", allownull=False),
        "calendartype": _dflt("plugin", "gregorian"),
        "theme": _opt("theme"),
        "mailformat": _opt("int"),
        "customfields": _USER_CUSTOMFIELDS,
        "preferences": _USER_PREFERENCES,
    }
)
_UPDATE_USER = _Single(
    {
        "id": _Value("int"),
        "username": _opt("username"),
        "auth": _opt("auth"),
        "suspended": _opt("bool"),
        "password": _opt("raw"),
        "firstname": _opt("notags"),
        "lastname": _opt("notags"),
        "email": _opt("raw_trimmed"),
        "maildisplay": _opt("int"),
        "city": _opt("text"),
        "country": _opt("alpha"),
        "timezone": _opt("timezone"),
        "description": _opt("raw"),
        "userpicture": _opt("int"),
        **_NAME_FIELDS,
        "idnumber": _opt("raw"),
        **_OPTIONAL_USER_FIELDS,
        "lang": _opt("lang"),
        "calendartype": _opt("plugin"),
        "theme": _opt("theme"),
        "mailformat": _opt("int"),
        "customfields": _USER_CUSTOMFIELDS,
        "preferences": _USER_PREFERENCES,
    }
)
_COURSE_FORMAT_OPTIONS = _Multiple(
    _Single({"name": _Value("alphanumext"), "value": _Value("raw")}), _OPTIONAL
)
_COURSE_CUSTOMFIELDS = _Multiple(
    _Single({"shortname": _Value("alphanumext"), "value": _Value("raw")}), _OPTIONAL
)
_COURSE_COMMON: dict[str, Any] = {
    "startdate": _opt("int"),
    "enddate": _opt("int"),
    "numsections": _opt("int"),
}
_CREATE_COURSE = _Single(
    {
        "fullname": _Value("text"),
        "shortname": _Value("text"),
        "categoryid": _Value("int"),
        "idnumber": _opt("raw"),
        "summary": _opt("raw"),
        "summaryformat": _dflt("int", 1),
        "format": _dflt("plugin", "topics"),
        "showgrades": _dflt("int", 1),
        "newsitems": _dflt("int", 5),
        **_COURSE_COMMON,
        "maxbytes": _dflt("int", 0),
        "showreports": _dflt("int", 0),
        "visible": _opt("int"),
        "hiddensections": _opt("int"),
        "groupmode": _dflt("int", 0),
        "groupmodeforce": _dflt("int", 0),
        "defaultgroupingid": _dflt("int", 0),
        "enablecompletion": _opt("int"),
        "completionnotify": _opt("int"),
        "lang": _opt("safedir"),
        "forcetheme": _opt("plugin"),
        "courseformatoptions": _COURSE_FORMAT_OPTIONS,
        "customfields": _COURSE_CUSTOMFIELDS,
    }
)
_UPDATE_COURSE = _Single(
    {
        "id": _Value("int"),
        "fullname": _opt("text"),
        "shortname": _opt("text"),
        "categoryid": _opt("int"),
        "idnumber": _opt("raw"),
        "summary": _opt("raw"),
        "summaryformat": _opt("int"),
        "format": _opt("plugin"),
        "showgrades": _opt("int"),
        "newsitems": _opt("int"),
        **_COURSE_COMMON,
        "maxbytes": _opt("int"),
        "showreports": _opt("int"),
        "visible": _opt("int"),
        "hiddensections": _opt("int"),
        "groupmode": _opt("int"),
        "groupmodeforce": _opt("int"),
        "defaultgroupingid": _opt("int"),
        "enablecompletion": _opt("int"),
        "completionnotify": _opt("int"),
        "lang": _opt("safedir"),
        "forcetheme": _opt("plugin"),
        "courseformatoptions": _COURSE_FORMAT_OPTIONS,
        "customfields": _COURSE_CUSTOMFIELDS,
    }
)

#: wsfunction -> its parameters (Moodle's external_function_parameters, keys in Moodle's order).
_PARAMETERS: dict[str, _Single] = {
    "core_webservice_get_site_info": _Single(
        {"serviceshortnames": _Multiple(_Value("alphanumext"), _DEFAULT, [])}
    ),
    "core_user_create_users": _Single({"users": _Multiple(_CREATE_USER)}),
    "core_user_update_users": _Single({"users": _Multiple(_UPDATE_USER)}),
    "core_user_get_users_by_field": _Single({"field": _Value("alpha"), "values": _Multiple(_Value("raw"))}),
    "core_user_get_users": _Single(
        {"criteria": _Multiple(_Single({"key": _Value("alpha"), "value": _Value("raw")}))}
    ),
    "core_course_create_courses": _Single({"courses": _Multiple(_CREATE_COURSE)}),
    "core_course_update_courses": _Single({"courses": _Multiple(_UPDATE_COURSE)}),
    "core_course_get_courses_by_field": _Single({"field": _dflt("alpha", ""), "value": _dflt("raw", "")}),
    "core_course_get_contents": _Single(
        {
            "courseid": _Value("int"),
            "options": _Multiple(_Single({"name": _Value("alpha"), "value": _Value("raw")}), _DEFAULT, []),
        }
    ),
    "core_course_get_categories": _Single(
        {
            "criteria": _Multiple(_Single({"key": _Value("alpha"), "value": _Value("raw")}), _DEFAULT, []),
            "addsubcategories": _dflt("bool", True),
        }
    ),
    "core_course_create_categories": _Single(
        {
            "categories": _Multiple(
                _Single(
                    {
                        "name": _Value("text"),
                        "parent": _dflt("int", 0),
                        "idnumber": _opt("raw"),
                        "description": _opt("raw"),
                        "descriptionformat": _dflt("int", 1),
                        "theme": _opt("theme"),
                    }
                )
            )
        }
    ),
    "enrol_manual_enrol_users": _Single(
        {
            "enrolments": _Multiple(
                _Single(
                    {
                        "roleid": _Value("int"),
                        "userid": _Value("int"),
                        "courseid": _Value("int"),
                        "timestart": _opt("int"),
                        "timeend": _opt("int"),
                        "suspend": _opt("int"),
                    }
                )
            )
        }
    ),
    "enrol_manual_unenrol_users": _Single(
        {
            "enrolments": _Multiple(
                _Single({"userid": _Value("int"), "courseid": _Value("int"), "roleid": _opt("int")})
            )
        }
    ),
    "core_enrol_get_enrolled_users": _Single(
        {
            "courseid": _Value("int"),
            "options": _Multiple(
                _Single({"name": _Value("alphanumext"), "value": _Value("raw")}), _DEFAULT, []
            ),
        }
    ),
    "gradereport_user_get_grade_items": _Single(
        {"courseid": _Value("int"), "userid": _dflt("int", 0), "groupid": _dflt("int", 0)}
    ),
    "core_grades_get_gradeitems": _Single({"courseid": _Value("int")}),
    "core_grades_update_grades": _Single(
        {
            "source": _Value("text"),
            "courseid": _Value("int"),
            "component": _Value("component"),
            "activityid": _Value("int"),
            "itemnumber": _Value("int"),
            "grades": _Multiple(
                _Single({"studentid": _Value("int"), "grade": _opt("float"), "str_feedback": _opt("text")}),
                _OPTIONAL,
            ),
            "itemdetails": _Single(
                {
                    "itemname": _opt("alphanumext"),
                    "idnumber": _opt("int"),
                    "gradetype": _opt("int"),
                    "grademax": _opt("float"),
                    "grademin": _opt("float"),
                    "scaleid": _opt("int"),
                    "multfactor": _opt("float"),
                    "plusfactor": _opt("float"),
                    "deleted": _opt("bool"),
                    "hidden": _opt("bool"),
                },
                _OPTIONAL,
            ),
        }
    ),
}
# --- advanced grading and assignments: descriptions (recorded: fixtures/moodle45/grading/) ------------

#: Grading methods installed, in Moodle's order (``core_component::get_plugin_list('gradingform')``).
_GRADING_METHODS = ("guide", "rubric")
#: ``gradingform_controller::DEFINITION_STATUS_*``: only a READY definition grades.
GRADING_STATUS_DRAFT = 10
GRADING_STATUS_READY = 20
#: ``gradingform_instance::INSTANCE_STATUS_*``.
_INSTANCE_INCOMPLETE, _INSTANCE_ACTIVE, _INSTANCE_NEEDUPDATE, _INSTANCE_ARCHIVE = 0, 1, 2, 3
#: ``gradingform_rubric_controller::get_default_options()``: what every web-service save stores (the
#: function has no way to send options, so a re-save resets them).
_RUBRIC_DEFAULT_OPTIONS = {
    "sortlevelsasc": 1,
    "lockzeropoints": 1,
    "alwaysshowdefinition": 1,
    "showdescriptionteacher": 1,
    "showdescriptionstudent": 1,
    "showscoreteacher": 1,
    "showscorestudent": 1,
    "enableremarks": 1,
    "showremarksstudent": 1,
}
_CAPABILITY_RE = re.compile(r"^[a-z][a-z0-9_]*/[a-z0-9_]+:[a-z0-9_]+$")
#: An assignment's settings and their defaults (the recording's assignments, made by
#: fixtures/moodle45/grading/make_site.php), in ``mod_assign_get_assignments``' order.
_ASSIGN_SETTINGS: dict[str, Any] = {
    "nosubmissions": 0,
    "submissiondrafts": 0,
    "sendnotifications": 0,
    "sendlatenotifications": 0,
    "sendstudentnotifications": 0,
    "duedate": 0,
    "allowsubmissionsfromdate": 0,
    "completionsubmit": 0,
    "cutoffdate": 0,
    "gradingduedate": 0,
    "teamsubmission": 0,
    "requireallteammemberssubmit": 0,
    "teamsubmissiongroupingid": 0,
    "blindmarking": 0,
    "hidegrader": 0,
    "revealidentities": 0,
    "attemptreopenmethod": "manual",
    "maxattempts": -1,
    "markingworkflow": 0,
    "markingallocation": 0,
    "markinganonymous": 0,
    "requiresubmissionstatement": 0,
    "preventsubmissionnotingroup": 0,
    "timelimit": 0,
    "submissionattachments": 0,
}

_RUBRIC_LEVEL = _Single(
    {"id": _opt("int"), "score": _opt("float"), "definition": _opt("raw"), "definitionformat": _opt("int")}
)
_RUBRIC_CRITERION = _Single(
    {
        "id": _opt("int"),
        "sortorder": _opt("int"),
        "description": _opt("raw"),
        "descriptionformat": _opt("int"),
        "levels": _Multiple(_RUBRIC_LEVEL, _OPTIONAL),
    }
)
_GUIDE_CRITERION = _Single(
    {
        "id": _opt("int"),
        "sortorder": _opt("int"),
        "description": _opt("raw"),
        "descriptionformat": _opt("int"),
        "shortname": _Value("text"),
        "descriptionmarkers": _opt("raw"),
        "descriptionmarkersformat": _opt("int"),
        "maxscore": _Value("float"),
    }
)
_GUIDE_COMMENT = _Single(
    {
        "id": _opt("int"),
        "sortorder": _opt("int"),
        "description": _opt("raw"),
        "descriptionformat": _opt("int"),
    }
)
#: ``core_grading_external::definition()``: the four time/user fields are required (Moodle then
#: ignores timecreated, timemodified and usermodified, and stores usercreated as sent).
_GRADING_DEFINITION = _Single(
    {
        "id": _opt("int"),
        "method": _Value("text"),
        "name": _Value("text"),
        "description": _opt("raw"),
        "descriptionformat": _opt("int"),
        "status": _Value("int"),
        "copiedfromid": _opt("int"),
        "timecreated": _Value("int"),
        "usercreated": _Value("int"),
        "timemodified": _Value("int"),
        "usermodified": _Value("int"),
        "timecopied": _opt("int"),
        "guide": _Single(
            {
                "guide_criteria": _Multiple(_GUIDE_CRITERION, _OPTIONAL),
                "guide_comments": _Multiple(_GUIDE_COMMENT, _OPTIONAL),
            },
            _OPTIONAL,
        ),
        "rubric": _Single({"rubric_criteria": _Multiple(_RUBRIC_CRITERION, _OPTIONAL)}, _OPTIONAL),
    }
)
_GRADING_AREA = _Single(
    {
        "cmid": _Value("int"),
        "contextid": _Value("int"),
        "component": _Value("text"),
        "areaname": _Value("text"),
        "activemethod": _opt("text"),
        "definitions": _Multiple(_GRADING_DEFINITION),
    }
)


def _filling(**extra: Any) -> _Single:
    """A filling of ``mod_assign_save_grade``'s advancedgradingdata (the instance filling without ``id``)."""
    keys = {
        "criterionid": _Value("int"),
        "levelid": _opt("int"),
        "remark": _opt("raw"),
        "remarkformat": _opt("int"),
    }
    return _Single(keys | extra)


#: wsfunction -> its parameters, for the functions of this section (merged into _PARAMETERS).
_GRADING_PARAMETERS: dict[str, _Single] = {
    "core_grading_get_definitions": _Single(
        {"cmids": _Multiple(_Value("int")), "areaname": _Value("area"), "activeonly": _dflt("bool", False)}
    ),
    "core_grading_save_definitions": _Single({"areas": _Multiple(_GRADING_AREA)}),
    "core_grading_get_gradingform_instances": _Single(
        {"definitionid": _Value("int"), "since": _dflt("int", 0)}
    ),
    "mod_assign_get_assignments": _Single(
        {
            "courseids": _Multiple(_Value("int"), _DEFAULT, []),
            "capabilities": _Multiple(_Value("capability"), _DEFAULT, []),
            "includenotenrolledcourses": _dflt("bool", False),
        }
    ),
    "mod_assign_get_grades": _Single({"assignmentids": _Multiple(_Value("int")), "since": _dflt("int", 0)}),
    "mod_assign_save_grade": _Single(
        {
            "assignmentid": _Value("int"),
            "userid": _Value("int"),
            "grade": _Value("float"),
            "attemptnumber": _Value("int"),
            "addattempt": _Value("bool"),
            "workflowstate": _Value("alpha"),
            "applytoall": _Value("bool"),
            "plugindata": _Single(
                {
                    "assignfeedbackcomments_editor": _Single(
                        {"text": _Value("raw"), "format": _Value("int")}, _OPTIONAL
                    ),
                    "files_filemanager": _opt("int"),
                },
                _DEFAULT,
                {},
            ),
            "advancedgradingdata": _Single(
                {
                    method: _Single(
                        {
                            "criteria": _Multiple(
                                _Single(
                                    {
                                        "criterionid": _Value("int"),
                                        "fillings": _Multiple(
                                            _filling(score=_Value("float"))
                                            if method == "guide"
                                            else _filling(),
                                            _OPTIONAL,
                                        ),
                                    }
                                )
                            )
                        },
                        _OPTIONAL,
                    )
                    for method in _GRADING_METHODS
                },
                _DEFAULT,
                {},
            ),
        }
    ),
}
_PARAMETERS.update(_GRADING_PARAMETERS)


def _grading_state() -> dict[str, dict]:
    """The simulated site's assignment and advanced-grading tables, each ``id -> row``."""
    names = ("assignments", "areas", "definitions", "criteria", "levels", "instances", "fillings")
    return {name: {} for name in (*names, "submissions", "assign_grades", "comments")}


def _ws_text(text: Any, textformat: Any) -> tuple[str, int]:
    """``core_external\\util::format_text()`` of a stored text: ``""`` with the stored format when the
    text is empty or null (an empty remark answers ``remarkformat`` 0, a null instance feedback
    ``feedbackformat`` 0), else the text as HTML, format 1 (grading/core_grading_get_gradingform_instances.json).
    The simulated texts are plain one-liners, which Moodle's formatting leaves as they are but for
    ``&``, answered as ``&amp;`` (seen on the real 4.5 here: a rubric criterion saved as "Database
    Design & Development" is answered "Database Design &amp; Development"; no fixture records it yet)."""
    if text is None or text == "":
        return "", 0 if textformat is None else int(textformat)
    return str(text).replace("&amp;", "&").replace("&", "&amp;"), 1


def _set_new_ids(item: dict, start: int) -> dict:
    """``core_grading_external::set_new_ids()``: an item without ``id`` gets ``NEWID<n>``, where ``n``
    starts at ``start`` and grows by one per sub-item (a criterion's levels) before the item's own."""
    result: dict[str, Any] = {}
    number = start
    for key, value in item.items():
        if isinstance(value, list):
            subs: dict[Any, dict] = {}
            for sub in value:
                processed = _set_new_ids(sub, number)
                subs[processed["id"]] = processed
                number += 1
            result[key] = subs
        else:
            result[key] = value
    if "id" not in item:
        result["id"] = f"NEWID{number}"
    return result


def _rubric_new_ids(criteria: list[dict]) -> dict[Any, dict]:
    """The criteria keyed as ``create_definition_object()`` keys them: an id, or ``NEWID<n>`` (the n-th
    criterion numbers its levels from n). Criteria without ids whose numbers of levels differ can get
    the same ``NEWID`` and the later one silently replaces the earlier one in the earlier's place, as a
    PHP array does (grading/core_grading_get_definitions.json, "after the collision")."""
    items: dict[Any, dict] = {}
    for number, criterion in enumerate(criteria, start=1):
        processed = _set_new_ids(criterion, number)
        items[processed["id"]] = processed
    return items


def _is_newid(key: Any) -> bool:
    return isinstance(key, str) and re.fullmatch(r"NEWID\d+", key) is not None


def _decimal5(value: float) -> float:
    """A value as a ``decimal(10,5)`` column stores it (``assign_grades.grade``, ``grade_grades.rawgrade``):
    2 of 3 criteria -> 66.66667 (grading/mod_assign_get_grades.json)."""
    return float(Decimal(repr(float(value))).quantize(Decimal("0.00001"), rounding=ROUND_HALF_UP))


def _php_text_equal(stored: str | None, sent: str | None) -> bool:
    """PHP 8's ``$stored == $sent`` for two texts, null being ``""``: numeric strings compare as numbers."""
    a, b = stored or "", sent or ""
    if _FLOAT_RE.match(a) and _FLOAT_RE.match(b) and a.strip() and b.strip():
        try:
            return float(a) == float(b)
        except ValueError:
            pass
    return a == b


#: Functions whose changes are rolled back when the call fails (Moodle's delegated transactions), and
#: the parts of the state each one writes (only those are copied before the call). Id counters are not
#: rolled back: like database sequences, a failed batch still consumes the ids it inserted with.
_TRANSACTIONAL: dict[str, tuple[str, ...]] = {
    "core_user_create_users": ("users",),
    "core_course_create_courses": ("courses", "categories"),
    "core_course_create_categories": ("categories",),
    "enrol_manual_enrol_users": ("enrolments",),
    "enrol_manual_unenrol_users": ("enrolments",),
    "core_grades_update_grades": ("grades",),
}
#: Every function the simulated site knows.
FUNCTIONS: tuple[str, ...] = tuple(_PARAMETERS)
#: Functions that change the site (an injected ``lost_answer`` applies them, then hangs up).
WRITE_FUNCTIONS: frozenset[str] = frozenset(
    {
        "core_user_create_users",
        "core_user_update_users",
        "core_course_create_courses",
        "core_course_update_courses",
        "core_course_create_categories",
        "enrol_manual_enrol_users",
        "enrol_manual_unenrol_users",
        "core_grades_update_grades",
        "core_grading_save_definitions",
        "mod_assign_save_grade",
    }
)


@dataclass
class _HttpFailure:
    remaining: int
    status: int
    function: str
    apply: bool


@dataclass
class _State:
    users: dict[int, dict]
    categories: dict[int, dict]
    courses: dict[int, dict]
    enrolments: dict[tuple[int, int], dict]
    grade_items: dict[int, dict]
    grades: dict[tuple[int, int], dict]
    counters: dict[str, int]
    #: assignments and advanced grading (see "assignments and advanced grading" in MoodleSimulator)
    grading: dict[str, dict] = _field(default_factory=_grading_state)


class MoodleSimulator(LoopbackServer):
    """An in-process Moodle 4.5 site answering the REST web services on one loopback HTTP server.

    Example:
        >>> with MoodleSimulator() as sim:  # doctest: +SKIP
        ...     requests.post(f"{sim.base_url}/webservice/rest/server.php",
        ...                   params={"wstoken": DEFAULT_TOKEN, "wsfunction": "core_webservice_get_site_info",
        ...                           "moodlewsrestformat": "json"})

    Args:
        tokens: token -> the functions its service allows (``None`` = every function). Every token
            acts as the site administrator (user id 2). Default ``{DEFAULT_TOKEN: None}``.
        max_input_vars: PHP's ``max_input_vars`` on the site (see the module docstring for how
            PHP applies it).
        debug: the site is in debug mode: error bodies carry ``debuginfo``.
        site_name: the site's full name (``sitename``, and the site course's fullname).
        clock: returns the current aware date-time; drives every ``time*`` field. Defaults to UTC now.
        password_policy: hold passwords to Moodle's default policy (8 characters, a digit, a lower
            and an upper case letter, a non-alphanumeric character).
        faults: a seeded :class:`~sync_pipelines.sandbox.faults.FaultPlan` deciding which REST calls
            fail and how (shared with a Zoho simulator if given to both); ``None`` injects nothing.
        missing_capabilities: capabilities the tokens' role lacks (see
            :meth:`set_missing_capabilities`); empty = the site administrator's view.
    """

    thread_name = "moodle-simulator"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def __init__(
        self,
        *,
        tokens: dict[str, frozenset[str] | None] | None = None,
        max_input_vars: int = 1000,
        debug: bool = False,
        site_name: str = "Demo School Moodle",
        clock: Callable[[], datetime] | None = None,
        password_policy: bool = True,
        faults: FaultPlan | None = None,
        missing_capabilities: Iterable[str] = (),
    ) -> None:
        if max_input_vars < 1:
            raise ValueError("max_input_vars must be >= 1")
        self.tokens = dict(tokens) if tokens is not None else {DEFAULT_TOKEN: None}
        self.max_input_vars = max_input_vars
        self.debug = debug
        self.site_name = site_name
        self.password_policy = password_policy
        self.faults = faults
        self.missing_capabilities: frozenset[str] = frozenset(missing_capabilities)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._http_failures: list[_HttpFailure] = []
        self._function_failures: dict[str, list[tuple[str, str]]] = {}
        super().__init__()
        self.requests: list[MoodleRequest] = []
        self._state = self._fresh_state()

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """``{base_url}/webservice/rest/server.php``."""
        return self.base_url + REST_PATH

    # --- state, for tests and the demo ------------------------------------------------------------

    def now(self) -> datetime:
        """The simulator's clock."""
        return self._clock()

    def users(self) -> list[dict]:
        """Copies of every account (guest and admin included), in id order."""
        with self._lock:
            return [copy.deepcopy(u) for _, u in sorted(self._state.users.items())]

    def user(self, user_id: int) -> dict | None:
        """A copy of one account, or ``None``."""
        with self._lock:
            found = self._state.users.get(int(user_id))
            return copy.deepcopy(found) if found is not None else None

    def courses(self) -> list[dict]:
        """Copies of every course except the site course (id 1), in id order."""
        with self._lock:
            return [copy.deepcopy(c) for i, c in sorted(self._state.courses.items()) if i != SITE_COURSE_ID]

    def categories(self) -> list[dict]:
        """Copies of every course category, in id order."""
        with self._lock:
            return [copy.deepcopy(c) for _, c in sorted(self._state.categories.items())]

    def enrolments(self, course_id: int | None = None) -> list[dict]:
        """Manual enrolments, optionally of one course, ordered by course then user.

        Returns:
            ``{userid, courseid, roleid, roles, status, timestart, timeend}`` each: ``roleid`` is the
            first role assigned (``None`` if none), ``roles`` all of them; ``status`` 0 is active, 1
            suspended.
        """
        with self._lock:
            rows = []
            for (cid, uid), ue in sorted(self._state.enrolments.items()):
                if course_id is not None and cid != int(course_id):
                    continue
                roles = list(ue["roles"])
                rows.append(
                    {
                        "userid": uid,
                        "courseid": cid,
                        "roleid": roles[0] if roles else None,
                        "roles": roles,
                        "status": ue["status"],
                        "timestart": ue["timestart"],
                        "timeend": ue["timeend"],
                    }
                )
            return rows

    def add_user(self, **fields: Any) -> int:
        """Add an account as if made by hand (no validation, no policy): for matching tests.

        Args:
            **fields: user fields (``username``, ``firstname``, ``lastname``, ``email``, ``idnumber``,
                ``auth``, ``suspended``, ``customfields`` as a dict or ``[{type, value}]``...).
                Missing ones get Moodle's defaults.

        Returns:
            The new user id.
        """
        with self._lock:
            user_id = self._next("user")
            customfields = fields.pop("customfields", {})
            if isinstance(customfields, list):
                customfields = {c["type"]: c["value"] for c in customfields}
            if fields.get("password"):
                fields["password"] = self._hash(str(fields["password"]))
            user = self._new_user_record(user_id, fields)
            user["customfields"] = dict(customfields)
            self._state.users[user_id] = user
            return user_id

    def add_grade_item(
        self, course_id: int, itemname: str, *, grademax: float = 100.0, itemmodule: str = "assign"
    ) -> int:
        """Add a graded activity (a course module and its grade item) to a course.

        The course-total item is created first if the course has none yet, as Moodle does. An
        ``assign`` activity is an assignment too, with the default settings of
        :meth:`add_assignment`: in Moodle every grade item of ``itemmodule`` ``assign`` is the item of
        an ``assign`` record (``iteminstance`` = the assignment id), which ``mod_assign_get_assignments``
        lists and whose grades ``mod_assign_get_grades`` answers. Other modules (``quiz``...) are
        gradebook items only, as far as this simulator goes.

        Returns:
            The grade item id.

        Raises:
            KeyError: no such course.
        """
        with self._lock:
            course_id = int(course_id)
            if course_id not in self._state.courses:
                raise KeyError(f"no course {course_id}")
            self._course_item(course_id)
            item_id = self._next("grade_item")
            self._state.grade_items[item_id] = {
                "id": item_id,
                "courseid": course_id,
                "itemtype": "mod",
                "itemmodule": itemmodule,
                "iteminstance": self._next(f"instance:{itemmodule}"),
                "cmid": self._next("cm"),
                "itemname": itemname,
                "itemnumber": 0,
                "idnumber": "",
                "grademin": 0.0,
                "grademax": float(grademax),
                "sortorder": item_id,
            }
            self._recompute_course_max(course_id)
            if itemmodule == "assign":
                item = self._state.grade_items[item_id]
                self._state.grading["assignments"][item["iteminstance"]] = {
                    "id": item["iteminstance"],
                    "cmid": item["cmid"],
                    "course": course_id,
                    "name": itemname,
                    "grade": round(float(grademax)),
                    "timemodified": self._ts(),
                    "intro": "",
                    "introformat": 1,
                    "onlinetext": True,
                    "feedback_comments": True,
                    "gradeitemid": item_id,
                    **_ASSIGN_SETTINGS,
                }
            return item_id

    def set_grade(self, course_id: int, user_id: int, item_id: int, grade: float | None) -> None:
        """Set (or, with ``None``, clear) a user's grade for an activity; the course total follows.

        The grade is bounded to the item's range, as Moodle bounds a raw grade.

        The grade of an assignment's item is given as a teacher gives it in the assignment without
        advanced grading: the learner's latest attempt's ``assign_grades`` row takes it (``None``:
        -1, no grade), with the grader and the time, and the gradebook gets it with that time as its
        date graded (``assign::update_grade()`` -> ``convert_grade_for_gradebook()``,
        ``mod/assign/locallib.php``: ``dategraded = $grade->timemodified``), so
        ``mod_assign_get_grades`` answers it. Other items are graded in the gradebook only.

        Raises:
            KeyError: no such course, user or grade item of that course.
        """
        with self._lock:
            item = self._state.grade_items.get(int(item_id))
            if item is None or item["courseid"] != int(course_id) or item["itemtype"] != "mod":
                raise KeyError(f"course {course_id} has no activity grade item {item_id}")
            if int(user_id) not in self._state.users:
                raise KeyError(f"no user {user_id}")
            assign = self._state.grading["assignments"].get(item["iteminstance"])
            if item["itemmodule"] != "assign" or assign is None or assign.get("gradeitemid") != item["id"]:
                self._store_grade(item, int(user_id), grade, feedback=None)
                return
            row = self._user_grade(assign, int(user_id), -1)
            if grade is not None:
                grade = min(max(float(grade), item["grademin"]), item["grademax"])
            row.update(
                grade=_decimal5(grade) if grade is not None else -1.0,
                grader=ADMIN_USER_ID,
                timemodified=self._ts(),
            )
            self._store_grade(item, int(user_id), grade, feedback=None, at=row["timemodified"])
            self._state.grades[(item["id"], int(user_id))]["dategraded"] = row["timemodified"]

    def fail_next(self, count: int, *, status: int = 500, function: str = "", apply: bool = False) -> None:
        """Answer the next ``count`` matching REST calls with an HTTP error page instead of Moodle's answer.

        Replaces any injected HTTP failure still pending, so ``fail_next(0)`` cancels it.

        Args:
            count: how many calls fail.
            status: HTTP status (a 5xx from the web server or proxy in front of Moodle).
            function: only calls of this ``wsfunction`` fail; empty matches every call.
            apply: process the call first, then answer the error anyway (the answer was lost).
        """
        with self._lock:
            self._http_failures = [_HttpFailure(count, status, function, apply)] if count > 0 else []

    def fail_function(self, function: str, errorcode: str, message: str, *, count: int = 1) -> None:
        """Answer the next ``count`` calls of ``function`` with a Moodle exception body (HTTP 200).

        The body is ``{"exception":"core\\exception\\moodle_exception","errorcode":errorcode,
        "message":message}``;
        nothing is applied. ``count=0`` cancels what is pending for that function.
        """
        with self._lock:
            if count <= 0:
                self._function_failures.pop(function, None)
            else:
                self._function_failures[function] = [(errorcode, message)] * count

    def set_faults(self, faults: FaultPlan | None) -> None:
        """Inject faults from ``faults`` from the next request on (``None`` stops injecting)."""
        with self._lock:
            self.faults = faults

    def set_missing_capabilities(self, capabilities: Iterable[str]) -> None:
        """Play a token whose role lacks ``capabilities`` (empty: the site administrator again).

        What each one changes, as a real Moodle 4.5 answers a role without it (recorded from Moodle
        4.5: fixtures/moodle45/preflight_probe.json); none of them raises an error:

        * ``mod/<module>:view`` (``mod/assign:view``, ``mod/quiz:view``...):
          ``gradereport_user_get_grade_items`` leaves out that module's grade items (the course total
          keeps its grade and ``grademax``) and ``core_course_get_contents`` the activities
          themselves; ``core_grades_get_gradeitems`` still lists their grade items.
        * ``moodle/user:viewalldetails``: user details (``core_user_get_users_by_field``,
          ``core_enrol_get_enrolled_users``) lose ``username``, ``idnumber``, ``auth``, ``confirmed``,
          ``lang``, ``theme``, ``mailformat``, ``department``, ``institution``, so lookups by
          ``idnumber`` and ``username`` answer ``[]``; by ``id`` and ``email`` they still answer.
        * ``moodle/site:viewuseridentity``: outside a course, details lose ``email`` (unless the
          user's ``maildisplay`` is 1), so lookups by ``email`` answer ``[]``; enrolled users keep it
          (``moodle/course:useremail``).
        * ``moodle/site:viewfullnames``: details of other users lose ``firstname`` and ``lastname``.
        """
        with self._lock:
            self.missing_capabilities = frozenset(capabilities)

    def _lacks(self, capability: str) -> bool:
        return capability in self.missing_capabilities

    def _can_view_module(self, module: str | None) -> bool:
        """Whether the role sees activities of ``module`` (``cm_info::uservisible``: ``mod/<module>:view``).

        Without it Moodle 4.5 leaves the activity out of the grade report and of
        ``core_course_get_contents`` alike (recorded from Moodle 4.5: fixtures/moodle45/preflight_probe.json).
        """
        return not module or not self._lacks(f"mod/{module}:view")

    def reset_log(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.requests.clear()

    # --- internals: state -------------------------------------------------------------------------

    def _ts(self) -> int:
        return int(self.now().timestamp())

    def _next(self, counter: str) -> int:
        counters = self._state.counters
        counters[counter] = counters.get(counter, 0) + 1
        return counters[counter]

    def _fresh_state(self) -> _State:
        now = self._ts()
        state = _State({}, {}, {}, {}, {}, {}, {"user": 2, "course": 1, "category": 1})
        state.users[GUEST_USER_ID] = self._new_user_record(
            GUEST_USER_ID,
            {"username": "guest", "firstname": "Guest user", "lastname": " ", "email": "root@localhost"},
        )
        state.users[ADMIN_USER_ID] = self._new_user_record(
            ADMIN_USER_ID,
            {"username": "admin", "firstname": "Admin", "lastname": "User", "email": "admin@example.com"},
        )
        state.categories[MISC_CATEGORY_ID] = {
            "id": MISC_CATEGORY_ID,
            "name": "Miscellaneous",
            "idnumber": None,  # NULL on the install's category (core_course_get_categories.json)
            "description": "",
            "descriptionformat": 1,
            "parent": 0,
            "sortorder": 10000,
            "coursecount": 0,
            "visible": 1,
            "visibleold": 1,
            "timemodified": now,
            "depth": 1,
            "path": "/1",
            "theme": "",
        }
        state.courses[SITE_COURSE_ID] = self._new_course_record(
            SITE_COURSE_ID,
            {
                "fullname": self.site_name,
                "shortname": "moodle",
                "categoryid": 0,
                "format": "site",
                "summary": "",
            },
        )
        state.courses[SITE_COURSE_ID].update(
            {"sortorder": 1, "enablecompletion": 0, "newsitems": 3, "showcompletionconditions": None}
        )
        return state

    def _new_user_record(self, user_id: int, fields: dict) -> dict:
        now = self._ts()
        user = {
            "id": user_id,
            "auth": "manual",
            "confirmed": 1,
            "suspended": 0,
            "deleted": 0,
            "username": f"user{user_id}",
            "password": "",
            "idnumber": "",
            "firstname": "",
            "lastname": "",
            "email": "",
            "phone1": "",
            "phone2": "",
            "institution": "",
            "department": "",
            "address": "",
            "city": "",
            "country": "",
            "lang": "en",
            "calendartype": "gregorian",
            "theme": "",
            "timezone": "99",
            "firstaccess": 0,
            "lastaccess": 0,
            "description": None,
            "descriptionformat": 1,
            "mailformat": 1,
            "trackforums": 0,
            "maildisplay": 2,
            "firstnamephonetic": None,
            "lastnamephonetic": None,
            "middlename": None,
            "alternatename": None,
            "timecreated": now,
            "timemodified": now,
            "customfields": {},
        }
        for key, value in fields.items():
            if key in ("suspended", "confirmed", "deleted"):
                value = int(bool(value))
            user[key] = value
        return user

    def _new_course_record(self, course_id: int, fields: dict) -> dict:
        now = self._ts()
        course = {
            "id": course_id,
            "category": fields["categoryid"],
            "sortorder": 0,
            "fullname": fields["fullname"],
            "shortname": fields["shortname"],
            "idnumber": fields.get("idnumber") or "",
            "summary": fields.get("summary") or "",
            "summaryformat": fields.get("summaryformat", 1),
            "format": fields.get("format", "topics"),
            "showgrades": fields.get("showgrades", 1),
            "newsitems": fields.get("newsitems", 5),
            "startdate": fields.get("startdate", 0),
            "enddate": fields.get("enddate", 0),
            "marker": 0,
            "maxbytes": fields.get("maxbytes", 0),
            "legacyfiles": 0,
            "showreports": fields.get("showreports", 0),
            "visible": fields.get("visible", 1),
            "groupmode": fields.get("groupmode", 0),
            "groupmodeforce": fields.get("groupmodeforce", 0),
            "defaultgroupingid": fields.get("defaultgroupingid", 0),
            "lang": fields.get("lang", ""),
            "calendartype": "",
            "theme": fields.get("theme", ""),
            "timecreated": now,
            "timemodified": now,
            "requested": 0,
            "enablecompletion": fields.get("enablecompletion", 1),
            "completionnotify": fields.get("completionnotify", 0),
            "cacherev": now,
            "numsections": fields.get("numsections", 0),  # create_course(): sections 0..numsections
            # A course made over web services: no activity dates shown, completion conditions shown
            # (core_course_get_courses_by_field.json, "by idnumber").
            "showactivitydates": 0,
            "showcompletionconditions": 1,
            "customfields": {c["shortname"]: c["value"] for c in fields.get("customfields") or []},
        }
        return course

    def _course_item(self, course_id: int) -> dict:
        """The course-total grade item, created (with the course grade category) when first needed."""
        for item in self._state.grade_items.values():
            if item["courseid"] == course_id and item["itemtype"] == "course":
                return item
        item_id = self._next("grade_item")
        category_id = self._next("grade_category")
        item = {
            "id": item_id,
            "courseid": course_id,
            "itemtype": "course",
            "itemmodule": None,
            "iteminstance": category_id,
            "cmid": None,
            "itemname": None,
            "itemnumber": None,
            "idnumber": None,
            "grademin": 0.0,
            "grademax": 100.0,
            "sortorder": item_id,
            "gradecategoryid": category_id,
        }
        self._state.grade_items[item_id] = item
        return item

    def _mod_items(self, course_id: int) -> list[dict]:
        items = [
            i
            for i in self._state.grade_items.values()
            if i["courseid"] == course_id and i["itemtype"] == "mod"
        ]
        return sorted(items, key=lambda i: i["sortorder"])

    def _recompute_course_max(self, course_id: int) -> None:
        items = self._mod_items(course_id)
        self._course_item(course_id)["grademax"] = (
            # Natural: the sum of the items, 0 without any (gradereport_user_get_grade_items.json,
            # "a course without graded activities": the total's grademax 0, range "0&ndash;0").
            float(sum(i["grademax"] for i in items)) if items else 0.0
        )

    def _store_grade(
        self, item: dict, user_id: int, grade: float | None, feedback: str | None, *, at: int | None = None
    ) -> None:
        """A gradebook grade; ``at`` is the date graded an activity sends (``grade_item::update_raw_grade()``
        in ``lib/grade/grade_item.php`` sets ``timemodified = $dategraded`` when the module gives one),
        else the time now."""
        key = (item["id"], user_id)
        now = self._ts() if at is None else int(at)
        row = self._state.grades.get(key)
        if row is None:
            row = {"finalgrade": None, "feedback": None, "timecreated": now, "timemodified": now}
            self._state.grades[key] = row
        if grade is not None:
            grade = min(max(float(grade), item["grademin"]), item["grademax"])
        row["finalgrade"] = grade
        if feedback is not None:
            row["feedback"] = feedback
        row["timemodified"] = now

    def _find_course(self, course_id: int) -> dict:
        course = self._state.courses.get(course_id)
        if course is None:
            raise _missing_record("course", "id = ?", [course_id])
        return course

    def _fullname(self, user: dict) -> str:
        return f"{user['firstname']} {user['lastname']}"

    def _email_taken(self, email: str, *, other_than: int | None = None) -> bool:
        wanted = email.casefold()
        return any(
            u["email"].casefold() == wanted and uid != other_than and not u["deleted"]
            for uid, u in self._state.users.items()
        )

    def _password_errors(self, password: str) -> str:
        """Moodle's ``check_password_policy()`` error message (HTML), or '' when the password passes."""
        if not self.password_policy:
            return ""
        errors = []
        if len(password) < 8:
            errors.append("Passwords must be at least 8 characters long.")
        if len(re.findall(r"[0-9]", password)) < 1:
            errors.append("Passwords must have at least 1 digit(s).")
        if len(re.findall(r"[a-z]", password)) < 1:
            errors.append("Passwords must have at least 1 lower case letter(s).")
        if len(re.findall(r"[A-Z]", password)) < 1:
            errors.append("Passwords must have at least 1 upper case letter(s).")
        if len(re.findall(r"[^a-zA-Z0-9]", password)) < 1:
            # core_user_create_users.json, "a password the policy refuses"
            errors.append("The password must have at least 1 special character(s) such as *, -, or #.")
        return "".join(f"<div>{e}</div>" for e in errors)

    @staticmethod
    def _hash(password: str) -> str:
        return "$sim$" + hashlib.sha256(password.encode()).hexdigest()

    # --- internals: HTTP entry point ----------------------------------------------------------------

    def _handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> _Response:
        parts = urlsplit(raw_path)
        if parts.path.rstrip("/") != REST_PATH:
            return _Response(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html")
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        text = (
            body.decode("utf-8", "replace")
            if content_type in ("", "application/x-www-form-urlencoded")
            else ""
        )
        get_pairs, _, get_truncated = _php_pairs(parts.query, self.max_input_vars)
        post_pairs, field_count, post_truncated = _php_pairs(text, self.max_input_vars + 1)
        truncated = get_truncated or post_truncated
        params = {**_php_decode(get_pairs), **_php_decode(post_pairs)}
        fmt = params.pop("moodlewsrestformat", None)
        fmt = fmt if fmt in ("json", "xml") else "xml"
        token = params.pop("wstoken", None)
        function = params.pop("wsfunction", None)
        function = function if isinstance(function, str) else None
        for key in [k for k in params if isinstance(k, str) and k.startswith("moodlewssetting")]:
            params.pop(key)
        errorcode: str | None = None
        fault = self._draw_fault(method, function)
        with self._lock:
            failure = None if fault in ("500", "503", "drop") else self._take_http_failure(function)
            if fault in ("500", "503"):
                response = _Response(int(fault), _error_page(int(fault)), "text/html; charset=utf-8")
            elif fault == "drop":
                response = _Response(0, b"", "", drop=True)
            elif failure is not None and not failure.apply:
                response = _Response(failure.status, _error_page(failure.status), "text/html; charset=utf-8")
            else:
                try:
                    result = self._call(token, function, params)
                    payload = _json(result) if fmt == "json" else _xml_response(result)
                except MoodleException as exc:
                    errorcode = exc.errorcode
                    payload = (
                        _json(exc.body(debug=self.debug))
                        if fmt == "json"
                        else _xml_error(exc, debug=self.debug)
                    )
                except Exception as exc:  # a simulator bug must still answer like the site does
                    logger.exception("Moodle simulator failed on %s", function)
                    error = MoodleException(EXC_MOODLE, "generalexceptionmessage", str(exc))
                    errorcode = error.errorcode
                    payload = (
                        _json(error.body(debug=self.debug))
                        if fmt == "json"
                        else _xml_error(error, debug=False)
                    )
                if fault == "lost_answer":
                    response = _Response(0, b"", "", drop=True)  # applied, never answered
                elif failure is not None:
                    response = _Response(
                        failure.status, _error_page(failure.status), "text/html; charset=utf-8"
                    )
                else:
                    ctype = "application/json" if fmt == "json" else "application/xml; charset=utf-8"
                    response = _Response(200, payload, ctype)
            self.requests.append(
                MoodleRequest(
                    method=method,
                    function=function,
                    params=_plain(params),
                    status=response.status,
                    field_count=field_count,
                    truncated=truncated,
                    format=fmt,
                    errorcode=errorcode,
                    time=self.now(),
                    fault=fault,
                )
            )
        logger.info(
            "%s %s -> %s%s", method, function, response.status, f" ({errorcode})" if errorcode else ""
        )
        return response

    def _draw_fault(self, method: str, function: str | None) -> str | None:
        """Ask the fault plan about this REST call; sleep (outside the site's lock) if ``slow``."""
        plan = self.faults
        if plan is None:
            return None
        fault = plan.decide(
            "moodle", write=function in WRITE_FUNCTIONS, target=f"{method} {function or '(no wsfunction)'}"
        )
        if fault == "slow":
            time.sleep(plan.slow_seconds)
        return fault

    def _take_http_failure(self, function: str | None) -> _HttpFailure | None:
        for failure in self._http_failures:
            if failure.remaining > 0 and (not failure.function or failure.function == function):
                failure.remaining -= 1
                self._http_failures = [f for f in self._http_failures if f.remaining > 0]
                return failure
        return None

    def _call(self, token: Any, function: str | None, params: dict) -> Any:
        """Authenticate, find the function, check access, validate, run (in a transaction)."""
        if not isinstance(token, str) or token not in self.tokens:
            raise _moodle("invalidtoken", "Invalid token - token not found")
        if function not in _PARAMETERS:
            raise _missing_record("external_functions", "name = ?", [function or ""])
        allowed = self.tokens[token]
        if allowed is not None and function not in allowed:
            raise MoodleException(
                "webservice_access_exception",
                "accessexception",
                "Access control exception",
                f"Access to the function {function}() is not allowed. There could be multiple reasons for this: "
                "1. The service linked to the user token does not contain the function. "
                "2. The service is user-restricted and the user is not listed. "
                "3. The service is IP-restricted and the user IP is not listed. "
                "4. The service is time-restricted and the time has expired. "
                "5. The token is time-restricted and the time has expired. "
                "6. The service requires a specific capability which the user does not have. "
                "7. The function is called with username/password (no user token is sent) and none of the "
                "services has the function to allow the user. These settings can be found in Administration "
                "> Site administration > Server > Web services > External services and Manage tokens.",
            )
        pending = self._function_failures.get(function)
        if pending:
            errorcode, message = pending.pop(0)
            if not pending:
                self._function_failures.pop(function, None)
            raise _moodle(errorcode, message)
        validated = _validate(_PARAMETERS[function], params)
        handler = getattr(self, "_ws_" + function)
        if function not in _TRANSACTIONAL:
            return handler(token=token, **validated)
        parts = _TRANSACTIONAL[function]
        snapshot = {part: copy.deepcopy(getattr(self._state, part)) for part in parts}
        try:
            return handler(token=token, **validated)
        except BaseException:
            for part, saved in snapshot.items():
                setattr(self._state, part, saved)
            raise

    # --- web service functions: site --------------------------------------------------------------

    def _ws_core_webservice_get_site_info(self, *, token: str, serviceshortnames: list[str]) -> dict:
        allowed = self.tokens[token]
        names = sorted(FUNCTIONS if allowed is None else (f for f in FUNCTIONS if f in allowed))
        admin = self._state.users[ADMIN_USER_ID]
        return {
            "sitename": self.site_name,
            "username": admin["username"],
            "firstname": admin["firstname"],
            "lastname": admin["lastname"],
            "fullname": self._fullname(admin),
            "lang": "en",
            "userid": ADMIN_USER_ID,
            "siteurl": self.base_url,
            "userpictureurl": f"{self.base_url}/theme/image.php/boost/core/1/u/f1",
            "functions": [{"name": name, "version": VERSION} for name in names],
            "downloadfiles": 1,
            "uploadfiles": 1,
            "release": RELEASE,
            "version": VERSION,
            "mobilecssurl": "",
            # A 4.5 site's defaults (core_webservice_get_site_info.json, "the pipeline's token").
            "advancedfeatures": [
                {"name": "usecomments", "value": 1},
                {"name": "usetags", "value": 1},
                {"name": "enablenotes", "value": 1},
                {"name": "messaging", "value": 1},
                {"name": "enableblogs", "value": 1},
                {"name": "enablecompletion", "value": 1},
                {"name": "enablebadges", "value": 1},
                {"name": "messagingallusers", "value": 0},
                {"name": "enablecustomreports", "value": 1},
                {"name": "enableglobalsearch", "value": 0},
                {"name": "mnet_dispatcher_mode", "value": 0},
                {"name": "enablecompetencies", "value": 1},
            ],
            "usercanmanageownfiles": True,
            "userquota": 104857600,
            "usermaxuploadfilesize": 104857600,
            "userhomepage": 1,
            # The key of the user's private files/RSS URLs (get_user_key('core_files', ...)).
            "userprivateaccesskey": hashlib.md5(f"core_files:{token}".encode()).hexdigest(),
            "siteid": SITE_COURSE_ID,
            "sitecalendartype": "gregorian",
            "usercalendartype": "gregorian",
            "userissiteadmin": True,
            "theme": "boost",
            "limitconcurrentlogins": 0,
            "policyagreed": 0,
        }

    # --- web service functions: users -------------------------------------------------------------

    def _ws_core_user_create_users(self, *, token: str, users: list[dict]) -> list[dict]:
        created = []
        for user in users:
            for name in ("username", "firstname", "lastname"):
                if user[name].strip() == "":
                    raise _invalid(f"The field {name} cannot be blank")
            if any(u["username"] == user["username"] for u in self._state.users.values()):
                raise _invalid("Username already exists: " + user["username"])
            if user["auth"] not in _CREATABLE_AUTHS:
                raise _invalid("Invalid authentication type: " + user["auth"])
            if user["lang"] not in _INSTALLED_LANGS:
                raise _invalid("Invalid language code: " + user["lang"])
            if user.get("theme") and user["theme"] not in _INSTALLED_THEMES:
                raise _invalid("Invalid theme: " + user["theme"])
            internal = user["auth"] in _INTERNAL_AUTHS
            if internal and not user.get("password") and not user.get("createpassword"):
                raise _invalid("Invalid password: you must provide a password, or set createpassword.")
            if not _valid_email(user["email"]):
                raise _invalid("Email address is invalid: " + user["email"])
            if self._email_taken(user["email"]):
                raise _invalid("Email address already exists: " + user["email"])
            password = ""
            if internal and not user.get("createpassword"):
                errmsg = self._password_errors(user["password"])
                if errmsg:
                    raise _moodle(errmsg, "error/" + errmsg)
                password = self._hash(user["password"])
            elif not internal:
                password = "not cached"
            user_id = self._next("user")
            fields = {
                k: v
                for k, v in user.items()
                if k not in ("createpassword", "password", "customfields", "preferences")
            }
            record = self._new_user_record(user_id, fields)
            record["password"] = password
            record["customfields"] = {c["type"]: c["value"] for c in user.get("customfields") or []}
            self._state.users[user_id] = record
            created.append({"id": user_id, "username": user["username"]})
        return created

    def _ws_core_user_update_users(self, *, token: str, users: list[dict]) -> dict:
        warnings = []
        for user in users:
            try:
                self._update_user(user)
            except MoodleException as exc:
                warnings.append(
                    {
                        "item": "user",
                        "itemid": user["id"],
                        "warningcode": exc.errorcode,
                        "message": exc.message,
                    }
                )
        return {"warnings": warnings}

    def _update_user(self, user: dict) -> None:
        existing = self._state.users.get(user["id"])
        if existing is None or existing["deleted"]:
            raise _moodle("invaliduserid", "Invalid user ID", "Invalid user ID")
        if user["id"] == GUEST_USER_ID:
            raise _moodle("usernotupdatedguest", "Cannot update guest account", "Cannot update guest account")
        if "email" in user and user["email"] != existing["email"]:
            if not _valid_email(user["email"]):
                raise _moodle("useremailinvalid", "Invalid email address", "Invalid email address")
            if self._email_taken(user["email"], other_than=user["id"]):
                # core_user_update_users.json, "an absent user and a taken email"
                raise _moodle("useremailduplicate", "Duplicate address", "Duplicate address")
        changes = {
            k: v
            for k, v in user.items()
            if k not in ("id", "password", "customfields", "preferences", "userpicture")
        }
        if "password" in user:  # user_update_user() checks the policy before writing
            errmsg = self._password_errors(user["password"])
            if errmsg:
                raise _moodle(errmsg, "error/" + errmsg)
            changes["password"] = self._hash(user["password"])
        if "username" in user and any(
            u["username"] == user["username"] and uid != user["id"] for uid, u in self._state.users.items()
        ):  # user_update_user() does not check: the database's unique index refuses the write
            raise MoodleException(
                "dml_write_exception", "dmlwriteexception", "Error writing to database", "Duplicate entry"
            )
        if "suspended" in changes:
            changes["suspended"] = int(bool(changes["suspended"]))
        existing.update(changes)
        for field in user.get("customfields") or []:
            existing["customfields"][field["type"]] = field["value"]
        existing["timemodified"] = self._ts()

    def _ws_core_user_get_users_by_field(self, *, token: str, field: str, values: list[str]) -> list[dict]:
        ptype = {"id": "int", "idnumber": "raw", "username": "username", "email": "raw_trimmed"}.get(field)
        if ptype is None:
            raise _coding(
                "invalid field parameter",
                f"The search field '{field}' is not supported, look at the web service documentation",
            )
        cleaned: list[Any] = []
        for value in values:
            clean = _clean_param(value, ptype)
            same = _loose_equal(value, clean)
            if not same:
                raise _invalid(
                    f"The field '{field}' value is invalid: {value}(cleaned value: {_php_str(clean)})"
                )
            cleaned.append(clean)
        found = [u for _, u in sorted(self._state.users.items()) if u[field] in cleaned]
        out = []
        for user in found:
            details = self._user_details(user)
            if details.get(field):  # Moodle returns a user only when the searched field is returned
                out.append(details)
        return out

    def _ws_core_user_get_users(self, *, token: str, criteria: list[dict]) -> dict:
        """``core_user_external::get_users()`` (fixtures/moodle45/core_user_get_users.json): criteria
        ANDed; ``email``, ``firstname``, ``lastname`` by case-insensitive LIKE (``%``, ``_``);
        an unknown key is a warning and is ignored; a user is returned only if every criterion's
        field is in its details."""
        ptypes = {
            "id": "int",
            "idnumber": "raw",
            "username": "username",
            "email": "raw_trimmed",
            "auth": "auth",
        }
        ptypes |= {"firstname": "notags", "lastname": "notags"}
        conditions: list[tuple[str, Any]] = []
        warnings: list[dict] = []
        used: set[str] = set()
        for crit in criteria:
            key = crit["key"]
            if key in used:
                raise _moodle("keyalreadyset", "error/keyalreadyset", f"The key {key} can only be sent once")
            used.add(key)
            if key not in ptypes:
                warnings.append(
                    {
                        "item": key,
                        "warningcode": "invalidfieldparameter",
                        "message": f"The search key '{key}' is not supported, look at the web service documentation",
                    }
                )
                continue
            conditions.append((key, _clean_param(crit["value"], ptypes[key])))

        def matches(user: dict) -> bool:
            for key, wanted in conditions:
                if key in ("email", "firstname", "lastname"):
                    if not _sql_like(str(user[key]), str(wanted)):
                        return False
                elif user[key] != wanted:
                    return False
            return True

        found = []
        for _, user in sorted(self._state.users.items()):
            if user["deleted"] or not matches(user):
                continue
            details = self._user_details(user)
            if all(details.get(key) for key, _ in conditions):
                found.append(details)
        return {"users": found, "warnings": warnings}

    def _user_details(
        self, user: dict, course: dict | None = None, userfields: list[str] | None = None
    ) -> dict:
        """``user_get_user_details()`` as the site administrator sees it, keys in the answer's order."""
        wanted = set(userfields) if userfields else None

        def want(name: str) -> bool:
            return wanted is None or name in wanted

        out: dict[str, Any] = {"id": user["id"]}
        if want("username"):
            out["username"] = user["username"]
        if want("firstname"):
            out["firstname"] = user["firstname"]
        if want("lastname"):
            out["lastname"] = user["lastname"]
        out["fullname"] = self._fullname(user)
        if want("email"):
            out["email"] = user["email"]
        for name in ("address", "phone1", "phone2"):
            if want(name) and user[name]:
                out[name] = user[name]
        if want("department"):
            out["department"] = user["department"]
        if want("institution") and user["institution"]:
            out["institution"] = user["institution"]
        if want("idnumber") and user["idnumber"]:
            out["idnumber"] = user["idnumber"]
        if want("firstaccess"):
            out["firstaccess"] = user["firstaccess"]
        if want("lastaccess"):
            out["lastaccess"] = user["lastaccess"]
        if course is not None and want("lastcourseaccess"):  # core_enrol_get_enrolled_users.json
            out["lastcourseaccess"] = 0
        if course is None:
            if want("auth"):
                out["auth"] = user["auth"]
            if want("suspended"):
                out["suspended"] = bool(user["suspended"])
            if want("confirmed"):
                out["confirmed"] = bool(user["confirmed"])
            for name in ("lang", "theme", "timezone", "mailformat", "trackforums"):
                if want(name):  # trackforums: core_user_get_users_by_field.json, every user
                    out[name] = user[name]
        # isset($user->description): NULL for an account made without one, so no key at all
        # (core_user_get_users_by_field.json, users made by core_user_create_users).
        if want("description") and user["description"] is not None:
            out["description"] = user["description"]
            out["descriptionformat"] = user["descriptionformat"]
        if want("city") and user["city"]:
            out["city"] = user["city"]
        if want("country") and user["country"]:
            out["country"] = user["country"]
        if want("profileimageurlsmall"):
            out["profileimageurlsmall"] = f"{self.base_url}/theme/image.php/boost/core/1/u/f2"
        if want("profileimageurl"):
            out["profileimageurl"] = f"{self.base_url}/theme/image.php/boost/core/1/u/f1"
        custom = [
            {"type": "text", "value": v, "displayvalue": v, "name": k, "shortname": k}
            for k, v in user["customfields"].items()
            if v not in (None, "")
        ]
        if want("customfields") and custom:
            out["customfields"] = custom
        if course is not None:
            # "groups" only for a member of some group (groups_get_all_groups()); the simulated
            # site has no groups, so never (core_enrol_get_enrolled_users.json).
            if want("roles"):
                ue = self._state.enrolments.get((course["id"], user["id"]))
                # sortorder is the role assignment's (role_assignments.sortorder, 0), not the
                # role's (core_enrol_get_enrolled_users.json: student and editingteacher both 0).
                out["roles"] = [
                    {"roleid": r, "name": "", "shortname": _ROLES[r][0], "sortorder": 0}
                    for r in sorted(ue["roles"] if ue else [], key=lambda r: _ROLES[r][1])
                ]
            if want("enrolledcourses"):
                mine = [
                    self._state.courses[cid]
                    for (cid, uid), ue in sorted(self._state.enrolments.items())
                    if uid == user["id"] and ue["status"] == 0
                ]
                if mine:
                    out["enrolledcourses"] = [
                        {"id": c["id"], "fullname": c["fullname"], "shortname": c["shortname"]} for c in mine
                    ]
        return self._as_role_sees(out, user, course)

    def _as_role_sees(self, details: dict, user: dict, course: dict | None) -> dict:
        """``details`` as a role without :attr:`missing_capabilities` sees them: fields left out, no error.

        Recorded from Moodle 4.5: fixtures/moodle45/preflight_probe.json (``user_get_user_details()``;
        see :meth:`set_missing_capabilities`).
        """
        if not self.missing_capabilities:
            return details
        hidden: set[str] = set()
        if self._lacks("moodle/user:viewalldetails"):
            hidden |= {"username", "idnumber", "auth", "confirmed", "lang", "theme", "mailformat"}
            hidden |= {"trackforums", "department", "institution"}
        if self._lacks("moodle/site:viewfullnames"):
            hidden |= {"firstname", "lastname"}
        # In a course the e-mail follows moodle/course:useremail; elsewhere the identity fields
        # (showuseridentity = email), unless the user shows it to everyone (maildisplay 1).
        email_cap = "moodle/course:useremail" if course is not None else "moodle/site:viewuseridentity"
        if self._lacks(email_cap) and user.get("maildisplay") != 1:
            hidden.add("email")
        return {key: value for key, value in details.items() if key not in hidden}

    # --- web service functions: courses and categories ----------------------------------------------

    def _ws_core_course_create_courses(self, *, token: str, courses: list[dict]) -> list[dict]:
        created = []
        for course in courses:
            if course["categoryid"] not in self._state.categories:
                raise _moodle(
                    "errorcatcontextnotvalid",
                    f"You cannot execute functions in the category context (category id:{course['categoryid']}). "
                    f"The context error message was: {_MSG_INVALID_PARAM}",
                )
            for name in ("fullname", "shortname"):
                if course[name].strip() == "":
                    raise _moodle("errorinvalidparam", f'The param "{name}" is invalid.')
            if "lang" in course and course["lang"] not in _INSTALLED_LANGS:
                raise _moodle("errorinvalidparam", 'The param "lang" is invalid.')
            self._check_course_unique(course, except_id=None)
            self._check_course_dates(course.get("startdate", 0), course.get("enddate", 0))
            course_id = self._next("course")
            record = self._new_course_record(course_id, course)
            category = self._state.categories[course["categoryid"]]
            category["coursecount"] += 1
            record["sortorder"] = category["sortorder"] + category["coursecount"]
            self._state.courses[course_id] = record
            created.append({"id": course_id, "shortname": course["shortname"]})
        return created

    def _check_course_unique(self, course: dict, *, except_id: int | None) -> None:
        """``create_course()``/``update_course()``: shortname, then idnumber, must be unused (when not empty)."""
        others = [c for i, c in self._state.courses.items() if i != except_id]
        shortname, idnumber = course.get("shortname"), course.get("idnumber")
        if shortname and any(c["shortname"] == shortname for c in others):
            raise _moodle("shortnametaken", f"Short name is already used for another course ({shortname})")
        if idnumber and any(c["idnumber"] == idnumber for c in others):
            raise _moodle("courseidnumbertaken", f"ID number is already used for another course ({idnumber})")

    @staticmethod
    def _check_course_dates(startdate: int, enddate: int) -> None:
        if enddate and enddate < startdate:
            raise _moodle("enddatebeforestartdate", "The course end date must be after the start date.")

    def _ws_core_course_update_courses(self, *, token: str, courses: list[dict]) -> dict:
        warnings = []
        for course in courses:
            try:
                self._update_course(course)
            except MoodleException as exc:
                warnings.append(
                    {
                        "item": "course",
                        "itemid": course["id"],
                        "warningcode": exc.errorcode,
                        "message": exc.message,
                    }
                )
        return {"warnings": warnings}

    def _update_course(self, course: dict) -> None:
        existing = self._find_course(course["id"])
        for name in ("fullname", "shortname"):
            if name in course and course[name] != existing[name] and course[name].strip() == "":
                raise _moodle("errorinvalidparam", f'The param "{name}" is invalid.')
        if "lang" in course and course["lang"] != existing["lang"] and course["lang"] not in _INSTALLED_LANGS:
            raise _moodle("errorinvalidparam", 'The param "lang" is invalid.')
        self._check_course_unique(
            {k: course[k] for k in ("shortname", "idnumber") if k in course and course[k] != existing[k]},
            except_id=course["id"],
        )
        if "categoryid" in course and course["categoryid"] != existing["category"]:
            if course["categoryid"] not in self._state.categories:
                raise _missing_record("course_categories", "id = ?", [course["categoryid"]])
            self._state.categories[existing["category"]]["coursecount"] -= 1
            self._state.categories[course["categoryid"]]["coursecount"] += 1
            existing["category"] = course["categoryid"]
        self._check_course_dates(
            course.get("startdate", existing["startdate"]), course.get("enddate", existing["enddate"])
        )
        skip = {
            "id",
            "categoryid",
            "customfields",
            "courseformatoptions",
            "forcetheme",
            "numsections",
            "hiddensections",
        }
        existing.update({k: v for k, v in course.items() if k not in skip})
        for field in course.get("customfields") or []:
            existing["customfields"][field["shortname"]] = field["value"]
        existing["timemodified"] = self._ts()

    def _ws_core_course_get_courses_by_field(self, *, token: str, field: str, value: str) -> dict:
        warnings: list[dict] = []
        courses = self._state.courses
        if not field:
            found = [c for _, c in sorted(courses.items())]
        elif field in ("id", "category"):
            wanted = _php_int(value)
            key = "id" if field == "id" else "category"
            found = [c for _, c in sorted(courses.items()) if c[key] == wanted]
        elif field == "ids":
            found = []
            for part in _clean_param(value, "sequence").split(","):
                cid = _php_int(part)
                if cid not in courses:
                    # util::validate_courses(..., keepfails: true) sets a property on the missing
                    # course, which PHP 8 refuses: an Error without errorcode, not a warning
                    # (core_course_get_courses_by_field.json, "by ids, one of them absent").
                    # (A course the token cannot enter is warning "1", "No access rights in course
                    # context"; every token of the simulator enters every course.)
                    raise MoodleException(
                        "Error", None, 'Attempt to assign property "contextvalidated" on null'
                    )
                found.append(courses[cid])
            found = sorted({c["id"]: c for c in found}.values(), key=lambda c: c["id"])
        elif field in ("shortname", "idnumber"):
            wanted_text = _strip_tags(value) if field == "shortname" else value
            found = [c for _, c in sorted(courses.items()) if c[field] == wanted_text]
        else:
            raise _invalid("Invalid field name")
        return {"courses": [self._course_details(c) for c in found], "warnings": warnings}

    def _ws_core_course_get_contents(self, *, token: str, courseid: int, options: list[dict]) -> list[dict]:
        """``core_course_get_contents`` (fixtures/moodle45/core_course_get_contents.json): sections
        0..numsections (a course made over web services has section 0 only), the Announcements forum
        of a topics/weeks course with ``newsitems`` (made by the forum's course_created observer),
        then the graded activities the role can see, all in section 0. ``options`` are accepted and
        ignored."""
        course = self._find_course(courseid)
        if "section_ids" not in course:
            course["section_ids"] = [self._next("course_section") for _ in range(course["numsections"] + 1)]
        if course["newsitems"] and course["format"] in ("topics", "weeks") and "newsforum" not in course:
            course["newsforum"] = {"cmid": self._next("cm"), "instance": self._next("instance:forum")}
        modules = []
        if "newsforum" in course and self._can_view_module("forum"):
            forum = course["newsforum"]
            modules.append(self._module(forum["cmid"], "forum", forum["instance"], "Announcements"))
        for item in self._mod_items(courseid):
            if item["itemnumber"] == 0 and self._can_view_module(item["itemmodule"]):
                modules.append(
                    self._module(item["cmid"], item["itemmodule"], item["iteminstance"], item["itemname"])
                )
        return [
            {
                "id": section_id,
                "name": "General" if number == 0 else "New section",
                "visible": 1,
                "summary": "",
                "summaryformat": 1,
                "section": number,
                "hiddenbynumsections": 0,
                "uservisible": True,
                "component": None,
                "itemid": None,
                "modules": modules if number == 0 else [],
            }
            for number, section_id in enumerate(course["section_ids"])
        ]

    def _module(self, cmid: int, modname: str, instance: int, name: str) -> dict:
        """A course module as ``core_course_get_contents`` lists it (core_course_get_contents.json)."""
        purpose, plural = _MODULE_KINDS.get(modname, ("other", modname.capitalize() + "s"))
        module: dict[str, Any] = {
            "id": cmid,
            "url": f"{self.base_url}/mod/{modname}/view.php?id={cmid}",
            "name": name,
            "instance": instance,
            "contextid": 100 + cmid,
            "visible": 1,
            "uservisible": True,
            "visibleoncoursepage": 1,
            "modicon": f"{self.base_url}/theme/image.php/boost/{modname}/1/monologo?filtericon=1",
            "modname": modname,
            "purpose": purpose,
            "branded": False,
            "modplural": plural,
            "availability": None,
            "indent": 0,
            "onclick": "",
            "afterlink": None,
        }
        if modname == "forum":  # the forum is the one module with an activity badge (unread posts)
            module["activitybadge"] = []
        module.update(
            {
                "customdata": '{"trackingtype":"1"}' if modname == "forum" else '""',
                "noviewlink": False,
                "completion": 0,
                "downloadcontent": 1,
                "dates": [],
                "groupmode": 0,
            }
        )
        return module

    def _course_details(self, course: dict) -> dict:
        category = self._state.categories.get(course["category"])
        fmt = course["format"]
        # topics/weeks answer three options, "indentation" as a string; the site course (format
        # "site") none, and then no "courseformatoptions" key at all
        # (core_course_get_courses_by_field.json, "every course").
        options = [
            {"name": "hiddensections", "value": 1},
            {"name": "coursedisplay", "value": 0},
            {"name": "indentation", "value": "1"},
        ]
        # Course contacts ($CFG->coursecontact: editing teachers) with an active enrolment
        # (core_course_get_courses_by_field.json, "the course with grades, by id").
        contacts = [
            {"id": uid, "fullname": self._fullname(self._state.users[uid])}
            for (cid, uid), ue in sorted(self._state.enrolments.items(), key=lambda kv: kv[0][1])
            if cid == course["id"] and ROLE_EDITINGTEACHER in ue["roles"] and ue["status"] == 0
        ]
        details = {
            "id": course["id"],
            "fullname": course["fullname"],
            "displayname": course["fullname"],
            "shortname": course["shortname"],
            "courseimage": f"{self.base_url}/pluginfile.php/{course['id'] + 1}/course/generated/course.svg",
            "categoryid": course["category"],
            "categoryname": category["name"] if category else "",
            "sortorder": course["sortorder"],
            "summary": course["summary"],
            "summaryformat": course["summaryformat"],
            "summaryfiles": [],
            "overviewfiles": [],
            "showactivitydates": bool(course["showactivitydates"]),
            # NULL on the site course (core_course_get_courses_by_field.json, "every course")
            "showcompletionconditions": None
            if course["showcompletionconditions"] is None
            else bool(course["showcompletionconditions"]),
            "contacts": contacts,
            "enrollmentmethods": [] if fmt == "site" else ["manual"],
            "idnumber": course["idnumber"],
            "format": fmt,
            "showgrades": course["showgrades"],
            "newsitems": course["newsitems"],
            "startdate": course["startdate"],
            "enddate": course["enddate"],
            "maxbytes": course["maxbytes"],
            "showreports": course["showreports"],
            "visible": course["visible"],
            "groupmode": course["groupmode"],
            "groupmodeforce": course["groupmodeforce"],
            "defaultgroupingid": course["defaultgroupingid"],
            "enablecompletion": course["enablecompletion"],
            "completionnotify": course["completionnotify"],
            "lang": course["lang"],
            "theme": course["theme"],
            "marker": course["marker"],
            "legacyfiles": course["legacyfiles"],
            "calendartype": course["calendartype"],
            "timecreated": course["timecreated"],
            "timemodified": course["timemodified"],
            "requested": course["requested"],
            "cacherev": course["cacherev"],
            # The filters a 4.5 site has on by default (core_course_get_courses_by_field.json).
            "filters": [
                {"filter": name, "localstate": 0, "inheritedstate": 1}
                for name in (
                    "displayh5p",
                    "activitynames",
                    "mathjaxloader",
                    "emoticon",
                    "urltolink",
                    "mediaplugin",
                )
            ],
        }
        if course["customfields"]:  # only on a site with course custom fields: none by default
            details["customfields"] = [
                {"name": k, "shortname": k, "type": "text", "valueraw": v, "value": v}
                for k, v in course["customfields"].items()
            ]
        if fmt != "site":
            details["courseformatoptions"] = options
        return details

    def _ws_core_course_get_categories(
        self, *, token: str, criteria: list[dict], addsubcategories: bool
    ) -> list[dict]:
        categories = self._state.categories
        if criteria:
            conditions: dict[str, Any] = {}
            for crit in criteria:
                key = crit["key"].strip()
                if key in conditions:
                    continue
                if key in ("id", "parent", "visible"):
                    conditions[key] = {_php_int(crit["value"])}
                elif key == "ids":
                    conditions[key] = {
                        _php_int(p) for p in _clean_param(crit["value"], "sequence").split(",")
                    }
                elif key == "name":
                    conditions[key] = {_strip_tags(crit["value"])}
                elif key in ("idnumber", "theme"):
                    conditions[key] = {crit["value"]}
                else:
                    raise _moodle(
                        "criteriaerror",
                        "Missing permissions to search on a criteria.",
                        "You can not search on this criteria: " + key,
                    )
            column = {"ids": "id"}
            found = {
                cid: c
                for cid, c in categories.items()
                if all(c[column.get(k, k)] in wanted for k, wanted in conditions.items())
            }
            if found and addsubcategories:
                for parent in list(found.values()):
                    for cid, c in categories.items():
                        if c["path"].startswith(parent["path"] + "/"):
                            found[cid] = c
        else:
            found = dict(categories)
        return [dict(c) for c in sorted(found.values(), key=lambda c: (c["sortorder"], c["id"]))]

    def _ws_core_course_create_categories(self, *, token: str, categories: list[dict]) -> list[dict]:
        created = []
        for category in categories:
            parent = category["parent"]
            if parent and parent not in self._state.categories:
                # core_course_create_categories.json, "an unknown parent"
                raise _moodle("unknowcategory", "Category not known!")
            if category["name"] in ("", "0"):  # PHP's empty()
                raise _moodle("categorynamerequired", "The category name is required")
            if category.get("idnumber") and any(
                c["idnumber"] == category["idnumber"] for c in self._state.categories.values()
            ):
                raise _moodle("categoryidnumbertaken", "ID number is already used for another category")
            category_id = self._next("category")
            parent_row = self._state.categories.get(parent)
            self._state.categories[category_id] = {
                "id": category_id,
                "name": category["name"],
                "idnumber": category.get("idnumber") or "",
                "description": category.get("description") or "",
                "descriptionformat": category["descriptionformat"],
                "parent": parent,
                "sortorder": max(c["sortorder"] for c in self._state.categories.values()) + 10000,
                "coursecount": 0,
                "visible": 1,
                "visibleold": 1,
                "timemodified": self._ts(),
                "depth": parent_row["depth"] + 1 if parent_row else 1,
                "path": (parent_row["path"] if parent_row else "") + f"/{category_id}",
                "theme": category.get("theme") or "",
            }
            created.append({"id": category_id, "name": category["name"]})
        return created

    # --- web service functions: enrolments ---------------------------------------------------------

    def _ws_enrol_manual_enrol_users(self, *, token: str, enrolments: list[dict]) -> None:
        for enrolment in enrolments:
            course_id, user_id, role_id = enrolment["courseid"], enrolment["userid"], enrolment["roleid"]
            if course_id not in self._state.courses:
                raise _invalid("Context does not exist")
            if role_id not in _COURSE_ROLES:
                raise _moodle(
                    "wsusercannotassign",
                    f"You don't have the permission to assign this role ({role_id}) to this user ({user_id}) "
                    f"in this course ({course_id}).",
                )
            if course_id == SITE_COURSE_ID:  # the front page has no manual enrolment instance
                raise _moodle(
                    "wsnoinstance",
                    "Manual enrolment plugin instance doesn't exist or is disabled for the course "
                    "(id = {$a->courseid})",
                )
            status = 1 if enrolment.get("suspend") else 0
            timestart, timeend = enrolment.get("timestart", 0), enrolment.get("timeend", 0)
            now = self._ts()
            key = (course_id, user_id)
            ue = self._state.enrolments.get(key)
            if ue is None:
                ue = {
                    "id": self._next("user_enrolment"),
                    "status": status,
                    "timestart": timestart,
                    "timeend": timeend,
                    "timecreated": now,
                    "timemodified": now,
                    "roles": [],
                }
                self._state.enrolments[key] = ue
            elif (ue["timestart"], ue["timeend"], ue["status"]) != (timestart, timeend, status):
                ue.update({"timestart": timestart, "timeend": timeend, "status": status, "timemodified": now})
            user = self._state.users.get(user_id)
            if user is None or user["deleted"]:
                # The enrolment is written, then the welcome message (on by default for manual
                # enrolments) passes the missing user to core_user::get_name_placeholders(): a PHP
                # TypeError, no errorcode (enrol_manual_enrol_users.json, "an unknown user").
                raise MoodleException(
                    "TypeError",
                    None,
                    "core\\user::get_name_placeholders(): Argument #1 ($user) must be of type stdClass, bool given, "
                    f"called in {_DIRROOT}/lib/enrollib.php on line 3677",
                )
            if role_id not in ue["roles"]:
                ue["roles"].append(role_id)
        return None

    def _ws_enrol_manual_unenrol_users(self, *, token: str, enrolments: list[dict]) -> None:
        for enrolment in enrolments:
            course_id, user_id = enrolment["courseid"], enrolment["userid"]
            if course_id not in self._state.courses:
                raise _missing_record("course", "id = ?", [course_id])
            if course_id == SITE_COURSE_ID:
                raise _moodle(
                    "wsnoinstance",
                    "Manual enrolment plugin instance doesn't exist or is disabled for the course "
                    "(id = {$a->courseid})",
                )
            if user_id not in self._state.users:
                raise _invalid(f"User id not exist: {user_id}")
            self._state.enrolments.pop((course_id, user_id), None)
        return None

    def _active(self, ue: dict) -> bool:
        now = self._ts()
        return ue["status"] == 0 and ue["timestart"] < now and (ue["timeend"] == 0 or ue["timeend"] > now)

    def _ws_core_enrol_get_enrolled_users(
        self, *, token: str, courseid: int, options: list[dict]
    ) -> list[dict]:
        onlyactive = onlysuspended = False
        userfields: list[str] = []
        limitfrom = limitnumber = 0
        withcapability = ""
        for option in options:
            name, value = option["name"], option["value"]
            if name == "onlyactive":
                onlyactive = value not in ("", "0")
            elif name == "onlysuspended":
                onlysuspended = value not in ("", "0")
            elif name == "userfields":
                userfields = [_clean_param(f, "alphanumext") for f in value.split(",")]
            elif name == "limitfrom":
                limitfrom = _php_int(value)
            elif name == "limitnumber":
                limitnumber = _php_int(value)
            elif name == "withcapability":
                withcapability = value
        course = self._find_course(courseid)
        known = {
            "id", "username", "fullname", "firstname", "lastname", "email", "address", "phone1", "phone2",
            "department", "institution", "interests", "firstaccess", "lastaccess", "lastcourseaccess", "auth",
            "confirmed", "idnumber", "lang", "theme", "timezone", "mailformat", "description", "descriptionformat",
            "city", "country", "profileimageurlsmall", "profileimageurl", "customfields", "groups", "roles",
            "preferences", "enrolledcourses", "suspended",
        }  # fmt: skip
        for name in userfields:
            if name not in known:
                raise _moodle("invaliduserfield", f"Invalid user field: {name}")
        if courseid == SITE_COURSE_ID:  # everyone is "enrolled" on the front page
            ids = [
                uid
                for uid, u in sorted(self._state.users.items())
                if uid != GUEST_USER_ID and not u["deleted"]
            ]
        else:
            ids = []
            for (cid, uid), ue in sorted(self._state.enrolments.items(), key=lambda kv: kv[0][1]):
                if cid != courseid or self._state.users[uid]["deleted"]:
                    continue
                if onlyactive and not self._active(ue):
                    continue
                if onlysuspended and self._active(ue):
                    continue
                if withcapability == "moodle/grade:view" and not set(ue["roles"]) & _GRADEBOOK_ROLES:
                    continue
                ids.append(uid)
        ids = ids[limitfrom:]
        if limitnumber > 0:
            ids = ids[:limitnumber]
        return [self._user_details(self._state.users[uid], course, userfields or None) for uid in ids]

    # --- web service functions: grades -------------------------------------------------------------

    def _ws_gradereport_user_get_grade_items(
        self, *, token: str, courseid: int, userid: int, groupid: int
    ) -> dict:
        course = self._find_course(courseid)
        if userid:
            user = self._state.users.get(userid)
            if user is None:
                raise _missing_record("user", "id = ?", [userid])
            users = [user]
        else:
            users = [
                self._state.users[uid]
                for (cid, uid), ue in self._state.enrolments.items()
                if cid == courseid and self._active(ue) and set(ue["roles"]) & _GRADEBOOK_ROLES
            ]
            users.sort(key=lambda u: (u["lastname"], u["firstname"], u["id"]))
        self._course_item(courseid)
        self._recompute_course_max(courseid)
        usergrades = [
            {
                "courseid": course["id"],
                "courseidnumber": course["idnumber"],
                "userid": user["id"],
                "userfullname": self._fullname(user),
                "useridnumber": user["idnumber"],
                "maxdepth": 2,
                "gradeitems": self._grade_items_of(courseid, user["id"]),
            }
            for user in users
        ]
        return {"usergrades": usergrades, "warnings": []}

    def _grade_items_of(self, course_id: int, user_id: int) -> list[dict]:
        mods = self._mod_items(course_id)
        total_item = self._course_item(course_id)
        rows = {i["id"]: self._state.grades.get((i["id"], user_id)) for i in mods}
        graded = [
            (i, rows[i["id"]]["finalgrade"])
            for i in mods
            if rows[i["id"]] and rows[i["id"]]["finalgrade"] is not None
        ]
        graded_max = sum(i["grademax"] for i, _ in graded)
        out = []
        for item in mods:
            if not self._can_view_module(item["itemmodule"]):
                # Left out, no error; the total keeps its grade and grademax (recorded from Moodle
                # 4.5: fixtures/moodle45/preflight_probe.json, "without mod/assign:view").
                continue
            row = rows[item["id"]]
            grade = row["finalgrade"] if row else None
            weight = item["grademax"] / graded_max if grade is not None and graded_max else 0.0
            out.append(
                self._grade_item_data(
                    item,
                    grade,
                    item["grademax"],
                    row,
                    weight=weight,
                    status=None if grade is not None else "novalue",
                )
            )
        total = float(sum(g for _, g in graded)) if graded else None
        total_max = float(graded_max) if graded else total_item["grademax"]
        # The total was graded when its last graded item was (gradereport_user_get_grade_items.json:
        # the course item's gradedategraded is the assignment's).
        graded_at = max((rows[i["id"]]["timemodified"] for i, _ in graded), default=None)
        total_row = {"timemodified": graded_at, "finalgrade": total} if graded else None
        out.append(self._grade_item_data(total_item, total, total_max, total_row, weight=None, status=None))
        return out

    def _grade_item_data(
        self,
        item: dict,
        grade: float | None,
        grademax: float,
        row: dict | None,
        *,
        weight: float | None,
        status: str | None,
    ) -> dict:
        data: dict[str, Any] = {
            "id": item["id"],
            "itemname": item["itemname"],
            "itemtype": item["itemtype"],
            "itemmodule": item["itemmodule"],
            "iteminstance": item["iteminstance"],
            "itemnumber": item["itemnumber"],
            "idnumber": item["idnumber"],
            "categoryid": self._course_item(item["courseid"])["gradecategoryid"]
            if item["itemtype"] == "mod"
            else None,
            "outcomeid": None,
            "scaleid": None,
            "locked": False,
        }
        if item["cmid"] is not None:
            data["cmid"] = item["cmid"]
        if weight is not None:
            data["weightraw"] = weight
            data["weightformatted"] = _format_float(weight * 100) + " %"
        if status is not None:
            data["status"] = status
        grademin = item["grademin"]
        data.update(
            {
                "graderaw": grade,
                # The learner's submission time: the simulated site has no submissions, and a grade
                # given without one has none (gradereport_user_get_grade_items.json: null); an
                # assignment's reopened attempt sets it (grading/gradereport_user_get_grade_items.json).
                "gradedatesubmitted": (row or {}).get("datesubmitted"),
                "gradedategraded": (
                    # An assignment's grade keeps its date graded when it has no value (a rubric
                    # assignment graded plainly: grading/gradereport_user_get_grade_items.json).
                    (row["timemodified"] if row["finalgrade"] is not None else row.get("dategraded"))
                    if row
                    else None
                ),
                "gradehiddenbydate": False,
                "gradeneedsupdate": False,
                "gradeishidden": False,
                "gradeislocked": False,
                "gradeisoverridden": False,
                "gradeformatted": "-" if grade is None else _format_float(grade),
                "grademin": grademin,
                "grademax": grademax,
                "rangeformatted": f"{_format_float(grademin, 0)}&ndash;{_format_float(grademax, 0)}",
                "percentageformatted": (
                    "-"
                    if grade is None
                    else ""
                    if grademax == grademin
                    else _format_float((grade - grademin) / (grademax - grademin) * 100) + " %"
                ),
                "feedback": (row or {}).get("feedback") or "",
                "feedbackformat": (row or {}).get("feedbackformat", 0),
            }
        )
        return data

    def _ws_core_grades_get_gradeitems(self, *, token: str, courseid: int) -> dict:
        """Every grade item of the course but the course (and category) totals, whatever the role's
        ``mod/<module>:view``: ids as strings, ``category`` the course category's name, which for the
        top category is the course's full name (recorded from Moodle 4.5:
        fixtures/moodle45/preflight_probe.json, probe "core_grades_get_gradeitems")."""
        course = self._find_course(courseid)
        if not any(i["courseid"] == courseid for i in self._state.grade_items.values()):
            # grade_item::fetch_all() answers false for a course without any grade item, not even
            # the course total (the grade report creates that one): recorded as "empty_course".
            raise MoodleException(
                "TypeError", None, "array_filter(): Argument #1 ($array) must be of type array, bool given"
            )
        return {
            "gradeItems": [
                {"id": str(item["id"]), "itemname": item["itemname"], "category": course["fullname"]}
                for item in self._mod_items(courseid)
            ],
            "warnings": [],
        }

    def _ws_core_grades_update_grades(
        self,
        *,
        token: str,
        source: str,
        courseid: int,
        component: str,
        activityid: int,
        itemnumber: int,
        grades: list[dict] | None = None,
        itemdetails: dict | None = None,
    ) -> int:
        self._find_course(courseid)
        module = component[4:] if component.startswith("mod_") else None
        item = next(
            (
                i
                for i in self._state.grade_items.values()
                if i["cmid"] == activityid and i["itemmodule"] == module and i["itemnumber"] == itemnumber
            ),
            None,
        )
        if item is None or item["courseid"] != courseid:
            raise _moodle("invalidcoursemodule", "Invalid course module ID")
        for grade in grades or []:
            if grade["studentid"] not in self._state.users:
                continue
            self._store_grade(
                item, grade["studentid"], grade.get("grade"), feedback=grade.get("str_feedback")
            )
        return 0

    # --- assignments and advanced grading (recorded from Moodle 4.5: fixtures/moodle45/grading/) ---
    #
    # What the recording showed, and the simulator reproduces (each traced to Moodle's code:
    # lib/classes/grading_external.php, grade/grading/form/{lib,rubric/lib}.php, mod/assign/{locallib,
    # externallib}.php, mod/assign/feedback/comments/locallib.php):
    # * core_grading_save_definitions answers null; the definition needs timecreated, usercreated,
    #   timemodified, usermodified (invalidparameter without), stores usercreated as sent and sets the
    #   others itself; the rubric's display options are reset to the defaults on every save.
    # * Criteria and levels sent with their ids are updated in place; sent without ids they are new
    #   (NEWID<n>) and the criteria not sent are deleted with their levels: the fillings of graded
    #   learners then point at criteria and levels that no longer exist, and the instances call still
    #   answers them. Criteria without ids and with different numbers of levels can share a NEWID: one
    #   is lost, silently.
    # * Every mod_assign_save_grade makes a new grading instance (a copy of the current one, fillings
    #   included) and archives the previous one; itemid is the assign_grades id of the attempt.
    # * The grade is the share of rubric points (4 of 5 -> 80 of 100); an incomplete filling is
    #   accepted (2 of 5 -> 40); a filling that names none of the definition's criteria (no
    #   advancedgradingdata: a plain grade; stale criterion ids) is an empty form: grade -1, which the
    #   gradebook shows as no grade, but the feedback and the date graded are kept.
    # * Without plugindata's assignfeedbackcomments_editor, a learner who has a feedback comment makes
    #   the comments plugin write NULL: dml_write_exception, after the rubric filling was saved.
    # * addattempt=1 on an assignment reopened manually makes a new latest attempt with no grade:
    #   mod_assign_get_grades then leaves the learner out until that attempt is graded; the
    #   gradebook keeps the earlier attempt's grade.

    def add_assignment(
        self,
        course_id: int,
        name: str,
        *,
        grade: int = 100,
        intro: str = "",
        introformat: int = 1,
        onlinetext: bool = True,
        feedback_comments: bool = True,
        **settings: Any,
    ) -> dict[str, int]:
        """Add an assignment to a course, as a teacher makes one (no web service of the pipeline can).

        It is a graded activity: a course module, a grade item (``itemmodule`` ``assign``, ``grademax``
        ``grade``) in the gradebook, an entry of ``core_course_get_contents`` and of
        ``mod_assign_get_assignments``, and a grading area ``submissions`` for
        ``core_grading_save_definitions``.

        Args:
            course_id: the course.
            name: the assignment's name (and its grade item's).
            grade: the maximum grade (points).
            intro: the description.
            introformat: its format.
            onlinetext: online-text submissions enabled.
            feedback_comments: feedback comments enabled (``plugindata.assignfeedbackcomments_editor``).
            **settings: any other setting of ``mod_assign_get_assignments`` (``attemptreopenmethod``:
                ``manual`` (default), ``automatic``, ``untilpass``, ``none``; ``maxattempts``: -1 =
                unlimited (default)...). Defaults are those of the recording's assignments.

        Returns:
            ``{"cmid", "assignmentid", "contextid", "gradeitemid"}``.

        Raises:
            KeyError: no such course.
            ValueError: an unknown setting.
        """
        unknown = sorted(set(settings) - set(_ASSIGN_SETTINGS))
        if unknown:
            raise ValueError(f"unknown assignment settings: {unknown}")
        with self._lock:
            item_id = self.add_grade_item(course_id, name, grademax=float(grade), itemmodule="assign")
            item = self._state.grade_items[item_id]
            # add_grade_item registered it with the defaults; these are the teacher's settings.
            record = {
                "id": item["iteminstance"],
                "cmid": item["cmid"],
                "course": int(course_id),
                "name": name,
                "grade": int(grade),
                "timemodified": self._ts(),
                "intro": intro,
                "introformat": introformat,
                "onlinetext": bool(onlinetext),
                "feedback_comments": bool(feedback_comments),
                "gradeitemid": item_id,
                **_ASSIGN_SETTINGS,
                **settings,
            }
            self._state.grading["assignments"][record["id"]] = record
            return {
                "cmid": record["cmid"],
                "assignmentid": record["id"],
                "contextid": self._module_contextid(record["cmid"]),
                "gradeitemid": item_id,
            }

    def mark_for_regrade(self, definition_id: int) -> int:
        """Mark a definition's active fillings "needs update", as a teacher's save in the rubric
        editor that forces a regrade does (no web service can): ``core_grading_get_gradingform_instances``
        then leaves them out until each learner is regraded (measured on Moodle 4.5:
        /work/shared/moodle45/README.md, "Advanced grading").

        Returns:
            How many instances were marked.

        Raises:
            KeyError: no such definition.
        """
        with self._lock:
            if definition_id not in self._state.grading["definitions"]:
                raise KeyError(f"no grading definition {definition_id}")
            marked = 0
            for instance in self._state.grading["instances"].values():
                if instance["definitionid"] == definition_id and instance["status"] == _INSTANCE_ACTIVE:
                    instance["status"] = _INSTANCE_NEEDUPDATE
                    marked += 1
            return marked

    @staticmethod
    def _module_contextid(cmid: int) -> int:
        """The module's context id (as ``core_course_get_contents`` reports it)."""
        return 100 + cmid

    def _course_module(self, cmid: int) -> dict | None:
        """``{"cmid", "modname", "instance", "course", "contextid"}`` of a graded activity, or None."""
        for item in self._state.grade_items.values():
            if item["itemtype"] == "mod" and item["cmid"] == cmid and item["itemnumber"] == 0:
                return {
                    "cmid": cmid,
                    "modname": item["itemmodule"],
                    "instance": item["iteminstance"],
                    "course": item["courseid"],
                    "contextid": self._module_contextid(cmid),
                }
        return None

    def _module_by_context(self, contextid: int) -> dict:
        cm = self._course_module(contextid - 100)
        if cm is None:
            raise _missing_record("context", "id = ?", [contextid])
        return cm

    def _require_capability(self, capability: str, name: str) -> None:
        """``require_capability()``: ``nopermissions`` naming the capability's description."""
        if self._lacks(capability):
            raise MoodleException(
                "core\\exception\\required_capability_exception",
                "nopermissions",
                f"Sorry, but you do not currently have permissions to do that ({name}).",
                capability,
            )

    def _module_accessible(self, modname: str) -> bool:
        """``validate_context()`` of a module: entering the course and seeing the activity."""
        return not self._lacks("moodle/course:view") and self._can_view_module(modname)

    def _require_module_access(self, modname: str) -> None:
        if not self._module_accessible(modname):
            raise MoodleException(
                "core\\exception\\require_login_exception",
                "requireloginerror",
                "Course or activity not accessible.",
            )

    def _assignment(self, assignmentid: int) -> dict:
        found = self._state.grading["assignments"].get(assignmentid)
        if found is None:
            raise _missing_record("assign", "id = ?", [assignmentid])
        return found

    # grading areas, definitions, instances

    def _area(self, contextid: int, component: str, areaname: str) -> dict | None:
        for area in self._state.grading["areas"].values():
            if (area["contextid"], area["component"], area["areaname"]) == (contextid, component, areaname):
                return area
        return None

    def _area_definition(self, area: dict | None, method: str = "rubric") -> dict | None:
        if area is None:
            return None
        for definition in self._state.grading["definitions"].values():
            if definition["areaid"] == area["id"] and definition["method"] == method:
                return definition
        return None

    def _rubric_criteria(self, definition_id: int) -> list[dict]:
        """Criteria by (sortorder, id), each with ``levels`` by (score, id): ``load_definition()``'s
        ``ORDER BY rc.sortorder, rl.score`` (levels ascending, the default ``sortlevelsasc``)."""
        grading = self._state.grading
        criteria = sorted(
            (c for c in grading["criteria"].values() if c["definitionid"] == definition_id),
            key=lambda c: (c["sortorder"], c["id"]),
        )
        out = []
        for criterion in criteria:
            levels = sorted(
                (lv for lv in grading["levels"].values() if lv["criterionid"] == criterion["id"]),
                key=lambda lv: (lv["score"], lv["id"]),
            )
            out.append({**criterion, "levels": levels})
        return out

    def _definition_data(self, definition: dict) -> dict:
        description, descriptionformat = _ws_text(definition["description"], definition["descriptionformat"])
        criteria = []
        for criterion in self._rubric_criteria(definition["id"]):
            text, textformat = _ws_text(criterion["description"], criterion["descriptionformat"])
            levels = []
            for level in criterion["levels"]:
                ltext, lformat = _ws_text(level["definition"], level["definitionformat"])
                levels.append(
                    {
                        "id": level["id"],
                        "score": level["score"],
                        "definition": ltext,
                        "definitionformat": lformat,
                    }
                )
            criteria.append(
                {
                    "id": criterion["id"],
                    "sortorder": criterion["sortorder"],
                    "description": text,
                    "descriptionformat": textformat,
                    "levels": levels,
                }
            )
        return {
            "id": definition["id"],
            "method": definition["method"],
            "name": definition["name"],
            "description": description,
            "descriptionformat": descriptionformat,
            "status": definition["status"],
            "copiedfromid": definition["copiedfromid"],
            "timecreated": definition["timecreated"],
            "usercreated": definition["usercreated"],
            "timemodified": definition["timemodified"],
            "usermodified": definition["usermodified"],
            "timecopied": definition["timecopied"],
            "rubric": {"rubric_criteria": criteria},
        }

    def _ws_core_grading_get_definitions(
        self, *, token: str, cmids: list[int], areaname: str, activeonly: bool
    ) -> dict:
        """``core_grading_get_definitions``: one area per course module (even before any definition:
        ``activemethod`` null, ``definitions`` []). Without entry to the course or the activity: no
        error, the module left out with a warning. ``activeonly`` with no active method yet:
        ``invalid_method_name`` (grading/core_grading_get_definitions.json)."""
        areas, warnings = [], []
        for cmid in cmids:
            cm = self._course_module(cmid)
            if cm is None:
                raise MoodleException(
                    "dml_missing_record_exception", "invalidcoursemodule", "Invalid course module ID"
                )
            if not self._module_accessible(cm["modname"]):
                warnings.append(
                    {
                        "item": "module",
                        "itemid": cmid,
                        "warningcode": "1",
                        "message": "No access rights in module context",
                    }
                )
                continue
            manager = not self._lacks("moodle/grade:managegradingforms")
            component = "mod_" + cm["modname"]
            area = self._area(cm["contextid"], component, areaname)
            active = area["activemethod"] if area else None
            if activeonly:
                if active not in _GRADING_METHODS:
                    raise _moodle("invalid_method_name", "core_grading/invalid_method_name")
                methods: tuple[str, ...] = (active,)
            else:
                methods = _GRADING_METHODS
            definitions = []
            for method in methods:
                definition = self._area_definition(area, method)
                if definition is None:
                    continue
                if not manager and definition["status"] != GRADING_STATUS_READY:
                    warnings.append(
                        {
                            "item": "module",
                            "itemid": cmid,
                            "warningcode": "1",
                            "message": "Capability moodle/grade:managegradingforms required to view draft definitions",
                        }
                    )
                    continue
                definitions.append(self._definition_data(definition))
            areas.append(
                {
                    "cmid": cmid,
                    "contextid": cm["contextid"],
                    "component": component,
                    "areaname": areaname,
                    "activemethod": active,
                    "definitions": definitions,
                }
            )
        return {"areas": areas, "warnings": warnings}

    def _ws_core_grading_save_definitions(self, *, token: str, areas: list[dict]) -> None:
        """``core_grading_save_definitions`` (rubrics; a marking guide is not simulated). Not a
        transaction: an area saved before a failing one stays saved, as in Moodle."""
        grading = self._state.grading
        for given in areas:
            self._module_by_context(given["contextid"])
            self._require_capability("moodle/grade:managegradingforms", "Manage advanced grading methods")
            method = given.get("activemethod") or None
            if method is not None and method not in _GRADING_METHODS:
                raise _moodle("invalid_method_name", "core_grading/invalid_method_name")
            area = self._area(given["contextid"], given["component"], given["areaname"])
            if area is None:
                area = {
                    "id": self._next("grading_area"),
                    "contextid": given["contextid"],
                    "component": given["component"],
                    "areaname": given["areaname"],
                    "activemethod": method,
                }
                grading["areas"][area["id"]] = area
            area["activemethod"] = method
            for definition in given["definitions"]:
                if definition["method"] not in _GRADING_METHODS:
                    raise _invalid(f"Unknown Grading method: {definition['method']}")
                if definition["method"] != "rubric":
                    raise _coding("the simulator implements rubric definitions only")
                self._save_rubric(area, definition)

    def _save_rubric(self, area: dict, sent: dict) -> None:
        """``gradingform_rubric_controller::update_definition()`` of what the web service sent."""
        grading = self._state.grading
        now = self._ts()
        definition = self._area_definition(area)
        if definition is None:  # parent::update_definition(new stdClass()): a blank draft first
            definition = {
                "id": self._next("grading_definition"),
                "areaid": area["id"],
                "method": "rubric",
                "name": "",
                "description": None,
                "descriptionformat": 0,
                "status": GRADING_STATUS_DRAFT,
                "copiedfromid": None,
                "timecreated": now,
                "usercreated": ADMIN_USER_ID,
                "timemodified": now,
                "usermodified": ADMIN_USER_ID,
                "timecopied": 0,
                "options": None,
            }
            grading["definitions"][definition["id"]] = definition
        current = {c["id"]: c for c in self._rubric_criteria(definition["id"])}
        changed = False
        new_criteria = _rubric_new_ids((sent.get("rubric") or {}).get("rubric_criteria") or [])
        for key, criterion in new_criteria.items():
            levels_sent = criterion.get("levels") or {}
            fields = {
                k: criterion[k] for k in ("sortorder", "description", "descriptionformat") if k in criterion
            }
            if _is_newid(key):
                criterion_id = self._next("rubric_criterion")
                grading["criteria"][criterion_id] = {
                    "id": criterion_id,
                    "definitionid": definition["id"],
                    "sortorder": fields.get("sortorder", 0),
                    "description": fields.get("description"),
                    "descriptionformat": fields.get("descriptionformat", 0),
                }
                changed = True
                known_levels: dict[int, dict] = {}
            else:
                # An id of this definition is updated; any other id (a stale one) updates whatever row
                # has it (none, once deleted) and is never created: the criterion is lost.
                criterion_id = key
                row = grading["criteria"].get(criterion_id)
                was = current.get(criterion_id, {})
                update = {k: v for k, v in fields.items() if v != was.get(k)}
                if update:
                    if row is not None:
                        row.update(update)
                    changed = True
                known_levels = {lv["id"]: lv for lv in was.get("levels", [])}
                for level_id in known_levels:
                    if level_id not in levels_sent:
                        grading["levels"].pop(level_id, None)
                        changed = True
            for level_key, level in levels_sent.items():
                lfields = {k: level[k] for k in ("score", "definition", "definitionformat") if k in level}
                if _is_newid(level_key):
                    level_id = self._next("rubric_level")
                    grading["levels"][level_id] = {
                        "id": level_id,
                        "criterionid": criterion_id,
                        "score": float(lfields.get("score", 0.0)),
                        "definition": lfields.get("definition"),
                        "definitionformat": lfields.get("definitionformat", 0),
                    }
                    changed = True
                else:
                    was_level = known_levels.get(level_key, {})
                    update = {k: v for k, v in lfields.items() if v != was_level.get(k)}
                    if update:
                        if level_key in grading["levels"]:
                            grading["levels"][level_key].update(update)
                        changed = True
        for criterion_id in current:
            if criterion_id not in new_criteria:
                grading["criteria"].pop(criterion_id, None)
                for level_id in [
                    i for i, lv in grading["levels"].items() if lv["criterionid"] == criterion_id
                ]:
                    grading["levels"].pop(level_id)
                changed = True
        # create_definition_object(): the description (and its format) only through description_editor.
        description = sent.get("description", "")
        descriptionformat = sent.get("descriptionformat", 0) if "description" in sent else 0
        scalars = {
            "name": sent["name"],
            "status": sent["status"],
            "description": description,
            "descriptionformat": descriptionformat,
            "options": json.dumps(_RUBRIC_DEFAULT_OPTIONS),
        }
        if any(scalars[k] != definition[k] for k in scalars):
            changed = True
        if changed:
            if sent.get("id") and sent["id"] != definition["id"]:
                raise _coding("Attempting to update other definition record.")
            definition.update(scalars)
            definition["usercreated"] = sent["usercreated"]  # stored as sent
            for key in ("copiedfromid", "timecopied"):
                if key in sent:
                    definition[key] = sent[key]
            definition["timemodified"] = now
            definition["usermodified"] = ADMIN_USER_ID

    def _ws_core_grading_get_gradingform_instances(
        self, *, token: str, definitionid: int, since: int
    ) -> dict:
        """``core_grading_get_gradingform_instances``: the active instances (one per graded attempt,
        earlier attempts included) with ``timemodified >= since``, in id order; ``itemid`` is the
        assign_grades id, ``rawgrade`` null. The fillings are answered as stored, also those of
        criteria deleted since (grading/core_grading_get_gradingform_instances.json)."""
        # "since" as Moodle 4.5 applies it: gradingform_controller::get_all_active_instances($since)
        # (grade/grading/form/lib.php) selects "timemodified >= since" among the ACTIVE instances.
        grading = self._state.grading
        definition = grading["definitions"].get(definitionid)
        if definition is None:
            raise _missing_record("grading_definitions", "id = ?", [definitionid])
        self._require_capability("moodle/grade:managegradingforms", "Manage advanced grading methods")
        instances = []
        for instance in sorted(grading["instances"].values(), key=lambda i: i["id"]):
            if (
                instance["definitionid"] != definitionid
                or instance["status"] != _INSTANCE_ACTIVE
                or instance["timemodified"] < since
            ):
                continue
            feedback, feedbackformat = _ws_text(instance["feedback"], instance["feedbackformat"])
            criteria = []
            for filling in self._fillings(instance["id"]):
                remark, remarkformat = _ws_text(filling["remark"], filling["remarkformat"])
                criteria.append(
                    {
                        "id": filling["id"],
                        "criterionid": filling["criterionid"],
                        "levelid": filling["levelid"],
                        "remark": remark,
                        "remarkformat": remarkformat,
                    }
                )
            instances.append(
                {
                    "id": instance["id"],
                    "raterid": instance["raterid"],
                    "itemid": instance["itemid"],
                    "rawgrade": None,
                    "status": instance["status"],
                    "feedback": feedback,
                    "feedbackformat": feedbackformat,
                    "timemodified": instance["timemodified"],
                    definition["method"]: {"criteria": criteria},
                }
            )
        return {"instances": instances, "warnings": []}

    def _fillings(self, instance_id: int) -> list[dict]:
        rows = (f for f in self._state.grading["fillings"].values() if f["instanceid"] == instance_id)
        return sorted(rows, key=lambda f: f["id"])

    def _current_instance(self, definition_id: int, item_id: int) -> dict | None:
        for instance in self._state.grading["instances"].values():
            if (
                instance["definitionid"] == definition_id
                and instance["itemid"] == item_id
                and instance["status"] in (_INSTANCE_ACTIVE, _INSTANCE_NEEDUPDATE)
            ):
                return instance
        return None

    def _new_instance(self, definition: dict, item_id: int) -> dict:
        """``create_instance()``: a copy of the current instance (with its fillings), else a new one."""
        grading = self._state.grading
        current = self._current_instance(definition["id"], item_id)
        instance = {
            "id": self._next("grading_instance"),
            "definitionid": definition["id"],
            "raterid": ADMIN_USER_ID,
            "itemid": item_id,
            "rawgrade": None,
            "status": _INSTANCE_INCOMPLETE,
            "feedback": current["feedback"] if current else None,
            "feedbackformat": current["feedbackformat"] if current else 0,
            "timemodified": self._ts(),
        }
        grading["instances"][instance["id"]] = instance
        for filling in self._fillings(current["id"]) if current else []:
            copied = {**filling, "id": self._next("rubric_filling"), "instanceid": instance["id"]}
            grading["fillings"][copied["id"]] = copied
        return instance

    def _make_active(self, instance: dict) -> None:
        current = self._current_instance(instance["definitionid"], instance["itemid"])
        if current is not None and current["id"] != instance["id"]:
            current["status"] = _INSTANCE_ARCHIVE
        instance["status"] = _INSTANCE_ACTIVE

    def _submit_rubric(
        self, definition: dict, instance: dict, filled: dict[int, dict], maxgrade: int
    ) -> float:
        """``submit_and_get_grade()``: store the filling, make the instance active, the grade (-1 for
        an empty form: no criterion of the definition with a level or a remark)."""
        grading = self._state.grading
        criteria = {c["id"]: c for c in self._rubric_criteria(definition["id"])}
        if not any(
            cid in filled
            and (filled[cid].get("levelid") is not None or filled[cid].get("remark") not in (None, "", "0"))
            for cid in criteria
        ):
            for filling in self._fillings(instance["id"]):  # clear_attempt()
                if filling["criterionid"] in filled:
                    grading["fillings"].pop(filling["id"])
            self._make_active(instance)
            return -1.0
        instance["timemodified"] = self._ts()
        current = {f["criterionid"]: f for f in self._fillings(instance["id"])}
        for cid, sent in filled.items():
            if cid not in current:
                filling = {
                    "id": self._next("rubric_filling"),
                    "instanceid": instance["id"],
                    "criterionid": cid,
                    "levelid": sent.get("levelid"),
                    "remark": sent.get("remark"),
                    "remarkformat": 0,  # FORMAT_MOODLE whatever was sent (MDL-31235)
                }
                grading["fillings"][filling["id"]] = filling
            else:
                for key in ("levelid", "remark"):
                    if sent.get(key) is not None:
                        current[cid][key] = sent[key]
        for cid, filling in current.items():
            if cid not in filled:
                grading["fillings"].pop(filling["id"])
        self._make_active(instance)
        # gradingform_rubric_instance::get_grade(), lockzeropoints on (the default options).
        minscore = sum(min((lv["score"] for lv in c["levels"]), default=0.0) for c in criteria.values())
        maxscore = sum(max((lv["score"] for lv in c["levels"]), default=0.0) for c in criteria.values())
        if maxscore <= minscore or maxgrade <= 0:
            return -1.0
        score = 0.0
        for filling in self._fillings(instance["id"]):
            levels = {lv["id"]: lv for lv in criteria.get(filling["criterionid"], {}).get("levels", [])}
            score += levels.get(filling["levelid"], {}).get("score", 0.0)  # unknown: PHP's null, 0
        return max(0.0, score / maxscore * maxgrade)

    # assignments: submissions, grades, comments

    def _user_submission(self, assign: dict, user_id: int, *, create: bool, attempt: int = -1) -> dict | None:
        """``assign::get_user_submission()``: the highest attempt (or that attempt); created if asked."""
        submissions = self._state.grading["submissions"]
        mine = [
            s
            for s in submissions.values()
            if s["assignment"] == assign["id"]
            and s["userid"] == user_id
            and (attempt < 0 or s["attemptnumber"] == attempt)
        ]
        if mine:
            return max(mine, key=lambda s: s["attemptnumber"])
        if not create:
            return None
        others = [
            s for s in submissions.values() if s["assignment"] == assign["id"] and s["userid"] == user_id
        ]
        latest = attempt == -1 or not others or attempt > max(s["attemptnumber"] for s in others)
        if latest:
            for other in others:
                other["latest"] = 0
        now = self._ts()
        submission = {
            "id": self._next("assign_submission"),
            "assignment": assign["id"],
            "userid": user_id,
            "attemptnumber": max(attempt, 0),
            "status": "new",
            "latest": int(latest),
            "timecreated": now,
            "timemodified": now,
        }
        submissions[submission["id"]] = submission
        return submission

    def _latest_submission(self, assign: dict, user_id: int) -> dict | None:
        return self._user_submission(assign, user_id, create=False)

    def _user_grade(self, assign: dict, user_id: int, attempt: int) -> dict:
        """``assign::get_user_grade($userid, true, $attempt)``: the grade row of the attempt, created
        (grade -1, grader -1) with the attempt's submission if needed."""
        grades = self._state.grading["assign_grades"]
        submission = self._user_submission(assign, user_id, create=True, attempt=attempt)
        assert submission is not None
        attempt = submission["attemptnumber"]
        mine = [
            g
            for g in grades.values()
            if g["assignment"] == assign["id"] and g["userid"] == user_id and g["attemptnumber"] == attempt
        ]
        if mine:
            return max(mine, key=lambda g: g["attemptnumber"])
        now = self._ts()
        grade = {
            "id": self._next("assign_grade"),
            "assignment": assign["id"],
            "userid": user_id,
            "attemptnumber": attempt,
            "timecreated": now,
            "timemodified": submission["timemodified"],
            "grader": -1,
            "grade": -1.0,
        }
        grades[grade["id"]] = grade
        return grade

    def _active_rubric(self, assign: dict) -> dict | None:
        """The rubric that grades the assignment: the area's active method is rubric and its
        definition is READY (``is_form_available()``); else grades are plain."""
        area = self._area(self._module_contextid(assign["cmid"]), "mod_assign", "submissions")
        if area is None or area["activemethod"] != "rubric":
            return None
        definition = self._area_definition(area)
        return definition if definition and definition["status"] == GRADING_STATUS_READY else None

    def _ws_mod_assign_save_grade(
        self,
        *,
        token: str,
        assignmentid: int,
        userid: int,
        grade: float,
        attemptnumber: int,
        addattempt: bool,
        workflowstate: str,
        applytoall: bool,
        plugindata: dict,
        advancedgradingdata: dict,
    ) -> None:
        """``mod_assign_save_grade`` (``assign::save_grade()`` -> ``apply_grade_to_user()``), answering
        null. Not a transaction: what is written before a failure stays (grading/mod_assign_save_grade.json)."""
        assign = self._assignment(assignmentid)
        self._require_module_access("assign")
        self._require_capability("mod/assign:grade", "Grade assignment")
        # No check of userid: an unknown user gets a grade too (grading/mod_assign_save_grade.json).
        grading = self._state.grading
        row = self._user_grade(assign, userid, attemptnumber)
        original = row["grade"]
        rubric = self._active_rubric(assign)
        if rubric is not None:
            filled: dict[int, dict] = {}
            if advancedgradingdata:
                method_data = next(iter(advancedgradingdata.values()))  # reset(): the first method sent
                for criterion in method_data.get("criteria", []):
                    for filling in criterion.get("fillings") or []:
                        filled[criterion["criterionid"]] = filling  # keyed by the outer criterionid
            instance = self._new_instance(rubric, row["id"])
            new_grade = self._submit_rubric(rubric, instance, filled, assign["grade"])
        else:
            new_grade = _decimal5(grade)
        feedback_text: str | None = None
        feedback_format = 0
        modified = False
        if assign["feedback_comments"]:
            comment = grading["comments"].get(row["id"])
            editor = plugindata.get("assignfeedbackcomments_editor")
            modified = not _php_text_equal(
                comment["text"] if comment else "", editor["text"] if editor else None
            )
            if modified:
                if editor is None:  # the plugin writes NULL into NOT NULL columns
                    raise MoodleException(
                        "dml_write_exception",
                        "dmlwriteexception",
                        "Error writing to database",
                        'ERROR:  null value in column "commentformat" of relation "mdl_assignfeedback_comments" '
                        "violates not-null constraint",
                    )
                comment = {"text": editor["text"], "format": editor["format"]}
                grading["comments"][row["id"]] = comment
            feedback_text = comment["text"] if comment else ""
            feedback_format = comment["format"] if comment else 0
        if addattempt or original != -1 or new_grade != -1 or modified:
            self._update_assign_grade(
                assign, row, new_grade, bool(addattempt), feedback_text, feedback_format
            )

    def _update_assign_grade(
        self, assign: dict, row: dict, value: float, reopen: bool, feedback: str | None, feedback_format: int
    ) -> None:
        """``assign::update_grade()``: store it; if it is the latest attempt's, push it to the gradebook
        and reopen the submission if the assignment says so."""
        if value and value != -1 and (value > assign["grade"] or value < 0):
            return  # refused silently, as Moodle does (a plain grade out of range)
        row.update(grade=_decimal5(value), grader=ADMIN_USER_ID, timemodified=self._ts())
        latest = self._latest_submission(assign, row["userid"])
        if latest is not None and latest["attemptnumber"] != row["attemptnumber"]:
            return
        item = self._state.grade_items[assign["gradeitemid"]]
        self._store_grade(
            item,
            row["userid"],
            row["grade"] if row["grade"] >= 0 else None,
            feedback,
            at=row["timemodified"],  # dategraded = the assign grade's timemodified (locallib.php)
        )
        stored = self._state.grades[(item["id"], row["userid"])]
        stored["dategraded"] = row["timemodified"]
        stored["datesubmitted"] = None  # convert_grade_for_gradebook()
        if feedback is not None:
            stored["feedbackformat"] = feedback_format
        if latest is None:
            return
        method = assign["attemptreopenmethod"]
        maxattempts = assign["maxattempts"]
        reached = maxattempts != -1 and latest["attemptnumber"] >= maxattempts - 1
        # untilpass needs a grade to pass, which the simulated gradebook has not: never reopens.
        if not reached and (method == "automatic" or (method == "manual" and reopen)) and maxattempts != 1:
            new = self._user_submission(
                assign, row["userid"], create=True, attempt=latest["attemptnumber"] + 1
            )
            assert new is not None
            new["status"] = "reopened"
            stored["datesubmitted"] = new["timemodified"]  # update_submission() -> the gradebook

    def _ws_mod_assign_get_grades(self, *, token: str, assignmentids: list[int], since: int) -> dict:
        """``mod_assign_get_grades``: per assignment, the grades of each learner's latest attempt (a
        reopened attempt not yet graded leaves the learner out) with ``timemodified >= since``, by
        grade id; ``grade`` a string with 5 decimals ("-1.00000": not graded). An assignment without
        such grades (or unknown) is a warning 3; one the role cannot see a warning 1 and no error."""
        # Checked against Moodle 4.5's source, mod/assign/externallib.php, get_grades(): the SQL joins
        # assign_submission on "s.latest = 1 AND s.attemptnumber = ag.attemptnumber" and filters
        # "ag.timemodified >= :since" (inclusive), ORDER BY ag.assignment, ag.id; the warning 1
        # (require_view_grades() failed) names the assignment id (cm->instance) although the
        # returns description says "a course module id"; "grade" is (string) of the numeric(10,5)
        # column, hence 5 decimals (also in the recording, grading/mod_assign_get_grades.json).
        # The optional "assignment" and "gradefordisplay" keys of get_grade_structure() are never
        # set by get_grades(), so they are not answered here either.
        grading = self._state.grading
        requested = list(assignmentids)
        warnings: list[dict] = []
        for assign in sorted(grading["assignments"].values(), key=lambda a: a["cmid"]):
            if assign["id"] not in requested:
                continue
            if not self._module_accessible("assign") or (
                self._lacks("mod/assign:grade") and self._lacks("mod/assign:viewgrades")
            ):
                requested = [i for i in requested if i != assign["id"]]
                warnings.append(
                    {
                        "item": "assignment",
                        "itemid": assign["id"],
                        "warningcode": "1",
                        "message": "No access rights in module context",
                    }
                )
        latest = {
            (s["assignment"], s["userid"]): s["attemptnumber"]
            for s in grading["submissions"].values()
            if s["latest"]
        }
        rows = sorted(
            (
                g
                for g in grading["assign_grades"].values()
                if g["assignment"] in requested
                and latest.get((g["assignment"], g["userid"])) == g["attemptnumber"]
                and g["timemodified"] >= since
            ),
            key=lambda g: (g["assignment"], g["id"]),
        )
        assignments: list[dict] = []
        for g in rows:
            if not assignments or assignments[-1]["assignmentid"] != g["assignment"]:
                assignments.append({"assignmentid": g["assignment"], "grades": []})
                requested = [i for i in requested if i != g["assignment"]]
            assignments[-1]["grades"].append(
                {
                    "id": g["id"],
                    "userid": g["userid"],
                    "attemptnumber": g["attemptnumber"],
                    "timecreated": g["timecreated"],
                    "timemodified": g["timemodified"],
                    "grader": g["grader"],
                    "grade": f"{Decimal(repr(g['grade'])).quantize(Decimal('0.00001'), rounding=ROUND_HALF_UP)}",
                }
            )
        for assignment_id in requested:
            warnings.append(
                {
                    "item": "assignment",
                    "itemid": assignment_id,
                    "warningcode": "3",
                    "message": "No grades found",
                }
            )
        return {"assignments": assignments, "warnings": warnings}

    def _ws_mod_assign_get_assignments(
        self, *, token: str, courseids: list[int], capabilities: list[str], includenotenrolledcourses: bool
    ) -> dict:
        """``mod_assign_get_assignments``: the courses asked for, with their assignments. A course the
        token's user is not enrolled in is left out with a warning 2 unless
        ``includenotenrolledcourses`` (the pipeline's account is enrolled nowhere)."""
        warnings: list[dict] = []
        mine = [
            cid
            for (cid, uid), ue in sorted(self._state.enrolments.items())
            if uid == ADMIN_USER_ID and self._active(ue)
        ]
        if not courseids:
            wanted = mine
        elif includenotenrolledcourses:
            wanted = list(courseids)
        else:
            wanted = []
            for cid in courseids:
                if cid in mine:
                    wanted.append(cid)
                else:
                    warnings.append(
                        {
                            "item": "course",
                            "itemid": cid,
                            "warningcode": "2",
                            "message": "User is not enrolled or does not have requested capability",
                        }
                    )
        courses = []
        for cid in dict.fromkeys(wanted):
            course = self._state.courses.get(cid)
            problem = (
                "Can't find data record in database table course."
                if course is None
                else "Course or activity not accessible."
                if self._lacks("moodle/course:view")
                else None
            )
            if problem is not None:
                warnings.append(
                    {
                        "item": "course",
                        "itemid": cid,
                        "warningcode": "1",
                        "message": f"No access rights in course context {problem}",
                    }
                )
                continue
            if capabilities and any(self._lacks(c) for c in capabilities):
                continue
            assignments = []
            for assign in sorted(self._state.grading["assignments"].values(), key=lambda a: a["cmid"]):
                if assign["course"] != cid:
                    continue
                if not self._can_view_module("assign"):
                    warnings.append(
                        {
                            "item": "module",
                            "itemid": assign["cmid"],
                            "warningcode": "1",
                            "message": "No access rights in module context",
                        }
                    )
                    continue
                assignments.append(self._assignment_data(assign))
            courses.append(
                {
                    "id": cid,
                    "fullname": course["fullname"],
                    "shortname": course["shortname"],
                    "timemodified": course["timemodified"],
                    "assignments": assignments,
                }
            )
        return {"courses": courses, "warnings": warnings}

    def _assignment_data(self, assign: dict) -> dict:
        """One assignment as ``mod_assign_get_assignments`` answers it (grading/mod_assign_get_assignments.json)."""
        data: dict[str, Any] = {
            "id": assign["id"],
            "cmid": assign["cmid"],
            "course": assign["course"],
            "name": assign["name"],
        }
        for key in list(_ASSIGN_SETTINGS)[:7]:
            data[key] = assign[key]
        data["grade"] = assign["grade"]
        data["timemodified"] = assign["timemodified"]
        for key in list(_ASSIGN_SETTINGS)[7:23]:
            data[key] = assign[key]
        onlinetext = [
            ("onlinetext", "assignsubmission", "enabled", str(int(assign["onlinetext"]))),
        ]
        if assign["onlinetext"]:
            onlinetext += [
                ("onlinetext", "assignsubmission", "wordlimit", "0"),
                ("onlinetext", "assignsubmission", "wordlimitenabled", "0"),
            ]
        configs = [
            *onlinetext,
            ("comments", "assignsubmission", "enabled", "0"),
            ("comments", "assignfeedback", "enabled", str(int(assign["feedback_comments"]))),
            ("comments", "assignfeedback", "commentinline", "0"),
        ]
        data["configs"] = [{"plugin": p, "subtype": s, "name": n, "value": v} for p, s, n, v in configs]
        intro, introformat = _ws_text(assign["intro"], assign["introformat"])
        data.update(
            {
                "intro": intro,
                "introformat": introformat,
                "introfiles": [],
                "introattachments": [],
                "timelimit": assign["timelimit"],
                "submissionattachments": assign["submissionattachments"],
            }
        )
        return data


#: modname -> (purpose, modplural) of the modules the simulated courses hold.
_MODULE_KINDS: dict[str, tuple[str, str]] = {
    "assign": ("assessment", "Assignments"),
    "quiz": ("assessment", "Quizzes"),
    "forum": ("collaboration", "Forums"),
}


def _sql_like(text: str, pattern: str) -> bool:
    """``$DB->sql_like($field, $pattern, casesensitive: false)``: ``%`` any run, ``_`` one character,
    ``\\`` escapes."""
    regex, chars = "", iter(pattern)
    for char in chars:
        if char == "\\":
            regex += re.escape(next(chars, "\\"))
        elif char == "%":
            regex += ".*"
        elif char == "_":
            regex += "."
        else:
            regex += re.escape(char)
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL) is not None


def _loose_equal(value: str, cleaned: Any) -> bool:
    """PHP 8's ``$value == $cleaned`` for a form string and its cleaned value."""
    if isinstance(cleaned, int):
        try:
            return float(value.strip()) == cleaned
        except ValueError:
            return False
    return value == cleaned


def _error_page(status: int) -> bytes:
    return f"<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>".encode()


# --- HTTP plumbing ----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    server: SimulatorHTTPServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.server.simulator._handle(method, self.path, self.headers, body)
        if response.drop:  # an injected fault: hang up without a word
            self.close_connection = True
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-PHP-Response-Code", str(response.status))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries the token in its query string: blank it, as a careful site would.
        line = (format % args) if args else format
        logger.debug("%s - %s", self.address_string(), _TOKEN_IN_URL.sub(r"\1<redacted>", line))


_TOKEN_IN_URL = re.compile(r"(wstoken=)[^&\s\"]+")

__all__ = [
    "ADMIN_USER_ID",
    "DEFAULT_TOKEN",
    "FUNCTIONS",
    "GUEST_USER_ID",
    "MISC_CATEGORY_ID",
    "RELEASE",
    "REST_PATH",
    "ROLE_EDITINGTEACHER",
    "ROLE_MANAGER",
    "ROLE_STUDENT",
    "ROLE_TEACHER",
    "SITE_COURSE_ID",
    "VERSION",
    "WRITE_FUNCTIONS",
    "MoodleException",
    "MoodleRequest",
    "MoodleSimulator",
]
