"""Fingerprints and the dataframe diff: NEW / UNCHANGED / UPDATED / INVALID / SKIPPED / DELETED.

Everything here works a column at a time on pandas frames; no step compares or classifies records
in a Python loop. The one per-record step is the SHA-256 call itself (``hashlib``, in C).

Fingerprint format (version ``sp1``), recomputable outside Python::

    sha256_hex( UTF-8( "sp1" + concat over columns c in ascending name order of
                                ( "\\x1e" + c + "\\x1f" + (value of c, or "\\x00" if missing) ) ) )

Values are the canonical strings of :mod:`sync_pipelines.zoho.canonical`, which never contain
control characters, so the separators cannot be forged by data. Adding a column to a module
changes every fingerprint once: the next run reports each record UPDATED with that one field.
"""

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd

FINGERPRINT_VERSION = "sp1"
ID = "zoho_id"


class Status(StrEnum):
    """What a sync did, or would do, with one record."""

    NEW = "NEW"
    UNCHANGED = "UNCHANGED"
    UPDATED = "UPDATED"
    INVALID = "INVALID"
    SKIPPED = "SKIPPED"
    DELETED = "DELETED"


def fingerprint(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """SHA-256 hex fingerprint of each row over ``columns`` (see the module docstring)."""
    # Object arrays throughout: numpy's fixed-width strings would silently drop the "\x00" marker.
    acc = np.full(len(frame), FINGERPRINT_VERSION, dtype=object)
    for col in sorted(columns):
        values = frame[col].to_numpy(dtype=object, copy=True)
        values[pd.isna(values)] = "\x00"
        acc = acc + (f"\x1e{col}\x1f" + values)
    sha = hashlib.sha256
    return pd.Series([sha(s.encode()).hexdigest() for s in acc], index=frame.index, dtype=object)


@dataclass(frozen=True)
class DependencyCheck:
    """Lookup column whose non-empty values must be among ``known_ids``; otherwise SKIPPED."""

    column: str
    known_ids: pd.Index
    reason: str


@dataclass
class DiffResult:
    """The outcome of one diff.

    Attributes:
        records: one row per incoming record and per deletion: ``zoho_id``, ``sync_status``,
            ``sync_reason``, ``fingerprint`` and the canonical columns (missing for DELETED rows).
        changes: UPDATED records' changed fields, long form: ``zoho_id``, ``field``, ``old``,
            ``new``. Filled by :func:`field_changes`.
    """

    records: pd.DataFrame
    changes: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=[ID, "field", "old", "new"], dtype=object)
    )

    def ids(self, *statuses: Status) -> pd.Index:
        mask = self.records["sync_status"].isin([str(s) for s in statuses])
        return pd.Index(self.records.loc[mask, ID])

    def of(self, *statuses: Status) -> pd.DataFrame:
        return self.records[self.records["sync_status"].isin([str(s) for s in statuses])]

    def counts(self) -> dict[str, int]:
        got = self.records["sync_status"].value_counts()
        return {str(s): int(got.get(str(s), 0)) for s in Status}


