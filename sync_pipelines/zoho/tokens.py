"""Zoho OAuth access tokens shared by every process of the machine: one refresh per tenant.

What was chosen, and why.

* **Why share across processes.** Dagster runs every run (with the multiprocess executor, every
  step), every sensor tick and every schedule tick in a process of its own, so a token kept in one
  process's memory is refreshed again by all the others. Zoho throttles the token endpoint: "a total
  of 10 access token requests can be made within 10 minutes", and past that "the access token
  creation will be blocked for the rest of the ten minutes", answered ``{"error": "Access Denied"}``
  (Zoho Accounts, "OAuth token limits", zoho.com/accounts/protocol/oauth/token-limits.html, and
  "Refresh access token"; Zoho CRM v8 "Token Validity": 10 access tokens from a refresh token in
  10 minutes). Of eight runs in one minute, each refreshing for itself, two were refused.
* **Where: a file per credential set**, under ``<local_dir()>/zoho_tokens/`` or the folder named by
  ``SYNC_TOKEN_DIR``. A cached access token is itself a secret (whoever holds it reads and writes
  the school's CRM for up to an hour), so the folder is mode 0700, every file 0600, and both belong
  to the user running Dagster; a folder another user owns, or one open to group or others, is
  refused rather than used. **Not in the warehouse**: analysts and BI tools are often given read
  access to the warehouse's tables, and a token in a table would hand them the CRM.
* **Names.** A file is named by the SHA-256 digest of (accounts URL, client id, client secret,
  refresh token): changed credentials never reuse a token, and no secret is ever in a file name.
* **Contents.** JSON: ``access_token``, ``expires_at`` (Unix wall-clock seconds, since processes
  share no monotonic clock), ``obtained_at`` (when it was asked for: the client refreshes a little
  before expiry, by a margin that depends on the token's life), ``api_domain``, ``scopes`` and
  ``throttled_until`` (Unix seconds; until then no process asks the token endpoint again).
* **Concurrency.** A write is atomic: a temporary file created 0600 in the same folder, fsync,
  ``os.replace``, fsync of the folder; a reader sees the old file or the new one, never part of
  one. "Read the file → use the token if valid, else refresh → write" runs under a lock file
  (``filelock``: ``flock`` on Unix, which the kernel releases if the holder dies), so of processes
  finding the token stale at once one refreshes and the others, queued on the lock, read its result.
  Within a process a thread lock per credential set is taken first, as the in-memory cache did.
* **Reach.** One machine, or one filesystem whose locks work across its clients. Runs launched on
  other hosts (a Kubernetes or ECS run launcher) each keep their own file and share nothing.

:class:`TokenCache` keeps the same records in one process's memory, for unit tests.
"""

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import filelock

from sync_pipelines.settings import local_dir

logger = logging.getLogger(__name__)

TOKEN_DIR_ENV = "SYNC_TOKEN_DIR"
#: How long a process waits for another one's refresh (the lock) before giving up. A refresh is
#: one HTTP request with the client's retries on 5xx and dropped connections: minutes at worst.
DEFAULT_LOCK_TIMEOUT = 600.0


def token_dir() -> Path:
    """The token folder: ``SYNC_TOKEN_DIR`` when set, else ``<local_dir()>/zoho_tokens``."""
    value = os.environ.get(TOKEN_DIR_ENV)
    return Path(value).resolve() if value else local_dir() / "zoho_tokens"


def credentials_digest(accounts_url: str, client_id: str, client_secret: str, refresh_token: str) -> str:
    """The SHA-256 hex digest naming one credential set (secrets only ever enter it hashed)."""
    material = json.dumps([accounts_url, client_id, client_secret, refresh_token])
    return hashlib.sha256(material.encode()).hexdigest()


class TokenLockTimeout(TimeoutError):
    """Another process held a credential set's lock longer than the store waits."""


