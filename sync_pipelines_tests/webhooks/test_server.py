"""The receiver's server over real sockets: the request-head deadline, keep-alive and the named limits."""

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml

from sync_pipelines.webhooks import __main__ as cli
from sync_pipelines.webhooks.app import create_app
from sync_pipelines.webhooks.server import (
    BACKLOG,
    HEADER_TIMEOUT_SECONDS,
    LIMIT_CONCURRENCY,
    MAX_HEAD_BYTES,
    HeadTimeoutProtocol,
    build_server,
)

TENANT = "school_a"
SECRET = "whsec-server-test-3e91"
ZOHO_CONFIG = {
    "accounts_url": "http://127.0.0.1:9",
    "client_id_env": "X_ID",
    "client_secret_env": "X_SECRET",
    "refresh_token_env": "X_REFRESH",
}
STALLED_HEAD = b"POST /v1/webhooks/zoho/x HTTP/1.1\r\nHost: a\r\n"
HEALTH = b"GET /v1/health HTTP/1.1\r\nHost: a\r\n\r\n"

Start = Callable[..., tuple[uvicorn.Server, int]]


@pytest.fixture
def tenants_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One school whose webhook secret is set."""
    monkeypatch.setenv("SERVER_TEST_WEBHOOK", SECRET)
    path = tmp_path / "tenants.yaml"
    tenant = {"id": TENANT, "zoho": ZOHO_CONFIG, "webhook_secret_env": "SERVER_TEST_WEBHOOK"}
    path.write_text(yaml.safe_dump({"tenants": [tenant]}))
    return path


@pytest.fixture
def start(tenants_file: Path, tmp_path: Path) -> Iterator[Start]:
    """Start the real receiver under :func:`build_server` on a free loopback port: (server, port)."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def _start(*, body_timeout: float = 30.0, **limits: float) -> tuple[uvicorn.Server, int]:
        app = create_app(tenants_file=tenants_file, drop_root=tmp_path / "drop", body_timeout=body_timeout)
        port = _free_port()
        server = build_server(app, "127.0.0.1", port, log_level="warning", **limits)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "the receiver did not start"
        return server, port

    yield _start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes; fails if it is still open after ``within`` s."""
    sock.settimeout(within)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _read_response(sock: socket.socket) -> bytes:
    """One response whose body has a ``content-length``, read off a connection that stays open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536) or pytest.fail(f"closed mid-response: {received!r}")
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail(f"closed mid-body: {received!r}")
    return head + b"\r\n\r\n" + body


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_stalled_heads_are_all_closed_while_a_normal_request_is_answered(start: Start) -> None:
    server, port = start(header_timeout=1.0)
    stalled = [_connect(port) for _ in range(200)]
    started = time.monotonic()
    for sock in stalled:
        sock.sendall(STALLED_HEAD)

    with _connect(port) as client:
        client.sendall(HEALTH)
        health = _read_response(client)
    assert _status(health) == 200, health
    assert time.monotonic() - started < 1.0, "the normal request was not answered during the attack"
    assert b"\r\nserver:" not in health.lower()

    answers: dict[socket.socket, bytes] = {sock: b"" for sock in stalled}
    with selectors.DefaultSelector() as selector:
        for sock in stalled:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while selector.get_map() and time.monotonic() - started < 3.0:
            for key, _ in selector.select(timeout=0.1):
                chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                answers[key.fileobj] += chunk  # type: ignore[index]
                if not chunk:
                    selector.unregister(key.fileobj)
        still_open = len(selector.get_map())
    closed_after = time.monotonic() - started
    for sock in stalled:
        sock.close()

    assert still_open == 0, f"{still_open} stalled connections still open after {closed_after:.1f} s"
    assert closed_after >= 0.9, "closed before the header timeout"
    assert {answer.split(b"\r\n", 1)[0] for answer in answers.values()} == {b"HTTP/1.1 408 Request Timeout"}
    deadline = time.monotonic() + 2
    while server.server_state.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.server_state.connections


