"""A Moodle web-services REST client, written to Moodle's documented (and observed) behaviour.

What it does, and the Moodle rule behind each choice:

* **Protocol.** ``POST {base_url}/webservice/rest/server.php``. ``wstoken``, ``wsfunction`` and
  ``moodlewsrestformat=json`` go in the URL query (Moodle reads ``$_REQUEST``, so either place works,
  but the query survives a body that PHP truncates); without ``moodlewsrestformat=json`` Moodle
  answers XML. Parameters are form fields in PHP's array syntax
  (``users[0][customfields][0][type]=zohoid``), booleans as ``1``/``0``, ``None`` left out.
* **Errors come back with HTTP 200** as ``{"exception", "errorcode", "message", "debuginfo"}``
  (``debuginfo`` only on a site in debug mode; newer Moodle leaves ``errorcode`` out when the
  exception has none). They are raised as typed errors:

  - :class:`MoodleAuthError`: the token, its service or the service account refuses the call
    (``invalidtoken``, ``accessexception``, ``nopermissions``...). Fatal for the run; never retried.
  - :class:`MoodleRecordError`: the call's data is wrong (``invalidparameter``, ``shortnametaken``...).
    A password-policy failure puts HTML into ``errorcode``; it is stripped to readable text.
  - :class:`MoodleUnavailable`: 5xx, timeouts and dropped connections after the retries, the site in
    maintenance mode, or an answer that is not JSON (an HTML error page, XML).

* **max_input_vars.** PHP silently drops form fields past the site's ``max_input_vars`` (1000 by
  default; counted separately for the query and the body). The body's fields are counted before
  every request and batches are packed so that no request carries more than ``max_input_vars -
  input_vars_headroom`` of them; a request over that budget is never sent.
* **All-or-nothing batches.** ``core_user_create_users`` (and the other batched writes) run in one
  transaction: one bad record and nothing is written. A failed batch is split in halves and each
  half is sent again, recursively, until every bad record stands alone with Moodle's own error and
  every good record is written. When a failed batch's first half succeeds, its second half is known
  to fail with the same error, so it is split without being sent (and a single record left over is
  reported with that error): isolating one bad record among ``n`` costs about ``1 + log2(n)`` calls.
* **Updates are per record.** ``core_user_update_users`` and ``core_course_update_courses`` report a
  record they could not update as a warning (``invaliduserid``...) instead of failing the call; each
  warning becomes that record's failed :class:`ItemResult`.
* **Retries.** 429, 5xx and connection errors are retried with backoff and full jitter
  (:mod:`sync_pipelines.http`). A retried *create* whose first answer was lost may already have been
  applied, and then fails with "Username already exists" (or ``shortnametaken``...): callers make
  creates idempotent by looking the record up by ``idnumber`` first (and again after such a failure).
  This client does not try to guess.
* **Accounting.** Every HTTP attempt is counted in :attr:`MoodleClient.stats`, per function.

The token never appears in exceptions, logs or reprs: URLs are logged without their query, every
error text is scrubbed, and urllib3's own debug log line (which carries the full URL) is redacted.
"""

import contextlib
import html
import logging
import math
import numbers
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import requests

from sync_pipelines.http import RetryingSession, RetryPolicy, TransportError, redact_url

logger = logging.getLogger(__name__)

#: Path of the REST server below the site's base URL.
REST_PATH = "/webservice/rest/server.php"
#: PHP's default ``max_input_vars``.
DEFAULT_MAX_INPUT_VARS = 1000
#: Users per page when listing a course's enrolled users.
ENROLLED_USERS_PAGE_SIZE = 200
#: Fields ``core_user_get_users_by_field`` can search on.
USER_LOOKUP_FIELDS = frozenset({"id", "idnumber", "username", "email"})

#: Error codes that mean the token, its service or the service account cannot make the call at all:
#: no record-level retry can help. ``nopermissions`` (a capability the service account lacks) and
#: ``requireloginerror`` (it cannot enter a course) are configuration problems of the account too.
AUTH_ERRORCODES: frozenset[str] = frozenset(
    {
        "invalidtoken",
        "accessexception",
        "invalidlogin",
        "invalidtimedtoken",
        "invalidiptoken",
        "servicenotavailable",
        "usernotallowed",
        "wsaccessuserdeleted",
        "wsaccessuserunconfirmed",
        "wsaccessusersuspended",
        "wsaccessusernologin",
        "wsaccessuserexpired",
        "forcepasswordchangenotice",
        "nopermissions",
        "requireloginerror",
    }
)
#: Exception classes with the same meaning, for answers that carry no ``errorcode``.
AUTH_EXCEPTIONS: frozenset[str] = frozenset(
    {"webservice_access_exception", "required_capability_exception", "require_login_exception"}
)
#: Error codes that mean "the site cannot serve anyone right now".
UNAVAILABLE_ERRORCODES: frozenset[str] = frozenset({"sitemaintenance"})

_TAG = re.compile(r"<[^>]*>")
_HTML = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")
_SPACE = re.compile(r"\s+")
_WSTOKEN = re.compile(r"(wstoken=)[^&\s\"']*")


# --- results and accounting -----------------------------------------------------------------------


@dataclass(frozen=True)
class ItemResult:
    """The outcome of one input record of a batched write.

    Attributes:
        index: position of the record in the sequence passed to the write method.
        ok: whether Moodle applied the record.
        value: on success, what Moodle answered for it (``{"id", "username"}`` for a created user,
            ``{"id", "shortname"}`` for a course, ``{"id", "name"}`` for a category; ``None`` for
            updates and enrolments).
        errorcode: on failure, Moodle's error or warning code, or this client's own
            ``too_many_fields`` / ``empty_record`` (the record was not sent).
        message: on failure, Moodle's message (with its ``debuginfo`` when the site sent one).
    """

    index: int
    ok: bool
    value: Any = None
    errorcode: str | None = None
    message: str | None = None


