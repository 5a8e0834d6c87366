"""``make airbyte``: Airbyte's own Zoho CRM connector (``source-zoho-crm``) against the Zoho simulator.

The connector was written against the real Zoho CRM; running it against the simulator checks the
simulator's answers with a client nobody here wrote. The script starts a :class:`ZohoSimulator`
holding the demo school, points the connector at it and runs ``spec``, ``check``, ``discover``, a
full-refresh ``read`` of every stream the simulator holds records for and, after editing a few
records, an incremental ``read`` with the state the first read emitted. It checks:

* ``check`` succeeds and ``discover`` lists every module of the org (``/settings/modules``), each
  with the fields of ``/settings/fields``;
* the full read emits exactly the records the simulator holds, per module (ids equal). The
  connector pages with ``page`` only, and Zoho answers ``page`` past the first 2,000 records
  with ``DISCRETE_PAGINATION_LIMIT_EXCEEDED`` in v2 as in v8 (airbytehq/airbyte#30977 shows the
  real v2 API doing it): for a module holding more, the connector gets exactly the first 2,000
  (newest id first) and then that error. That is the connector's documented limitation, not the
  simulator's, and the script checks for exactly that rather than bend the simulator;
* the incremental read returns exactly the edited records of each module that has
  ``Modified_Time``; modules without it (``Products``, ``BTEC_Enrollments``) cannot be read
  incrementally, and the connector reads them whole again.

It prints a summary per stream and exits non-zero on any mismatch.

Two processes, two virtualenvs: the connector's dependencies (``airbyte-cdk``, pydantic 1, its own
``requests``) conflict with this project's, so it runs in ``.venv-airbyte`` (``make airbyte``
creates it) as a subprocess, while this script, the simulator (a thread of this process, so the
script edits records between reads directly) and our package stay in ``.venv``. The subprocess
runs a small wrapper that replaces the connector's two class-level URL maps
(``ZohoAPI._DC_REGION_TO_ACCESS_URL`` and ``_DC_REGION_TO_API_URL``) with the simulator's URL and
then calls the connector's own entrypoint (``source_zoho_crm.run.run``, the CDK's ``launch``).

Usage: ``.venv/bin/python scripts/airbyte_zoho.py [--airbyte-python .venv-airbyte/bin/python]
[--seed 2026] [--scale 1.0]``.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from sync_pipelines.sandbox import DEMO_SEED, ZohoSimulator, demo_credentials, generate_school
from sync_pipelines.sandbox.zoho_sim import DISCRETE_PAGINATION_LIMIT, org_modules
from sync_pipelines.zoho.modules import metadata_for

ROOT = Path(__file__).resolve().parent.parent

#: Runs in the connector's virtualenv: point the connector at the simulator, then its entrypoint.
WRAPPER = """
import os
import re
import sys
from types import MappingProxyType

from source_zoho_crm.api import ZohoAPI

url = os.environ["ZOHO_SIMULATOR_URL"]
ZohoAPI._DC_REGION_TO_ACCESS_URL = MappingProxyType(dict.fromkeys(ZohoAPI._DC_REGION_TO_ACCESS_URL, url))
ZohoAPI._DC_REGION_TO_API_URL = MappingProxyType(dict.fromkeys(ZohoAPI._DC_REGION_TO_API_URL, url))

from source_zoho_crm.run import run

