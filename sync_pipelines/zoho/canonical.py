"""Raw Zoho records → a canonical dataframe, validated, one column at a time (no loop over rows).

Canonical values are strings (or missing), so that a fingerprint does not depend on the pandas,
numpy or driver version that produced them:

========== ===================================================================================
kind       canonical form
========== ===================================================================================
text       NFC-normalised, control characters removed, surrounding white space stripped
email      as text, then lower-cased
picklist   as text; ``-None-`` is empty
lookup     the target record's id (``{"name":…, "id":…}`` → ``id``)
date       ``YYYY-MM-DD``
datetime   UTC, ``YYYY-MM-DDTHH:MM:SSZ``
boolean    ``true`` / ``false``
integer    decimal digits with an optional ``-``
double     shortest round-trip decimal; integral values without ``.0``
========== ===================================================================================

An empty string is missing. A value that cannot be read as its kind is kept as text, so the
record is reported INVALID with the offending value instead of silently dropped.

How it is fast (the rules above are unchanged, value for value): a column is a Python list, and
the common case is decided for the whole column at once, on its values joined into one string
(``"\\n".join``): printable means no control character and no surrogate, ASCII (or NFC as a whole)
means NFC value by value, one regular expression over the lines checks every value's shape, and
the longest line bounds the lengths. A column of few distinct values (a picklist, a city) is
canonicalised once per distinct value. Only a column that fails such a check is looked at value
by value, and only the values that need it get the expensive steps. Dates, times and numbers are
still parsed by pandas, a column per call, as before (how they parse is pandas' own rule). The
reasons are joined once, at the end, for the records that break a rule.
"""

import json
import operator
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any

import numpy as np
import pandas as pd

from sync_pipelines.zoho.modules import FINDINGS, ID, INVALID_REASON, MODIFIED, FieldSpec, ModuleSpec

# C0 and C1 control characters (tab, newline and carriage return stay) and lone surrogates.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_SURROGATE = r"[\ud800-\udfff]"
_EMAIL = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$"
# ASCII digits only: \d would accept Arabic-Indic or full-width digits no database reads as numbers.
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DATETIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
_INTEGER = r"^-?[0-9]{1,18}(\.0+)?$"  # fits a 64-bit integer column
_RECORD_ID = r"^[0-9]{1,32}$"  # Zoho ids are digits; the warehouse keys hold 32
MAX_TEXT = 255  # Zoho's single-line text limit: a longer value is a finding (the warehouse stores it whole)
_TEXT_KINDS = {"text", "textarea", "phone", "website", "autonumber", "email", "picklist"}
_NUMBER_KINDS = {"double", "currency"}

_CONTROL_RE = re.compile(_CONTROL)
_SURROGATE_RE = re.compile(_SURROGATE)
_EMAIL_RE = re.compile(_EMAIL)
_DATE_RE = re.compile(_DATE)
_DATETIME_RE = re.compile(_DATETIME)
_INTEGER_RE = re.compile(_INTEGER)
_RECORD_ID_RE = re.compile(_RECORD_ID)
_NUMBER_RE = re.compile(r"[0-9eE+\-.]+")
_POINT_ZEROS_RE = re.compile(r"\.0+$")
_BOOLEANS = {"true": "true", "false": "false"}
_SAMPLE = 1000  # values looked at to tell whether a column has few distinct values
_PRINTABLE_ASCII_LINES = bytes(range(0x20, 0x7F)) + b"\n"


def _lines_re(pattern: str) -> re.Pattern:
    """``pattern`` (``^…$``, no line feed in what it matches) for every line of a column at once.

    Possessive: a line that does not match cannot be skipped, so there is nothing to retry.
    """
    one = pattern.removeprefix("^").removesuffix("$").replace("(", "(?:")
    return re.compile(rf"(?:{one}\n)*+{one}")


_EMAIL_LINES_RE = _lines_re(_EMAIL)
_EMAIL_ASCII_LINES_RE = _lines_re(_EMAIL.replace(r"\s", r" \n"))  # for printable ASCII lines
_DATE_LINES_RE = _lines_re(_DATE)
_DATETIME_LINES_RE = _lines_re(_DATETIME)
_RECORD_ID_LINES_RE = _lines_re(_RECORD_ID)
_NUMBER_LINES_RE = re.compile(r"[0-9eE+\-.\n]+")


