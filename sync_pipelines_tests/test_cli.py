"""The command line (``sync-pipelines``), against the Zoho and Moodle simulators over real HTTP.

A newcomer's path first: a grant code from the simulator's self client → ``zoho-auth`` → the env
file holds a refresh token that works → ``check`` passes. Then each failure ``check`` and
``zoho-auth`` must name, what ``status`` shows after a sync, and ``resync`` of one edited record.
"""

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml
from typer.testing import CliRunner

from sync_pipelines.cli import app, mask
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.entities import ENTITIES_BY_NAME
from sync_pipelines.moodle.reconcile import reconcile
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.sandbox.moodle_sim import FUNCTIONS, ROLE_STUDENT
from sync_pipelines.sandbox.zoho_sim import CONSOLE_GRANT_CODE_PATH, DEFAULT_SCOPES
from sync_pipelines.settings import warehouse_url
from sync_pipelines.tenants import DATA_CENTRES
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.webhooks.drop import Attempt, dead_letter, write_event
from sync_pipelines.zoho.client import ZohoClient
from sync_pipelines.zoho.modules import MODULES_BY_NAME
from sync_pipelines.zoho.scopes import REQUIRED_SCOPES, missing_scopes, scope_covers
from sync_pipelines.zoho.sync import sync_module

TENANT = "school_a"
CLIENT_ID, CLIENT_SECRET, CONFIGURED_REFRESH = "cli-client", "cli-secret", "cli-configured-refresh"
MOODLE_TOKEN = "cli-moodle-token"
ENV = {
    "client_id": "SA_ZOHO_CLIENT_ID",
    "client_secret": "SA_ZOHO_CLIENT_SECRET",
    "refresh": "SA_ZOHO_REFRESH_TOKEN",
    "zoho_hook": "SA_ZOHO_WEBHOOK_SECRET",
    "moodle": "SA_MOODLE_TOKEN",
    "moodle_hook": "SA_MOODLE_WEBHOOK_SECRET",
}
VIEWALLDETAILS = "moodle/user:viewalldetails"


