"""Benchmark 4: Dagster's overhead, the whole graph for one school through the CLI.

The simulators serve the demo school (``python -m sync_pipelines.sandbox`` on two free ports, in a
process of their own); a temporary ``DAGSTER_HOME`` (SQLite run storage), tenants file and SQLite
warehouse hold everything else. ``dagster job execute -m sync_pipelines.definitions -j full_sync``
runs the main job for the ``demo_school`` partition with the project's in-process executor: once
as the first sync, then ``repeats`` times with nothing changed. Each command is timed from the
shell's side (Python start-up, imports and loading the definitions included); the run's own
start and end, as the instance records them, give the part spent executing the graph.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import median

TENANT = "demo_school"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the simulators exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def run(repeats: int, *, scale: float = 1.0) -> dict[str, Any]:
    bin_dir = Path(sys.executable).parent
    dagster = bin_dir / "dagster"
    zport, mport = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="sp_bench_dagster_") as tmp:
        home = Path(tmp)
        (home / "dagster.yaml").write_text(
            yaml.safe_dump(
                {"storage": {"sqlite": {"base_dir": str(home / "dagster")}}, "telemetry": {"enabled": False}}
            )
        )
        tenants = home / "tenants.yaml"
        tenants.write_text(
            yaml.safe_dump(
                {
                    "tenants": [
                        {
                            "id": TENANT,
                            "zoho": {
                                "accounts_url": f"http://127.0.0.1:{zport}",
                                "api_domain": f"http://127.0.0.1:{zport}",
                                "client_id_env": "DEMO_ZOHO_CLIENT_ID",
                                "client_secret_env": "DEMO_ZOHO_CLIENT_SECRET",
                                "refresh_token_env": "DEMO_ZOHO_REFRESH_TOKEN",
                            },
                            "moodle": {
                                "base_url": f"http://127.0.0.1:{mport}",
                                "token_env": "DEMO_MOODLE_TOKEN",
                            },
                        }
                    ]
                }
            )
        )
        from sync_pipelines.sandbox import DEMO_MOODLE_TOKEN, demo_credentials

        creds = demo_credentials()
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "SYNC_TENANTS_FILE": str(tenants),
            "SYNC_LOCAL_DIR": str(home / "local"),
            "WAREHOUSE_URL": f"sqlite:///{home / 'warehouse.db'}",
            "DEMO_ZOHO_CLIENT_ID": creds.client_id,
            "DEMO_ZOHO_CLIENT_SECRET": creds.client_secret,
            "DEMO_ZOHO_REFRESH_TOKEN": creds.refresh_token,
            "DEMO_MOODLE_TOKEN": DEMO_MOODLE_TOKEN,
            "PYTHONUNBUFFERED": "1",
        }
        sandbox_log = (home / "sandbox.log").open("w")
        sandbox = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sync_pipelines.sandbox",
                "--port",
                str(zport),
                "--moodle-port",
                str(mport),
                "--scale",
                str(scale),
            ],
            env=env,
            stdout=sandbox_log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_port(zport, sandbox)
            _wait_port(mport, sandbox)
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import dagster as dg\n"
                    "from sync_pipelines.tenants import tenant_partitions\n"
                    "with dg.DagsterInstance.get() as i:\n"
                    f"    i.add_dynamic_partitions(tenant_partitions.name, [{TENANT!r}])\n",
                ],
                env=env,
                check=True,
            )
            command = [
                str(dagster),
                "job",
                "execute",
                "-m",
                "sync_pipelines.definitions",
                "-j",
                "full_sync",
                "--tags",
                json.dumps({"dagster/partition": TENANT}),
            ]
            walls: list[float] = []
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                proc = subprocess.run(command, env=env, capture_output=True, text=True)
                walls.append(time.perf_counter() - t0)
                if proc.returncode != 0:
                    raise RuntimeError(f"dagster job execute failed:\n{proc.stderr[-3000:]}")
            answer = json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import json, dagster as dg\n"
                        "with dg.DagsterInstance.get() as i:\n"
                        "    rs = sorted(i.get_run_records(), key=lambda r: r.create_timestamp)\n"
                        "    steps = {s.step_key: round(s.end_time - s.start_time, 3)"
                        " for s in i.get_run_step_stats(rs[-1].dagster_run.run_id) if s.end_time and s.start_time}\n"
                        "    print(json.dumps({'runs': [[r.dagster_run.status.value, r.start_time, r.end_time,"
                        " r.create_timestamp.timestamp()] for r in rs], 'steps': steps}))\n",
                    ],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
        finally:
            sandbox.terminate()
            try:
                sandbox.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sandbox.kill()
                sandbox.wait()
            sandbox_log.close()
    runs, steps = answer["runs"], answer["steps"]
    in_run = [end - start for _status, start, end, _created in runs if start and end]
    statuses = [status for status, *_ in runs]
    return {
        "repeats": repeats,
        "statuses": statuses,
        "first_sync_cli_s": round(walls[0], 3),
        "first_sync_run_s": round(in_run[0], 3) if in_run else None,
        "no_change_cli_s": [round(w, 3) for w in walls[1:]],
        "no_change_run_s": [round(x, 3) for x in in_run[1:]],
        "median_no_change_cli_s": round(median(walls[1:]), 3),
        "median_no_change_run_s": round(median(in_run[1:]), 3) if len(in_run) > 1 else None,
        # The last no-change run, step by step (seconds), slowest first; the rest of the run's
        # time is Dagster's own (events, storage, step orchestration).
        "last_run_steps_s": dict(sorted(steps.items(), key=lambda kv: -kv[1])),
        "last_run_steps_total_s": round(sum(steps.values()), 3),
    }
