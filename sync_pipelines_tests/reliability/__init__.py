"""Reliability: faults, crashes, hostile input, secrets, tenant isolation (long variants: make reliability)."""
