"""Each tenant's Zoho org metadata, cached in the warehouse (table ``zoho_org_metadata``).

The metadata (``/settings/modules`` and the ``/settings/fields`` of each synced module) changes
when a school edits its org, rarely; reading it costs one API call per module. So it is kept in
the warehouse, one row per tenant and module, and asked of Zoho again only when older than
``max_age``, when asked to (``refresh``), or when the synced modules are not all in it.

A refresh fetches everything first, then replaces the tenant's rows in one transaction: the
cache holds one whole snapshot of an org or the previous one, never a mix.
"""

import json
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from sync_pipelines.tenants import Tenant
from sync_pipelines.warehouse.schema import metadata
from sync_pipelines.zoho.modules import ModuleSpec
from sync_pipelines.zoho.org import (
    MetadataClient,
    OrgMetadata,
    default_org_modules,
    fetch_org,
    org_module_names,
    tenant_modules,
)

#: The ``module`` key of the row holding the ``/settings/modules`` list (no API name has a "/").
MODULE_LIST = "/settings/modules"

zoho_org_metadata = sa.Table(
    "zoho_org_metadata",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column(
        "module",
        sa.String(100),
        primary_key=True,
        comment=f"module API name (its /settings/fields), or {MODULE_LIST!r} (the module list)",
    ),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False, comment="JSON: Zoho's answer (a list of objects)"),
    comment="Each tenant's Zoho org metadata, as last fetched: the module list and synced modules' fields.",
)


def _aware(ts: datetime) -> datetime:
    """SQLite hands back naive date-times; everything written here is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def cached_org(engine: sa.Engine, tenant_id: str) -> OrgMetadata | None:
    """The tenant's cached org metadata, whatever its age, or ``None`` if there is none."""
    t = zoho_org_metadata
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.module, t.c.fetched_at, t.c.payload).where(t.c.tenant_id == tenant_id)
        ).all()
    by_module = {m: (_aware(at), json.loads(payload)) for m, at, payload in rows}
    if MODULE_LIST not in by_module:
        return None
    fetched_at, modules = by_module.pop(MODULE_LIST)
    return OrgMetadata(
        tenant_id=tenant_id,
        modules=tuple(modules),
        fields={m: tuple(fields) for m, (_, fields) in by_module.items()},
        fetched_at=fetched_at,
    )


def store_org(engine: sa.Engine, org: OrgMetadata) -> None:
    """Replace the tenant's cached rows with ``org`` (its ``fetched_at``), in one transaction."""
    if org.fetched_at is None:
        raise ValueError("only fetched metadata (with fetched_at) is cached")
    t = zoho_org_metadata
    at = org.fetched_at
    rows = [{"module": MODULE_LIST, "payload": list(org.modules)}]
    rows += [{"module": m, "payload": list(fields)} for m, fields in org.fields.items()]
    values = [
        {
            "tenant_id": org.tenant_id,
            "module": r["module"],
            "fetched_at": at,
            "payload": json.dumps(r["payload"], ensure_ascii=False, default=str),
        }
        for r in rows
    ]
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                conn.execute(sa.delete(t).where(t.c.tenant_id == org.tenant_id))
                conn.execute(sa.insert(t), values)
            return
        except sa.exc.IntegrityError:
            # Another run stored the tenant's org between our delete and insert (the modules of
            # one tenant sync in parallel); once more, and its rows are deleted first.
            if attempt:
                raise


def _fresh(org: OrgMetadata, wanted: Collection[str], max_age: timedelta | None, now: datetime) -> bool:
    """Whether the cached ``org`` answers for ``wanted`` without asking Zoho."""
    if max_age is not None and (org.fetched_at is None or now - org.fetched_at > max_age):
        return False
    # Every wanted module listed, with its fields: a module the cached list lacks is asked about
    # again (the school may just have created it, or tenants.yaml just have mapped it).
    for m in wanted:
        entry = org.module(m)
        if entry is None or (m not in org.fields and entry.get("api_supported") is not False):
            return False
    return True


def load_org(
    engine: sa.Engine,
    tenant_id: str,
    client: MetadataClient,
    *,
    max_age: timedelta | None,
    refresh: bool = False,
    modules: Collection[str] | None = None,
    now: datetime | None = None,
) -> OrgMetadata:
    """The tenant's org metadata: from the cache if it is fresh, else fetched and cached.

    Args:
        engine: the warehouse (its ``zoho_org_metadata`` table must exist).
        tenant_id: the tenant.
        client: the tenant's Zoho client (``get_modules()``, ``get_fields(module)``); not called
            when the cache answers.
        max_age: how old the cache may be (``None``: any age).
        refresh: fetch from Zoho whatever the cache holds.
        modules: module API names whose fields are needed; default the module table's as the
            shipped org names them. For a tenant with a ``zoho.modules`` mapping pass
            ``org_module_names(tenant.zoho.mapping)`` (or use :func:`load_tenant_modules`).
        now: the current time (tests).

    Raises:
        ZohoError: fetching failed; the cache is left as it was.
    """
    now = now or datetime.now(UTC)
    wanted = tuple(default_org_modules() if modules is None else modules)
    if not refresh:
        cached = cached_org(engine, tenant_id)
        if cached is not None and _fresh(cached, wanted, max_age, now):
            return cached
    org = fetch_org(tenant_id, client, wanted, fetched_at=now)
    store_org(engine, org)
    return org


def load_tenant_modules(
    engine: sa.Engine,
    tenant: Tenant,
    client: MetadataClient,
    *,
    max_age: timedelta | None,
    refresh: bool = False,
    now: datetime | None = None,
) -> tuple[ModuleSpec, ...]:
    """The tenant's nine specs, checked against its org (cached as :func:`load_org` does).

    Raises:
        OrgSchemaError: the org does not fit the module table (every problem, one message).
        ZohoError: fetching the metadata failed.
    """
    org = load_org(
        engine,
        tenant.id,
        client,
        max_age=max_age,
        refresh=refresh,
        modules=org_module_names(tenant.zoho.mapping),
        now=now,
    )
    return tenant_modules(tenant, org)


__all__ = [
    "MODULE_LIST",
    "cached_org",
    "load_org",
    "load_tenant_modules",
    "store_org",
    "zoho_org_metadata",
]