@dataclass
class MoodleStats:
    """Every HTTP attempt a client made.

    Attributes:
        calls: HTTP attempts, retries included.
        retries: attempts that repeated an earlier one after a retriable failure.
        by_function: attempts per web-service function.
    """

    calls: int = 0
    retries: int = 0
    by_function: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def record_attempt(self, function: str, *, retry: bool) -> None:
        """Count one HTTP attempt of ``function``."""
        with self._lock:
            self.calls += 1
            self.by_function[function] = self.by_function.get(function, 0) + 1
            if retry:
                self.retries += 1

    def as_metadata(self) -> dict[str, int]:
        """The counters as flat Dagster metadata.

        Returns:
            e.g. ``{"moodle_calls": 5, "moodle_retries": 1, "moodle_calls.core_user_create_users": 4}``.
        """
        with self._lock:
            meta = {"moodle_calls": self.calls, "moodle_retries": self.retries}
            for function, count in sorted(self.by_function.items()):
                meta[f"moodle_calls.{function}"] = count
            return meta


# --- errors ---------------------------------------------------------------------------------------


class MoodleError(Exception):
    """Moodle refused or failed a web-service call.

    ``str()`` names the tenant, the function, Moodle's error code and message, never the token.

    Attributes:
        tenant_id: the tenant whose Moodle site was called.
        function: the web-service function called.
        errorcode: Moodle's ``errorcode`` (HTML stripped), its exception class when it sent no
            code, or one of this client's own (``connection_error``, ``http_503``,
            ``invalidresponse``, ``too_many_fields``).
        exception: Moodle's exception class (``invalid_parameter_exception``...), or ``""``.
        message: Moodle's message (HTML stripped), or this client's description.
        debuginfo: Moodle's ``debuginfo`` (sent only by a site in debug mode), or ``None``.
        partial_results: when a batched write stopped on this error, the results of the records
            settled before it (those marked ``ok`` were written). Empty otherwise.
    """

    def __init__(
        self,
        tenant_id: str,
        function: str,
        errorcode: str,
        message: str,
        exception: str = "",
        debuginfo: str | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.function = function
        self.errorcode = errorcode
        self.message = message
        self.exception = exception
        self.debuginfo = debuginfo
        self.partial_results: list[ItemResult] = []
        # Every constructor argument in args, so the error pickles (Dagster ships errors across
        # processes) and rebuilds as the same subclass.
        super().__init__(tenant_id, function, errorcode, message, exception, debuginfo)

    def __str__(self) -> str:
        text = f"Moodle, tenant {self.tenant_id!r} ({self.function}): {self.errorcode}: {self.message}"
        if self.debuginfo:
            text += f" [{self.debuginfo}]"
        return text


class MoodleAuthError(MoodleError):
    """The token, its service or its account cannot make the call: ``invalidtoken``,
    ``accessexception`` (function not in the token's service), ``invalidlogin``, ``nopermissions``,
    an unknown function... Fatal for the run: retrying, or retrying record by record, cannot help."""


class MoodleRecordError(MoodleError):
    """The data of the call was refused: ``invalidparameter``, ``shortnametaken``, ``idnumbertaken``,
    ``categoryidnumbertaken``, a password-policy failure... Tied to the record(s) sent."""


class MoodleUnavailable(MoodleError):
    """No usable answer: 5xx or connection errors after all retries, the site in maintenance mode, or
    an answer that is not JSON. The caller cannot know whether a write happened."""


# --- encoding -------------------------------------------------------------------------------------


def php_form(params: Mapping[str, Any]) -> dict[str, str]:
    """Flatten parameters into PHP-style form fields, in order.

    ``{"users": [{"username": "amal", "customfields": [{"type": "zohoid", "value": "5"}]}]}``
    becomes ``users[0][username]=amal``, ``users[0][customfields][0][type]=zohoid``... Booleans
    become ``"1"``/``"0"``; ``None`` values (and empty lists, which a form cannot express) send no
    field at all.

    Args:
        params: the function's parameters: mappings, sequences and scalars, nested freely.

    Returns:
        Field name to value; one entry per form field PHP will count against ``max_input_vars``.

    Raises:
        TypeError: a value is of a type Moodle cannot receive (bytes, a set, an arbitrary object).
    """
    form: dict[str, str] = {}
    for key, value in params.items():
        _flatten(str(key), value, form)
    return form


def _flatten(name: str, value: Any, form: dict[str, str]) -> None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{name}[{key}]", item, form)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        for i, item in enumerate(value):
            _flatten(f"{name}[{i}]", item, form)
    else:
        form[name] = _scalar(name, value)


def _scalar(name: str, value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "1" if value else "0"
    if isinstance(value, numbers.Integral):
        return str(int(value))  # int(): an IntEnum or a numpy integer sends its number
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, numbers.Real):
        return str(float(value))
    if isinstance(value, str):
        return str.__str__(value)  # the text itself, also for a (str, Enum) member
    raise TypeError(f"cannot send {type(value).__name__} as Moodle parameter {name!r}")


# --- helpers --------------------------------------------------------------------------------------


class _NotJson:
    """Marker for an answer whose body is not JSON."""


_NOT_JSON = _NotJson()


def _json(response: requests.Response) -> Any:
    """The body as JSON (``None`` is a valid answer: ``null``), or :data:`_NOT_JSON`."""
    if not response.content:
        return _NOT_JSON
    try:
        return response.json()
    except ValueError:
        return _NOT_JSON


def _looks_html(text: str) -> bool:
    return bool(_HTML.search(text))


def _plain(text: str) -> str:
    """``text`` without tags or entities, whitespace collapsed."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


class _RedactWsToken(logging.Filter):
    """Blank ``wstoken=...`` in urllib3's debug line, which logs each request's full URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a malformed record is not ours to fix; logging reports it
            return True
        if "wstoken=" in text:
            record.msg = _WSTOKEN.sub(r"\1<redacted>", text)
            record.args = ()
        return True


def _install_log_redaction() -> None:
    """Attach :class:`_RedactWsToken` to urllib3's connection-pool logger, once."""
    pool_logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactWsToken) for f in pool_logger.filters):
        pool_logger.addFilter(_RedactWsToken())


_install_log_redaction()

_Chunk = list[tuple[int, Mapping[str, Any]]]
_Parser = Callable[[str, _Chunk, Any], list[ItemResult]]


# --- the client -----------------------------------------------------------------------------------


