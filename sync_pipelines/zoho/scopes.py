"""Zoho OAuth scopes: which a sync needs, and whether a granted scope covers a needed one.

Scopes are ``service.scope_name[.sub_scope].operation`` (Zoho CRM v8 "Scopes"); the operation types
are ``ALL``, ``READ``, ``CREATE``, ``UPDATE``, ``DELETE`` and ``WRITE`` ("Alias for CREATE, UPDATE,
and DELETE"). Used by ``sync-pipelines zoho-auth`` and ``check`` (what the token holds against what
is needed) and by the Zoho simulator (what it refuses), so both judge a grant the same way.
"""

import re
from collections.abc import Iterable

#: The OAuth scopes a sync needs, each with what needs it. The pipeline reads and writes records
#: of the nine modules (custom modules and the standard ``Products``: reads, ``/deleted``, counts,
#: the ``BTEC_Grades`` upsert, Moodle ids written back), and reads the org's module list and each
#: module's fields (Zoho CRM v8 "Scopes": "ZohoCRM.modules.ALL (or)
#: ZohoCRM.modules.{module_name}.{operation_type}"; "Use the ZohoCRM.settings.fields.READ scope
#: to retrieve fields metadata").
REQUIRED_SCOPES: dict[str, str] = {
    "ZohoCRM.modules.ALL": "to read the nine modules and write grades and Moodle ids back",
    "ZohoCRM.settings.modules.READ": "to read the org's module list, /settings/modules",
    "ZohoCRM.settings.fields.READ": "to read each module's fields, /settings/fields",
}

#: The scope of Zoho's Bulk Read API (v8 create-job: "scope=ZohoCRM.bulk.read (and)
#: scope=ZohoCRM.modules.{module_name}.{operation_type}"; the v8 OpenAPI spec writes
#: ``ZohoCRM.bulk.READ``). Optional: without it a full read of a big module pages 200 records a
#: call instead (:func:`sync_pipelines.zoho.bulk.read_full`), so a grant lacking it is no failure.
BULK_READ_SCOPE = "ZohoCRM.bulk.READ"

#: Scopes a sync makes use of when granted and does without otherwise, each with what it buys.
OPTIONAL_SCOPES: dict[str, str] = {
    BULK_READ_SCOPE: "to read modules of more than the bulk-read threshold in 200,000-record jobs",
}

_WRITE_OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "WRITE"})


def scope_covers(granted: str, needed: str) -> bool:
    """Whether the granted scope ``granted`` allows what ``needed`` names.

    A grant covers a need when its service and names are the need's or a prefix of them, and its
    operation is the need's, ``ALL``, or ``WRITE`` for ``CREATE``/``UPDATE``/``DELETE``:
    ``ZohoCRM.settings.ALL`` covers ``ZohoCRM.settings.fields.READ``, ``ZohoCRM.modules.READ``
    covers ``ZohoCRM.modules.custom.READ``. Case-insensitive (Zoho's pages write both
    ``ZohoCRM.modules.ALL`` and ``ZohoCRM.modules.all``). (Guess: Zoho documents the parts and the
    operation types, not how it matches a broader grant to a narrower need.)
    """
    g, n = granted.strip().upper().split("."), needed.strip().upper().split(".")
    if len(g) < 2 or len(n) < 2 or n[: len(g) - 1] != g[:-1]:
        return False
    g_op, n_op = g[-1], n[-1]
    return g_op in (n_op, "ALL") or (g_op == "WRITE" and n_op in _WRITE_OPERATIONS)


def missing_scopes(granted: Iterable[str], required: Iterable[str] = REQUIRED_SCOPES) -> list[str]:
    """The required scopes no granted scope covers, in ``required`` order."""
    granted = [g for g in granted if g]
    return [need for need in required if not any(scope_covers(g, need) for g in granted)]


def parse_scopes(scope: object) -> tuple[str, ...]:
    """The scopes of a token answer's ``scope`` (space- or comma-separated)."""
    if not isinstance(scope, str):
        return ()
    return tuple(dict.fromkeys(s for s in re.split(r"[\s,]+", scope) if s))
