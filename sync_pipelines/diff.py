"""Fingerprints and the dataframe diff: NEW / UNCHANGED / UPDATED / REFRESHED / INVALID / DELETED.

Everything here works a column at a time on pandas frames; no step compares or classifies records
in a Python loop. The one per-record step is hashing each record's text, one library call a
record over bytes Arrow laid out for the whole batch. No native code of the project's own.

Two fingerprint formats
-----------------------
**sp2** (version 2, the mirror's: ``fingerprint`` and ``aux_fingerprint`` of every module table,
``fingerprint_version = 2``), recomputable outside Python::

    xxh3_128_hex( UTF-8( join("\\x1f", value of c, or "\\x00" if missing,
                              for each column c in ascending name order) ),
                  seed = xxh3_64( UTF-8( "sp2" + concat over those columns ("\\x1e" + c) ) ) )

The column names are in the seed rather than in every record's text: they are the same for every
record of a batch, so each record's text is its values only, which Arrow's
``binary_join_element_wise`` lays out for a whole batch in one C++ call, and ``xxhash`` (the
Python binding of the reference XXH3, a well-kept library on PyPI) hashes at memory speed. Adding
a column to a module changes the seed, so every fingerprint once: the next run reports each
record UPDATED with that one field. XXH3-128 is no cryptographic hash, and needs not be one: a
fingerprint only tells whether a record Zoho sent equals the one stored *for the same id*; an
accidental collision between a record and its own next version is 2⁻¹²⁸-unlikely, and nobody
gains by forging one (whoever can edit the record in Zoho can change the mirror anyway).

**sp1** (version 1; SHA-256 of ``"sp1"`` + the columns as ``"\\x1e" + name + "\\x1f" + value``) is
the format before version 2, computed by :func:`python_digests`. The mirror keeps it readable so
that a warehouse fingerprinted the old way is re-fingerprinted once, without a false UPDATED: a
stored row whose ``fingerprint_version`` is not 2 is compared in sp1 and, when equal, given its
sp2 fingerprints (UNCHANGED, counted as re-fingerprinted). The Moodle and write-back sides keep
sp1 for what they last pushed (:func:`fingerprint`): a change of format there would push every
record again; their volumes are small.

Values are the canonical strings of :mod:`sync_pipelines.zoho.canonical`, which never contain
control characters, so the separators cannot be forged by data.
"""

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

#: The mirror's fingerprint format, stored in each module table's ``fingerprint_version``.
FINGERPRINT_VERSION = 2
#: The format before it (SHA-256, see the module docstring); a NULL version is this one.
LEGACY_VERSION = 1
ID = "zoho_id"
#: An optional column of notes on a record that are no findings (a lookup whose target is on its
#: way); the diff writes them into ``sync_reason``.
NOTE = "sync_note"
#: Stored alongside the fingerprints (``fingerprint_version`` in the state the diff is given).
VERSION = "fingerprint_version"
#: A column of the diff's records: True where an UNCHANGED record's stored fingerprints were of
#: an older format and are to be rewritten in the current one.
REFINGERPRINT = "refingerprint"

_SP2_DIGEST = 16
_SP1 = b"sp1"
#: Rows laid out and hashed per batch: Arrow's offsets stay 32-bit and a batch's text small.
_SP2_BATCH = 1 << 17

#: Rows fingerprinted per batch: one join, one encode and one split each, in memory that stays small.
_BATCH = 4096
#: Ends each row's text inside a batch (never hashed): a control character, which canonical values
#: never hold; a batch where some value holds it anyway is done row by row.
_ROW_END = "\x1d"
_ROW_END_BYTE = _ROW_END.encode()
_HASH_DIGEST = type(hashlib.sha256()).digest


class Status(StrEnum):
    """What a sync did, or would do, with one record."""

    NEW = "NEW"
    UNCHANGED = "UNCHANGED"
    UPDATED = "UPDATED"
    REFRESHED = "REFRESHED"
    INVALID = "INVALID"
    DELETED = "DELETED"


# --- sp2: the mirror's fingerprints --------------------------------------------------------------


def sp2_seed(columns: Sequence[str]) -> int:
    """The XXH3-128 seed of a column layout (see the module docstring)."""
    return xxhash.xxh3_64_intdigest(("sp2" + "".join(f"\x1e{c}" for c in sorted(columns))).encode())


