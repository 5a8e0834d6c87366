"""A Zoho CRM REST API v8 client, written to Zoho's documented behaviour.

What it does, and the Zoho rule behind each choice. Sources: Zoho's OpenAPI spec for v8
(github.com/zoho/crm-oas, ``v8.0/record.json``: the parameters and ``Info`` keys of each
endpoint) and Zoho's developer docs, ``https://www.zoho.com/crm/developer/docs/api/v7/`` pages
``get-records.html``, ``get-deleted-records.html``, ``modules-api.html``, ``module-meta.html``,
``field-meta.html``, ``get-org-data.html``, ``api-limits.html``, ``refresh.html`` (the v7 text was
read; v8 keeps the page names, and the v8 spec the same parameters).

* **OAuth.** ``POST {accounts_url}/oauth/v2/token`` with the refresh token. The answer names the
  ``api_domain`` to call (Zoho: "call the api_domain it returns"); it wins over the configured one.
  The access token lives an hour (``expires_in``) and the token endpoint throttles refreshes (10
  in 10 minutes per refresh token, then ``{"error": "Access Denied"}`` "for the rest of the ten
  minutes"; Zoho Accounts "OAuth token limits"), so the token is cached until shortly before it
  expires, in a store every process of the machine shares (:mod:`sync_pipelines.zoho.tokens`). A
  throttled refresh is not retried: the refusal is recorded in the store as ``throttled_until``, no
  process asks again before then, and a client waits for it only within ``token_wait_seconds``.
  Zoho answers a refused refresh with **HTTP 200** and ``{"error": "invalid_code"}`` (refresh
  token wrong or revoked) or ``{"error": "invalid_client"}`` (client id/secret wrong, or the wrong
  data centre), so the body is checked, not the status. An API call answered 401 ``INVALID_TOKEN``
  refreshes once, unless another process already replaced the token that failed, and retries
  once. The answer's ``scope`` (space-separated, e.g. ``"ZohoCRM.modules.ALL
  ZohoCRM.settings.ALL"``) is kept as :attr:`ZohoClient.granted_scopes`.
* **Reading records** (``GET /{module}``, get-records). ``fields`` is required and takes at most 50
  API names, so wider reads are split and merged by ``id``. Paging:

  - page 1 is asked with ``page=1``;
  - after it, ``page_token=<info.next_page_token>`` is sent whenever Zoho gave one. Zoho hands out
    that token from the first answer on ("This param takes the value from the key next_page_token
    in the response of the first Get Records call"). ``page=N`` is positional (Zoho, on
    get-deleted-records: page and per_page "fetch records according to their position"), so a record deleted while the read pages shifts every later
    page by one and a live record is never returned; the token is a cursor that continues the
    read where the previous page ended, so it is followed as soon as Zoho gives one (Zoho does not
    spell out the cursor's behaviour under deletion; the client relies on it being a cursor, not a
    disguised offset). A token is bound to the other parameters of the read
    (``TOKEN_BOUND_DATA_MISMATCH``) and expires after 24 hours (``EXPIRED_VALUE``), so every page
    of one read carries the same ``fields``, ``per_page`` and sort;
  - when Zoho gives no token, ``page=N+1`` is asked only while ``(N+1) * per_page <= 2000``
    ("You can use the page param to fetch up to 2000 records without page_token";
    ``DISCRETE_PAGINATION_LIMIT_EXCEEDED`` past that); past it the read raises
    ``MISSING_PAGE_TOKEN`` rather than stop short;
  - ``page`` and ``page_token`` are never sent together (``AMBIGUITY_DURING_PROCESSING``).

  ``ids=a,b,c`` reads given records; ids Zoho does not hold are absent from the answer. At most 100
  ids go in one call, a longer list is split: 100 is the cap Zoho documents for a list of record
  ids (API 1.0 ``getRecordById``, ``idlist``: "You can specify up to 100 IDs"); the v2-v8 pages
  name no number for ``ids``, so the old cap is kept as the safe one. HTTP 204 means no records;
  304 means nothing changed since ``If-Modified-Since``.
* **Deleted records** (``GET /{module}/deleted``, get-deleted-records). Pages with ``page`` and
  ``per_page`` (at most 200) only: the endpoint takes no ``page_token`` and its ``info`` carries no
  ``next_page_token`` (the v8 spec lists only ``type``, ``page``, ``per_page`` and
  ``If-Modified-Since``). Zoho documents no record cap for it, but it is positional paging like
  get-records' ``page``, so :meth:`ZohoClient.read_deleted` reads at most ``limit`` entries
  (default 2,000, get-records' discrete-paging limit, 10 calls) and then reports the read
  incomplete instead of raising; a ``DISCRETE_PAGINATION_LIMIT_EXCEEDED`` refusal of a later page
  is reported the same way. Entries stay listable 60 days after deletion (recycle bin) or 120 days
  (permanent).
* **Org metadata.** ``GET /settings/modules`` (``modules``), ``GET /settings/modules/{api_name}``
  (an unknown name is HTTP 400 ``INVALID_MODULE``), ``GET /settings/fields?module=`` (``fields``)
  and ``GET /org`` (``org[0]``).
* **Writing.** Upsert takes at most 100 records a call and answers one result per record, in order,
  with HTTP 200 (all succeeded), 207 (mixed) or 400 (all failed).
* **Failures.** 429 (Zoho sends no ``Retry-After``), 5xx and dropped connections are retried with
  exponential backoff and full jitter (:mod:`sync_pipelines.http`), except that the token
  endpoint's throttle is waited out as said above; every other error is raised at
  once as a :class:`ZohoError` carrying Zoho's ``code``, ``message`` and ``details``. Nothing is
  swallowed: a failed read raises, it never returns an empty list.
* **Bulk Read** (``/crm/bulk/v8/read``; Zoho CRM v8 "Bulk Read APIs - An Overview",
  ``.../api/v8/bulk-read/overview.html``, ``create-job.html``, ``job-details.html``,
  ``download-result.html``, and the v8 OpenAPI spec ``zoho/crm-oas`` ``v8.0/bulk_read``). A job is
  created with ``POST /read`` and ``{"query": {"module": {"api_name"}, "fields": [...], "page": N},
  "file_type": "csv"}`` (answer 201, ``data[0].details``: ``id``, ``state`` ``ADDED``); polled with
  ``GET /read/{job_id}`` (``data[0].state``: ``ADDED``, ``QUEUED``, ``IN PROGRESS``, ``COMPLETED``,
  ``FAILURE``; when completed ``result``: ``page``, ``per_page`` 200,000, ``count``,
  ``download_url``, ``more_records``) until it is done; its result is a ZIP holding one CSV
  (``GET /read/{job_id}/result``, ``application/zip``): a header row of field API names with an
  ``id`` column "added by default", date-times in ISO 8601, at most 200,000 records. ``page=N``
  exports records ``(N-1)*200,000+1`` to ``N*200,000`` ("If you want to fetch the records from the
  range 200,001 to 400,000, then mention the value as '2'"), so every further page is a new job.
  Only 10 downloads a minute are allowed (HTTP 429 past that, retried like any 429). The scope is
  ``ZohoCRM.bulk.READ`` with the module's own. The poll waits with a growing interval
  (``bulk_poll_seconds``, times 1.5 a poll, at most 60 s: Zoho names no interval) and gives up
  after ``bulk_timeout_seconds`` of waiting with ``BULK_READ_TIMEOUT``; a job in ``FAILURE`` is
  raised as ``BULK_READ_FAILED``. The CSV is parsed row by row from the downloaded ZIP (one page's
  compressed bytes are held, never its records); turning its text into the JSON shape of a list
  read is :mod:`sync_pipelines.zoho.bulk`'s job.
* **Accounting.** Every HTTP attempt is counted in :attr:`ZohoClient.stats`, with the API credits
  Zoho charges for it (estimated from Zoho's published price list: one credit a call unless listed
  otherwise, so one a page, one an ``ids`` call, one a metadata call; a Bulk Read job 50, its
  status and download one each, see :data:`BULK_READ_JOB_CREDITS`).

Secrets (client secret, refresh token, access tokens) never appear in exceptions, logs or reprs.
"""

import csv
import io
import logging
import math
import random
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

from sync_pipelines.http import RETRIABLE_STATUSES, RetryingSession, RetryPolicy, TransportError
from sync_pipelines.zoho.tokens import (
    HeldSlot,
    TokenCache,
    TokenLockTimeout,
    TokenRecord,
    TokenStore,
)

logger = logging.getLogger(__name__)

