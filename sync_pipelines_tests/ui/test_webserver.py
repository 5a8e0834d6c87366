"""The data team's view: the Dagster UI serves this project's lineage, and a real browser draws it.

Starts ``dagster-webserver`` on a free loopback port against the project's ``workspace.yaml``, with
a temporary ``DAGSTER_HOME``; checks the lineage it serves through GraphQL against what
``sync_pipelines.definitions.defs`` declares; then screenshots the lineage page of
``zoho/enrolments`` with Debian's ``chromium-headless-shell`` into ``.local/screenshots/lineage.png``
(``make browser`` installs the browser; ``make test`` runs it first).
"""

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from sync_pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCREENSHOT = ROOT / ".local" / "screenshots" / "lineage.png"
LINEAGE_PAGE = "/assets/zoho/enrolments?view=lineage"
WINDOW = (1600, 1000)
LOAD_TIMEOUT_S = 60.0
BROWSER_TIMEOUT_S = 60.0
BROWSER_NAMES = ("chromium-headless-shell", "chrome-headless-shell")
BROWSER_PATHS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chrome-headless-shell")
#: Flags for Chromium on these machines: no sandbox as root, no GPU, and no connection attempts to
#: the outside (the network is closed; without them Chromium retries, many at a time).
BROWSER_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    "--virtual-time-budget=15000",
)
#: Edges pinned literally, as the README describes them (the full map is derived from defs).
PINNED_EDGES = {
    "zoho/enrolments": {"zoho/students", "zoho/classes"},
    "zoho/classes": {"zoho/programmes", "zoho/units", "zoho/teachers"},
    "moodle/users": {"zoho/students", "zoho/teachers"},
    "moodle/grades": {"moodle/enrolments"},
    "zoho/grade_writeback": {"moodle/grades"},
}
GROUPS = {"zoho", "moodle", "writeback", "events", "reports", "ops"}
DEMO_TENANT = "demo_school"

WORKSPACE_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""
ASSET_NODES_QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"
REPOSITORIES_QUERY = (
    "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
)
ADD_PARTITION_MUTATION = """
mutation ($repo: RepositorySelector!, $def: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $def, partitionKey: $key) {
    __typename ... on PythonError { message } ... on UnauthorizedError { message } } }
"""

# Run the program with SIGINT and SIGTERM at their defaults: a process started from a
# non-interactive script inherits them ignored, and would then outlive the test. On Linux it also
# dies with the test process, should that be killed outright (its code server follows by heartbeat).
_EXEC_WITH_DEFAULT_SIGNALS = (
    "import ctypes, os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
    "if sys.platform == 'linux':\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


@dataclass(frozen=True)
class Webserver:
    """A running ``dagster-webserver`` and where it writes."""

    url: str
    home: Path
    log: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), f"GraphQL errors: {body['errors']}"
        return body["data"]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started."""
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    # Whatever is left of the group (the leader may be gone while a child lives on) is killed.
    _signal_group(proc, signal.SIGKILL)
    proc.wait(timeout=10)


def _start(command: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGNALS, *command],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so that the whole group can be stopped
        )


def _wait_until_loaded(server: Webserver, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            workspace = server.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        except (requests.RequestException, ValueError) as exc:
            last = repr(exc)
        else:
            if workspace["__typename"] != "Workspace":
                pytest.fail(f"the workspace did not load: {workspace}")
            entries = workspace["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                assert not errors, f"the code location failed to load: {errors}"
                return
            last = str(entries)
        time.sleep(0.25)
    pytest.fail(
        f"the code location was not loaded within {LOAD_TIMEOUT_S:.0f} s ({last}):\n{server.log_tail()}"
    )


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """``dagster-webserver`` on a free loopback port, with this project's workspace."""
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SYNC_LOCAL_DIR": str(home / "local"),  # the warehouse default: none in the work tree
        "PYTHONUNBUFFERED": "1",
    }
    port = _free_port()
    server = Webserver(url=f"http://127.0.0.1:{port}", home=home, log=home / "webserver.log")
    command = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    proc = _start(command, env=env, log=server.log)
    try:
        _wait_until_loaded(server, proc)
        yield server
    finally:
        _kill_group(proc, grace_s=10.0)


def _upstream_in_defs() -> dict[str, set[str]]:
    return {
        spec.key.to_user_string(): {dep.asset_key.to_user_string() for dep in spec.deps}
        for spec in defs.resolve_all_asset_specs()
    }


