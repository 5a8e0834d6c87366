"""Authenticating webhook deliveries: an HMAC-SHA256 signature with a replay window, or a bearer token.

The sender signs ``f"{timestamp}.".encode() + raw_body`` with the tenant's webhook secret and sends

.. code-block:: text

    X-Sync-Timestamp: 1769337000
    X-Sync-Signature: sha256=<hex HMAC-SHA256>

The receiver recomputes the HMAC over the bytes it received and compares in constant time. Binding
the timestamp into the signed bytes and refusing timestamps more than :data:`TOLERANCE_SECONDS` away
from its own clock makes a captured delivery useless after five minutes (as Stripe does). In PHP::

    $sig = 'sha256=' . hash_hmac('sha256', $timestamp . '.' . $body, $secret);

Zoho workflow webhooks cannot compute a signature, so Zoho routes also accept
``Authorization: Bearer <secret>`` (see :func:`check_bearer`). Nothing here logs or echoes a secret or
a signature: error messages say what was wrong, never with which value.
"""

import hashlib
import hmac
import re

TIMESTAMP_HEADER = "X-Sync-Timestamp"
SIGNATURE_HEADER = "X-Sync-Signature"
SCHEME = "sha256"
#: How far (in seconds, either way) a delivery's timestamp may be from the receiver's clock.
TOLERANCE_SECONDS = 300

_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")


class SignatureError(ValueError):
    """A delivery's timestamp, signature or token does not check out; the message says why."""


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Sync-Signature`` value for ``body`` sent at ``timestamp``.

    Args:
        secret: the tenant's webhook secret.
        body: the raw request body, exactly as sent.
        timestamp: Unix seconds, the value of ``X-Sync-Timestamp``.

    Returns:
        ``"sha256=<lowercase hex>"``.
    """
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def sign(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The two headers that authenticate ``body``.

    Args:
        secret: the tenant's webhook secret.
        body: the raw request body, exactly as it will be sent.
        timestamp: Unix seconds (normally ``int(time.time())``).

    Returns:
        ``{"X-Sync-Timestamp": …, "X-Sync-Signature": "sha256=…"}``.
    """
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, body, timestamp)}


def check_timestamp(value: str | None, *, now: float, tolerance: int = TOLERANCE_SECONDS) -> int:
    """Parse an ``X-Sync-Timestamp`` value and check it lies inside the replay window.

    Args:
        value: the header value (``None`` when absent).
        now: the receiver's clock, Unix seconds.
        tolerance: allowed distance from ``now`` in seconds, either way.

    Returns:
        The timestamp as an int.

    Raises:
        SignatureError: missing, not a plain integer, or outside the window.
    """
    if value is None:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    value = value.strip()
    if not _TIMESTAMP.match(value):
        raise SignatureError(f"{TIMESTAMP_HEADER} is not Unix seconds")
    timestamp = int(value)
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"{TIMESTAMP_HEADER} is more than {tolerance} s from the receiver's clock")
    return timestamp


def verify(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature_header: str | None,
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> int:
    """Check a signed delivery: timestamp inside the window, signature over timestamp and body.

    Args:
        secret: the tenant's webhook secret.
        body: the raw request body, exactly as received.
        timestamp: the ``X-Sync-Timestamp`` header value.
        signature_header: the ``X-Sync-Signature`` header value.
        now: the receiver's clock, Unix seconds.
        tolerance: the replay window in seconds, either way.

    Returns:
        The verified timestamp.

    Raises:
        SignatureError: anything missing, malformed, stale or not matching.
    """
    ts = check_timestamp(timestamp, now=now, tolerance=tolerance)
    if not signature_header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    match = _SIGNATURE.match(signature_header.strip())
    if match is None:
        raise SignatureError(f"{SIGNATURE_HEADER} is not 'sha256=<64 hex digits>'")
    expected = signature(secret, body, ts).removeprefix(f"{SCHEME}=")
    if not hmac.compare_digest(expected.encode("ascii"), match.group(1).lower().encode("ascii")):
        raise SignatureError("signature does not match")
    return ts


def check_bearer(secret: str, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <secret>`` (compared in constant time).

    Args:
        secret: the tenant's webhook secret.
        authorization: the header value (``None`` when absent).

    Returns:
        ``True`` only for the exact secret.
    """
    if not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(secret.encode("utf-8"), token.strip().encode("utf-8"))