#: Zoho's cap on API names in one ``fields`` parameter.
MAX_FIELDS_PER_REQUEST = 50
#: Zoho's cap on ``per_page``.
MAX_PER_PAGE = 200
#: Records reachable with ``page``; beyond this Zoho requires ``page_token``.
DISCRETE_PAGINATION_LIMIT = 2000
#: Zoho's cap on record ids in one ``ids`` parameter.
MAX_IDS_PER_REQUEST = 100
#: Zoho's cap on records in one upsert call.
MAX_UPSERT_BATCH = 100
#: Upsert costs one credit per this many records (rounded up).
RECORDS_PER_UPSERT_CREDIT = 10
#: Never refresh the token later than this many seconds before it expires.
TOKEN_REFRESH_MARGIN = 300.0
#: How long the token endpoint is left alone after it refused a refresh ("Access Denied", or 429).
#: Zoho: 10 access tokens per refresh token in 10 minutes, then "blocked for the rest of the ten
#: minutes" (Zoho Accounts "OAuth token limits" and "Refresh access token"; CRM v8 "Token
#: Validity"). When the 10 minutes began is not said, so the whole 600 s is assumed.
TOKEN_THROTTLE_SECONDS = 600.0
#: How long a token request may wait for the token endpoint's throttle to pass before it raises.
TOKEN_WAIT_SECONDS = 120.0
#: Statuses of the token endpoint retried with backoff: not 429, a throttle that is waited out.
_TOKEN_RETRIABLE_STATUSES = RETRIABLE_STATUSES - {429}
#: ``type`` values the deleted-records endpoint accepts.
DELETED_TYPES = frozenset({"all", "recycle", "permanent"})

#: Records one Bulk Read job exports: ``page`` N is records ``(N-1)*200,000+1`` to ``N*200,000``
#: (v8 create-job: "the first 200,000 records matching your query will get exported").
BULK_READ_PAGE_SIZE = 200_000
#: Credits charged for creating one Bulk Read job. The project's Zoho reference
#: (``/work/shared/reference/ZOHO_CRM_API.md``, from the v8 api-limits page) gives "bulk read 50";
#: the per-record-count table the brief mentions could not be read from the stored pages, so this
#: is the one number to change if Zoho charges by the records a job exports.
BULK_READ_JOB_CREDITS = 50
#: Credits for a job's status and its download: one a call, Zoho's default for a call not listed
#: otherwise (guess: the api-limits page lists no separate price for them).
BULK_READ_CALL_CREDITS = 1
#: Job states (v8 create-job and job-details: ADDED, QUEUED, IN PROGRESS, COMPLETED, FAILURE).
BULK_COMPLETED = "COMPLETED"
BULK_FAILURE = "FAILURE"
#: The first wait before a job's status is asked, and the longest wait between two polls.
BULK_POLL_SECONDS = 5.0
BULK_POLL_MAX_SECONDS = 60.0
#: How long a client waits for one job before it raises ``BULK_READ_TIMEOUT``.
BULK_TIMEOUT_SECONDS = 1800.0

_MODIFIED_TIME = "Modified_Time"
_COQL_LIMIT = re.compile(r"\blimit\s+(\d+)(?:\s*,\s*(\d+))?", re.IGNORECASE)


# --- errors ---------------------------------------------------------------------------------------


