"""Many schools' simulators in one process: a Zoho CRM and a Moodle simulator per tenant.

``python -m benchmarks.capacity.simhost --first 0 --count 50 --scale 0.05 --ports-file F``

A :class:`~sync_pipelines.sandbox.ZohoSimulator` holds one org (its records, its clients), so every
tenant gets simulators of its own, each on a loopback port of its own; one process serves many of
them (a thread per server, and a thread per connection while a call is served). Every tenant's org
is the demo school at ``--scale`` (same seed: the same small school, so the runs are alike). The
servers poll for shutdown every 2 s instead of the sandbox's 50 ms: with a few hundred servers in
one process the 50 ms wake-ups alone would cost CPU that has nothing to do with serving calls.
Writes ``{tenant index: [zoho port, moodle port]}`` to ``--ports-file`` when all are listening,
then serves until SIGTERM/SIGINT.
"""

import argparse
import json
import signal
import threading
from pathlib import Path

from sync_pipelines.sandbox import (
    DEMO_MOODLE_TOKEN,
    DEMO_SEED,
    MoodleSimulator,
    ZohoSimulator,
    generate_school,
)
from sync_pipelines.sandbox.server import SimulatorHTTPServer

POLL_SECONDS = 2.0


def _serve(sim: ZohoSimulator | MoodleSimulator) -> int:
    """Start ``sim`` on a free loopback port with a slow shutdown poll; returns the port."""
    server = SimulatorHTTPServer(("127.0.0.1", 0), sim.handler_class(), sim)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, name=sim.thread_name, daemon=True
    )
    sim._server, sim._thread = server, thread  # what LoopbackServer.start sets, so stop() works
    thread.start()
    return server.server_address[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--ports-file", type=Path, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sims: list[ZohoSimulator | MoodleSimulator] = []
    ports: dict[int, list[int]] = {}
    for index in range(args.first, args.first + args.count):
        zoho = ZohoSimulator(data=generate_school(DEMO_SEED, scale=args.scale))
        moodle = MoodleSimulator(tokens={DEMO_MOODLE_TOKEN: None})
        ports[index] = [_serve(zoho), _serve(moodle)]
        sims += [zoho, moodle]
    tmp = args.ports_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.rename(args.ports_file)
    while not stop.wait(1.0):
        pass
    # The servers' threads are daemon threads: leaving ends them (stopping 100 servers one by one
    # would take their 2 s poll each).
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
