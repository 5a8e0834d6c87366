"""The sandbox: faithful local Zoho CRM and Moodle web services, and the demo school.

Tests start :class:`ZohoSimulator` and :class:`MoodleSimulator` in-process on loopback;
``make demo`` and ``python -m sync_pipelines.sandbox`` serve the demo school from
:func:`generate_school`.
"""

from sync_pipelines.sandbox.moodle_sim import DEFAULT_TOKEN as DEMO_MOODLE_TOKEN
from sync_pipelines.sandbox.moodle_sim import MoodleRequest, MoodleSimulator
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
    "DEMO_MOODLE_TOKEN",
    "DEMO_SEED",
    "DIRTY_RECORDS",
    "ORG_TZ",
    "SCHOOL_DOMAIN",
    "DemoCredentials",
    "DirtyRecord",
    "MoodleRequest",
    "MoodleSimulator",
    "RequestLog",
    "ZohoSimulator",
    "demo_credentials",
    "demo_simulator",
    "format_time",
    "generate_school",
    "make_record_id",
    "parse_time",
]
