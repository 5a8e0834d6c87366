"""Progress lines for long reads and writes, at a steady pace.

A first sync of a big module reads for minutes (every record of a subform module is read by id,
one call each); without this, its log says nothing between the step's start and its end. A
:class:`Progress` is told of every page, batch or request as it is answered (:meth:`Progress.add`)
and writes a line at most every ``every`` seconds (default 10, ``SYNC_PROGRESS_SECONDS``), by the
clock, never per page, plus one line at the end:

``zoho/students (BTEC_Students) for school_a: 12 pages, 2,400 records, 240.0 records/s,
12 API calls, 10 s [list 12 pages 2,400 records]``

Used by the Zoho module syncs (paged reads, reads by id, the subform reads one record at a time,
``/deleted``), the write-backs to Zoho (batches of 100) and the Moodle steps (gradebooks read per
course, enrolled users per course, user creation batches...). It logs through whatever it is given
that has ``info(str)``: the step's ``context.log`` in a Dagster run, a :mod:`logging` logger
elsewhere. No Dagster here.
"""

import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

#: Seconds between two progress lines of one step (at most one line per interval).
PROGRESS_SECONDS_ENV = "SYNC_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 10.0


def progress_seconds() -> float:
    """The interval between progress lines: ``SYNC_PROGRESS_SECONDS``, default 10."""
    try:
        value = float(os.environ.get(PROGRESS_SECONDS_ENV, DEFAULT_PROGRESS_SECONDS))
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS
    return value if value > 0 else DEFAULT_PROGRESS_SECONDS


class InfoLog(Protocol):
    """Anything with ``info(message)``: a Dagster ``context.log``, a :class:`logging.Logger`."""

    def info(self, msg: str, /) -> object: ...


class Progress:
    """Counts pages (or requests) and records of one step; logs them at a steady pace.

    Args:
        log: where lines go (``context.log``, a logger).
        what: names the step in every line, e.g. ``zoho/students (BTEC_Students) for school_a``.
        unit: what one :meth:`add` is, in the line: ``pages`` (Zoho) or ``requests`` (Moodle).
        every: at most one line per this many seconds (the end line aside).
        clock: monotonic seconds (tests pass a controllable one).
        calls: the client's API call counter (``lambda: client.stats.calls``); the lines show the
            calls made since the progress began, retries and token requests included.
    """

    def __init__(
        self,
        log: InfoLog,
        what: str,
        *,
        unit: str = "pages",
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        calls: Callable[[], int] | None = None,
    ) -> None:
        self.log = log
        self.what = what
        self.unit = unit
        self.every = float(every) if every is not None else progress_seconds()
        self._clock = clock
        self._calls = calls
        self._calls0 = calls() if calls is not None else 0
        self.started = clock()
        self._last = self.started
        self.pages = 0
        self.records = 0
        self.by_kind: dict[str, list[int]] = {}  # kind -> [pages, records]
        self.lines: list[str] = []
        self._done = False

    # --- counting -------------------------------------------------------------------------------

    def add(self, kind: str, records: int = 0, pages: int = 1) -> None:
        """One more page (request, batch) of ``kind`` answered, with ``records`` records in it.
        Logs a line when ``every`` seconds have passed since the last one."""
        self.pages += pages
        self.records += records
        seen = self.by_kind.setdefault(kind, [0, 0])
        seen[0] += pages
        seen[1] += records
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            self._emit(self.line(now))

    def done(self, *, failed: BaseException | None = None) -> None:
        """The line at the end (once; later calls do nothing)."""
        if self._done:
            return
        self._done = True
        self._emit(self.line(self._clock(), end="failed" if failed is not None else "done"))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.done(failed=exc)

    # --- the line -------------------------------------------------------------------------------

    @property
    def api_calls(self) -> int:
        return self._calls() - self._calls0 if self._calls is not None else self.pages

    def elapsed(self, now: float | None = None) -> float:
        return max(0.0, (self._clock() if now is None else now) - self.started)

    def rate(self, now: float | None = None) -> float:
        """Records per second since the start."""
        seconds = self.elapsed(now)
        return self.records / seconds if seconds > 0 else 0.0

    def line(self, now: float, *, end: str | None = None) -> str:
        head = f"{self.what}: {end}, " if end else f"{self.what}: "
        text = (
            f"{head}{self.pages:,} {self.unit}, {self.records:,} records, {self.rate(now):,.1f} records/s, "
            f"{self.api_calls:,} API calls, {self.elapsed(now):,.0f} s"
        )
        if self.by_kind:
            parts = (f"{k} {p:,} {self.unit} {r:,} records" for k, (p, r) in self.by_kind.items())
            text += " [" + "; ".join(parts) + "]"
        return text

    def _emit(self, text: str) -> None:
        self.lines.append(text)
        self.log.info(text)
