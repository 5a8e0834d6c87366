"""The Moodle resource: a web-services client per tenant, from the tenants file and the environment."""

import dagster as dg
from pydantic import Field

from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.tenants import DriftPolicy, GradingConfig, TenantConfigError, read_tenants


class MoodleResource(dg.ConfigurableResource):
    """Moodle web services for every tenant of the tenants file.

    Each school's Moodle base URL and the *name* of the environment variable holding its
    web-services token come from the tenants file; the token is read when a client is built.
    """

    tenants_file: str = Field(description="Path of the tenants YAML file.")
    max_input_vars: int = Field(
        default=1000,
        description="The Moodle site's PHP max_input_vars: past it, fields are silently dropped.",
    )
    timeout_seconds: float = Field(default=60.0, description="Read timeout of one HTTP call.")
    max_retries: int = Field(default=5, description="Retries on 5xx and connection errors.")

    def client(self, tenant_id: str) -> MoodleClient:
        tenant = read_tenants(self.tenants_file).get(tenant_id)  # its own error if its entry is broken
        if tenant.moodle is None:
            raise TenantConfigError(f"tenant {tenant_id} has no moodle section in {self.tenants_file}")
        return MoodleClient(
            tenant_id=tenant.id,
            base_url=tenant.moodle.base_url,
            token=tenant.secret(tenant.moodle.token_env),
            max_input_vars=self.max_input_vars,
            timeout=(5.0, self.timeout_seconds),
            max_retries=self.max_retries,
        )

    def drift_policy(self, tenant_id: str) -> DriftPolicy:
        """The school's ``moodle.drift`` setting: what to heal and what only to report."""
        tenant = read_tenants(self.tenants_file).get(tenant_id)
        return tenant.moodle.drift if tenant.moodle is not None else DriftPolicy()

    def grading(self, tenant_id: str) -> GradingConfig:
        """The school's ``grading`` names and rules (criteria grading)."""
        return read_tenants(self.tenants_file).get(tenant_id).grading
