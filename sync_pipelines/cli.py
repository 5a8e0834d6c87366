"""The command line: ``sync-pipelines zoho-auth | check | status | resync``.

Built with `Typer <https://typer.tiangolo.com>`_, the well-kept command-line library built on
Click (type hints become options and arguments, ``--help`` comes for free, and
``typer.testing.CliRunner`` runs a command in-process for the tests).

* ``zoho-auth <tenant> --code <grant code>``: exchanges a self client's grant code for a refresh
  token at the school's Zoho accounts server and writes it to an env file (default ``.env`` in the
  working directory, mode 0600) under the variable the tenant's ``zoho.refresh_token_env`` names;
  prints the scopes the token holds against :data:`REQUIRED_SCOPES`.
* ``check <tenant>``: one line per finding (``OK``, ``WARN``, ``SKIP`` or ``FAIL``, the side, what
  was found): the Zoho token refreshes, its scopes, the org against the module table
  (:func:`sync_pipelines.zoho.org.tenant_modules`), one record read from each module, the webhook
  secrets; the Moodle token, the service's functions and the capability preflight
  (:func:`sync_pipelines.moodle.preflight.preflight`). Exits 1 on any ``FAIL``.
* ``status <tenant>``: from the warehouse and the drop folders: the last sync of each module and
  Moodle entity, INVALID records and SKIPPED pushes with their top reasons, pending and
  dead-lettered webhook events.
* ``resync <tenant> <module> <zoho id>``: one record end to end, as a Zoho webhook event would
  take it: a run of the main job's assets that the module feeds (:func:`zoho_route`), the module's
  asset reading only that record by id; prints what the warehouse and Moodle did with it.

Every command first reads the env file (``--env-file``, default ``.env``) for the variables the
environment does not already set, as Dagster does for ``dagster dev``: a refresh token written by
``zoho-auth`` is used by the next ``check`` without an ``export``. Secrets are never printed: the
refresh token is shown masked (:func:`mask`).
"""

import itertools
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from dotenv import dotenv_values, set_key

from sync_pipelines.tenants import DATA_CENTRES, Tenant, TenantConfigError, read_tenants
from sync_pipelines.zoho.scopes import REQUIRED_SCOPES, missing_scopes, parse_scopes

