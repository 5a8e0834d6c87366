"""Webhook security, against the running receiver (uvicorn on a free loopback port).

Each attack is sent over a real socket, byte for byte: forged signatures, another school's secret,
replays outside the signed-timestamp window, a replay inside it (accepted, never written twice),
oversized bodies (declared and chunked), slow bodies, missing and unknown tenants, a bearer token
where only a signature will do. Every one must be refused with nothing written (the files under the
drop root are counted before and after), and nothing the receiver logs at any level, nor any answer
it sends, may hold a secret, a signature or a bearer token.

The outcome of each attack goes to ``.local/reliability/webhook_security.json``.
"""

import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from sync_pipelines.webhooks.app import MAX_BODY_BYTES, create_app
from sync_pipelines.webhooks.signing import sign

FIGURES_FILE = Path(__file__).resolve().parents[2] / ".local" / "reliability" / "webhook_security.json"
SECRETS = {"school_a": "whsec-a-0f9e8d7c6b5a4f3e", "school_b": "whsec-b-1a2b3c4d5e6f7a8b"}
BODY_TIMEOUT = 1.0
GRADED = {
    "eventname": "\\core\\event\\user_graded",
    "objectid": "1187",
    "contextinstanceid": "12",
    "userid": "2",
    "courseid": "12",
    "relateduserid": "57",
    "other": {"itemid": "341", "overridden": False, "finalgrade": "87.50000"},
    "timecreated": 1769337000,
    "grade_item": {"id": 341, "itemtype": "mod", "itemmodule": "assign", "grademax": "100.00000"},
}
ZOHO = {"module": "BTEC_Students", "event_type": "updated", "record_id": "5843017000000123456"}


# --- the receiver, its log, its drop root ---------------------------------------------------------


class Capture(logging.Handler):
    """Every log record, formatted with its traceback, from every logger (DEBUG and up)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record as the receiver's operator would read it."""
        self.lines.append(self.format(record))


@dataclass
class Receiver:
    """The running receiver and what the attacks left: log lines, answers, secrets sent."""

    port: int
    root: Path
    log: Capture
    clock_shift: list[float]
    answers: list[bytes] = field(default_factory=list)
    #: a genuine delivery (body, headers) that an attack replays
    kept: tuple[bytes, dict[str, str]] = (b"", {})
    #: every secret, signature and token any attack put on the wire
    sensitive: set[str] = field(default_factory=lambda: set(SECRETS.values()))

    def now(self) -> int:
        """The receiver's clock (shifted by the attacks that replay later)."""
        return int(time.time() + self.clock_shift[0])


RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """The receiver under uvicorn in a thread, its own and uvicorn's loggers at DEBUG into a capture."""
    base = tmp_path_factory.mktemp("security")
    zoho = {
        "accounts_url": "http://127.0.0.1:9",
        "client_id_env": "A",
        "client_secret_env": "B",
        "refresh_token_env": "C",
    }
    tenants = [
        *({"id": t, "zoho": zoho, "webhook_secret_env": f"SEC_{t.upper()}"} for t in SECRETS),
        {"id": "no_secret", "zoho": zoho},
        {"id": "unset_secret", "zoho": zoho, "webhook_secret_env": "SEC_UNSET_NEVER_SET"},
    ]
    (base / "tenants.yaml").write_text(yaml.safe_dump({"tenants": tenants}))
    mp = pytest.MonkeyPatch()
    for tenant, secret in SECRETS.items():
        mp.setenv(f"SEC_{tenant.upper()}", secret)
    mp.delenv("SEC_UNSET_NEVER_SET", raising=False)
    capture = Capture()
    loggers = [
        logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "sync_pipelines")
    ]
    saved = [(lg.level, lg.propagate, lg.disabled) for lg in loggers]
    for lg in loggers:  # whatever an earlier uvicorn configured: everything reaches the capture
        lg.setLevel(logging.DEBUG)
        lg.propagate, lg.disabled = True, False
    logging.getLogger().addHandler(capture)
    shift = [0.0]
    root = base / "drop"
    app = create_app(
        tenants_file=base / "tenants.yaml",
        drop_root=root,
        body_timeout=BODY_TIMEOUT,
        clock=lambda: time.time() + shift[0],
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, log_level="debug", access_log=True, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield Receiver(sock.getsockname()[1], root, capture, shift)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        logging.getLogger().removeHandler(capture)
        for lg, (level, propagate, disabled) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        mp.undo()
        FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
        attacks = dict(sorted(RESULTS.items()))
        summary = {
            "attacks": len(attacks),
            "refused_as_expected": sum(r["as_expected"] for r in attacks.values()),
            "files_written": sum(r["files_written"] for r in attacks.values()),
            "secrets_in_logs": sum(r["secrets_in_logs"] for r in attacks.values()),
        }
        FIGURES_FILE.write_text(json.dumps({"summary": summary, "attacks": attacks}, indent=2) + "\n")


def files_under(root: Path) -> set[Path]:
    """Every file under the drop root, the duplicate index's markers and temporary files included."""
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# --- a raw HTTP/1.1 client ------------------------------------------------------------------------


@dataclass
class Answer:
    """What the receiver answered, and how long it took."""

    status: int
    body: bytes
    seconds: float

    def json(self) -> dict[str, Any]:
        """The JSON body."""
        return json.loads(self.body)


def exchange(
    rx: Receiver,
    path: str,
    headers: dict[str, str],
    pieces: list[bytes],
    *,
    chunked: bool = False,
    length: int | None = None,
    stall: bool = False,
) -> Answer:
    """Send a request piece by piece over one socket and read the answer.

    Args:
        rx: the receiver.
        path: the request target.
        headers: request headers (``Host`` and ``Connection: close`` are added).
        pieces: the body, in the pieces it is written in.
        chunked: send ``Transfer-Encoding: chunked`` (each piece one chunk) instead of a length.
        length: the ``Content-Length`` to declare (default: the body's length).
        stall: after the pieces, send nothing more and keep the connection open (a slow client).
    """
    for name, value in headers.items():
        if name.lower() == "authorization":
            rx.sensitive.add(value.partition(" ")[2])
        if name.lower() == "x-sync-signature":
            rx.sensitive.add(value.removeprefix("sha256="))
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length if length is not None else sum(map(len, pieces))}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", rx.port), timeout=15) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        with suppress(BrokenPipeError, ConnectionResetError):  # it may answer before taking it all
            for piece in pieces:
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked and not stall:
                conn.sendall(b"0\r\n\r\n")
        data = b""
        with suppress(ConnectionResetError):  # the answer came before the reset; it is what counts
            while chunk := conn.recv(65536):
                data += chunk
    seconds = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), f"no answer: {data[:200]!r}"
    rx.answers.append(data)
    return Answer(int(head.split()[1]), body, seconds)


def signed(rx: Receiver, secret: str, body: bytes, *, at: int | None = None) -> dict[str, str]:
    """JSON headers with the signature of ``body`` at ``at`` (the receiver's now by default)."""
    return {"Content-Type": "application/json", **sign(secret, body, rx.now() if at is None else at)}


def post(rx: Receiver, path: str, body: bytes, headers: dict[str, str]) -> Answer:
    """One ordinary POST of ``body``."""
    return exchange(rx, path, headers, [body])


def event(n: str) -> bytes:
    """A user_graded event, unique by ``n``."""
    return json.dumps({**GRADED, "event_id": f"sec-{n}"}).encode()


# --- the attacks ----------------------------------------------------------------------------------

MOODLE_A = "/v1/webhooks/moodle/school_a"
ZOHO_A = "/v1/webhooks/zoho/school_a"


def forged_signature(rx: Receiver) -> Answer:
    """A signature nobody computed with the secret."""
    body = event("forged")
    fake = "sha256=" + hashlib.sha256(b"guess").hexdigest()
    return post(rx, MOODLE_A, body, {**signed(rx, SECRETS["school_a"], body), "X-Sync-Signature": fake})


def other_tenants_secret(rx: Receiver) -> Answer:
    """A valid signature, made with school_b's secret, sent to school_a."""
    body = event("other-secret")
    return post(rx, MOODLE_A, body, signed(rx, SECRETS["school_b"], body))


