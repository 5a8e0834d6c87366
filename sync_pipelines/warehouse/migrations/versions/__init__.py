"""The revisions, one file each, named by revision id (``0001_baseline.py``, ``0002_….py``)."""
