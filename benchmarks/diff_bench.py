"""Benchmark 1: the diff engine against the seed's per-row method and against the hashing floor.

A stored state of N records × 15 canonical fields, and an incoming full read of the same module
with 1 % of the records changed (one or two fields each), 0.5 % new and 0.5 % gone (deleted in
Zoho: absent from the read and listed by ``/deleted``). The methods, given the same inputs, run
alternately in one process, median of ``repeats``:

* **engine**: what :func:`sync_pipelines.zoho.sync.sync_module` does once the records are fetched:
  :func:`sync_pipelines.diff.diff` (fingerprints, classification, deletions) and
  :func:`sync_pipelines.diff.field_changes` for the UPDATED records, against the stored rows the
  warehouse hands back for them (a state fingerprinted in the current format, sp2).
* **engine, re-fingerprinting**: the same against a state fingerprinted the old way (sp1, no
  version stored): the one run after the upgrade, which compares in sp1 and re-fingerprints.
* **per-row**: the seed's method: each record to a ``dict``, ``json.dumps(sort_keys=True)``,
  SHA-256, its fingerprint compared with the stored one, and, for a changed record, its fields
  compared one by one with the stored record (stored fingerprints and records handed over as
  ready-made dicts, i.e. not charged to it).
* **fingerprints alone**: :func:`sync_pipelines.diff.mirror_fingerprint` (sp2: Arrow lays out,
  xxhash hashes), and the sp1 fingerprints of the previous version in pure Python
  (:func:`sync_pipelines.diff.python_digests`; its native module is gone), both as hex.
* **floor**: one XXH3-128 pass over the bytes the engine hashes (every record's sp2 text,
  concatenated): what hashing alone costs, with no per-record work at all.
* **hash per record** (for reference): one ``xxh3_128`` call per record over its ready-made
  bytes, the least any per-record fingerprint costs in Python before a single string is built.
  These bytes are built the plain way (a string per column and record) and their digests must
  equal the engine's fingerprints, at every size.

Memory is measured in a child process per size (``python -m benchmarks.diff_bench --memory N``):
the resident size once the inputs are built, the peak resident size during the engine's call
(``VmHWM``, reset just before it through ``/proc/self/clear_refs``), and ``tracemalloc``'s peak
during a second call (what the diff itself allocates, numpy buffers included).
"""

import argparse
import gc
import hashlib
import json
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xxhash

from benchmarks.common import alternate, median, profile_top
from sync_pipelines.diff import (
    FINGERPRINT_VERSION,
    ID,
    Status,
    diff,
    field_changes,
    fingerprint,
    mirror_fingerprint,
    python_digests,
    sp2_seed,
    to_hex,
)

#: The 15 business columns (students-like: names, e-mails, dates, picklists, a lookup).
COLUMNS = (
    "academic_email",
    "academic_program",
    "birth_date",
    "city",
    "country",
    "email",
    "first_name",
    "gender",
    "last_name",
    "major",
    "nationality",
    "phone_number",
    "program_id",
    "registration_date",
    "status",
)
CHANGED, NEW, GONE = 0.01, 0.005, 0.005

_FIRST = ("Amal", "Omar", "Lina", "Yusuf", "Sara", "Ayşe", "Mehmet", "John", "Emily", "عمر", "ليلى", "Zeynep")
_LAST = ("Haddad", "Nasser", "Saleh", "Kaya", "Demir", "Smith", "Jones", "Al-Khatib", "Yılmaz", "حداد")
_CITY = ("Amman", "Istanbul", "London", "Irbid", "Ankara", "Zarqa", "Manchester", "Izmir")
_COUNTRY = ("Jordan", "Turkey", "United Kingdom", "Syria", "Iraq", "Palestine")
_PROGRAM = ("HND Business", "HND Computing", "Level 3 Science", "Level 7 Strategic Management")
_MAJOR = ("Business", "Computing", "Science", "Engineering", "Marketing")
_STATUS = ("Active", "Graduated", "Withdraw", "Freezed", "Blocked", "Pending")


