"""Full reads of big modules through Zoho's Bulk Read API, in the shape of a paged read.

A first load or a nightly reconciliation reads a module in full. By pages that is one call per 200
records (500 calls, 500 credits, for 100,000), and Get Records reaches only 100,000 records at all
(``page_token``: "You can only get upto 100000 records"). Bulk Read exports 200,000 records a job
(Zoho CRM v8, ``https://www.zoho.com/crm/developer/docs/api/v8/bulk-read/overview.html``,
``create-job.html``, ``job-details.html``, ``download-result.html``): a few calls and about 50
credits a job, whatever the module's size. :func:`read_full` picks one or the other:

* Bulk Read when the client has a threshold (the tenant's ``zoho.bulk_read_threshold``, default
  :data:`BULK_READ_THRESHOLD`) and the module holds more records than that
  (``GET /{module}/actions/count``, one credit, asked before every full read);
* pages otherwise, and also when the token's scopes lack ``ZohoCRM.bulk.READ`` (a warning says
  so: the read works, only dearer), when Zoho refuses the job for its scope, and when a job ends in
  ``FAILURE``, does not finish in time or gives an unreadable file. Those are logged as warnings
  naming Zoho's code and the job, and the module is then read by pages in the same run: a failed
  job never leaves a module unread. Other errors (429 after the retries, connection failures)
  are raised, as a paged read raises them.

Incremental reads (``If-Modified-Since``) stay paged: they bring what changed since the last run,
usually one page.

**The CSV in the JSON shape.** Every record is given in the shape :meth:`ZohoClient.iter_records`
gives it, so that :func:`~sync_pipelines.zoho.canonical.canonicalise` makes the same canonical rows
and the diff the same statuses from either read. Zoho documents the CSV's header (field API names,
an ``id`` column "added by default") and its date-times ("given in the ISO8601 format"); the rest is
read from the field's ``json_type`` in the org's ``/settings/fields`` (its ``data_type`` when the
metadata has none), and where Zoho does not say how the CSV writes a type the conversion accepts
what it plausibly writes and keeps anything else as text (the canonicaliser then reports it, as it
would the same text in JSON):

========================= ==========================================================================
JSON type                 CSV text → JSON value
========================= ==========================================================================
string (text, picklist,   as is; ``""`` → ``None`` (a list read answers ``null`` for an empty field)
date, datetime, ...)
jsonobject (lookup,       the target's id → ``{"id": id}`` (the CSV has no ``name``; the canonical
owner)                    form of a lookup is its id); ``""`` → ``None``
integer                   ``-?digits`` → ``int``; other text kept
double (double, currency) a decimal or exponent number → ``float``; other text kept (so ``nan`` is
                          not a number, as in JSON)
boolean                   ``true``/``false`` (any case) → ``True``/``False``; other text kept
jsonarray (multi-select   ``;``-separated values → a list (guess: how Zoho joins them in a CSV is
picklist)                 not documented); subforms, multi-select lookups and files are not
                          exported (a list read leaves them out too; the sync reads subforms by id)
formula                   its ``json_type`` (or ``formula.return_type``); with neither (the shipped
                          metadata), a number-looking value → ``float``, as JSON gives a number
========================= ==========================================================================

Zoho's pages are positions: a record deleted while the jobs run moves every later one a position
down. The jobs are therefore run last page first (:meth:`ZohoClient.iter_bulk_read` with the
count): a deletion can then only repeat a record already read in the next job (it is yielded
once), never drop one between two jobs, which on a first load nothing would ever read again.
Records created during the read are left to the next incremental read, as with any read.
"""

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sync_pipelines.zoho.client import ZohoClient, ZohoError
from sync_pipelines.zoho.modules import ModuleSpec
from sync_pipelines.zoho.scopes import BULK_READ_SCOPE, scope_covers

logger = logging.getLogger(__name__)

#: A full read of a module holding more records than this goes through Bulk Read, unless the
#: tenant says otherwise (``zoho.bulk_read_threshold``). At 10,000 records a paged read costs 50
#: calls and 50 credits, about what one job costs (50 credits and 4 calls), and it only grows.
BULK_READ_THRESHOLD = 10_000

