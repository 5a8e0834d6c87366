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
"""

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from sync_pipelines.zoho.modules import FieldSpec, ModuleSpec

ID = "zoho_id"
MODIFIED = "zoho_modified_time"
INVALID_REASON = "invalid_reason"

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
MAX_TEXT = 255  # the width of the warehouse's text columns (long text fields are unbounded)
_TEXT_KINDS = {"text", "textarea", "phone", "website", "autonumber", "email", "picklist"}
_NUMBER_KINDS = {"double", "currency"}


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
    column of ``spec``, ``zoho_modified_time`` (when the module has it) and ``invalid_reason``
    (missing when the record is valid; otherwise every rule it breaks, ``; ``-separated).
    """
    out = pd.DataFrame(index=raw.index)
    out[ID] = _as_text(raw["id"])
    reasons = pd.Series("", index=raw.index, dtype=object)

    for f in spec.fields:
        value, bad = _canonical_column(f, raw.get(f.api_name), raw.index)
        out[f.column] = value
        reasons = _add_reason(reasons, bad, f"{f.api_name}: invalid {f.kind}")
        if f.required:
            reasons = _add_reason(reasons, value.isna(), f"{f.api_name}: required")
        if f.kind in _TEXT_KINDS and f.kind != "textarea":
            # Longer than the warehouse column holds: reported, never truncated.
            too_long = value.str.len().fillna(0) > MAX_TEXT
            reasons = _add_reason(reasons, too_long, f"{f.api_name}: longer than {MAX_TEXT} characters")
    if spec.has_modified_time:
        modified, bad_time = _canonical_column(
            FieldSpec("Modified_Time", MODIFIED, "datetime"), raw.get("Modified_Time"), raw.index
        )
        out[MODIFIED] = modified.where(~bad_time, None)  # never let an unreadable time near the watermark
        reasons = _add_reason(reasons, bad_time, "Modified_Time: invalid datetime")

    if spec.date_order:
        start, end = spec.date_order
        before = out[end].notna() & out[start].notna() & (out[end] < out[start])
        reasons = _add_reason(
            reasons, before, f"{spec.field(end).api_name}: before {spec.field(start).api_name}"
        )
    reasons = _add_reason(reasons, ~usable_ids(out[ID]), "id: missing or not a Zoho record id")

    out[INVALID_REASON] = reasons.str.removesuffix("; ").replace("", None)
    return out


def usable_ids(ids: pd.Series) -> pd.Series:
    """Which ids can key a record: 1 to 32 ASCII digits, as Zoho's are."""
    return ids.notna() & ids.astype(object).where(ids.notna(), "").str.fullmatch(_RECORD_ID).fillna(
        False
    ).astype(bool)


def _add_reason(reasons: pd.Series, mask: pd.Series | np.ndarray, text: str) -> pd.Series:
    return reasons + np.where(np.asarray(mask, dtype=bool), text + "; ", "")


def _empty_to_na(s: pd.Series) -> pd.Series:
    return s.where(s.notna() & (s != ""), None)


def _as_text(s: pd.Series | None) -> pd.Series:
    """Any scalar column → stripped, NFC, control-free text (object dtype, ``None`` for missing)."""
    if s is None:
        return pd.Series(None, dtype=object)
    s = s.astype(object)
    # Booleans and numbers that reach a text field are written as JSON would write them.
    is_bool = s.map(type).eq(bool)
    text = s.where(s.isna() | is_bool, s.astype(str))
    text = text.where(~is_bool, s.astype(str).str.lower())
    text = text.astype(object).where(s.notna(), None)
    text = (
        pd.Series(text, dtype="string")
        .str.replace(_SURROGATE, "\ufffd", regex=True)
        .str.normalize("NFC")
        .str.replace(_CONTROL, "", regex=True)
        .str.strip()
        .astype(object)
    )
    return _empty_to_na(text.where(text.notna(), None))


def _canonical_column(f: FieldSpec, s: pd.Series | None, index: pd.Index) -> tuple[pd.Series, pd.Series]:
    """One column → (canonical values, mask of values that are present but unreadable)."""
    if s is None:
        s = pd.Series(None, index=index, dtype=object)
    s = s.astype(object).where(s.notna(), None)
    no_issue = pd.Series(False, index=index)

    if f.kind == "lookup":
        is_dict = s.map(lambda v: isinstance(v, Mapping))
        ids = s.where(~is_dict, s.where(is_dict).str.get("id"))
        value = _as_text(ids)
        return value, value.notna() & ~value.str.fullmatch(_RECORD_ID).fillna(False).astype(bool)

    if f.kind in _TEXT_KINDS:
        value = _as_text(s)
        bad = no_issue
        if f.kind == "email":
            value = value.str.lower()
            bad = bad | (value.notna() & ~value.str.match(_EMAIL).fillna(False).astype(bool))
        elif f.kind == "picklist":
            value = value.where(value != "-None-", None)
            if f.picklist:
                bad = bad | (value.notna() & ~value.isin(f.picklist))
        return value, bad

    if f.kind == "boolean":
        text = _as_text(s)
        lowered = text.str.lower()
        value = lowered.map({"true": "true", "false": "false"})
        value = value.where(value.notna(), text)  # unreadable values stay, to be reported
        return value.astype(object).where(value.notna(), None), text.notna() & lowered.map(
            {"true": False, "false": False}
        ).fillna(True).astype(bool)

    if f.kind == "integer":
        text = _as_text(s)
        ok = text.str.fullmatch(_INTEGER).fillna(False).astype(bool)
        digits = text.where(ok).str.replace(r"\.0+$", "", regex=True)
        # int() of at most 18 digits: exact, and within a 64-bit column; leading zeros dropped.
        value = text.where(~ok, digits.str.lstrip("-").str.lstrip("0").replace("", "0"))
        value = value.where(~(ok & digits.str.startswith("-").fillna(False) & (value != "0")), "-" + value)
        return value.where(text.notna(), None), text.notna() & ~ok

    if f.kind in _NUMBER_KINDS:
        text = _as_text(s)
        num = pd.to_numeric(text, errors="coerce") + 0.0  # + 0.0 turns -0.0 into 0.0: one zero, as stored
        ok = (
            num.notna()
            & np.isfinite(num.fillna(0))
            & text.str.fullmatch(r"[0-9eE+\-.]+").fillna(False).astype(bool)
        )
        shown = num.astype(str).str.replace(r"\.0$", "", regex=True)
        value = text.where(~ok, shown)
        return value.where(text.notna(), None), text.notna() & ~ok

    if f.kind == "date":
        text = _as_text(s)
        parsed = pd.to_datetime(
            text.where(text.str.match(_DATE).fillna(False).astype(bool)), errors="coerce", format="%Y-%m-%d"
        )
        return text, text.notna() & parsed.isna()

    if f.kind == "datetime":
        text = _as_text(s)
        shaped = text.str.fullmatch(_DATETIME).fillna(False).astype(bool)
        parsed = pd.to_datetime(text.where(shaped), errors="coerce", utc=True, format="ISO8601")
        # Years a database can hold, after conversion to UTC (9999-12-31T23:59-12:00 is not one).
        ok = parsed.notna() & parsed.dt.year.between(1, 9999).fillna(False).astype(bool)
        value = text.where(~ok, parsed.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return value.where(text.notna(), None), text.notna() & ~ok

    raise ValueError(f"{f.api_name}: kind {f.kind!r} has no canonical form")