class MoodleClient:
    """One tenant's Moodle site, over the web-services REST protocol.

    Args:
        tenant_id: the tenant this site belongs to (named in every error).
        base_url: the site's root, e.g. ``https://moodle.school.example`` (a sub-path is fine).
        token: a web-service token of a service that includes the functions used.
        max_input_vars: the site's PHP ``max_input_vars``.
        input_vars_headroom: fields kept free below ``max_input_vars`` in every request.
        timeout: ``(connect, read)`` timeout in seconds for every request.
        max_retries: retries of a retriable failure (429, 5xx, connection error).
        backoff_base: ceiling of the first backoff, in seconds; doubles every retry.
        backoff_max: largest backoff, in seconds.
        session: a ``requests.Session`` to use (one is created, and owned, if omitted).
        sleep: called with every backoff delay (tests pass a recorder).
        rng: random source for the backoff jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        base_url: str,
        token: str,
        max_input_vars: int = DEFAULT_MAX_INPUT_VARS,
        input_vars_headroom: int = 50,
        timeout: tuple[float, float] = (5.0, 60.0),
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not tenant_id:
            raise ValueError("tenant_id is required")
        if not base_url:
            raise ValueError("base_url is required")
        if not token:
            raise ValueError("token is required")
        if input_vars_headroom < 0:
            raise ValueError("input_vars_headroom must be >= 0")
        if max_input_vars - input_vars_headroom < 2:
            raise ValueError("max_input_vars - input_vars_headroom must leave room for at least 2 fields")
        self.tenant_id = tenant_id
        self.base_url = base_url.rstrip("/")
        self.max_input_vars = max_input_vars
        self.input_vars_headroom = input_vars_headroom
        self._token = token
        self._url = f"{self.base_url}{REST_PATH}"
        self._http = RetryingSession(
            timeout=timeout,
            policy=RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max),
            session=session,
            sleep=sleep,
            rng=rng,
        )
        self.stats = MoodleStats()
        self._observers: list[Callable[[str, Mapping[str, Any] | None, Any], None]] = []

    def __repr__(self) -> str:
        return (
            f"MoodleClient(tenant_id={self.tenant_id!r}, base_url={redact_url(self.base_url)!r}, "
            f"max_input_vars={self.max_input_vars})"
        )

    def close(self) -> None:
        """Close the HTTP session if the client created it."""
        self._http.close()

    def __enter__(self) -> "MoodleClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def field_budget(self) -> int:
        """The most form fields one request body may carry: ``max_input_vars - input_vars_headroom``."""
        return self.max_input_vars - self.input_vars_headroom

    @contextlib.contextmanager
    def observe(self, callback: Callable[[str, Mapping[str, Any] | None, Any], None]) -> Iterator[None]:
        """Call ``callback(function, params, answer)`` after every answered call while the block
        runs (for progress lines, :class:`sync_pipelines.progress.Progress`); nothing is sent."""
        self._observers.append(callback)
        try:
            yield
        finally:
            self._observers.remove(callback)

    # --- one call ---------------------------------------------------------------------------------

    def call(self, function: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call one web-service function with one request (plus retries).

        Args:
            function: the function's name, e.g. ``core_webservice_get_site_info``.
            params: its parameters, nested as Moodle documents them (see :func:`php_form`).

        Returns:
            The decoded JSON answer (``None`` for functions that return nothing).

        Raises:
            MoodleAuthError: the token, its service or account cannot make this call.
            MoodleRecordError: Moodle refused the data, or the parameters need more form fields
                than the budget (``too_many_fields``; nothing was sent).
            MoodleUnavailable: no usable answer after the retries.
        """
        form = php_form(params or {})
        if len(form) > self.field_budget:
            raise self._error(
                MoodleRecordError,
                function,
                "too_many_fields",
                f"the parameters need {len(form)} form fields; the budget is {self.field_budget} "
                f"(max_input_vars {self.max_input_vars} - headroom {self.input_vars_headroom}) "
                "and PHP would silently drop the rest",
            )
        query = {"wstoken": self._token, "wsfunction": function, "moodlewsrestformat": "json"}
        try:
            response = self._http.request(
                "POST", self._url, params=query, data=form, on_attempt=self._counter(function)
            )
        except TransportError as exc:
            raise self._error(MoodleUnavailable, function, "connection_error", str(exc)) from None
        answer = self._answer(function, response)
        logger.debug("tenant %s: %s, %d fields: ok", self.tenant_id, function, len(form))
        for callback in list(self._observers):
            callback(function, params, answer)
        return answer

    def _counter(self, function: str) -> Callable[[int], None]:
        def count(attempt: int) -> None:
            self.stats.record_attempt(function, retry=attempt > 0)

        return count

    def _answer(self, function: str, response: requests.Response) -> Any:
        """The decoded answer of a call, or the typed error it stands for."""
        status = response.status_code
        if status >= 500 or status == 429:
            raise self._error(
                MoodleUnavailable,
                function,
                f"http_{status}",
                f"HTTP {status} {response.reason or ''}".rstrip() + ", retries exhausted",
            )
        body = _json(response)
        if isinstance(body, _NotJson):
            content_type = response.headers.get("Content-Type", "no content type")
            excerpt = _plain(response.text)[:200] or "empty body"
            message = f"HTTP {status} ({content_type}) is not JSON: {excerpt}"
            # 401/403 without JSON: the web server or Moodle refuses the protocol outright (web
            # services or REST disabled); as fatal as a bad token.
            cls: type[MoodleError] = MoodleAuthError if status in (401, 403) else MoodleUnavailable
            raise self._error(cls, function, "invalidresponse", message)
        if isinstance(body, dict) and ("exception" in body or "errorcode" in body):
            raise self._api_error(function, body)
        if status != 200:
            raise self._error(
                MoodleUnavailable, function, f"http_{status}", f"HTTP {status} with an unexpected answer"
            )
        return body

    def _api_error(self, function: str, body: Mapping[str, Any]) -> MoodleError:
        """The typed error for Moodle's ``{"exception", "errorcode", "message", "debuginfo"}``."""
        exception = str(body.get("exception") or "")
        errorcode = str(body.get("errorcode") or exception or "unknown")
        message = str(body.get("message") or "")
        debuginfo = body.get("debuginfo")
        debug = str(debuginfo) if debuginfo not in (None, "") else None
        if _looks_html(errorcode):
            # A password-policy failure: moodle_exception($errmsg) with $errmsg in <div>s, so the
            # code is HTML and the message is "error/<div>...". Keep the text, drop the markup.
            errorcode = _plain(errorcode)
            message = _plain(message.removeprefix("error/"))
        elif _looks_html(message):
            message = _plain(message)
        cls = self._classify(errorcode, exception, message)
        return self._error(cls, function, errorcode, message, exception=exception, debuginfo=debug)

    @staticmethod
    def _classify(errorcode: str, exception: str, message: str) -> type[MoodleError]:
        # Moodle 4.5 names most exceptions with their namespace (core\exception\...): compare the class.
        if errorcode in AUTH_ERRORCODES or exception.rsplit("\\", 1)[-1] in AUTH_EXCEPTIONS:
            return MoodleAuthError
        if errorcode == "invalidrecord" and "external_functions" in message:
            # The function does not exist on this site: no record of ours can change that.
            return MoodleAuthError
        if errorcode in UNAVAILABLE_ERRORCODES:
            return MoodleUnavailable
        return MoodleRecordError

    def _error(
        self,
        cls: type[MoodleError],
        function: str,
        errorcode: str,
        message: str,
        *,
        exception: str = "",
        debuginfo: str | None = None,
    ) -> MoodleError:
        """Build an error with the token scrubbed from all of its text."""
        return cls(
            self.tenant_id,
            function,
            self._scrub(errorcode),
            self._scrub(message),
            self._scrub(exception),
            self._scrub(debuginfo) if debuginfo is not None else None,
        )

    def _scrub(self, text: str) -> str:
        return _WSTOKEN.sub(r"\1<redacted>", text.replace(self._token, "***"))

    # --- batched writes ---------------------------------------------------------------------------

    def _write(
        self, function: str, key: str, records: Sequence[Mapping[str, Any]], parse: _Parser
    ) -> list[ItemResult]:
        """Send ``records`` under ``key`` in budget-sized batches, isolating bad records.

        Raises:
            MoodleAuthError: stops the whole write; ``partial_results`` holds what was settled.
            MoodleUnavailable: likewise (the outcome of the batch in flight is unknown).
        """
        results: list[ItemResult] = []
        try:
            for batch in self._pack(key, records, results):
                self._isolate(function, key, batch, parse, None, results)
        except MoodleError as exc:
            exc.partial_results = sorted(results, key=lambda r: r.index)
            raise
        return sorted(results, key=lambda r: r.index)

    def _pack(
        self, key: str, records: Sequence[Mapping[str, Any]], results: list[ItemResult]
    ) -> Iterator[_Chunk]:
        """Greedy batches of records whose fields fit the budget, in input order.

        A record that cannot fit even alone (or that has no field at all) is not sent: its failed
        result goes straight to ``results``.
        """
        budget = self.field_budget
        batch: _Chunk = []
        used = 0
        for index, record in enumerate(records):
            size = len(php_form({key: [record]}))
            if size == 0 or size > budget:
                code, why = (
                    ("empty_record", "the record has no field to send")
                    if size == 0
                    else (
                        "too_many_fields",
                        f"the record needs {size} form fields; the budget per request is {budget}",
                    )
                )
                results.append(ItemResult(index=index, ok=False, errorcode=code, message=why))
                continue
            if used + size > budget:
                yield batch
                batch, used = [], 0
            batch.append((index, record))
            used += size
        if batch:
            yield batch

    def _isolate(
        self,
        function: str,
        key: str,
        batch: _Chunk,
        parse: _Parser,
        known: MoodleRecordError | None,
        out: list[ItemResult],
    ) -> None:
        """Write ``batch``; if Moodle refuses it, split it and recurse until each bad record stands alone.

        Args:
            function: the write function.
            key: the parameter holding the records (``users``, ``courses``...).
            batch: ``(input index, record)`` pairs, within the field budget.
            parse: turns a successful answer into one result per record.
            known: the error this batch is already known to fail with (its parent failed and its
                first half went through). It is then split without being sent.
            out: where results are appended as soon as they are settled, so that an error raised
                later still leaves a true account of what was written.
        """
        if known is None:
            try:
                answer = self.call(function, {key: [record for _, record in batch]})
            except MoodleRecordError as exc:
                known = exc
                logger.debug(
                    "tenant %s: %s refused a batch of %d (%s); splitting it",
                    self.tenant_id,
                    function,
                    len(batch),
                    exc.errorcode,
                )
            else:
                out.extend(parse(function, batch, answer))
                return
        if len(batch) == 1:
            out.append(_failed(batch[0][0], known))
            return
        middle = len(batch) // 2
        mark = len(out)
        self._isolate(function, key, batch[:middle], parse, None, out)
        # All-or-nothing: if the first half went through, what failed the whole is in the second.
        inherited = known if all(r.ok for r in out[mark:]) else None
        self._isolate(function, key, batch[middle:], parse, inherited, out)

    # --- answers of writes ------------------------------------------------------------------------

    def _created(self, name_key: str) -> _Parser:
        """A parser for create functions, which answer ``[{"id", name_key}]`` in input order."""

        def parse(function: str, batch: _Chunk, answer: Any) -> list[ItemResult]:
            rows = answer if isinstance(answer, list) else None
            if (
                rows is None
                or len(rows) != len(batch)
                or not all(isinstance(r, dict) and "id" in r for r in rows)
            ):
                got = f"{len(rows)} rows" if rows is not None else type(answer).__name__
                raise self._error(
                    MoodleUnavailable,
                    function,
                    "invalidresponse",
                    f"sent {len(batch)} records and got {got} back; some may have been created",
                )
            return [
                ItemResult(index=index, ok=True, value={"id": row["id"], name_key: row.get(name_key)})
                for (index, _), row in zip(batch, rows, strict=True)
            ]

        return parse

    def _updated(self, function: str, batch: _Chunk, answer: Any) -> list[ItemResult]:
        """Results of an update: ``{"warnings": [{"item", "itemid", "warningcode", "message"}]}``."""
        warnings = answer.get("warnings") if isinstance(answer, dict) else None
        by_id: dict[str, tuple[str, str]] = {}
        for warning in warnings or []:
            if not isinstance(warning, dict):
                continue
            code = str(warning.get("warningcode") or "warning")
            message = str(warning.get("message") or "")
            if _looks_html(code) or _looks_html(message):
                code, message = _plain(code), _plain(message)
            itemid = warning.get("itemid")
            if itemid is None or not any(str(r.get("id")) == str(itemid) for _, r in batch):
                # Not tied to any record sent: it cannot fail one, but it must not vanish either.
                logger.warning(
                    "tenant %s: %s warning not tied to a record: %s: %s",
                    self.tenant_id,
                    function,
                    self._scrub(code),
                    self._scrub(message),
                )
                continue
            by_id[str(itemid)] = (self._scrub(code), self._scrub(message))
        results = []
        for index, record in batch:
            warned = by_id.get(str(record.get("id")))
            if warned is None:
                results.append(ItemResult(index=index, ok=True))
            else:
                results.append(ItemResult(index=index, ok=False, errorcode=warned[0], message=warned[1]))
        return results

    @staticmethod
    def _applied(function: str, batch: _Chunk, answer: Any) -> list[ItemResult]:
        """Results of a function that answers ``null`` when it applied everything."""
        return [ItemResult(index=index, ok=True) for index, _ in batch]

    # --- the functions the sync uses --------------------------------------------------------------

    def site_info(self) -> dict:
        """``core_webservice_get_site_info``: site name, release, version, the token's functions.

        Raises:
            MoodleUnavailable: the answer is not an object.
        """
        return self._expect(dict, "core_webservice_get_site_info", self.call("core_webservice_get_site_info"))

    def get_users_by_field(self, field: str, values: Sequence[str | int]) -> list[dict]:
        """``core_user_get_users_by_field``: the users whose ``field`` is one of ``values``.

        Values are de-duplicated and sent in as many requests as the field budget needs.

        Args:
            field: ``id``, ``idnumber``, ``username`` or ``email``.
            values: the values to match; users not found are simply absent from the answer.

        Returns:
            The users found, each once.
        """
        if field not in USER_LOOKUP_FIELDS:
            raise ValueError(f"field must be one of {sorted(USER_LOOKUP_FIELDS)}, got {field!r}")
        unique = list(dict.fromkeys(str(v) for v in values))
        per_request = self.field_budget - 1  # one field for "field"
        users: dict[Any, dict] = {}
        for start in range(0, len(unique), per_request):
            chunk = unique[start : start + per_request]
            answer = self.call("core_user_get_users_by_field", {"field": field, "values": chunk})
            for row in self._expect(list, "core_user_get_users_by_field", answer):
                user = self._expect(dict, "core_user_get_users_by_field", row)
                users.setdefault(user.get("id"), user)
        return list(users.values())

    def search_users(self, key: str, value: str) -> list[dict]:
        """``core_user_get_users`` with one criterion: ``email``, ``firstname`` and ``lastname``
        match with SQL ``LIKE`` (``%`` is the wildcard), other keys exactly.

        Returns:
            The users found (Moodle answers at most what the token may see).
        """
        answer = self.call("core_user_get_users", {"criteria": [{"key": key, "value": value}]})
        body = self._expect(dict, "core_user_get_users", answer)
        for warning in body.get("warnings") or []:
            logger.debug("tenant %s: get_users warning: %s", self.tenant_id, warning)
        return self._expect(list, "core_user_get_users", body.get("users", []))

    def create_users(self, users: Sequence[Mapping]) -> list[ItemResult]:
        """``core_user_create_users``; a bad user is isolated, every other one is created.

        Usernames must be lowercase. Not idempotent: look users up by ``idnumber`` first.

        Returns:
            One result per user, in input order; ``value`` is ``{"id", "username"}``.
        """
        return self._write("core_user_create_users", "users", users, self._created("username"))

    def update_users(self, users: Sequence[Mapping]) -> list[ItemResult]:
        """``core_user_update_users``; each user must carry its Moodle ``id``.

        Returns:
            One result per user, in input order; Moodle's warnings (``invaliduserid``...) become
            the failed results of the users they name.
        """
        return self._write("core_user_update_users", "users", users, self._updated)

    def get_courses_by_field(self, field: str = "", value: str | int = "") -> list[dict]:
        """``core_course_get_courses_by_field``: all courses, or those whose ``field`` matches.

        Args:
            field: ``id``, ``ids`` (comma-separated), ``shortname``, ``idnumber``, ``category``, or
                ``""`` for every course.
            value: the value to match.
        """
        answer = self.call("core_course_get_courses_by_field", {"field": field, "value": value})
        body = self._expect(dict, "core_course_get_courses_by_field", answer)
        for warning in body.get("warnings") or []:
            logger.debug("tenant %s: get_courses_by_field warning: %s", self.tenant_id, warning)
        return self._expect(list, "core_course_get_courses_by_field", body.get("courses", []))

    def create_courses(self, courses: Sequence[Mapping]) -> list[ItemResult]:
        """``core_course_create_courses``; a bad course (``shortnametaken``...) is isolated.

        Returns:
            One result per course, in input order; ``value`` is ``{"id", "shortname"}``.
        """
        return self._write("core_course_create_courses", "courses", courses, self._created("shortname"))

    def update_courses(self, courses: Sequence[Mapping]) -> list[ItemResult]:
        """``core_course_update_courses``; each course must carry its Moodle ``id``.

        Returns:
            One result per course, in input order; warnings become failed results.
        """
        return self._write("core_course_update_courses", "courses", courses, self._updated)

    def get_categories(self, criteria: Sequence[Mapping] = ()) -> list[dict]:
        """``core_course_get_categories``: categories matching ``criteria`` (``[{"key", "value"}]``),
        or all of them."""
        answer = self.call("core_course_get_categories", {"criteria": list(criteria)})
        return self._expect(list, "core_course_get_categories", answer)

    def create_categories(self, categories: Sequence[Mapping]) -> list[ItemResult]:
        """``core_course_create_categories`` (``name``, ``parent``, ``idnumber``...).

        Returns:
            One result per category, in input order; ``value`` is ``{"id", "name"}``.
        """
        return self._write("core_course_create_categories", "categories", categories, self._created("name"))

    def enrol(self, enrolments: Sequence[Mapping]) -> list[ItemResult]:
        """``enrol_manual_enrol_users`` (``roleid``, ``userid``, ``courseid``, optional ``timestart``,
        ``timeend``, ``suspend``). Enrolling an already enrolled user is a no-op in Moodle.

        Returns:
            One result per enrolment, in input order.
        """
        return self._write("enrol_manual_enrol_users", "enrolments", enrolments, self._applied)

    def unenrol(self, enrolments: Sequence[Mapping]) -> list[ItemResult]:
        """``enrol_manual_unenrol_users`` (``userid``, ``courseid``, optional ``roleid``).

        Returns:
            One result per enrolment, in input order.
        """
        return self._write("enrol_manual_unenrol_users", "enrolments", enrolments, self._applied)

    def iter_enrolled_users(
        self, course_id: int, *, only_active: bool = False, page_size: int = ENROLLED_USERS_PAGE_SIZE
    ) -> Iterator[dict]:
        """``core_enrol_get_enrolled_users``, page by page (``limitfrom``/``limitnumber``).

        Moodle orders the users by id, so a page shorter than ``page_size`` is the last one. A user
        seen on an earlier page (the list shifted while paging) is not yielded twice.

        Args:
            course_id: the Moodle course id.
            only_active: only active enrolments (not suspended, within their dates).
            page_size: users per request.

        Yields:
            Users with their ``roles``.
        """
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        seen: set[Any] = set()
        offset = 0
        while True:
            options = [
                {"name": "onlyactive", "value": only_active},
                {"name": "limitfrom", "value": offset},
                {"name": "limitnumber", "value": page_size},
            ]
            answer = self.call("core_enrol_get_enrolled_users", {"courseid": course_id, "options": options})
            page = self._expect(list, "core_enrol_get_enrolled_users", answer)
            for user in page:
                key = user.get("id") if isinstance(user, dict) else None
                if key is None or key not in seen:
                    seen.add(key)
                    yield user
            logger.debug(
                "tenant %s: course %s enrolled users from %d: %d",
                self.tenant_id,
                course_id,
                offset,
                len(page),
            )
            # Shorter than a page: the end. Longer: the site ignored the limits and sent everyone.
            if len(page) != page_size:
                return
            offset += page_size

    def get_enrolled_users(self, course_id: int, *, only_active: bool = False) -> list[dict]:
        """Every user enrolled in a course (see :meth:`iter_enrolled_users`)."""
        return list(self.iter_enrolled_users(course_id, only_active=only_active))

    def get_grade_items(self, course_id: int, user_id: int = 0) -> list[dict]:
        """``gradereport_user_get_grade_items``: one entry per user with its ``gradeitems``.

        Args:
            course_id: the Moodle course id.
            user_id: one user, or ``0`` for every user of the course.

        Returns:
            The ``usergrades`` list.
        """
        answer = self.call("gradereport_user_get_grade_items", {"courseid": course_id, "userid": user_id})
        body = self._expect(dict, "gradereport_user_get_grade_items", answer)
        return self._expect(list, "gradereport_user_get_grade_items", body.get("usergrades", []))

    def _expect(self, kind: type, function: str, value: Any) -> Any:
        """``value`` if it is a ``kind``; else the answer is not what Moodle documents."""
        if not isinstance(value, kind):
            raise self._error(
                MoodleUnavailable,
                function,
                "invalidresponse",
                f"expected a JSON {'object' if kind is dict else 'array'}, got {type(value).__name__}",
            )
        return value

    # --- assignments and advanced grading (rubrics) -----------------------------------------------
    #
    # Measured on a real Moodle 4.5 (sync_pipelines_tests/fixtures/moodle45/grading/, made by
    # scripts/record_moodle45_grading.py). Capabilities the service account needs, each measured by
    # taking it away: moodle/grade:managegradingforms (saving definitions, reading instances:
    # nopermissions); moodle/course:view + mod/assign:view (reading definitions: without them NO
    # error, the module left out with a warning); those two + mod/assign:grade (saving a grade:
    # requireloginerror / nopermissions); those two + mod/assign:grade or mod/assign:viewgrades
    # (reading grades: without them NO error, no grades and a warning). moodle/course:managegrades
    # does not replace mod/assign:grade. None of these writes is a transaction.

    def grading_definitions(
        self, cmids: Sequence[int], *, areaname: str = "submissions", active_only: bool = False
    ) -> list[dict]:
        """``core_grading_get_definitions``: each course module's grading area and its definitions.

        An area is answered even before any definition exists (``activemethod`` null, ``definitions``
        ``[]``): its ``contextid`` is what :meth:`save_grading_definition` needs. A rubric definition
        carries ``rubric.rubric_criteria``, by ``sortorder``, each with its ``levels`` by score; the
        criterion and level ``id`` are what an update must send back (see
        :meth:`save_grading_definition`) and what :meth:`save_assign_grade` fills.

        Traps: ``active_only=True`` on an area without an active method yet is an error
        (``invalid_method_name``), so the default lists every method's definition. A module the
        account cannot enter or see (no ``moodle/course:view`` or ``mod/assign:view``) is left out of
        the answer with a warning, not an error: a cmid missing from the result means no access. A
        cmid that does not exist fails the whole call (``invalidcoursemodule``).

        Args:
            cmids: course module ids (``cmid`` of :meth:`assignments`).
            areaname: the grading area; ``submissions`` for assignments.
            active_only: only the active method's definition.

        Returns:
            The ``areas``: ``{"cmid", "contextid", "component", "areaname", "activemethod",
            "definitions"}`` each.
        """
        answer = self.call(
            "core_grading_get_definitions",
            {"cmids": list(cmids), "areaname": areaname, "activeonly": active_only},
        )
        body = self._expect(dict, "core_grading_get_definitions", answer)
        for warning in body.get("warnings") or []:
            logger.warning("tenant %s: core_grading_get_definitions warning: %s", self.tenant_id, warning)
        return self._expect(list, "core_grading_get_definitions", body.get("areas", []))

    def save_grading_definition(
        self,
        *,
        cmid: int,
        contextid: int,
        name: str,
        criteria: Sequence[Mapping[str, Any]],
        usercreated: int,
        description: str = "",
        status: int = 20,
        method: str = "rubric",
        component: str = "mod_assign",
        areaname: str = "submissions",
    ) -> None:
        """``core_grading_save_definitions`` of one definition (a rubric) and makes it the area's
        active method. Moodle answers ``null``.

        ``criteria`` are Moodle's ``rubric_criteria``: ``{"id"?, "sortorder", "description",
        "descriptionformat"?, "levels": [{"id"?, "score", "definition", "definitionformat"?}]}``.

        Traps (measured):

        * **Send the ids to update.** Criteria and levels sent with the ids of
          :meth:`grading_definitions` are updated in place. Sent without ids, they are created anew
          and every criterion of the definition not sent is deleted with its levels: learners
          already graded keep fillings that point at criteria and levels that no longer exist
          (:meth:`gradingform_instances` still answers them), and a regrade that sends the old ids is
          accepted as an empty form: the grade becomes -1 (no grade) silently.
        * Criteria without ids get temporary ids numbered by position and number of levels, and
          two of them with different numbers of levels can get the same one: Moodle then keeps only
          the later, silently. Such a list is refused here (``ValueError``) before anything is sent.
        * The definition needs ``timecreated``, ``usercreated``, ``timemodified`` and
          ``usermodified`` or the call is ``invalidparameter``; Moodle sets the times and
          ``usermodified`` itself but stores ``usercreated`` as sent (this method sends the same
          value for both users).
        * Every save resets the rubric's display options (``showremarksstudent``...) to Moodle's
          defaults; a definition whose ``status`` is not 20 (ready) is not used for grading.
        * A criterion sent with an id that is not the definition's (a stale one) is not created.
        * Not a transaction, and a write: a retried call whose first answer was lost saves again
          (harmless with ids; without ids it re-creates the criteria once more).

        Args:
            cmid: the course module (required by the function, though the context decides).
            contextid: the module's context (``contextid`` of :meth:`grading_definitions`).
            name: the definition's name.
            criteria: the rubric's criteria, in order.
            usercreated: the id stored as the definition's creator (the service account's
                ``userid`` from :meth:`site_info`).
            description: the definition's description (HTML).
            status: 20 ready (used for grading), 10 draft.
            method: ``rubric`` (a marking guide, ``guide``, takes ``guide_criteria`` instead).
            component: the area's component.
            areaname: the area.

        Raises:
            ValueError: criteria without ids whose temporary ids would collide.
        """
        collisions = rubric_newid_collisions(criteria)
        if collisions:
            raise ValueError(
                "criteria without ids at positions "
                f"{', '.join(str(c) for c in collisions)} would replace earlier ones in Moodle "
                "(their numbers of levels differ); send them with ids or in separate saves"
            )
        now = int(time.time())
        definition = {
            "method": method,
            "name": name,
            "description": description,
            "descriptionformat": 1,
            "status": status,
            "timecreated": now,
            "usercreated": usercreated,
            "timemodified": now,
            "usermodified": usercreated,
            method: {f"{method}_criteria": list(criteria)},
        }
        area = {
            "cmid": cmid,
            "contextid": contextid,
            "component": component,
            "areaname": areaname,
            "activemethod": method,
            "definitions": [definition],
        }
        self.call("core_grading_save_definitions", {"areas": [area]})

    def gradingform_instances(self, definitionid: int, since: int = 0) -> list[dict]:
        """``core_grading_get_gradingform_instances``: the active fillings of a definition.

        One instance per graded attempt, earlier attempts included (a resubmission has two);
        ``itemid`` is the ``id`` of the attempt's grade in :meth:`assign_grades` (not the user),
        ``raterid`` the grader, ``rawgrade`` null; ``rubric.criteria`` holds ``{"id",
        "criterionid", "levelid", "remark", "remarkformat"}`` per criterion filled (an incomplete
        filling has fewer). Fillings are answered as stored, so after a re-save of the definition
        without ids they name criteria and levels that no longer exist: check them against
        :meth:`grading_definitions`. Instances a teacher's rubric edit marked "needs update" are
        left out until the learner is regraded.

        Args:
            definitionid: the definition's id.
            since: only instances with ``timemodified >= since`` (Unix time).

        Returns:
            The instances, in id order.
        """
        answer = self.call(
            "core_grading_get_gradingform_instances", {"definitionid": definitionid, "since": since}
        )
        body = self._expect(dict, "core_grading_get_gradingform_instances", answer)
        for warning in body.get("warnings") or []:
            logger.warning("tenant %s: gradingform instances warning: %s", self.tenant_id, warning)
        return self._expect(list, "core_grading_get_gradingform_instances", body.get("instances", []))

    def assignments(self, course_ids: Sequence[int]) -> list[dict]:
        """``mod_assign_get_assignments`` with ``includenotenrolledcourses=1``: the assignments of
        the courses (``id`` the assignment id, ``cmid``, ``course``, ``grade``,
        ``attemptreopenmethod``, ``maxattempts``, ``configs``...).

        Without ``includenotenrolledcourses`` Moodle answers no course at all for an account that
        is not enrolled in it (the pipeline's account is enrolled nowhere), with a warning only. A
        course the account cannot enter, or that does not exist, is a warning too; warnings are
        logged.

        Args:
            course_ids: Moodle course ids (at least one: an empty list means "my courses").

        Returns:
            The assignments of all the courses, course by course.
        """
        if not course_ids:
            raise ValueError("course_ids must not be empty")
        out: list[dict] = []
        fn = "mod_assign_get_assignments"
        for body in self._by_id_batches(fn, "courseids", course_ids, {"includenotenrolledcourses": True}):
            for warning in body.get("warnings") or []:
                logger.warning("tenant %s: mod_assign_get_assignments warning: %s", self.tenant_id, warning)
            for course in self._expect(list, "mod_assign_get_assignments", body.get("courses", [])):
                course = self._expect(dict, "mod_assign_get_assignments", course)
                out += self._expect(list, "mod_assign_get_assignments", course.get("assignments", []))
        return out

    def _by_id_batches(
        self, function: str, key: str, ids: Sequence[int], extra: Mapping[str, Any]
    ) -> Iterator[dict]:
        """``function`` over the distinct ``ids`` (as ``key``), as many ids a request as the field
        budget holds beside the ``extra`` parameters (one field each): each answer's body."""
        unique = list(dict.fromkeys(int(i) for i in ids))
        per_request = self.field_budget - len(extra)
        for start in range(0, len(unique), per_request):
            answer = self.call(function, {key: unique[start : start + per_request], **extra})
            yield self._expect(dict, function, answer)

    def assign_grades(self, assignment_ids: Sequence[int], since: int = 0) -> list[dict]:
        """``mod_assign_get_grades``: ``[{"assignmentid", "grades": [{"id", "userid",
        "attemptnumber", "timecreated", "timemodified", "grader", "grade"}]}]``.

        ``grade`` is a string with 5 decimals; ``"-1.00000"`` means no grade (a plain grade sent
        to a rubric assignment, or a filling Moodle took as empty). Only each learner's latest
        attempt is answered: right after a reopen (``addattempt``) the learner has no grade for the
        new attempt and is left out entirely until it is graded. On a rubric assignment the grade
        is the share of rubric points, not a BTEC grade; the filling is in
        :meth:`gradingform_instances` (``itemid`` = this ``id``). An assignment without grades is
        a warning ``3``, one the account cannot read (no ``mod/assign:grade`` or
        ``mod/assign:viewgrades``) a warning ``1`` and no error: warnings ``1`` are logged.

        Every assignment of a school in one request as long as the ids fit the field budget (then
        as many requests as they need): this is the pipeline's steady-state grade read.

        Args:
            assignment_ids: assignment ids (``id`` of :meth:`assignments`, not the cmid).
            since: only grades with ``timemodified >= since`` (Unix time, the site's clock;
                Moodle 4.5 ``mod/assign/externallib.php``: ``ag.timemodified >= :since``).
        """
        out: list[dict] = []
        for body in self._by_id_batches(
            "mod_assign_get_grades", "assignmentids", assignment_ids, {"since": since}
        ):
            for warning in body.get("warnings") or []:
                if isinstance(warning, dict) and str(warning.get("warningcode")) == "3":
                    continue  # no grades found: normal
                logger.warning("tenant %s: mod_assign_get_grades warning: %s", self.tenant_id, warning)
            out += self._expect(list, "mod_assign_get_grades", body.get("assignments", []))
        return out

    def save_assign_grade(
        self,
        assignment_id: int,
        user_id: int,
        *,
        rubric: Mapping[int, int | Mapping[str, Any]] | None = None,
        grade: float = 0.0,
        comment: str = "",
        comment_format: int = 1,
        attemptnumber: int = -1,
        addattempt: bool = False,
        workflowstate: str = "",
        applytoall: bool = False,
    ) -> None:
        """``mod_assign_save_grade``: grade one learner, with a rubric filling or a plain grade, and
        the feedback comment. Moodle answers ``null``.

        Traps (measured):

        * With a rubric, Moodle computes the grade: the share of rubric points (4 of 5 criteria at
          1 point -> 80 of 100), which the gradebook gets; ``grade`` is ignored. A plain ``grade``
          on a rubric assignment (``rubric=None``) is dropped: the grade becomes -1 (no grade),
          even for a learner graded before, whose filling is kept.
        * An incomplete filling (some criteria left out) is accepted, no error, and scores the
          criteria sent. A filling that names none of the definition's criteria (stale ids after
          a re-save without ids) is taken as empty: grade -1, silently.
        * ``plugindata.assignfeedbackcomments_editor`` is always sent (``comment``): without it,
          for a learner who already has a comment, Moodle fails with ``dmlwriteexception`` AFTER
          saving the rubric filling (the grade is not updated). The comment sent replaces the
          stored one ("" clears it).
        * ``addattempt=True`` (assignment reopened manually) opens a new attempt: until it is
          graded, :meth:`assign_grades` leaves the learner out; grade it with ``attemptnumber`` =
          the previous attempt + 1 (or -1, the latest). Each save makes a new grading instance.
        * No check of ``user_id``: an unknown user gets a grade row. Not a transaction, and a
          write: a retried save whose first answer was lost saves again (the same values).

        Args:
            assignment_id: the assignment's id (not the cmid).
            user_id: the learner.
            rubric: criterion id -> level id, or -> ``{"levelid", "remark"}``; ``None`` for a
                plain grade.
            grade: the plain grade (ignored with a rubric).
            comment: the feedback comment (HTML by default).
            comment_format: its format (1 HTML).
            attemptnumber: the attempt (0-based), -1 for the latest.
            addattempt: allow another attempt (attempts reopened manually).
            workflowstate: the marking-workflow state ("" without marking workflow).
            applytoall: apply to the whole group (team submissions).
        """
        params: dict[str, Any] = {
            "assignmentid": assignment_id,
            "userid": user_id,
            "grade": grade,
            "attemptnumber": attemptnumber,
            "addattempt": addattempt,
            "workflowstate": workflowstate,
            "applytoall": applytoall,
            "plugindata": {"assignfeedbackcomments_editor": {"text": comment, "format": comment_format}},
        }
        if rubric is not None:
            criteria = []
            for criterion_id, chosen in rubric.items():
                filling = dict(chosen) if isinstance(chosen, Mapping) else {"levelid": chosen}
                filling = {"criterionid": criterion_id, "remark": "", "remarkformat": 1} | filling
                criteria.append({"criterionid": criterion_id, "fillings": [filling]})
            params["advancedgradingdata"] = {"rubric": {"criteria": criteria}}
        self.call("mod_assign_save_grade", params)