#: Field types Bulk Read does not put in the CSV, or that a list read does not answer either
#: (subform rows, multi-select lookups, files and images): never asked for.
_NOT_EXPORTED = frozenset({"subform", "multiselectlookup", "multiuserlookup", "fileupload", "profileimage"})
#: Zoho codes after which the module is read by pages instead, in the same run.
_FALLBACK_CODES = frozenset(
    {"BULK_READ_FAILED", "BULK_READ_TIMEOUT", "OAUTH_SCOPE_MISMATCH", "NO_PERMISSION", "INVALID_RESPONSE"}
)
#: ``json_type`` by ``data_type``, for metadata without ``json_type`` (the shipped metadata).
_JSON_TYPES = {
    "integer": "integer",
    "bigint": "integer",
    "double": "double",
    "currency": "double",
    "decimal": "double",
    "percent": "double",
    "boolean": "boolean",
    "lookup": "jsonobject",
    "ownerlookup": "jsonobject",
    "userlookup": "jsonobject",
    "multiselectpicklist": "jsonarray",
}
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False}


# --- which read ---------------------------------------------------------------------------------


def read_full(client: ZohoClient, spec: ModuleSpec) -> Iterator[dict]:
    """Every record of ``spec``'s module, for a full read: Bulk Read above the client's
    threshold, pages otherwise (see the module's docstring for when, and the fallbacks).

    Args:
        client: the tenant's client; its ``bulk_read_threshold`` (``None``: never bulk) decides.
            A stand-in without one always reads by pages.
        spec: the module, as the tenant's org names it.

    Returns:
        A lazy iterator of records in the shape :meth:`ZohoClient.iter_records` yields.

    Raises:
        ZohoError: while iterating, when Zoho fails the read (after the fallbacks above).
    """
    threshold = getattr(client, "bulk_read_threshold", None)
    count = None
    if threshold is not None and hasattr(client, "iter_bulk_read"):
        count = _bulk_count(client, spec, threshold)
    if count is not None:
        yield from _bulk_then_pages(client, spec, count)
    else:
        yield from paged_full(client, spec)


def paged_full(client: ZohoClient, spec: ModuleSpec) -> Iterator[dict]:
    """A full read by pages: every record (newest first for a module without ``Modified_Time``,
    whose read position is the greatest id)."""
    if spec.has_modified_time:
        return client.iter_records(spec.api_name, spec.api_fields, modified_since=None)
    return client.iter_records(spec.api_name, spec.api_fields, sort_by="id", sort_order="desc")


def has_bulk_scope(granted: Sequence[str]) -> bool:
    """Whether the granted scopes allow Bulk Read (``ZohoCRM.bulk.READ``, ``ZohoCRM.bulk.ALL``...)."""
    return any(scope_covers(g, BULK_READ_SCOPE) for g in granted if g)


