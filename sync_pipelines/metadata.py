"""What the Dagster UI shows of a materialization, shared by every asset and check: a short
markdown table of a frame, and the numbers (counts, API calls, duration, lag) as numeric metadata
the UI plots over time."""

import math
from collections.abc import Mapping, Sequence

import dagster as dg
import numpy as np
import pandas as pd

MD_ROWS = 50  # rows shown per markdown table in the UI; the full log is in the warehouse tables


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "∅"
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    return text if len(text) <= 80 else text[:77] + "…"


def md_table(frame: pd.DataFrame, *, limit: int = MD_ROWS) -> str:
    """A markdown table of the first ``limit`` rows (cells escaped and shortened)."""
    if frame.empty:
        return "_none_"
    head = frame.head(limit)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.itertuples(index=False)]
    if len(frame) > limit:
        lines.append(f"\n_{len(frame) - limit} more rows in the warehouse_")
    return "\n".join(lines)


# --- numbers the UI plots -------------------------------------------------------------------------

#: Per-status counts of a Zoho module sync: on every materialization, 0 when none, so that every
#: key has a point on every run of the UI's plots.
ZOHO_STATUSES = ("new", "updated", "refreshed", "unchanged", "invalid", "deleted")
#: Per-status counts of a step that writes to Moodle or back to Zoho (writes Moodle or Zoho
#: confirmed; ``failed``: refused; ``skipped``: records the step could not use).
PUSH_STATUSES = ("new", "updated", "deleted", "unchanged", "skipped", "failed")


def numeric(values: Mapping[str, object]) -> dict[str, dg.MetadataValue]:
    """``values`` as numeric metadata: integers as ``MetadataValue.int``, other numbers as
    ``MetadataValue.float``; ``None`` (and NaN) left out.

    Raises:
        TypeError: a value is no number (a bool, a text, a JSON blob).
    """
    out: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool | np.bool_):
            raise TypeError(f"metadata {key!r}: {value!r} is a bool, not a number")
        if isinstance(value, int | np.integer):
            out[key] = dg.MetadataValue.int(int(value))
        elif isinstance(value, float | np.floating):
            if not math.isnan(value):
                out[key] = dg.MetadataValue.float(float(value))
        else:
            raise TypeError(f"metadata {key!r}: {value!r} is not a number")
    return out


def run_metadata(
    *,
    counts: Mapping[str, int],
    statuses: Sequence[str] = (),
    row_count: int | None = None,
    api_calls: int | None = None,
    api_credits: int | None = None,
    duration_seconds: float | None = None,
    lag_seconds: float | None = None,
    **numbers: int | float | None,
) -> dict[str, dg.MetadataValue]:
    """The numbers of one materialization, every one numeric metadata, under the same keys on
    every asset: ``dagster/row_count``, the per-status counts (each of ``statuses`` present, 0 when
    none), ``api_calls``, ``api_credits``, ``duration_seconds`` (the step's wall time), ``lag_seconds``
    (how far behind Zoho the data is), then ``numbers``. A ``None`` is left out."""
    all_counts = {status: 0 for status in statuses} | {k.lower(): v for k, v in counts.items()}
    return numeric(
        {
            "dagster/row_count": row_count,
            **all_counts,
            "api_calls": api_calls,
            "api_credits": api_credits,
            "duration_seconds": None if duration_seconds is None else round(float(duration_seconds), 3),
            "lag_seconds": None if lag_seconds is None else round(float(lag_seconds), 3),
            **numbers,
        }
    )