def make_frames(n: int, seed: int = 2026) -> dict[str, Any]:
    """The stored state and the incoming read for ``n`` stored records (deterministic)."""
    rng = np.random.default_rng(seed)
    n_new = round(n * NEW)
    total = n + n_new
    ids = np.array([f"5843017{i:012d}" for i in range(1, total + 1)], dtype=object)

    def pick(values: tuple[str, ...], missing: float = 0.05) -> np.ndarray:
        out = np.array(values, dtype=object)[rng.integers(0, len(values), total)]
        out[rng.random(total) < missing] = None
        return out

    def dates(start: str, days: int, missing: float = 0.05) -> np.ndarray:
        base = np.datetime64(start, "D")
        out = (base + rng.integers(0, days, total)).astype(str).astype(object)
        out[rng.random(total) < missing] = None
        return out

    seq = np.arange(1, total + 1)
    first = pick(_FIRST, 0.0)
    last = pick(_LAST, 0.02)
    data = {
        ID: ids,
        "academic_email": np.array([f"s{i:07d}@school.example" for i in seq], dtype=object),
        "academic_program": pick(_PROGRAM),
        "birth_date": dates("1985-01-01", 9000),
        "city": pick(_CITY),
        "country": pick(_COUNTRY),
        "email": np.array([f"student.{i}@mail.example" for i in seq], dtype=object),
        "first_name": first,
        "gender": pick(("Male", "Female"), 0.1),
        "last_name": last,
        "major": pick(_MAJOR),
        "nationality": pick(_COUNTRY),
        "phone_number": np.array([f"+9627{i % 10_000_000:08d}" for i in seq], dtype=object),
        "program_id": np.array([f"5843017000000{100001 + i % 40}" for i in seq], dtype=object),
        "registration_date": dates("2020-09-01", 2000),
        "status": pick(_STATUS, 0.0),
    }
    everything = pd.DataFrame(data, dtype=object)
    stored = everything.iloc[:n].reset_index(drop=True)

    # The incoming full read: the stored records less the deleted ones, 1 % edited, plus the new.
    order = rng.permutation(n)
    n_changed, n_gone = round(n * CHANGED), round(n * GONE)
    gone_pos = np.sort(order[:n_gone])
    changed_pos = np.sort(order[n_gone : n_gone + n_changed])
    incoming = everything.copy()
    for k, pos in enumerate(changed_pos):
        incoming.at[pos, "last_name"] = f"{incoming.at[pos, 'last_name'] or ''}-Edited"
        if k % 2:
            incoming.at[pos, "status"] = (
                "Graduated" if incoming.at[pos, "status"] != "Graduated" else "Active"
            )
    keep = np.ones(total, dtype=bool)
    keep[gone_pos] = False
    incoming = incoming[keep].reset_index(drop=True)
    incoming["invalid_reason"] = None

    state = pd.DataFrame(
        {
            ID: stored[ID],
            "fingerprint": mirror_fingerprint(stored, COLUMNS),
            "fingerprint_version": FINGERPRINT_VERSION,
            "deleted": np.zeros(n, dtype=bool),
        }
    )
    # The same records as the previous version stored them: sp1, no version.
    legacy = state.assign(fingerprint=fingerprint(stored, COLUMNS), fingerprint_version=None)
    return {
        "n": n,
        "stored": stored,
        # What the warehouse hands back for the UPDATED records (``Warehouse.load_rows``).
        "old_rows": stored.iloc[changed_pos].set_index(ID),
        "gone_ids": stored[ID].iloc[gone_pos].tolist(),
        "state": state,
        "legacy_state": legacy,
        "incoming": incoming,
        "expected": {"UPDATED": n_changed, "NEW": n_new, "DELETED": n_gone},
    }


# --- the three methods ---------------------------------------------------------------------------


