"""Helpers of ``benchmarks/capacity_bench.py``: the simulator host, /proc accounting, the parse counter."""
