"""``python -m sync_pipelines.sandbox [--host 127.0.0.1] [--port 8770] [--moodle-port 8771] [--seed N]``.

Serves the demo school from the Zoho CRM simulator, and an empty Moodle site from the Moodle
simulator, in the foreground until SIGINT or SIGTERM. Logs every request to stderr.
"""

import argparse
import logging
import signal
import threading
from types import FrameType

from sync_pipelines.sandbox.moodle_sim import DEFAULT_TOKEN, MoodleSimulator
from sync_pipelines.sandbox.school import DEMO_SEED, demo_credentials, demo_simulator

logger = logging.getLogger("sync_pipelines.sandbox")


def main(argv: list[str] | None = None) -> int:
    """Run the simulator with the demo school until interrupted.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m sync_pipelines.sandbox", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8770, help="TCP port (default 8770)")
    parser.add_argument("--moodle-port", type=int, default=8771, help="Moodle simulator port (default 8771)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"demo school seed (default {DEMO_SEED})")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies every record count (default 1.0)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    sim = demo_simulator(args.seed, scale=args.scale)
    sim.start(host=args.host, port=args.port)
    moodle = MoodleSimulator(tokens={DEFAULT_TOKEN: None})
    moodle.start(host=args.host, port=args.moodle_port)
    logger.info("Moodle web services at %s; token=%s", moodle.base_url, DEFAULT_TOKEN)
    creds = demo_credentials()
    counts = ", ".join(
        f"{m} {len(sim.records(m))}" for m in ("BTEC_Students", "BTEC_Enrollments", "BTEC_Grades")
    )
    logger.info("demo school (seed %s, scale %s): %s, …", args.seed, args.scale, counts)
    logger.info(
        "accounts and API at %s; client_id=%s client_secret=%s refresh_token=%s",
        sim.base_url,
        creds.client_id,
        creds.client_secret,
        creds.refresh_token,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        moodle.stop()
        logger.info("simulators stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