def engine(case: dict[str, Any], state: str = "state") -> dict[str, int]:
    """The project's engine, as ``sync_module`` runs it once the records are fetched."""
    result = diff(case["incoming"], case[state], fingerprint_columns=COLUMNS, deleted_ids=case["gone_ids"])
    updated = result.of(Status.UPDATED)
    if len(updated):
        result.changes = field_changes(updated.set_index(ID), case["old_rows"], COLUMNS)
    counts = result.counts()
    counts["changed_fields"] = len(result.changes)
    counts["refingerprinted"] = len(result.refingerprinted)
    return counts


def per_row_inputs(case: dict[str, Any]) -> dict[str, Any]:
    """What the per-row method compares against, ready-made (not charged to it)."""
    stored = case["stored"]
    return {
        "fp": dict(zip(stored[ID], _per_row_fingerprints(stored), strict=True)),
        "rows": {r[ID]: r for r in stored.to_dict("records")},
    }


def _per_row_fingerprints(frame: pd.DataFrame) -> list[str]:
    out = []
    for rec in frame.to_dict("records"):
        body = {c: rec[c] for c in COLUMNS}
        out.append(hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest())
    return out


def per_row(case: dict[str, Any], stored: dict[str, Any]) -> dict[str, int]:
    """The seed's method: one record at a time."""
    stored_fp, stored_rows = stored["fp"], stored["rows"]
    counts = {"NEW": 0, "UNCHANGED": 0, "UPDATED": 0, "DELETED": 0}
    changes: dict[str, dict[str, list]] = {}
    deleted = set(case["gone_ids"])
    for rec in case["incoming"].to_dict("records"):
        zid = rec[ID]
        if zid in deleted:
            continue
        body = {c: rec[c] for c in COLUMNS}
        fp = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        old = stored_fp.get(zid)
        if old is None:
            counts["NEW"] += 1
        elif old == fp:
            counts["UNCHANGED"] += 1
        else:
            counts["UPDATED"] += 1
            before = stored_rows[zid]
            changes[zid] = {c: [before[c], body[c]] for c in COLUMNS if before[c] != body[c]}
    counts["DELETED"] = sum(1 for zid in deleted if zid in stored_fp)
    counts["changed_fields"] = sum(len(v) for v in changes.values())
    return counts


def record_bytes(case: dict[str, Any]) -> list[bytes]:
    """The bytes the engine hashes for the incoming read: every record's sp2 text, UTF-8."""
    frame = case["incoming"]
    acc = None
    for col in sorted(COLUMNS):
        values = frame[col].to_numpy(dtype=object, copy=True)
        values[pd.isna(values)] = "\x00"
        acc = values if acc is None else acc + ("\x1f" + values)
    return [text.encode() for text in acc]


def floor(buffer: bytes) -> str:
    """One XXH3-128 pass over ``buffer``."""
    return xxhash.xxh3_128_hexdigest(buffer)


def hash_per_record(rows: list[bytes]) -> list[str]:
    """XXH3-128 of every record's ready-made bytes, one ``xxhash`` call each: the least any
    per-record fingerprint costs in Python, before a single string is built."""
    seed, h = sp2_seed(COLUMNS), xxhash.xxh3_128_hexdigest
    return [h(row, seed) for row in rows]


# --- measurement ------------------------------------------------------------------------------