def deliver_to_school_b(rx: Receiver) -> None:
    """Setup: school_b's Moodle delivers an event (accepted and written), which is kept."""
    body = event("cross-tenant")
    rx.kept = (body, signed(rx, SECRETS["school_b"], body))
    assert post(rx, "/v1/webhooks/moodle/school_b", *rx.kept).status == 202


def another_tenants_delivery_replayed(rx: Receiver) -> Answer:
    """A delivery school_b's Moodle really signed, replayed to school_a's route."""
    return post(rx, MOODLE_A, *rx.kept)


def deliver_to_school_a(rx: Receiver) -> None:
    """Setup: school_a's Moodle delivers an event (accepted and written), which is kept."""
    body = event(f"genuine-{len(rx.answers)}")
    rx.kept = (body, signed(rx, SECRETS["school_a"], body))
    assert post(rx, MOODLE_A, *rx.kept).status == 202


def stale_delivery(rx: Receiver) -> Answer:
    """A genuine delivery captured 301 s ago and presented now for the first time."""
    body = event("stale")
    return post(rx, MOODLE_A, body, signed(rx, SECRETS["school_a"], body, at=rx.now() - 301))


def future_delivery(rx: Receiver) -> Answer:
    """A genuine signature for a timestamp 301 s ahead (pre-signed for later replay)."""
    body = event("future")
    return post(rx, MOODLE_A, body, signed(rx, SECRETS["school_a"], body, at=rx.now() + 301))


def replay_after_the_window(rx: Receiver) -> Answer:
    """An accepted delivery, replayed byte for byte when the receiver's clock is 301 s later."""
    rx.clock_shift[0] = 301.0
    try:
        return post(rx, MOODLE_A, *rx.kept)
    finally:
        rx.clock_shift[0] = 0.0


def replay_inside_the_window(rx: Receiver) -> Answer:
    """An accepted delivery replayed byte for byte at once: answered 202, not written again."""
    return post(rx, MOODLE_A, *rx.kept)


def redelivery_signed_again(rx: Receiver) -> Answer:
    """The sender's retry of an accepted delivery: the same event, signed anew."""
    body = rx.kept[0]
    return post(rx, MOODLE_A, body, signed(rx, SECRETS["school_a"], body, at=rx.now() + 2))


def tampered_body(rx: Receiver) -> Answer:
    """A valid signature of one body, sent with another (the grade raised)."""
    body = event("tampered")
    headers = signed(rx, SECRETS["school_a"], body)
    return post(rx, MOODLE_A, body.replace(b"87.50000", b"99.00000"), headers)


def timestamp_changed(rx: Receiver) -> Answer:
    """A valid signature, with the timestamp header moved inside the window."""
    body = event("moved-timestamp")
    headers = signed(rx, SECRETS["school_a"], body, at=rx.now() - 10)
    return post(rx, MOODLE_A, body, {**headers, "X-Sync-Timestamp": str(rx.now())})


def oversized_declared(rx: Receiver) -> Answer:
    """A signed body one byte over the limit, with its length declared."""
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    return post(rx, MOODLE_A, body, signed(rx, SECRETS["school_a"], body))


def oversized_chunked(rx: Receiver) -> Answer:
    """A signed 2 MiB body sent chunked, with no length to refuse it by."""
    body = b"{" + b" " * (2 * MAX_BODY_BYTES) + b"}"
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    return exchange(rx, MOODLE_A, signed(rx, SECRETS["school_a"], body), pieces, chunked=True)


def slow_body(rx: Receiver) -> Answer:
    """A client that declares 600 bytes, sends 20, then stalls."""
    body = event("slow")
    return exchange(rx, MOODLE_A, signed(rx, SECRETS["school_a"], body), [body[:20]], length=600, stall=True)


def slow_chunked_body(rx: Receiver) -> Answer:
    """A chunked client that sends one chunk, then stalls."""
    body = event("slow-chunked")
    headers = signed(rx, SECRETS["school_a"], body)
    return exchange(rx, MOODLE_A, headers, [body[:20]], chunked=True, stall=True)