def mirror_digests(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The sp2 digests of each row over ``columns``: a ``(len(frame), 16)`` array of bytes.

    Each batch of rows is converted to Arrow strings a column at a time (missing values, however
    pandas marks them, become Arrow nulls), laid out by ``binary_join_element_wise`` (nulls as
    ``"\\x00"``) and hashed by one ``xxh3_128_digest`` call a row over a slice of the joined
    buffer: no Python string is built per row or value.
    """
    cols = sorted(columns)
    n = len(frame)
    seed = sp2_seed(cols)
    if not cols:
        one = xxhash.xxh3_128_digest(b"", seed)
        return np.frombuffer(one * n, dtype=np.uint8).reshape(n, _SP2_DIGEST)
    values = [frame[c].to_numpy(dtype=object) for c in cols]
    out = bytearray()
    digest = xxhash.xxh3_128_digest
    for start in range(0, n, _SP2_BATCH):
        stop = min(n, start + _SP2_BATCH)
        arrays = [_arrow_text(v[start:stop]) for v in values]
        joined = pc.binary_join_element_wise(
            *arrays, "\x1f", null_handling="replace", null_replacement="\x00"
        )
        if isinstance(joined, pa.ChunkedArray):  # pragma: no cover - arrays in, an array out
            joined = joined.combine_chunks()
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[
            joined.offset : joined.offset + len(joined) + 1
        ].tolist()
        data = memoryview(joined.buffers()[2] or b"")
        rows = map(data.__getitem__, map(slice, offsets[:-1], offsets[1:]))
        out += b"".join(map(digest, rows, itertools.repeat(seed, stop - start)))
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(n, _SP2_DIGEST)


def _arrow_text(values: np.ndarray) -> pa.Array:
    """An object array of ``str`` and missing markers (``None``, NaN, ``pd.NA``, ``NaT``) as an
    Arrow string array with nulls."""
    try:
        return pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # A pandas marker Arrow does not take as null (NaT, pd.NA in an object array):
        cleaned = values.copy()
        cleaned[pd.isna(cleaned)] = None
        return pa.array(cleaned, type=pa.string(), from_pandas=True)


def mirror_fingerprint(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """The sp2 hex fingerprint (32 characters) of each row over ``columns``."""
    return pd.Series(to_hex(mirror_digests(frame, columns)), index=frame.index, dtype=object)


# --- sp1: what was pushed, and the mirror's older format ----------------------------------------


def fingerprint(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """sp1: SHA-256 hex fingerprint (64 characters) of each row over ``columns``.

    What the Moodle and write-back sides store of what they last pushed (see the module
    docstring: kept in sp1 so that no record is pushed again for a change of format)."""
    return pd.Series(to_hex(python_digests(frame, columns)), index=frame.index, dtype=object)


def digests(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The raw SHA-256 digests of :func:`fingerprint`: a ``(len(frame), 32)`` array of bytes."""
    return python_digests(frame, columns)


def python_digests(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The sp1 digests (SHA-256, ``hashlib``) of each row over ``columns``."""
    cols = sorted(columns)
    n = len(frame)
    if not cols:
        one = hashlib.sha256(_SP1).digest()
        return np.frombuffer(one * n, dtype=np.uint8).reshape(n, 32)
    values = [_with_missing_marker(frame[col]) for col in cols]
    slow = False
    # Each row's text is its pieces laid end to end: fixed[0] v0 fixed[1] v1 … v(k-1) fixed[k],
    # where fixed[0] carries the version and the first column's name, fixed[j] the separators and
    # name of column j, and fixed[k] ends the row. A batch of rows is built as one list of pieces,
    # joined, encoded and split at the row ends once, so no string is built per row or column;
    # the hashing is one C-level map over the batch's rows.
    heads = [f"\x1e{c}\x1f" for c in cols]
    fixed = [_SP1.decode() + heads[0], *heads[1:], _ROW_END]
    k, width = len(cols), 2 * len(cols) + 1
    sha, digest = hashlib.sha256, _HASH_DIGEST
    out = bytearray()
    for start in range(0, n, _BATCH):
        m = min(n, start + _BATCH) - start
        pieces: list = [None] * (m * width)
        for j, piece in enumerate(fixed):
            pieces[2 * j :: width] = [piece] * m
        for j in range(k):
            pieces[2 * j + 1 :: width] = values[j][start : start + m]
        try:
            text = "".join(pieces)
        except TypeError:
            if slow:
                raise
            # Missing values marked otherwise than None (a pandas string column's pd.NA): every
            # column again, the thorough way, and this batch again.
            slow = True
            values = [_with_missing_marker(frame[col], any_missing=True) for col in cols]
            for j in range(k):
                pieces[2 * j + 1 :: width] = values[j][start : start + m]
            text = "".join(pieces)
        rows = text.encode().split(_ROW_END_BYTE)
        if len(rows) != m + 1:
            # A value holds the row-end character (canonical values never do): this batch row by
            # row, each row's text being its pieces without the row end.
            rows = ["".join(pieces[i * width : (i + 1) * width - 1]).encode() for i in range(m)] + [b""]
        rows.pop()
        out += b"".join(map(digest, map(sha, rows)))
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(n, 32)


def to_hex(raw: np.ndarray) -> np.ndarray:
    """Rows of digests (``(n, width)`` bytes) → their hex text (an object array of ``str``)."""
    width = 2 * raw.shape[1] if raw.ndim == 2 else 64
    text = raw.tobytes().hex()
    return np.array([text[i : i + width] for i in range(0, len(text), width)], dtype=object)


def _hex_bytes(raw: np.ndarray) -> np.ndarray:
    """Rows of digests → their hex text as fixed-width ASCII (numpy ``S<2 × width>``)."""
    return np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype=f"S{2 * raw.shape[1]}")


def _stored_hex_bytes(fingerprints: np.ndarray, width: int) -> np.ndarray:
    """Stored hex fingerprints as ``S<width>``; a value that is not ``width`` ASCII characters
    (another format, or none) becomes ``b""``, which no fingerprint equals."""
    values = fingerprints.tolist()
    try:
        joined = "".join(values)
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    except TypeError:
        joined, lengths = "", None
    if lengths is not None and (lengths == width).all() and joined.isascii():
        return np.frombuffer(joined.encode("ascii"), dtype=f"S{width}")
    return np.array(
        [
            v.encode("ascii") if isinstance(v, str) and len(v) == width and v.isascii() else b""
            for v in values
        ],
        dtype=f"S{width}",
    )


def _with_missing_marker(column: pd.Series, *, any_missing: bool = False) -> list:
    """A column's values as a list, missing ones as ``"\\x00"``.

    The fast pass replaces ``None`` only (canonical frames mark missing values so); with
    ``any_missing`` every missing marker pandas knows (NaN, ``pd.NA``, ``NaT``) is replaced.
    Object arrays throughout: numpy's fixed-width strings would silently drop the marker.
    """
    if not any_missing:
        return ["\x00" if v is None else v for v in column.to_numpy(dtype=object).tolist()]
    array = column.to_numpy(dtype=object, copy=True)
    array[pd.isna(array)] = "\x00"
    return array.tolist()


class DiffResult:
    """The outcome of one diff.

    Attributes:
        records: one row per incoming record and per deletion: ``zoho_id``, ``sync_status``,
            ``sync_reason``, ``fingerprint`` and the canonical columns (missing for DELETED rows).
            Built on first use: the diff keeps the incoming records and the deletions apart, and
            :meth:`of`, :meth:`ids` and :meth:`counts` read the two parts without joining them
            (a join copies every column of every record).
        changes: UPDATED records' changed fields, long form: ``zoho_id``, ``field``, ``old``,
            ``new``. Filled by :func:`field_changes`.
        refingerprinted: ids of UNCHANGED records whose stored fingerprints were of an older
            format: their ``fingerprint`` and ``aux_fingerprint`` in ``records`` are the current
            format's, to be stored with ``fingerprint_version`` (nothing else of them changed).
    """

    def __init__(
        self,
        records: pd.DataFrame,
        changes: pd.DataFrame | None = None,
        *,
        deleted: pd.DataFrame | None = None,
        refingerprinted: pd.Index | None = None,
    ) -> None:
        self.refingerprinted = refingerprinted if refingerprinted is not None else pd.Index([], dtype=object)
        self._parts = [records] if deleted is None or deleted.empty else [records, deleted]
        self._records = records if len(self._parts) == 1 else None
        self.changes = (
            changes
            if changes is not None
            else pd.DataFrame(columns=[ID, "field", "old", "new"], dtype=object)
        )

    @property
    def records(self) -> pd.DataFrame:
        if self._records is None:
            self._records = pd.concat(self._parts, ignore_index=True)
        return self._records

    def ids(self, *statuses: Status) -> pd.Index:
        return pd.Index(self.of(*statuses)[ID])

    def of(self, *statuses: Status) -> pd.DataFrame:
        wanted = [str(s) for s in statuses]
        if self._records is not None:
            return self._records[self._records["sync_status"].isin(wanted)]
        parts = [p[p["sync_status"].isin(wanted)] for p in self._parts]
        parts = [p for p in parts if len(p)] or parts[:1]
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def counts(self) -> dict[str, int]:
        got: dict[str, int] = {}
        for part in self._parts:
            for status, count in part["sync_status"].value_counts().items():
                got[status] = got.get(status, 0) + int(count)
        return {str(s): got.get(str(s), 0) for s in Status}


def diff(
    incoming: pd.DataFrame,
    state: pd.DataFrame,
    *,
    fingerprint_columns: Sequence[str],
    aux_columns: Sequence[str] = (),
    deleted_ids: Iterable[str] = (),
    natural_key: Sequence[str] = (),
    invalid_reason: str = "invalid_reason",
    findings: str = "findings",
) -> DiffResult:
    """Classify incoming records against the stored state.

    Every incoming record is kept: validation findings never keep a record out of the mirror.

    Args:
        incoming: canonical records, one row each, with ``zoho_id``, ``invalid_reason`` and
            ``findings`` (missing when valid). Duplicate ids keep the last row.
        state: what is stored: ``zoho_id``, ``fingerprint``, ``fingerprint_version`` (NULL or
            absent: sp1), ``deleted`` (bool), the ``natural_key`` columns and, with
            ``aux_columns``, ``aux_fingerprint``. All of the module's stored records, or (an
            incremental read) those of the incoming and deleted ids and every live record holding
            one of the incoming records' natural keys: the result is the same.
        fingerprint_columns: the business columns hashed into the fingerprint.
        aux_columns: the other stored columns (sync bookkeeping, formula fields, Zoho's
            ``Modified_Time``, the findings): hashed into a second fingerprint, so that a change
            to them alone rewrites the row (REFRESHED) without looking like a business change.
        deleted_ids: ids Zoho confirmed deleted. Deletion wins over a fetched copy.
        natural_key: columns that should be unique among live records; a record whose key an
            older record (lower id: Zoho ids grow with creation) holds gets a finding.
        invalid_reason: name of the column holding validation failures, as text.
        findings: name of the column holding them as JSON.

    Returns:
        The per-record classification (``changes`` still empty: see :func:`field_changes`).
        ``sync_status`` is INVALID for a record with findings (it is stored all the same: its
        ``change`` column says NEW, UPDATED, REFRESHED or UNCHANGED), else its ``change``.
    """
    deleted = pd.Index(pd.Series(list(deleted_ids), dtype=object).dropna().unique())
    gone_flag = state["deleted"].astype(bool).to_numpy()
    live = state[~gone_flag] if gone_flag.any() else state
    # One hash pass over every id involved (live stored, incoming, deleted) gives each a code;
    # the stored ids, first in line, get 0 … n-1 when they are unique. Everything after works on
    # those integers: duplicates, the stored record of each incoming one, known deletions.
    stored_ids = live[ID].to_numpy(dtype=object)
    incoming_ids = incoming[ID].to_numpy(dtype=object)
    n_stored, n_in = len(stored_ids), len(incoming_ids)
    codes, _ = pd.factorize(
        _as_keys(np.concatenate([stored_ids, incoming_ids, deleted.to_numpy(dtype=object)])),
        use_na_sentinel=False,
    )
    if not np.array_equal(codes[:n_stored], np.arange(n_stored)):
        raise ValueError("the stored state holds an id twice among its live records")
    in_codes, deleted_codes = codes[n_stored : n_stored + n_in], codes[n_stored + n_in :]
    keep = ~pd.Series(in_codes).duplicated(keep="last").to_numpy()
    if len(deleted):
        keep &= ~np.isin(in_codes, deleted_codes)
    # Filtering copies every column: only when a row has to go.
    inc = (incoming if keep.all() else incoming[keep]).reset_index(drop=True)

    reason = (
        inc[invalid_reason].astype(object)
        if invalid_reason in inc
        else pd.Series(None, index=inc.index, dtype=object)
    )
    found_json = (
        inc[findings].astype(object) if findings in inc else pd.Series(None, index=inc.index, dtype=object)
    )
    reason, found_json = _natural_key_duplicates(inc, live, natural_key, reason, found_json)
    inc[findings] = found_json.where(found_json.notna(), None)

    kept_codes = in_codes[keep]
    position = np.where(kept_codes < n_stored, kept_codes, -1)
    found = position >= 0
    is_new = ~found
    # Rows stored in the current format are compared in it; the others (fingerprinted before the
    # version was stored) in their own, once, and given the current one (see the module docstring).
    current = np.zeros(len(inc), dtype=bool)
    current[found] = _stored_versions(live)[position[found]] == FINGERPRINT_VERSION
    is_same, fp = _compare(inc, fingerprint_columns, live["fingerprint"], position, found, current)
    if aux_columns:
        stored_aux = (
            live["aux_fingerprint"] if "aux_fingerprint" in live else pd.Series(None, index=live.index)
        )
        aux_same, aux_fp = _compare(inc, aux_columns, stored_aux, position, found, current)
    else:
        aux_same, aux_fp = np.ones(len(inc), dtype=bool), np.full(len(inc), None, dtype=object)
    refingerprinted = found & ~current & is_same & aux_same
    inc["fingerprint"] = pd.Series(fp, index=inc.index, dtype=object)
    inc["aux_fingerprint"] = pd.Series(aux_fp, index=inc.index, dtype=object)

    # What happened to the stored row: NEW, else UPDATED (a business field changed), else
    # REFRESHED (only bookkeeping, formula fields, Modified_Time or findings), else UNCHANGED.
    change = np.full(len(inc), Status.UPDATED.value, dtype=object)
    change[is_same & ~aux_same] = Status.REFRESHED.value
    change[is_same & aux_same] = Status.UNCHANGED.value
    change[is_new] = Status.NEW.value
    invalid = (found_json.notna() if findings in incoming else reason.notna()).to_numpy(dtype=bool)
    status = change.copy()
    status[invalid] = Status.INVALID.value
    said = reason.where(reason.notna(), None)
    if NOTE in inc:
        note = inc.pop(NOTE)
        said = pd.Series(
            [
                n if r is None else r if not isinstance(n, str) else f"{r}; {n}"
                for r, n in zip(said, note, strict=True)
            ],
            index=inc.index,
            dtype=object,
        )
    inc.insert(1, "sync_status", pd.Series(status, index=inc.index, dtype=object))
    inc.insert(2, "sync_reason", said)
    inc.insert(3, "change", pd.Series(change, index=inc.index, dtype=object))
    inc = inc.drop(columns=[invalid_reason], errors="ignore")

    gone = pd.DataFrame({ID: deleted[deleted_codes < n_stored]}, dtype=object)
    gone["sync_status"] = str(Status.DELETED)
    gone["sync_reason"] = None
    gone["change"] = str(Status.DELETED)
    return DiffResult(inc, deleted=gone, refingerprinted=pd.Index(inc[ID].to_numpy()[refingerprinted]))


def _stored_versions(live: pd.DataFrame) -> np.ndarray:
    """Each stored row's fingerprint format: its ``fingerprint_version``, the legacy one where
    that is NULL or the state has no such column (rows written before the version was stored)."""
    if VERSION not in live:
        return np.full(len(live), LEGACY_VERSION, dtype=np.int64)
    return pd.to_numeric(live[VERSION], errors="coerce").fillna(LEGACY_VERSION).to_numpy(dtype=np.int64)


def _compare(
    inc: pd.DataFrame,
    columns: Sequence[str],
    stored: pd.Series,
    position: np.ndarray,
    found: np.ndarray,
    current: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Fingerprint ``columns`` of ``inc`` and compare with the stored fingerprint of each record
    (``position`` in ``stored``, where ``found``): in sp2 where the stored row is ``current``, in
    sp1 for the others. Returns (same, sp2 fingerprint text): records unchanged in sp2 keep their
    stored text, only the others' digests become hex."""
    new_digest = mirror_digests(inc, columns)
    stored_fp = stored.to_numpy(dtype=object)
    is_same = np.zeros(len(inc), dtype=bool)
    # Compared as fixed-width ASCII bytes; a stored value in another format, or none, never matches.
    now = found & current
    is_same[now] = _stored_hex_bytes(stored_fp[position[now]], 2 * _SP2_DIGEST) == _hex_bytes(new_digest[now])
    legacy = found & ~current
    if legacy.any():
        old = python_digests(inc[legacy], columns)
        is_same[legacy] = _stored_hex_bytes(stored_fp[position[legacy]], 64) == _hex_bytes(old)
    keep = is_same & current
    fp = np.empty(len(inc), dtype=object)
    fp[keep] = stored_fp[position[keep]]
    fp[~keep] = to_hex(new_digest[~keep])
    return is_same, fp


#: 10**0 … 10**18: a positive int64 has as many decimal digits as there are of these at or below it.
_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)


