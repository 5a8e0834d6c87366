"""The webhook receiver and its drop files.

The receiver (:mod:`sync_pipelines.webhooks.app`, run with ``python -m sync_pipelines.webhooks``)
authenticates webhook POSTs from Zoho and Moodle and writes each event as a drop file
(:mod:`sync_pipelines.webhooks.drop`); the sensors read the drop files. Only the drop-file API and
the signing helpers are re-exported here, so a sensor importing this package does not load Starlette.
"""

from sync_pipelines.webhooks.drop import (
    DropEvent,
    DropFileError,
    DropSource,
    dead_letter,
    dead_letters,
    drop_dir,
    move_processed,
    pending_files,
    quarantine,
    read_event,
    resolve,
    write_event,
)
from sync_pipelines.webhooks.signing import SignatureError, sign, verify

__all__ = [
    "DropEvent",
    "DropFileError",
    "DropSource",
    "SignatureError",
    "dead_letter",
    "dead_letters",
    "drop_dir",
    "move_processed",
    "pending_files",
    "quarantine",
    "read_event",
    "resolve",
    "sign",
    "verify",
    "write_event",
]