@dataclass(frozen=True)
class TokenRecord:
    """What is known of one credential set's access token; the empty record knows nothing.

    Attributes:
        access_token: the token, or ``None`` (never asked for, or refused by Zoho since).
        expires_at: when it expires, Unix wall-clock seconds.
        obtained_at: when it was asked for, Unix wall-clock seconds.
        api_domain: the API server the token answer named.
        scopes: the scopes the token answer granted.
        throttled_until: Unix seconds before which the token endpoint must not be asked (it
            answered "Access Denied"); 0 when it is not throttled.
    """

    access_token: str | None = field(default=None, repr=False)
    expires_at: float = 0.0
    obtained_at: float = 0.0
    api_domain: str | None = None
    scopes: tuple[str, ...] = ()
    throttled_until: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The record as the token file holds it."""
        return {
            "access_token": self.access_token,
            "expires_at": self.expires_at,
            "obtained_at": self.obtained_at,
            "api_domain": self.api_domain,
            "scopes": list(self.scopes),
            "throttled_until": self.throttled_until,
        }

    @classmethod
    def from_json(cls, data: Any) -> "TokenRecord":
        """The record a token file holds.

        Raises:
            ValueError: ``data`` is not a token record.
        """
        if not isinstance(data, dict):
            raise ValueError("a token record is a JSON object")
        token = data.get("access_token")
        domain = data.get("api_domain")
        scopes = data.get("scopes") or []
        if not isinstance(scopes, list):
            raise ValueError("scopes is a list")
        return cls(
            access_token=str(token) if token else None,
            expires_at=float(data.get("expires_at") or 0.0),
            obtained_at=float(data.get("obtained_at") or 0.0),
            api_domain=str(domain) if domain else None,
            scopes=tuple(str(s) for s in scopes),
            throttled_until=float(data.get("throttled_until") or 0.0),
        )


class HeldSlot(Protocol):
    """One credential set's record, held under its locks (see :meth:`TokenSlot.hold`)."""

    @property
    def record(self) -> TokenRecord:
        """The record as read when the locks were taken, or as last saved."""
        ...

    def save(self, record: TokenRecord) -> None:
        """Replace the record (for every process sharing the store)."""
        ...


class TokenSlot(Protocol):
    """Where one credential set's record lives."""

    def cached(self) -> TokenRecord:
        """The record this process last read or wrote; cheap, takes no lock, may be out of date."""
        ...

    def hold(self) -> AbstractContextManager[HeldSlot]:
        """Take the slot's locks and read the record afresh; the locks are held inside the block.

        Raises:
            TokenLockTimeout: another process held the lock too long.
        """
        ...


class TokenStore(Protocol):
    """Gives every credential set its slot; clients of the same credentials share it."""

    def slot(self, accounts_url: str, client_id: str, client_secret: str, refresh_token: str) -> TokenSlot:
        """The slot of one credential set."""
        ...


class _Held:
    def __init__(self, record: TokenRecord, write: Any) -> None:
        self.record = record
        self._write = write

    def save(self, record: TokenRecord) -> None:
        self._write(record)
        self.record = record


class _MemorySlot:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._record = TokenRecord()

    def cached(self) -> TokenRecord:
        return self._record

    @contextmanager
    def hold(self) -> Iterator[HeldSlot]:
        with self._lock:
            yield _Held(self._record, self._set)

    def _set(self, record: TokenRecord) -> None:
        self._record = record


class TokenCache:
    """Access tokens kept in this process's memory, shared by its clients of the same credentials.

    Enough for unit tests and a single process; Dagster's processes need :class:`FileTokenStore`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, _MemorySlot] = {}

    def slot(self, accounts_url: str, client_id: str, client_secret: str, refresh_token: str) -> _MemorySlot:
        """The slot of one credential set (changed credentials never reuse a token)."""
        key = credentials_digest(accounts_url, client_id, client_secret, refresh_token)
        with self._lock:
            if key not in self._slots:
                self._slots[key] = _MemorySlot()
            return self._slots[key]

    def __repr__(self) -> str:
        return f"TokenCache({len(self._slots)} credential sets)"


def _private_dir(directory: Path) -> None:
    """Create ``directory`` mode 0700, or check that the existing one is this user's and closed."""
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    else:
        os.chmod(directory, 0o700)  # the umask can only take bits away; make it exact
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"the token folder {directory} is not a folder (a symlink?)")
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"the token folder {directory} must belong to this user and be mode 0700 "
            f"(it is {stat.filemode(info.st_mode)}, uid {info.st_uid}); run chmod 700 on it, or "
            f"point {TOKEN_DIR_ENV} at a folder of its own"
        )