def test_a_head_sent_slowly_but_within_the_timeout_is_served(start: Start) -> None:
    _, port = start(header_timeout=2.0)
    with _connect(port) as sock:
        for piece in (b"GET /v1/hea", b"lth HTTP/1.1\r\n", b"Host: a\r\n", b"Accept: */*\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.25)
        assert _status(_read_response(sock)) == 200


def test_trickling_bytes_does_not_move_the_deadline(start: Start) -> None:
    _, port = start(header_timeout=1.0)
    with _connect(port) as sock:
        started = time.monotonic()
        try:
            for byte in STALLED_HEAD:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_until_closed(sock, within=3.0)
        closed_after = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.9 <= closed_after < 2.5


def test_a_fresh_connection_that_sends_nothing_is_closed_quietly(start: Start) -> None:
    _, port = start(header_timeout=1.0, keep_alive_timeout=5.0)
    with _connect(port) as sock:
        started = time.monotonic()
        assert _read_until_closed(sock, within=3.0) == b""
        assert 0.9 <= time.monotonic() - started < 2.5


def test_keep_alive_serves_again_and_closes_an_idle_connection(start: Start) -> None:
    _, port = start(header_timeout=3.0, keep_alive_timeout=1.0)
    with _connect(port) as sock:
        for _ in range(2):
            sock.sendall(HEALTH)
            assert _status(_read_response(sock)) == 200
        idle_since = time.monotonic()
        assert _read_until_closed(sock, within=3.0) == b""
        assert 0.9 <= time.monotonic() - idle_since < 2.5


def test_after_a_response_the_next_head_has_the_deadline_too(start: Start) -> None:
    # uvicorn's own keep-alive timer is cancelled by the first byte of the next request.
    _, port = start(header_timeout=1.0, keep_alive_timeout=5.0)
    with _connect(port) as sock:
        sock.sendall(HEALTH)
        assert _status(_read_response(sock)) == 200
        sock.sendall(STALLED_HEAD)
        sent = time.monotonic()
        assert _read_until_closed(sock, within=3.0).startswith(b"HTTP/1.1 408 ")
        assert 0.9 <= time.monotonic() - sent < 2.5


def test_a_slow_body_is_left_to_the_apps_body_timeout(start: Start) -> None:
    _, port = start(header_timeout=1.0, body_timeout=2.0)
    head = (
        f"POST /v1/webhooks/zoho/{TENANT} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {SECRET}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    with _connect(port) as sock:
        sock.sendall(head.encode() + b'{"event_id"')
        started = time.monotonic()
        answer = _read_response(sock)
        answered_after = time.monotonic() - started
    assert _status(answer) == 408, answer
    assert b"body not received within 2 s" in answer
    assert 1.9 <= answered_after < 3.0, "the head deadline cut the body short"


def test_beyond_limit_concurrency_requests_are_answered_503(start: Start) -> None:
    _, port = start(limit_concurrency=3)
    stalled = [_connect(port) for _ in range(2)]
    try:
        for sock in stalled:
            sock.sendall(STALLED_HEAD)
        time.sleep(0.1)
        with _connect(port) as sock:
            sock.sendall(HEALTH)
            assert _status(_read_until_closed(sock, within=3.0)) == 503
    finally:
        for sock in stalled:
            sock.close()


def test_a_head_larger_than_the_limit_is_refused(start: Start) -> None:
    # h11 counts what it buffers of an unfinished head, so the head is left unfinished here.
    _, port = start(h11_max_incomplete_event_size=1024)
    with _connect(port) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 2048)
        assert _status(_read_until_closed(sock, within=3.0)) == 400


def test_build_server_names_its_limits(tenants_file: Path, tmp_path: Path) -> None:
    app = create_app(tenants_file=tenants_file, drop_root=tmp_path / "drop")
    config = build_server(app, "127.0.0.1", 8780).config
    assert issubclass(config.http, HeadTimeoutProtocol)  # type: ignore[arg-type]
    assert config.http.header_timeout == HEADER_TIMEOUT_SECONDS == 10.0  # type: ignore[union-attr]
    assert config.timeout_keep_alive == 5.0
    assert (config.limit_concurrency, config.h11_max_incomplete_event_size, config.backlog) == (
        LIMIT_CONCURRENCY,
        MAX_HEAD_BYTES,
        BACKLOG,
    )
    assert config.server_header is False
    assert config.ws == "none"
    with pytest.raises(ValueError, match="positive"):
        build_server(app, "127.0.0.1", 8780, header_timeout=0)


def test_the_cli_serves_with_the_header_timeout(
    tenants_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, float]] = []
    monkeypatch.setattr(
        cli, "serve", lambda app, host, port, *, header_timeout: calls.append((host, port, header_timeout))
    )
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(tenants_file))
    monkeypatch.setenv("SYNC_DROP_DIR", str(tmp_path / "drop"))
    assert cli.main(["--port", "9999", "--header-timeout", "2.5"]) == 0
    assert cli.main([]) == 0
    assert calls == [("127.0.0.1", 9999, 2.5), ("127.0.0.1", 8780, HEADER_TIMEOUT_SECONDS)]

    with pytest.raises(SystemExit) as exited:
        cli.main(["--header-timeout", "0"])
    assert exited.value.code == 2

    monkeypatch.setenv("SYNC_TENANTS_FILE", str(tmp_path / "missing.yaml"))
    assert cli.main([]) == 2
    assert len(calls) == 2
