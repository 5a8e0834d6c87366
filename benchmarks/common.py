"""Helpers shared by the benchmarks: the machine, timing side by side, medians, profiles."""

import cProfile
import datetime as dt
import io
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem_kib = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
                    break
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_average_at_start": [round(x, 2) for x in load],
        "openblas_env": {
            k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
        },
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call, and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def alternate(methods: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Run every method ``repeats`` times, interleaved (A B C A B C …), so that the machine's
    noise falls on all of them alike. Returns the wall times per method."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            seconds, _ = timed(fn)
            times[name].append(seconds)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def profile_top(fn: Callable[[], Any], limit: int = 12) -> str:
    """cProfile of one call: the top entries by cumulative and by own time, as text."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    text = out.getvalue()
    # Keep the table, drop pstats' preamble of file names.
    for prefix in sorted(_path_prefixes(), key=len, reverse=True):
        text = text.replace(prefix, "")
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    head = next((ln.strip() for ln in lines if "function calls" in ln), "")
    return "\n".join([head, *lines[start:]]).rstrip()


def _path_prefixes() -> list[str]:
    import site
    import sysconfig
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent) + "/"
    paths = {root, sysconfig.get_paths()["stdlib"] + "/", *(p + "/" for p in site.getsitepackages())}
    return [p for p in paths if p != "/"]


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "–"
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"