def test_the_ui_serves_the_lineage_and_groups_that_defs_declare(webserver: Webserver) -> None:
    nodes = webserver.graphql(ASSET_NODES_QUERY)["assetNodes"]
    served = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    upstream = {key: {"/".join(d["path"]) for d in n["dependencyKeys"]} for key, n in served.items()}

    expected = _upstream_in_defs()
    assert len(expected) >= 15
    assert upstream == expected
    for child, parents in PINNED_EDGES.items():
        assert parents <= upstream[child], f"{child} should wait for {sorted(parents)}"

    groups = {key: n["groupName"] for key, n in served.items()}
    assert set(groups.values()) == GROUPS
    assert groups == {spec.key.to_user_string(): spec.group_name for spec in defs.resolve_all_asset_specs()}


def _browser() -> str:
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    for path in BROWSER_PATHS:
        if os.access(path, os.X_OK):
            return path
    pytest.fail(
        "chromium-headless-shell is not installed, so the UI cannot be screenshotted: run `make browser` "
        "as root (it runs `apt-get install chromium-headless-shell`), or `sudo apt-get install "
        "chromium-headless-shell`"
    )


def _png(path: Path) -> tuple[int, int, int]:
    """Width, height and number of distinct colours of an 8-bit RGB(A) PNG (stdlib and numpy only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, width, height, channels = 8, bytearray(), 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0, body
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    prior = bytearray(stride)
    rows: list[bytes] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub: a running sum along the row, per channel
            pixels = np.frombuffer(line, np.uint8).reshape(width, channels)
            line = bytearray(np.cumsum(pixels, axis=0, dtype=np.uint8).tobytes())
        elif kind == 2:  # Up
            line = bytearray((np.frombuffer(line, np.uint8) + np.frombuffer(prior, np.uint8)).tobytes())
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prior[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prior[i]
                c = prior[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prior = line
    pixels = np.frombuffer(b"".join(rows), np.uint8).reshape(-1, channels).astype(np.uint32)
    colours = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2]).size
    return width, height, int(colours)


def _screenshot(browser: str, url: str, target: Path, profile: Path) -> str:
    """Screenshot ``url`` into ``target``; returns the page's DOM once rendered."""
    command = [
        browser,
        *BROWSER_FLAGS,
        f"--user-data-dir={profile}",
        f"--screenshot={target}",
        "--dump-dom",
        url,
    ]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        dom, errors = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{browser} took more than {BROWSER_TIMEOUT_S:.0f} s on {url}")
    finally:
        _kill_group(proc, grace_s=2.0)
    tail = "\n".join(errors.decode(errors="replace").splitlines()[-15:])
    assert proc.returncode == 0, f"{browser} exited with {proc.returncode}:\n{tail}"
    return dom.decode(errors="replace")


def test_a_browser_draws_the_lineage_page(webserver: Webserver, tmp_path: Path) -> None:
    browser = _browser()
    # The first visit shows a pop-up over the page; the UI's own mutation dismisses it.
    assert webserver.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    # The demo school's partition, as the tenants sensor would add it.
    repo = webserver.graphql(REPOSITORIES_QUERY)["repositoriesOrError"]["nodes"][0]
    added = webserver.graphql(
        ADD_PARTITION_MUTATION,
        {
            "repo": {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"]},
            "def": "tenants",
            "key": DEMO_TENANT,
        },
    )["addDynamicPartition"]
    assert added["__typename"] == "AddDynamicPartitionSuccess", added

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    started = time.monotonic()
    dom = _screenshot(browser, webserver.url + LINEAGE_PAGE, SCREENSHOT, tmp_path / "profile")
    elapsed = time.monotonic() - started

    assert SCREENSHOT.is_file(), f"{browser} wrote no screenshot"
    assert SCREENSHOT.stat().st_size > 40_000, "the screenshot is nearly empty"
    width, height, colours = _png(SCREENSHOT)
    assert (width, height) == WINDOW
    assert colours > 300, f"the screenshot has only {colours} colours: a blank or bare page"
    # The page is the lineage graph: enrolments with its upstream and downstream assets drawn as
    # nodes, each with the demo school's partition.
    for name in ("enrolments", "students", "classes"):
        assert f'data-tooltip="{name}"' in dom, f"no `{name}` node on the lineage page"
    assert "1 partition" in dom
    assert "Something went wrong" not in dom and "PythonError" not in dom
    print(f"lineage screenshot ({colours} colours, {elapsed:.1f} s): {SCREENSHOT}")
