"""Hostile input, property-based: the Zoho record parser, the Moodle event parser, the receiver.

Three targets, each fed random and malformed input by hypothesis (derandomized, so CI sees the same
examples every run) and by a fixed corpus of the nastiest values:

* **The Zoho record parser** (:func:`canonicalise` of :func:`frame_from_records`), for every module,
  then the diff and a real warehouse apply (:func:`sync_module` with the records pushed, as the seed
  route delivers them): it never raises; every record ends valid-canonical or INVALID with a reason;
  canonical text never holds a control character; what is stored reads back as validated, and
  SQL-looking strings are stored verbatim (the SQL is parameterised: the tables are all still there).
* **The Moodle event parser** (:func:`moodle_event`): a normalised event whose payload the drop file
  accepts, or a :class:`PayloadError` with a reason; nothing else.
* **The receiver**, over real HTTP: random JSON and form bodies, wrong types, huge and deeply nested
  values, unicode, path-looking tenant ids: always a 4xx with a reason or a 202, never a 5xx; no file
  anywhere but the drop root's own layout; every file it wrote is one the sensor can read.

The figures (inputs tried, crashes, files outside the root) go to ``.local/reliability/hostile.json``.
"""

import json
import math
import re
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pandas as pd
import pytest
import sqlalchemy as sa
import uvicorn
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from sync_pipelines.sensors import RunOutcome, evaluate
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.schema import metadata
from sync_pipelines.webhooks.app import SEED_MOODLE_EVENTS, PayloadError, create_app, moodle_event
from sync_pipelines.webhooks.drop import (
    PROCESSED,
    QUARANTINE,
    SEEN,
    SOURCES,
    TMP_PREFIX,
    pending_files,
    read_event,
    validate_payload,
)
from sync_pipelines.webhooks.signing import sign
from sync_pipelines.zoho.canonical import ID, INVALID_REASON, MODIFIED, canonicalise, frame_from_records
from sync_pipelines.zoho.client import CallStats, DeletedRead
from sync_pipelines.zoho.modules import MODULES, FieldSpec, ModuleSpec, module
from sync_pipelines.zoho.sync import sync_module

FIGURES_FILE = Path(__file__).resolve().parents[2] / ".local" / "reliability" / "hostile.json"
SECRETS = {"school_a": "hostile-secret-a-4b1f", "school_b": "hostile-secret-b-92e7"}
TENANTS = tuple(SECRETS)

#: What hypothesis may do here: the same examples on every run, no example database in the tree.
PROFILE: dict[str, Any] = {
    "derandomize": True,
    "deadline": None,
    "database": None,
    "print_blob": False,
    # No shrinking: a failure is reported as found, so that a known bug costs seconds, not minutes.
    "phases": (Phase.explicit, Phase.reuse, Phase.generate),
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
}

# --- the figures ----------------------------------------------------------------------------------

#: target → {"inputs": n, "crashes": n, "crash_kinds": [...], "files_outside_root": n}
FIGURES: dict[str, dict[str, Any]] = {}


def ALL_SUCCEED(run_key: str) -> RunOutcome:
    """Every run the sensor asked for succeeded: these tests are about hostile input, not runs."""
    return RunOutcome(f"run-{run_key}", "SUCCESS")


def _figures(target: str) -> dict[str, Any]:
    return FIGURES.setdefault(target, {"inputs": 0, "crashes": 0, "crash_kinds": [], "files_outside_root": 0})


def tried(target: str, inputs: int = 1) -> None:
    """Count ``inputs`` inputs fed to ``target``."""
    _figures(target)["inputs"] += inputs


def crashed(target: str, exc: BaseException) -> None:
    """Count one crash of ``target``, remembering its kind (exception type and message head)."""
    figures = _figures(target)
    figures["crashes"] += 1
    first = str(exc).splitlines()[0] if str(exc) else ""
    first = re.sub(r"(position|year) -?[0-9]+", r"\1 N", first)[:120]
    kind = f"{type(exc).__name__}: {first}"
    if kind not in figures["crash_kinds"]:
        figures["crash_kinds"].append(kind)


def escaped(target: str, paths: list[Path]) -> None:
    """Count files found outside the drop root's layout after ``target`` ran."""
    _figures(target)["files_outside_root"] += len(paths)


@pytest.fixture(scope="module", autouse=True)
def hostile_figures() -> Iterator[None]:
    """Write what the module's tests tried and found to :data:`FIGURES_FILE`, pass or fail."""
    yield
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    totals = {
        "inputs": sum(f["inputs"] for f in FIGURES.values()),
        "crashes": sum(f["crashes"] for f in FIGURES.values()),
        "files_outside_root": sum(f["files_outside_root"] for f in FIGURES.values()),
    }
    FIGURES_FILE.write_text(json.dumps({"targets": FIGURES, "totals": totals}, indent=2) + "\n")


