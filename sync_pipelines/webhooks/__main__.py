"""``python -m sync_pipelines.webhooks [--host 127.0.0.1] [--port 8780]``: run the webhook receiver.

The tenants file comes from ``SYNC_TENANTS_FILE`` (default ``tenants.yaml``), the drop root from
``SYNC_DROP_DIR`` (default ``<local_dir()>/drop``). Serves in the foreground until SIGINT or SIGTERM.
"""

import argparse
import logging

import uvicorn

from sync_pipelines.tenants import TenantConfigError, default_tenants_file
from sync_pipelines.webhooks.app import create_app
from sync_pipelines.webhooks.drop import drop_dir

logger = logging.getLogger("sync_pipelines.webhooks")


def main(argv: list[str] | None = None) -> int:
    """Run the receiver until interrupted.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The process exit status: 0 after a clean stop, 2 when the tenants file is unusable.
    """
    parser = argparse.ArgumentParser(
        prog="python -m sync_pipelines.webhooks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8780, help="TCP port (default 8780)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    tenants_file, root = default_tenants_file(), drop_dir()
    try:
        app = create_app(tenants_file=tenants_file, drop_root=root)
    except TenantConfigError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("tenants from %s; drop files under %s", tenants_file, root)
    uvicorn.run(app, host=args.host, port=args.port, server_header=False, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