app = typer.Typer(
    name="sync-pipelines",
    help="Onboard, check and inspect a school's Zoho CRM ↔ Moodle sync.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: ``--data-centre`` values: the tenants file's ``data_centre`` keys and the short names Zoho's
#: pages use (US is ``.com``, Australia ``.com.au``, China ``.com.cn``).
DATA_CENTRE_ALIASES: dict[str, str] = {"us": "com", "au": "com.au", "cn": "com.cn"}

DEFAULT_ENV_FILE = Path(".env")

TenantArg = Annotated[str, typer.Argument(help="The tenant id (the school), as the tenants file lists it.")]
TenantsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--tenants-file",
        help="The tenants file (default: $SYNC_TENANTS_FILE, else tenants.yaml).",
        dir_okay=False,
    ),
]
EnvFileOpt = Annotated[
    Path,
    typer.Option(
        "--env-file",
        help="The env file read for variables the environment does not set (and written by zoho-auth).",
        dir_okay=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")]


class CommandError(Exception):
    """What stops a command: printed as one line ``error: …``, exit code 2 (usage) or 1."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def main() -> None:
    """The ``sync-pipelines`` entry point (``[project.scripts]``)."""
    app()


def _fail(exc: Exception, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code)


# --- env file -------------------------------------------------------------------------------------


_PLAIN_VALUE = re.compile(r"[A-Za-z0-9._\-+/=:@,~]*")


def load_env_file(path: Path) -> list[str]:
    """Put the variables of ``path`` the environment does not set into ``os.environ``
    (python-dotenv, the library Dagster itself reads ``.env`` with).

    Returns:
        The names taken from the file (none when it does not exist).
    """
    if not path.is_file():
        return []
    taken = []
    for name, value in dotenv_values(path).items():
        if value is not None and not os.environ.get(name):
            os.environ[name] = value
            taken.append(name)
    return taken


def write_env_var(path: Path, name: str, value: str) -> bool:
    """Set ``name=value`` in the env file ``path`` with python-dotenv's ``set_key``: the line for
    ``name`` replaced (every other line kept), or added; the file is rewritten through a temporary
    file and kept at mode 0600 (it holds secrets). A symbolic link is followed.

    Returns:
        Whether a line for ``name`` was there before.
    """
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # never world-readable, even briefly
    os.chmod(path, 0o600)
    existed = name in dotenv_values(path)
    # A token of plain characters is written bare, so `. .env` in any shell reads it as it is.
    set_key(path, name, value, quote_mode="never" if _PLAIN_VALUE.fullmatch(value) else "always")
    os.chmod(path, 0o600)
    return existed


def mask(secret: str) -> str:
    """A secret as it may be shown: its first 5 and last 4 characters, e.g. ``1000.…9f2c``."""
    if len(secret) < 16:
        return "…" * 3
    return f"{secret[:5]}…{secret[-4:]}"


def _tenant(tenant_id: str, tenants_file: Path | None) -> Tenant:
    try:
        return read_tenants(tenants_file).get(tenant_id)
    except TenantConfigError as exc:
        raise CommandError(str(exc), code=2) from None


def _setup(env_file: Path, tenants_file: Path | None, tenant_id: str) -> Tenant:
    load_env_file(env_file)
    return _tenant(tenant_id, tenants_file)


def data_centre_key(data_centre: str) -> str:
    """The tenants file's ``data_centre`` key of a ``--data-centre`` value (``us`` → ``com``)."""
    key = DATA_CENTRE_ALIASES.get(data_centre.lower(), data_centre.lower())
    if key not in DATA_CENTRES:
        choices = ", ".join(sorted({*DATA_CENTRES, *DATA_CENTRE_ALIASES}))
        raise CommandError(f"unknown data centre {data_centre!r}: one of {choices}", code=2)
    return key


def _accounts_url(data_centre: str | None, tenant: Tenant) -> str:
    if data_centre is None:
        return tenant.zoho.accounts_url
    return DATA_CENTRES[data_centre_key(data_centre)][0]


def _host(url: str) -> str:
    return re.sub(r"^https?://", "", url).rstrip("/")


# --- zoho-auth ------------------------------------------------------------------------------------

#: What Zoho's token endpoint means by each ``error`` of a grant-code exchange, and what to do.
_CODE_ERRORS = {
    "invalid_code": (
        "the grant code was refused (invalid_code): it is mistyped, expired (a self client's code "
        "lives 3 minutes unless you chose longer) or already used: generate a new one in the API "
        "console (Self Client → Generate Code) and run this again at once"
    ),
    "invalid_client": (
        "{host} does not know this client (invalid_client): check {id_env} and {secret_env} "
        "(Self Client → Client Secret), or the self client lives in another data centre: pass "
        "--data-centre (us, eu, in, au, jp, ca, sa, cn)"
    ),
    "invalid_redirect_uri": "Zoho refused the redirect URI (invalid_redirect_uri): a self client needs none",
    "Access Denied": (
        "Zoho's token endpoint is throttling this client (Access Denied): wait 10 minutes and "
        "run this again with a new code"
    ),
}


@app.command("zoho-auth")
def zoho_auth(
    tenant_id: TenantArg,
    code: Annotated[
        str, typer.Option("--code", help="The grant code from the API console (Self Client → Generate Code).")
    ],
    data_centre: Annotated[
        str | None,
        typer.Option(
            "--data-centre",
            help="Where the self client lives: us, eu, in, au, jp, ca, sa, cn (default: the tenant's "
            "accounts URL from the tenants file).",
        ),
    ] = None,
    redirect_uri: Annotated[
        str | None, typer.Option("--redirect-uri", help="Only for a web client: its redirect URI.")
    ] = None,
    env_file: EnvFileOpt = DEFAULT_ENV_FILE,
    tenants_file: TenantsFileOpt = None,
) -> None:
    """Exchange a self client's grant code for a refresh token and store it in the env file."""
    try:
        tenant = _setup(env_file, tenants_file, tenant_id)
        accounts = _accounts_url(data_centre, tenant)
        answer = _exchange_code(tenant, accounts, code, redirect_uri)
    except CommandError as exc:
        raise _fail(exc, exc.code) from None
    z = tenant.zoho
    refresh = str(answer["refresh_token"])
    replaced = write_env_var(env_file, z.refresh_token_env, refresh)
    os.environ[z.refresh_token_env] = refresh  # for anything this process runs next
    api_domain = answer.get("api_domain") or z.api_domain or ""
    typer.echo(f"OK zoho: {_host(accounts)} accepted the grant code (API domain {api_domain or 'not named'})")
    typer.echo(
        f"OK zoho: refresh token {mask(refresh)} {'replaced' if replaced else 'written'} as "
        f"{z.refresh_token_env} in {env_file.resolve()} (mode 0600)"
    )
    typer.echo(
        f"     Dagster (dagster dev, make dev) and this command read {env_file.name} from the folder they "
        f"start in; for a shell: set -a; . {env_file}; set +a"
    )
    if accounts != tenant.zoho.accounts_url:
        typer.echo(
            f"WARN zoho: the tenants file says {tenant.zoho.accounts_url} for {tenant.id}, where this "
            f"token cannot be refreshed: set its zoho.data_centre: {data_centre_key(data_centre or '')} "
            f"(or zoho.accounts_url: {accounts})"
        )
    granted = parse_scopes(answer.get("scope"))
    problems = _report_scopes(granted)
    if problems:
        raise typer.Exit(1)


def _exchange_code(tenant: Tenant, accounts: str, code: str, redirect_uri: str | None) -> dict:
    """POST the grant code to ``{accounts}/oauth/v2/token``; the answer, or a CommandError that
    says what went wrong. One attempt only: a code is single-use, and a retry after an answer
    lost on the way would be refused."""
    import requests

    z = tenant.zoho
    missing = [name for name in (z.client_id_env, z.client_secret_env) if not os.environ.get(name)]
    if missing:
        raise CommandError(
            f"environment variable{'s' if len(missing) > 1 else ''} {' and '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not set (the tenants file names "
            f"{'them' if len(missing) > 1 else 'it'} for {tenant.id}): put the self client's Client ID "
            "and Client Secret there (export, or a line in the env file)"
        )
    code = code.strip()
    if not code:
        raise CommandError("--code is empty: paste the grant code the API console showed", code=2)
    form = {
        "grant_type": "authorization_code",
        "client_id": os.environ[z.client_id_env],
        "client_secret": os.environ[z.client_secret_env],
        "code": code,
    }
    if redirect_uri:
        form["redirect_uri"] = redirect_uri
    url = f"{accounts}/oauth/v2/token"
    try:
        response = requests.post(url, data=form, timeout=(10, 60))
    except requests.RequestException as exc:
        raise CommandError(f"cannot reach {url}: {type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CommandError(
            f"{url} answered HTTP {response.status_code} without JSON: is it a Zoho accounts server?"
        )
    error = body.get("error")
    if error is not None:
        template = _CODE_ERRORS.get(str(error))
        if template is None:
            detail = body.get("error_description") or ""
            raise CommandError(
                f"{_host(accounts)} refused the grant code: {error}{f': {detail}' if detail else ''}"
            )
        raise CommandError(
            template.format(host=_host(accounts), id_env=z.client_id_env, secret_env=z.client_secret_env)
        )
    if not body.get("refresh_token"):
        raise CommandError(
            f"{_host(accounts)} answered without a refresh token (HTTP {response.status_code}): generate a "
            "new grant code in the API console's Self Client (a code made for online access gives none)"
        )
    return body


def _report_scopes(granted: Sequence[str]) -> list[str]:
    """Print the granted scopes against :data:`REQUIRED_SCOPES`; the missing ones."""
    if not granted:
        typer.echo(
            "WARN zoho: the token answer named no scopes: `sync-pipelines check` reads each module to be sure"
        )
        return []
    typer.echo(f"OK zoho: scopes granted: {' '.join(granted)}")
    missing = missing_scopes(granted)
    for scope in missing:
        typer.echo(f"FAIL zoho: scope {scope} not granted (needed {REQUIRED_SCOPES[scope]})")
    if missing:
        typer.echo(
            "     generate a new grant code with the scopes "
            + ",".join(REQUIRED_SCOPES)
            + " and run zoho-auth again"
        )
    else:
        typer.echo(f"OK zoho: all {len(REQUIRED_SCOPES)} scopes a sync needs are granted")
    return missing


# --- check ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One finding of ``check``: ``status`` OK, WARN, SKIP or FAIL; ``side`` zoho or moodle."""

    status: str
    side: str
    check: str
    message: str

    def line(self) -> str:
        return f"{self.status} {self.side}: {self.message}"


def _zoho_client(tenant: Tenant) -> Any:
    """A client sharing the runs' token store (:mod:`sync_pipelines.zoho.tokens`): a token an
    earlier run obtained is used, a refresh ``check`` makes serves the next run, and a throttle of
    the token endpoint (10 refreshes in 10 minutes) is respected, not made worse."""
    from sync_pipelines.zoho.client import ZohoClient
    from sync_pipelines.zoho.tokens import FileTokenStore

    z = tenant.zoho
    return ZohoClient(
        tenant_id=tenant.id,
        accounts_url=z.accounts_url,
        api_domain=z.api_domain,
        client_id=os.environ[z.client_id_env],
        client_secret=os.environ[z.client_secret_env],
        refresh_token=os.environ[z.refresh_token_env],
        timeout=(5.0, 30.0),
        max_retries=2,
        backoff_base=0.2,
        token_cache=FileTokenStore(),
        token_wait_seconds=0.0,
    )


def _token_problem(exc: Exception) -> str:
    code = getattr(exc, "code", "")
    hints = {
        "invalid_code": "the refresh token is wrong or revoked: run zoho-auth with a new grant code",
        "invalid_client": "the client id or secret is wrong, or the accounts URL is another data centre's",
        "Access Denied": "Zoho is throttling token requests: wait 10 minutes",
    }
    hint = hints.get(code)
    return f"{exc}" + (f" ({hint})" if hint else "")


def check_zoho(tenant: Tenant) -> list[Check]:
    """The Zoho half of ``check``."""
    from sync_pipelines.zoho.client import ZohoError
    from sync_pipelines.zoho.modules import MODULES
    from sync_pipelines.zoho.org import OrgSchemaError, fetch_org, org_module_names, tenant_modules

    z = tenant.zoho
    out: list[Check] = []
    names = {
        z.client_id_env: "zoho.client_id_env",
        z.client_secret_env: "zoho.client_secret_env",
        z.refresh_token_env: "zoho.refresh_token_env",
    }
    unset = [name for name in names if not os.environ.get(name)]
    for name in unset:
        hint = " (run sync-pipelines zoho-auth)" if name == z.refresh_token_env else ""
        out.append(
            Check("FAIL", "zoho", "secrets", f"environment variable {name} ({names[name]}) is not set{hint}")
        )
    if unset:
        return [*out, *_webhook_check(tenant, "zoho")]

    with _zoho_client(tenant) as client:
        # The first call asks for an access token: a failure there is the token's.
        try:
            org = fetch_org(tenant.id, client, org_module_names(z.mapping))
        except ZohoError as exc:
            if exc.endpoint == "token":
                out.append(
                    Check(
                        "FAIL",
                        "zoho",
                        "token",
                        f"token refresh at {z.accounts_url} failed: {_token_problem(exc)}",
                    )
                )
                return [*out, *_webhook_check(tenant, "zoho")]
            org = None
            org_error = exc
        how = (
            f"refreshed at {_host(z.accounts_url)}"
            if client.stats.token_refreshes
            else "an access token an earlier run obtained is still valid"
        )
        out.append(Check("OK", "zoho", "token", f"token valid: {how} (API {client.api_domain})"))
        out.extend(_scope_checks(client.granted_scopes))
        specs = None
        if org is None:
            out.append(Check("FAIL", "zoho", "org", f"the org's metadata cannot be read: {org_error}"))
        else:
            try:
                specs = tenant_modules(tenant, org)
            except OrgSchemaError as exc:
                out += [Check("FAIL", "zoho", "org", f"org: {p}") for p in exc.problems]
            else:
                fields = sum(len(s.fields) for s in specs)
                out.append(
                    Check(
                        "OK",
                        "zoho",
                        "org",
                        f"the org has every module and field of the module table ({len(specs)} modules, "
                        f"{fields} fields)",
                    )
                )
        out.extend(_module_reads(client, specs or MODULES, z.mapping if specs is None else None))
    return [*out, *_webhook_check(tenant, "zoho")]


def _scope_checks(granted: Sequence[str]) -> list[Check]:
    if not granted:
        return [
            Check("WARN", "zoho", "scopes", "the token answer named no scopes (each module is read below)")
        ]
    missing = missing_scopes(granted)
    out = [
        Check(
            "FAIL",
            "zoho",
            "scopes",
            f"scope {s} not granted (needed {REQUIRED_SCOPES[s]}); the token holds {' '.join(granted)}",
        )
        for s in missing
    ]
    if not missing:
        out.append(
            Check(
                "OK",
                "zoho",
                "scopes",
                f"{len(REQUIRED_SCOPES)}/{len(REQUIRED_SCOPES)} scopes a sync needs granted",
            )
        )
    return out


def _module_reads(client: Any, specs: Iterable[Any], mapping: Any) -> list[Check]:
    """One record read from each module (per_page=1, one field): what a sync's reads need."""
    from sync_pipelines.zoho.client import ZohoError

    out: list[Check] = []
    specs = list(specs)
    for spec in specs:
        api = mapping.module_api_name(spec.name) if mapping is not None else spec.api_name
        fields = [f.api_name for f in spec.fields if not f.absent][:1] or ["id"]
        try:
            list(itertools.islice(client.iter_records(api, fields, per_page=1), 1))
        except ZohoError as exc:
            out.append(Check("FAIL", "zoho", "modules", f"module {spec.name} ({api}) cannot be read: {exc}"))
    if not out:
        out.append(
            Check(
                "OK",
                "zoho",
                "modules",
                f"{len(specs)}/{len(specs)} modules readable (one record read from each)",
            )
        )
    return out


def _webhook_check(tenant: Tenant, side: str) -> list[Check]:
    env = tenant.zoho_webhook_secret_env if side == "zoho" else tenant.moodle_webhook_secret_env
    if not env:
        who = "Zoho's workflow webhooks" if side == "zoho" else "the local_zohosync plugin's events"
        return [
            Check(
                "WARN",
                side,
                "webhook_secret",
                f"no {side}.webhook_secret_env in the tenants file: {who} are refused (changes wait for "
                "the scheduled runs)",
            )
        ]
    try:
        tenant.zoho_webhook_secret() if side == "zoho" else tenant.moodle_webhook_secret()
    except TenantConfigError as exc:
        return [Check("FAIL", side, "webhook_secret", str(exc).removeprefix(f"tenant {tenant.id}: "))]
    return [Check("OK", side, "webhook_secret", f"webhook secret set ({env})")]


def check_moodle(tenant: Tenant) -> list[Check]:
    """The Moodle half of ``check``."""
    from sync_pipelines.moodle import preflight
    from sync_pipelines.moodle.client import MoodleClient, MoodleError

    m = tenant.moodle
    if m is None:
        return [
            Check("WARN", "moodle", "config", "no moodle section in the tenants file: nothing is provisioned")
        ]
    if not os.environ.get(m.token_env):
        return [
            Check(
                "FAIL",
                "moodle",
                "token",
                f"environment variable {m.token_env} (moodle.token_env) is not set: the token "
                "local/zohosync/cli/setup_pipeline.php printed",
            ),
            *_webhook_check(tenant, "moodle"),
        ]
    out: list[Check] = []
    client = MoodleClient(
        tenant_id=tenant.id,
        base_url=m.base_url,
        token=os.environ[m.token_env],
        timeout=(5.0, 30.0),
        max_retries=2,
    )
    with client:
        try:
            info = client.site_info()
        except MoodleError as exc:
            return [
                Check(
                    "FAIL", "moodle", "token", f"core_webservice_get_site_info at {m.base_url} failed: {exc}"
                ),
                *_webhook_check(tenant, "moodle"),
            ]
        out.append(
            Check(
                "OK",
                "moodle",
                "token",
                f"token valid: {info.get('sitename') or m.base_url} (release {info.get('release') or '?'}), "
                f"as user {info.get('username') or info.get('userid')}",
            )
        )
        functions = {str(f.get("name")) for f in info.get("functions") or [] if isinstance(f, dict)}
        lacking = [f for f in preflight.REQUIRED_FUNCTIONS if f not in functions]
        total = len(preflight.REQUIRED_FUNCTIONS)
        if lacking:
            out.append(
                Check(
                    "FAIL",
                    "moodle",
                    "functions",
                    f"{total - len(lacking)}/{total} functions: the token's service lacks {', '.join(lacking)} "
                    "(setup_pipeline.php brings the service in line)",
                )
            )
        else:
            out.append(Check("OK", "moodle", "functions", f"{total}/{total} functions"))
        known, courses, assessments = _preflight_subjects(tenant.id)
        try:
            findings = preflight.preflight(
                client, known_users=known, course_ids=courses, assessments=assessments
            )
        except MoodleError as exc:
            out.append(Check("FAIL", "moodle", "preflight", f"the capability preflight failed: {exc}"))
            findings = []
        for f in findings:
            if f.check == preflight.CHECK_FUNCTIONS:
                continue  # said above, with the count
            if not f.ok:
                what = f"capability {f.capability} missing" if f.capability else f.check
                out.append(Check("FAIL", "moodle", f.check, f"{what}: {f.message}"))
            elif f.message.startswith("not checked"):
                out.append(Check("SKIP", "moodle", f.check, f"{f.check}: {f.message}"))
            else:
                out.append(Check("OK", "moodle", f.check, f"{f.check}: {f.message}"))
    return [*out, *_webhook_check(tenant, "moodle")]


def _preflight_subjects(tenant_id: str) -> tuple[list[tuple[int, str]], list[int], list[tuple[int, int]]]:
    """The users, courses and assessments the pipeline already manages (as the sync's own
    preflight checks them), from the warehouse when there is one; none before the first run."""
    from sync_pipelines.moodle import preflight

    store = _open_warehouse(required=False)
    if store is None:
        return [], [], []
    try:
        users = store.moodle.id_map(tenant_id, "user")
        courses = store.moodle.id_map(tenant_id, "course")
        rubrics = store.moodle.rubrics(tenant_id)
        return (
            [(int(m), str(z)) for z, m in users["moodle_id"].head(preflight.MAX_USERS).items()],
            [int(m) for m in courses["moodle_id"].head(preflight.MAX_COURSES)],
            [(int(c), int(a)) for c, a in zip(rubrics["cmid"], rubrics["assignment_id"], strict=True)],
        )
    except Exception:  # an older schema or an unreachable database: the preflight finds its own
        return [], [], []
    finally:
        store.dispose()


@app.command("check")
def check(
    tenant_id: TenantArg,
    as_json: JsonOpt = False,
    env_file: EnvFileOpt = DEFAULT_ENV_FILE,
    tenants_file: TenantsFileOpt = None,
) -> None:
    """Check that a school's Zoho and Moodle give the sync what it needs (one line per finding)."""
    try:
        tenant = _setup(env_file, tenants_file, tenant_id)
    except CommandError as exc:
        raise _fail(exc, exc.code) from None
    findings = [*check_zoho(tenant), *check_moodle(tenant)]
    counts = Counter(f.status for f in findings)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "tenant": tenant.id,
                    "ok": not counts["FAIL"],
                    "counts": dict(counts),
                    "findings": [asdict(f) for f in findings],
                },
                indent=1,
                ensure_ascii=False,
            )
        )
    else:
        for finding in findings:
            typer.echo(finding.line())
        summary = ", ".join(f"{counts[s]} {s}" for s in ("OK", "WARN", "SKIP", "FAIL") if counts[s])
        typer.echo(f"check {tenant.id}: {summary}")
    if counts["FAIL"]:
        raise typer.Exit(1)