def guarded(target: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``, counting any exception it raises as a crash of ``target`` (and re-raising it)."""
    try:
        return fn()
    except Exception as exc:
        crashed(target, exc)
        raise


# --- hostile values -------------------------------------------------------------------------------

ARABIC = "محمد عبد الله الأحمد"
RTL_MARKS = "\u200f\u200e\u202b\u202e\u2067\u2069\u061c"
EMOJI = "😀👩‍🎓🏳️‍🌈🇯🇴🧑🏽‍💻"
#: C0 controls but tab, line feed and carriage return, and DEL: never in canonical text.
C0_CONTROLS = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r") + "\x7f"
C1_CONTROLS = "".join(chr(c) for c in range(0x80, 0xA0))
SQL_LOOKING = (
    "'; DROP TABLE zoho_students; --",
    "Robert'); DROP TABLE sync_runs;--",
    '" OR "1"="1',
    "1; DELETE FROM sync_cursors WHERE 1=1",
    "' UNION SELECT tenant_id, zoho_id FROM zoho_students --",
    "%' OR 1=1 /*",
    "$$; DROP TABLE zoho_grades; $$",
    "\\'; TRUNCATE sync_results; --",
)
PATH_LOOKING = (
    "../../../../etc/passwd",
    "..",
    ".",
    "/etc/shadow",
    "..\\..\\windows\\system32\\config",
    "%2e%2e%2f%2e%2e%2fetc",
    "a/b",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
    "\\\\server\\share\\x",
    "drop/school_a/zoho/.seen/id-x",
)
#: Values that look like a kind but are not quite, or are at its edges.
KIND_LOOKING = (
    "2024-02-29",
    "2023-02-29",
    "2024-13-01",
    "0001-01-01",
    "9999-12-31",
    "2024-01-31T10:00:00+05:30",
    "2024-01-31T10:00:00Z",
    "2024-01-31 10:00",
    "1970-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59-12:00",
    "0",
    "-0",
    "007",
    "12",
    "1.0",
    "1e30",
    "1e400",
    "-1e-320",
    "NaN",
    "inf",
    "-Infinity",
    "0x1F",
    "1_000",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "99999999999999999999999999999999",
    "١٢٣",
    "１２３",
    "true",
    "FALSE",
    "yes",
    "a@b.co",
    " A.B@School.EXAMPLE ",
    "a@@b.co",
    "-None-",
    "",
    " ",
    "\u00a0",
)
#: The id of every module's first clean record; lookups at it resolve once it is stored.
ANCHOR = "5843017000000000000"
SPECIAL_TEXT = (ARABIC, RTL_MARKS, EMOJI, C0_CONTROLS, C1_CONTROLS, "e\u0301", "\ufeffBOM", "null", "None")

_ALPHABET = ARABIC + RTL_MARKS + EMOJI + C0_CONTROLS + C1_CONTROLS + "\t\n\r aZ09@.-_'\";%\\/\u0301\ufeff"

hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(_ALPHABET), max_size=40),
    st.sampled_from(SQL_LOOKING + PATH_LOOKING + KIND_LOOKING + SPECIAL_TEXT),
    st.builds(
        lambda piece, n: piece * n,
        st.sampled_from(["x", "م", "😀", "\x00", "'; DROP TABLE x; --", "a\u0301"]),
        st.integers(256, 40_000),
    ),
    st.builds(
        lambda a, b, c: a + b + c,
        st.sampled_from(SQL_LOOKING + PATH_LOOKING + SPECIAL_TEXT),
        st.sampled_from(["", "\x00", "\u202e", " ", "\n"]),
        st.sampled_from(KIND_LOOKING),
    ),
)
hostile_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324, 2.0**63, 1.5]),
    hostile_text,
)


def nest(value: object, depth: int, shape: str) -> object:
    """``value`` wrapped ``depth`` times in a list or a dict."""
    for _ in range(depth):
        value = [value] if shape == "list" else {"k": value}
    return value


hostile_value = st.one_of(
    hostile_scalar,
    st.recursive(
        hostile_scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=6,
    ),
    st.builds(nest, hostile_scalar, st.integers(2, 300), st.sampled_from(["list", "dict"])),
    st.fixed_dictionaries({"name": hostile_text, "id": hostile_scalar}),
)


def _valid_value(f: FieldSpec) -> st.SearchStrategy[object]:
    """A value that canonicalises cleanly for the field's kind (so some records get stored)."""
    match f.kind:
        case "email":
            return st.sampled_from(["a@school.example", "B.C@School.Example", "d@x.io", "ع@مدرسة.شبكة"])
        case "picklist":
            return st.sampled_from(f.picklist) if f.picklist else hostile_text
        case "lookup":
            digits = st.one_of(st.just(ANCHOR), st.from_regex(r"[1-9][0-9]{0,18}", fullmatch=True))
            return st.one_of(digits, st.builds(lambda d: {"name": "x", "id": d}, digits))
        case "date":
            return st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)).map(str)
        case "datetime":
            return st.sampled_from(["2026-01-25T10:30:00+03:00", "2026-01-25T07:30:00Z"])
        case "boolean":
            return st.sampled_from([True, False, "true", "False"])
        case "integer":
            return st.one_of(st.integers(-(2**31), 2**31), st.integers(0, 99).map(str))
        case "double" | "currency":
            return st.one_of(st.floats(-1e9, 1e9, allow_nan=False), st.integers(0, 10**6))
        case _:
            return st.one_of(
                st.sampled_from((*SQL_LOOKING, ARABIC, EMOJI, "Amal " + RTL_MARKS + "Haddad")),
                st.text(min_size=1, max_size=30),
            )


def record_for(spec: ModuleSpec) -> st.SearchStrategy[dict[str, object]]:
    """A record of ``spec``: mostly valid with a few hostile fields, or hostile throughout."""
    fields = [*spec.fields, FieldSpec("Modified_Time", MODIFIED, "datetime")]
    if not spec.has_modified_time:
        fields.pop()
    record_id = st.one_of(
        st.from_regex(r"58430170000[0-9]{8}", fullmatch=True), st.sampled_from(SQL_LOOKING), hostile_value
    )
    mostly_valid = st.builds(
        lambda rid, valid, hostile: {"id": rid, **valid, **hostile},
        st.one_of(st.from_regex(r"58430170000[0-9]{8}", fullmatch=True), st.sampled_from(SQL_LOOKING)),
        st.fixed_dictionaries({f.api_name: _valid_value(f) for f in fields}),
        st.dictionaries(st.sampled_from([f.api_name for f in fields]), hostile_value, max_size=3),
    )
    wild = st.fixed_dictionaries(
        {"id": record_id},
        optional={
            **{f.api_name: st.one_of(_valid_value(f), hostile_value) for f in fields},
            "Unknown_Field": hostile_value,
        },
    )
    return st.one_of(mostly_valid, wild)


@st.composite
def module_records(draw: st.DrawFn, max_size: int = 6) -> tuple[str, list[dict[str, object]]]:
    """A module's name and a batch of its records."""
    spec = draw(st.sampled_from(MODULES))
    return spec.name, draw(st.lists(record_for(spec), min_size=1, max_size=max_size))


# --- what a canonical frame must look like --------------------------------------------------------

