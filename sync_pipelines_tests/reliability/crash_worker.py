"""A whole sync in a child process, optionally SIGKILLed at a named point (see test_crash.py).

``python -m sync_pipelines_tests.reliability.crash_worker '<json>'`` (or :func:`child`) with keys ``zoho_url``,
``moodle_url``, ``warehouse_url``, ``tenant`` and ``kill_at``: one of :data:`KILL_POINTS` or
null. The process kills itself with SIGKILL (no clean-up, no ``finally``) when it gets there.
"""

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from sync_pipelines import writeback
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.entities import ENTITIES
from sync_pipelines.moodle.grades import collect_grades
from sync_pipelines.moodle.reconcile import reconcile
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.store import Warehouse as StoreWarehouse
from sync_pipelines.zoho.client import ZohoClient
from sync_pipelines.zoho.modules import MODULES
from sync_pipelines.zoho.sync import sync_module

KILL_POINTS = (
    "mid_fetch",  # Zoho pages half read
    "in_warehouse_transaction",  # rows upserted, log being written, nothing committed
    "after_moodle_create",  # Moodle created the accounts, the id map knows nothing
    "after_moodle_enrol",  # Moodle enrolled, the enrolment map knows nothing
    "before_zoho_writeback",  # Moodle fully provisioned, nothing written back to Zoho
    "after_zoho_upsert",  # grades upserted in Zoho, the warehouse does not know
)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fn(*args, **kwargs)
        _die()

    return wrapper


def _install(point: str) -> None:
    if point == "mid_fetch":
        original = ZohoClient.iter_records

        def iter_records(self: ZohoClient, *args: Any, **kwargs: Any) -> Iterator[dict]:
            for n, record in enumerate(original(self, *args, **kwargs)):
                if n == 250:
                    _die()
                yield record

        ZohoClient.iter_records = iter_records  # type: ignore[method-assign]
    elif point == "in_warehouse_transaction":
        original_log = StoreWarehouse._log
        calls = {"n": 0}

        def _log(self: StoreWarehouse, *args: Any, **kwargs: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 3:  # the third module's apply, mid-transaction
                _die()
            original_log(self, *args, **kwargs)

        StoreWarehouse._log = _log  # type: ignore[method-assign]
    elif point == "after_moodle_create":
        MoodleClient.create_users = _after(MoodleClient.create_users)  # type: ignore[method-assign]
    elif point == "after_moodle_enrol":
        MoodleClient.enrol = _after(MoodleClient.enrol)  # type: ignore[method-assign]
    elif point == "before_zoho_writeback":
        writeback.write_back_bookkeeping = lambda *a, **k: _die()  # type: ignore[assignment]
    elif point == "after_zoho_upsert":
        ZohoClient.upsert = _after(ZohoClient.upsert)  # type: ignore[method-assign]


def run(cfg: dict) -> None:
    tenant, store = cfg["tenant"], Warehouse(cfg["warehouse_url"])
    zoho = ZohoClient(
        tenant_id=tenant,
        accounts_url=cfg["zoho_url"],
        client_id="c",
        client_secret="s",
        refresh_token="r",
        sleep=lambda _s: None,
    )
    moodle = MoodleClient(tenant_id=tenant, base_url=cfg["moodle_url"], token="t", sleep=lambda _s: None)
    for spec in MODULES:
        sync_module(tenant_id=tenant, spec=spec, client=zoho, warehouse=store, deleted_check_minutes=0)
    for spec in ENTITIES:
        reconcile(spec, moodle, store, tenant)
    collect_grades(moodle, store, tenant)
    writeback.write_back_grades(zoho, store, tenant)
    writeback.write_back_bookkeeping(zoho, store, tenant)
    store.dispose()


def child(config: str, stderr_path: str) -> None:
    """The child's entry point when forked by a multiprocessing forkserver that has imported this
    module already (``test_crash.py``): its stderr to ``stderr_path``, then :func:`main`."""
    with open(stderr_path, "w") as err:
        os.dup2(err.fileno(), 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    main(["crash_worker", config])


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    if cfg.get("kill_at"):
        _install(cfg["kill_at"])
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
