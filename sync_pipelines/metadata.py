"""What the Dagster UI shows of a table: a short markdown table, shared by every asset and check."""

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