def frame_from_records(spec: ModuleSpec, records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build the raw (not yet canonical) frame: one column per field of ``spec``, plus the id.

    Fields absent from a record are missing values; fields not in the module table are dropped.
    """
    wanted = ["id", *spec.api_fields]
    raw = pd.DataFrame.from_records(list(records), columns=wanted)
    raw = raw.astype(object)
    return raw


def canonicalise(spec: ModuleSpec, raw: pd.DataFrame) -> pd.DataFrame:
    """Canonicalise and validate a raw frame of Zoho records.

    Returns a frame indexed by nothing in particular with columns ``zoho_id``, every canonical
    column of ``spec``, ``zoho_modified_time`` (when the module has it), ``invalid_reason``
    (missing when the record is valid; otherwise every rule it breaks, ``; ``-separated, each with
    the field and the offending value) and ``findings`` (the same as JSON: ``rule``, ``field``,
    ``value``). Validation never drops a record: the warehouse stores it with its findings.
    """
    n = len(raw.index)
    ids = _as_text(_values(raw["id"], n))
    columns: dict[str, list[str | None]] = {ID: ids.values}
    rules: list[_Rule] = []  # in the order the reasons are written

    for f in spec.fields:
        text, bad = _canonical_column(f, _values(raw.get(f.api_name), n))
        columns[f.column] = text.values
        rules.append(_Rule(bad, f"invalid_{f.kind}", f.api_name, f"invalid {f.kind}", text.values))
        if f.required:
            rules.append(_Rule(_missing(text), "required", f.api_name, "required"))
        if f.kind in _TEXT_KINDS and f.kind != "textarea":
            # Longer than the warehouse column holds: reported, never truncated.
            rules.append(
                _Rule(
                    _too_long(text), "too_long", f.api_name, f"longer than {MAX_TEXT} characters", text.values
                )
            )
    if spec.has_modified_time:
        modified, bad_time = _canonical_column(
            FieldSpec("Modified_Time", MODIFIED, "datetime"), _values(raw.get("Modified_Time"), n)
        )
        columns[MODIFIED] = modified.values
        if bad_time is not None:  # never let an unreadable time near the watermark
            columns[MODIFIED] = [None if b else v for v, b in zip(modified.values, bad_time, strict=True)]
        rules.append(
            _Rule(bad_time, "invalid_datetime", "Modified_Time", "invalid datetime", modified.values)
        )

    if spec.date_order:
        start, end = spec.date_order
        before = [
            e is not None and s is not None and e < s
            for s, e in zip(columns[start], columns[end], strict=True)
        ]
        rules.append(
            _Rule(
                before,
                "end_before_start",
                spec.field(end).api_name,
                f"before {spec.field(start).api_name}",
                columns[end],
            )
        )
    if _missing(ids) is not None or not _record_ids(ids):
        unusable = [v is None or _RECORD_ID_RE.fullmatch(v) is None for v in ids.values]
        rules.append(_Rule(unusable, "invalid_id", "id", "missing or not a Zoho record id", ids.values))

    columns[INVALID_REASON], columns[FINDINGS] = _reasons(rules, n)
    return pd.DataFrame(
        {name: np.fromiter(value, dtype=object, count=n) for name, value in columns.items()},
        index=raw.index,
        dtype=object,  # strings and None, as built: not pandas' string dtype
        copy=False,
    )


def usable_ids(ids: pd.Series) -> pd.Series:
    """Which ids can key a record: 1 to 32 ASCII digits, as Zoho's are."""
    return ids.notna() & ids.astype(object).where(ids.notna(), "").str.fullmatch(_RECORD_ID).fillna(
        False
    ).astype(bool)


# --- columns and masks --------------------------------------------------------------------------


class _Text:
    """A canonical column, and what is known of it without looking at every value again."""

    __slots__ = ("_lines", "_raw", "complete", "distinct", "longest", "values")

    def __init__(
        self,
        values: list[str | None],
        longest: int | None = None,
        complete: bool = False,
        distinct: list[str | None] | None = None,
        raw: str | None = None,
    ):
        self.values = values  # non-empty strings, or None for missing
        self.longest = longest  # when known: no value is longer
        self.complete = complete  # every value is present, and none holds a line feed
        self.distinct = distinct  # when known: every value, but a repeated one (mostly) once
        self._raw = raw  # when complete: each() value before stripping, one per line
        self._lines: str | None = None

    def each(self) -> list[str | None]:
        """Every value, for a rule that holds or not value by value: a repeated one maybe once."""
        return self.values if self.distinct is None else self.distinct

    def lines(self) -> str | None:
        """:meth:`each` value, one per line, when the column is complete."""
        if self._lines is None and self.complete:
            raw = self._raw  # (printable: the space is the only white space a value can hold)
            if raw is not None and (" " not in raw or not _padded(raw)):
                self._lines = raw  # nothing was stripped
            else:
                self._lines = "\n".join(self.each())  # type: ignore[arg-type]
        return self._lines


def _padded(lines: str) -> bool:
    """Whether a line of ``lines`` starts or ends with a space."""
    return lines[0] == " " or lines[-1] == " " or " \n" in lines or "\n " in lines


Mask = list[bool] | None  # None: no record breaks the rule (the common case, found without a loop)


class _Unusual(Exception):
    """A value of a type the fast paths do not handle: the column takes the general path."""


def _values(s: pd.Series | None, n: int) -> list[Any]:
    """A raw column's values (all missing when the frame has no such column)."""
    if s is None:
        return [None] * n
    return s.astype(object).tolist()


def _missing(text: _Text) -> Mask:
    if text.complete or all(text.each()):  # (a present value is a non-empty string)
        return None
    return [v is None for v in text.values]


def _too_long(text: _Text) -> Mask:
    longest = text.longest
    if longest is None:
        longest = max(map(len, filter(None, text.each())), default=0)
    if longest <= MAX_TEXT:
        return None
    return [v is not None and len(v) > MAX_TEXT for v in text.values]


def _record_ids(text: _Text) -> bool:
    """Whether every present value is a record id: 1 to 32 ASCII digits."""
    lines = text.lines()
    if lines is None:
        present = list(filter(None, text.each()))
        if not present:
            return True
        lines = "\n".join(present)
        if lines.count("\n") != len(present) - 1:  # a value holds a line feed: not a record id
            return False
    return _RECORD_ID_LINES_RE.fullmatch(lines) is not None


@dataclass(frozen=True)
class _Rule:
    """One validation rule over a column: which records break it, and how to say so."""

    mask: Mask
    rule: str  # a stable code: required, invalid_email, too_long, end_before_start, ...
    field: str  # the Zoho API name
    text: str  # what the reason says after the field's name
    values: list | None = None  # the canonical values, to name the offending one

    def finding(self, row: int) -> dict:
        value = None if self.values is None else self.values[row]
        return {"rule": self.rule, "field": self.field, "value": value}

    def reason(self, row: int) -> str:
        value = None if self.values is None else self.values[row]
        shown = "" if value is None else f" {_shorten(value)!r}"
        return f"{self.field}: {self.text}{shown}"


def _shorten(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reasons(rules: list[_Rule], n: int) -> tuple[list[str | None], list[str | None]]:
    """Every rule a record breaks, in rule order: the reason text (``; ``-separated, each naming
    the field and the offending value) and the findings as JSON; None for a valid record."""
    broken = [(np.asarray(r.mask, dtype=bool), r) for r in rules if r.mask is not None and any(r.mask)]
    reasons: list[str | None] = [None] * n
    findings: list[str | None] = [None] * n
    if not broken:
        return reasons, findings
    table = np.vstack([mask for mask, _ in broken])  # rules × records
    which = [r for _, r in broken]
    rows = np.flatnonzero(table.any(axis=0))
    for row, flags in zip(rows.tolist(), table[:, rows].T.tolist(), strict=True):
        hit = list(compress(which, flags))
        reasons[row] = "; ".join(r.reason(row) for r in hit)
        findings[row] = json.dumps([r.finding(row) for r in hit], ensure_ascii=False)
    return reasons, findings


# --- text ---------------------------------------------------------------------------------------


def _as_text(items: list[Any]) -> _Text:
    """Any scalar column → stripped, NFC, control-free text (``None`` for missing).

    Booleans and numbers that reach a text field are written as JSON would write them.
    """
    n = len(items)
    if n >= 4 * _SAMPLE:
        try:  # a picklist, a city, a first name: few distinct values, each written once
            few = len(set(items[:: n // _SAMPLE])) <= _SAMPLE // 10
        except TypeError:  # unhashable values
            few = False
        if few and (text := _distinct_text(items)) is not None:
            return text
    return _column_text(items)


def _distinct_text(items: list[Any]) -> _Text | None:
    """:func:`_as_text` of a column of few distinct values, by value; None if not worth it."""
    try:
        table = dict.fromkeys(items)
    except TypeError:
        return None
    keys = list(table)
    # Strings, None and NaN only: values of other types may be equal yet written differently.
    if len(keys) * 4 > len(items) or not all(
        type(k) is str or k is None or (type(k) is float and k != k) for k in keys
    ):
        return None
    text = _column_text(keys)
    table = dict(zip(keys, text.values, strict=True))
    values = list(map(table.__getitem__, items))
    return _Text(values, text.longest, text.complete, text.values, text._raw)


def _column_text(items: list[Any]) -> _Text:
    """:func:`_as_text`, the column as a whole first, value by value when it must."""
    n = len(items)
    texts, others = items, []  # others: where the values that are not strings are
    try:
        lines = "\n".join(items)
    except TypeError:
        others = list(compress(range(n), map(operator.not_, map(isinstance, items, repeat(str)))))
        if len(others) == n and (plain := _plain_scalars(items)) is not None:
            return plain
        texts = items.copy()
        for i in others:
            texts[i] = ""
        lines = "\n".join(texts)
    try:
        if n and (codes := _plain_lines(lines, n)) is not None:
            # Stripping is all there is to do (and stripping a printable string removes spaces).
            longest = _longest_line(codes)
            out = list(map(str.strip, texts))  # (and exact str, should a value be a subclass)
            for i in others:
                out[i] = _scalar_text(items[i])
                longest = max(longest, len(out[i] or ""))
            if all(out):
                return _Text(out, longest, complete=True, raw=None if others else lines)
            return _Text([v or None for v in out], longest)
        return _Text(
            [
                (v.strip() or None) if type(v) is str and v.isascii() and v.isprintable() else _scalar_text(v)
                for v in items
            ]
        )
    except _Unusual:
        missing = pd.isna(np.fromiter(items, dtype=object, count=n))  # as Series.isna
        return _Text([_any_text(v, m) for v, m in zip(items, missing.tolist(), strict=True)])


def _plain_scalars(items: list[Any]) -> _Text | None:
    """A column of floats only (NaN for missing), of booleans only or of None only, as text."""
    kinds = set(map(type, items))
    if kinds == {float}:
        # str() of a float, once per distinct float (by bits: 0.0 is not -0.0); NaN is missing
        codes, distinct = pd.factorize(np.array(items, dtype=np.float64).view(np.int64))
        shown = [None if x != x else repr(x) for x in distinct.view(np.float64).tolist()]
        longest = max(map(len, filter(None, shown)), default=0)
        return _Text(np.array(shown, dtype=object)[codes].tolist(), longest, complete=None not in shown)
    if kinds == {bool}:
        return _Text(["true" if v else "false" for v in items], 5, complete=True)
    if kinds == {type(None)}:
        return _Text([None] * len(items), 0)
    return None


def _plain_lines(lines: str, n: int) -> np.ndarray | None:
    """The characters of ``lines`` (``n`` values joined by line feeds), when every value is
    printable (so holds no control character, no surrogate and no line feed) and NFC (ASCII is,
    and so is every piece of an NFC string); else None."""
    if lines.isascii():
        encoded = lines.encode("ascii")
        if encoded.count(b"\n") != n - 1 or encoded.translate(None, _PRINTABLE_ASCII_LINES):
            return None
        return np.frombuffer(encoded, dtype=np.uint8)
    if lines.count("\n") != n - 1:
        return None
    flat = lines.replace("\n", "")
    if not (flat.isprintable() and unicodedata.is_normalized("NFC", flat)):
        return None
    return np.frombuffer(lines.encode("utf-32-le"), dtype="<u4")


def _longest_line(codes: np.ndarray) -> int:
    """The length of the longest line, from the character codes of the lines."""
    breaks = np.flatnonzero(codes == 10)
    if not len(breaks):
        return len(codes)
    return int(max(breaks[0], np.diff(breaks).max(initial=0) - 1, len(codes) - 1 - breaks[-1]))


def _clean(text: str) -> str | None:
    """Surrogates → U+FFFD, NFC, control characters removed, stripped; empty → None."""
    if not text.isascii():  # an ASCII string holds no surrogate and is already NFC
        if not text.isprintable():  # surrogates and control characters are not printable
            text = _SURROGATE_RE.sub("\ufffd", text)
            text = unicodedata.normalize("NFC", text)
            text = _CONTROL_RE.sub("", text)
        else:  # (NFC never composes or decomposes to a control character or a surrogate)
            text = unicodedata.normalize("NFC", text)
    elif not text.isprintable():
        text = _CONTROL_RE.sub("", text)
    return text.strip() or None


def _scalar_text(v: Any) -> str | None:
    """The text of one value of a common type (str, None, bool, int, float); else ``_Unusual``."""
    kind = type(v)
    if kind is str:
        return _clean(v)
    if v is None:
        return None
    if kind is float:  # NaN is how pandas marks a missing value; str() of a float is clean text
        return None if v != v else repr(v)
    if kind is bool:
        return "true" if v else "false"
    if kind is int:
        return str(v)
    raise _Unusual


def _any_text(v: Any, missing: bool) -> str | None:
    """The text of any value, as pandas' ``astype(str)`` writes it (bytes decoded)."""
    if missing:
        return None
    if type(v) is bool:
        return "true" if v else "false"
    if isinstance(v, str):
        return _clean(v)
    if isinstance(v, bytes):
        return _clean(v.decode())
    if isinstance(v, float | np.floating):
        return _clean(str(v))
    return _clean(f"{v}")


# --- one column ---------------------------------------------------------------------------------


def _canonical_column(f: FieldSpec, values: list[Any]) -> tuple[_Text, Mask]:
    """One column → (canonical values, mask of values that are present but unreadable)."""
    if f.kind == "lookup":
        text = _as_text(_lookup_ids(values))
        if _record_ids(text):
            return text, None
        return text, [v is not None and _RECORD_ID_RE.fullmatch(v) is None for v in text.values]

    if f.kind in _TEXT_KINDS:
        text = _as_text(values)
        if f.kind == "email":
            return _email(text)
        if f.kind == "picklist":
            return _picklist(text, frozenset(f.picklist))
        return text, None

    if f.kind == "boolean":
        text = _as_text(values)
        if _BOOLEANS.keys() >= set(text.each()):  # (None is not a key)
            return text, None
        value = [t and _BOOLEANS.get(t.lower(), t) for t in text.values]
        return _Text(value), [t is not None and t.lower() not in _BOOLEANS for t in text.values]

    if f.kind == "integer":
        text = _as_text(values).values
        ok = [t is not None and _INTEGER_RE.fullmatch(t) is not None for t in text]
        value = [_integer(t) if good else t for t, good in zip(text, ok, strict=True)]
        return _Text(value), [t is not None and not good for t, good in zip(text, ok, strict=True)]

    if f.kind in _NUMBER_KINDS:
        return _number(_as_text(values))

    if f.kind == "date":
        return _date(_as_text(values))

    if f.kind == "datetime":
        return _datetime(_as_text(values))

    if f.kind == "subform":
        return _subform(values)

    raise ValueError(f"{f.api_name}: kind {f.kind!r} has no canonical form")


def _subform(values: list[Any]) -> tuple[_Text, Mask]:
    """A subform (a list of row objects, each with its own ``id``) → canonical JSON text.

    Each row keeps its keys in sorted order with canonical scalar values (lookups as their id,
    text cleaned as any text is); keys Zoho adds for its own use (``$…``) are left out; rows stay
    in Zoho's order, which is the order staff see. An empty list is missing. A value that is not
    a list of objects is kept as text and reported.
    """
    out: list[str | None] = []
    bad: list[bool] = []
    for value in values:
        if value is None or (isinstance(value, float) and value != value) or value == []:
            out.append(None)
            bad.append(False)
            continue
        if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
            out.append(_any_text(value, False))
            bad.append(True)
            continue
        rows = [
            {
                str(k): _subform_value(v)
                for k, v in sorted(row.items(), key=lambda kv: str(kv[0]))
                if not str(k).startswith("$")
            }
            for row in value
        ]
        out.append(json.dumps(rows, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str))
        bad.append(False)
    return _Text(out), (bad if any(bad) else None)


def _subform_value(v: Any) -> Any:
    """One subform cell, canonical: a lookup as its id, text cleaned, other scalars as they are."""
    if isinstance(v, Mapping):
        return None if v.get("id") is None else str(v.get("id"))
    if isinstance(v, str):
        return _clean(v)
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, list):
        return [_subform_value(x) for x in v]
    return v


def _email(text: _Text) -> tuple[_Text, Mask]:
    lines = text.lines()
    if lines is not None:  # every value present, printable, on a line of its own
        if lines.isascii():
            lowered = lines.lower()
            pattern = _EMAIL_ASCII_LINES_RE  # (printable ASCII: the only white space is the space)
            if lowered != lines:
                distinct = None if text.distinct is None else list(map(str.lower, text.distinct))
                text = _Text(list(map(str.lower, text.values)), text.longest, True, distinct)
                text._lines = lowered
        else:  # lower-casing may lengthen a value (never shorten it): "İ".lower() is "i̇"
            distinct = None if text.distinct is None else list(map(str.lower, text.distinct))
            lowered_text = _Text(list(map(str.lower, text.values)), None, True, distinct)
            lowered = lowered_text.lines()  # (value by value, so that no context crosses a line)
            if len(lowered) == len(lines):
                lowered_text.longest = text.longest
            text, pattern = lowered_text, _EMAIL_LINES_RE
        if pattern.fullmatch(lowered) is not None:
            return text, None
    else:
        values = text.values
        text = _Text(list(map(str.lower, values)) if all(values) else [v and v.lower() for v in values])
    return text, [v is not None and _EMAIL_RE.match(v) is None for v in text.values]


def _picklist(text: _Text, allowed: frozenset[str]) -> tuple[_Text, Mask]:
    lines = text.lines()
    maybe = lines is None or lines == "-None-" or "-None-\n" in lines or lines.endswith("\n-None-")
    if maybe and "-None-" in text.each():
        text = _Text([None if v == "-None-" else v for v in text.values], text.longest)
    if not allowed or allowed.issuperset(text.each() if text.complete else filter(None, text.each())):
        return text, None
    return text, [v is not None and v not in allowed for v in text.values]


def _lookup_ids(values: list[Any]) -> list[Any]:
    """``{"name":…, "id":…}`` → its id; anything else stays as it is."""
    ids = [v.get("id") if type(v) is dict else v for v in values]
    try:
        "\n".join(ids)  # all text: every dict had a text id, and no other mapping was there
        return ids
    except TypeError:
        pass
    try:
        return [_lookup_id(v) for v in values]
    except _Unusual:
        # Ids that are not text: pandas' own ``str.get``, which also infers their type column-wide
        # (ints beside missing ids become floats), so the result is what it always was.
        s = pd.Series(values, dtype=object)
        is_dict = s.map(lambda v: isinstance(v, Mapping))
        return s.where(~is_dict, s.where(is_dict).str.get("id")).tolist()


def _lookup_id(v: Any) -> Any:
    if type(v) is dict:
        target = v.get("id")
        if target is None or type(target) is str:
            return target
        raise _Unusual
    if isinstance(v, Mapping):
        raise _Unusual
    return v


def _integer(text: str) -> str:
    """``-007.00`` → ``-7`` (at most 18 digits: exact, and within a 64-bit column)."""
    digits = _POINT_ZEROS_RE.sub("", text)
    magnitude = digits.lstrip("-").lstrip("0") or "0"
    return "-" + magnitude if digits.startswith("-") and magnitude != "0" else magnitude


def _number(text: _Text) -> tuple[_Text, Mask]:
    series = pd.Series(text.values, dtype=object)
    num = pd.to_numeric(series, errors="coerce") + 0.0  # + 0.0 turns -0.0 into 0.0: one zero, as stored
    if num.dtype != np.float64:  # (not seen) pandas' own steps, as they always were
        ok = (
            num.notna()
            & np.isfinite(num.fillna(0))
            & series.str.fullmatch(_NUMBER_RE.pattern).fillna(False).astype(bool)
        )
        shown = num.astype(str).str.replace(r"\.0$", "", regex=True)
        value = series.where(~ok, shown).where(series.notna(), None)
        return _Text(value.tolist()), (series.notna() & ~ok).tolist()
    numbers = num.to_numpy()
    ok = np.isfinite(numbers)  # missing and unreadable values are NaN
    lines = text.lines()
    if lines is None and (present := list(filter(None, text.each()))):
        lines = "\n".join(present)
        if lines.count("\n") != len(present) - 1:  # a value holds a line feed
            lines = None
    if lines is None or _NUMBER_LINES_RE.fullmatch(lines) is None:  # some value has another character
        ok &= np.array(
            [t is not None and _NUMBER_RE.fullmatch(t) is not None for t in text.values], dtype=bool
        )
    # shortest round-trip decimal, once per distinct number; None where not a finite number
    codes, distinct = pd.factorize(np.where(ok, numbers, np.nan))
    shown = np.array([*map(_shortest, distinct.tolist()), None], dtype=object)[codes].tolist()
    if ok.all():
        return _Text(shown), None
    value = [s if good else t for s, t, good in zip(shown, text.values, ok.tolist(), strict=True)]
    return _Text(value), [
        t is not None and not good for t, good in zip(text.values, ok.tolist(), strict=True)
    ]


def _shortest(x: float) -> str:
    """Shortest round-trip decimal (Python's ``repr``), integral values without ``.0``."""
    shown = repr(x)
    return shown[:-2] if shown.endswith(".0") else shown


def _shaped(text: _Text, lines_re: re.Pattern, value_re: re.Pattern) -> list[Any]:
    """The values ``value_re`` matches, NaN for the others (as ``Series.where`` writes them)."""
    lines = text.lines()
    if lines is not None and lines_re.fullmatch(lines) is not None:
        return text.values
    return [t if t is not None and value_re.match(t) else np.nan for t in text.values]


def _date(text: _Text) -> tuple[_Text, Mask]:
    shaped = _shaped(text, _DATE_LINES_RE, _DATE_RE)
    parsed = pd.to_datetime(pd.Series(shaped, dtype=object), errors="coerce", format="%Y-%m-%d")
    unread = parsed.isna().to_numpy()
    if not unread.any():
        return text, None
    return text, [t is not None and u for t, u in zip(text.values, unread.tolist(), strict=True)]


def _datetime(text: _Text) -> tuple[_Text, Mask]:
    shaped = _shaped(text, _DATETIME_LINES_RE, _DATETIME_RE)
    # One call for the whole column: pandas picks one resolution for it (nanoseconds if any value
    # has them, and then years outside 1677-2262 do not parse), so values are not parsed alone.
    parsed = pd.to_datetime(pd.Series(shaped, dtype=object), errors="coerce", utc=True, format="ISO8601")
    # Years a database can hold, after conversion to UTC (9999-12-31T23:59-12:00 is not one).
    ok = (parsed.notna() & parsed.dt.year.between(1, 9999).fillna(False).astype(bool)).to_numpy()
    if not ok.any():
        return text, [t is not None for t in text.values]
    # YYYY-MM-DDTHH:MM:SS (seconds floored), as strftime writes years 1 to 9999
    stamps = parsed.dt.tz_localize(None).to_numpy()[ok].astype("datetime64[s]")
    shown = np.strings.add(stamps.astype("U19"), "Z").tolist()
    if ok.all():
        return _Text(shown), None
    value = list(text.values)
    for i, s in zip(np.flatnonzero(ok).tolist(), shown, strict=True):
        value[i] = s
    return _Text(value), [
        t is not None and not good for t, good in zip(text.values, ok.tolist(), strict=True)
    ]
