"""The Zoho CRM resource: a client per tenant, built from the tenants file and the environment."""

import dagster as dg
from pydantic import Field

from sync_pipelines.tenants import Tenant, read_tenants
from sync_pipelines.zoho.client import TOKEN_THROTTLE_SECONDS, TOKEN_WAIT_SECONDS, ZohoClient
from sync_pipelines.zoho.tokens import FileTokenStore

#: One token store for every process of the machine (runs, steps, sensors, schedules): a tenant's
#: access token is refreshed once and read by all, from ``<local_dir()>/zoho_tokens`` or
#: ``SYNC_TOKEN_DIR`` (see :mod:`sync_pipelines.zoho.tokens`).
_TOKENS = FileTokenStore()


class ZohoCRMResource(dg.ConfigurableResource):
    """Zoho CRM access for every tenant of the tenants file.

    The tenants file names each school's data centre (or explicit URLs, for any Zoho-compatible
    endpoint) and the environment variables that hold its OAuth client id, client secret and
    refresh token. The secrets are read from the environment when a client is built, and never
    logged.
    """

    tenants_file: str = Field(description="Path of the tenants YAML file.")
    timeout_seconds: float = Field(default=60.0, description="Read timeout of one HTTP call.")
    max_retries: int = Field(default=5, description="Retries on 429, 5xx and connection errors.")
    backoff_base_seconds: float = Field(default=0.5, description="First backoff step; doubles, with jitter.")
    backoff_max_seconds: float = Field(default=30.0, description="Longest single backoff.")
    token_wait_seconds: float = Field(
        default=TOKEN_WAIT_SECONDS,
        description="How long a run waits for Zoho's token-endpoint throttle to pass before failing.",
    )
    token_throttle_seconds: float = Field(
        default=TOKEN_THROTTLE_SECONDS,
        description="How long no process asks Zoho's token endpoint again after it refused a refresh as "
        "throttled (Zoho blocks for the rest of a 10-minute window).",
    )

    def tenant(self, tenant_id: str) -> Tenant:
        """The tenant's entry; its own error if the entry is broken (other schools are not read).

        Raises:
            TenantConfigError: the tenant is not in the file, or its entry is broken.
        """
        return read_tenants(self.tenants_file).get(tenant_id)

    def client(self, tenant_id: str) -> ZohoClient:
        """A client for one tenant, with its own token cache and call counters."""
        tenant = self.tenant(tenant_id)
        z = tenant.zoho
        return ZohoClient(
            tenant_id=tenant.id,
            accounts_url=z.accounts_url,
            api_domain=z.api_domain,
            client_id=tenant.secret(z.client_id_env),
            client_secret=tenant.secret(z.client_secret_env),
            refresh_token=tenant.secret(z.refresh_token_env),
            timeout=(5.0, self.timeout_seconds),
            max_retries=self.max_retries,
            backoff_base=self.backoff_base_seconds,
            backoff_max=self.backoff_max_seconds,
            token_cache=_TOKENS,
            token_wait_seconds=self.token_wait_seconds,
            token_throttle_seconds=self.token_throttle_seconds,
            bulk_read_threshold=z.bulk_read_threshold,
        )
