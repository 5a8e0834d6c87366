"""Serving the receiver on the internet: uvicorn with a request-head deadline and named limits.

The app times out slow *bodies* itself (:data:`~sync_pipelines.webhooks.app.BODY_TIMEOUT_SECONDS`), but
an ASGI app only runs once the request head (request line + headers) is complete, so a client that
stalls inside its headers (slow-loris) is the server's to cut off. uvicorn has no such timeout:
``timeout_keep_alive`` is armed only after a response and is cancelled by the first byte received,
so neither a fresh connection nor one that sends half a head after a response is ever closed
(uvicorn issue #157 lists ``--timeout-request-start`` as never done).

What was looked at, and why this module is what it is:

* **granian** (2.8) has a native ``HTTP1Settings.header_read_timeout``. Moving to it would mean a
  compiled dependency, a different process model (the app given as an import string, Rust workers)
  and losing uvicorn's ``limit_concurrency`` 503s; too much for one timeout.
* **hypercorn** (0.18) has ``read_timeout``, but that is a timeout per read: a client trickling one
  byte every few seconds holds the connection for ever. It is not a head deadline.
* **uvicorn** (installed, 0.55) lets ``Config(http=...)`` take a protocol class. So this module keeps
  uvicorn and adds the deadline with a small subclass of its ``H11Protocol``
  (:class:`HeadTimeoutProtocol`): a timer armed on ``connection_made`` and after each response,
  cancelled when the head is complete (other projects answered the same uvicorn report this way).
  h11 rather than httptools because only h11 bounds the head's size
  (``h11_max_incomplete_event_size``); httptools accepted a 2 MB header when tried.

Limits (the first five are keywords of :func:`build_server` and :func:`serve`, the last two fixed):

==================================  =============================================================
``header_timeout``                  seconds from connecting, or from the previous response, to a
                                    complete request head; then 408 (if any of it came) and close
``keep_alive_timeout``              seconds an idle keep-alive connection is kept
``limit_concurrency``               connections or requests at once; beyond it uvicorn answers 503
``h11_max_incomplete_event_size``   bytes of an unfinished request head held; beyond it 400, close
``backlog``                         connections the kernel queues before ``accept``
``server_header=False``             no ``server: uvicorn`` in answers
``ws="none"``                       the receiver speaks no WebSocket
==================================  =============================================================
"""

import asyncio
import logging
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

#: A client has this long to send its request line and headers (nginx's and Go's usual 10 s order).
HEADER_TIMEOUT_SECONDS = 10.0
#: An idle keep-alive connection is closed after this long (uvicorn's default).
KEEP_ALIVE_TIMEOUT_SECONDS = 5.0
#: Connections (stalled ones included) or running requests at once before new requests get a 503;
#: stays under the usual 1024 open-file soft limit, with room for drop files and logs.
LIMIT_CONCURRENCY = 500
#: Bytes of an unfinished request head that h11 holds (its own default); webhook heads are well under
#: 2 KiB. A head that arrives whole in one read is parsed whatever its size, so the bound is this or
#: one read of the event loop, whichever is larger.
MAX_HEAD_BYTES = 16 * 1024
#: The listen queue (nginx's default on Linux); the kernel caps it at ``net.core.somaxconn``.
BACKLOG = 511

_TIMEOUT_BODY = b"request head not received in time"
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not complete a request head in time.

    The deadline is armed when the connection is made and again after each response that leaves the
    connection open, and is disarmed when a request head is complete (uvicorn then starts a new
    request cycle). It is an absolute deadline, not an idle one: bytes that trickle in do not move
    it. On expiry the client gets a 408 if it had sent part of a head, and the connection is closed.
    Bodies are not covered: the app times those out itself.

    Attributes:
        header_timeout: the deadline in seconds; :func:`build_server` sets it on a subclass.
    """

    header_timeout: float = HEADER_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        #: The request cycle current when the deadline was armed; a new one means a complete head.
        self._cycle_at_arming: object | None = None
        self._head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is not None and data:
            self._head_started = True
        super().data_received(data)
        self._disarm_if_head_complete()

    def on_response_complete(self) -> None:
        before = self.cycle
        super().on_response_complete()
        # A pipelined head already buffered starts its cycle inside the call above: nothing to wait for.
        if self.cycle is before and not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._cycle_at_arming = self.cycle
        self._head_started = False
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _disarm_if_head_complete(self) -> None:
        if self._head_deadline is not None and self.cycle is not self._cycle_at_arming:
            self._disarm_head_deadline()

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        client = "{}:{}".format(*self.client) if self.client else "a client"
        logger.info("closed %s: no complete request head after %g s", client, self.header_timeout)
        # A client that never started a head is treated like an idle keep-alive one: closed quietly.
        if self._head_started:
            self.transport.write(_TIMEOUT_ANSWER)
        self.transport.close()


def build_server(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT_SECONDS,
    limit_concurrency: int = LIMIT_CONCURRENCY,
    h11_max_incomplete_event_size: int = MAX_HEAD_BYTES,
    backlog: int = BACKLOG,
    log_level: str = "info",
) -> uvicorn.Server:
    """The uvicorn server for ``app``, with the head deadline and the limits of this module.

    Args:
        app: the ASGI app (the receiver from :func:`~sync_pipelines.webhooks.app.create_app`).
        host: interface to bind.
        port: TCP port.
        header_timeout: seconds a connection has to deliver a complete request head, from
            connecting or from the previous response.
        keep_alive_timeout: seconds an idle keep-alive connection is kept.
        limit_concurrency: connections or requests at once before new requests are answered 503.
        h11_max_incomplete_event_size: largest request head in bytes (larger ones get a 400).
        backlog: the listen queue length.
        log_level: uvicorn's log level.

    Returns:
        A server not yet started: call ``run()`` (blocking) or ``await serve()``.

    Raises:
        ValueError: if a timeout or limit is not positive.
    """
    if header_timeout <= 0 or keep_alive_timeout <= 0:
        raise ValueError("header_timeout and keep_alive_timeout must be positive")
    if min(limit_concurrency, h11_max_incomplete_event_size, backlog) <= 0:
        raise ValueError("limit_concurrency, h11_max_incomplete_event_size and backlog must be positive")
    protocol = type(HeadTimeoutProtocol.__name__, (HeadTimeoutProtocol,), {"header_timeout": header_timeout})
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        ws="none",
        timeout_keep_alive=keep_alive_timeout,  # typed int, but only ever given to call_later
        limit_concurrency=limit_concurrency,
        h11_max_incomplete_event_size=h11_max_incomplete_event_size,
        backlog=backlog,
        server_header=False,
        log_level=log_level,
    )
    return uvicorn.Server(config)


def serve(app: ASGIApp, host: str, port: int, **settings: Any) -> None:
    """Serve ``app`` in the foreground until SIGINT or SIGTERM; ``settings`` are :func:`build_server`'s
    keyword arguments (``header_timeout``, ``keep_alive_timeout``, ``limit_concurrency``...).

    Raises:
        ValueError: if a timeout or limit is not positive.
    """
    build_server(app, host, port, **settings).run()
