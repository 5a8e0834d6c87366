"""A local, faithful simulator of the Zoho CRM REST API (v2 … v8) and of the Zoho accounts token endpoint.

One stdlib ``ThreadingHTTPServer`` on loopback answers both ``POST /oauth/v2/token`` and the CRM API
under ``/crm/v2``, ``/crm/v2.1``, ``/crm/v3`` … ``/crm/v8``. It is built from the org's field
metadata (``zoho_fields.json``, read through :mod:`sync_pipelines.zoho.modules`), never from
per-module code: every module of the org answers the same way, and the quirks of the real service
are kept on purpose:

* ``fields`` is capped at 50 API names; it is optional in v2 and v2.1 (the whole record comes back)
  and required from v3 on when a module is listed (Zoho's v3 changelog; v7 get-records: "mandatory
  when fetching all records"); ``ids=`` reads up to 100 given records;
* ``page`` reaches only the first 2,000 records in every version (real v2 answers
  ``DISCRETE_PAGINATION_LIMIT_EXCEEDED`` too: airbytehq/airbyte#30977), ``page_token`` (opaque,
  expiring, bound to the query it came from) reaches 100,000;
* no records is HTTP 204 with an empty body, nothing modified since ``If-Modified-Since`` is 304;
* modules without ``Modified_Time`` (``Products``, ``BTEC_Enrollments``) cannot be read
  incrementally;
* subform values (lists of rows, each with its own ``id``) and multi-select lookups are rendered
  only when one record is fetched (v7 get-records note), formula fields are computed by Zoho and
  change without ``Modified_Time`` moving (:meth:`ZohoSimulator.set_formula`);
* access tokens expire, the token endpoint throttles refreshes, API credits run out over a rolling
  24 hours and concurrent calls are capped, all answered with 429 and no ``Retry-After`` header;
* the token endpoint also exchanges a self-client's grant code (``grant_type=authorization_code``)
  for a refresh token, once, before the code expires (:meth:`ZohoSimulator.issue_grant_code`), and
  with ``enforce_scopes`` an API call the token's scopes do not cover is refused
  (``OAUTH_SCOPE_MISMATCH``);
* writes are validated per record against the field metadata (picklists, data types, mandatory
  fields, lookups, owners, subform rows) with Zoho's per-record result bodies, several problems in
  one record answered as ``MULTIPLE_OR_MULTI_ERRORS``, and 200/207/400 statuses;
* Bulk Read (``/crm/bulk/v8/read``): a job is created (201 ``ADDED_SUCCESSFULLY``, state
  ``ADDED``), goes ``IN PROGRESS`` and then ``COMPLETED`` (or ``FAILURE``) as it is polled, and its
  result is a ZIP of one CSV of at most 200,000 records (``page`` N, ``more_records``), charged
  50 credits a job; downloads are throttled to 10 a minute (:meth:`ZohoSimulator._bulk`);
* the metadata and org endpoints answer as Zoho documents them: ``/settings/modules``,
  ``/settings/modules/{api_name}``, ``/settings/fields`` (the full per-field keys, derived from the
  few kept in ``zoho_fields.json``), ``/org`` and ``/users`` (a small fixed org, :data:`ORG_USERS`).

Error bodies follow Zoho's ``{"code","message","status":"error","details":{…}}`` shape; codes, messages
and details were checked against Zoho's OpenAPI spec (``zoho/crm-oas`` v8.0 examples) and the v7
developer pages. Where no independent source confirms an answer, the code says so ("guess: …").
"""

import bisect
import copy
import csv
import io
import json
import logging
import math
import re
import secrets
import threading
import time
import zipfile
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from functools import cache, lru_cache
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sync_pipelines.sandbox.faults import FaultPlan
from sync_pipelines.sandbox.server import LoopbackServer, SimulatorHTTPServer
from sync_pipelines.zoho.scopes import scope_covers

logger = logging.getLogger(__name__)

#: The simulated org's time zone: Zoho answers every date-time in the org's (user's) offset.
ORG_TZ = timezone(timedelta(hours=3))
#: First 13 digits of record ids; ids are this prefix plus a 6-digit counter (19 digits in all).
DEFAULT_ID_PREFIX = "5843017000000"
#: The demo connected app: client id, client secret, refresh token.
DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"
DEFAULT_REFRESH_TOKEN = "sandbox-refresh"

MAX_FIELDS = 50
MAX_PER_PAGE = 200
DISCRETE_PAGINATION_LIMIT = 2_000
PAGE_TOKEN_LIMIT = 100_000
MAX_WRITE_RECORDS = 100
MAX_COQL_LIMIT = 2_000
DEFAULT_COQL_LIMIT = 200
CREDIT_WINDOW = timedelta(hours=24)
REFRESH_WINDOW = timedelta(seconds=60)
#: How many sorted record lists (one per module, ``sort_by``, ``sort_order`` and
#: ``If-Modified-Since``) the simulator keeps between the pages of a read, least recently used out.
SORTED_READS_KEPT = 16

#: ``ids=`` on a list read takes at most this many record ids. Guess: the v2-v8 get-records pages
#: name no number; 100 is what Zoho documents for every other list of record ids (delete records,
#: recycle bin, users' ``ids``, API 1.0 ``getRecordById``).
MAX_IDS = 100
#: Rows one subform field holds in one record ("Each subform field can have a maximum of 100
#: subform records in a single record", v7 Subform API).
MAX_SUBFORM_ROWS = 100
#: API versions whose list reads take no ``fields`` (the whole record comes back): v2 and v2.1.
#: The v2 get-records page marks ``fields`` optional and the v3 changelog makes it mandatory
#: ("Now is mandatory to add a fields parameter", quoted in airbytehq/airbyte#21164); the v2.1
#: page does not call it optional, but the requirement came with v3.
FIELDS_OPTIONAL_VERSIONS = frozenset({"v2", "v2.1"})
#: What the token endpoint answers as ``scope`` unless a simulator is given its own: the scopes a
#: sync of this org needs. Zoho answers the granted scopes as one string; several are separated by
#: spaces (guess: a captured answer in a public repository shows ``"scope": "ZohoCRM.modules.all"``,
#: another ``"ZohoCRM.modules.contacts.CREATE ..."``; RFC 6749 section 3.3 separates with spaces).
DEFAULT_SCOPES = (
    "ZohoCRM.modules.ALL",
    "ZohoCRM.settings.ALL",
    "ZohoCRM.users.READ",
    "ZohoCRM.org.READ",
    "ZohoCRM.coql.READ",
    "ZohoCRM.bulk.READ",
)
#: Bulk Read (Zoho CRM v8 bulk-read pages ``create-job.html``, ``job-details.html``,
#: ``download-result.html`` and the OpenAPI spec ``zoho/crm-oas`` ``v8.0/bulk_read``): records a
#: job exports ("You can export a maximum of 200,000 records in a single API call"; ``page`` N is
#: records ``(N-1)*200,000+1`` to ``N*200,000``).
BULK_READ_PAGE_SIZE = 200_000
#: Credits a Bulk Read job costs when it is created: "bulk read 50" (the project's Zoho reference,
#: from the api-limits page). Its status and download cost one credit each, Zoho's default for a
#: call it lists no price for (guess).
BULK_READ_JOB_CREDITS = 50
#: "Only 10 requests for download are allowed for one-minute interval. Crossing the limit will
#: result in an error (HTTP code :429)" (download-result.html). A sliding minute on the simulator's
#: clock (guess: Zoho does not say whether the minute slides or is a calendar minute).
BULK_DOWNLOADS_PER_MINUTE = 10
_BULK_PATH_RE = re.compile(
    r"^/crm/bulk/(?P<version>v2\.1|v[2-8])/read(?:/(?P<job>[^/]+)(?:/(?P<result>result))?)?$"
)
#: Field types a Bulk Read CSV leaves out (guess: Zoho documents the CSV of plain fields only;
#: subform rows are exported by bulk reading the subform module, which this simulator does not do).
_BULK_NOT_EXPORTED = frozenset(
    {"subform", "multiselectlookup", "multiuserlookup", "fileupload", "profileimage"}
)

#: The simulator's stand-in for the API console's "Generate Code" tab (not a Zoho URL): ``POST``
#: with ``client_id``, optional ``scope`` (comma-separated) and ``expiry_seconds`` answers
#: ``{"code": …, "expires_in": …}``, so that the sandbox's onboarding can be walked through with curl.
CONSOLE_GRANT_CODE_PATH = "/sandbox/self-client/code"
#: How long a self-client grant code stays valid unless the test says otherwise: the API console's
#: default, 3 minutes (Zoho Accounts, "Self Client - Authorization code flow": "Select an expiry
#: time for the authorization code. By default, it is 3 minutes").
GRANT_CODE_TTL_SECONDS = 180