_ASCII_INT = re.compile(r"-?[0-9]+")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_TEXT_KINDS = {"text", "textarea", "phone", "website", "autonumber", "email", "picklist"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``what`` (the same for every record it hits) and an example."""

    what: str
    example: str


def summary(problems: list[Problem], per_kind: int = 2) -> str:
    """The problems, one line per kind with its count and a few examples (for an assertion message)."""
    counts = Counter(p.what for p in problems)
    examples: dict[str, list[str]] = {}
    for p in problems:
        if len(examples.setdefault(p.what, [])) < per_kind:
            examples[p.what].append(p.example)
    lines = [f"{what}  (x{n}; e.g. {'; '.join(examples[what])})" for what, n in counts.most_common()]
    return f"{len(problems)} problem(s):\n" + "\n".join(lines)


def _missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def form_problem(f: FieldSpec, value: str) -> str | None:
    """Why ``value`` is not in the canonical form of its kind (the table in canonical.py), or None."""
    if value != value.strip() or not value:
        return "not stripped, or empty"
    if f.kind in _TEXT_KINDS:
        if f.kind == "email" and (value != value.lower() or not _EMAIL.fullmatch(value)):
            return "not a lower-case e-mail"
        if f.kind == "picklist" and f.picklist and value not in f.picklist:
            return "not one of the picklist"
        return None
    if f.kind == "lookup":
        return None if _ASCII_DIGITS.fullmatch(value) else "not a record id (digits 0-9)"
    if f.kind == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            return "not a calendar date"
        return None if _DATE.fullmatch(value) else "not YYYY-MM-DD"
    if f.kind == "datetime":
        try:
            datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return "not a calendar time YYYY-MM-DDTHH:MM:SSZ"
        return None if _DATETIME.fullmatch(value) else "not YYYY-MM-DDTHH:MM:SSZ"
    if f.kind == "boolean":
        return None if value in ("true", "false") else "not true/false"
    if f.kind == "integer":
        return None if _ASCII_INT.fullmatch(value) else "not decimal digits 0-9"
    if f.kind in ("double", "currency"):
        try:
            number = float(value)
        except ValueError:
            return "not a number"
        if not math.isfinite(number) or value.endswith(".0"):
            return "not a finite shortest decimal"
        return None
    if f.kind == "subform":
        try:
            rows = json.loads(value)
        except ValueError:
            return "not JSON"
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return "not a list of rows"
        if value != json.dumps(rows, ensure_ascii=False, separators=(",", ":"), sort_keys=True):
            return "not sorted-key, compact JSON"
        return None
    return f"unknown kind {f.kind}"


def canonical_problems(
    spec: ModuleSpec, records: list[dict[str, object]], out: pd.DataFrame
) -> list[Problem]:
    """Everything wrong with ``out`` as the canonical frame of ``records`` (empty when all is well).

    Every value is text or missing and holds no C0 control character but tab, line feed and carriage
    return (the fingerprint's separators are control characters); an INVALID record has a reason; a
    valid one has an id, its required fields, and each value in the canonical form of its kind.
    """
    where = spec.name
    expected = [ID, *spec.columns, *([MODIFIED] if spec.has_modified_time else []), INVALID_REASON]
    if missing := [c for c in expected if c not in out.columns]:
        return [Problem(f"{where}: columns missing", str(missing))]
    if len(out) != len(records):
        return [Problem(f"{where}: {len(records)} records in, {len(out)} rows out", "")]
    fields = {f.column: f for f in spec.fields}
    problems: list[Problem] = []
    for i, row in enumerate(out.to_dict("records")):
        raw = records[i]
        for column in (ID, *fields, MODIFIED):
            value = row.get(column)
            if column not in row or _missing(value):
                continue
            if not isinstance(value, str):
                problems.append(
                    Problem(f"{where}.{column}: {type(value).__name__}, not text", repr(value)[:60])
                )
            elif bad := sorted({c for c in value if c in C0_CONTROLS}):
                problems.append(Problem(f"{where}.{column}: control character kept", repr(bad)[:60]))
        reason = row[INVALID_REASON]
        if not _missing(reason):
            if not isinstance(reason, str) or not reason.strip():
                problems.append(Problem(f"{where}: INVALID without a reason", repr(reason)))
            continue
        if _missing(row[ID]):
            problems.append(Problem(f"{where}: valid without an id", repr(raw.get("id"))[:60]))
        for column, f in fields.items():
            value = row.get(column)
            if _missing(value):
                if f.required:
                    problems.append(Problem(f"{where}.{column}: required, missing, yet valid", ""))
            elif isinstance(value, str) and (problem := form_problem(f, value)):
                problems.append(
                    Problem(
                        f"{where}.{column} ({f.kind}): valid but {problem}",
                        f"{raw.get(f.api_name)!r:.50} -> {value!r:.50}",
                    )
                )
    return problems


def parse(spec: ModuleSpec, records: list[dict[str, object]]) -> pd.DataFrame:
    """The parser under test: raw Zoho records → the canonical frame (numpy's warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return canonicalise(spec, frame_from_records(spec, records))


# --- records that reach the warehouse -------------------------------------------------------------

#: Lookups of clean records point at one of this many clean records of the target module.
SEEDS = 40


def base_value(spec: ModuleSpec, f: FieldSpec, i: int) -> object:
    """A clean value for field ``f`` of record ``i``: unique where a natural key needs it; the
    ``j``-th lookup of the module at clean record ``(i // SEEDS**j) % SEEDS`` of its target (so
    that pairs of lookups, the enrolments' natural key, are unique too)."""
    match f.kind:
        case "email":
            return f"user{i}@school.example"
        case "picklist":
            return f.picklist[0] if f.picklist else f"choice {i}"
        case "lookup":
            j = [g.column for g in spec.fields if g.kind == "lookup"].index(f.column)
            return {"name": "target", "id": str(int(ANCHOR) + (i // SEEDS**j) % SEEDS)}
        case "date":
            return "2024-12-31" if spec.date_order and f.column == spec.date_order[1] else "2024-01-01"
        case "datetime":
            return "2026-01-25T07:30:00Z"
        case "boolean":
            return True
        case "integer":
            return 3
        case "double" | "currency":
            return 12.5
        case "subform":
            return [{"id": str(int(ANCHOR) + 10_000 + i), "Note": f"{f.api_name} {i}"}]
        case _:
            return f"{f.api_name} {i}"


def base_record(spec: ModuleSpec, i: int) -> dict[str, object]:
    """Record ``i`` of ``spec``, valid throughout (id ``ANCHOR + i``)."""
    record: dict[str, object] = {"id": str(int(ANCHOR) + i)}
    record.update({f.api_name: base_value(spec, f, i) for f in spec.fields})
    if spec.has_modified_time:
        record["Modified_Time"] = "2026-01-25T10:30:00+03:00"
    return record


class RecordsClient:
    """A Zoho client that answers every read with the records it was given and makes no HTTP call."""

    def __init__(self, records: list[dict[str, object]] | None = None) -> None:
        self.records = records or []
        self.stats = CallStats()

    def iter_records(self, module: str, fields: object, **kwargs: object) -> Iterator[dict[str, object]]:
        """Every record given."""
        yield from (dict(r) for r in self.records)

    def read_deleted(self, module: str, **kwargs: object) -> DeletedRead:
        """Nothing deleted."""
        return DeletedRead(entries=[], complete=True)

    def get_records_by_ids(self, module: str, ids: object, fields: object = None) -> list[dict[str, object]]:
        """No record by id (so every lookup the records make points at a record Zoho lacks)."""
        return []

    def get_record(self, module: str, record_id: str, fields: object) -> dict[str, object] | None:
        """No record by id."""
        return None


def push(store: Warehouse, tenant: str, spec: ModuleSpec, records: list[dict[str, object]]) -> Any:
    """Sync ``records`` into ``store`` as the seed route's pushed records (the webhook-driven path)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sync_module(
            tenant_id=tenant, spec=spec, client=RecordsClient(), warehouse=store, pushed_records=records
        )


def _same(a: object, b: object) -> bool:
    return (_missing(a) and _missing(b)) or a == b


def storage_problems(store: Warehouse, tenant: str, spec: ModuleSpec, records: pd.DataFrame) -> list[Problem]:
    """Where the warehouse does not hold what the diff classified.

    Every record with an id is stored, INVALID ones too (the mirror). Each must read back
    (through the store's own ``from_db``) exactly as its canonical values, except the fields its
    findings name (a value that cannot be read as its column's type is stored NULL, and the
    finding keeps it). INVALID records must carry a reason and findings.
    """
    problems: list[Problem] = []
    where = spec.name
    columns = {f.api_name: f.column for f in spec.fields}
    written = records[records["sync_status"].isin(["NEW", "UPDATED", "UNCHANGED", "REFRESHED", "INVALID"])]
    stored = store.load_rows(tenant, spec, written[ID].tolist())
    for row in written.to_dict("records"):
        if row[ID] not in stored.index:
            problems.append(Problem(f"{where}: {row['sync_status']} but not stored", repr(row[ID])[:40]))
            continue
        flagged = {columns.get(f["field"]) for f in json.loads(row["findings"] or "[]")}
        back = stored.loc[row[ID]]
        problems += [
            Problem(f"{where}.{c}: stored value differs", f"{row[c]!r:.50} -> {back[c]!r:.50}")
            for c in spec.columns
            if c not in flagged and not _same(row[c], back[c])
        ]
    invalid = records[records["sync_status"] == "INVALID"]
    problems += [
        Problem(f"{where}: INVALID without a reason or findings", repr(zid)[:40])
        for zid, reason, found in zip(invalid[ID], invalid["sync_reason"], invalid["findings"], strict=True)
        if not isinstance(reason, str) or not reason.strip() or not isinstance(found, str)
    ]
    return problems


def tables_missing(store: Warehouse) -> list[str]:
    """The warehouse tables no longer in the database (an injected DROP TABLE would show here)."""
    present = set(sa.inspect(store.engine).get_table_names())
    return sorted(set(metadata.tables) - present)


# --- (a) the Zoho record parser -------------------------------------------------------------------

#: The nastiest values, by family; each is tried in every field of every module.
FAMILIES: dict[str, tuple[object, ...]] = {
    "sql": SQL_LOOKING,
    "paths": PATH_LOOKING,
    "kind_looking": KIND_LOOKING,
    "unicode_and_controls": (*SPECIAL_TEXT, "\x00" * 1000),
    "lone_surrogates": ("\ud800", "a\udfffb"),
    "long_text": ("1" * 40, "x" * 300, "م" * 100_000),
    "numbers": (
        None,
        True,
        False,
        0,
        -1,
        2**31,
        2**63,
        -(2**63) - 1,
        10**30,
        -(10**30),
        1.5,
        -0.0,
        1e308,
        5e-324,
        float("nan"),
        float("inf"),
        float("-inf"),
    ),
    "containers": (
        {},
        [],
        [1, 2],
        {"id": None},
        {"id": [1]},
        {"id": {"id": "1"}},
        {"name": "x", "id": "'; DROP TABLE zoho_students; --"},
        {"name": "x", "id": "1" * 40},
        nest("x", 500, "list"),
        nest(1, 500, "dict"),
    ),
    # tried as the records' id instead of in a field
    "record_ids": (*SQL_LOOKING[:3], "5" * 40, ARABIC, EMOJI, "a\x00b", "\x00", " ", None, 12345, {"id": 1}),
}


@dataclass
class Group:
    """The records that carry one hostile value, and the field(s) each carries it in."""

    label: str
    fields: list[str]
    records: list[dict[str, object]]


def corpus_groups(spec: ModuleSpec, family: str, *, by_kind: bool = False, start: int = 1) -> list[Group]:
    """One group per value of ``family``: clean records numbered from ``start``, each with the value
    in one field (``by_kind``: in every field of one kind), or as the id for ``record_ids``."""
    names = [(f.api_name, f.kind) for f in spec.fields]
    if spec.has_modified_time:
        names.append(("Modified_Time", "modified"))
    if family == "record_ids":
        slots = [["id"]]
    elif by_kind:
        kinds: dict[str, list[str]] = {}
        for name, kind in names:
            kinds.setdefault(kind, []).append(name)
        slots = list(kinds.values())
    else:
        slots = [[name] for name, _ in names]
    groups: list[Group] = []
    i = start
    for value in FAMILIES[family]:
        records = []
        for slot in slots:
            records.append({**base_record(spec, i), **dict.fromkeys(slot, value)})
            i += 1
        groups.append(Group(f"{value!r:.40}", ["+".join(s) for s in slots], records))
    return groups


def parser_crashes(spec: ModuleSpec, groups: list[Group]) -> list[str]:
    """Which values make the parser raise (and, for the first of them, in which fields: finding
    that costs one parse a field)."""
    found: list[str] = []
    for group in groups:
        try:
            parse(spec, group.records)
        except Exception as exc:
            where = ""
            if not found:
                fields = []
                for name, record in zip(group.fields, group.records, strict=True):
                    try:
                        parse(spec, [record])
                    except Exception:
                        fields.append(name)
                where = f" in {'/'.join(fields)}"
            found.append(f"{spec.name}{where} = {group.label}: {type(exc).__name__}: {exc}"[:240])
    return found


@pytest.mark.parametrize("family", FAMILIES)
def test_every_hostile_value_in_every_field_is_parsed_or_invalid(family: str) -> None:
    """Each value of the family in every field of every module: the parser never raises, and every
    record comes out valid-canonical or INVALID with a reason."""
    crashes: list[str] = []
    problems: list[Problem] = []
    for spec in MODULES:
        groups = corpus_groups(spec, family)
        records = [r for group in groups for r in group.records]
        tried("zoho_record_parser", len(records))
        try:
            out = parse(spec, records)
        except Exception as exc:
            crashed("zoho_record_parser", exc)
            crashes += parser_crashes(spec, groups)
            continue
        problems += canonical_problems(spec, records, out)
    assert not crashes, "the parser raised on:\n" + "\n".join(crashes)
    assert not problems, summary(problems)


@settings(max_examples=70, **PROFILE)
@given(module_records())
def test_random_records_are_parsed_or_invalid_and_never_raise(
    batch: tuple[str, list[dict[str, object]]],
) -> None:
    """Random batches, mostly-valid and wild records mixed: as for the corpus."""
    spec, records = module(batch[0]), batch[1]
    tried("zoho_record_parser", len(records))
    out = guarded("zoho_record_parser", lambda: parse(spec, records))
    problems = canonical_problems(spec, records, out)
    assert not problems, summary(problems)


def test_canonical_text_holds_no_c1_control_character() -> None:
    """C1 controls (U+0080-U+009F: NEL, CSI, ...) are control characters too: canonical.py promises
    text with "control characters removed"; only tab, line feed and carriage return may stay."""
    kept: list[str] = []
    for spec in MODULES:
        text = [f for f in spec.fields if f.kind in _TEXT_KINDS - {"email", "picklist"}]
        records = [{**base_record(spec, 1), f.api_name: f"a{C1_CONTROLS}b"} for f in text]
        tried("zoho_record_parser", len(records))
        out = guarded("zoho_record_parser", lambda spec=spec, records=records: parse(spec, records))
        columns = [
            f.column for f in text if out[f.column].map(lambda v: any(c in C1_CONTROLS for c in str(v))).any()
        ]
        if columns:
            kept.append(f"{spec.name}: {', '.join(columns)}")
    assert not kept, "C1 controls kept in text columns:\n" + "\n".join(kept)


def test_an_unreadable_modified_time_does_not_crash_the_next_read(tmp_path: Path) -> None:
    """Zoho's ``Modified_Time`` is read too: one record whose value is not a time must not stop the
    sync of its whole module (the next read position is computed from these values)."""
    spec = next(m for m in MODULES if m.has_modified_time and not m.dependencies)
    store = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        records = [base_record(spec, 1), {**base_record(spec, 2), "Modified_Time": "false"}]
        tried("zoho_record_parser", len(records))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            report = guarded(
                "zoho_record_parser",
                lambda: sync_module(
                    tenant_id="school_a", spec=spec, client=RecordsClient(records), warehouse=store
                ),
            )
        assert report.counts["NEW"] + report.counts["INVALID"] == 2
    finally:
        store.dispose()


# --- (a) ... through the diff into a real warehouse ----------------------------------------------


def seeded(store: Warehouse, tenant: str) -> None:
    """Store clean records ``0 .. SEEDS-1`` of every module, so that clean lookups resolve."""
    for spec in MODULES:
        report = push(store, tenant, spec, [base_record(spec, i) for i in range(SEEDS)])
        assert report.counts["NEW"] == SEEDS, (spec.name, report.counts)


def apply_and_check(
    store: Warehouse, tenant: str, spec: ModuleSpec, records: list[dict[str, object]]
) -> None:
    """Push ``records``: nothing may raise, and the store must hold exactly what was validated."""
    tried("warehouse_apply", len(records))
    report = guarded("warehouse_apply", lambda: push(store, tenant, spec, records))
    problems = storage_problems(store, tenant, spec, report.result.records)
    assert not problems, summary(problems)
    assert tables_missing(store) == []


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """A SQLite warehouse in a temp dir, with the clean records of every module for ``school_a``."""
    store = Warehouse(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'warehouse.db'}")
    try:
        seeded(store, "school_a")
        yield store
    finally:
        store.dispose()


@settings(max_examples=50, **PROFILE)
@given(module_records(max_size=5))
def test_random_records_reach_sqlite_verbatim_or_are_held_back(
    sqlite_store: Warehouse, batch: tuple[str, list[dict[str, object]]]
) -> None:
    """Random batches pushed through the diff into SQLite (one warehouse for all examples, so that
    ids recur and records get UPDATED too): no crash, stored as validated or held back."""
    spec, records = module(batch[0]), batch[1]
    apply_and_check(sqlite_store, "school_a", spec, records)


@pytest.mark.postgres
@pytest.mark.parametrize("warehouse_url", ["postgres"], indirect=True)
def test_random_records_reach_postgres_verbatim_or_are_held_back(warehouse: Warehouse) -> None:
    """A smaller sample on PostgreSQL (conftest's ``warehouse``; each example's ids are its own)."""
    seeded(warehouse, "school_a")
    checks = [*PROFILE["suppress_health_check"], HealthCheck.function_scoped_fixture]

    @settings(max_examples=20, **{**PROFILE, "suppress_health_check": checks})
    @given(module_records(max_size=4))
    def check(batch: tuple[str, list[dict[str, object]]]) -> None:
        """One example, as on SQLite."""
        spec, records = module(batch[0]), batch[1]
        apply_and_check(warehouse, "school_a", spec, records)

    check()


#: The families pushed together: one sync per batch and module, so that a crash hides little.
BATCHES: dict[str, tuple[str, ...]] = {
    "text": ("sql", "paths", "unicode_and_controls"),
    "kind_looking": ("kind_looking",),
    "numbers_and_containers": ("numbers", "containers"),
    "long_text": ("long_text",),
    "lone_surrogates": ("lone_surrogates",),
    "record_ids": ("record_ids",),
}
#: PostgreSQL takes a smaller sample: the text batch in every module, the others in three modules
#: that hold every kind of field between them (and lookups, natural keys, pending records).
POSTGRES_SAMPLE = ("students", "payments", "grades")


def test_every_hostile_value_is_stored_verbatim_or_held_back(warehouse: Warehouse) -> None:
    """Each family's values, in every field of one kind at a time, pushed over clean records into
    SQLite and PostgreSQL (conftest's ``warehouse``): nothing raises, every record is stored as
    validated or held back, SQL-looking text is stored as sent, and every table is still there."""
    tenant = "school_a"
    seeded(warehouse, tenant)
    postgres = warehouse.engine.dialect.name == "postgresql"
    crashes: list[str] = []
    problems: list[Problem] = []
    start = SEEDS
    for batch, families in BATCHES.items():
        for spec in MODULES:
            if postgres and batch != "text" and spec.name not in POSTGRES_SAMPLE:
                continue
            records: list[dict[str, object]] = []
            for family in families:  # numbered on from the last record, so that no two share an id
                records += [
                    r for g in corpus_groups(spec, family, by_kind=True, start=start) for r in g.records
                ]
                start = (
                    int(str(records[-1]["id"])) - int(ANCHOR) + 1 if family != "record_ids" else start + 99
                )
            tried("warehouse_apply", len(records))
            try:
                report = push(warehouse, tenant, spec, records)
            except Exception as exc:
                crashed("warehouse_apply", exc)
                crashes.append(
                    f"[{batch}] {spec.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                )
                continue
            problems += storage_problems(warehouse, tenant, spec, report.result.records)
            stored = warehouse.read_table(tenant, spec).set_index("zoho_id")
            text = {f.api_name: f.column for f in spec.fields if f.kind in ("text", "textarea")}
            problems += [
                Problem(f"{spec.name}.{column}: SQL-looking text not stored as sent", record[name])
                for record in records
                for name, column in text.items()
                if record[name] in SQL_LOOKING and stored.loc[record["id"], column] != record[name]
            ]
    assert tables_missing(warehouse) == []
    assert not crashes, f"{len(crashes)} sync(s) raised:\n" + "\n".join(crashes)
    assert not problems, summary(problems)


# --- (b) the Moodle event parser ------------------------------------------------------------------

GRADED = {
    "eventname": "\\core\\event\\user_graded",
    "objectid": "1187",
    "contextinstanceid": "12",
    "userid": "2",
    "courseid": "12",
    "relateduserid": "57",
    "other": {"itemid": "341", "overridden": False, "finalgrade": "87.50000"},
    "timecreated": 1769337000,
    "grade_item": {"id": 341, "itemtype": "mod", "itemmodule": "assign", "grademax": "100.00000"},
}
ENROLMENT = {
    "eventname": "\\core\\event\\user_enrolment_created",
    "objectid": 77,
    "relateduserid": 57,
    "courseid": 12,
    "userid": 2,
    "contextinstanceid": 12,
    "other": {"enrol": "manual"},
    "timecreated": 1769336990,
}
USER_CREATED = {
    "eventname": "\\core\\event\\user_created",
    "objectid": "57",
    "relateduserid": "57",
    "courseid": "0",
    "userid": "2",
    "contextinstanceid": "57",
    "other": [],
    "timecreated": "1769336900",
}
MOODLE_KEYS = sorted({*GRADED, "event_id", "component", "anonymous"})
ZOHO_NOTIFICATION = {
    "module": "BTEC_Students",
    "event_type": "updated",
    "record_id": "5843017000000123456",
    "timestamp": "2026-01-25T10:30:00Z",
}


def _overlaid(base: dict[str, object], top: dict[str, object], other: dict[str, object]) -> dict[str, object]:
    out = {**base, **top}
    if other and isinstance(out.get("other"), dict):
        out["other"] = {**out["other"], **other}
    elif other and isinstance(out.get("grade_item"), dict):
        out["grade_item"] = {**out["grade_item"], **other}
    return out


moodle_fields = st.one_of(
    st.builds(
        _overlaid,
        st.sampled_from([GRADED, ENROLMENT, USER_CREATED]),
        st.dictionaries(st.sampled_from(MOODLE_KEYS), hostile_value, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["itemid", "finalgrade", "overridden", "id", "itemtype", "grademax", "is_course_total"]
            ),
            hostile_value,
            max_size=2,
        ),
    ),
    st.dictionaries(st.one_of(st.sampled_from(MOODLE_KEYS), st.text(max_size=8)), hostile_value, max_size=6),
    st.builds(
        lambda base, depth, key: {**base, key: "[" * depth + "1" + "]" * depth},
        st.sampled_from([GRADED, ENROLMENT]),
        st.integers(100, 5000),
        st.sampled_from(["other", "event_id", "eventname"]),
    ),
)


@settings(max_examples=400, **PROFILE)
@given(moodle_fields, st.sampled_from([None, *SEED_MOODLE_EVENTS.values()]))
@example({**GRADED, "grade_item": {**GRADED["grade_item"], "grademax": 10**400}}, None)  # beyond float
@example({**GRADED, "other": {"itemid": 341, "finalgrade": -(10**400)}}, None)
@example({**GRADED, "other": "[" * 100_000 + "]" * 100_000}, None)  # JSON text nested past any stack
@example({**ENROLMENT, "other": '{"x": NaN}'}, None)
def test_the_moodle_event_parser_normalises_or_refuses_with_a_reason(
    fields: dict[str, object], eventname: str | None
) -> None:
    """An event whose payload a drop file accepts, or a ``PayloadError`` (a ValueError, answered 422)
    that says what is wrong; never any other exception."""
    tried("moodle_event_parser")
    try:
        event = moodle_event(fields, eventname=eventname)
    except ValueError as exc:
        assert str(exc).strip(), "refused without a reason"
        return
    except Exception as exc:
        crashed("moodle_event_parser", exc)
        raise
    assert event.kind == "moodle.event"
    validate_payload(event.kind, event.payload)
    assert eventname is None or event.payload["eventname"] == eventname


def test_the_parser_errors_are_payload_errors_with_the_field_named() -> None:
    """The 422 reasons name the field at fault."""
    cases = {
        "objectid": {**GRADED, "objectid": "abc"},
        "grade_item.grademax": {**GRADED, "grade_item": {**GRADED["grade_item"], "grademax": "lots"}},
        "other.finalgrade": {**GRADED, "other": {"itemid": 341, "finalgrade": [1]}},
        "eventname": {**GRADED, "eventname": {"a": 1}},
    }
    for name, fields in cases.items():
        tried("moodle_event_parser")
        with pytest.raises(PayloadError, match=re.escape(name)):
            moodle_event(fields)


# --- (c) the receiver, over real HTTP -------------------------------------------------------------


@dataclass
class Receiver:
    """The receiver on uvicorn, on loopback: its port, drop root, and the folder around it."""

    port: int
    root: Path
    area: Path
    tenants_file: Path


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """The receiver, with two schools, under uvicorn in a thread; the drop root sits in a folder of
    its own (``area``) beside a decoy folder that hostile tenant ids aim at."""
    area = tmp_path_factory.mktemp("hostile-area")
    (area / "outside").mkdir()
    tenants_file = area / "tenants.yaml"
    zoho = {
        "accounts_url": "http://127.0.0.1:9",
        "client_id_env": "A",
        "client_secret_env": "B",
        "refresh_token_env": "C",
    }
    tenants = [{"id": t, "zoho": zoho, "webhook_secret_env": f"HOSTILE_{t.upper()}"} for t in SECRETS]
    tenants_file.write_text(yaml.safe_dump({"tenants": tenants}))
    mp = pytest.MonkeyPatch()
    for tenant, secret in SECRETS.items():
        mp.setenv(f"HOSTILE_{tenant.upper()}", secret)
    root = area / "drop"
    app = create_app(tenants_file=tenants_file, drop_root=root, body_timeout=5.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield Receiver(sock.getsockname()[1], root, area, tenants_file)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        mp.undo()


def http(
    port: int, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, bytes, bytes]:
    """One raw HTTP/1.1 request (bytes as given, nothing normalised): ``(status, content type, body)``."""
    lines = [b"%s %s HTTP/1.1" % (method, target), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [b"Content-Length: %d" % len(body), *(k + b": " + v for k, v in headers)]
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        with suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(request)  # a server that answered before reading it all: read its answer
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except ConnectionResetError:
            # A server that answers without reading the whole body resets the connection when it
            # closes: its answer arrived before the reset, and is what counts.
            if not data.startswith(b"HTTP/1.1 "):
                raise
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    fields = dict(line.split(b":", 1) for line in header_lines if b":" in line)
    ctype = next((v.strip() for k, v in fields.items() if k.lower() == b"content-type"), b"")
    return int(status_line.split()[1]), ctype, payload


def layout_strays(receiver: Receiver) -> list[Path]:
    """Everything under the area that is neither the tenants file, the decoy folder, nor part of the
    drop layout ``<root>/<known tenant>/<source>/{*.json, .seen/*, processed/*, quarantine/*}``."""
    strays = []
    for path in receiver.area.rglob("*"):
        if path in (receiver.tenants_file, receiver.area / "outside"):
            continue
        if not path.is_relative_to(receiver.root):
            strays.append(path)
            continue
        parts = path.relative_to(receiver.root).parts
        ok = not parts or (
            parts[0] in TENANTS
            and (len(parts) < 2 or parts[1] in SOURCES)
            and not any(p.startswith(TMP_PREFIX) for p in parts)
            and (
                len(parts) <= 2
                or (
                    len(parts) == 3
                    and (parts[2] in (SEEN, PROCESSED, QUARANTINE) or parts[2].endswith(".json"))
                )
                or (len(parts) == 4 and parts[2] in (SEEN, PROCESSED, QUARANTINE))
            )
        )
        if not ok:
            strays.append(path)
    return strays


HOSTILE_TENANTS = (
    "..",
    ".",
    "%2e%2e",
    "%2E%2E%2F%2E%2E",
    "..%2F..%2Foutside",
    "../outside",
    "a/b",
    "school_a/../school_b",
    "school_a/..",
    "{AREA}/outside/evil",
    "/etc",
    "school_a\x00",
    "school_a\x00../../outside",
    "school_a%00",
    "SCHOOL_A",
    "school_a ",
    " school_a",
    "school_a\u200f",
    "ſchool_a",
    "school_a.json",
    "x" * 65,
    "",
    "~",
    "C:\\Windows",
    "\\\\server\\share",
)
tenants = st.one_of(
    st.sampled_from(TENANTS), st.sampled_from(TENANTS), st.sampled_from(HOSTILE_TENANTS), st.text(max_size=12)
)


def path_segment(tenant: str, mode: str, area: Path) -> bytes:
    """A tenant id as the path segment a client would send: percent-encoded whole, with its slashes
    left raw, or raw (only CR, LF, space, ``#`` and ``?`` encoded, which would end the request line)."""
    tenant = tenant.replace("{AREA}", str(area))
    if mode == "encoded":
        return quote(tenant, safe="", errors="surrogatepass").encode()
    if mode == "slashes":
        return quote(tenant, safe="/.~", errors="surrogatepass").encode()
    raw = tenant.encode("utf-8", "surrogatepass")
    for c in b"\r\n #?":
        raw = raw.replace(bytes([c]), b"%%%02X" % c)
    return raw


def json_bytes(value: object, ascii_only: bool) -> bytes:
    """``value`` as JSON (NaN written as such, lone surrogates as \\u escapes or raw bytes)."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def deep_json(base: dict[str, object], field: str, depth: int, shape: str = "list") -> bytes:
    """``base`` as JSON with ``field`` nested ``depth`` levels deep (written as text: encoding such a
    value with :mod:`json` would itself exceed the stack)."""
    inner = "[" * depth + "1" + "]" * depth if shape == "list" else '{"k":' * depth + "1" + "}" * depth
    return json_bytes({**base, field: "@DEEP@"}, True).replace(b'"@DEEP@"', inner.encode())


@st.composite
def deliveries(draw: st.DrawFn) -> dict[str, Any]:
    """A hostile delivery: route, tenant (path or header), content type, authentication, body."""
    route = draw(st.sampled_from(["zoho", "moodle", "seed_records", "seed_moodle"]))
    tenant = draw(tenants)
    mode = draw(st.sampled_from(["encoded", "slashes", "raw"]))
    base = {
        "zoho": ZOHO_NOTIFICATION,
        "moodle": GRADED,
        "seed_records": {"data": [{"id": "5843017000000000001", "First_Name": "Amal"}]},
        "seed_moodle": USER_CREATED,
    }[route]
    shape = draw(st.sampled_from(["event", "event", "event", "random_json", "form", "bytes", "deep"]))
    ascii_only = draw(st.booleans())
    if shape == "event":
        keys = st.one_of(st.sampled_from(sorted(base)), st.sampled_from(MOODLE_KEYS), st.text(max_size=6))
        top = draw(st.dictionaries(keys, hostile_value, max_size=3))
        record = draw(st.dictionaries(st.text(max_size=12), hostile_value, max_size=3))
        body_value: object = {**base, **top}
        if route == "seed_records" and "data" not in top:
            body_value = {
                "data": [{"id": draw(hostile_value), **record}, *draw(st.lists(hostile_value, max_size=2))]
            }
        body = json_bytes(body_value, ascii_only)
    elif shape == "random_json":
        body = json_bytes(draw(hostile_value), ascii_only)
    elif shape == "form":
        pairs = draw(
            st.dictionaries(
                st.sampled_from([*ZOHO_NOTIFICATION, "ids", "event_id"]), hostile_text, max_size=5
            )
        )
        body = urlencode({**ZOHO_NOTIFICATION, **pairs}, errors="surrogatepass").encode()
    elif shape == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        depth = draw(st.integers(100, 1200))
        field = draw(st.sampled_from(["other", "timestamp", "record_id", "grade_item", "data", "event_id"]))
        body = deep_json(base, field, depth, draw(st.sampled_from(["list", "dict"])))
    ctype = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json",
                "application/json; charset=utf-8",
                "application/x-www-form-urlencoded" if shape == "form" else "application/json",
                "application/x-www-form-urlencoded",
                "application/vnd.school+json",
                "text/plain",
                "multipart/form-data; boundary=x",
                "",
                "application/json\x00",
            ]
        )
    )
    auth = draw(st.sampled_from(["sign", "sign", "sign", "bearer", "none", "forged", "stale"]))
    return {"route": route, "tenant": tenant, "mode": mode, "body": body, "ctype": ctype, "auth": auth}


def send(receiver: Receiver, delivery: dict[str, Any]) -> tuple[int, bytes, bytes, str]:
    """Send a drawn delivery; ``(status, content type, body, tenant as sent)``."""
    tenant, route, body = delivery["tenant"], delivery["route"], delivery["body"]
    segment = path_segment(tenant, delivery["mode"], receiver.area)
    headers: list[tuple[bytes, bytes]] = []
    if route == "zoho":
        target = b"/v1/webhooks/zoho/" + segment
    elif route == "moodle":
        target = b"/v1/webhooks/moodle/" + segment
    else:
        target = b"/v1/sync/students" if route == "seed_records" else b"/v1/events/moodle/user_created"
        value = tenant.replace("{AREA}", str(receiver.area)).encode("utf-8", "surrogatepass")
        headers.append((b"X-Tenant-ID", value.replace(b"\r", b"").replace(b"\n", b"")))
    if delivery["ctype"]:
        headers.append((b"Content-Type", delivery["ctype"].encode("latin-1")))
    secret = SECRETS.get(tenant, SECRETS["school_a"])
    now = int(time.time())
    match delivery["auth"]:
        case "sign":
            headers += [(k.encode(), v.encode()) for k, v in sign(secret, body, now).items()]
        case "stale":
            headers += [(k.encode(), v.encode()) for k, v in sign(secret, body, now - 301).items()]
        case "bearer":
            headers.append((b"Authorization", b"Bearer " + secret.encode()))
        case "forged":
            headers += [
                (b"X-Sync-Timestamp", str(now).encode()),
                (b"X-Sync-Signature", b"sha256=" + b"0" * 64),
            ]
    status, ctype, payload = http(receiver.port, b"POST", target, headers, body)
    return status, ctype, payload, tenant


def check_answer(receiver: Receiver, target: str, status: int, ctype: bytes, payload: bytes) -> None:
    """A 202 with an event id, or a 4xx with a reason; never a 5xx; then nothing outside the layout,
    and an accepted event's file reads back."""
    answers = _figures(target).setdefault("answers", {})
    answers[str(status)] = answers.get(str(status), 0) + 1
    if status >= 500:
        crashed(target, RuntimeError(f"{status} {payload[:120]!r}"))
    assert 400 <= status < 500 or status == 202, (status, payload[:300])
    if ctype.startswith(b"application/json"):
        answer = json.loads(payload)
        if status == 202:
            assert answer["status"] == "accepted" and answer["event_id"], answer
        else:
            assert answer["status"] == "rejected" and answer["reason"].strip(), answer
    else:
        assert status == 400 and payload.strip(), (status, payload)  # uvicorn's own "Invalid HTTP request"
    strays = layout_strays(receiver)
    escaped(target, strays)
    assert strays == []
    if status == 202 and not answer["duplicate"]:
        # the same content for two schools is one event id, stored once per school
        paths = [
            p
            for s in SOURCES
            for p in pending_files(receiver.root, s)
            if p.name.endswith(f"-{answer['event_id']}.json")
        ]
        assert paths, f"accepted event {answer['event_id']} is not on disk"
        for path in paths:
            event = read_event(path)
            validate_payload(event.kind, event.payload)


@settings(max_examples=400, **PROFILE)
@given(deliveries())
def test_hostile_deliveries_are_answered_4xx_or_202_and_write_only_inside_the_drop_root(
    receiver: Receiver, delivery: dict[str, Any]
) -> None:
    """Random routes, tenants, content types, credentials and bodies (see :func:`deliveries`)."""
    tried("receiver")
    status, ctype, payload, _ = send(receiver, delivery)
    check_answer(receiver, "receiver", status, ctype, payload)


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS)
@pytest.mark.parametrize("route", ["zoho", "moodle", "seed_records"])
def test_path_looking_tenant_ids_are_refused_and_write_nothing(
    receiver: Receiver, route: str, tenant: str
) -> None:
    """Every hostile tenant id, in every encoding, correctly signed with a real school's secret."""
    body = json_bytes(ZOHO_NOTIFICATION if route != "moodle" else GRADED, True)
    if route == "seed_records":
        body = json_bytes({"data": [{"id": "5843017000000000001"}]}, True)
    for mode in ("encoded", "slashes", "raw"):
        tried("receiver")
        status, ctype, payload, _ = send(
            receiver,
            {
                "route": route,
                "tenant": tenant,
                "mode": mode,
                "body": body,
                "ctype": "application/json",
                "auth": "sign",
            },
        )
        # A header value's surrounding blanks are not part of it (RFC 9110 5.5): " school_a" is school_a.
        if not (route == "seed_records" and tenant.strip(" \t") in TENANTS):
            assert status in (400, 401, 404), (mode, status, payload)
        check_answer(receiver, "receiver", status, ctype, payload)


def test_json_nested_to_the_parsers_limit_is_never_a_5xx_nor_an_unreadable_file(receiver: Receiver) -> None:
    """Nesting around the depth where Python's JSON parser gives up, in every field a route keeps:
    the receiver refuses it or accepts it, and what it accepts the sensor can read."""
    for depth in range(880, 1010, 2):
        for route, field, shape in (
            ("zoho", "timestamp", "list"),
            ("moodle", "other", "dict"),
            ("moodle", "grade_item", "dict"),
            ("seed_records", "data", "list"),
            ("zoho", "event_id", "list"),
        ):
            base = {"zoho": ZOHO_NOTIFICATION, "moodle": ENROLMENT, "seed_records": {}}[route]
            base = {**base, "event_id": f"deep-{route}-{field}-{depth}"}
            tried("receiver")
            status, ctype, payload, _ = send(
                receiver,
                {
                    "route": route,
                    "tenant": "school_b",
                    "mode": "encoded",
                    "body": deep_json(base, field, depth, shape),
                    "ctype": "application/json",
                    "auth": "sign",
                },
            )
            check_answer(receiver, "receiver", status, ctype, payload)


def test_the_sensors_take_every_accepted_file(receiver: Receiver) -> None:
    """After all of the above: each sensor tick reads every file the receiver wrote, quarantines none,
    and the next tick moves them all to ``processed/``."""
    for source in SOURCES:
        tried("sensor_on_received_files")
        cursor = None
        for _ in range(10):  # every run succeeds: each tick settles the previous tick's runs
            cursor = guarded(
                "sensor_on_received_files",
                lambda s=source, c=cursor: evaluate(s, receiver.root, c, TENANTS, ALL_SUCCEED),
            ).cursor
            if not pending_files(receiver.root, source):
                break
        assert pending_files(receiver.root, source) == []
        assert list(receiver.root.glob(f"*/{source}/{QUARANTINE}/*")) == []
    assert layout_strays(receiver) == []