def measure_size(n: int, repeats: int, *, profile: bool = False) -> dict[str, Any]:
    """Time the methods on ``n`` records, alternating, and check that they agree."""
    case = make_frames(n)
    rows = record_bytes(case)
    buffer = b"".join(rows)
    # The engine's fingerprints are the documented format, recomputed here the plain way.
    if hash_per_record(rows) != mirror_fingerprint(case["incoming"], COLUMNS).tolist():
        raise AssertionError("the engine's fingerprints differ from the sp2 text hashed record by record")
    stored = per_row_inputs(case)
    got = engine(case)
    for status, count in case["expected"].items():
        if got[status] != count:
            raise AssertionError(f"engine found {got[status]} {status}, expected {count}")
    # Against the old format: the same statuses, no false UPDATED, every unchanged record re-fingerprinted.
    again = engine(case, "legacy_state")
    if {k: again[k] for k in case["expected"]} != case["expected"] or again["refingerprinted"] != got[
        "UNCHANGED"
    ]:
        raise AssertionError(f"re-fingerprinting found {again}, expected {case['expected']}")
    row_counts = per_row(case, stored)
    for status in ("NEW", "UPDATED", "DELETED", "UNCHANGED", "changed_fields"):
        if row_counts[status] != got[status]:
            raise AssertionError(f"per-row found {row_counts[status]} {status}, engine {got[status]}")
    methods = {
        "engine": lambda: engine(case),
        "engine_refingerprint": lambda: engine(case, "legacy_state"),
        "fingerprint": lambda: mirror_fingerprint(case["incoming"], COLUMNS),
        "fingerprint_sp1": lambda: to_hex(python_digests(case["incoming"], COLUMNS)),
        "per_row": lambda: per_row(case, stored),
        "floor": lambda: floor(buffer),
        "hash_per_record": lambda: hash_per_record(rows),
    }
    gc.collect()
    times = alternate(methods, repeats)
    out: dict[str, Any] = {
        "records": n,
        "fields": len(COLUMNS),
        "incoming": len(case["incoming"]),
        "bytes_hashed": len(buffer),
        "counts": {k: got[k] for k in ("NEW", "UNCHANGED", "UPDATED", "DELETED", "changed_fields")},
        "refingerprinted": again["refingerprinted"],
        "repeats": repeats,
        "times": {k: [round(t, 6) for t in v] for k, v in times.items()},
        "median_s": {k: round(median(v), 6) for k, v in times.items()},
    }
    if profile:
        out["profile"] = profile_top(lambda: engine(case))
    return out


def memory_in_child(n: int) -> dict[str, Any]:
    """Peak memory of the engine on ``n`` records, measured in a fresh child process."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.diff_bench", "--memory", str(n)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_mib(field: str) -> float | None:
    """``VmRSS`` or ``VmHWM`` (peak) of this process, from ``/proc`` (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _memory_main(n: int) -> None:
    case = make_frames(n)
    gc.collect()
    resident = _rss_mib("VmRSS")
    # Reset the peak to what is resident now (Linux), so the peak below is the diff's.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        peak_source = "VmHWM after clear_refs"
    except OSError:
        peak_source = "ru_maxrss (includes building the inputs)"
    engine(case)
    peak = _rss_mib("VmHWM") if peak_source.startswith("VmHWM") else None
    if peak is None:
        peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    engine(case)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "records": n,
                "inputs_resident_mib": resident,
                "process_peak_rss_mib": peak,
                "peak_source": peak_source,
                "engine_peak_mib": round((traced - base) / 2**20, 1),
            }
        )
    )


def run(sizes: list[int], repeats: int, *, memory: bool = True, profile: bool = True) -> dict[str, Any]:
    """Every size; the ratios and the scaling; peak memory per size in a child process."""
    results = []
    for n in sizes:
        row = measure_size(n, repeats, profile=profile and n == max(sizes))
        if memory:
            row["memory"] = memory_in_child(n)
        med = row["median_s"]
        row["speedup_vs_per_row"] = round(med["per_row"] / med["engine"], 1)
        row["x_floor"] = round(med["engine"] / med["floor"], 1)
        results.append(row)
        print(
            f"  diff {n:>9,}: engine {med['engine']:.3f} s, per-row {med['per_row']:.3f} s, "
            f"floor {med['floor']:.4f} s",
            flush=True,
        )
    out: dict[str, Any] = {"sizes": results}
    by_n = {r["records"]: r for r in results}
    if len(results) >= 2:
        big, small = results[-1], results[-2]
        factor = big["records"] / small["records"]
        out["scaling"] = {
            "from": small["records"],
            "to": big["records"],
            "records_factor": factor,
            "time_factor": round(big["median_s"]["engine"] / small["median_s"]["engine"], 2),
        }
    if profile:
        out["profile"] = {"records": max(by_n), "text": by_n[max(by_n)].pop("profile")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=int, help="(internal) measure peak memory at this size")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.memory:
        _memory_main(args.memory)
        return
    out = run([int(s) for s in args.sizes.split(",")], args.repeats)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