# --- status ---------------------------------------------------------------------------------------


def _open_warehouse(*, required: bool) -> Any:
    """The warehouse of this environment (``WAREHOUSE_URL``, ``SYNC_DATABASE_URL`` or the embedded
    SQLite file), opened without creating or migrating anything; ``None`` when there is none yet."""
    import sqlalchemy as sa

    from sync_pipelines import settings
    from sync_pipelines.warehouse import Warehouse

    url = settings.warehouse_url()
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        if required:
            raise CommandError(
                f"no warehouse yet at {parsed.database}: no sync has run (make demo, or a first run)"
            )
        return None
    try:
        return Warehouse(url, create=False)
    except Exception as exc:
        if required:
            raise CommandError(
                f"cannot open the warehouse {parsed.render_as_string(hide_password=True)}: {exc}"
            ) from None
        return None


def _ago(moment: Any, now: datetime) -> str:
    if moment is None or (isinstance(moment, float) and moment != moment):
        return "never"
    ts = _aware(moment.to_pydatetime() if hasattr(moment, "to_pydatetime") else moment).astimezone(UTC)
    seconds = max(0, int((now - ts).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{ts:%Y-%m-%d %H:%M:%S}Z ({seconds // size} {unit} ago)"
    return f"{ts:%Y-%m-%d %H:%M:%S}Z ({seconds} s ago)"


_LONG_NUMBER = re.compile(r"\d{6,}")


def _reason_key(text: str) -> str:
    """A push message with its ids blanked, so that equal reasons count together."""
    return _LONG_NUMBER.sub("…", text.strip())


def _zoho_status(store: Any, tenant_id: str, now: datetime) -> tuple[list[dict], list[dict]]:
    """Per module: the last success, a failure after it, live and INVALID rows; and the top
    reasons of the INVALID records (field and rule, from the live rows' findings)."""
    import sqlalchemy as sa

    from sync_pipelines.warehouse.schema import MODULE_TABLES, sync_runs
    from sync_pipelines.zoho.modules import MODULES

    r = sync_runs
    modules: list[dict] = []
    reasons: Counter[str] = Counter()
    examples: dict[str, str] = {}
    with store.engine.connect() as conn:

        def latest(module: str, success: bool) -> Any:
            outcome = r.c.outcome == "success" if success else r.c.outcome != "success"
            q = sa.select(r.c.finished_at, r.c.started_at, r.c.mode, r.c.counts, r.c.error)
            q = q.where(r.c.tenant_id == tenant_id, r.c.module == module, outcome)
            return conn.execute(q.order_by(r.c.started_at.desc()).limit(1)).first()

        for spec in MODULES:
            last, failure = latest(spec.name, True), latest(spec.name, False)
            if (
                failure is not None
                and last is not None
                and _aware(failure.started_at) <= _aware(last.started_at)
            ):
                failure = None
            held = store.accounted_for(tenant_id, spec)
            modules.append(
                {
                    "module": spec.name,
                    "zoho_module": spec.api_name,
                    "last_success": None if last is None else _ago(last.finished_at, now),
                    "mode": None if last is None else last.mode,
                    "counts": json.loads(last.counts) if last is not None and last.counts else {},
                    "live": held["live"],
                    "invalid": held["invalid"],
                    "last_failure": None
                    if failure is None
                    else {
                        "at": _ago(failure.started_at, now),
                        "error": (str(failure.error or "").splitlines() or [""])[0][:300],
                    },
                }
            )
            if not held["invalid"]:
                continue
            t = MODULE_TABLES[spec.name]
            q = sa.select(t.c.zoho_id, t.c.findings).where(
                t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None), t.c.findings.isnot(None)
            )
            for zoho_id, text in conn.execute(q):
                for finding in json.loads(text) if text else []:
                    key = f"{spec.name}.{finding.get('field')}: {finding.get('rule')}"
                    reasons[key] += 1
                    examples.setdefault(key, str(zoho_id))
    top = [{"reason": k, "records": n, "example": examples[k]} for k, n in reasons.most_common(5)]
    return modules, top


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _moodle_status(store: Any, tenant_id: str, now: datetime) -> dict:
    """Per entity (Moodle writes, and the write-backs to Zoho): the last successful write, what
    its latest reconciliation left SKIPPED or failed (every reconciliation logs each record it
    skips again), a step error since; the top reasons; and the last preflight."""
    import sqlalchemy as sa

    from sync_pipelines.warehouse.moodle import moodle_push_results as t

    out: dict[str, Any] = {
        "entities": [],
        "skipped": 0,
        "skipped_reasons": [],
        "errors": 0,
        "error_reasons": [],
    }
    passed_at, findings = store.moodle.preflight(tenant_id)
    out["preflight"] = {
        "passed": None if passed_at is None else _ago(passed_at, now),
        "failing": [f["message"] for f in findings if not f.get("ok")],
    }
    reasons: dict[str, Counter[str]] = {"skipped": Counter(), "error": Counter()}
    mine = t.c.tenant_id == tenant_id
    with store.engine.connect() as conn:
        groups = conn.execute(
            sa.select(t.c.target, t.c.entity)
            .where(mine)
            .group_by(t.c.target, t.c.entity)
            .order_by(t.c.target, t.c.entity)
        ).all()
        for target, entity in groups:
            here = sa.and_(mine, t.c.target == target, t.c.entity == entity)
            last_write = conn.execute(
                sa.select(sa.func.max(t.c.at)).where(here, t.c.outcome == "success")
            ).scalar()
            last = conn.execute(
                sa.select(t.c.dagster_run_id, t.c.at)
                .where(here, t.c.action != "run")
                .order_by(t.c.id.desc())
                .limit(1)
            ).first()
            rows: list[Any] = []
            if last is not None:
                same_run = (
                    t.c.dagster_run_id.is_(None)
                    if last.dagster_run_id is None
                    else t.c.dagster_run_id == last.dagster_run_id
                )
                rows = conn.execute(
                    sa.select(t.c.outcome, t.c.message, t.c.errorcode).where(
                        here, t.c.action != "run", same_run, t.c.outcome.in_(["skipped", "error"])
                    )
                ).all()
            step = conn.execute(
                sa.select(t.c.at, t.c.message)
                .where(here, t.c.action == "run")
                .order_by(t.c.id.desc())
                .limit(1)
            ).first()
            if step is not None and last is not None and _aware(step.at) < _aware(last.at):
                step = None
            for row in rows:
                reasons[row.outcome][f"{entity}: {_reason_key(str(row.message or row.errorcode or ''))}"] += 1
            skipped = sum(1 for row in rows if row.outcome == "skipped")
            errors = len(rows) - skipped
            out["skipped"] += skipped
            out["errors"] += errors
            out["entities"].append(
                {
                    "entity": f"{target}/{entity}",
                    "last_write": _ago(last_write, now) if last_write is not None else "never",
                    "skipped": skipped,
                    "errors": errors,
                    "step_error": None
                    if step is None
                    else {
                        "at": _ago(step.at, now),
                        "error": (str(step.message or "").splitlines() or [""])[0][:300],
                    },
                }
            )
    out["skipped_reasons"] = [{"reason": k, "records": n} for k, n in reasons["skipped"].most_common(5)]
    out["error_reasons"] = [{"reason": k, "records": n} for k, n in reasons["error"].most_common(5)]
    return out


def _events_status(tenant_id: str, now: datetime) -> dict:
    """Pending, quarantined and dead-lettered webhook events of the tenant, per source."""
    from sync_pipelines.webhooks.drop import (
        DEAD_SUFFIX,
        QUARANTINE,
        SOURCES,
        dead_letters,
        drop_dir,
        pending_files,
    )

    root = drop_dir()
    out: dict[str, Any] = {"drop_dir": str(root)}
    for source in SOURCES:
        pending = pending_files(root, source, tenant_id=tenant_id)
        oldest = None
        if pending:
            oldest = _ago(datetime.fromtimestamp(min(p.stat().st_mtime for p in pending), UTC), now)
        dead = dead_letters(root, source, tenant_id)
        quarantined = root / tenant_id / source / QUARANTINE
        out[source] = {
            "pending": len(pending),
            "oldest_pending": oldest,
            "quarantined": len([p for p in quarantined.glob("*.json") if not p.name.endswith(DEAD_SUFFIX)])
            if quarantined.is_dir()
            else 0,
            "dead": len(dead),
            "dead_reasons": [
                {"reason": r, "events": n}
                for r, n in Counter(_reason_key(str(d.get("reason") or "")) for d in dead).most_common(5)
            ],
        }
    return out


@app.command("status")
def status(
    tenant_id: TenantArg,
    as_json: JsonOpt = False,
    env_file: EnvFileOpt = DEFAULT_ENV_FILE,
    tenants_file: TenantsFileOpt = None,
) -> None:
    """What the warehouse and the drop folders say of a school: last syncs, INVALID and SKIPPED, events."""
    now = datetime.now(UTC)
    try:
        tenant = _setup(env_file, tenants_file, tenant_id)
        store = _open_warehouse(required=False)
    except CommandError as exc:
        raise _fail(exc, exc.code) from None
    report: dict[str, Any] = {"tenant": tenant.id, "warehouse": None}
    if store is not None:
        try:
            modules, invalid_reasons = _zoho_status(store, tenant.id, now)
            report["warehouse"] = store.engine.url.render_as_string(hide_password=True)
            report["zoho"] = modules
            report["invalid"] = sum(m["invalid"] for m in modules)
            report["invalid_reasons"] = invalid_reasons
            report["moodle"] = _moodle_status(store, tenant.id, now)
        except Exception as exc:
            raise _fail(
                CommandError(
                    f"the warehouse cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                    "a run migrates it first"
                )
            ) from None
        finally:
            store.dispose()
    report["events"] = _events_status(tenant.id, now)
    if as_json:
        typer.echo(json.dumps(report, indent=1, ensure_ascii=False, default=str))
        return
    _print_status(report)


def _print_status(report: Mapping[str, Any]) -> None:
    echo = typer.echo
    echo(f"tenant {report['tenant']}")
    if report["warehouse"] is None:
        echo("warehouse: none yet (no sync has run)")
    else:
        echo(f"warehouse: {report['warehouse']}")
        echo("zoho → warehouse (last successful sync per module):")
        for m in report["zoho"]:
            counts = ", ".join(f"{k} {v}" for k, v in m["counts"].items() if v)
            line = f"  {m['module']:<14} {m['last_success'] or 'never synced'}"
            if m["mode"]:
                line += f" [{m['mode']}: {counts or 'nothing read'}]"
            if m["last_success"] or m["live"]:
                line += f"; {m['live']} live, {m['invalid']} INVALID"
            echo(line)
            if m["last_failure"]:
                echo(f"  {'':<14} FAILED since, {m['last_failure']['at']}: {m['last_failure']['error']}")
        echo(f"INVALID records: {report['invalid']}")
        for r in report["invalid_reasons"]:
            echo(f"  {r['records']:>5} × {r['reason']} (e.g. {r['example']})")
        moodle = report["moodle"]
        if moodle["entities"]:
            echo("warehouse → Moodle and back (last write per entity):")
            for e in moodle["entities"]:
                echo(f"  {e['entity']:<22} {e['last_write']}; {e['skipped']} SKIPPED, {e['errors']} failed")
                if e["step_error"]:
                    echo(f"  {'':<22} STEP FAILED since, {e['step_error']['at']}: {e['step_error']['error']}")
        else:
            echo("warehouse → Moodle: nothing written yet")
        pf = moodle["preflight"]
        echo(f"Moodle preflight: {'passed ' + pf['passed'] if pf['passed'] else 'never passed'}")
        for message in pf["failing"]:
            echo(f"  FAIL {message}")
        echo(f"SKIPPED records: {moodle['skipped']}")
        for r in moodle["skipped_reasons"]:
            echo(f"  {r['records']:>5} × {r['reason']}")
        if moodle["errors"]:
            echo(f"failed writes: {moodle['errors']}")
            for r in moodle["error_reasons"]:
                echo(f"  {r['records']:>5} × {r['reason']}")
    events = report["events"]
    echo(f"webhook events ({events['drop_dir']}):")
    for source in ("zoho", "moodle"):
        e = events[source]
        oldest = f", oldest {e['oldest_pending']}" if e["oldest_pending"] else ""
        echo(
            f"  {source:<7} {e['pending']} pending{oldest}; {e['dead']} dead-lettered; {e['quarantined']} quarantined"
        )
        for r in e["dead_reasons"]:
            echo(f"  {'':<7} {r['events']:>3} dead × {r['reason']}")


# --- resync ---------------------------------------------------------------------------------------

_ZOHO_ID = re.compile(r"\d{1,19}")


def _module_spec(tenant: Tenant, module: str) -> Any:
    from sync_pipelines.zoho.modules import MODULES, MODULES_BY_API_NAME, MODULES_BY_NAME

    spec = MODULES_BY_NAME.get(module) or MODULES_BY_API_NAME.get(module)
    if spec is None:  # the org's own API name of a mapped module
        spec = next((m for m in MODULES if tenant.zoho.mapping.module_api_name(m.name) == module), None)
    if spec is None:
        names = ", ".join(m.name for m in MODULES)
        raise CommandError(f"unknown module {module!r}: one of {names} (or their Zoho API names)", code=2)
    return spec


def _instance() -> Any:
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get(), True
    return dg.DagsterInstance.ephemeral(), False


@app.command("resync")
def resync(
    tenant_id: TenantArg,
    module: Annotated[str, typer.Argument(help="The module: students, classes, ... or its Zoho API name.")],
    zoho_id: Annotated[str, typer.Argument(help="The Zoho record id.")],
    zoho_only: Annotated[
        bool, typer.Option("--zoho-only", help="Stop at the warehouse: no Moodle step, no write-back.")
    ] = False,
    env_file: EnvFileOpt = DEFAULT_ENV_FILE,
    tenants_file: TenantsFileOpt = None,
) -> None:
    """Sync one record end to end, as a Zoho webhook event would: read it by id, diff, store, push."""
    try:
        tenant = _setup(env_file, tenants_file, tenant_id)
        spec = _module_spec(tenant, module)
        if not _ZOHO_ID.fullmatch(zoho_id):
            raise CommandError(f"{zoho_id!r} is not a Zoho record id (digits only)", code=2)
        if tenants_file is not None:
            os.environ["SYNC_TENANTS_FILE"] = str(tenants_file.resolve())  # what the run's resources read
        outcome = _run_resync(tenant, spec, zoho_id, zoho_only=zoho_only or tenant.moodle is None)
    except CommandError as exc:
        raise _fail(exc, exc.code) from None
    if not outcome:
        raise typer.Exit(1)


def _run_resync(tenant: Tenant, spec: Any, zoho_id: str, *, zoho_only: bool) -> bool:
    import warnings

    import dagster as dg

    from sync_pipelines.moodle.entities import zoho_route
    from sync_pipelines.tenants import tenant_partitions

    assets = {f"zoho/{spec.name}"} if zoho_only else zoho_route(spec.name)
    typer.echo(f"resync {tenant.id} {spec.name} ({spec.api_name}) {zoho_id}: " + ", ".join(sorted(assets)))
    with warnings.catch_warnings():
        # Dagster's preview and deprecation notes are for the project's developers, not this output.
        warnings.simplefilter("ignore")
        from sync_pipelines.definitions import build_definitions

        instance, persistent = _instance()
        try:
            if not instance.has_dynamic_partition(tenant_partitions.name, tenant.id):
                instance.add_dynamic_partitions(tenant_partitions.name, [tenant.id])
            job = build_definitions().resolve_job_def("full_sync")  # the main job, no nightly checks
            result = job.execute_in_process(
                run_config={
                    "loggers": {"console": {"config": {"log_level": "ERROR"}}},
                    "ops": {f"zoho__{spec.name}": {"config": {"record_ids": [zoho_id]}}},
                },
                instance=instance,
                partition_key=tenant.id,
                asset_selection=[dg.AssetKey(a.split("/")) for a in sorted(assets)],
                raise_on_error=False,
                tags={"sync/trigger": "cli-resync", "sync/record": f"{spec.name}:{zoho_id}"},
            )
        finally:
            instance.dispose()
    store = _open_warehouse(required=True)
    try:
        ok = _report_resync(store, tenant, spec, zoho_id, result.run_id, zoho_only=zoho_only)
    finally:
        store.dispose()
    for event in result.all_events:
        if event.is_step_failure:
            message = (event.step_failure_data.error.message.strip().splitlines() or [""])[0]
            typer.echo(f"FAIL step {event.step_key}: {message}")
    where = (
        "kept in the Dagster instance of DAGSTER_HOME" if persistent else "not kept: DAGSTER_HOME is not set"
    )
    typer.echo(f"run {result.run_id}: {'succeeded' if result.success else 'failed'} ({where})")
    return ok and result.success


def _report_resync(
    store: Any, tenant: Tenant, spec: Any, zoho_id: str, run_id: str, *, zoho_only: bool
) -> bool:
    import pandas as pd
    import sqlalchemy as sa

    from sync_pipelines.warehouse.moodle import moodle_push_results as pr
    from sync_pipelines.warehouse.schema import sync_runs as r

    with store.engine.connect() as conn:
        run = conn.execute(
            sa.select(r.c.sync_run_id, r.c.outcome, r.c.error, r.c.api_calls)
            .where(r.c.tenant_id == tenant.id, r.c.module == spec.name, r.c.dagster_run_id == run_id)
            .order_by(r.c.started_at.desc())
            .limit(1)
        ).first()
        pushes = pd.DataFrame(
            conn.execute(
                sa.select(
                    pr.c.target,
                    pr.c.entity,
                    pr.c.key,
                    pr.c.action,
                    pr.c.outcome,
                    pr.c.remote_id,
                    pr.c.message,
                )
                .where(pr.c.tenant_id == tenant.id, pr.c.dagster_run_id == run_id)
                .order_by(pr.c.id)
            ).all(),
            columns=["target", "entity", "key", "action", "outcome", "remote_id", "message"],
        )
    if run is None:
        typer.echo("FAIL zoho → warehouse: the module's sync did not run (see the step below)")
        return False
    if run.outcome != "success":
        typer.echo(f"FAIL zoho → warehouse: {(str(run.error or '').splitlines() or [''])[0]}")
        return False
    results = store.results(tenant.id, spec.name, zoho_id)
    results = results[results["sync_run_id"] == run.sync_run_id]
    calls = int(run.api_calls or 0)
    calls = f"{calls} Zoho API call{'' if calls == 1 else 's'}"
    if results.empty:
        typer.echo(
            f"OK zoho → warehouse: Zoho holds no {spec.api_name} record {zoho_id}, and the warehouse had "
            f"none to mark deleted ({calls})"
        )
        return True
    row = results.iloc[-1]
    status, change = row["status"], row["change"]
    head = f"{status}" + (f" (stored as {change})" if status == "INVALID" and change else "")
    typer.echo(f"OK zoho → warehouse: {spec.api_name} {zoho_id} {head} ({calls})")
    if isinstance(row["changes"], str) and row["changes"]:
        api_names = {f.column: f.api_name for f in spec.fields}
        for column, pair in json.loads(row["changes"]).items():
            old, new = pair if isinstance(pair, list) and len(pair) == 2 else (None, pair)
            typer.echo(f"     {api_names.get(column, column)}: {old!r} → {new!r}")
    if isinstance(row["reason"], str) and row["reason"]:
        typer.echo(f"     reason: {row['reason']}")
    if zoho_only:
        typer.echo("SKIP moodle: not touched (--zoho-only, or no moodle section)")
        return True
    if pushes.empty:
        typer.echo("OK moodle: nothing to write (Moodle and the Zoho bookkeeping are in step)")
        return True
    own = pushes[pushes["key"] == zoho_id]
    if own.empty:
        typer.echo(f"OK moodle: nothing to write for {spec.api_name} {zoho_id}")
    for _, p in own.iterrows():
        remote = f" (id {p['remote_id']})" if p["remote_id"] else ""
        why = f": {p['message']}" if p["message"] and p["outcome"] != "success" else ""
        word = {"error": "FAIL", "skipped": "SKIP"}.get(p["outcome"], "OK")
        typer.echo(f"{word} {p['target']} {p['entity']} {p['action']} {p['outcome']}{remote}{why}")
    others = pushes[pushes["key"] != zoho_id]
    if len(others):
        grouped = others.groupby(["target", "entity", "action", "outcome"]).size()
        shown = "; ".join(f"{t} {e} {a} {o}: {n}" for (t, e, a, o), n in grouped.items())
        typer.echo(f"     other outcomes of this run (each entity is reconciled whole): {shown}")
    return not (own["outcome"] == "error").any()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