def _read(path: Path) -> TokenRecord:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return TokenRecord()
    try:
        return TokenRecord.from_json(json.loads(text))
    except (ValueError, TypeError):
        # Writes are atomic, so this is a file someone else wrote: a refresh replaces it.
        logger.warning("token file %s is not a token record; treated as empty", path.name)
        return TokenRecord()


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    # mkstemp creates the file 0600 (O_EXCL, "readable and writable only by the creating user"),
    # so the token is never readable by others, not even for an instant.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)  # the rename itself survives a crash
    finally:
        os.close(folder)


class _FileSlot:
    def __init__(self, directory: Path, digest: str, lock_timeout: float) -> None:
        self.directory = directory
        self.path = directory / f"{digest}.json"
        self._thread_lock = threading.Lock()
        self._file_lock = filelock.FileLock(directory / f"{digest}.lock", timeout=lock_timeout, mode=0o600)
        self._lock_timeout = lock_timeout
        self._record = TokenRecord()

    def cached(self) -> TokenRecord:
        return self._record

    @contextmanager
    def hold(self) -> Iterator[HeldSlot]:
        with self._thread_lock:
            _private_dir(self.directory)
            try:
                self._file_lock.acquire()
            except filelock.Timeout:
                raise TokenLockTimeout(
                    f"another process held the token lock for over {self._lock_timeout:.0f}s"
                ) from None
            try:
                self._record = _read(self.path)
                yield _Held(self._record, self._write)
            finally:
                self._file_lock.release()

    def _write(self, record: TokenRecord) -> None:
        _write_atomic(self.path, record.to_json())
        self._record = record

    def __repr__(self) -> str:
        return f"_FileSlot({self.path.name})"


class FileTokenStore:
    """Access tokens in files, shared by every process of the machine (see the module docstring).

    Args:
        directory: the token folder; ``None`` (the default) resolves :func:`token_dir` whenever a
            slot is made, so ``SYNC_TOKEN_DIR`` and ``SYNC_LOCAL_DIR`` set later still count.
        lock_timeout: seconds to wait for another process's refresh before giving up.
    """

    def __init__(
        self, directory: str | Path | None = None, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> None:
        self._directory = Path(directory).resolve() if directory is not None else None
        self._lock_timeout = lock_timeout
        self._lock = threading.Lock()
        self._slots: dict[tuple[Path, str], _FileSlot] = {}

    @property
    def directory(self) -> Path:
        """The token folder in use now."""
        return self._directory if self._directory is not None else token_dir()

    def path(self, accounts_url: str, client_id: str, client_secret: str, refresh_token: str) -> Path:
        """The file of one credential set (it may not exist yet)."""
        digest = credentials_digest(accounts_url, client_id, client_secret, refresh_token)
        return self.directory / f"{digest}.json"

    def slot(self, accounts_url: str, client_id: str, client_secret: str, refresh_token: str) -> _FileSlot:
        """The slot of one credential set; clients of this store in this process share it."""
        directory = self.directory
        key = (directory, credentials_digest(accounts_url, client_id, client_secret, refresh_token))
        with self._lock:
            if key not in self._slots:
                self._slots[key] = _FileSlot(directory, key[1], self._lock_timeout)
            return self._slots[key]

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.directory)!r})"


__all__ = [
    "TOKEN_DIR_ENV",
    "FileTokenStore",
    "HeldSlot",
    "TokenCache",
    "TokenLockTimeout",
    "TokenRecord",
    "TokenSlot",
    "TokenStore",
    "credentials_digest",
    "token_dir",
]