_ID_COUNTER_START = 100_000  # the first generated id ends in 100001; lower suffixes stay free
# Fixed id suffixes below _ID_COUNTER_START: users, the org, profiles and roles, modules (1001+),
# subform modules (2001+), fields (10001+) and picklist options (20001+).
_USER_SUFFIXES = (1, 2, 3)
_ORG_SUFFIX = 100
_PROFILE_SUFFIXES = {"Administrator": 201, "Standard": 202}
_ROLE_SUFFIXES = {"CEO": 301, "Manager": 302}
_SYSTEM_FIELDS = frozenset(
    {"Created_Time", "Modified_Time", "Created_By", "Modified_By", "Last_Activity_Time"}
)
_OWNER_FIELDS = ("Owner", "Created_By", "Modified_By")
_READ_ONLY_TYPES = frozenset({"autonumber", "formula"})
#: Field types whose values a list read never renders (v7 get-records: "You can get the values of
#: subform records, multi-select lookup fields and multi-user lookup fields in the response only
#: when a specific record is fetched"). Guess for v2-v6, whose pages we could not read that far.
_SINGLE_RECORD_ONLY_TYPES = frozenset({"subform", "multiselectlookup", "multiuserlookup"})
#: Keys of a subform row that Zoho sets itself; a row sent with them has them ignored.
_ROW_SYSTEM_KEYS = frozenset({"Parent_Id", "Created_Time", "Modified_Time", "Created_By", "Modified_By"})
_TEXT_LIMITS = {"text": 255, "textarea": 32_000, "phone": 50, "website": 255, "email": 100}
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_API_PATH_RE = re.compile(r"^/crm/(?P<version>v2\.1|v[2-8])/(?P<rest>.*)$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RECORD_ID_RE = re.compile(r"^\d{1,19}$")


def format_time(moment: datetime) -> str:
    """Format a date-time as Zoho does: seconds precision, in the org's offset.

    Args:
        moment: an aware date-time.

    Returns:
        For example ``2026-11-01T10:00:00+03:00``.
    """
    return moment.astimezone(ORG_TZ).replace(microsecond=0).isoformat()


def parse_time(text: str) -> datetime:
    """Parse a Zoho date-time (ISO 8601 with an offset) into an aware ``datetime``.

    Raises:
        ValueError: the text is not an ISO 8601 date-time with an offset.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"date-time without an offset: {text!r}")
    return moment


def make_record_id(prefix: str, number: int) -> str:
    """A Zoho-style record id: ``prefix`` followed by ``number`` on 6 digits."""
    return f"{prefix}{number:06d}"


@cache
def _org_metadata() -> dict[str, tuple[dict, ...]]:
    """Every module of the org's ``zoho_fields.json``, with its field list in metadata order."""
    text = resources.files("sync_pipelines.zoho").joinpath("zoho_fields.json").read_text("utf-8")
    return {module: tuple(fields) for module, fields in json.loads(text)["modules"].items()}


@cache
def _fields_of(module: str) -> dict[str, dict]:
    return {f["api_name"]: f for f in _org_metadata()[module]}


def org_modules() -> tuple[str, ...]:
    """API names of every module in the simulated org (the nine synced ones and any others)."""
    return tuple(_org_metadata())


# --- the org: users, company, module and field metadata -------------------------------------------

#: The org's users (``GET /users``): name, e-mail, profile, role, status, confirmed. The first is
#: the admin every access token belongs to (``type=CurrentUser``). A small fixed staff: records'
#: owners are drawn from the active ones.
ORG_USERS: tuple[tuple[str, str, str, str, str, bool], ...] = (
    ("Sandbox Admin", "admin@school.example", "Administrator", "CEO", "active", True),
    ("Rana Haddad", "registrar@school.example", "Standard", "Manager", "active", True),
    ("Emre Kaya", "emre.kaya@school.example", "Standard", "Manager", "inactive", True),
)
#: ``GET /users?type=…`` and which users each type lists (v7 get-users). ``AllUsers`` is "both
#: active and inactive users"; the simulated org has no deleted or unconfirmed user.
_USER_TYPES: dict[str, Callable[[dict], bool]] = {
    "AllUsers": lambda u: u["status"] in ("active", "inactive"),
    "ActiveUsers": lambda u: u["status"] == "active",
    "DeactiveUsers": lambda u: u["status"] == "inactive",
    "ConfirmedUsers": lambda u: u["confirm"],
    "NotConfirmedUsers": lambda u: not u["confirm"],
    "DeletedUsers": lambda u: u["status"] == "deleted",
    "ActiveConfirmedUsers": lambda u: u["status"] == "active" and u["confirm"],
    "AdminUsers": lambda u: u["profile"]["name"] == "Administrator",
    "ActiveConfirmedAdmins": lambda u: (
        u["status"] == "active" and u["confirm"] and u["profile"]["name"] == "Administrator"
    ),
}
_ORG_CREATED = datetime(2025, 8, 18, 9, 0, tzinfo=ORG_TZ)


def _users_of(prefix: str) -> tuple[dict, ...]:
    """The org's users as ``GET /users`` answers them (the keys of the v7 sample, trimmed)."""
    admin = {"name": ORG_USERS[0][0], "id": make_record_id(prefix, _USER_SUFFIXES[0])}
    users = []
    for suffix, (name, email, profile, role, status, confirmed) in zip(
        _USER_SUFFIXES, ORG_USERS, strict=True
    ):
        first, _, last = name.partition(" ")
        users.append(
            {
                "id": make_record_id(prefix, suffix),
                "full_name": name,
                "first_name": first,
                "last_name": last,
                "email": email,
                "role": {"name": role, "id": make_record_id(prefix, _ROLE_SUFFIXES[role])},
                "profile": {"name": profile, "id": make_record_id(prefix, _PROFILE_SUFFIXES[profile])},
                "status": status,
                "confirm": confirmed,
                "type__s": "Regular User",
                "zuid": str(808_000_000 + suffix),
                "time_zone": "Europe/Istanbul",
                "locale": "en_GB",
                "language": "en_US",
                "country_locale": "en_GB",
                "country": "TR",
                "city": "Istanbul",
                "date_format": "dd/MM/yyyy",
                "time_format": "HH:mm",
                "created_time": format_time(_ORG_CREATED + timedelta(days=suffix - 1)),
                "created_by": dict(admin),
                "Modified_Time": format_time(_ORG_CREATED + timedelta(days=suffix - 1)),
                "Modified_By": dict(admin),
            }
        )
    return tuple(users)


def _org_of(prefix: str) -> dict:
    """The org as ``GET /org`` answers it (``org[0]``).

    Enterprise: the org has subform fields, which Zoho offers from the Enterprise edition up
    (v7 Subform API). ``mc_status``: multi-currency is on (records carry ``Currency`` and
    ``Exchange_Rate``).
    """
    return {
        "id": make_record_id(prefix, _ORG_SUFFIX),
        "company_name": "Demo BTEC School",
        "alias": None,
        "primary_email": ORG_USERS[0][1],
        "primary_zuid": str(808_000_000 + _USER_SUFFIXES[0]),
        "zgid": str(int(prefix[-7:]) + 800_000_000) if prefix[-7:].isdigit() else "800000000",
        "domain_name": f"org{prefix[-7:]}",
        "type": "production",
        "time_zone": "Europe/Istanbul",
        "country": "Turkey",
        "country_code": "TR",
        "city": "Istanbul",
        "street": None,
        "state": None,
        "zip": None,
        "phone": None,
        "mobile": None,
        "fax": None,
        "website": "https://school.example",
        "description": None,
        "photo_id": None,
        "employee_count": "40",
        "currency": "US Dollar - USD",
        "iso_code": "USD",
        "currency_symbol": "$",
        "currency_locale": "en_US",
        "mc_status": True,
        "gapps_enabled": False,
        "translation_enabled": False,
        "privacy_settings": False,
        "hipaa_compliance_enabled": False,
        "lite_users_enabled": False,
        "deletable_org_account": False,
        "hierarchy_preferences": {"type": "Role_Hierarchy"},
        "created_time": format_time(_ORG_CREATED),
        "license_details": {
            "paid": True,
            "paid_type": "enterprise",
            "paid_expiry": format_time(_ORG_CREATED + timedelta(days=730)),
            "users_license_purchased": 10,
            "trial_type": None,
            "trial_expiry": None,
            "portal_users_license_purchased": 0,
        },
    }


#: The org's standard (``generated_type: default``) modules: label and the system-defined
#: duplicate check field of upserts. Every other module is a custom module, whose system-defined
#: duplicate check field is ``Name`` (v7 upsert-records, "System-defined Duplicate Check Fields":
#: "Products - Product_Name, …, CustomModules - Name").
_STANDARD_MODULES: dict[str, tuple[str, str, str]] = {"Products": ("Product", "Products", "Product_Name")}
#: API names of fields Zoho creates itself in every module (``custom_field: false``). Guess: the
#: metadata keeps no such flag; these are the fields Zoho documents as system or standard ones.
_STANDARD_FIELDS = frozenset(
    {
        "Name",
        "Owner",
        "Email",
        "Created_By",
        "Modified_By",
        "Created_Time",
        "Modified_Time",
        "Last_Activity_Time",
        "Currency",
        "Exchange_Rate",
        "Tag",
        "Unsubscribed_Mode",
        "Unsubscribed_Time",
        "Record_Image",
        "Locked__s",
        "Product_Name",
        "Unit_Price",
        "Description",
    }
)
#: ``json_type`` and ``length`` per ``data_type``, from the v7 fields-metadata sample (Leads) where
#: it shows the type; the rest are guesses (marked).
_JSON_TYPES: dict[str, str] = {
    "text": "string",
    "textarea": "string",
    "email": "string",
    "phone": "string",
    "website": "string",
    "picklist": "string",
    "datetime": "string",
    "profileimage": "string",
    "date": "string",  # guess: not in the sample
    "autonumber": "string",  # guess: not in the sample
    "integer": "integer",
    "double": "double",
    "currency": "double",
    "boolean": "boolean",
    "lookup": "jsonobject",
    "ownerlookup": "jsonobject",
    "subform": "jsonarray",
    "multiselectlookup": "jsonarray",
    "fileupload": "jsonarray",
}
_LENGTHS: dict[str, int | None] = {
    **_TEXT_LIMITS,  # what writes enforce (the sample's Phone is 30 long: lengths are per field)
    "picklist": 120,
    "datetime": 120,
    "profileimage": 255,
    "date": 20,  # guess
    "autonumber": 255,  # guess
    "integer": 9,
    "double": 16,
    "currency": 16,
    "formula": 16,
    "boolean": 5,
    "lookup": 120,
    "ownerlookup": 120,
    "multiselectlookup": 200,
    "fileupload": 1,
    # The v7 sample leaves ``length`` out for a subform, the v8 spec lists it as required: null
    # here (guess), so that clients reading ``length`` of every field find the key.
    "subform": None,
}
#: Formula fields: return type (the ``json_type`` follows it). Guess: the metadata keeps only
#: ``data_type: formula``; Total_Amount is an amount, so a decimal.
_FORMULA_RETURN_TYPES: dict[tuple[str, str], str] = {("BTEC_Students", "Total_Amount"): "double"}


def _label(api_name: str) -> str:
    """A field or module label from its API name (guess: the metadata keeps no labels)."""
    return api_name.replace("__s", "").replace("_", " ").strip()


def _singular(plural: str) -> str:
    if plural.endswith("sses"):
        return plural[:-2]
    if plural.endswith("s") and not plural.endswith("ss"):
        return plural[:-1]
    return plural


def _module_id(prefix: str, module: str) -> str:
    return make_record_id(prefix, 1001 + org_modules().index(module))


def _subform_module_id(prefix: str, module: str, api_name: str) -> str:
    subforms = [
        (m, f["api_name"]) for m in org_modules() for f in _org_metadata()[m] if f["data_type"] == "subform"
    ]
    return make_record_id(prefix, 2001 + subforms.index((module, api_name)))


@cache
def _modules_of(prefix: str) -> tuple[dict, ...]:
    """Every module as ``GET /settings/modules`` answers it (the keys of the v7 sample).

    Guess: labels come from the API names; a custom module's ``module_name`` is Zoho's internal
    ``CustomModuleN`` (as in the v7 sample, "Vehicles" is ``CustomModule3``). The modules Zoho
    creates for subforms (``generated_type: subform``, Kaizen #31) are not listed: the org's
    metadata does not describe their fields.
    """
    admin = {"name": ORG_USERS[0][0], "id": make_record_id(prefix, _USER_SUFFIXES[0])}
    profiles = [{"name": n, "id": make_record_id(prefix, s)} for n, s in _PROFILE_SUFFIXES.items()]
    out = []
    custom = 0
    for sequence, module in enumerate(org_modules(), start=2):
        if module in _STANDARD_MODULES:
            singular, plural, _ = _STANDARD_MODULES[module]
            generated, module_name = "default", module
        else:
            custom += 1
            plural = _label(module)
            singular = _singular(plural)
            generated, module_name = "custom", f"CustomModule{custom}"
        out.append(
            {
                "id": _module_id(prefix, module),
                "api_name": module,
                "module_name": module_name,
                "singular_label": singular,
                "plural_label": plural,
                "actual_singular_label": singular,
                "actual_plural_label": plural,
                "generated_type": generated,
                "api_supported": True,
                "creatable": True,
                "editable": True,
                "deletable": True,
                "viewable": True,
                "visible": True,
                "visibility": 1,
                "status": "visible",
                "convertable": False,
                "quick_create": True,
                "show_as_tab": True,
                "presence_sub_menu": False,
                "sub_menu_available": True,
                "recycle_bin_on_delete": True,
                "feeds_required": False,
                "global_search_supported": True,
                "isBlueprintSupported": True,
                "lookupable": True,
                "access_type": "org_based",
                "has_more_profiles": False,
                "private_profile": None,
                "profile_count": len(profiles),
                "profiles": copy.deepcopy(profiles),
                "business_card_field_limit": 5,
                "sequence_number": sequence,
                "description": None,
                "web_link": None,
                "arguments": [],
                "parent_module": {},
                "modified_time": format_time(_ORG_CREATED + timedelta(days=1)),
                "modified_by": dict(admin),
            }
        )
    return tuple(out)


@cache
def _fields_metadata_of(module: str, prefix: str) -> tuple[dict, ...]:
    """The module's fields as ``GET /settings/fields`` answers them, derived from the few keys
    ``zoho_fields.json`` keeps (``api_name``, ``data_type``, ``pick_list_values``,
    ``lookup_module``, ``required``).

    Keys and their shapes follow the v7 fields-metadata sample and the v8 spec's ``fields``
    schema (every key there is required; ``subform``, ``formula``, ``lookup``, ``auto_number``,
    ``currency`` are objects, null or empty when they do not apply). Labels, flags and lengths
    that the metadata does not keep are guesses (see the tables above). ``auto_number`` is filled
    by the simulator, which knows the numbering in use.
    """
    modules = org_modules()
    field_number = 10_001 + sum(len(_org_metadata()[m]) for m in modules[: modules.index(module)])
    option_number = 20_001 + sum(
        len(f.get("pick_list_values") or [])
        for m in modules[: modules.index(module)]
        for f in _org_metadata()[m]
    )
    admin_profile = {
        "name": "Administrator",
        "id": make_record_id(prefix, _PROFILE_SUFFIXES["Administrator"]),
    }
    out = []
    for spec in _org_metadata()[module]:
        api_name, kind = spec["api_name"], spec["data_type"]
        system = api_name in _SYSTEM_FIELDS
        read_only = kind in _READ_ONLY_TYPES
        writable = not (system or read_only)
        json_type = _JSON_TYPES.get(kind, "string")
        formula: dict[str, Any] = {}
        decimal_place = 2 if kind in ("double", "currency") else None
        if kind == "formula":
            return_type = _FORMULA_RETURN_TYPES.get((module, api_name), "string")
            json_type = {"double": "double", "integer": "integer", "boolean": "boolean"}.get(
                return_type, "string"
            )
            formula = {"return_type": return_type, "expression": None}  # guess: not in the metadata
            decimal_place = 2 if return_type == "double" else None
        options = []
        for sequence, value in enumerate(spec.get("pick_list_values") or [], start=1):
            options.append(
                {
                    "display_value": value,
                    "actual_value": value,
                    "reference_value": value,
                    "id": make_record_id(prefix, option_number),
                    "sequence_number": sequence,
                    "type": "used",
                    "colour_code": None,
                }
            )
            option_number += 1
        lookup: dict[str, Any] = {}
        if kind == "lookup" and spec.get("lookup_module"):
            target = spec["lookup_module"]
            lookup = {
                "display_label": _label(api_name),
                "api_name": None,
                "id": None,
                "module": {"api_name": target, "id": _module_id(prefix, target)},
                "query_details": {},
                "revalidate_filter_during_edit": False,
                "show_fields": [],
            }
        subform = None
        if kind == "subform":
            subform = {"module": api_name, "id": _subform_module_id(prefix, module, api_name)}
        out.append(
            {
                "id": make_record_id(prefix, field_number),
                "api_name": api_name,
                "field_label": _label(api_name),
                "display_label": _label(api_name),
                "data_type": kind,
                "json_type": json_type,
                "length": _LENGTHS.get(kind, 255),
                "decimal_place": decimal_place,
                "system_mandatory": bool(spec.get("required")),
                "read_only": read_only,
                "field_read_only": False,
                "custom_field": api_name not in _STANDARD_FIELDS,
                "visible": True,
                "virtual_field": kind in _SINGLE_RECORD_ONLY_TYPES,
                "type": "used",
                "webhook": True,
                "created_source": "default",
                "display_type": -1,
                "searchable": kind not in _SINGLE_RECORD_ONLY_TYPES,
                "sortable": kind not in _SINGLE_RECORD_ONLY_TYPES,
                "filterable": kind not in _SINGLE_RECORD_ONLY_TYPES,
                "mass_update": writable and kind not in _SINGLE_RECORD_ONLY_TYPES,
                "businesscard_supported": kind not in _SINGLE_RECORD_ONLY_TYPES,
                "operation_type": {
                    "web_create": writable,
                    "web_update": writable,
                    "api_create": writable,
                    "api_update": writable,
                },
                "view_type": {"view": True, "edit": writable, "create": writable, "quick_create": False},
                "profiles": [{"permission_type": "read_write", **admin_profile}],
                "pick_list_values": options,
                "pick_list_values_sorted_lexically": False,
                "enable_colour_code": False,
                "lookup": lookup,
                "multiselectlookup": {},  # guess: the metadata does not say what it links to
                "formula": formula,
                "currency": {"rounding_option": "normal", "precision": 2} if kind == "currency" else {},
                "auto_number": {},
                "unique": {},
                "subform": subform,
                "associated_module": copy.deepcopy(subform),
                "textarea": {"type": "large"} if kind == "textarea" else None,
                "crypt": None,
                "tooltip": None,
                "history_tracking": None,
                "external": None,
                "hipaa_compliance_enabled": False,
                "created_time": None,
                "modified_time": None,
            }
        )
        field_number += 1
    return tuple(out)


@dataclass(frozen=True)
class RequestLog:
    """One request the simulator answered.

    Attributes:
        method: HTTP method.
        path: URL path, without the query string.
        query: query parameters (last value wins).
        headers: request headers of interest (``If-Modified-Since`` when sent).
        status: HTTP status answered; 0 when the connection was closed without an answer (an
            injected ``drop`` or ``lost_answer``).
        credits: API credits charged for the call.
        time: the simulator clock when the request was answered.
        body: the parsed JSON body of API writes (never logged for the token endpoint).
        fault: the fault the simulator's :class:`FaultPlan` injected into this request, if any.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int
    credits: int
    time: datetime
    body: Any = None
    fault: str | None = None


@dataclass
class _Response:
    status: int
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    credits: int = 0
    drop: bool = False  # close the connection without answering
    raw: bytes | None = None  # a binary body (a Bulk Read ZIP), sent as is with headers' type


class _ApiError(Exception):
    """A request-level error, answered with Zoho's error body."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details if details is not None else {}

    def response(self) -> _Response:
        return _Response(
            self.status,
            {"code": self.code, "message": self.message, "status": "error", "details": self.details},
        )


@dataclass(frozen=True)
class _PageToken:
    signature: tuple
    cursor: tuple | None  # sort key of the last record before the page; None = from the start
    offset: int  # records served before the page (gives the page number and the 100,000 cap)
    expires: datetime


@dataclass(frozen=True)
class _SortedRead:
    """One list read's records, filtered by ``If-Modified-Since`` and sorted, as of a generation."""

    generation: int  # the module's generation it was built at; stale once the module changes
    keys: list[tuple]  # the sort key of each record, in the order served
    records: list[dict]  # the live records (never handed out: pages answer projections)


@dataclass
class _Failure:
    remaining: int
    status: int
    code: str
    path_contains: str


@dataclass
class _GrantCode:
    """A self-client grant code: for one client, with the scopes it grants, until it expires or is used."""

    client_id: str
    scopes: tuple[str, ...]
    expires: datetime
    used: bool = False


@dataclass
class _BulkJob:
    """One Bulk Read job: what it exports, how far it got, and its ZIP once completed."""

    id: str
    module: str
    fields: list[str] | None  # None: every field of the module
    page: int
    created_time: str
    state: str = "ADDED"
    polls: int = 0
    fail: bool = False
    count: int = 0
    more_records: bool = False
    archive: bytes | None = None


def _record_error(code: str, message: str, details: dict) -> dict:
    return {"code": code, "details": details, "message": message, "status": "error"}


class ZohoSimulator(LoopbackServer):
    """An in-process Zoho CRM: accounts endpoint and CRM API v8 on one loopback HTTP server.

    Example:
        >>> with ZohoSimulator(data={"BTEC_Teachers": [...]}) as sim:  # doctest: +SKIP
        ...     requests.post(f"{sim.accounts_url}/oauth/v2/token", data={...})

    Args:
        data: module API name → records in API shape (lookups as ``{"name","id"}``). Records keep
            their ``id`` when they have one; ``None`` is an empty org.
        clients: client id → (client secret, refresh token) accepted by the token endpoint.
        token_ttl: lifetime of access tokens, in seconds (``expires_in``).
        refresh_limit_per_minute: refreshes allowed per client within any 60 s (a sliding window;
            the "about 5 a minute" of other Zoho products' pages); ``None`` = unlimited.
        token_rate_limit: ``(count, seconds)``: Zoho CRM's documented throttle, per refresh token,
            e.g. ``(10, 600.0)``. The first refresh opens a window of ``seconds``; ``count``
            refreshes succeed in it, every further request is answered "Access Denied" until the
            window ends, and the next refresh opens a new one. ``None`` (the default) = none.
        daily_credit_limit: API credits per rolling 24 hours; ``None`` = unlimited.
        max_concurrency: API calls allowed in flight at once; ``None`` = unlimited.
        clock: returns the current aware date-time; defaults to the wall clock in the org's offset.
            Token expiry, throttling windows, credits and Modified_Time all follow it.
        id_prefix: first 13 digits of the ids this org assigns (another tenant may use another).
        page_token_ttl: lifetime of ``page_token`` values, in seconds.
        response_delay: seconds every API call takes while counted in flight (to provoke the
            concurrency limit in tests).
        faults: a seeded :class:`~sync_pipelines.sandbox.faults.FaultPlan` deciding which API and
            token requests fail and how (shared with a Moodle simulator if given to both);
            ``None`` injects nothing.
        scopes: the OAuth scopes the token endpoint answers as granted (``scope``) for the
            refresh tokens of ``clients``; a refresh token got by exchanging a grant code holds the
            scopes of its code.
        enforce_scopes: refuse an API call that the access token's scopes do not cover, with
            HTTP 401 ``OAUTH_SCOPE_MISMATCH`` (see :func:`scope_needed`). Off by default: the
            default scopes cover everything anyway.
        bulk_job_polls: how many status polls a Bulk Read job takes to finish: ``IN PROGRESS``
            before that, ``COMPLETED`` (or ``FAILURE``, :meth:`fail_bulk_reads`) at that poll.
            Guess: a real job runs on Zoho's schedule, not the client's polls; counting polls
            keeps tests deterministic without a clock.
    """

    thread_name = "zoho-simulator"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def __init__(
        self,
        *,
        data: dict[str, list[dict]] | None = None,
        clients: dict[str, tuple[str, str]] | None = None,
        token_ttl: int = 3600,
        refresh_limit_per_minute: int | None = 5,
        token_rate_limit: tuple[int, float] | None = None,
        daily_credit_limit: int | None = None,
        max_concurrency: int | None = 10,
        clock: Callable[[], datetime] | None = None,
        id_prefix: str = DEFAULT_ID_PREFIX,
        page_token_ttl: int = 86_400,
        response_delay: float = 0.0,
        faults: FaultPlan | None = None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        enforce_scopes: bool = False,
        bulk_job_polls: int = 2,
    ) -> None:
        if len(id_prefix) != 13 or not id_prefix.isdigit():
            raise ValueError("id_prefix must be 13 digits (ids are 19 digits)")
        self.clients = dict(clients or {DEFAULT_CLIENT_ID: (DEFAULT_CLIENT_SECRET, DEFAULT_REFRESH_TOKEN)})
        self.token_ttl = token_ttl
        self.refresh_limit_per_minute = refresh_limit_per_minute
        if token_rate_limit is not None and (token_rate_limit[0] < 0 or token_rate_limit[1] <= 0):
            raise ValueError("token_rate_limit is (count >= 0, seconds > 0)")
        self.token_rate_limit = token_rate_limit
        self.daily_credit_limit = daily_credit_limit
        self.max_concurrency = max_concurrency
        self.page_token_ttl = page_token_ttl
        self.response_delay = response_delay
        self.faults = faults
        self.id_prefix = id_prefix
        self.scopes = tuple(scopes)
        self.enforce_scopes = enforce_scopes
        self._users = _users_of(id_prefix)
        self._org = _org_of(id_prefix)
        self._clock = clock or (lambda: datetime.now(ORG_TZ))
        self._lock = threading.RLock()
        self._request = threading.local()  # per handler thread: what the call being served asked
        # Every change to a module's live records goes through ``_changed(module)``, which makes
        # the sorted lists remembered for list reads (``_sorted_read``) stale.
        self._records: dict[str, dict[str, dict]] = {m: {} for m in org_modules()}
        self._generations: dict[str, int] = dict.fromkeys(org_modules(), 0)
        self._sorted_reads: OrderedDict[tuple, _SortedRead] = OrderedDict()
        self._deleted: dict[str, list[dict]] = {m: [] for m in org_modules()}
        self._max_id = int(make_record_id(id_prefix, _ID_COUNTER_START))
        self._autonumbers: dict[tuple[str, str], tuple[str, int, int]] = {}
        self._tokens: dict[str, tuple[str, datetime]] = {}
        #: access token → the scopes it was granted with.
        self._token_scopes: dict[str, tuple[str, ...]] = {}
        #: grant code → what it grants; a code is answered once (then ``used``).
        self._grant_codes: dict[str, _GrantCode] = {}
        #: refresh token minted by a grant-code exchange → (client id, its scopes).
        self._minted_refresh: dict[str, tuple[str, tuple[str, ...]]] = {}
        #: (module API name, field API name) the org no longer has (:meth:`remove_field`).
        self._removed_fields: set[tuple[str, str]] = set()
        self._refreshes: dict[str, deque[datetime]] = {}
        #: refresh token → (start of its throttle window, refreshes granted in it).
        self._token_windows: dict[str, tuple[datetime, int]] = {}
        self._credits: deque[tuple[datetime, int]] = deque()
        self._page_tokens: dict[str, _PageToken] = {}
        self._failures: list[_Failure] = []
        self._in_flight = 0
        if bulk_job_polls < 1:
            raise ValueError("bulk_job_polls must be >= 1")
        self.bulk_job_polls = bulk_job_polls
        self._bulk_jobs: dict[str, _BulkJob] = {}
        self._bulk_downloads: deque[datetime] = deque()
        self._bulk_failures = 0
        super().__init__()
        self.requests: list[RequestLog] = []
        for module, records in (data or {}).items():
            self._check_module(module)
            for rec in records:
                self.insert(module, rec)

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def accounts_url(self) -> str:
        """Where the token endpoint lives (``{accounts_url}/oauth/v2/token``): the base URL."""
        return self.base_url

    @property
    def api_domain(self) -> str:
        """What the token endpoint answers as ``api_domain``: the base URL."""
        return self.base_url

    # --- state, for tests and the demo --------------------------------------------------------------

    def now(self) -> datetime:
        """The simulator's clock."""
        return self._clock()

    @property
    def users(self) -> list[dict]:
        """Copies of the org's users, as ``GET /users?type=AllUsers`` lists them (admin first)."""
        return copy.deepcopy(list(self._users))

    @property
    def modules(self) -> list[dict]:
        """Copies of the org's modules, as ``GET /settings/modules`` lists them."""
        return copy.deepcopy(list(_modules_of(self.id_prefix)))

    @property
    def org(self) -> dict:
        """A copy of the org, as ``GET /org`` answers it (``org[0]``)."""
        return copy.deepcopy(self._org)

    def insert(self, module: str, record: dict) -> str:
        """Add a record as-is (no validation: dirty data is welcome).

        Assigns ``id`` when missing; ``Created_Time``/``Modified_Time`` where the module has them
        and they are missing; ``Owner`` (one of the org's active users, picked by id),
        ``Created_By`` and ``Modified_By`` (the owner) where the module has them and they are
        missing; autonumber fields left empty; and an ``id`` to every subform row without one
        (rows given an id keep it). Lookups and owners given as a bare id or as ``{"id"}`` are
        stored as ``{"name","id"}`` (owners ``{"name","id","email"}``); subform rows carry
        ``Parent_Id``.

        Returns:
            The record id.
        """
        self._check_module(module)
        rec = copy.deepcopy(record)
        meta = _fields_of(module)
        with self._lock:
            for name in ("Created_Time", "Modified_Time"):
                if name not in meta:
                    rec.pop(name, None)
            if rec.get("id"):
                rec["id"] = str(rec["id"])
                self._note_id(rec["id"])
            else:
                rec["id"] = self._new_id()
            stamp = format_time(self.now())
            if "Created_Time" in meta and not rec.get("Created_Time"):
                rec["Created_Time"] = rec.get("Modified_Time") or stamp
            if "Modified_Time" in meta and not rec.get("Modified_Time"):
                rec["Modified_Time"] = rec.get("Created_Time") or stamp
            owner = self._user_value(rec.get("Owner")) or self._default_owner(rec["id"])
            for name in _OWNER_FIELDS:
                if name in meta and not rec.get(name):
                    rec[name] = owner
            self._fill_autonumbers(module, rec)
            self._normalize(module, rec)
            self._records[module][rec["id"]] = rec
            self._changed(module)
            return rec["id"]

    def update(self, module: str, record_id: str, **fields: Any) -> None:
        """Change fields of a record as-is and bump its ``Modified_Time`` (unless given).

        A subform given as a list replaces the record's rows as given; rows without an ``id`` get
        one.

        Raises:
            KeyError: no such record.
        """
        self._check_module(module)
        with self._lock:
            rec = self._records[module].get(str(record_id))
            if rec is None:
                raise KeyError(f"{module} has no record {record_id}")
            try:
                rec.update(copy.deepcopy(fields))
                if "Modified_Time" in _fields_of(module) and "Modified_Time" not in fields:
                    rec["Modified_Time"] = format_time(self.now())
                self._normalize(module, rec)
            finally:
                self._changed(module)

    def set_formula(self, module: str, record_id: str, field: str, value: Any) -> None:
        """Give a formula field a new value, as Zoho's recomputation does: ``Modified_Time``
        (and ``Modified_By``) stay as they are, so incremental reads do not see the change.

        Raises:
            KeyError: no such record.
            ValueError: ``field`` is not a formula field of ``module``.
        """
        self._check_module(module)
        meta = _fields_of(module).get(field)
        if meta is None or meta["data_type"] != "formula":
            raise ValueError(f"{module}.{field} is not a formula field")
        with self._lock:
            rec = self._records[module].get(str(record_id))
            if rec is None:
                raise KeyError(f"{module} has no record {record_id}")
            rec[field] = copy.deepcopy(value)
            self._changed(module)

    def delete(self, module: str, record_id: str, *, permanent: bool = False) -> None:
        """Delete a record: it moves to the recycle bin (or is gone for good with ``permanent``).

        Either way it is listed by ``GET /{module}/deleted``.

        Raises:
            KeyError: no such record.
        """
        self._check_module(module)
        with self._lock:
            rec = self._records[module].pop(str(record_id), None)
            if rec is None:
                raise KeyError(f"{module} has no record {record_id}")
            self._changed(module)
            self._deleted[module].append(self._deleted_entry(module, rec, permanent=permanent))

    def record(self, module: str, record_id: str) -> dict | None:
        """A copy of one live record, or ``None``."""
        self._check_module(module)
        with self._lock:
            rec = self._records[module].get(str(record_id))
            return copy.deepcopy(rec) if rec is not None else None

    def records(self, module: str) -> list[dict]:
        """Copies of the live records of ``module``, in id (creation) order."""
        self._check_module(module)
        with self._lock:
            return [copy.deepcopy(r) for r in self._sorted_by_id(module)]

    def deleted(self, module: str) -> list[dict]:
        """Copies of the deleted-record entries of ``module``, oldest first."""
        self._check_module(module)
        with self._lock:
            return copy.deepcopy(self._deleted[module])

    def expire_tokens(self) -> None:
        """Make every access token issued so far invalid (the next API call answers 401)."""
        with self._lock:
            self._tokens.clear()

    def issue_grant_code(
        self,
        client_id: str = DEFAULT_CLIENT_ID,
        *,
        scopes: Iterable[str] | None = None,
        ttl_seconds: float = GRANT_CODE_TTL_SECONDS,
    ) -> str:
        """A grant code, as the API console's self client "Generate Code" tab makes one.

        The token endpoint exchanges it (``grant_type=authorization_code``) once, before
        ``ttl_seconds`` pass on the simulator's clock, for an access token and a new refresh token
        holding ``scopes`` (default :attr:`scopes`).

        Raises:
            KeyError: ``client_id`` is not one of the simulator's clients.
        """
        with self._lock:
            if client_id not in self.clients:
                raise KeyError(f"the simulator has no client {client_id!r}")
            code = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
            granted = tuple(self.scopes if scopes is None else scopes)
            expires = self.now() + timedelta(seconds=ttl_seconds)
            self._grant_codes[code] = _GrantCode(client_id, granted, expires)
            return code

    def refresh_tokens(self, client_id: str = DEFAULT_CLIENT_ID) -> dict[str, tuple[str, ...]]:
        """The refresh tokens grant-code exchanges minted for ``client_id``, with their scopes."""
        with self._lock:
            return {t: s for t, (c, s) in self._minted_refresh.items() if c == client_id}

    def remove_field(self, module: str, api_name: str) -> None:
        """Make the org lack a field, as if an admin deleted it: ``/settings/fields`` no longer
        lists it and record reads no longer answer it (records keep their value, unseen).

        Raises:
            KeyError: no such module or field.
        """
        self._check_module(module)
        if api_name not in _fields_of(module):
            raise KeyError(f"{module} has no field {api_name!r}")
        with self._lock:
            self._removed_fields.add((module, api_name))
            self._changed(module)

    def restore_fields(self) -> None:
        """Undo every :meth:`remove_field`."""
        with self._lock:
            for module in {m for m, _ in self._removed_fields}:
                self._changed(module)
            self._removed_fields.clear()

    def fail_next(
        self, count: int, *, status: int = 500, code: str = "INTERNAL_ERROR", path_contains: str = ""
    ) -> None:
        """Answer the next ``count`` matching calls with an error instead of serving them.

        Replaces any injected failure still pending, so ``fail_next(0)`` cancels it.

        Args:
            count: how many calls fail.
            status: HTTP status of the injected error.
            code: Zoho error code of the injected error.
            path_contains: only paths containing this fail. Empty matches every API call under
                ``/crm/``; a non-empty value matches any path, so ``"/oauth/"`` makes the token
                endpoint fail.
        """
        with self._lock:
            self._failures = [_Failure(count, status, code, path_contains)] if count > 0 else []

    def set_faults(self, faults: FaultPlan | None) -> None:
        """Inject faults from ``faults`` from the next request on (``None`` stops injecting)."""
        with self._lock:
            self.faults = faults

    def fail_bulk_reads(self, count: int = 1) -> None:
        """Make the next ``count`` Bulk Read jobs created end in ``FAILURE`` (0 cancels)."""
        with self._lock:
            self._bulk_failures = max(0, count)

    def bulk_job(self, job_id: str) -> dict | None:
        """A Bulk Read job as the simulator holds it (``state``, ``page``, ``count``...), or ``None``."""
        with self._lock:
            job = self._bulk_jobs.get(str(job_id))
            if job is None:
                return None
            return {k: v for k, v in job.__dict__.items() if k != "archive"}

    def reset_log(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.requests.clear()

    def credits_used(self) -> int:
        """API credits charged within the rolling 24-hour window."""
        with self._lock:
            return self._credit_usage(self.now())

    # --- internals: records -------------------------------------------------------------------------

    @staticmethod
    def _check_module(module: str) -> None:
        if module not in _org_metadata():
            raise KeyError(f"the simulated org has no module {module!r}")

    def _changed(self, module: str) -> None:
        """Note that ``module``'s live records changed: its remembered sorted reads are stale.

        Every path that inserts, changes or removes a record of ``self._records`` calls this (with
        the lock held), after the change.
        """
        self._generations[module] += 1

    def _sorted_read(self, module: str, sort_by: str, sort_order: str, since: datetime | None) -> _SortedRead:
        """The module's records modified at or after ``since`` (all for ``None``), in serving order.

        Built once and remembered while the module does not change, so that the pages of one read
        only slice it: sorting 100,000 records again for every page of 200 made a full read
        quadratic. Call with the lock held.
        """
        wanted = (module, sort_by, sort_order, since)
        generation = self._generations[module]
        read = self._sorted_reads.get(wanted)
        if read is not None and read.generation == generation:
            self._sorted_reads.move_to_end(wanted)
            return read
        rows = list(self._records[module].values())
        if since is not None:
            rows = [r for r in rows if _time_or_min(r.get("Modified_Time")) >= since]
        keyed = sorted(
            ((_sort_key(r, sort_by), r) for r in rows),
            key=lambda pair: pair[0],
            reverse=sort_order == "desc",
        )
        read = _SortedRead(generation, [k for k, _ in keyed], [r for _, r in keyed])
        self._sorted_reads[wanted] = read
        self._sorted_reads.move_to_end(wanted)
        while len(self._sorted_reads) > SORTED_READS_KEPT:
            self._sorted_reads.popitem(last=False)
        return read

    def _new_id(self) -> str:
        self._max_id += 1
        return str(self._max_id)

    def _note_id(self, given: str) -> None:
        """Keep ids assigned later above an id given by the caller (records and subform rows)."""
        if given.isdigit():
            self._max_id = max(self._max_id, int(given))

    def _sorted_by_id(self, module: str) -> list[dict]:
        return sorted(self._records[module].values(), key=lambda r: int(r["id"]))

    @staticmethod
    def _display_name(rec: dict) -> str | None:
        for name in ("Name", "Product_Name"):
            if rec.get(name):
                return str(rec[name])
        return None

    def _normalize(self, module: str, rec: dict) -> None:
        """Store lookups as ``{"name","id"}``, owners as ``{"name","id","email"}`` (when the id is
        one of the org's users) and subform rows with an ``id`` and ``Parent_Id``."""
        for api_name, meta in _fields_of(module).items():
            value = rec.get(api_name)
            if value is None:
                continue
            kind = meta["data_type"]
            if kind == "lookup":
                if isinstance(value, str | int):
                    value = {"id": str(value)}
                if isinstance(value, dict) and "name" not in value and value.get("id"):
                    target = self._records.get(meta.get("lookup_module", ""), {}).get(str(value["id"]))
                    rec[api_name] = {
                        "name": self._display_name(target) if target else None,
                        "id": str(value["id"]),
                    }
            elif kind == "ownerlookup":
                rec[api_name] = self._user_value(value) or value
            elif kind == "subform" and isinstance(value, list):
                parent = {"name": self._display_name(rec), "id": rec["id"]}
                rows = []
                for row in value:
                    if not isinstance(row, dict):
                        rows.append(row)  # as-is: dirty data is welcome
                        continue
                    row = {k: v for k, v in row.items() if k not in _ROW_SYSTEM_KEYS}
                    if row.get("id"):
                        row["id"] = str(row["id"])
                        self._note_id(row["id"])
                    else:
                        row["id"] = self._new_id()
                    row["Parent_Id"] = dict(parent)
                    rows.append(row)
                rec[api_name] = rows

    def _user_by_id(self, user_id: Any) -> dict | None:
        return next((u for u in self._users if u["id"] == str(user_id)), None)

    def _user_value(self, value: Any) -> dict | None:
        """``{"name","id","email"}`` of the org user ``value`` names (a bare id or ``{"id"}``)."""
        user_id = value.get("id") if isinstance(value, dict) else value
        if not isinstance(user_id, str | int) or not str(user_id):
            return None
        user = self._user_by_id(user_id)
        return {"name": user["full_name"], "id": user["id"], "email": user["email"]} if user else None

    def _default_owner(self, record_id: str) -> dict:
        """The owner of a record inserted without one: an active user, the same for the same id."""
        active = [u for u in self._users if u["status"] == "active"]
        user = active[int(record_id) % len(active)] if record_id.isdigit() else active[0]
        return {"name": user["full_name"], "id": user["id"], "email": user["email"]}

    def _current_user(self) -> dict:
        """The user every access token belongs to (``type=CurrentUser``): the admin."""
        return self._users[0]

    @staticmethod
    def _minified(user: Any) -> dict | None:
        """``{"name","id"}`` of a user, as write results and deleted entries show one."""
        if isinstance(user, dict) and user.get("id"):
            return {"name": user.get("name") or user.get("full_name"), "id": str(user["id"])}
        return None

    def _fill_autonumbers(self, module: str, rec: dict) -> None:
        """Give empty autonumber fields the next number, following the format already in use."""
        for api_name, meta in _fields_of(module).items():
            if meta["data_type"] != "autonumber":
                continue
            prefix, width, highest = self._autonumbers.get((module, api_name), ("", 0, 0))
            if not rec.get(api_name):
                rec[api_name] = f"{prefix}{highest + 1:0{width}d}"
            match = re.match(r"^(.*?)(\d+)$", str(rec[api_name]))
            if match and int(match.group(2)) > highest:
                self._autonumbers[(module, api_name)] = (
                    match.group(1),
                    len(match.group(2)),
                    int(match.group(2)),
                )

    def _deleted_entry(self, module: str, rec: dict, *, permanent: bool) -> dict:
        """One entry of ``GET /{module}/deleted`` (v7 get-deleted-records keys). Permanently
        deleted entries carry no name, creator or deleter (as the v8 spec's example shows)."""
        deleter = self._minified(self._current_user())
        creator = self._minified(rec.get("Created_By")) or deleter
        return {
            "id": rec["id"],
            "display_name": None if permanent else self._display_name(rec),
            "type": "permanent" if permanent else "recycle",
            "deleted_time": format_time(self.now()),
            "deleted_by": None if permanent else deleter,
            "created_by": None if permanent else creator,
        }

    # --- internals: HTTP entry point -----------------------------------------------------------------

    def _handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> _Response:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        logged_headers = {}
        if headers.get("If-Modified-Since"):
            logged_headers["If-Modified-Since"] = headers["If-Modified-Since"]
        parsed_body: Any = None
        fault = self._draw_fault(method, path)
        try:
            failure = self._fault_response(fault, path) or self._take_failure(path)
            if failure is not None:
                response = failure
            elif path == "/oauth/v2/token":
                response = self._token_endpoint(method, query, body)
            elif path == CONSOLE_GRANT_CODE_PATH:
                response = self._console_grant_code(method, query, body)
            elif path.startswith("/crm/"):
                parsed_body = _json_or_none(body)
                response = self._api_call(method, path, query, headers, body)
            else:
                response = _ApiError(
                    404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one"
                ).response()
        except Exception:  # a simulator bug must still answer like the service does
            logger.exception("Zoho simulator failed on %s %s", method, raw_path)
            response = _ApiError(500, "INTERNAL_ERROR", "Internal Server Error").response()
        if fault == "lost_answer":
            response = _Response(0, drop=True, credits=response.credits)  # applied, never answered
        with self._lock:
            self.requests.append(
                RequestLog(
                    method=method,
                    path=path,
                    query=query,
                    headers=logged_headers,
                    status=response.status,
                    credits=response.credits,
                    time=self.now(),
                    body=parsed_body,
                    fault=fault,
                )
            )
        logger.info("%s %s -> %s (%s credits)", method, raw_path, response.status, response.credits)
        return response

    def _draw_fault(self, method: str, path: str) -> str | None:
        """Ask the fault plan about this request (API and token endpoint only); sleep if ``slow``."""
        plan = self.faults
        token_endpoint = path == "/oauth/v2/token"
        if plan is None or not (token_endpoint or path.startswith("/crm/")):
            return None
        # lost_answer needs a write that is safe to repeat: upsert and update (never insert).
        write = (method == "POST" and path.endswith("/upsert")) or (
            method == "PUT" and _API_PATH_RE.match(path) is not None
        )
        fault = plan.decide("zoho", write=write, token_endpoint=token_endpoint, target=f"{method} {path}")
        if fault == "slow":
            time.sleep(plan.slow_seconds)
        return fault

    def _fault_response(self, fault: str | None, path: str) -> _Response | None:
        """The answer of a fault that fails the request before it has any effect, or ``None``."""
        if fault == "drop":
            return _Response(0, drop=True)
        if fault == "429":
            if path == "/oauth/v2/token":  # the accounts server throttles with a 400
                return _Response(
                    400,
                    {
                        "error": "Access Denied",
                        "error_description": (
                            "You have made too many requests continuously. Please try again after some time."
                        ),
                        "status": "failure",
                    },
                )
            return _ApiError(
                429, "TOO_MANY_REQUESTS", "You have exceeded the concurrency limit of the API"
            ).response()
        if fault == "500":
            return _ApiError(500, "INTERNAL_ERROR", "Internal Server Error").response()
        if fault == "503":
            return _ApiError(503, "SERVICE_UNAVAILABLE", "the service is temporarily unavailable").response()
        if fault == "expire_token":
            self.expire_tokens()  # then served: the call answers 401 INVALID_TOKEN
        return None

    def _take_failure(self, path: str) -> _Response | None:
        with self._lock:
            for failure in self._failures:
                # An empty path_contains means "any API call", never the token endpoint.
                matches = failure.path_contains in path if failure.path_contains else path.startswith("/crm/")
                if failure.remaining > 0 and matches:
                    failure.remaining -= 1
                    self._failures = [f for f in self._failures if f.remaining > 0]
                    return _ApiError(
                        failure.status, failure.code, "injected failure (simulator fail_next)"
                    ).response()
        return None

    # --- internals: the accounts endpoint ------------------------------------------------------------

    def _token_endpoint(self, method: str, query: dict[str, str], body: bytes) -> _Response:
        if method != "POST":
            return _ApiError(
                404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one"
            ).response()
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        params = {**query, **form}  # Zoho accepts the parameters in the query string as well
        grant_type = params.get("grant_type")
        if grant_type not in ("refresh_token", "authorization_code"):
            return _Response(200, {"error": "unsupported_grant_type"})
        client_id = params.get("client_id", "")
        known = self.clients.get(client_id)
        if known is None or known[0] != params.get("client_secret"):
            # Also what a client registered in another data centre gets (guess: the accounts
            # server of one DC does not know the clients of another).
            return _Response(200, {"error": "invalid_client"})
        if grant_type == "authorization_code":
            return self._exchange_code(client_id, params.get("code", ""))
        refresh = params.get("refresh_token", "")
        with self._lock:
            minted = self._minted_refresh.get(refresh)
        if known[1] != refresh and (minted is None or minted[0] != client_id):
            return _Response(200, {"error": "invalid_code"})
        granted = minted[1] if minted is not None and known[1] != refresh else self.scopes
        with self._lock:
            now = self.now()
            window = self._refreshes.setdefault(client_id, deque())
            while window and now - window[0] >= REFRESH_WINDOW:
                window.popleft()
            sliding_full = (
                self.refresh_limit_per_minute is not None and len(window) >= self.refresh_limit_per_minute
            )
            # Zoho CRM (v4-v8 "Token Validity"; Zoho Accounts "OAuth token limits"): "a maximum of
            # 10 access tokens from a refresh token in a span of 10 minutes"; past that, creation
            # "will be blocked for the rest of the ten minutes". A fixed window opened by the first
            # refresh is a guess at how "span" is counted, and so is not counting refused requests.
            opened, refreshed = self._token_windows.get(refresh, (now, 0))
            fixed_full = False
            if self.token_rate_limit is not None:
                count, seconds = self.token_rate_limit
                if now - opened >= timedelta(seconds=seconds):
                    opened, refreshed = now, 0  # the window has passed: the next refresh opens one
                fixed_full = refreshed >= count
            if sliding_full or fixed_full:
                # Zoho's CRM pages show this body; the Accounts page another description ("Token
                # creation throttle limit reached..."). HTTP 400 follows the reference note; Kaizen
                # #43 says the status "remains 200": the client looks at the body either way.
                return _Response(
                    400,
                    {
                        "error": "Access Denied",
                        "error_description": (
                            "You have made too many requests continuously. Please try again after some time."
                        ),
                        "status": "failure",
                    },
                )
            window.append(now)
            if self.token_rate_limit is not None:
                self._token_windows[refresh] = (opened, refreshed + 1)
            token = self._issue_access_token(client_id, granted, now)
        return _Response(
            200,
            {
                "access_token": token,
                "scope": " ".join(granted),
                "expires_in": self.token_ttl,
                "api_domain": self.api_domain,
                "token_type": "Bearer",
            },
        )

    def _issue_access_token(self, client_id: str, scopes: tuple[str, ...], now: datetime) -> str:
        """A new access token (call with the lock held)."""
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self._tokens[token] = (client_id, now + timedelta(seconds=self.token_ttl))
        self._token_scopes[token] = scopes
        return token

    def _console_grant_code(self, method: str, query: dict[str, str], body: bytes) -> _Response:
        """:data:`CONSOLE_GRANT_CODE_PATH`: a grant code, as the API console's self client gives one."""
        if method != "POST":
            return _ApiError(405, "INVALID_REQUEST_METHOD", "use POST").response()
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        params = {**query, **form}
        scopes = [s for s in re.split(r"[\s,]+", params.get("scope", "")) if s] or None
        try:
            ttl = float(params.get("expiry_seconds") or GRANT_CODE_TTL_SECONDS)
            code = self.issue_grant_code(
                params.get("client_id", DEFAULT_CLIENT_ID), scopes=scopes, ttl_seconds=ttl
            )
        except (KeyError, ValueError) as exc:
            return _Response(400, {"error": "invalid_client", "error_description": str(exc)})
        return _Response(200, {"code": code, "expires_in": int(ttl)})

    def _exchange_code(self, client_id: str, code: str) -> _Response:
        """``grant_type=authorization_code``: a self client's grant code for an access token and a
        refresh token (Zoho Accounts, "Self Client - Authorization code flow": answer
        ``access_token``, ``refresh_token``, ``api_domain``, ``token_type``, ``expires_in``; the
        ``scope`` key as the refresh answers it). A code that is unknown, expired, already used or
        another client's is ``{"error": "invalid_code"}`` with HTTP 200 (guess: the error Zoho
        documents for a refused code; the status as for refused refreshes). A refused exchange
        does not use the code up (guess)."""
        with self._lock:
            now = self.now()
            grant = self._grant_codes.get(code)
            if grant is None or grant.used or grant.expires <= now or grant.client_id != client_id:
                return _Response(200, {"error": "invalid_code"})
            grant.used = True
            refresh = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
            self._minted_refresh[refresh] = (client_id, grant.scopes)
            token = self._issue_access_token(client_id, grant.scopes, now)
        return _Response(
            200,
            {
                "access_token": token,
                "refresh_token": refresh,
                "scope": " ".join(grant.scopes),
                "api_domain": self.api_domain,
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
            },
        )

    # --- internals: the CRM API ----------------------------------------------------------------------

    def _api_call(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> _Response:
        with self._lock:
            if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
                return _ApiError(
                    429,
                    "TOO_MANY_REQUESTS",
                    "You have exceeded the concurrency limit of the API",
                    {"limit": self.max_concurrency},
                ).response()
            self._in_flight += 1
        try:
            if self.response_delay:
                time.sleep(self.response_delay)
            try:
                token = self._authenticate(headers.get("Authorization"))
                bulk = _BULK_PATH_RE.match(path)
                if bulk is not None:
                    response = self._bulk(method, bulk, token, body)
                else:
                    if self.enforce_scopes:
                        self._check_scope(token, method, path)
                    response = self._route(method, path, query, headers, body)
            except _ApiError as error:
                response = error.response()
            self._add_credit_header(response)
            return response
        finally:
            with self._lock:
                self._in_flight -= 1

    def _authenticate(self, authorization: str | None) -> str:
        """The valid access token the call carries."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme != "Zoho-oauthtoken" or not token.strip():
            # Zoho answers a missing header or another scheme ("Bearer") with AUTHENTICATION_FAILURE.
            raise _ApiError(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        with self._lock:
            issued = self._tokens.get(token.strip())
            if issued is None or issued[1] <= self.now():
                raise _ApiError(401, "INVALID_TOKEN", "invalid oauth token")
        return token.strip()

    def _check_scope(self, token: str, method: str, path: str) -> None:
        """Refuse a call the token's scopes do not cover (``enforce_scopes``)."""
        match = _API_PATH_RE.match(path)
        needed = scope_needed(method, match.group("rest")) if match else None
        if needed is None:
            return
        with self._lock:
            granted = self._token_scopes.get(token, self.scopes)
        if not any(scope_covers(g, n) for n in needed for g in granted):
            # The v8 error table: 401 OAUTH_SCOPE_MISMATCH; the message is a guess.
            raise _ApiError(401, "OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL")

    def _route(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> _Response:
        match = _API_PATH_RE.match(path)
        if match is None:
            raise _invalid_url()
        version = match.group("version")
        self._request.version = version  # the API version of the call this thread serves
        segments = match.group("rest").split("/")
        if segments == ["settings", "fields"]:
            self._require_method(method, "GET")
            return self._settings_fields(query)
        if segments[:2] == ["settings", "modules"] and len(segments) <= 3:
            self._require_method(method, "GET")
            return self._settings_modules(segments[2] if len(segments) == 3 else None, query)
        if segments == ["org"]:
            self._require_method(method, "GET")
            return self._get_org()
        if segments[0] == "users" and len(segments) <= 2:
            self._require_method(method, "GET")
            return self._get_users(segments[1] if len(segments) == 2 else None, query)
        if segments == ["coql"]:
            self._require_method(method, "POST")
            return self._coql(_json_body(body))
        module = segments[0]
        if segments[1:] == ["actions", "count"] and module in _org_metadata():
            self._require_method(method, "GET")
            return self._count(module)
        if len(segments) > 2 or not module:
            raise _invalid_url()
        if module not in _org_metadata():
            raise _ApiError(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"resource_path_index": 0}
            )
        if len(segments) == 1:
            if method == "GET":
                return self._get_records(module, query, headers)
            if method in ("POST", "PUT"):
                mode = "insert" if method == "POST" else "update"
                return self._write(module, _json_body(body), mode=mode)
            if method == "DELETE":
                return self._delete_records(module, query)
            raise _invalid_method()
        action = segments[1]
        if action == "deleted":
            self._require_method(method, "GET")
            return self._get_deleted(module, query, headers)
        if action == "upsert":
            self._require_method(method, "POST")
            return self._write(module, _json_body(body), mode="upsert")
        if _RECORD_ID_RE.match(action):
            self._require_method(method, "GET")
            return self._get_record(module, action, query)
        raise _invalid_url()

    @staticmethod
    def _require_method(method: str, expected: str) -> None:
        if method != expected:
            raise _invalid_method()

    # --- credits --------------------------------------------------------------------------------------

    def _credit_usage(self, now: datetime) -> int:
        while self._credits and now - self._credits[0][0] >= CREDIT_WINDOW:
            self._credits.popleft()
        return sum(cost for _, cost in self._credits)

    def _charge(self, cost: int) -> int:
        """Charge ``cost`` credits for a call about to be served, or answer 429 past the limit.

        Only calls that pass request-level validation are charged (errors answered before the
        work starts cost nothing); a charged call may still answer 204, 304 or 400 per record.
        """
        with self._lock:
            used = self._credit_usage(self.now())
            if self.daily_credit_limit is not None and used + cost > self.daily_credit_limit:
                raise _ApiError(
                    429,
                    "TOO_MANY_REQUESTS",
                    "You have exceeded the maximum number of API credits allowed in 24 hours",
                    {"limit": self.daily_credit_limit},
                )
            self._credits.append((self.now(), cost))
            return cost

    def _add_credit_header(self, response: _Response) -> None:
        if self.daily_credit_limit is None:
            return
        with self._lock:
            used = self._credit_usage(self.now())
        if used * 2 >= self.daily_credit_limit:
            response.headers["X-API-CREDITS-REMAINING"] = str(max(0, self.daily_credit_limit - used))

    # --- GET records ----------------------------------------------------------------------------------

    def _get_records(self, module: str, query: dict[str, str], headers: Any) -> _Response:
        meta = _fields_of(module)
        version = getattr(self._request, "version", "v8")
        ids = _parse_ids(query.get("ids"))
        # v3 on: "fields string, mandatory when fetching all records" (v7 get-records); a read of
        # given ids is not one of all records, so it may leave fields out (guess from that wording).
        fields = _parse_fields(
            query.get("fields"), required=version not in FIELDS_OPTIONAL_VERSIONS and ids is None
        )
        per_page = _int_param(query, "per_page", default=MAX_PER_PAGE, maximum=MAX_PER_PAGE)
        if "page" in query and "page_token" in query:
            raise _ApiError(
                400,
                "AMBIGUITY_DURING_PROCESSING",
                "ambiguity while processing the request",
                {"ambiguity_due_to": [{"param_name": "page"}, {"param_name": "page_token"}]},
            )
        sortable = ["id", *(f for f in ("Created_Time", "Modified_Time") if f in meta)]
        sort_by = query.get("sort_by", "id")
        if sort_by not in sortable:
            raise _ApiError(
                400, "INVALID_DATA", "invalid data", {"param_name": "sort_by", "supported_values": sortable}
            )
        sort_order = query.get("sort_order", "desc")
        if sort_order not in ("asc", "desc"):
            raise _ApiError(
                400,
                "INVALID_DATA",
                "invalid data",
                {"param_name": "sort_order", "supported_values": ["asc", "desc"]},
            )
        since_header = headers.get("If-Modified-Since")
        since = _parse_since(since_header)
        # Modules without Modified_Time (Products, BTEC_Enrollments) ignore If-Modified-Since and
        # answer everything: a client cannot read them incrementally and must diff full reads (or
        # use ids and the deleted list); answering 304 would silently hide every change.
        if "Modified_Time" not in meta:
            since = None
        signature = (
            module,
            tuple(fields) if fields is not None else None,
            tuple(ids) if ids is not None else None,
            per_page,
            sort_by,
            sort_order,
            since_header or "",
        )

        token_value = query.get("page_token")
        if token_value is not None:
            state = self._page_token(token_value, signature)
            cursor, served_before = state.cursor, state.offset
            if served_before + per_page > PAGE_TOKEN_LIMIT:
                raise _ApiError(
                    400,
                    "PAGINATION_LIMIT_EXCEEDED",
                    "You can only get upto 100000 records using page_token param",
                    {"param_name": "page_token"},
                )
        else:
            page = _int_param(query, "page", default=1)
            if page * per_page > DISCRETE_PAGINATION_LIMIT:
                raise _ApiError(
                    400,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    "You can only get the first 2000 records without using page_token param",
                    {"limit": DISCRETE_PAGINATION_LIMIT},
                )
            cursor, served_before = None, (page - 1) * per_page

        credits = self._charge(1)
        with self._lock:
            read = self._sorted_read(module, sort_by, sort_order, since)
            keys, rows = read.keys, read.records
            if ids is not None:  # only the records asked for that exist (and pass the header)
                wanted = set(ids)
                picked = [(k, r) for k, r in zip(keys, rows, strict=True) if r["id"] in wanted]
                keys, rows = [k for k, _ in picked], [r for _, r in picked]
            if token_value is not None:
                start = _start_after(keys, cursor, ascending=sort_order == "asc")
            else:
                start = served_before
            shown = self._present_fields(module, fields)
            chunk = [self._project(module, r, shown) for r in rows[start : start + per_page]]
            if not chunk:
                # Guess for ids: none found is 204 even with If-Modified-Since (Zoho documents
                # 304 only for "nothing modified since").
                status = 304 if since is not None and not rows and ids is None else 204
                return _Response(status, None, credits=credits)
            more = start + len(chunk) < len(rows)
            expiry = self.now() + timedelta(seconds=self.page_token_ttl)
            next_token = (
                self._issue_page_token(
                    signature, keys[start + len(chunk) - 1], served_before + len(chunk), expiry
                )
                if more
                else None
            )
            previous_token = None
            if served_before > 0:
                previous_start = max(0, start - per_page)
                previous_token = self._issue_page_token(
                    signature,
                    keys[previous_start - 1] if previous_start > 0 else None,
                    max(0, served_before - per_page),
                    expiry,
                )
        info = {
            "per_page": per_page,
            "count": len(chunk),
            "page": served_before // per_page + 1,
            "more_records": more,
            "next_page_token": next_token,
            "previous_page_token": previous_token,
            "page_token_expiry": format_time(expiry) if (next_token or previous_token) else None,
            "sort_by": sort_by,
            "sort_order": sort_order,
        }
        return _Response(200, {"data": chunk, "info": info}, credits=credits)

    def _issue_page_token(
        self, signature: tuple, cursor: tuple | None, offset: int, expires: datetime
    ) -> str:
        if len(self._page_tokens) > 1_000:
            now = self.now()
            for stale in [k for k, t in self._page_tokens.items() if t.expires <= now]:
                del self._page_tokens[stale]
        value = secrets.token_hex(32)
        self._page_tokens[value] = _PageToken(signature, cursor, offset, expires)
        return value

    def _page_token(self, value: str, signature: tuple) -> _PageToken:
        with self._lock:
            state = self._page_tokens.get(value)
            if state is not None and state.expires <= self.now():
                raise _ApiError(
                    400,
                    "EXPIRED_VALUE",
                    "Page token expired",
                    {"api_name": "page_token", "json_path": "$.query.page_token"},
                )
        if state is None or state.signature != signature:
            raise _ApiError(
                400,
                "TOKEN_BOUND_DATA_MISMATCH",
                "The page_token given seems to be invalid or input param is added or altered or deleted",
                {"param_name": "page_token"},
            )
        return state

    def _present_fields(self, module: str, fields: list[str] | None) -> list[str] | None:
        """``fields`` (``None``: all of them) without those :meth:`remove_field` took from the org."""
        if not self._removed_fields:
            return fields
        names = list(fields) if fields is not None else list(_fields_of(module))
        return [n for n in names if (module, n) not in self._removed_fields]

    @staticmethod
    def _project(module: str, rec: dict, fields: Iterable[str] | None, *, single: bool = False) -> dict:
        """The record as the API answers it: the requested fields (null when empty) and ``id``.

        Without ``fields``, every field of the module (a whole record; guess: null for the
        empty ones, as for requested fields). Only a read of one record (``single``) renders
        subforms and multi-select lookups; a list read leaves them out even when asked for
        (v7 get-records: "only when a specific record is fetched"; guess: left out, not null).
        API names the module does not have are left out of the answer, not refused.
        """
        meta = _fields_of(module)
        names = [n for n in (fields if fields is not None else meta) if n != "id" and n in meta]
        if not single:
            names = [n for n in names if meta[n]["data_type"] not in _SINGLE_RECORD_ONLY_TYPES]
        out = {name: copy.deepcopy(rec.get(name)) for name in names}
        out["id"] = rec["id"]
        return out

    def _count(self, module: str) -> _Response:
        """``GET /{module}/actions/count``: ``{"count": N}`` of the live records."""
        credits = self._charge(1)
        with self._lock:
            count = len(self._records.get(module, {}))
        return _Response(200, {"count": count}, credits=credits)

    def _get_record(self, module: str, record_id: str, query: dict[str, str]) -> _Response:
        fields = _parse_fields(query.get("fields"), required=False)
        credits = self._charge(1)
        with self._lock:
            rec = self._records[module].get(record_id)
            if rec is None:
                return _Response(204, None, credits=credits)
            shown = self._present_fields(module, fields)
            return _Response(200, {"data": [self._project(module, rec, shown, single=True)]}, credits=credits)

    # --- deleted records ------------------------------------------------------------------------------

    def _get_deleted(self, module: str, query: dict[str, str], headers: Any) -> _Response:
        """``GET /{module}/deleted``: pages with ``page`` and ``per_page`` (at most 200) only.

        The endpoint takes no ``page_token`` and answers none: the v7 get-deleted-records page and
        the v8 spec list only ``type``, ``page``, ``per_page`` and ``If-Modified-Since``. Neither
        gives a cap on ``page`` (the 2,000-record limit of discrete paging is documented for
        get-records only), so every page is served (guess: the real service may stop somewhere).
        An unknown ``type`` is ``PATTERN_NOT_MATCHED`` (v7; guess: its ``details``).
        """
        kind = query.get("type", "all")
        if kind not in ("all", "recycle", "permanent"):
            raise _ApiError(
                400,
                "PATTERN_NOT_MATCHED",
                "Please check whether the input values are correct",
                {"param_name": "type", "supported_values": ["all", "recycle", "permanent"]},
            )
        per_page = _int_param(query, "per_page", default=MAX_PER_PAGE, maximum=MAX_PER_PAGE)
        page = _int_param(query, "page", default=1)
        since = _parse_since(headers.get("If-Modified-Since"))
        credits = self._charge(1)
        with self._lock:
            rows = [
                e
                for e in self._deleted[module]
                if (kind == "all" or e["type"] == kind)
                and (since is None or parse_time(e["deleted_time"]) >= since)
            ]
        rows.sort(key=lambda e: (parse_time(e["deleted_time"]), int(e["id"])), reverse=True)
        return _page_answer("data", rows, page, per_page, credits)

    # --- writes: insert, update, upsert, delete --------------------------------------------------------

    def _write(self, module: str, body: Any, *, mode: str) -> _Response:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not body["data"]:
            raise _ApiError(
                400,
                "MANDATORY_NOT_FOUND",
                "required field not found",
                {"api_name": "data", "json_path": "$.data"},
            )
        rows = body["data"]
        if len(rows) > MAX_WRITE_RECORDS:
            raise _ApiError(
                400,
                "LIMIT_EXCEEDED",
                "limit exceeded",
                {"limit": MAX_WRITE_RECORDS, "api_name": "data", "json_path": "$.data"},
            )
        meta = _fields_of(module)
        duplicate_check = body.get("duplicate_check_fields") or []
        if mode == "upsert":
            bad = [f for f in duplicate_check if not isinstance(f, str) or f not in meta]
            if not isinstance(duplicate_check, list) or bad:
                raise _ApiError(
                    400,
                    "INVALID_DATA",
                    "invalid data",
                    {"api_name": "duplicate_check_fields", "json_path": "$.duplicate_check_fields"},
                )
        credits = self._charge(math.ceil(len(rows) / 10))
        with self._lock:
            results = [self._write_one(module, i, row, mode, duplicate_check) for i, row in enumerate(rows)]
        ok = sum(r["status"] == "success" for r in results)
        all_ok = 201 if mode == "insert" else 200  # Zoho answers a full insert 201 Created
        status = all_ok if ok == len(results) else 207 if ok else 400
        return _Response(status, {"data": results}, credits=credits)

    def _write_one(self, module: str, index: int, row: Any, mode: str, duplicate_check: list[str]) -> dict:
        """One record of an insert, update or upsert: its result, and its effect when it succeeds.

        Every problem found in the record is collected: one is answered as itself, several as
        ``MULTIPLE_OR_MULTI_ERRORS`` with ``details.errors`` (see :func:`_one_or_many`).
        """
        path = f"$.data[{index}]"
        if not isinstance(row, dict):
            return _record_error(
                "INVALID_DATA",
                "invalid data",
                {"api_name": "data", "json_path": path, "expected_data_type": "jsonobject"},
            )
        meta = _fields_of(module)
        values: dict[str, Any] = {}
        errors: list[dict] = []
        refused: set[str] = set()  # fields already answered with an error
        for api_name, value in row.items():
            if api_name == "id" or api_name.startswith("$"):
                continue
            field_meta = meta.get(api_name)
            if field_meta is None:
                errors.append(
                    _record_error(
                        "INVALID_DATA",
                        "invalid data",
                        {"api_name": api_name, "json_path": f"{path}.{api_name}"},
                    )
                )
                continue
            if api_name in _SYSTEM_FIELDS or field_meta["data_type"] in _READ_ONLY_TYPES:
                continue  # Zoho ignores writes to system and read-only (formula, autonumber) fields
            try:
                values[api_name] = self._coerce(field_meta, value)
            except _FieldError as error:
                details = {"api_name": api_name, "json_path": f"{path}.{api_name}{error.path_suffix}"}
                details.update(error.details)
                errors.append(_record_error(error.code, error.message, details))
                refused.add(api_name)

        records = self._records[module]
        target: dict | None = None
        duplicate_field: str | None = None
        if "id" in row and mode != "insert":
            target = records.get(str(row["id"]))
            if target is None:
                errors.append(
                    _record_error(
                        "INVALID_DATA",
                        "the id given seems to be invalid",
                        {"api_name": "id", "json_path": f"{path}.id"},
                    )
                )
                return _one_or_many(errors)
        elif mode == "update":
            errors.append(
                _record_error(
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    {"api_name": "id", "json_path": f"{path}.id"},
                )
            )
            return _one_or_many(errors)
        elif mode == "upsert":
            # Without duplicate_check_fields Zoho checks the module's system-defined duplicate
            # check field, then its user-defined unique fields (v7 upsert-records); the metadata
            # keeps no "unique" flag, so only the system-defined one is checked here.
            checks = duplicate_check or [_system_duplicate_check_field(module)]
            for api_name in checks:
                wanted = values.get(api_name)
                if _is_empty(wanted):
                    continue
                found = [r for r in records.values() if _same_value(r.get(api_name), wanted)]
                if len(found) > 1:
                    errors.append(
                        _record_error(
                            "DUPLICATE_DATA",
                            "duplicate data",
                            {
                                "api_name": api_name,
                                "json_path": f"{path}.{api_name}",
                                "duplicate_record": {"id": found[0]["id"], "module": {"api_name": module}},
                                "more_records": True,
                            },
                        )
                    )
                elif found and target is None:
                    target, duplicate_field = found[0], api_name

        for api_name, field_meta in meta.items():
            if not field_meta.get("required") or api_name in refused:
                continue
            missing = (
                _is_empty(values.get(api_name))
                if target is None
                else (api_name in values and _is_empty(values[api_name]))
            )
            if missing:
                errors.append(
                    _record_error(
                        "MANDATORY_NOT_FOUND",
                        "required field not found",
                        {"api_name": api_name, "json_path": f"{path}.{api_name}"},
                    )
                )

        subforms: dict[str, list[dict]] = {}
        for api_name, sent in values.items():
            if meta[api_name]["data_type"] == "subform" and sent is not None:
                try:
                    subforms[api_name] = _subform_rows(target, api_name, sent)
                except _FieldError as error:
                    details = {"api_name": api_name, "json_path": f"{path}.{api_name}{error.path_suffix}"}
                    details.update(error.details)
                    errors.append(_record_error(error.code, error.message, details))
        if errors:
            return _one_or_many(errors)

        stamp = format_time(self.now())
        user = {"name": self._current_user()["full_name"], "id": self._current_user()["id"]}
        user_with_email = {**user, "email": self._current_user()["email"]}
        try:
            if target is None:
                action, message = "insert", "record added"
                record_id = self._new_id()
                target = {"id": record_id, **values}
                if "Created_Time" in meta:
                    target["Created_Time"] = stamp
                for name in _OWNER_FIELDS:
                    if name in meta and not target.get(name):
                        target[name] = dict(user_with_email)  # the API user owns what it adds
                self._fill_autonumbers(module, target)
                records[record_id] = target
            else:
                action, message = "update", "record updated"
                target.update(values)
                if "Modified_By" in meta:
                    target["Modified_By"] = dict(user_with_email)
            for api_name, rows in subforms.items():
                target[api_name] = rows
            self._normalize(module, target)  # ids for new subform rows, Parent_Id on every row
            if "Modified_Time" in meta:
                target["Modified_Time"] = stamp
        finally:
            self._changed(module)
        details: dict[str, Any] = {"id": target["id"]}
        for api_name in ("Modified_Time", "Created_Time"):
            if api_name in meta:
                details[api_name] = target.get(api_name)
        for api_name in ("Modified_By", "Created_By"):
            if api_name in meta:
                details[api_name] = self._minified(target.get(api_name)) or dict(user)
        result: dict[str, Any] = {
            "code": "SUCCESS",
            "details": details,
            "message": message,
            "status": "success",
        }
        if mode == "upsert":
            result["action"] = action
            result["duplicate_field"] = duplicate_field
        return result

    def _coerce(self, meta: dict, value: Any) -> Any:
        """Validate one written value against its field metadata; answer the value to store."""
        kind = meta["data_type"]
        if value is None:
            return None
        if kind in _TEXT_LIMITS:
            if not isinstance(value, str):
                raise _FieldError({"expected_data_type": kind})
            if len(value) > _TEXT_LIMITS[kind]:
                raise _FieldError({"maximum_length": _TEXT_LIMITS[kind]})
            if kind == "email" and value and not _EMAIL_RE.match(value):
                raise _FieldError({"expected_data_type": kind})
            return value
        if kind == "picklist":
            allowed = meta.get("pick_list_values") or []
            if not isinstance(value, str) or (value not in allowed and value != "-None-"):
                raise _FieldError({"expected_data_type": kind})
            return None if value == "-None-" else value
        if kind == "date":
            if not isinstance(value, str) or not _DATE_RE.match(value) or not _valid_date(value):
                raise _FieldError({"expected_data_type": kind})
            return value
        if kind == "datetime":
            try:
                return format_time(parse_time(value))
            except (TypeError, ValueError):
                raise _FieldError({"expected_data_type": kind}) from None
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _FieldError({"expected_data_type": kind})
            return value
        if kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _FieldError({"expected_data_type": kind})
            return value
        if kind in ("double", "currency"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _FieldError({"expected_data_type": kind})
            return value
        if kind == "lookup":
            if isinstance(value, dict) and value.get("id"):
                target_id = str(value["id"])
            elif isinstance(value, str) and value:
                target_id = value
            else:
                raise _FieldError({"expected_data_type": "jsonobject"})
            target = self._records.get(meta.get("lookup_module", ""), {}).get(target_id)
            if target is None:
                raise _FieldError({}, message="the id given seems to be invalid", path_suffix=".id")
            return {"name": self._display_name(target), "id": target_id}
        if kind == "ownerlookup":
            # An owner is one of the org's active users, given by id (guess: the error for an
            # unknown or inactive user is the lookup's "the id given seems to be invalid").
            if not (isinstance(value, dict) and value.get("id")) and not (isinstance(value, str) and value):
                raise _FieldError({"expected_data_type": "jsonobject"})
            user = self._user_value(value)
            user_meta = self._user_by_id(user["id"]) if user else None
            if user is None or user_meta is None or user_meta["status"] != "active":
                raise _FieldError({}, message="the id given seems to be invalid", path_suffix=".id")
            return user
        if kind == "subform":
            if not isinstance(value, list):
                raise _FieldError({"expected_data_type": "jsonarray"})
            for j, item in enumerate(value):
                if not isinstance(item, dict):
                    raise _FieldError({"expected_data_type": "jsonobject"}, path_suffix=f"[{j}]")
            # The rows' own fields are not validated: the org's metadata does not describe the
            # subform modules' fields (guess: taken as given).
            return copy.deepcopy(value)
        return copy.deepcopy(value)  # multiselectlookup, fileupload, profileimage: stored as given

    def _delete_records(self, module: str, query: dict[str, str]) -> _Response:
        ids = [i for i in (query.get("ids") or "").split(",") if i.strip()]
        if not ids:
            raise _ApiError(400, "REQUIRED_PARAM_MISSING", "required param is missing", {"param_name": "ids"})
        if len(ids) > MAX_WRITE_RECORDS:
            raise _ApiError(
                400, "LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_WRITE_RECORDS, "param_name": "ids"}
            )
        credits = self._charge(1)
        results = []
        with self._lock:
            for record_id in (i.strip() for i in ids):
                rec = self._records[module].pop(record_id, None)
                if rec is None:
                    results.append(
                        _record_error("INVALID_DATA", "the id given seems to be invalid", {"id": record_id})
                    )
                    continue
                self._changed(module)
                self._deleted[module].append(self._deleted_entry(module, rec, permanent=False))
                results.append(
                    {
                        "code": "SUCCESS",
                        "details": {"id": record_id},
                        "message": "record deleted",
                        "status": "success",
                    }
                )
        ok = sum(r["status"] == "success" for r in results)
        status = 200 if ok == len(results) else 207 if ok else 400
        return _Response(status, {"data": results}, credits=credits)

    # --- metadata and COQL ----------------------------------------------------------------------------

    def _settings_fields(self, query: dict[str, str]) -> _Response:
        """``GET /settings/fields?module=X``: every field of X with the keys Zoho answers."""
        module = query.get("module")
        if not module:
            raise _ApiError(
                400, "REQUIRED_PARAM_MISSING", "required param is missing", {"param_name": "module"}
            )
        if module not in _org_metadata():
            raise _ApiError(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"param_name": "module"}
            )
        credits = self._charge(1)
        fields = copy.deepcopy(list(_fields_metadata_of(module, self.id_prefix)))
        with self._lock:
            fields = [f for f in fields if (module, f["api_name"]) not in self._removed_fields]
            for field in fields:
                if field["data_type"] == "autonumber":
                    prefix, width, _ = self._autonumbers.get((module, field["api_name"]), ("", 0, 0))
                    field["auto_number"] = {
                        "prefix": prefix,
                        "suffix": "",
                        "start_number": 1,
                        "starting_number_length": width,
                    }
        return _Response(200, {"fields": fields}, credits=credits)

    def _settings_modules(self, api_name: str | None, query: dict[str, str]) -> _Response:
        """``GET /settings/modules`` (every module) and ``GET /settings/modules/{api_name}``.

        One module answers ``{"modules": [{…}]}`` (the v8 spec's Response_Wrapper); an unknown API
        name is 400 ``INVALID_MODULE`` with ``resource_path_index`` 2 ("the index 0 starts after
        the version number", v7 module-meta). ``status=`` keeps the modules of the statuses
        given (every module here is ``visible``; guess: none left is 204).
        """
        modules = list(_modules_of(self.id_prefix))
        if api_name is not None:
            modules = [m for m in modules if m["api_name"] == api_name]
            if not modules:
                raise _ApiError(
                    400,
                    "INVALID_MODULE",
                    "the module name given seems to be invalid",
                    {"resource_path_index": 2},
                )
        wanted = {v.strip() for v in (query.get("status") or "").split(",") if v.strip()}
        if wanted:
            modules = [m for m in modules if m["status"] in wanted]
        credits = self._charge(1)
        if not modules:
            return _Response(204, None, credits=credits)
        return _Response(200, {"modules": copy.deepcopy(modules)}, credits=credits)

    def _get_org(self) -> _Response:
        """``GET /org``: ``{"org": [{…}]}`` (v7 get-org-data)."""
        credits = self._charge(1)
        return _Response(200, {"org": [copy.deepcopy(self._org)]}, credits=credits)

    def _get_users(self, user_id: str | None, query: dict[str, str]) -> _Response:
        """``GET /users?type=…&page=&per_page=`` and ``GET /users/{id}`` (v7 get-users).

        ``type`` defaults to ``AllUsers`` (guess: the page does not say); an unknown type is
        ``INVALID_DATA`` (guess). No user of the type, or an unknown id, is 204 (guess, as for
        records).
        """
        kind = query.get("type", "AllUsers")
        if kind != "CurrentUser" and kind not in _USER_TYPES:
            raise _ApiError(
                400,
                "INVALID_DATA",
                "invalid data",
                {"param_name": "type", "supported_values": [*_USER_TYPES, "CurrentUser"]},
            )
        per_page = _int_param(query, "per_page", default=MAX_PER_PAGE, maximum=MAX_PER_PAGE)
        page = _int_param(query, "page", default=1)
        credits = self._charge(1)
        if user_id is not None:
            found = [u for u in self._users if u["id"] == user_id]
            if not found:
                return _Response(204, None, credits=credits)
            return _Response(200, {"users": copy.deepcopy(found)}, credits=credits)
        if kind == "CurrentUser":
            users = [self._current_user()]
        else:
            users = [u for u in self._users if _USER_TYPES[kind](u)]
        return _page_answer("users", users, page, per_page, credits)

    def _coql(self, body: Any) -> _Response:
        query_text = body.get("select_query") if isinstance(body, dict) else None
        if not isinstance(query_text, str) or not query_text.strip():
            raise _ApiError(
                400, "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "select_query"}
            )
        parsed = _parse_coql(query_text)
        module = parsed["module"]
        if module not in _org_metadata():
            raise _ApiError(400, "INVALID_QUERY", "invalid module given", {"module": module})
        meta = _fields_of(module)
        if len(parsed["fields"]) > MAX_FIELDS:
            raise _ApiError(
                400, "LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_FIELDS, "clause": "select"}
            )
        columns = [("select", name) for name in parsed["fields"]]
        if parsed["where"]:
            columns.append(("where", parsed["where"][0]))
        if parsed["order_by"]:
            columns.append(("order by", parsed["order_by"][0]))
        for clause, name in columns:
            if name != "id" and name not in meta:
                raise _ApiError(
                    400,
                    "INVALID_QUERY",
                    "column given seems to be invalid",
                    {"column_name": name, "clause": clause},
                )
        limit, offset = parsed["limit"], parsed["offset"]
        if limit < 1 or limit > MAX_COQL_LIMIT:
            raise _ApiError(400, "LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_COQL_LIMIT})
        if offset + limit > PAGE_TOKEN_LIMIT:
            raise _ApiError(
                400, "LIMIT_EXCEEDED", "limit exceeded", {"limit": PAGE_TOKEN_LIMIT, "offset": offset}
            )
        # Zoho charges a COQL call by its LIMIT: 1 credit up to 200 records, 2 up to 1,000, else 3.
        credits = self._charge(1 if limit <= 200 else 2 if limit <= 1000 else 3)
        with self._lock:
            rows = list(self._records[module].values())
        if parsed["where"]:
            name, op, literal = parsed["where"]
            kind = meta[name]["data_type"] if name != "id" else "id"
            try:
                wanted = _coql_key(kind, literal)
            except (TypeError, ValueError):
                raise _ApiError(
                    400,
                    "INVALID_QUERY",
                    "value given seems to be invalid for the column",
                    {"column_name": name},
                ) from None
            rows = [r for r in rows if _compare(_coql_key(kind, r.get(name)), op, wanted)]
        order_name, order_dir = parsed["order_by"] or ("id", "asc")
        order_kind = meta[order_name]["data_type"] if order_name != "id" else "id"
        present = [r for r in rows if r.get(order_name) is not None]
        absent = [r for r in rows if r.get(order_name) is None]
        present.sort(key=lambda r: _coql_key(order_kind, r.get(order_name)), reverse=order_dir == "desc")
        rows = present + absent
        chunk = rows[offset : offset + limit]
        if not chunk:
            return _Response(204, None, credits=credits)
        data = []
        for rec in chunk:
            out: dict[str, Any] = {}
            for name in parsed["fields"]:
                value = copy.deepcopy(rec.get(name))
                if name != "id" and meta[name]["data_type"] == "lookup" and isinstance(value, dict):
                    value = {"id": value.get("id")}  # COQL answers a lookup with its id only
                out[name] = value
            out["id"] = rec["id"]
            data.append(out)
        info = {"count": len(data), "more_records": offset + len(chunk) < len(rows)}
        return _Response(200, {"data": data, "info": info}, credits=credits)

    # --- Bulk Read ------------------------------------------------------------------------------------

    def _bulk(self, method: str, match: re.Match, token: str, body: bytes) -> _Response:
        """``/crm/bulk/{version}/read``, ``/read/{job_id}`` and ``/read/{job_id}/result``.

        Scopes (with ``enforce_scopes``): ``ZohoCRM.bulk.READ`` for all three, and the module's
        read scope for creating a job (v8 create-job: "ZohoCRM.bulk.read (and)
        ZohoCRM.modules.{module_name}.{operation_type}"; guess: the status and the download check
        the bulk scope only). Unknown jobs, and the result of a job not yet completed, are 404
        ``RESOURCE_NOT_FOUND`` (v8 OpenAPI spec).
        """
        version, job_id, result = match.group("version"), match.group("job"), match.group("result")
        if job_id is None:
            self._require_method(method, "POST")
            return self._create_bulk_job(version, token, _json_body(body))
        self._require_method(method, "GET")
        self._check_bulk_scope(token, None)
        with self._lock:
            job = self._bulk_jobs.get(job_id)
        if job is None:
            raise _ApiError(
                404, "RESOURCE_NOT_FOUND", "the requested resource is not found", {"resource": "job"}
            )
        if result is None:
            credits = self._charge(1)
            with self._lock:
                self._advance_bulk_job(job)
                return _Response(200, {"data": [self._bulk_job_view(job, version)]}, credits=credits)
        return self._download_bulk_result(job)

    def _check_bulk_scope(self, token: str, module: str | None) -> None:
        if not self.enforce_scopes:
            return
        with self._lock:
            granted = self._token_scopes.get(token, self.scopes)
        needs = [("ZohoCRM.bulk.READ",)]
        if module is not None:
            needs.append(scope_needed("GET", module) or ())
        for needed in needs:
            if needed and not any(scope_covers(g, n) for n in needed for g in granted):
                raise _ApiError(401, "OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL")

    def _create_bulk_job(self, version: str, token: str, body: Any) -> _Response:
        """``POST /read``: validate the request (the v8 request schema), charge, answer 201."""
        if not isinstance(body, dict) or not isinstance(body.get("query"), dict):
            raise _ApiError(400, "REQUEST_BODY_NOT_SUPPORTED", "the request body is not supported", {})
        query = body["query"]
        module_obj = query.get("module")
        module = module_obj.get("api_name") if isinstance(module_obj, dict) else None
        if not isinstance(module, str) or module not in _org_metadata():
            # Guess: the code a bulk job for an unknown module gets (Records' INVALID_MODULE).
            raise _ApiError(
                400, "INVALID_MODULE", "the module name given seems to be invalid", {"api_name": "module"}
            )
        self._check_bulk_scope(token, module)
        fields = query.get("fields")
        if fields is not None:
            if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
                raise _ApiError(400, "INVALID_DATA", "invalid data", {"json_path": "$.query.fields"})
            meta = _fields_of(module)
            for i, name in enumerate(fields):
                if name != "id" and name not in meta:
                    # Guess: Zoho's exact answer to an unknown field in a bulk query.
                    raise _ApiError(
                        400,
                        "INVALID_DATA",
                        "invalid data",
                        {"api_name": name, "json_path": f"$.query.fields[{i}]"},
                    )
        page = query.get("page", 1)
        if page is None:
            page = 1
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise _ApiError(400, "INVALID_DATA", "invalid data", {"json_path": "$.query.page"})
        if query.get("criteria") is not None or query.get("cvid") is not None:
            # Not simulated (the pipeline never filters a full read); refused rather than ignored,
            # so that nobody mistakes an unfiltered export for a filtered one.
            raise _ApiError(400, "NOT_SUPPORTED", "criteria and cvid are not simulated", {})
        if body.get("file_type", "csv") != "csv":
            raise _ApiError(400, "INVALID_DATA", "invalid data", {"json_path": "$.file_type"})
        callback = body.get("callback")
        if callback is not None:
            if not isinstance(callback, dict) or callback.get("method") != "post":
                raise _ApiError(
                    400,
                    "INVALID_CALLBACK_METHOD",
                    "the callback method is invalid",
                    {"supported_callback_methods": ["post"]},
                )
            if not isinstance(callback.get("url"), str) or not callback["url"].startswith(
                ("http://", "https://")
            ):
                raise _ApiError(400, "INVALID_CALLBACK_URL", "the callback url is invalid", {})
            # The callback itself is never posted (guess-free: this simulator has no outbound calls).
        credits = self._charge(BULK_READ_JOB_CREDITS)
        with self._lock:
            job = _BulkJob(
                id=self._new_id(),
                module=module,
                fields=list(dict.fromkeys(fields)) if fields else None,
                page=page,
                created_time=format_time(self.now()),
                fail=self._bulk_failures > 0,
            )
            self._bulk_failures = max(0, self._bulk_failures - 1)
            self._bulk_jobs[job.id] = job
            user = self._current_user()
        details = {
            "id": job.id,
            "operation": "read",
            "state": job.state,
            "created_by": {"id": user["id"], "name": user["full_name"]},
            "created_time": job.created_time,
        }
        answer = {
            "data": [
                {
                    "status": "success",
                    "code": "ADDED_SUCCESSFULLY",
                    "message": "Added successfully.",
                    "details": details,
                }
            ],
            "info": {},
        }
        return _Response(201, answer, credits=credits)

    def _advance_bulk_job(self, job: _BulkJob) -> None:
        """One poll: the job goes ``IN PROGRESS``, then finishes at ``bulk_job_polls``. The records
        are exported when it completes (call with the lock held)."""
        if job.state in ("COMPLETED", "FAILURE"):
            return
        job.polls += 1
        if job.polls < self.bulk_job_polls:
            job.state = "IN PROGRESS"
            return
        if job.fail:
            job.state = "FAILURE"
            return
        job.archive, job.count, job.more_records = self._bulk_export(job)
        job.state = "COMPLETED"

    def _bulk_export(self, job: _BulkJob) -> tuple[bytes, int, bool]:
        """The job's page of records as a ZIP of one CSV (call with the lock held).

        The header is ``id`` ("added by default") and the asked fields in the asked order (guess:
        the order is not documented), every field of the module when none were asked; fields the
        CSV cannot hold (subforms...) and fields the org no longer has are left out. Records go in
        id order (guess: Zoho documents no order). Values: empty for null, ``true``/``false``,
        numbers as Python writes them, a lookup or owner as its id, a list of values ``;``-joined
        (guess: how Zoho writes types in the CSV is not documented beyond "Date/Time fields ...
        in the ISO8601 format", which the stored values are).
        """
        meta = _fields_of(job.module)
        asked = job.fields if job.fields is not None else list(meta)
        columns = [
            n
            for n in asked
            if n != "id"
            and n in meta
            and meta[n]["data_type"] not in _BULK_NOT_EXPORTED
            and (job.module, n) not in self._removed_fields
        ]
        live = self._sorted_read(job.module, "id", "asc", None).records  # kept between pages
        start = (job.page - 1) * BULK_READ_PAGE_SIZE
        chunk = live[start : start + BULK_READ_PAGE_SIZE]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["id", *columns])
        writer.writerows([rec["id"], *(_csv_value(rec.get(n)) for n in columns)] for rec in chunk)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            # Guess: the member's name; Zoho names the ZIP and its CSV after the job.
            archive.writestr(f"{job.id}.csv", text.getvalue().encode("utf-8"))
        return buffer.getvalue(), len(chunk), start + len(chunk) < len(live)

    def _bulk_job_view(self, job: _BulkJob, version: str) -> dict:
        """``data[0]`` of ``GET /read/{job_id}`` (v8 job-details)."""
        user = self._current_user()
        query: dict[str, Any] = {
            "module": {"api_name": job.module, "id": _module_id(self.id_prefix, job.module)},
            "page": job.page,
        }
        if job.fields is not None:
            query["fields"] = list(job.fields)
        view: dict[str, Any] = {
            "id": job.id,
            "operation": "read",
            "state": job.state,
            "query": query,
            "created_by": {"id": user["id"], "name": user["full_name"]},
            "created_time": job.created_time,
            "file_type": "csv",
        }
        if job.state == "COMPLETED":
            view["result"] = {
                "page": job.page,
                "per_page": BULK_READ_PAGE_SIZE,
                "count": job.count,
                "download_url": f"/crm/bulk/{version}/read/{job.id}/result",
                "more_records": job.more_records,
            }
        return view

    def _download_bulk_result(self, job: _BulkJob) -> _Response:
        """``GET /read/{job_id}/result``: the ZIP, 10 downloads a minute."""
        with self._lock:
            if job.state != "COMPLETED" or job.archive is None:
                raise _ApiError(
                    404, "RESOURCE_NOT_FOUND", "the requested resource is not found", {"resource": "result"}
                )
            now = self.now()
            while self._bulk_downloads and now - self._bulk_downloads[0] >= timedelta(minutes=1):
                self._bulk_downloads.popleft()
            if len(self._bulk_downloads) >= BULK_DOWNLOADS_PER_MINUTE:
                raise _ApiError(
                    429,
                    "TOO_MANY_REQUESTS",
                    "only 10 downloads are allowed in a minute",  # guess: the message
                    {"limit": BULK_DOWNLOADS_PER_MINUTE},
                )
            self._bulk_downloads.append(now)
            archive = job.archive
        credits = self._charge(1)
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{job.id}.zip"',
        }
        return _Response(200, None, headers=headers, credits=credits, raw=archive)


# --- helpers ------------------------------------------------------------------------------------------


_METHOD_OPERATIONS = {"GET": "READ", "POST": "CREATE", "PUT": "UPDATE", "PATCH": "UPDATE", "DELETE": "DELETE"}


def scope_needed(method: str, rest: str) -> tuple[str, ...] | None:
    """The scopes any one of which allows ``method`` on the API path ``rest`` (after
    ``/crm/<version>/``), or ``None`` for a path no scope is checked for.

    Records of a custom module need ``ZohoCRM.modules.custom.<op>`` or
    ``ZohoCRM.modules.<module>.<op>``, of a standard module ``ZohoCRM.modules.<module>.<op>``
    (Zoho: "ZohoCRM.modules.ALL (or) ZohoCRM.modules.{module_name}.{operation_type}"); an upsert
    is a create; ``/settings/fields`` ``ZohoCRM.settings.fields.READ``, ``/settings/modules``
    ``ZohoCRM.settings.modules.READ``, ``/org`` ``ZohoCRM.org.READ``, ``/users``
    ``ZohoCRM.users.READ``, ``/coql`` ``ZohoCRM.coql.READ``. (Guess: which module name a custom
    module goes by, and that COQL asks only for its own scope here.)
    """
    segments = rest.split("/")
    op = _METHOD_OPERATIONS.get(method, "READ")
    head = segments[0]
    if head == "settings" and len(segments) > 1:
        return (f"ZohoCRM.settings.{segments[1]}.READ",)
    if head in ("org", "users"):
        return (f"ZohoCRM.{head}.READ",)
    if head == "coql":
        return ("ZohoCRM.coql.READ",)
    if head not in _org_metadata():
        return None
    if segments[1:2] == ["upsert"]:
        op = "CREATE"
    names = [f"ZohoCRM.modules.{head.lower()}.{op}"]
    custom = {m["api_name"] for m in _modules_of(DEFAULT_ID_PREFIX) if m["generated_type"] == "custom"}
    if head in custom:
        names.append(f"ZohoCRM.modules.custom.{op}")
    return tuple(names)


class _FieldError(Exception):
    def __init__(
        self,
        details: dict,
        *,
        message: str = "invalid data",
        path_suffix: str = "",
        code: str = "INVALID_DATA",
    ) -> None:
        super().__init__(message)
        self.details = details
        self.message = message
        self.path_suffix = path_suffix
        self.code = code


def _one_or_many(errors: list[dict]) -> dict:
    """The result of a record with these problems: the problem itself when there is one, else
    ``MULTIPLE_OR_MULTI_ERRORS`` with every problem in ``details.errors``.

    Zoho documents ``MULTIPLE_OR_MULTI_ERRORS`` for duplicate data in several unique fields of one
    record ("The 'errors' array gives you the details of the module and the API name of the
    fields that contain duplicate data", v7 insert-records); answering it for any several
    problems of one record, and its message for them, is a guess.
    """
    if len(errors) == 1:
        return errors[0]
    duplicates = all(e["code"] == "DUPLICATE_DATA" for e in errors)
    message = "Duplicate data in multiple fields" if duplicates else "multiple errors"
    return _record_error("MULTIPLE_OR_MULTI_ERRORS", message, {"errors": errors})


def _system_duplicate_check_field(module: str) -> str:
    """The field an upsert without ``duplicate_check_fields`` matches on (v7 upsert-records)."""
    return _STANDARD_MODULES[module][2] if module in _STANDARD_MODULES else "Name"


def _subform_rows(target: dict | None, api_name: str, sent: list[dict]) -> list[dict]:
    """The rows subform ``api_name`` holds after a write that sent ``sent`` for it.

    The list sent replaces the rows (the v7 update-subforms sample sends the rows "that do not
    need any update" with their ids, and so does v8's, ``PUT /{module_API_name}`` with
    ``"Languages": [{"id": …}, {"id": …, "Proficiency": "Native", …}]``:
    https://www.zoho.com/crm/developer/docs/api/v8/update-subforms.html; CData's Zoho CRM driver
    documents the same: "If the Id is not included in the JSON, that line will be deleted from the
    Subform"; guess: an upsert that matches a record treats its subforms as an update does): a
    row sent with the ``id`` of an existing row updates it (fields not sent stay as they are) and
    keeps its id, a row without ``id`` is a new row (its id is assigned when stored), a row with
    ``"_delete"`` is removed (v7), an empty list removes every row (v7). The same v7 page also says
    an update "will append the provided data with the existing data": it contradicts its own
    sample, and we follow the sample. An id that is not one of the record's rows is ``INVALID_DATA`` "the id
    given seems to be invalid" (the error v7 lists; its use for rows is a guess). A new record's
    rows are all new: ids sent with them are not kept (guess). More than
    :data:`MAX_SUBFORM_ROWS` rows is ``LIMIT_EXCEEDED`` (the cap is v7's; the error a guess).
    """
    if len(sent) > MAX_SUBFORM_ROWS:
        raise _FieldError({"limit": MAX_SUBFORM_ROWS}, message="limit exceeded", code="LIMIT_EXCEEDED")
    existing = (
        {}
        if target is None
        else {str(r.get("id")): r for r in target.get(api_name) or [] if isinstance(r, dict)}
    )
    rows = []
    for j, row in enumerate(sent):
        fields = {
            k: copy.deepcopy(v)
            for k, v in row.items()
            if k not in _ROW_SYSTEM_KEYS and k not in ("id", "_delete") and not k.startswith("$")
        }
        deleted = "_delete" in row
        if target is None or not row.get("id"):
            if not deleted:
                rows.append(fields)
            continue
        old = existing.get(str(row["id"]))
        if old is None:
            raise _FieldError({}, message="the id given seems to be invalid", path_suffix=f"[{j}].id")
        if not deleted:
            rows.append({**copy.deepcopy(old), **fields, "id": str(row["id"])})
    return rows


def _page_answer(key: str, rows: list, page: int, per_page: int, credits: int) -> _Response:
    """Page ``page`` of ``rows`` as the discrete-paged endpoints answer it (``/deleted``, ``/users``):
    204 past the end, else the rows under ``key`` and ``info`` with ``more_records``."""
    start = (page - 1) * per_page
    chunk = copy.deepcopy(rows[start : start + per_page])
    if not chunk:
        return _Response(204, None, credits=credits)
    info = {
        "per_page": per_page,
        "count": len(chunk),
        "page": page,
        "more_records": start + len(chunk) < len(rows),
    }
    return _Response(200, {key: chunk, "info": info}, credits=credits)


def _invalid_url() -> _ApiError:
    return _ApiError(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")


def _invalid_method() -> _ApiError:
    return _ApiError(
        400,
        "INVALID_REQUEST_METHOD",
        "The http request method type is not a valid one",
        {"resource_path_index": 0},
    )


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        raise _ApiError(400, "INVALID_DATA", "the input data is invalid", {}) from None


def _parse_fields(raw: str | None, *, required: bool) -> list[str] | None:
    if raw is None or not raw.strip():
        if required:
            raise _ApiError(
                400, "REQUIRED_PARAM_MISSING", "required param is missing", {"param_name": "fields"}
            )
        return None
    names = list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if len(names) > MAX_FIELDS:
        raise _ApiError(
            400, "LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_FIELDS, "param_name": "fields"}
        )
    # API names the module does not have are left out of the answer, not refused.
    return names


def _parse_ids(raw: str | None) -> list[str] | None:
    """``ids=a,b,c`` of a list read: the ids in order without repeats, or ``None`` when absent.

    More than :data:`MAX_IDS` is refused as the ``fields`` cap is (guess: Zoho documents the cap
    of other id lists, not the error of this one). An empty ``ids=`` is refused as a missing
    parameter (guess).
    """
    if raw is None:
        return None
    ids = list(dict.fromkeys(i.strip() for i in raw.split(",") if i.strip()))
    if not ids:
        raise _ApiError(400, "REQUIRED_PARAM_MISSING", "required param is missing", {"param_name": "ids"})
    if len(ids) > MAX_IDS:
        raise _ApiError(400, "LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_IDS, "param_name": "ids"})
    return ids


def _int_param(query: dict[str, str], name: str, *, default: int, maximum: int | None = None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (maximum is not None and value > maximum):
        details: dict[str, Any] = {"param_name": name}
        if maximum is not None:
            details["maximum_length"] = maximum
        raise _ApiError(400, "INVALID_DATA", "invalid data", details)
    return value


def _parse_since(raw: str | None) -> datetime | None:
    """Parse ``If-Modified-Since``: ISO 8601 with an offset (Zoho's format) or an HTTP date.

    A date-time without an offset is refused rather than guessed in some time zone.
    """
    if raw is None or not raw.strip():
        return None
    try:
        return parse_time(raw.strip())
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _ApiError(
            400,
            "INVALID_DATA",
            "invalid data",
            {"param_name": "If-Modified-Since", "expected_data_type": "datetime"},
        )
    return moment


_MIN_TIME = datetime.min.replace(tzinfo=UTC)


def _time_or_min(value: Any) -> datetime:
    if not value:
        return _MIN_TIME
    return _parsed_time_or_min(value if isinstance(value, str) else str(value))


@lru_cache(maxsize=1 << 17)
def _parsed_time_or_min(text: str) -> datetime:
    """``parse_time`` of a stored date-time, or the earliest time when it is not one (memoised)."""
    try:
        return parse_time(text)
    except ValueError:
        return _MIN_TIME


def _sort_key(rec: dict, sort_by: str) -> tuple:
    if sort_by == "id":
        return (int(rec["id"]),)
    return (_time_or_min(rec.get(sort_by)), int(rec["id"]))


def _start_after(keys: list[tuple], cursor: tuple | None, *, ascending: bool) -> int:
    """Index of the first key past ``cursor`` in serving order (``len(keys)`` if none is).

    ``keys`` is sorted (ascending, or descending when not ``ascending``), so "past the cursor"
    holds for a suffix of it and a binary search finds where that suffix starts.
    """
    if cursor is None:
        return 0
    if ascending:
        return bisect.bisect_right(keys, cursor)
    low, high = 0, len(keys)
    while low < high:
        middle = (low + high) // 2
        if keys[middle] < cursor:
            high = middle
        else:
            low = middle + 1
    return low


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == "-None-"


def _same_value(stored: Any, wanted: Any) -> bool:
    if isinstance(stored, dict) or isinstance(wanted, dict):
        return isinstance(stored, dict) and isinstance(wanted, dict) and stored.get("id") == wanted.get("id")
    if isinstance(stored, str) and isinstance(wanted, str):
        return stored.casefold() == wanted.casefold()
    return stored == wanted


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


_COQL_RE = re.compile(
    r"""^\s*select\s+(?P<fields>.+?)\s+from\s+(?P<module>[A-Za-z_][A-Za-z0-9_]*)
    (?:\s+where\s+(?P<wfield>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>>=|<=|!=|=|>|<)\s*
        (?P<value>'(?:[^']|'')*'|-?\d+(?:\.\d+)?|true|false))?
    (?:\s+order\s+by\s+(?P<ofield>[A-Za-z_][A-Za-z0-9_]*)(?:\s+(?P<odir>asc|desc))?)?
    (?:\s+limit\s+(?P<limit>\d+)(?:\s*,\s*(?P<limit2>\d+))?)?
    (?:\s+offset\s+(?P<offset>\d+))?
    \s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


def _parse_coql(text: str) -> dict[str, Any]:
    """Parse the small COQL subset the simulator serves; anything else is a SYNTAX_ERROR."""
    match = _COQL_RE.match(text)
    if match is None:
        raise _ApiError(400, "SYNTAX_ERROR", "error occured while parsing the query", {})
    fields = [f.strip() for f in match.group("fields").split(",")]
    if not all(_IDENT_RE.match(f) for f in fields):
        raise _ApiError(400, "SYNTAX_ERROR", "given coql query not supported", {"clause": "select"})
    where = None
    if match.group("wfield"):
        literal = match.group("value")
        value: Any
        if literal.startswith("'"):
            value = literal[1:-1].replace("''", "'")
        elif literal.lower() in ("true", "false"):
            value = literal.lower() == "true"
        else:
            value = literal
        where = (match.group("wfield"), match.group("op"), value)
    order_by = None
    if match.group("ofield"):
        order_by = (match.group("ofield"), (match.group("odir") or "asc").lower())
    if match.group("limit2") is not None:  # "limit offset, count"
        offset, limit = int(match.group("limit")), int(match.group("limit2"))
    else:
        limit = int(match.group("limit")) if match.group("limit") else DEFAULT_COQL_LIMIT
        offset = 0
    if match.group("offset") is not None:
        offset = int(match.group("offset"))
    return {
        "fields": list(dict.fromkeys(fields)),
        "module": match.group("module"),
        "where": where,
        "order_by": order_by,
        "limit": limit,
        "offset": offset,
    }


def _coql_key(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "lookup":
        return str(value.get("id")) if isinstance(value, dict) else str(value)
    if kind == "id":
        return int(value)
    if kind == "datetime":
        return parse_time(str(value))
    if kind in ("integer", "double", "currency"):
        return float(value)
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    return str(value)


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is None or right is None:
        return False
    try:
        if op == "=":
            return left == right
        if op == "!=":
            return left != right
        if op == ">=":
            return left >= right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        return left < right
    except TypeError:
        return False


def _csv_value(value: Any) -> str:
    """One stored value as the simulated Bulk Read CSV writes it (see ``_bulk_export``)."""
    if value is None:
        return ""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        target = value.get("id")
        return "" if target is None else str(target)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ";".join(value)
    return json.dumps(value, ensure_ascii=False)


# --- HTTP plumbing ----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    server: SimulatorHTTPServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        response = self.server.simulator._handle(method, self.path, self.headers, body)
        if response.drop:  # an injected fault: hang up without a word
            self.close_connection = True
            return
        payload = b""
        if response.raw is not None:
            payload = response.raw
        elif response.body is not None and response.status not in (204, 304):
            payload = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status not in (204, 304):
            if response.raw is None:
                self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_ID_PREFIX",
    "DEFAULT_REFRESH_TOKEN",
    "ORG_TZ",
    "RequestLog",
    "ZohoSimulator",
    "format_time",
    "make_record_id",
    "org_modules",
    "parse_time",
]
