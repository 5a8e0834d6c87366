"""``python -m sync_pipelines.webhooks [--host 127.0.0.1] [--port 8780]``: run the webhook receiver.

The tenants file comes from ``SYNC_TENANTS_FILE`` (default ``tenants.yaml``), the drop root from
``SYNC_DROP_DIR`` (default ``<local_dir()>/drop``). Serves in the foreground until SIGINT or SIGTERM,
with the timeouts and limits of :mod:`sync_pipelines.webhooks.server`.
"""

import argparse
import logging

from sync_pipelines.tenants import TenantConfigError, default_tenants_file
from sync_pipelines.webhooks.app import create_app
from sync_pipelines.webhooks.drop import drop_dir
from sync_pipelines.webhooks.server import HEADER_TIMEOUT_SECONDS, serve

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
    parser.add_argument(
        "--header-timeout",
        type=_positive_seconds,
        default=HEADER_TIMEOUT_SECONDS,
        help=f"seconds a client has to send its request headers (default {HEADER_TIMEOUT_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    tenants_file, root = default_tenants_file(), drop_dir()
    try:
        app = create_app(tenants_file=tenants_file, drop_root=root)
    except TenantConfigError as exc:
        logger.error("%s", exc)
        return 2
    logger.info("tenants from %s; drop files under %s", tenants_file, root)
    serve(app, args.host, args.port, header_timeout=args.header_timeout)
    return 0


def _positive_seconds(text: str) -> float:
    """``--header-timeout``'s value: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