def _as_keys(ids: np.ndarray) -> np.ndarray:
    """Ids as hash keys: Zoho's (digit strings without a leading zero) as int64, which hash and
    compare in C several times faster than Python strings; any other id leaves them all as
    they are. The mapping is one-to-one: ASCII strings only, and each turns into its int only
    when the int has as many digits as the string has characters (so no sign, space, ``_`` or
    leading zero)."""
    try:
        if not "".join(ids).isascii():  # int() reads other scripts' digits too
            return ids
        numbers = ids.astype(np.int64)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    except (TypeError, ValueError, OverflowError):
        return ids
    digits = np.searchsorted(_POWERS_OF_TEN, numbers, side="right")
    if len(ids) and ((numbers <= 0).any() or not np.array_equal(digits, lengths)):
        return ids
    return numbers


def _natural_key_duplicates(
    inc: pd.DataFrame, live: pd.DataFrame, key: Sequence[str], reason: pd.Series, found: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """Add a finding to incoming records whose natural key an older live record holds.

    The holder of a key is the record with the lowest id among the live records that have it
    (stored ones not in this batch, and this batch's): Zoho ids grow with creation time, so the
    first record made keeps the key, whatever each run happens to read.
    """
    if not key:
        return reason, found
    key = list(key)
    stored = live.loc[~live[ID].isin(inc[ID]), [ID, *key]].assign(_rank=0)
    fresh = inc[[ID, *key]].assign(_rank=1)
    both = pd.concat([stored, fresh], ignore_index=True)
    both = both[both[key].notna().all(axis=1)]
    if both.empty:
        return reason, found
    ids = both[ID].astype(str)
    both = both.assign(_len=ids.str.len(), _id=ids).sort_values(["_len", "_id"], kind="stable")
    holder = both.drop_duplicates(key, keep="first").set_index(key)[ID].rename("_holder")
    dup = both[both.duplicated(key, keep="first") & both["_rank"].eq(1)]
    if dup.empty:
        return reason, found
    dup = dup.join(holder, on=key)
    label = " + ".join(key)
    texts: dict[str, str] = {}
    extra: dict[str, dict] = {}
    for zid, held, *value in zip(dup[ID], dup["_holder"], *(dup[k] for k in key), strict=True):
        shown = value[0] if len(value) == 1 else value
        texts[zid] = f"duplicate {label} {shown!r}: already on {held}"
        extra[zid] = {"rule": "duplicate_natural_key", "field": label, "value": shown, "holder": held}
    ids_in = inc[ID]
    hit = ids_in.isin(texts.keys())
    added = ids_in[hit].map(texts)
    reason = reason.copy()
    reason[hit] = [
        t if r is None or (isinstance(r, float) and r != r) else f"{r}; {t}"
        for r, t in zip(reason[hit], added, strict=True)
    ]
    found = found.copy()
    found[hit] = [
        json.dumps([*(json.loads(f) if isinstance(f, str) else []), extra[z]], ensure_ascii=False)
        for f, z in zip(found[hit], ids_in[hit], strict=True)
    ]
    return reason, found


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