class ZohoError(Exception):
    """Zoho CRM refused or failed a request.

    ``str()`` names the tenant, the HTTP status, Zoho's code and message, never a secret.

    Attributes:
        tenant_id: the tenant whose Zoho org was called.
        status: HTTP status of the answer, or ``None`` when no answer came (connection failure).
        code: Zoho's error code (``INVALID_MODULE``, ``invalid_client``...), or one of this client's
            own (``CONNECTION_ERROR``, ``INVALID_RESPONSE``, ``MISSING_PAGE_TOKEN``...).
        message: Zoho's message.
        details: Zoho's ``details`` object (``{}`` if none).
        endpoint: which kind of call failed (``list``, ``upsert``, ``token``...), if known.
    """

    def __init__(
        self,
        tenant_id: str,
        status: int | None,
        code: str,
        message: str,
        details: dict | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.status = status
        self.code = code
        self.message = message
        self.details = details if details is not None else {}
        self.endpoint = endpoint
        # All constructor arguments in args, so the error pickles (Dagster ships errors across
        # processes) and rebuilds as the same subclass.
        super().__init__(tenant_id, status, code, message, self.details, endpoint)

    def __str__(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no HTTP answer"
        where = f" ({self.endpoint})" if self.endpoint else ""
        return f"Zoho CRM, tenant {self.tenant_id!r}{where}: {status} {self.code}: {self.message}"


class ZohoAuthError(ZohoError):
    """Zoho refused the credentials: ``invalid_client``, ``invalid_code``, ``OAUTH_SCOPE_MISMATCH``,
    ``NO_PERMISSION``, or ``INVALID_TOKEN`` right after a refresh. Fatal: retrying cannot help."""


class ZohoRateLimitError(ZohoError):
    """Zoho kept throttling: HTTP 429 after all retries, or the token endpoint's "Access Denied"
    for longer than the client waits (``details["throttled_until"]`` then says, in ISO 8601 UTC,
    when the endpoint may be asked again)."""


# --- results and accounting -----------------------------------------------------------------------


@dataclass
class CallStats:
    """What a client has cost: every HTTP attempt, and the API credits Zoho charges for them.

    Attributes:
        calls: HTTP attempts, retries and token requests included.
        credits: estimated API credits consumed (Zoho's rolling 24-hour budget). Throttled (429),
            unauthenticated (401) and failed (5xx) answers, and token requests, are not charged.
        token_refreshes: access tokens obtained.
        retries: attempts that repeated an earlier one (backoff retries and the re-call after a
            refresh).
        by_endpoint: attempts per kind of call: ``list``, ``ids``, ``deleted``, ``get``, ``count``,
            ``settings``, ``org``, ``upsert``, ``update``, ``coql``, ``token``, ``bulk_create``,
            ``bulk_status``, ``bulk_download``.
    """

    calls: int = 0
    credits: int = 0
    token_refreshes: int = 0
    retries: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def record_attempt(self, endpoint: str, *, retry: bool) -> None:
        """Count one HTTP attempt against ``endpoint``."""
        with self._lock:
            self.calls += 1
            self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1
            if retry:
                self.retries += 1

    def add_credits(self, credits: int) -> None:
        """Count credits charged for one answered call."""
        with self._lock:
            self.credits += credits

    def add_retry(self) -> None:
        """Count a retry decided above the HTTP layer (the re-call after a token refresh)."""
        with self._lock:
            self.retries += 1

    def add_token_refresh(self) -> None:
        """Count one access token obtained."""
        with self._lock:
            self.token_refreshes += 1

    def as_metadata(self) -> dict[str, int]:
        """The counters as flat Dagster metadata, e.g. ``{"zoho_calls": 12, "zoho_calls.list": 9}``."""
        with self._lock:
            meta = {
                "zoho_calls": self.calls,
                "zoho_credits": self.credits,
                "zoho_token_refreshes": self.token_refreshes,
                "zoho_retries": self.retries,
            }
            for endpoint, count in sorted(self.by_endpoint.items()):
                meta[f"zoho_calls.{endpoint}"] = count
            return meta


@dataclass(frozen=True)
class UpsertResult:
    """Zoho's answer for one record of an upsert.

    Attributes:
        index: position of the record in the ``records`` passed to :meth:`ZohoClient.upsert`.
        status: ``"success"`` or ``"error"``.
        code: Zoho's code: ``SUCCESS``, ``INVALID_DATA``, ``DUPLICATE_DATA``, ``MANDATORY_NOT_FOUND``...
        action: ``"insert"`` or ``"update"`` on success, else ``None``.
        record_id: the Zoho id of the inserted or updated record on success, else ``None``.
        message: Zoho's message.
        details: Zoho's ``details`` (on error: ``api_name``, ``json_path``, ``expected_data_type``...).
    """

    index: int
    status: str
    code: str
    action: str | None
    record_id: str | None
    message: str
    details: dict

    @property
    def ok(self) -> bool:
        """Whether Zoho accepted the record."""
        return self.status == "success"


@dataclass(frozen=True)
class DeletedRead:
    """What :meth:`ZohoClient.read_deleted` read.

    Attributes:
        entries: ``{"id", "display_name", "type", "deleted_time", "deleted_by", ...}`` dicts in
            Zoho's order, each id once (a deletion while the read pages shifts ``page`` positions,
            so the same entry can come twice).
        complete: ``True`` when Zoho said there are no more entries. ``False`` when the read
            stopped at its ``limit`` (or Zoho refused the next page) while Zoho still had more: the
            entries are then only part of the deletions, and absence from them proves nothing.
    """

    entries: list[dict]
    complete: bool


# --- helpers --------------------------------------------------------------------------------------


def _json(response: requests.Response) -> Any:
    """The response body as JSON, or ``None`` if it is empty or not JSON."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _utc(moment: float) -> str:
    """Unix seconds as ISO 8601 UTC, for messages."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _if_modified_since(value: datetime | None, argument: str) -> dict[str, str]:
    """The ``If-Modified-Since`` header Zoho expects: ISO 8601 with the offset."""
    if value is None:
        return {}
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{argument} must be timezone-aware, got naive {value!r}")
    # Seconds precision: truncating makes the (inclusive) filter wider, never narrower.
    return {"If-Modified-Since": value.isoformat(timespec="seconds")}


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _field_chunks(names: list[str]) -> list[list[str]]:
    """``names`` in requests of at most 50 fields; ``Modified_Time``, when asked for, in every one
    (so a record edited between chunks can be told apart)."""
    if _MODIFIED_TIME in names:
        others = [n for n in names if n != _MODIFIED_TIME]
        return [[*c, _MODIFIED_TIME] for c in _chunks(others, MAX_FIELDS_PER_REQUEST - 1)]
    return _chunks(names, MAX_FIELDS_PER_REQUEST)


def _coql_credits(query: str) -> int:
    """Credits Zoho charges for a COQL call, from the query's LIMIT (200 when none is given)."""
    matches = _COQL_LIMIT.findall(query)
    limit = 200
    if matches:
        first, second = matches[-1]
        limit = int(second or first)
    if limit <= 200:
        return 1
    if limit <= 1000:
        return 2
    return 3


def _charged(status: int) -> bool:
    """Whether Zoho charges credits for an answer with this status (an estimate: throttled,
    unauthenticated and failed calls are not charged)."""
    return status < 500 and status not in (401, 429)


def _segment(value: str) -> str:
    """A module name or record id, quoted for use as one URL path segment."""
    if not value:
        raise ValueError("module names and record ids must not be empty")
    return quote(value, safe="")


# --- the client -----------------------------------------------------------------------------------


class ZohoClient:
    """One tenant's Zoho CRM org, over REST API v8.

    Args:
        tenant_id: the tenant this org belongs to (named in every error).
        accounts_url: the data centre's accounts server, e.g. ``https://accounts.zoho.eu``.
        client_id: OAuth client id.
        client_secret: OAuth client secret.
        refresh_token: OAuth refresh token.
        api_domain: API server to use when the token answer names none, e.g.
            ``https://www.zohoapis.eu``. The token answer's ``api_domain`` wins.
        api_version: the API version in URLs.
        timeout: ``(connect, read)`` timeout in seconds for every request.
        max_retries: retries of a retriable failure (429, 5xx, connection error; on the token
            endpoint 5xx and connection errors only).
        backoff_base: ceiling of the first backoff, in seconds; doubles every retry.
        backoff_max: largest backoff, in seconds.
        session: a ``requests.Session`` to use (one is created if omitted).
        sleep: called with every backoff delay and every wait for the token endpoint's throttle
            (tests pass a recorder).
        clock: wall clock, Unix seconds, deciding when a token is stale and when a throttle ends;
            wall time because the token store is shared between processes (tests pass a fake).
        rng: random source for the backoff jitter (tests pass a seeded one).
        token_cache: where access tokens are kept: a
            :class:`~sync_pipelines.zoho.tokens.FileTokenStore` shares them between processes, a
            :class:`~sync_pipelines.zoho.tokens.TokenCache` between the clients of one process.
            Clients given the same store and the same credentials share one token. Without one,
            the client keeps its own.
        token_throttle_seconds: how long the token endpoint is left alone after it refused a
            refresh as throttled (Zoho's window: 600 s).
        token_wait_seconds: how long a token request may wait for such a throttle to pass; a
            throttle ending later raises :class:`ZohoRateLimitError` at once.
        bulk_read_threshold: a full read of a module holding more records than this goes through
            Bulk Read (:func:`sync_pipelines.zoho.bulk.read_full`); ``None`` (the default for a
            client built by hand) never uses it. The resource passes the tenant's setting.
        bulk_poll_seconds: the first wait before a Bulk Read job's status is asked; each further
            wait is 1.5 times the last, at most 60 s.
        bulk_timeout_seconds: how long the polls of one job may wait in all before the read
            raises ``BULK_READ_TIMEOUT``.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        accounts_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        api_domain: str | None = None,
        api_version: str = "v8",
        timeout: tuple[float, float] = (5.0, 60.0),
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        token_cache: TokenStore | None = None,
        token_throttle_seconds: float = TOKEN_THROTTLE_SECONDS,
        token_wait_seconds: float = TOKEN_WAIT_SECONDS,
        bulk_read_threshold: int | None = None,
        bulk_poll_seconds: float = BULK_POLL_SECONDS,
        bulk_timeout_seconds: float = BULK_TIMEOUT_SECONDS,
    ) -> None:
        if not tenant_id:
            raise ValueError("tenant_id is required")
        if not accounts_url:
            raise ValueError("accounts_url is required")
        self.tenant_id = tenant_id
        self.accounts_url = accounts_url.rstrip("/")
        self.api_version = api_version
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._configured_api_domain = api_domain.rstrip("/") if api_domain else None
        if token_throttle_seconds < 0 or token_wait_seconds < 0:
            raise ValueError("token_throttle_seconds and token_wait_seconds must be >= 0")
        rng = rng or random.Random()
        self._http = RetryingSession(
            timeout=timeout,
            policy=RetryPolicy(max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max),
            session=session,
            sleep=sleep,
            rng=rng,
        )
        # The token endpoint's own session (sharing the connection pool): 5xx and dropped
        # connections are retried, a throttle never is. Zoho counts refused requests against the
        # caller, and retrying into a 10-minute block only prolongs it.
        self._token_http = RetryingSession(
            timeout=timeout,
            policy=RetryPolicy(
                max_retries=max_retries,
                backoff_base=backoff_base,
                backoff_max=backoff_max,
                statuses=_TOKEN_RETRIABLE_STATUSES,
            ),
            session=self._http.session,
            sleep=sleep,
            rng=rng,
        )
        self._clock = clock
        self._sleep = sleep
        self._token_throttle = float(token_throttle_seconds)
        self._token_wait = float(token_wait_seconds)
        self._slot = (token_cache if token_cache is not None else TokenCache()).slot(
            self.accounts_url, client_id, client_secret, refresh_token
        )
        # Every secret this client has held, scrubbed from any text it puts in an error.
        self._secrets: set[str] = {s for s in (client_secret, refresh_token) if s}
        self.stats = CallStats()
        self._observers: list[Callable[[str, int], None]] = []
        if bulk_read_threshold is not None and bulk_read_threshold < 0:
            raise ValueError("bulk_read_threshold must be >= 0 or None")
        if bulk_poll_seconds < 0 or bulk_timeout_seconds < 0:
            raise ValueError("bulk_poll_seconds and bulk_timeout_seconds must be >= 0")
        self.bulk_read_threshold = bulk_read_threshold
        self.bulk_poll_seconds = float(bulk_poll_seconds)
        self.bulk_timeout_seconds = float(bulk_timeout_seconds)

    def __repr__(self) -> str:
        return (
            f"ZohoClient(tenant_id={self.tenant_id!r}, accounts_url={self.accounts_url!r}, "
            f"api_domain={self.api_domain!r}, api_version={self.api_version!r})"
        )

    def close(self) -> None:
        """Close the HTTP session if the client created it."""
        self._http.close()

    def __enter__(self) -> "ZohoClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def api_domain(self) -> str | None:
        """The API server in use: the token answer's, else the configured one."""
        return self._slot.cached().api_domain or self._configured_api_domain

    @property
    def granted_scopes(self) -> tuple[str, ...]:
        """The OAuth scopes the last token answer that named any granted, e.g.
        ``("ZohoCRM.modules.ALL", "ZohoCRM.settings.ALL")``; ``()`` until then."""
        return self._slot.cached().scopes

    # --- progress ---------------------------------------------------------------------------------

    @contextmanager
    def observe(self, callback: Callable[[str, int], None]) -> Iterator[None]:
        """Call ``callback(kind, records)`` for every answered page, ``ids`` batch, single-record
        read and write batch while the block runs (``kind`` is ``list``, ``ids``, ``get``,
        ``deleted``, ``upsert``, ``update`` or ``bulk``, a Bulk Read download; ``records`` the
        records it carried). For progress
        lines (:class:`sync_pipelines.progress.Progress`): nothing is counted twice, nothing
        is sent."""
        self._observers.append(callback)
        try:
            yield
        finally:
            self._observers.remove(callback)

    def _observed(self, kind: str, records: int) -> None:
        for callback in list(self._observers):
            callback(kind, records)

    # --- reading ----------------------------------------------------------------------------------

    def iter_records(
        self,
        module: str,
        fields: Sequence[str],
        *,
        modified_since: datetime | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        per_page: int = MAX_PER_PAGE,
    ) -> Iterator[dict]:
        """Every record of ``module`` (modified since ``modified_since``, if given).

        Asks page 1 with ``page=1``, then follows ``info.next_page_token`` whenever Zoho gives one
        (a cursor: a record deleted mid-read does not shift later pages), falling back to ``page``
        only while ``page * per_page <= 2000`` when it gives none; until ``info.more_records`` is
        false. One page costs one credit.

        More than 50 fields cannot go in one request. They are then read in chunks of at most 50,
        each chunk a full paged read, and merged by ``id``. A record missing from any chunk is left
        out of this read: it was created (or left the ``modified_since`` window) while the chunks
        were being read, and the next read picks it up. When ``Modified_Time`` is among the fields
        it is requested in every chunk, and a record whose ``Modified_Time`` differs between chunks
        (edited mid-read, so its chunks would mix two versions) is left out likewise. For the next
        read to pick these records up, its ``modified_since`` must not be later than the moment
        this read started. A chunked read holds the module in memory until its last chunk is done.

        Args:
            module: module API name, e.g. ``BTEC_Students``.
            fields: field API names to read (``id`` always comes back).
            modified_since: only records modified at or after this time; must be timezone-aware.
            sort_by: ``id``, ``Created_Time`` or ``Modified_Time``.
            sort_order: ``asc`` or ``desc``.
            per_page: records per page, 1 to 200.

        Returns:
            A lazy iterator over the records as Zoho returns them (lookups as ``{"name", "id"}``
            dicts). Nothing is requested until it is iterated.

        Raises:
            ValueError: at call time, for no fields, a bad ``per_page`` or a naive
                ``modified_since``.
            ZohoError: while iterating, when Zoho refuses or fails a request.
        """
        # Arguments are checked here, eagerly; the generator below only runs when iterated.
        names = list(dict.fromkeys(f for f in fields if f))
        if not names:
            raise ValueError("fields is required: Zoho returns nothing without it")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, got {per_page}")
        headers = _if_modified_since(modified_since, "modified_since")
        params: dict[str, Any] = {}
        if sort_by:
            params["sort_by"] = sort_by
        if sort_order:
            params["sort_order"] = sort_order
        path = f"/{_segment(module)}"

        def read(chunk: list[str]) -> Iterator[dict]:
            return self._paged("list", path, {**params, "fields": ",".join(chunk)}, headers, per_page)

        if len(names) <= MAX_FIELDS_PER_REQUEST:
            return read(names)
        return self._read_chunked(module, names, read)

    def _read_chunked(
        self, module: str, names: list[str], read: Callable[[list[str]], Iterator[dict]]
    ) -> Iterator[dict]:
        """Read ``names`` in chunks of at most 50 and merge the chunks by ``id``."""
        merged, inconsistent = self._merge_chunks(names, read)
        for record_id in inconsistent:
            del merged[record_id]
        logger.debug(
            "%s: merged %d chunks, %d records, %d changed mid-read",
            module,
            len(_field_chunks(names)),
            len(merged),
            len(inconsistent),
        )
        yield from merged.values()

    @staticmethod
    def _merge_chunks(
        names: list[str], read: Callable[[list[str]], Iterator[dict]]
    ) -> tuple[dict[str, dict], set[str]]:
        """Read every field chunk of ``names`` and merge the records by ``id``.

        Returns the records found in every chunk (in the first chunk's order), and the ids among
        them whose ``Modified_Time`` differed between chunks (only checked when ``Modified_Time``
        is in ``names``; such records mix two versions). A record missing from a later chunk was
        deleted, or left the read's filter, meanwhile and is left out; one found only in a later
        chunk was created meanwhile and is left out too.
        """
        check_modified = _MODIFIED_TIME in names
        chunks = _field_chunks(names)
        merged: dict[str, dict] = {}
        for record in read(chunks[0]):
            merged[str(record["id"])] = dict(record)
        inconsistent: set[str] = set()
        for chunk in chunks[1:]:
            seen: set[str] = set()
            for record in read(chunk):
                record_id = str(record["id"])
                target = merged.get(record_id)
                if target is None:
                    continue  # created after the first chunk was read: next read
                seen.add(record_id)
                if check_modified and record.get(_MODIFIED_TIME) != target.get(_MODIFIED_TIME):
                    inconsistent.add(record_id)
                target.update(record)
            for record_id in merged.keys() - seen:
                del merged[record_id]
                inconsistent.discard(record_id)
        return merged, inconsistent

    def get_records_by_ids(
        self, module: str, ids: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[dict]:
        """The records of ``module`` with these ids that Zoho holds (``GET /{module}?ids=...``).

        Ids Zoho does not hold (deleted, or never there) are simply absent from the answer; Zoho
        answering 204 means it holds none of them. Used to confirm deletions and to check whether
        lookup targets exist.

        At most 100 ids go in one call (a longer list is split) and at most 50 fields (a wider list
        is read in chunks and merged by ``id``, as :meth:`iter_records` does: ``Modified_Time``
        rides in every chunk when asked for, and a record missing from a later chunk was deleted
        meanwhile and is absent). Unlike :meth:`iter_records`, a record edited between its chunks
        is not dropped, since absence here means "deleted": it is read again, and if it changed
        again the call raises ``RECORD_CHANGED_DURING_READ``. Each call costs one credit.

        Args:
            module: module API name.
            ids: record ids; duplicates are read once.
            fields: field API names to read; all fields if ``None`` or empty.

        Returns:
            The records found, in the order of ``ids``.

        Raises:
            ValueError: for a bare string as ``ids`` or an empty id.
            ZohoError: Zoho refused or failed a request.
        """
        if isinstance(ids, str):
            raise ValueError("ids must be a sequence of record ids, not one string")
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if any(not i for i in wanted):
            raise ValueError("record ids must not be empty")
        names = list(dict.fromkeys(f for f in fields if f)) if fields is not None else []
        path = f"/{_segment(module)}"
        found: dict[str, dict] = {}
        for batch in _chunks(wanted, MAX_IDS_PER_REQUEST):
            found.update(self._read_ids(path, batch, names))
        logger.debug("ids %s: %d asked, %d found", module, len(wanted), len(found))
        return [found[i] for i in wanted if i in found]

    def _read_ids(self, path: str, batch: list[str], names: list[str]) -> dict[str, dict]:
        """The records of one batch of at most 100 ids, by id."""

        def reader(ids: list[str]) -> Callable[[list[str] | None], Iterator[dict]]:
            asked = set(ids)

            def read(chunk: list[str] | None) -> Iterator[dict]:
                params = {"ids": ",".join(ids)}
                if chunk:
                    params["fields"] = ",".join(chunk)
                response = self._call("ids", "GET", path, params=params, credits=1)
                if response.status_code == 204:
                    self._observed("ids", 0)
                    return iter(())
                body = self._expect_json(response, "ids", ok=(200,))
                data = body.get("data") or []
                found = [r for r in data if isinstance(r, dict) and str(r.get("id")) in asked]
                self._observed("ids", len(found))
                return iter(found)

            return read

        if len(names) <= MAX_FIELDS_PER_REQUEST:
            return {str(r["id"]): dict(r) for r in reader(batch)(names or None)}
        merged, inconsistent = self._merge_chunks(names, reader(batch))
        if inconsistent:
            again, still = self._merge_chunks(names, reader(sorted(inconsistent)))
            if still:
                raise self._error(
                    200,
                    "RECORD_CHANGED_DURING_READ",
                    f"{len(still)} records changed between the field chunks of two reads in a row",
                    endpoint="ids",
                )
            for record_id in inconsistent:
                if record_id in again:
                    merged[record_id] = again[record_id]
                else:
                    del merged[record_id]  # deleted between the two reads
        return merged

    def read_deleted(
        self,
        module: str,
        *,
        since: datetime | None = None,
        type: str = "all",
        limit: int = DISCRETE_PAGINATION_LIMIT,
    ) -> DeletedRead:
        """The deleted records of ``module`` (deleted since ``since``, if given), up to ``limit``.

        ``GET /crm/v8/{module}/deleted?type=...&page=N&per_page=200``: Zoho pages this endpoint
        with ``page`` only (it takes no ``page_token`` and gives no ``next_page_token``). The read
        stops after ``ceil(limit / 200)`` pages; if Zoho still says ``more_records`` then (or
        refuses a later page with ``DISCRETE_PAGINATION_LIMIT_EXCEEDED``), it returns
        ``complete=False`` instead of raising, and the caller narrows ``since`` or confirms
        deletions another way (a full read, or :meth:`get_records_by_ids`). One page costs one
        credit, so the default costs at most 10.

        Args:
            module: module API name.
            since: only records deleted at or after this time; must be timezone-aware.
            type: ``all``, ``recycle`` (still in the recycle bin) or ``permanent``.
            limit: entries to read at most, rounded up to whole pages of 200. The default is
                2,000, get-records' discrete-paging limit (Zoho documents none for this endpoint).

        Returns:
            The entries and whether they are all of them.

        Raises:
            ValueError: for an unknown ``type``, a naive ``since`` or a ``limit`` below 1.
            ZohoError: Zoho refused or failed a request.
        """
        headers = self._deleted_args(type, since)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        path = f"/{_segment(module)}/deleted"
        pages = math.ceil(limit / MAX_PER_PAGE)
        entries: list[dict] = []
        seen: set[str] = set()
        complete = False
        for page in range(1, pages + 1):
            query = {"type": type, "page": page, "per_page": MAX_PER_PAGE}
            response = self._call("deleted", "GET", path, params=query, headers=headers, credits=1)
            if response.status_code in (204, 304):
                self._observed("deleted", 0)
                complete = True  # 204: no (more) entries; 304: none since If-Modified-Since
                break
            if (
                page > 1
                and response.status_code == 400
                and self._code_of(response) == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
            ):
                break  # Zoho will not page further by position: incomplete, not an error
            body = self._expect_json(response, "deleted", ok=(200,))
            data = body.get("data") or []
            info = body.get("info") or {}
            self._observed("deleted", len(data))
            for entry in data:
                entry_id = str(entry.get("id")) if isinstance(entry, dict) else None
                if entry_id is not None and entry_id in seen:
                    continue  # shifted into this page by a deletion meanwhile
                if entry_id is not None:
                    seen.add(entry_id)
                entries.append(entry)
            if not info.get("more_records"):
                complete = True
                break
        logger.debug("deleted %s: %d entries in %d pages, complete=%s", module, len(entries), page, complete)
        return DeletedRead(entries=entries, complete=complete)

    @staticmethod
    def _deleted_args(type: str, since: datetime | None) -> dict[str, str]:
        """Check the deleted-records arguments; the headers they make."""
        if type not in DELETED_TYPES:
            raise ValueError(f"type must be one of {sorted(DELETED_TYPES)}, got {type!r}")
        return _if_modified_since(since, "since")

    def get_record(self, module: str, record_id: str, fields: Sequence[str] | None = None) -> dict | None:
        """Fetch one record, or ``None`` if Zoho has no such record (HTTP 204).

        Args:
            module: module API name.
            record_id: the record's Zoho id.
            fields: field API names to read; all fields if ``None``. More than 50 are read in
                chunks (one credit each) and merged.

        Raises:
            ZohoError: Zoho refused or failed the request.
        """
        path = f"/{_segment(module)}/{_segment(str(record_id))}"
        names = list(dict.fromkeys(f for f in fields if f)) if fields is not None else []
        chunks: list[list[str] | None] = list(_chunks(names, MAX_FIELDS_PER_REQUEST)) if names else [None]
        merged: dict | None = None
        for n, chunk in enumerate(chunks, start=1):
            params = {"fields": ",".join(chunk)} if chunk else None
            response = self._call("get", "GET", path, params=params, credits=1)
            if response.status_code == 204:
                self._observed("get", 0)
                return None
            body = self._expect_json(response, "get", ok=(200,))
            data = body.get("data")
            if not isinstance(data, list) or not data:
                self._observed("get", 0)
                return None
            merged = {**(merged or {}), **data[0]}
            self._observed("get", 1 if n == len(chunks) else 0)  # a record, however many chunks
        return merged

    def count(self, module: str) -> int:
        """How many records the module holds (``GET /{module}/actions/count``, one credit)."""
        response = self._call("count", "GET", f"/{_segment(module)}/actions/count", credits=1)
        if response.status_code == 204:
            return 0
        body = self._expect_json(response, "count", ok=(200,))
        return int(body.get("count", 0))

    # --- org metadata -----------------------------------------------------------------------------

    def get_modules(self) -> list[dict]:
        """The org's modules (``GET /settings/modules`` → ``modules``; one credit).

        Hidden modules (removed from Organize) are included; each has its ``api_name``.
        """
        return self._metadata_list("/settings/modules", "modules")

    def get_module(self, api_name: str) -> dict | None:
        """One module's metadata (``GET /settings/modules/{api_name}`` → ``modules[0]``; one
        credit), or ``None`` if the org has no module of that API name (Zoho: HTTP 400
        ``INVALID_MODULE``). Every other error is raised."""
        response = self._call("settings", "GET", f"/settings/modules/{_segment(api_name)}", credits=1)
        if response.status_code == 204:
            return None
        if response.status_code == 400 and self._code_of(response) == "INVALID_MODULE":
            return None
        body = self._expect_json(response, "settings", ok=(200,))
        modules = body.get("modules")
        if not isinstance(modules, list) or not modules or not isinstance(modules[0], dict):
            raise self._error(
                response.status_code, "INVALID_RESPONSE", "the answer has no modules[0]", endpoint="settings"
            )
        return modules[0]

    def get_fields(self, module: str) -> list[dict]:
        """The fields of ``module`` (``GET /settings/fields?module=...`` → ``fields``; one credit).

        Raises:
            ZohoError: e.g. ``INVALID_MODULE`` for a module the org does not have.
        """
        if not module:
            raise ValueError("module is required")
        return self._metadata_list("/settings/fields", "fields", params={"module": module})

    def get_org(self) -> dict:
        """The org's details (``GET /org`` → ``org[0]``; one credit): ``id``, ``company_name``,
        ``time_zone``, ``currency``, ``type`` (production, sandbox...)..."""
        response = self._call("org", "GET", "/org", credits=1)
        body = self._expect_json(response, "org", ok=(200,))
        org = body.get("org")
        if not isinstance(org, list) or not org or not isinstance(org[0], dict):
            raise self._error(
                response.status_code, "INVALID_RESPONSE", "the answer has no org[0]", endpoint="org"
            )
        return org[0]

    def _metadata_list(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[dict]:
        response = self._call("settings", "GET", path, params=params, credits=1)
        if response.status_code == 204:
            return []
        body = self._expect_json(response, "settings", ok=(200,))
        items = body.get(key)
        if not isinstance(items, list):
            raise self._error(
                response.status_code, "INVALID_RESPONSE", f"the answer has no {key} list", endpoint="settings"
            )
        return items

    def coql(self, query: str) -> list[dict]:
        """Run one COQL query (one call; page with LIMIT/OFFSET yourself).

        Credits follow the query's LIMIT: up to 200 records 1, up to 1,000 2, up to 2,000 3.

        Args:
            query: e.g. ``select id, Name from BTEC_Enrollments where ... limit 2000 offset 0``.

        Returns:
            The records (``[]`` when Zoho answers 204).

        Raises:
            ZohoError: Zoho refused or failed the query.
        """
        response = self._call(
            "coql", "POST", "/coql", json={"select_query": query}, credits=_coql_credits(query)
        )
        if response.status_code == 204:
            return []
        body = self._expect_json(response, "coql", ok=(200,))
        data = body.get("data")
        return list(data) if isinstance(data, list) else []

    # --- Bulk Read --------------------------------------------------------------------------------

    def iter_bulk_read(
        self, module: str, fields: Sequence[str], *, records: int | None = None
    ) -> Iterator[dict[str, str]]:
        """Every record of ``module`` through Bulk Read, as the rows of its CSV (header → text).

        One job per 200,000 records (``page`` N exports records ``(N-1)*200,000+1`` to
        ``N*200,000``), each created, polled until ``COMPLETED`` and downloaded in turn. A job
        costs :data:`BULK_READ_JOB_CREDITS` credits, each poll and the download one each; a job
        that exports no record is not downloaded. Rows come as the CSV has them: lookups as the
        target's id, numbers and booleans as text, empty values as ``""``
        (:func:`sync_pipelines.zoho.bulk.json_shape` turns them into a list read's records).

        Zoho's pages are positions, not a cursor: a record deleted while the jobs run moves every
        later record one position down, so read first to last the record at the next page's
        start would fall between two jobs. Given ``records`` (the module's count when the read
        began), the pages are read last first, ``ceil(records / 200,000)`` down to 1: a deletion
        then only moves into a page still to come a record already read (dropped as a repeat by
        the caller), and records created meanwhile, which Zoho puts last (ids grow with creation
        time; the export order is not documented, the simulator's is by id), are left to the next
        incremental read, like any record created after a read began; should the last page say
        ``more_records`` all the same, the pages after it are read too, once the others are.
        Without ``records``, pages are read from 1 while ``result.more_records`` is true.

        Raises:
            ZohoError: while iterating: Zoho refused a call (``OAUTH_SCOPE_MISMATCH`` without
                ``ZohoCRM.bulk.READ``), a job ended in ``FAILURE`` (``BULK_READ_FAILED``) or did
                not finish in time (``BULK_READ_TIMEOUT``), or the result is not a ZIP with one
                CSV (``INVALID_RESPONSE``).
        """
        names = list(dict.fromkeys(f for f in fields if f))
        last = max(1, math.ceil(records / BULK_READ_PAGE_SIZE)) if records is not None else 1
        order = [*range(last, 0, -1)]  # [1] without a count
        beyond = last + 1  # read after the others while Zoho says there are more records
        while order:
            page = order.pop(0)
            job = self.create_bulk_read(module, names, page=page)
            done = self.wait_bulk_read(str(job["id"]))
            result = done["result"]
            count = int(result.get("count") or 0)
            logger.info(
                "tenant %s: Bulk Read of %s, page %d: job %s completed with %d records",
                self.tenant_id,
                module,
                page,
                job["id"],
                count,
            )
            if count:
                yield from self.download_bulk_read(str(job["id"]), result.get("download_url"))
            else:
                self._observed("bulk", 0)
            if page >= last and result.get("more_records"):
                # More than the count said (records created since, or pages of another size):
                # read on, after the pages below, so that none is left out.
                order.append(beyond)
                beyond += 1

    def create_bulk_read(
        self,
        module: str,
        fields: Sequence[str] = (),
        *,
        page: int = 1,
        callback_url: str | None = None,
    ) -> dict:
        """Create a Bulk Read job (``POST /crm/bulk/v8/read``) and return its ``details``.

        Args:
            module: module API name.
            fields: field API names to export (``id`` always comes); all fields when empty.
            page: which 200,000 records: page N is records ``(N-1)*200,000+1`` to ``N*200,000``.
            callback_url: where Zoho posts the job's details when it completes or fails
                (``callback: {"url", "method": "post"}``); this client polls instead.

        Returns:
            ``{"id", "operation", "state", "created_by", "created_time"}``.

        Raises:
            ZohoError: Zoho refused the job (``OAUTH_SCOPE_MISMATCH``, ``INVALID_DATA``...).
        """
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise ValueError(f"page must be a positive int, got {page!r}")
        query: dict[str, Any] = {"module": {"api_name": module}, "page": page}
        names = list(dict.fromkeys(f for f in fields if f))
        if names:
            query["fields"] = names
        body: dict[str, Any] = {"query": query, "file_type": "csv"}
        if callback_url:
            body["callback"] = {"url": callback_url, "method": "post"}
        response = self._call(
            "bulk_create", "POST", "/read", json=body, credits=BULK_READ_JOB_CREDITS, base=self._bulk_base
        )
        answer = self._expect_json(response, "bulk_create", ok=(200, 201, 202))
        data = answer.get("data")
        item = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        if item.get("status") == "error":
            raise self._error(
                response.status_code,
                str(item.get("code") or "BULK_READ_REFUSED"),
                str(item.get("message") or "the Bulk Read job was refused"),
                details=item.get("details") if isinstance(item.get("details"), dict) else {},
                endpoint="bulk_create",
            )
        details = item.get("details")
        if not isinstance(details, dict) or not details.get("id"):
            raise self._error(
                response.status_code,
                "INVALID_RESPONSE",
                "the answer has no data[0].details.id",
                endpoint="bulk_create",
            )
        return details

    def bulk_read_job(self, job_id: str) -> dict:
        """A Bulk Read job's details (``GET /crm/bulk/v8/read/{job_id}``; one credit): ``state``,
        and once ``COMPLETED`` its ``result`` (``page``, ``per_page``, ``count``,
        ``download_url``, ``more_records``).

        Raises:
            ZohoError: e.g. ``RESOURCE_NOT_FOUND`` (HTTP 404) for a job Zoho does not know.
        """
        response = self._call(
            "bulk_status",
            "GET",
            f"/read/{_segment(str(job_id))}",
            credits=BULK_READ_CALL_CREDITS,
            base=self._bulk_base,
        )
        body = self._expect_json(response, "bulk_status", ok=(200,))
        data = body.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise self._error(
                response.status_code, "INVALID_RESPONSE", "the answer has no data[0]", endpoint="bulk_status"
            )
        return data[0]

    def wait_bulk_read(
        self, job_id: str, *, poll_seconds: float | None = None, timeout_seconds: float | None = None
    ) -> dict:
        """Poll a Bulk Read job until it is ``COMPLETED`` and return its details.

        The first poll comes ``poll_seconds`` after the call (a job is never done the moment it is
        created), each further one 1.5 times later than the last, at most
        :data:`BULK_POLL_MAX_SECONDS` apart (Zoho recommends no interval; it offers a callback
        instead, which a batch job cannot receive). Waits use the client's ``sleep``.

        Raises:
            ZohoError: ``BULK_READ_FAILED`` when the job ends in ``FAILURE`` (its details in
                ``details``), ``BULK_READ_TIMEOUT`` when it is not done after
                ``timeout_seconds`` of waiting, or a refused poll.
        """
        interval = self.bulk_poll_seconds if poll_seconds is None else float(poll_seconds)
        limit = self.bulk_timeout_seconds if timeout_seconds is None else float(timeout_seconds)
        waited = 0.0
        for polls in range(1, 10_001):  # a hard cap, should the waits be 0: never loop forever
            self._sleep(interval)
            waited += interval
            job = self.bulk_read_job(job_id)
            state = str(job.get("state") or "")
            if state == BULK_COMPLETED:
                if not isinstance(job.get("result"), dict):
                    raise self._error(
                        200,
                        "INVALID_RESPONSE",
                        f"job {job_id} is COMPLETED without a result",
                        endpoint="bulk_status",
                    )
                logger.debug("bulk read job %s completed after %d poll(s), %.1fs", job_id, polls, waited)
                return job
            if state == BULK_FAILURE:
                query = job.get("query") if isinstance(job.get("query"), dict) else {}
                module = (
                    (query.get("module") or {}).get("api_name")
                    if isinstance(query.get("module"), dict)
                    else None
                )
                raise self._error(
                    200,
                    "BULK_READ_FAILED",
                    f"Bulk Read job {job_id} ({module or 'module unknown'}, page {query.get('page', '?')}) "
                    "ended in FAILURE",
                    details={"job_id": str(job_id), "state": state, "query": query},
                    endpoint="bulk_status",
                )
            if waited >= limit:
                break
            interval = min(BULK_POLL_MAX_SECONDS, interval * 1.5)
        raise self._error(
            None,
            "BULK_READ_TIMEOUT",
            f"Bulk Read job {job_id} was not COMPLETED after {waited:.0f}s of waiting (state {state!r})",
            details={"job_id": str(job_id), "state": state},
            endpoint="bulk_status",
        )

    def download_bulk_read(self, job_id: str, download_url: str | None = None) -> Iterator[dict[str, str]]:
        """The rows of a completed job's CSV (``GET /crm/bulk/v8/read/{job_id}/result``, a ZIP;
        one credit), header → text, in the file's order.

        ``download_url`` (the job's ``result.download_url``, a path such as
        ``/crm/bulk/v8/read/{job_id}/result``) is followed when it is a path under ``/crm/bulk/``
        of the API domain; anything else (another host) is ignored, so the token never leaves it.
        The ZIP is held compressed; its CSV is decompressed and parsed as the rows are taken.

        Raises:
            ZohoError: while iterating: the download was refused (``RESOURCE_NOT_FOUND`` before
                the job completed), or the answer is not a ZIP holding one CSV whose rows match
                its header (``INVALID_RESPONSE``).
        """
        path, base = f"/read/{_segment(str(job_id))}/result", self._bulk_base
        if (
            isinstance(download_url, str)
            and download_url.startswith("/crm/bulk/")
            and ".." not in download_url
        ):
            path, base = download_url, self._domain_base
        response = self._call("bulk_download", "GET", path, credits=BULK_READ_CALL_CREDITS, base=base)
        if response.status_code != 200:
            raise self._api_error(response, "bulk_download")
        content = response.content
        response.close()
        try:
            archive = zipfile.ZipFile(io.BytesIO(content))
            members = [n for n in archive.namelist() if n.lower().endswith(".csv")]
        except zipfile.BadZipFile:
            raise self._error(
                200, "INVALID_RESPONSE", "the result is not a ZIP file", endpoint="bulk_download"
            ) from None
        if len(members) != 1:
            raise self._error(
                200,
                "INVALID_RESPONSE",
                f"the result ZIP holds {len(members)} CSV files, not one",
                endpoint="bulk_download",
            )
        rows = 0
        with archive.open(members[0]) as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
            header = next(reader, None)
            if not header or "id" not in header:
                raise self._error(
                    200,
                    "INVALID_RESPONSE",
                    "the result CSV has no header with an id column",
                    endpoint="bulk_download",
                )
            width = len(header)
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != width:
                    raise self._error(
                        200,
                        "INVALID_RESPONSE",
                        f"line {line} of the result CSV has {len(row)} values for {width} columns",
                        endpoint="bulk_download",
                    )
                rows += 1
                yield dict(zip(header, row, strict=True))
        self._observed("bulk", rows)

    def _paged(
        self,
        endpoint: str,
        path: str,
        params: dict[str, Any],
        headers: dict[str, str],
        per_page: int,
    ) -> Iterator[dict]:
        """Follow Get Records' pagination.

        Page 1 with ``page=1``; after it ``page_token=<info.next_page_token>`` whenever Zoho gives
        one (a cursor, so a deletion mid-read shifts nothing), else ``page=N`` while
        ``N * per_page <= 2000``; never both. Past 2,000 with no token: ``MISSING_PAGE_TOKEN``.
        """
        page = 1
        page_token: str | None = None
        read = 0
        while True:
            query = {**params, "per_page": per_page}
            if page_token is None:
                query["page"] = page
            else:
                query["page_token"] = page_token  # never with ``page``: Zoho rejects both
            response = self._call(endpoint, "GET", path, params=query, headers=headers, credits=1)
            if response.status_code in (204, 304):
                # 204: no records; 304: nothing modified since If-Modified-Since.
                logger.debug("%s %s page %d: HTTP %d", endpoint, path, page, response.status_code)
                self._observed(endpoint, 0)
                return
            body = self._expect_json(response, endpoint, ok=(200,))
            data = body.get("data") or []
            info = body.get("info") or {}
            logger.debug(
                "%s %s page %d (%s): %d records",
                endpoint,
                path,
                page,
                "token" if page_token is not None else "page",
                len(data),
            )
            read += len(data)
            self._observed(endpoint, len(data))
            yield from data
            if not info.get("more_records"):
                return
            page += 1
            token = info.get("next_page_token")
            page_token = str(token) if token else None
            if page_token is not None or page * per_page <= DISCRETE_PAGINATION_LIMIT:
                continue
            # Stopping here would silently truncate the read at 2,000 records.
            raise self._error(
                response.status_code,
                "MISSING_PAGE_TOKEN",
                f"more_records is true after {read} records but Zoho sent no next_page_token; the "
                "read cannot continue past the page limit",
                endpoint=endpoint,
            )

    # --- writing ----------------------------------------------------------------------------------

    def upsert(
        self,
        module: str,
        records: Sequence[dict],
        *,
        duplicate_check_fields: Sequence[str] = (),
        trigger: Sequence[str] = (),
    ) -> list[UpsertResult]:
        """Insert or update ``records``, matching existing ones on ``duplicate_check_fields``.

        Sent in batches of at most 100; a batch costs one credit per 10 records. Upsert is
        idempotent (it matches on the duplicate-check fields), so a batch is retried like a read on
        429, 5xx and dropped connections.

        Args:
            module: module API name.
            records: records keyed by field API name.
            duplicate_check_fields: fields Zoho matches existing records on. When empty the key is
                left out and Zoho uses the module's system and unique fields.
            trigger: workflows to run (``workflow``, ``approval``, ``blueprint``); empty (the
                default) runs none, so the sync's own writes never fire the school's webhooks.

        Returns:
            One result per record, in the order of ``records``.

        Raises:
            ZohoError: a batch was refused as a whole (no per-record answers), or failed. Batches
                before it are already written; upsert being idempotent, running the whole call
                again is safe.
        """
        extra = {"duplicate_check_fields": list(duplicate_check_fields)} if duplicate_check_fields else {}
        return self._write("upsert", "POST", f"/{_segment(module)}/upsert", module, records, trigger, extra)

    def update(
        self, module: str, records: Sequence[dict], *, trigger: Sequence[str] = ()
    ) -> list[UpsertResult]:
        """Update existing records by ``id`` (``PUT /{module}``), in batches of at most 100.

        Each record must carry its ``id``; only the fields given are changed. Results are as for
        :meth:`upsert`, one per record in order (an unknown id is a per-record error).
        """
        missing = [i for i, r in enumerate(records) if not r.get("id")]
        if missing:
            raise ValueError(f"update needs an id on every record; missing at {missing[:5]}")
        return self._write("update", "PUT", f"/{_segment(module)}", module, records, trigger, {})

    def _write(
        self,
        endpoint: str,
        method: str,
        path: str,
        module: str,
        records: Sequence[dict],
        trigger: Sequence[str],
        extra: dict[str, Any],
    ) -> list[UpsertResult]:
        results: list[UpsertResult] = []
        for offset in range(0, len(records), MAX_UPSERT_BATCH):
            batch = list(records[offset : offset + MAX_UPSERT_BATCH])
            payload: dict[str, Any] = {"data": batch, "trigger": list(trigger), **extra}
            response = self._call(
                endpoint,
                method,
                path,
                json=payload,
                credits=math.ceil(len(batch) / RECORDS_PER_UPSERT_CREDIT),
            )
            body = _json(response)
            items = body.get("data") if isinstance(body, dict) else None
            # 200, 207 and 400 all carry one answer per record; a 400 without them is a
            # request-level refusal (bad module, bad JSON...) and is raised.
            if response.status_code not in (200, 201, 202, 207, 400) or not isinstance(items, list):
                raise self._api_error(response, endpoint)
            if len(items) != len(batch):
                raise self._error(
                    response.status_code,
                    "INVALID_RESPONSE",
                    f"{endpoint} of {len(batch)} records answered {len(items)} results",
                    endpoint=endpoint,
                )
            results.extend(self._upsert_result(offset + i, item) for i, item in enumerate(items))
            self._observed(endpoint, len(batch))
            logger.debug(
                "%s %s: batch at %d, %d records, HTTP %d",
                endpoint,
                module,
                offset,
                len(batch),
                response.status_code,
            )
        return results

    @staticmethod
    def _upsert_result(index: int, item: Any) -> UpsertResult:
        if not isinstance(item, dict):
            item = {}
        details = item.get("details")
        details = details if isinstance(details, dict) else {}
        status = str(item.get("status") or "error")
        record_id = details.get("id") if status == "success" else None
        return UpsertResult(
            index=index,
            status=status,
            code=str(item.get("code") or ""),
            action=item.get("action"),
            record_id=str(record_id) if record_id is not None else None,
            message=str(item.get("message") or ""),
            details=details,
        )

    # --- HTTP and OAuth ---------------------------------------------------------------------------

    def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        credits: int,
        base: Callable[[], str] | None = None,
    ) -> requests.Response:
        """Send one API call with a valid token; on ``INVALID_TOKEN`` refresh once and retry once.

        ``path`` follows ``base()`` (default: ``{api_domain}/crm/{version}``).

        Returns the answer, whatever its status (the caller checks it), except that a second
        ``INVALID_TOKEN`` and connection failures are raised.
        """
        for auth_attempt in range(2):
            token = self._token()
            url = f"{(base or self._api_base)()}{path}"
            all_headers = {"Authorization": f"Zoho-oauthtoken {token}", **(headers or {})}
            try:
                response = self._http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=all_headers,
                    on_attempt=self._counter(endpoint),
                )
            except TransportError as exc:
                raise self._error(None, "CONNECTION_ERROR", str(exc), endpoint=endpoint) from None
            if _charged(response.status_code):
                self.stats.add_credits(credits)
            if response.status_code == 401 and self._code_of(response) == "INVALID_TOKEN":
                if auth_attempt == 0:
                    logger.debug("%s: INVALID_TOKEN, refreshing the token once", endpoint)
                    self._invalidate(token)
                    self.stats.add_retry()
                    continue
                raise self._api_error(response, endpoint)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _counter(self, endpoint: str) -> Callable[[int], None]:
        def count(attempt: int) -> None:
            self.stats.record_attempt(endpoint, retry=attempt > 0)

        return count

    def _api_base(self) -> str:
        domain = self.api_domain
        if not domain:
            raise self._error(
                None,
                "NO_API_DOMAIN",
                "the token answer named no api_domain and none is configured",
                endpoint="token",
            )
        return f"{domain}/crm/{self.api_version}"

    def _bulk_base(self) -> str:
        """``{api_domain}/crm/bulk/{version}``: Bulk Read lives beside, not under, ``/crm/{version}``."""
        return self._api_base().replace("/crm/", "/crm/bulk/", 1)

    def _domain_base(self) -> str:
        """``{api_domain}``, for a ``download_url`` Zoho gives as a path from the domain."""
        return self._api_base().removesuffix(f"/crm/{self.api_version}")

    def _token(self) -> str:
        """A valid access token: the shared one, or a fresh one if it is missing or nearly stale.

        Under the store's locks: the token another process (or thread) obtained meanwhile is used;
        else, unless the token endpoint is throttled, this client refreshes. A throttle, recorded
        by this or another process as ``throttled_until``, is waited out when it ends within
        ``token_wait_seconds`` (the locks released meanwhile, so other processes read the same
        record instead of queueing), and the endpoint is then asked once more; a throttle ending
        later raises :class:`ZohoRateLimitError` without asking the endpoint at all.
        """
        record = self._slot.cached()
        if self._fresh(record, self._clock()):
            return self._use(record)
        waited = 0.0
        refused: ZohoError | None = None
        while True:
            with self._hold() as held:
                record = held.record
                now = self._clock()
                if self._fresh(record, now):
                    return self._use(record)
                if record.throttled_until <= now:
                    refused = self._refresh(held)
                    record = held.record
                    if refused is None:
                        return self._use(record)
            wait = max(0.0, record.throttled_until - self._clock())
            if waited + wait > self._token_wait:
                raise self._throttled(record.throttled_until, wait, refused)
            logger.info(
                "tenant %s: the Zoho token endpoint is throttled until %s; waiting %.1fs",
                self.tenant_id,
                _utc(record.throttled_until),
                wait,
            )
            self._sleep(wait)
            waited += wait

    def _fresh(self, record: TokenRecord, now: float) -> bool:
        """Whether ``record`` holds a token that is not yet due for a refresh.

        Due ``TOKEN_REFRESH_MARGIN`` before it expires, or 10 % of its life for a shorter-lived one.
        """
        if record.access_token is None:
            return False
        margin = min(TOKEN_REFRESH_MARGIN, 0.1 * max(0.0, record.expires_at - record.obtained_at))
        return now < record.expires_at - margin

    def _use(self, record: TokenRecord) -> str:
        token = record.access_token
        assert token is not None
        self._secrets.add(token)  # another process's token is this client's secret too
        return token

    @contextmanager
    def _hold(self) -> Iterator[HeldSlot]:
        """The token store's locks, a lock held too long by another process raised as a ZohoError."""
        try:
            with self._slot.hold() as held:
                yield held
        except TokenLockTimeout as exc:
            raise self._error(None, "TOKEN_LOCK_TIMEOUT", str(exc), endpoint="token") from None

    def _invalidate(self, token: str) -> None:
        """Drop ``token`` if the store still holds it: another thread or process may have replaced
        it already, and that one is then used, not refreshed again."""
        with self._hold() as held:
            if held.record.access_token == token:
                held.save(replace(held.record, access_token=None, expires_at=0.0, obtained_at=0.0))

    def _throttled(self, until: float, wait: float, refused: ZohoError | None) -> ZohoRateLimitError:
        message = (
            f"the token endpoint refused refreshes as throttled; it is not asked again before "
            f"{_utc(until)} (in {wait:.0f}s), later than this client waits ({self._token_wait:.0f}s)"
        )
        if refused is not None:
            message = f"{refused.message} ({message})"
        error = self._error(
            refused.status if refused is not None else None,
            refused.code if refused is not None else "TOKEN_THROTTLED",
            message,
            details={"throttled_until": _utc(until), "retry_after_seconds": math.ceil(wait)},
            endpoint="token",
            cls=ZohoRateLimitError,
        )
        assert isinstance(error, ZohoRateLimitError)
        return error

    def _refresh(self, held: HeldSlot) -> ZohoError | None:
        """Ask the token endpoint for a new access token and save the answer in ``held``.

        The caller holds the store's locks. Returns ``None`` when a token was obtained, or the
        throttle error when the endpoint refused as throttled (``throttled_until`` is then saved);
        every other failure is raised.
        """
        started = self._clock()
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }
        try:
            response = self._token_http.request(
                "POST",
                f"{self.accounts_url}/oauth/v2/token",
                data=form,
                on_attempt=self._counter("token"),
            )
        except TransportError as exc:
            raise self._error(None, "CONNECTION_ERROR", str(exc), endpoint="token") from None
        status = response.status_code
        body = _json(response)
        if status == 429 or (isinstance(body, dict) and body.get("error") == "Access Denied"):
            until = self._clock() + self._token_throttle
            held.save(replace(held.record, throttled_until=until))
            body = body if isinstance(body, dict) else {}
            logger.warning(
                "tenant %s: the Zoho token endpoint refused a refresh as throttled (HTTP %d); "
                "no process asks it again before %s",
                self.tenant_id,
                status,
                _utc(until),
            )
            code = str(body.get("error") or f"HTTP_{status}")
            message = str(body.get("error_description") or "the token endpoint throttled the refresh")
            return self._error(status, code, message, endpoint="token", cls=ZohoRateLimitError)
        if not isinstance(body, dict):
            code = "TOKEN_ENDPOINT_FAILED" if status in RETRIABLE_STATUSES else "INVALID_RESPONSE"
            raise self._error(status, code, "the token endpoint answered without JSON", endpoint="token")
        error = body.get("error")
        token = body.get("access_token")
        if error is None and status == 200 and not token:
            raise self._error(
                status, "INVALID_RESPONSE", "the token answer has no access_token", endpoint="token"
            )
        if error is not None or status != 200:
            # Zoho answers refused credentials with HTTP 200 and an "error" key: look at the body.
            code = str(error) if error is not None else f"HTTP_{status}"
            message = str(body.get("error_description") or "the token endpoint refused the refresh")
            cls: type[ZohoError] = ZohoError if status >= 500 else ZohoAuthError
            raise self._error(status, code, message, endpoint="token", cls=cls)

        expires_in = float(body.get("expires_in_sec") or body.get("expires_in") or 3600)
        previous = held.record
        api_domain = body.get("api_domain")
        scope = body.get("scope")
        scopes = previous.scopes
        if isinstance(scope, str) and scope.strip():
            # Zoho separates granted scopes with spaces; commas (how they are requested) too.
            scopes = tuple(dict.fromkeys(s for s in re.split(r"[\s,]+", scope) if s))
        self._secrets.add(str(token))
        held.save(
            TokenRecord(
                access_token=str(token),
                expires_at=started + expires_in,
                obtained_at=started,
                api_domain=str(api_domain).rstrip("/") if api_domain else previous.api_domain,
                scopes=scopes,
                throttled_until=0.0,
            )
        )
        self.stats.add_token_refresh()
        logger.debug("tenant %s: new access token, valid %.0fs", self.tenant_id, expires_in)
        return None

    # --- errors -----------------------------------------------------------------------------------

    @staticmethod
    def _code_of(response: requests.Response) -> str | None:
        body = _json(response)
        return body.get("code") if isinstance(body, dict) else None

    def _expect_json(self, response: requests.Response, endpoint: str, *, ok: tuple[int, ...]) -> dict:
        """The JSON object of a successful answer; any other answer is raised."""
        if response.status_code not in ok:
            raise self._api_error(response, endpoint)
        body = _json(response)
        if not isinstance(body, dict):
            raise self._error(
                response.status_code,
                "INVALID_RESPONSE",
                "Zoho answered without a JSON object",
                endpoint=endpoint,
            )
        return body

    def _api_error(self, response: requests.Response, endpoint: str) -> ZohoError:
        """The typed error for a failed answer: Zoho's code, message and details."""
        status = response.status_code
        body = _json(response)
        error: dict = {}
        if isinstance(body, dict):
            error = body
            data = body.get("data")
            if "code" not in body and isinstance(data, list) and data and isinstance(data[0], dict):
                error = data[0]  # some errors come wrapped like per-record answers
        code = str(error.get("code") or f"HTTP_{status}")
        message = str(error.get("message") or response.reason or "unexpected answer")
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
        if status == 429:
            cls: type[ZohoError] = ZohoRateLimitError
        elif status in (401, 403):
            cls = ZohoAuthError
        else:
            cls = ZohoError
        return self._error(status, code, message, details=details, endpoint=endpoint, cls=cls)

    def _error(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        details: dict | None = None,
        endpoint: str | None = None,
        cls: type[ZohoError] = ZohoError,
    ) -> ZohoError:
        """Build an error with every secret this client holds scrubbed from its text."""
        return cls(
            self.tenant_id,
            status,
            self._scrub(code),
            self._scrub(message),
            self._scrub(details or {}),
            endpoint,
        )

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        return value


__all__ = [
    "BULK_READ_JOB_CREDITS",
    "BULK_READ_PAGE_SIZE",
    "DISCRETE_PAGINATION_LIMIT",
    "MAX_IDS_PER_REQUEST",
    "TOKEN_THROTTLE_SECONDS",
    "TOKEN_WAIT_SECONDS",
    "CallStats",
    "DeletedRead",
    "TokenCache",
    "UpsertResult",
    "ZohoAuthError",
    "ZohoClient",
    "ZohoError",
    "ZohoRateLimitError",
]