def rubric_newid_collisions(criteria: Sequence[Mapping[str, Any]]) -> list[int]:
    """Positions (0-based) of criteria that Moodle would silently drop: saved without an ``id``, a
    criterion gets the temporary id ``NEWID<n>``, ``n`` = its position (from 1) plus its number of
    levels (``core_grading_external::set_new_ids()``), and a later criterion with the same one
    replaces it.

    Returns:
        The positions of the criteria replaced by a later one; ``[]`` when none is.
    """
    seen: dict[int, int] = {}
    lost: list[int] = []
    for position, criterion in enumerate(criteria):
        if criterion.get("id") is not None:
            continue
        newid = position + 1 + len(criterion.get("levels") or [])
        if newid in seen:
            lost.append(seen[newid])
        seen[newid] = position
    return sorted(lost)


def _failed(index: int, error: MoodleError) -> ItemResult:
    message = error.message
    if error.debuginfo:
        message = f"{message} [{error.debuginfo}]" if message else error.debuginfo
    return ItemResult(index=index, ok=False, errorcode=error.errorcode, message=message)


__all__ = [
    "AUTH_ERRORCODES",
    "ItemResult",
    "MoodleAuthError",
    "MoodleClient",
    "MoodleError",
    "MoodleRecordError",
    "MoodleStats",
    "MoodleUnavailable",
    "php_form",
    "rubric_newid_collisions",
]