def missing_tenant_in_path(rx: Receiver) -> Answer:
    """No tenant in the route at all."""
    body = json.dumps(ZOHO).encode()
    return post(rx, "/v1/webhooks/zoho/", body, {"Authorization": f"Bearer {SECRETS['school_a']}"})


def missing_tenant_header(rx: Receiver) -> Answer:
    """A seed route without ``X-Tenant-ID``, with a valid bearer."""
    body = json.dumps({"data": [{"id": "1"}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['school_a']}"}
    return post(rx, "/v1/sync/students", body, headers)


def unknown_tenant(rx: Receiver) -> Answer:
    """A tenant that is not in the tenants file, signed with a real school's secret."""
    body = event("unknown")
    return post(rx, "/v1/webhooks/moodle/school_z", body, signed(rx, SECRETS["school_a"], body))


def tenant_without_secret(rx: Receiver) -> Answer:
    """A tenant with no ``webhook_secret_env``: an empty-key signature must not open it."""
    body = event("no-secret")
    return post(rx, "/v1/webhooks/moodle/no_secret", body, signed(rx, "", body))


def tenant_whose_secret_is_unset(rx: Receiver) -> Answer:
    """A tenant whose secret variable is not set: an empty bearer must not open it."""
    body = json.dumps(ZOHO).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer "}
    return post(rx, "/v1/webhooks/zoho/unset_secret", body, headers)


def bearer_on_moodle_webhook(rx: Receiver) -> Answer:
    """The right secret as a bearer token, where Moodle routes demand a signature."""
    body = event("bearer-moodle")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['school_a']}"}
    return post(rx, MOODLE_A, body, headers)


def bearer_on_seed_moodle_route(rx: Receiver) -> Answer:
    """The same on the seed's Moodle route."""
    body = json.dumps({k: v for k, v in GRADED.items() if k != "eventname"}).encode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {SECRETS['school_a']}",
        "X-Tenant-ID": "school_a",
    }
    return post(rx, "/v1/events/moodle/grade_updated", body, headers)


def wrong_bearer(rx: Receiver) -> Answer:
    """A wrong bearer token on a Zoho route."""
    body = json.dumps(ZOHO).encode()
    return post(
        rx, ZOHO_A, body, {"Content-Type": "application/json", "Authorization": "Bearer guess-9f8e7d"}
    )


def other_tenants_bearer(rx: Receiver) -> Answer:
    """school_b's secret as the bearer on school_a's Zoho route."""
    body = json.dumps(ZOHO).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRETS['school_b']}"}
    return post(rx, ZOHO_A, body, headers)


def unsigned(rx: Receiver) -> Answer:
    """No credentials at all."""
    body = event("unsigned")
    return post(rx, MOODLE_A, body, {"Content-Type": "application/json"})


@dataclass(frozen=True)
class Attack:
    """An attack and what the receiver must answer."""

    send: Callable[[Receiver], Answer]
    status: int
    reason: str
    duplicate: bool = False
    setup: Callable[[Receiver], None] | None = None


ATTACKS: dict[str, Attack] = {
    a.send.__name__: a
    for a in (
        Attack(forged_signature, 401, "authentication failed"),
        Attack(other_tenants_secret, 401, "authentication failed"),
        Attack(another_tenants_delivery_replayed, 401, "authentication failed", setup=deliver_to_school_b),
        Attack(stale_delivery, 401, "authentication failed"),
        Attack(future_delivery, 401, "authentication failed"),
        Attack(replay_after_the_window, 401, "authentication failed", setup=deliver_to_school_a),
        Attack(replay_inside_the_window, 202, "", duplicate=True, setup=deliver_to_school_a),
        Attack(redelivery_signed_again, 202, "", duplicate=True, setup=deliver_to_school_a),
        Attack(tampered_body, 401, "authentication failed"),
        Attack(timestamp_changed, 401, "authentication failed"),
        Attack(oversized_declared, 413, "body larger than"),
        Attack(oversized_chunked, 413, "body larger than"),
        Attack(slow_body, 408, "not received within"),
        Attack(slow_chunked_body, 408, "not received within"),
        Attack(missing_tenant_in_path, 404, "unknown route"),
        Attack(missing_tenant_header, 401, "authentication failed"),
        Attack(unknown_tenant, 401, "authentication failed"),
        Attack(tenant_without_secret, 401, "authentication failed"),
        Attack(tenant_whose_secret_is_unset, 401, "authentication failed"),
        Attack(bearer_on_moodle_webhook, 401, "authentication failed"),
        Attack(bearer_on_seed_moodle_route, 401, "authentication failed"),
        Attack(wrong_bearer, 401, "authentication failed"),
        Attack(other_tenants_bearer, 401, "authentication failed"),
        Attack(unsigned, 401, "authentication failed"),
    )
}