def _bulk_count(client: ZohoClient, spec: ModuleSpec, threshold: int) -> int | None:
    """The module's record count when a Bulk Read is worth it and allowed, else ``None``."""
    count = client.count(spec.api_name)  # also gets a token, so the granted scopes are known
    if count <= threshold:
        return None
    granted = tuple(getattr(client, "granted_scopes", ()) or ())
    if granted and not has_bulk_scope(granted):
        logger.warning(
            "tenant %s %s: %d records, above the bulk-read threshold of %d, but the token does not "
            "hold %s: reading by pages (about %d calls); add the scope to the grant to read it in "
            "Bulk Read jobs",
            client.tenant_id,
            spec.api_name,
            count,
            threshold,
            BULK_READ_SCOPE,
            -(-count // 200),
        )
        return None
    logger.info(
        "tenant %s %s: %d records, above the bulk-read threshold of %d: reading by Bulk Read",
        client.tenant_id,
        spec.api_name,
        count,
        threshold,
    )
    return count


def _bulk_then_pages(client: ZohoClient, spec: ModuleSpec, count: int) -> Iterator[dict]:
    shape = json_shape(spec)
    seen: set[str] = set()
    try:
        # Last page first (see ZohoClient.iter_bulk_read): a deletion meanwhile repeats a record
        # across two jobs instead of losing one between them.
        for row in client.iter_bulk_read(spec.api_name, bulk_fields(spec), records=count):
            record = shape(row)
            record_id = record.get("id")
            if record_id in seen:
                continue  # moved into a later job by a deletion meanwhile
            seen.add(record_id)
            yield record
    except ZohoError as exc:
        if exc.code not in _FALLBACK_CODES:
            raise
        logger.warning(
            "tenant %s %s: Bulk Read failed (%s); reading the module by pages instead%s",
            client.tenant_id,
            spec.api_name,
            exc,
            f" ({len(seen)} records of the bulk read kept)" if seen else "",
        )
        for record in paged_full(client, spec):
            if str(record.get("id")) not in seen:
                yield record


# --- the CSV in the JSON shape ----------------------------------------------------------------------


def bulk_fields(spec: ModuleSpec) -> list[str]:
    """The API names a Bulk Read job asks for: the fields a list read answers (``Modified_Time``
    included), without those the CSV cannot hold (subforms...) or the org lacks."""
    meta = spec.field_metadata
    names = [
        f.api_name
        for f in spec.fields
        if not f.absent
        and f.kind != "subform"
        and meta.get(f.api_name, {}).get("data_type") not in _NOT_EXPORTED
    ]
    if spec.has_modified_time:
        names.append("Modified_Time")
    return list(dict.fromkeys(names))


def json_shape(spec: ModuleSpec) -> Callable[[Mapping[str, str]], dict]:
    """A function from one CSV row (header → text) to the record a list read gives.

    Only the columns of :func:`bulk_fields` and ``id`` are kept; a column the CSV lacks is left
    out of the record, as a list read leaves out what it does not answer.
    """
    meta = spec.field_metadata
    names = ["id", *bulk_fields(spec)]
    plain = [n for n in names if n == "id" or _converter(meta.get(n, {})) is None]
    typed = [(n, conv) for n in names if n != "id" and (conv := _converter(meta.get(n, {}))) is not None]
    plan: dict[str, Any] = {"width": -1}

    def shape(row: Mapping[str, str]) -> dict:
        if len(row) != plan["width"]:  # every row of one CSV has its header: planned once a page
            plan["width"] = len(row)
            plan["plain"] = [n for n in plain if n in row]
            plan["typed"] = [(n, c) for n, c in typed if n in row]
        out = {n: row[n] or None for n in plan["plain"]}
        for n, conv in plan["typed"]:
            out[n] = conv(row[n])
        return out

    return shape


def _converter(field: Mapping[str, Any]) -> Callable[[str], Any] | None:
    """The CSV text → JSON value function of one field; ``None`` for text kept as text."""
    data_type = field.get("data_type")
    json_type = field.get("json_type")
    if data_type == "formula" and json_type is None:
        formula = field.get("formula") if isinstance(field.get("formula"), Mapping) else {}
        json_type = {
            "double": "double",
            "currency": "double",
            "integer": "integer",
            "boolean": "boolean",
        }.get(formula.get("return_type"), "number_or_text" if not formula.get("return_type") else "string")
    if json_type is None:
        json_type = _JSON_TYPES.get(str(data_type), "string")
    if json_type == "jsonarray" and data_type != "multiselectpicklist":
        return None  # not exported (bulk_fields leaves it out)
    return _CONVERTERS.get(json_type)


def _lookup(text: str) -> dict | None:
    return {"id": text} if text else None


def _integer(text: str) -> int | str | None:
    if not text:
        return None
    return int(text) if _INTEGER.fullmatch(text) else text


def _double(text: str) -> float | str | None:
    if not text:
        return None
    return float(text) if _NUMBER.fullmatch(text) else text


def _boolean(text: str) -> bool | str | None:
    if not text:
        return None
    return _BOOLEANS.get(text.lower(), text)


def _multiselect(text: str) -> list[str] | None:
    return text.split(";") if text else None


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "jsonobject": _lookup,
    "integer": _integer,
    "double": _double,
    "number_or_text": _double,
    "boolean": _boolean,
    "jsonarray": _multiselect,
}


__all__ = ["BULK_READ_THRESHOLD", "bulk_fields", "has_bulk_scope", "json_shape", "paged_full", "read_full"]
