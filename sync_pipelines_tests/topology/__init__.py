"""The production topology as separate processes (``make topology``; marker ``topology``, deselected by ``make test``)."""