def leaks(rx: Receiver, texts: list[str]) -> list[str]:
    """The secrets, signatures and tokens that appear in ``texts``."""
    return sorted({s[:6] + "…" for s in rx.sensitive if s and any(s in t for t in texts)})


@pytest.mark.parametrize("name", ATTACKS)
def test_each_attack_is_refused_with_nothing_written_and_nothing_leaked(
    receiver: Receiver, name: str
) -> None:
    """The attack gets the answer it must (a refusal, or for a redelivery a 202 "duplicate"), no
    file appears under the drop root, and neither the log nor the answer holds a secret."""
    attack = ATTACKS[name]
    rx = receiver
    if attack.setup is not None:
        attack.setup(rx)  # the genuine delivery the attack replays: written, and not counted
    before, log_mark, answer_mark = files_under(rx.root), len(rx.log.lines), len(rx.answers)
    answer = attack.send(rx)
    written = sorted(str(p.relative_to(rx.root)) for p in files_under(rx.root) - before)
    logs = rx.log.lines[log_mark:]
    leaked = leaks(rx, logs + [a.decode("latin-1") for a in rx.answers[answer_mark:]])
    body = answer.json() if answer.body.startswith(b"{") else {"reason": answer.body.decode()[:80]}
    RESULTS[name] = {
        "attack": (attack.send.__doc__ or "").strip().splitlines()[0],
        "expected": attack.status,
        "status": answer.status,
        "reason": body.get("reason", ""),
        "duplicate": body.get("duplicate"),
        "seconds": round(answer.seconds, 3),
        "files_written": len(written),
        "secrets_in_logs": len(leaked),
        "as_expected": answer.status == attack.status and not written and not leaked,
    }
    assert answer.status == attack.status, (answer.status, answer.body)
    assert attack.reason in body.get("reason", "")
    assert body.get("duplicate") is (True if attack.duplicate else None)
    assert written == []
    assert not leaked, f"secrets in the receiver's log or answers: {leaked}"
    if attack.status == 408:
        assert BODY_TIMEOUT <= answer.seconds < BODY_TIMEOUT + 3, answer.seconds


def test_the_receiver_logs_its_refusals_but_never_a_secret(receiver: Receiver) -> None:
    """The capture works (an accepted and a refused delivery are both logged, at DEBUG too), and
    across everything sent to this receiver no secret, signature or token was logged or echoed."""
    rx = receiver
    body = event("log-check")
    assert post(rx, MOODLE_A, body, signed(rx, SECRETS["school_a"], body)).status == 202
    assert post(rx, MOODLE_A, body, signed(rx, SECRETS["school_a"], body)).json()["duplicate"]  # a DEBUG line
    assert post(rx, MOODLE_A, body, signed(rx, SECRETS["school_b"], body)).status == 401
    text = "\n".join(rx.log.lines)
    assert "accepted moodle.event event sec-log-check for tenant school_a" in text
    assert "rejected POST '/v1/webhooks/moodle/school_a': 401" in text
    assert any(line.startswith("DEBUG ") for line in rx.log.lines), "DEBUG records were not captured"
    assert "uvicorn.access" in text, "uvicorn's access log was not captured"
    assert not leaks(rx, [*rx.log.lines, *(a.decode("latin-1") for a in rx.answers)])
    for secret in SECRETS.values():  # nor any fragment a log line might have cut a secret to
        assert not any(secret[:12] in line for line in rx.log.lines)
