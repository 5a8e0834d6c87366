"""The production topology as separate processes (``make topology``; skipped unless SYNC_TOPOLOGY=1)."""
