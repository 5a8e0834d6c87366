"""The sandbox: a faithful local Zoho CRM (accounts endpoint and REST API v8) and the demo school.

Tests start :class:`ZohoSimulator` in-process on loopback; ``make demo`` and
``python -m sync_pipelines.sandbox`` serve the demo school from :func:`generate_school`.
"""

from sync_pipelines.sandbox.school import (
    BASE_COUNTS,
    DEMO_SEED,
    DIRTY_RECORDS,
    SCHOOL_DOMAIN,
    DemoCredentials,
    DirtyRecord,
    demo_credentials,
    demo_simulator,
    generate_school,
)
from sync_pipelines.sandbox.zoho_sim import (
    DEFAULT_ID_PREFIX,
    ORG_TZ,
    RequestLog,
    ZohoSimulator,
    format_time,
    make_record_id,
    parse_time,
)

__all__ = [
    "BASE_COUNTS",
    "DEFAULT_ID_PREFIX",
    "DEMO_SEED",
    "DIRTY_RECORDS",
    "ORG_TZ",
    "SCHOOL_DOMAIN",
    "DemoCredentials",
    "DirtyRecord",
    "RequestLog",
    "ZohoSimulator",
    "demo_credentials",
    "demo_simulator",
    "format_time",
    "generate_school",
    "make_record_id",
    "parse_time",
]