@dataclass
class World:
    zoho: ZohoSimulator
    moodle: MoodleSimulator
    folder: Path
    clock: list[datetime]

    @property
    def env_file(self) -> Path:
        return self.folder / ".env"

    def run(self, *args: str) -> "Result":
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    def use_configured_token(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Skip zoho-auth: the refresh token the simulator was started with."""
        monkeypatch.setenv(ENV["refresh"], CONFIGURED_REFRESH)

    def zoho_client(self) -> ZohoClient:
        return ZohoClient(
            tenant_id=TENANT,
            accounts_url=self.zoho.accounts_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_token=CONFIGURED_REFRESH,
            sleep=lambda _s: None,
        )

    def sync(self, store: Warehouse, *modules: str) -> None:
        client = self.zoho_client()
        for name in modules:
            sync_module(tenant_id=TENANT, spec=MODULES_BY_NAME[name], client=client, warehouse=store)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    saved = dict(os.environ)  # the commands put what they read from the env file into os.environ
    clock = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
    zoho = ZohoSimulator(
        data=generate_school(7, scale=0.02),
        clients={CLIENT_ID: (CLIENT_SECRET, CONFIGURED_REFRESH)},
        refresh_limit_per_minute=None,
        enforce_scopes=True,
        clock=lambda: clock[0],
    )
    moodle = MoodleSimulator(tokens={MOODLE_TOKEN: None})
    zoho.start()
    moodle.start()
    tenants = {
        "tenants": [
            {
                "id": TENANT,
                "name": "School A",
                "zoho": {
                    "accounts_url": zoho.accounts_url,
                    "api_domain": zoho.api_domain,
                    "client_id_env": ENV["client_id"],
                    "client_secret_env": ENV["client_secret"],
                    "refresh_token_env": ENV["refresh"],
                    "webhook_secret_env": ENV["zoho_hook"],
                },
                "moodle": {
                    "base_url": moodle.base_url,
                    "token_env": ENV["moodle"],
                    "webhook_secret_env": ENV["moodle_hook"],
                },
            }
        ]
    }
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump(tenants))
    monkeypatch.chdir(tmp_path)
    for name in ("WAREHOUSE_URL", "SYNC_DATABASE_URL", "DAGSTER_HOME", ENV["refresh"]):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(tmp_path / "tenants.yaml"))
    monkeypatch.setenv("SYNC_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("SYNC_DROP_DIR", str(tmp_path / "drop"))
    monkeypatch.setenv(ENV["client_id"], CLIENT_ID)
    monkeypatch.setenv(ENV["client_secret"], CLIENT_SECRET)
    monkeypatch.setenv(ENV["zoho_hook"], "zoho-hook-secret")
    monkeypatch.setenv(ENV["moodle"], MOODLE_TOKEN)
    monkeypatch.setenv(ENV["moodle_hook"], "moodle-hook-secret")
    try:
        yield World(zoho, moodle, tmp_path, clock)
    finally:
        zoho.stop()
        moodle.stop()
        os.environ.clear()
        os.environ.update(saved)


def _env_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --- the newcomer's path ----------------------------------------------------------------------------


def test_a_grant_code_becomes_a_stored_refresh_token_and_check_passes(world: World) -> None:
    code = world.zoho.issue_grant_code(CLIENT_ID)
    auth = world.run("zoho-auth", TENANT, "--code", code)
    assert auth.exit_code == 0, auth.stdout + auth.stderr
    [minted] = world.zoho.refresh_tokens(CLIENT_ID)  # the one refresh token the exchange made
    assert _env_lines(world.env_file) == [f"{ENV['refresh']}={minted}"]
    assert stat.S_IMODE(world.env_file.stat().st_mode) == 0o600
    assert minted not in auth.stdout + auth.stderr  # shown masked only
    assert mask(minted) in auth.stdout and ENV["refresh"] in auth.stdout
    assert "set -a; . .env; set +a" in auth.stdout  # how to export it
    assert f"OK zoho: all {len(REQUIRED_SCOPES)} scopes a sync needs are granted" in auth.lines

    os.environ.pop(ENV["refresh"], None)  # a new shell: only the env file holds the token
    checked = world.run("check", TENANT)
    assert checked.exit_code == 0, checked.stdout
    assert not [line for line in checked.lines if line.startswith("FAIL")]
    assert checked.lines[0].startswith(
        "OK zoho: token valid: refreshed at 127.0.0.1:"
    )  # the stored token works
    assert "OK zoho: 3/3 scopes a sync needs granted" in checked.lines
    assert "OK zoho: 9/9 modules readable (one record read from each)" in checked.lines
    assert "OK moodle: 20/20 functions" in checked.lines
    assert any(line.startswith("OK zoho: the org has every module and field") for line in checked.lines)
    assert any(line.startswith("OK moodle: token valid") for line in checked.lines)
    assert checked.lines[-1].startswith(f"check {TENANT}: ") and "FAIL" not in checked.lines[-1]


def test_the_env_file_keeps_other_lines_and_replaces_the_token(world: World) -> None:
    world.env_file.write_text(f"# school A\nOTHER=1\nexport {ENV['refresh']}=old-token\nLAST='x y'\n")
    world.env_file.chmod(0o644)
    result = world.run("zoho-auth", TENANT, "--code", world.zoho.issue_grant_code(CLIENT_ID))
    assert result.exit_code == 0, result.stderr
    [minted] = world.zoho.refresh_tokens(CLIENT_ID)
    assert _env_lines(world.env_file) == ["# school A", "OTHER=1", f"{ENV['refresh']}={minted}", "LAST='x y'"]
    assert stat.S_IMODE(world.env_file.stat().st_mode) == 0o600
    assert "replaced" in result.stdout


def test_the_sandbox_console_route_gives_a_code_zoho_auth_accepts(world: World) -> None:
    answer = requests.post(
        f"{world.zoho.base_url}{CONSOLE_GRANT_CODE_PATH}",
        data={"client_id": CLIENT_ID, "scope": ",".join(REQUIRED_SCOPES)},
        timeout=10,
    ).json()
    assert answer["expires_in"] == 180
    result = world.run("zoho-auth", TENANT, "--code", answer["code"])
    assert result.exit_code == 0, result.stderr
    assert world.zoho.refresh_tokens(CLIENT_ID) == {
        _env_lines(world.env_file)[0].split("=", 1)[1]: tuple(REQUIRED_SCOPES)
    }


# --- zoho-auth: what it refuses, in one line --------------------------------------------------------


def test_a_used_or_expired_grant_code_is_refused_in_one_line(world: World) -> None:
    code = world.zoho.issue_grant_code(CLIENT_ID)
    assert world.run("zoho-auth", TENANT, "--code", code).exit_code == 0
    stored = world.env_file.read_text()

    again = world.run("zoho-auth", TENANT, "--code", code)
    assert again.exit_code == 1 and again.stdout == ""
    [line] = again.stderr.splitlines()
    assert line.startswith("error: the grant code was refused (invalid_code)") and "already used" in line

    late = world.zoho.issue_grant_code(CLIENT_ID, ttl_seconds=180)
    world.clock[0] += timedelta(seconds=181)
    expired = world.run("zoho-auth", TENANT, "--code", late)
    assert expired.exit_code == 1 and "invalid_code" in expired.stderr and "expired" in expired.stderr
    assert world.env_file.read_text() == stored  # nothing written on a refusal


def test_a_wrong_data_centre_or_missing_variables_are_named(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another data centre's accounts server does not know the client.
    elsewhere = ZohoSimulator(clients={"someone-else": ("x", "y")})
    elsewhere.start()
    try:
        tenants = yaml.safe_load(Path("tenants.yaml").read_text())
        tenants["tenants"][0]["zoho"]["accounts_url"] = elsewhere.accounts_url
        Path("other.yaml").write_text(yaml.safe_dump(tenants))
        code = world.zoho.issue_grant_code(CLIENT_ID)
        wrong = world.run("zoho-auth", TENANT, "--code", code, "--tenants-file", "other.yaml")
    finally:
        elsewhere.stop()
    assert wrong.exit_code == 1
    [line] = wrong.stderr.splitlines()
    assert "invalid_client" in line and "--data-centre" in line and ENV["client_secret"] in line

    unknown = world.run("zoho-auth", TENANT, "--code", code, "--data-centre", "mars")
    assert (
        unknown.exit_code == 2 and "unknown data centre 'mars'" in unknown.stderr and "eu" in unknown.stderr
    )

    monkeypatch.delenv(ENV["client_secret"])
    missing = world.run("zoho-auth", TENANT, "--code", code)
    assert missing.exit_code == 1
    assert f"environment variable {ENV['client_secret']} is not set" in missing.stderr
    assert not world.env_file.exists()
    # No refusal used the code up: it still works.
    monkeypatch.setenv(ENV["client_secret"], CLIENT_SECRET)
    assert world.run("zoho-auth", TENANT, "--code", code).exit_code == 0


def test_the_data_centre_option_picks_the_accounts_server_and_says_what_to_configure(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(DATA_CENTRES, "com.au", (world.zoho.accounts_url, world.zoho.api_domain))
    tenants = yaml.safe_load(Path("tenants.yaml").read_text())
    tenants["tenants"][0]["zoho"]["accounts_url"] = "https://accounts.zoho.eu"  # not where the client is
    Path("eu.yaml").write_text(yaml.safe_dump(tenants))
    code = world.zoho.issue_grant_code(CLIENT_ID)
    result = world.run(
        "zoho-auth", TENANT, "--code", code, "--data-centre", "au", "--tenants-file", "eu.yaml"
    )
    assert result.exit_code == 0, result.stderr
    [minted] = world.zoho.refresh_tokens(CLIENT_ID)
    assert _env_lines(world.env_file) == [f"{ENV['refresh']}={minted}"]
    [warning] = [line for line in result.lines if line.startswith("WARN")]
    assert "https://accounts.zoho.eu" in warning and "zoho.data_centre: com.au" in warning


def test_an_unknown_tenant_is_a_usage_error(world: World) -> None:
    result = world.run("check", "school_b")
    assert result.exit_code == 2 and "tenant school_b is not in the tenants file" in result.stderr


# --- check: each failure named ------------------------------------------------------------------


def test_check_names_a_scope_the_token_lacks(world: World) -> None:
    scopes = ("ZohoCRM.modules.ALL", "ZohoCRM.settings.modules.READ")
    auth = world.run("zoho-auth", TENANT, "--code", world.zoho.issue_grant_code(CLIENT_ID, scopes=scopes))
    assert auth.exit_code == 1  # stored, but a sync could not use it
    assert (
        "FAIL zoho: scope ZohoCRM.settings.fields.READ not granted (needed to read each module's fields, "
        "/settings/fields)"
    ) in auth.lines
    checked = world.run("check", TENANT)
    assert checked.exit_code == 1
    failed = [line for line in checked.lines if line.startswith("FAIL")]
    assert failed[0].startswith("FAIL zoho: scope ZohoCRM.settings.fields.READ not granted")
    # ... and Zoho refuses the field metadata read that needs it.
    assert any(
        line.startswith("FAIL zoho: the org's metadata cannot be read") and "OAUTH_SCOPE_MISMATCH" in line
        for line in failed
    )
    assert "OK zoho: 9/9 modules readable (one record read from each)" in checked.lines


def test_check_names_a_field_the_org_lacks(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.use_configured_token(monkeypatch)
    world.zoho.remove_field("BTEC_Students", "Academic_Email")
    checked = world.run("check", TENANT)
    assert checked.exit_code == 1
    [failed] = [line for line in checked.lines if line.startswith("FAIL")]
    assert failed.startswith(
        "FAIL zoho: org: module students (BTEC_Students), field Academic_Email: not in the org"
    )
    assert "zoho.fields.students.Academic_Email" in failed  # how to map it


def test_check_names_a_missing_moodle_capability_and_function(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.use_configured_token(monkeypatch)
    client = MoodleClient(tenant_id=TENANT, base_url=world.moodle.base_url, token=MOODLE_TOKEN)
    [user] = client.create_users(
        [
            {
                "username": "s1",
                "password": "Probe#2026x",
                "firstname": "S",
                "lastname": "One",
                "email": "s1@example.invalid",
                "idnumber": "z-1",
            }
        ]
    )
    [course] = client.create_courses([{"fullname": "Course 1", "shortname": "C1", "categoryid": 1}])
    client.enrol([{"roleid": ROLE_STUDENT, "userid": user.value["id"], "courseid": course.value["id"]}])
    world.moodle.set_missing_capabilities({VIEWALLDETAILS})
    world.moodle.tokens[MOODLE_TOKEN] = frozenset(FUNCTIONS) - {"enrol_manual_unenrol_users"}

    checked = world.run("check", TENANT)
    assert checked.exit_code == 1
    failed = [line for line in checked.lines if line.startswith("FAIL")]
    assert (
        "FAIL moodle: 19/20 functions: the token's service lacks enrol_manual_unenrol_users "
        "(setup_pipeline.php brings the service in line)"
    ) in failed
    assert any(line.startswith(f"FAIL moodle: capability {VIEWALLDETAILS} missing: ") for line in failed)
    assert not [line for line in failed if line.startswith("FAIL zoho")]


def test_check_names_an_unset_secret(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV["moodle_hook"])
    checked = world.run("check", TENANT, "--json")
    assert checked.exit_code == 1
    report = json.loads(checked.stdout)
    failed = {(f["side"], f["check"]): f["message"] for f in report["findings"] if f["status"] == "FAIL"}
    assert set(failed) == {("zoho", "secrets"), ("moodle", "webhook_secret")}
    assert ENV["refresh"] in failed["zoho", "secrets"] and "zoho-auth" in failed["zoho", "secrets"]
    assert ENV["moodle_hook"] in failed["moodle", "webhook_secret"]
    assert report["ok"] is False


# --- status ---------------------------------------------------------------------------------------


def test_status_shows_invalid_and_skipped_reasons_and_events(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.use_configured_token(monkeypatch)
    bad = world.zoho.records("BTEC_Students")[0]["id"]
    world.zoho.update("BTEC_Students", bad, First_Name="")
    store = Warehouse(warehouse_url())
    try:
        world.sync(store, "students", "teachers")
        moodle = MoodleClient(tenant_id=TENANT, base_url=world.moodle.base_url, token=MOODLE_TOKEN)
        reconcile(ENTITIES_BY_NAME["users"], moodle, store, TENANT)
        invalid = store.accounted_for(TENANT, MODULES_BY_NAME["students"])["invalid"]
        skipped = store.moodle.push_results(TENANT)["outcome"].eq("skipped").sum()
    finally:
        store.dispose()
    assert invalid >= 1 and skipped >= 1
    drop = world.folder / "drop"
    payload = {"module": "BTEC_Students", "event_type": "updated", "record_ids": [bad]}
    write_event(drop, TENANT, "zoho", "zoho.notification", payload)
    _, dead = write_event(drop, TENANT, "zoho", "zoho.notification", payload)
    assert dead is not None
    dead_letter(
        dead, None, [Attempt("run-1", "FAILURE", "Zoho CRM: HTTP 500 INTERNAL_ERROR", "2026-03-02T09:00:00Z")]
    )

    result = world.run("status", TENANT)
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    students = next(line for line in result.lines if line.strip().startswith("students"))
    assert "[full: NEW" in students and students.endswith(f" live, {invalid} INVALID")
    assert next(line for line in result.lines if line.strip().startswith("payments")).endswith("never synced")
    assert f"INVALID records: {invalid}" in result.lines
    assert f"1 × students.First_Name: required (e.g. {bad})" in out
    assert f"SKIPPED records: {skipped}" in result.lines
    assert "1 × user: no Moodle account: First_Name: required (empty)" in out
    assert "  zoho    1 pending" in out and "1 dead-lettered" in out
    assert "dead × Zoho CRM: HTTP 500 INTERNAL_ERROR" in out
    report = json.loads(world.run("status", TENANT, "--json").stdout)
    assert report["invalid"] == invalid and report["moodle"]["skipped"] == skipped
    assert report["events"]["zoho"]["pending"] == 1 and report["events"]["zoho"]["dead"] == 1


# --- resync ---------------------------------------------------------------------------------------


def test_resync_of_one_edited_record_stores_the_edit(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.use_configured_token(monkeypatch)
    student = world.zoho.records("BTEC_Students")[1]
    store = Warehouse(warehouse_url())
    try:
        world.sync(store, "students")
        world.zoho.update("BTEC_Students", student["id"], First_Name="Renamed")
        result = world.run("resync", TENANT, "students", student["id"], "--zoho-only")
        assert result.exit_code == 0, result.stdout + result.stderr
        assert f"OK zoho → warehouse: BTEC_Students {student['id']} UPDATED" in result.stdout
        assert f"First_Name: {student['First_Name']!r} → 'Renamed'" in result.stdout
        row = store.read_table(TENANT, MODULES_BY_NAME["students"]).set_index("zoho_id").loc[student["id"]]
        assert row["first_name"] == "Renamed"
    finally:
        store.dispose()


def test_resync_pushes_the_edit_through_to_moodle(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.use_configured_token(monkeypatch)
    home = world.folder / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the run is kept where the UI shows it
    store = Warehouse(warehouse_url())
    try:
        world.sync(store, "students", "teachers")
        moodle = MoodleClient(tenant_id=TENANT, base_url=world.moodle.base_url, token=MOODLE_TOKEN)
        reconcile(ENTITIES_BY_NAME["users"], moodle, store, TENANT)
        users = store.moodle.id_map(TENANT, "user")
        zoho_id = next(z for z in users.index if world.zoho.record("BTEC_Students", z))
        moodle_id = int(users.at[zoho_id, "moodle_id"])
    finally:
        store.dispose()
    world.zoho.update("BTEC_Students", zoho_id, Last_Name="Newname")

    result = world.run("resync", TENANT, "BTEC_Students", zoho_id)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"OK zoho → warehouse: BTEC_Students {zoho_id} UPDATED" in result.stdout
    assert f"OK moodle user update success (id {moodle_id})" in result.lines
    assert world.moodle.user(moodle_id)["lastname"] == "Newname"
    run_id = result.lines[-1].split()[1].rstrip(":")
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.tags["sync/record"] == f"students:{zoho_id}"


# --- scopes: the client's reading and the simulator's agree -------------------------------------------


@pytest.mark.parametrize(
    ("granted", "needed", "covers"),
    [
        ("ZohoCRM.modules.ALL", "ZohoCRM.modules.custom.READ", True),
        ("ZohoCRM.modules.all", "ZohoCRM.modules.ALL", True),
        ("ZohoCRM.settings.ALL", "ZohoCRM.settings.fields.READ", True),
        ("ZohoCRM.settings.fields.READ", "ZohoCRM.settings.modules.READ", False),
        ("ZohoCRM.modules.READ", "ZohoCRM.modules.ALL", False),
        ("ZohoCRM.modules.WRITE", "ZohoCRM.modules.products.UPDATE", True),
        ("ZohoCRM.modules.WRITE", "ZohoCRM.modules.products.READ", False),
        ("ZohoCRM.settings.ALL", "ZohoCRM.modules.custom.READ", False),
        ("ZohoBooks.fullaccess.all", "ZohoCRM.modules.custom.READ", False),
    ],
)
def test_scope_coverage(granted: str, needed: str, covers: bool) -> None:
    assert scope_covers(granted, needed) is covers


def test_the_simulator_grants_what_a_sync_needs() -> None:
    assert missing_scopes(DEFAULT_SCOPES) == []
    assert missing_scopes(["ZohoCRM.modules.ALL"]) == [
        "ZohoCRM.settings.modules.READ",
        "ZohoCRM.settings.fields.READ",
    ]
