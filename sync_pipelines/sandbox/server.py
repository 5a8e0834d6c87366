"""The loopback HTTP server both simulators run on: start, stop, context manager, base URL."""

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

logger = logging.getLogger(__name__)


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive client threads must not block stop()
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], simulator: object
    ) -> None:
        super().__init__(address, handler)
        self.simulator = simulator  # handlers reach their simulator as self.server.simulator

    def get_request(self) -> tuple[socket.socket, object]:
        conn, address = super().get_request()
        # The handler writes the status and headers, then the body, in two sends. With Nagle's
        # algorithm on, the body waits for the client to acknowledge the headers, and a keep-alive
        # client delays that acknowledgement by up to 40 ms: 40 ms a call that no real web
        # server (nginx, Apache) adds. Send at once instead.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address


class LoopbackServer:
    """A simulator served by a threading HTTP server in a daemon thread.

    Subclasses name their request handler in :meth:`handler_class`; the handler finds the
    simulator as ``self.server.simulator``.
    """

    thread_name = "simulator"

    def __init__(self) -> None:
        self._server: SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port) in a background thread; returns the base URL."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._server = SimulatorHTTPServer((host, port), self.handler_class(), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        logger.info("%s listening on %s", type(self).__name__, self.base_url)
        return self.base_url

    def stop(self) -> None:
        """Stop serving and close the socket; a stopped simulator may be started again."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not running: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"