def diff(
    incoming: pd.DataFrame,
    state: pd.DataFrame,
    *,
    fingerprint_columns: Sequence[str],
    dependencies: Iterable[DependencyCheck] = (),
    deleted_ids: Iterable[str] = (),
    natural_key: Sequence[str] = (),
    invalid_reason: str = "invalid_reason",
) -> DiffResult:
    """Classify incoming records against the stored state.

    Args:
        incoming: canonical records, one row each, with ``zoho_id`` and ``invalid_reason``
            (missing when valid). Duplicate ids keep the last row.
        state: what is stored: ``zoho_id``, ``fingerprint``, ``deleted`` (bool) and the
            ``natural_key`` columns.
        fingerprint_columns: the business columns hashed into the fingerprint.
        dependencies: lookups that must point at records already stored.
        deleted_ids: ids Zoho reports deleted. Deletion wins over a fetched copy.
        natural_key: columns that must be unique among live records; a second record with the
            same key is INVALID (the record already stored keeps it).
        invalid_reason: name of the column holding validation failures.

    Returns:
        The per-record classification (``changes`` still empty: see :func:`field_changes`).
    """
    inc = incoming.drop_duplicates(ID, keep="last").reset_index(drop=True)
    deleted = pd.Index(pd.Series(list(deleted_ids), dtype=object).dropna().unique())
    inc = inc[~inc[ID].isin(deleted)].reset_index(drop=True)
    inc["fingerprint"] = fingerprint(inc, fingerprint_columns)

    live = state[~state["deleted"].astype(bool)]
    stored_fp = live.set_index(ID)["fingerprint"]
    old_fp = inc[ID].map(stored_fp)

    reason = inc[invalid_reason].astype(object) if invalid_reason in inc else pd.Series(None, index=inc.index)
    reason = _natural_key_duplicates(inc, live, natural_key, reason)

    invalid = reason.notna()
    skip_reason = pd.Series(None, index=inc.index, dtype=object)
    for dep in dependencies:
        values = inc[dep.column]
        missing = values.notna() & ~values.isin(dep.known_ids) & skip_reason.isna()
        skip_reason = skip_reason.mask(missing, dep.reason)
    skipped = ~invalid & skip_reason.notna()

    status = np.select(
        [invalid, skipped, old_fp.isna(), old_fp == inc["fingerprint"]],
        [Status.INVALID, Status.SKIPPED, Status.NEW, Status.UNCHANGED],
        default=Status.UPDATED,
    )
    inc.insert(1, "sync_status", pd.Series(status, index=inc.index).astype(str).astype(object))
    inc.insert(2, "sync_reason", reason.where(invalid, skip_reason))
    inc = inc.drop(columns=[invalid_reason], errors="ignore")

    gone = pd.DataFrame({ID: deleted[deleted.isin(live[ID])]}, dtype=object)
    gone["sync_status"] = str(Status.DELETED)
    gone["sync_reason"] = None
    records = pd.concat([inc, gone], ignore_index=True) if len(gone) else inc
    return DiffResult(records=records)


def _natural_key_duplicates(
    inc: pd.DataFrame, live: pd.DataFrame, key: Sequence[str], reason: pd.Series
) -> pd.Series:
    """Mark incoming records whose natural key another live record already holds."""
    if not key:
        return reason
    key = list(key)
    stored = live.loc[~live[ID].isin(inc[ID]), [ID, *key]].assign(_rank=0)
    fresh = inc.loc[reason.isna(), [ID, *key]].assign(_rank=1)
    both = pd.concat([stored, fresh], ignore_index=True)
    both = both[both[key].notna().all(axis=1)].sort_values(["_rank", ID], kind="stable")
    holder = both.drop_duplicates(key, keep="first").set_index(key)[ID].rename("_holder")
    dup = both[both.duplicated(key, keep="first") & both["_rank"].eq(1)]
    if dup.empty:
        return reason
    dup = dup.join(holder, on=key)
    label = " + ".join(key)
    text = ("duplicate " + label + ": already on " + dup["_holder"].astype(str)).set_axis(dup[ID])
    return reason.mask(inc[ID].isin(text.index), inc[ID].map(text))


def field_changes(new: pd.DataFrame, old: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Field-level changes between two frames indexed by ``zoho_id`` (long form, one row a field)."""
    old = old.reindex(new.index)
    parts = []
    for col in columns:
        a, b = old[col].astype(object), new[col].astype(object)
        same = (a == b) | (a.isna() & b.isna())
        changed = ~same
        if changed.any():
            parts.append(
                pd.DataFrame(
                    {
                        ID: new.index[changed],
                        "field": col,
                        "old": a[changed].to_numpy(),
                        "new": b[changed].to_numpy(),
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=[ID, "field", "old", "new"], dtype=object)
    out = pd.concat(parts, ignore_index=True).astype(object)
    return out.where(out.notna(), None).sort_values([ID, "field"], kind="stable").reset_index(drop=True)


def changes_by_record(changes: pd.DataFrame) -> Mapping[str, dict[str, list]]:
    """``{zoho_id: {field: [old, new]}}``: the seed's response shape, for the results log."""
    out: dict[str, dict[str, list]] = {}
    for zid, fld, old, new in changes[[ID, "field", "old", "new"]].itertuples(index=False):
        out.setdefault(zid, {})[fld] = [old, new]
    return out
