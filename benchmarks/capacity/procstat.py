"""CPU and memory of process trees from /proc (psutil is not installed), sampled in a thread.

Accounting is exact for processes that die inside the window: a process's ``utime+stime`` moves,
when its parent reaps it, into the parent's ``cutime+cstime``. So the CPU a tree has used so far,
while its root lives, is the sum over its live processes of their own time plus the time of the
children they have reaped, whatever was born or died meanwhile. :class:`Sampler` says how the
daemon's tree is split into daemon, code servers and runs.
"""

import itertools
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str
    own: float  # utime + stime, s
    reaped: float  # cutime + cstime, s
    start: float  # seconds since boot
    rss: int  # bytes


def read_proc(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode("utf-8", "replace")
    except OSError:
        return None
    close = raw.rfind(")")
    comm = raw[raw.find("(") + 1 : close]
    f = raw[close + 2 :].split()
    # f[0] is field 3 (state): field n is f[n - 3]
    return Proc(
        pid=pid,
        ppid=int(f[1]),
        comm=comm,
        own=(int(f[11]) + int(f[12])) / TICK,
        reaped=(int(f[13]) + int(f[14])) / TICK,
        start=int(f[19]) / TICK,
        rss=int(f[21]) * PAGE,
    )


def all_procs() -> dict[int, Proc]:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (p := read_proc(int(entry))) is not None:
            procs[p.pid] = p
    return procs


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split among their users), 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def descendants(procs: dict[int, Proc], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def postmaster_pid() -> int | None:
    for path in Path("/var/run/postgresql").glob("*.pid"):
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


@dataclass
class Snapshot:
    at: float  # time.time()
    cpu: dict[str, float]  # category -> CPU-s since the sampler started (see Sampler)
    rss: dict[str, int]  # category -> bytes (RSS; postgres: PSS) at this instant


@dataclass
class RunProc:
    pid: int
    run_id: str | None
    start_epoch: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (epoch, own + reaped CPU-s)
    peak_rss: int = 0


@dataclass
class _Seen:
    cat: str
    own: float = 0.0
    reaped: float = 0.0
    alive: bool = True


YOUNG_S = 3.0
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Sampler:
    """Samples the daemon's tree, PostgreSQL, PgBouncer and the simulators every ``interval`` s.

    Each group (the daemon, the postmaster, PgBouncer, each simulator host) lives through the
    measurement, so its CPU so far is exact: its live processes' own time plus the time of the
    children they reaped. Inside the daemon's tree the split needs more care, because the daemon
    replaces its code server every 60 s (Dagster's ``RELOAD_WORKSPACE_INTERVAL``: a new
    ``dagster api grpc`` process that imports the definitions again; the old one leaves once its
    runs have ended) and the runs are children of the code server that launched them:

    * ``daemon``: the ``dagster-daemon`` process's own time;
    * ``code_server``: every code server's own time (live, or as last seen), and its
      multiprocessing resource tracker;
    * ``run``: every run worker (the code server's multiprocessing child) and its children (two
      ``tail -F`` and two ``watch_orphans.py`` per run: the compute-log capture), live, plus
      everything each code server has reaped (as last seen);
    * ``daemon_other``: the rest of the tree's exact total (sampling lag at a code server's exit,
      anything else the daemon starts).
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.daemon_pid: int | None = None
        self.pgbouncer_pid: int | None = None
        self.sim_pids: list[int] = []
        self.postmaster = postmaster_pid()
        self.runs: dict[tuple[int, float], RunProc] = {}
        self.peak_rss: dict[str, int] = {}
        self._seen: dict[tuple[int, float], _Seen] = {}
        self._cmd: dict[tuple[int, float], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._boot = time.time() - uptime()
        self._pss_every = 4
        self._n = 0
        self._last_pg_pss = 0

    def _cmdline(self, p: Proc) -> str:
        key = (p.pid, p.start)
        if key not in self._cmd:
            self._cmd[key] = cmdline(p.pid)
        return self._cmd[key]

    def _daemon_tree(self, procs: dict[int, Proc], now: float) -> tuple[dict[str, float], dict[str, int]]:
        cpu = dict.fromkeys(("daemon", "code_server", "run", "daemon_other"), 0.0)
        rss = dict.fromkeys(cpu, 0)
        if not self.daemon_pid or self.daemon_pid not in procs:
            # After the daemon is gone nothing more is counted: keep the last figures.
            for seen in self._seen.values():
                seen.alive = False
            return cpu, rss
        tree = descendants(procs, self.daemon_pid)
        for seen in self._seen.values():
            seen.alive = False
        total = 0.0
        boot_now = uptime()
        for pid in tree:
            p = procs[pid]
            key = (pid, p.start)
            total += p.own + p.reaped
            seen = self._seen.get(key)
            # A process just forked shows its parent's command line until it execs: decide again
            # while it is young.
            young = boot_now - p.start < YOUNG_S
            if seen is None or young:
                cmd = cmdline(p.pid) if young else self._cmdline(p)
                parent = procs.get(p.ppid)
                parent_seen = self._seen.get((p.ppid, parent.start)) if parent else None
                if pid == self.daemon_pid:
                    cat = "daemon"
                elif p.ppid == self.daemon_pid:
                    cat = "code_server" if " api grpc" in cmd or " code-server" in cmd else "daemon_other"
                elif parent_seen is not None and parent_seen.cat == "code_server":
                    cat = "code_server" if "resource_tracker" in cmd else "run"
                elif parent_seen is not None and parent_seen.cat == "run":
                    cat = "run"
                else:
                    cat = "daemon_other"
                if seen is None:
                    seen = self._seen[key] = _Seen(cat)
                seen.cat = cat
                if not young:
                    self._cmd[key] = cmd
                is_worker = cat == "run" and parent_seen is not None and parent_seen.cat == "code_server"
                if is_worker and key not in self.runs:
                    self.runs[key] = RunProc(pid, None, self._boot + p.start)
                elif not is_worker:
                    self.runs.pop(key, None)
                run = self.runs.get((p.ppid, parent.start)) if cat == "run" and parent else None
                if run is not None and not run.run_id and (m := UUID.search(cmd)):
                    run.run_id = m.group(0)
            seen.own, seen.reaped, seen.alive = p.own, p.reaped, True
            rss[seen.cat] += p.rss
            if (run := self.runs.get(key)) is not None:
                run.samples.append((now, p.own + p.reaped))
                run.peak_rss = max(run.peak_rss, p.rss)
        for seen in self._seen.values():
            if seen.cat == "daemon":
                cpu["daemon"] += seen.own if seen.alive else 0.0
            elif seen.cat == "code_server":
                cpu["code_server"] += seen.own
                cpu["run"] += seen.reaped
            elif seen.cat == "run" and seen.alive:
                cpu["run"] += seen.own + seen.reaped
        cpu["daemon_other"] = total - cpu["daemon"] - cpu["code_server"] - cpu["run"]
        return cpu, rss

    def snapshot(self, *, with_pss: bool = True) -> Snapshot:
        with self._lock:
            now = time.time()
            procs = all_procs()
            cpu, rss = self._daemon_tree(procs, now)
            groups = {
                "postgres": [self.postmaster],
                "pgbouncer": [self.pgbouncer_pid],
                "simulators": self.sim_pids,
            }
            pg_pids: list[int] = []
            for cat, roots in groups.items():
                cpu[cat] = 0.0
                rss.setdefault(cat, 0)
                for root in roots:
                    if root and root in procs:
                        for pid in descendants(procs, root):
                            cpu[cat] += procs[pid].own + procs[pid].reaped
                            if cat == "postgres":
                                pg_pids.append(pid)
                            else:
                                rss[cat] += procs[pid].rss
            if with_pss:
                self._last_pg_pss = sum(pss(pid) for pid in pg_pids)
            rss["postgres"] = self._last_pg_pss
            return Snapshot(now, cpu, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._n += 1
            try:
                snap = self.snapshot(with_pss=self._n % self._pss_every == 0)
            except Exception:
                continue
            with self._lock:
                for cat, value in snap.rss.items():
                    self.peak_rss[cat] = max(self.peak_rss.get(cat, 0), value)
                tree = sum(snap.rss.get(c, 0) for c in ("daemon", "code_server", "run", "daemon_other"))
                self.peak_rss["dagster_total"] = max(self.peak_rss.get("dagster_total", 0), tree)
                everything = tree + snap.rss.get("postgres", 0) + snap.rss.get("pgbouncer", 0)
                self.peak_rss["all_measured"] = max(self.peak_rss.get("all_measured", 0), everything)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="capacity-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def reset_peaks(self) -> dict[str, int]:
        with self._lock:
            peaks, self.peak_rss = self.peak_rss, {}
        return peaks

    def code_servers_seen(self) -> int:
        with self._lock:
            return sum(1 for cmd in self._cmd.values() if " api grpc" in cmd)


def delta(a: Snapshot, b: Snapshot) -> dict[str, float]:
    return {k: round(b.cpu.get(k, 0.0) - a.cpu.get(k, 0.0), 3) for k in sorted(set(a.cpu) | set(b.cpu))}


def cpu_at(samples: list[tuple[float, float]], when: float) -> float | None:
    """CPU-s of a process at ``when``, interpolated between its samples (None if not covered)."""
    if not samples or when < samples[0][0]:
        return None
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            return c0 + (c1 - c0) * ((when - t0) / (t1 - t0) if t1 > t0 else 0)
    return samples[-1][1]
