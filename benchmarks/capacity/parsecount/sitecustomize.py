"""Counts how often a process reads and parses the tenants file (variant b of capacity_bench).

Put this folder on ``PYTHONPATH`` with ``CAPACITY_PARSE_DIR`` set: every Python process then wraps
``sync_pipelines.tenants.read_tenants`` (calls) and the function behind ``_parse_text``'s
``lru_cache`` (real parses: YAML and the checks), once the module is imported, without changing the
code, and after each call (a run worker may leave by os._exit) writes ``<pid>.json`` to ``CAPACITY_PARSE_DIR``: its command line, the calls,
the parses and the CPU-s they took.
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys
import time

_OUT = os.environ.get("CAPACITY_PARSE_DIR")
_STATS = {"read_tenants": 0, "parses": 0, "parse_cpu_s": 0.0, "read_cpu_s": 0.0}


def _patch(module) -> None:
    import functools

    original_read = module.read_tenants
    inner = module._parse_text.__wrapped__

    def counted_parse(text, source):
        t = time.process_time()
        try:
            return inner(text, source)
        finally:
            _STATS["parses"] += 1
            _STATS["parse_cpu_s"] += time.process_time() - t
            _dump()

    module._parse_text = functools.lru_cache(maxsize=32)(counted_parse)

    def counted_read(*args, **kwargs):
        t = time.process_time()
        try:
            return original_read(*args, **kwargs)
        finally:
            _STATS["read_tenants"] += 1
            _STATS["read_cpu_s"] += time.process_time() - t
            _dump()

    functools.update_wrapper(counted_read, original_read)
    module.read_tenants = counted_read
    # Modules that imported the name before us keep the original: patch them as they appear.
    for name, other in list(sys.modules.items()):
        if name.startswith("sync_pipelines") and getattr(other, "read_tenants", None) is original_read:
            other.read_tenants = counted_read
    _PENDING.append((original_read, counted_read))


_PENDING: list = []


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("sync_pipelines"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module):
            exec_module(module)
            if fullname == "sync_pipelines.tenants":
                _patch(module)
            else:
                for original, counted in _PENDING:
                    if getattr(module, "read_tenants", None) is original:
                        module.read_tenants = counted

        loader.exec_module = patched
        return spec


def _dump() -> None:
    if _STATS["read_tenants"] or _STATS["parses"]:
        path = os.path.join(_OUT, f"{os.getpid()}.json")
        # The real command line: a multiprocessing child (a run worker) inherits its parent's sys.argv.
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        with open(path, "w") as f:
            json.dump({"argv": argv[:300], **_STATS}, f)


if _OUT:
    sys.meta_path.insert(0, _Finder())