sys.argv = ["source-zoho-crm", *sys.argv[1:]]
run()
"""

#: Records edited between the two reads: module → positions in the module's records (id order).
EDITS: dict[str, tuple[int, ...]] = {
    "BTEC_Students": (3, 41),
    "BTEC_Classes": (0,),
    "BTEC_Grades": (7,),
    "BTEC_Payments": (12,),
}


class Mismatch(Exception):
    """What the connector did differs from what the simulator holds or what Zoho documents."""


def connector(python: str, url: str, args: list[str], workdir: Path) -> tuple[int, list[dict], str]:
    """Run the connector with ``args``: its exit status, its Airbyte messages, its stderr."""
    done = subprocess.run(
        [python, "-c", WRAPPER, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ZOHO_SIMULATOR_URL": url},
        cwd=workdir,
        timeout=600,
        check=False,
    )
    messages = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue
    return done.returncode, messages, done.stderr


def of_type(messages: list[dict], kind: str) -> list[dict]:
    return [m for m in messages if m.get("type") == kind]


#: Zoho's answer to ``page`` past the first 2,000 records (its message; the CDK keeps no code).
PAGE_CAP_MESSAGE = "You can only get the first 2000 records without using page_token param"
_URL_MODULE = re.compile(r"/crm/v[0-9.]+/(?P<module>[A-Za-z0-9_]+)\?")


def errors_by_module(messages: list[dict], module_of: dict[str, str]) -> dict[str, str]:
    """The error traces of a read, by module: the CDK names the stream in its closing summary and
    the failed URL in the per-stream trace ("summary" holds the closing one)."""
    out: dict[str, str] = {}
    for m in of_type(messages, "TRACE"):
        trace = m["trace"]
        if trace.get("type") != "ERROR":
            continue
        error = trace.get("error") or {}
        text = f"{error.get('message') or ''} {error.get('internal_message') or ''}"
        stream = (error.get("stream_descriptor") or {}).get("name")
        url = _URL_MODULE.search(text)
        if stream in module_of:
            key = module_of[stream]
        elif url:
            key = url.group("module")
        else:
            key = "summary"
            # "the following streams did not sync successfully: <name>: …, <name>: …"
            named = [module_of[n] for n in module_of if n in text]
            text = ",".join(sorted(named)) + " | " + text
        out[key] = f"{out.get(key, '')} {text}".strip()
    return out


def records_by_stream(messages: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in of_type(messages, "RECORD"):
        out.setdefault(m["record"]["stream"], []).append(str(m["record"]["data"]["id"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airbyte-python", default=str(ROOT / ".venv-airbyte" / "bin" / "python"))
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    creds = demo_credentials()
    # max_concurrency 20: the org is an Enterprise org (GET /org), whose limit is 20 concurrent
    # calls; the connector reads the edition there and sizes its discover thread pool from it.
    sim = ZohoSimulator(
        data=generate_school(args.seed, scale=args.scale),
        clients={creds.client_id: (creds.client_secret, creds.refresh_token)},
        max_concurrency=20,
    )
    sim.start()
    failures: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="airbyte-zoho-") as tmp:
            # Absolute, not resolved: the venv's python is a symlink that must stay the venv's.
            failures = run(sim, os.path.abspath(args.airbyte_python), Path(tmp))
    except Mismatch as exc:
        failures = [str(exc)]
    finally:
        sim.stop()
    took = time.perf_counter() - started
    if failures:
        print(f"\nFAILED ({took:.0f}s):")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print(f"\nOK: Airbyte's source-zoho-crm agrees with the simulator ({took:.0f}s)")
    return 0


def run(sim: ZohoSimulator, python: str, workdir: Path) -> list[str]:
    """The connector's four commands against ``sim``; the mismatches found (none: all agreed)."""
    failures: list[str] = []
    creds = demo_credentials()
    config = workdir / "config.json"
    config.write_text(
        json.dumps(
            {
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
                "refresh_token": creds.refresh_token,
                "dc_region": "US",
                "environment": "Production",
            }
        )
    )

    status, messages, stderr = connector(python, sim.base_url, ["spec"], workdir)
    if status != 0 or not of_type(messages, "SPEC"):
        raise Mismatch(f"spec failed (exit {status}): {stderr.strip()[-500:]}")

    status, messages, stderr = connector(python, sim.base_url, ["check", "--config", str(config)], workdir)
    verdict = of_type(messages, "CONNECTION_STATUS")
    if status != 0 or not verdict or verdict[0]["connectionStatus"]["status"] != "SUCCEEDED":
        raise Mismatch(f"check did not succeed (exit {status}): {verdict or stderr.strip()[-500:]}")
    print("check: SUCCEEDED")

    status, messages, stderr = connector(python, sim.base_url, ["discover", "--config", str(config)], workdir)
    catalogs = of_type(messages, "CATALOG")
    if status != 0 or not catalogs:
        raise Mismatch(f"discover failed (exit {status}): {stderr.strip()[-500:]}")
    streams = catalogs[0]["catalog"]["streams"]
    module_names = {m["module_name"]: m["api_name"] for m in sim.modules}
    module_of: dict[str, str] = {}
    for stream in streams:
        module = module_names.get(stream["json_schema"].get("description"))
        if module is None:
            failures.append(f"discover: stream {stream['name']} matches no module of the org")
            continue
        module_of[stream["name"]] = module
        # The connector adds Modified_Time to every schema, also of modules that have none.
        expected = {*metadata_for(module), "id", "Modified_Time"}
        props = set(stream["json_schema"]["properties"])
        if props != expected:
            failures.append(f"discover: {stream['name']} properties differ: {sorted(props ^ expected)}")
    stream_of = {module: name for name, module in module_of.items()}
    missing = [m for m in org_modules() if m not in stream_of]
    if missing:
        failures.append(f"discover: no stream for {missing}")
    org_calls = [r for r in sim.requests if r.path.endswith("/org")]
    edition = "detected" if org_calls and org_calls[-1].status == 200 else "NOT detected"
    print(
        f"discover: {len(streams)} streams for {len(org_modules())} modules; edition {edition} from GET /org"
    )

    held = {m: [r["id"] for r in sim.records(m)] for m in org_modules()}
    wanted = [s for s in streams if held.get(module_of.get(s["name"], ""), [])]
    catalog = workdir / "catalog_full.json"
    catalog.write_text(
        json.dumps(
            {
                "streams": [
                    {"stream": s, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
                    for s in wanted
                ]
            }
        )
    )
    status, messages, stderr = connector(
        python, sim.base_url, ["read", "--config", str(config), "--catalog", str(catalog)], workdir
    )
    full = records_by_stream(messages)
    full_errors = errors_by_module(messages, module_of)
    states = {}
    for m in of_type(messages, "STATE"):
        state = m["state"]
        if state.get("type") == "STREAM":
            states[state["stream"]["stream_descriptor"]["name"]] = state
    full_notes: dict[str, str] = {}
    expect_failed_read = False
    for stream in wanted:
        name, module = stream["name"], module_of[stream["name"]]
        got, have = full.get(name, []), held[module]
        if len(have) <= DISCRETE_PAGINATION_LIMIT:
            if sorted(got) != sorted(have) or len(got) != len(set(got)):
                failures.append(f"full read of {module}: {len(got)} records, the simulator holds {len(have)}")
            if module in full_errors:
                failures.append(f"full read of {module} failed: {full_errors[module][:300]}")
        else:
            expect_failed_read = True
            newest = sorted(have, key=int, reverse=True)[:DISCRETE_PAGINATION_LIMIT]
            if got != newest:
                failures.append(
                    f"full read of {module}: expected the newest 2000 ids, got {len(got)} records"
                )
            if PAGE_CAP_MESSAGE not in full_errors.get(module, ""):
                failures.append(
                    f"full read of {module}: no DISCRETE_PAGINATION_LIMIT_EXCEEDED past 2000 records"
                )
            full_notes[name] = "2000, then DISCRETE_PAGINATION_LIMIT_EXCEEDED (airbyte#30977)"
    if status != 0 and not expect_failed_read:
        failures.append(f"full read exited {status}: {stderr.strip()[-300:]}")
    capped = {module_of[n] for n in full_notes}
    if _unexpected(full_errors, capped):
        failures.append(f"full read: unexpected errors {_unexpected(full_errors, capped)}")

    # A school day between the reads: a few records edited in modules that have Modified_Time.
    edited: dict[str, set[str]] = {}
    for module, positions in EDITS.items():
        records = sim.records(module)
        for position in positions:
            if position < len(records):
                sim.update(module, records[position]["id"], Tag="edited-after-first-read")
                edited.setdefault(module, set()).add(records[position]["id"])

    state_file = workdir / "state.json"
    state_file.write_text(json.dumps([states[s["name"]] for s in wanted if s["name"] in states]))
    catalog = workdir / "catalog_incremental.json"
    catalog.write_text(
        json.dumps(
            {
                "streams": [
                    {
                        "stream": s,
                        "sync_mode": "incremental",
                        "cursor_field": s.get("default_cursor_field") or ["Modified_Time"],
                        "destination_sync_mode": "append",
                    }
                    for s in wanted
                ]
            }
        )
    )
    status, messages, stderr = connector(
        python,
        sim.base_url,
        ["read", "--config", str(config), "--catalog", str(catalog), "--state", str(state_file)],
        workdir,
    )
    incremental = records_by_stream(messages)
    incremental_errors = errors_by_module(messages, module_of)
    incremental_notes: dict[str, str] = {}
    for stream in wanted:
        name, module = stream["name"], module_of[stream["name"]]
        got = incremental.get(name, [])
        if "Modified_Time" in metadata_for(module):
            if sorted(got) != sorted(edited.get(module, set())):
                failures.append(
                    f"incremental read of {module}: got {sorted(got)[:5]}…, edited {sorted(edited.get(module, set()))}"
                )
            if module in incremental_errors:
                failures.append(f"incremental read of {module} failed: {incremental_errors[module][:300]}")
        else:
            # No Modified_Time: If-Modified-Since cannot apply; everything again, as the first read.
            if got != full.get(name, []):
                failures.append(
                    f"incremental read of {module}: expected the whole module again, got {len(got)}"
                )
            incremental_notes[name] = "no Modified_Time: read whole again"
            if module in capped and PAGE_CAP_MESSAGE not in incremental_errors.get(module, ""):
                failures.append(f"incremental read of {module}: no DISCRETE_PAGINATION_LIMIT_EXCEEDED")
    if _unexpected(incremental_errors, capped):
        failures.append(f"incremental read: unexpected errors {_unexpected(incremental_errors, capped)}")
    if status != 0 and not expect_failed_read:
        failures.append(f"incremental read exited {status}: {stderr.strip()[-300:]}")

    print(f"\n{'module':<22}{'held':>6}{'full read':>11}{'edited':>8}{'incremental':>13}  note")
    for stream in streams:
        name = stream["name"]
        module = module_of.get(name, "?")
        note = "; ".join(n for n in (full_notes.get(name), incremental_notes.get(name)) if n)
        if stream not in wanted:
            note = "no records: not read"
        print(
            f"{module:<22}{len(held.get(module, [])):>6}{len(full.get(name, [])):>11}"
            f"{len(edited.get(module, ())):>8}{len(incremental.get(name, [])):>13}  {note}"
        )
    calls = Counter(f"{r.method} {_endpoint(r.path)} {r.status}" for r in sim.requests)
    print("\nsimulator answers to the connector: " + ", ".join(f"{k} ×{v}" for k, v in sorted(calls.items())))
    return failures


def _unexpected(errors: dict[str, str], capped: set[str]) -> list[str]:
    """Errors other than the page cap of the modules holding more than 2,000 records."""
    out = [m for m in errors if m != "summary" and m not in capped]
    if "summary" in errors:
        named = set(errors["summary"].split(" | ", 1)[0].split(",")) - {""}
        if not named or named - capped:
            out.append("summary: " + errors["summary"][:300])
    return out


def _endpoint(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/crm/") and len(parts) > 3:
        rest = parts[3:]
        if rest[0] in org_modules():
            rest[0] = "{module}"
        if rest[:2] == ["settings", "modules"] and len(rest) == 3:
            rest[2] = "{api_name}"
        return "/".join(parts[:3] + rest)
    return path


if __name__ == "__main__":
    sys.exit(main())
