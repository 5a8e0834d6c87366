"""Write RELIABILITY.md from the figures the reliability tests leave in .local/reliability/*.json.

Run by ``make reliability`` after the suite (quick and long variants). Each test writes its own
JSON only when its assertions held, so a figure in the report is a figure of a passing test.
"""

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

ITEMS = {
    "faults": "1. Faults from the services (429, 5xx, dropped connections, slow answers, expired tokens, lost answers)",
    "crash_named_points": "2. Crash consistency: sync SIGKILLed at named points",
    "crash_random": "2. Crash consistency: sync SIGKILLed at random moments",
    "receiver_crash": "2. Crash consistency: receiver SIGKILLed while writing drop files",
    "hostile": "3. Hostile input (property-based)",
    "webhook_security": "4. Webhook security",
    "secrets": "4. Secrets in logs, events, metadata, run config, stored errors",
    "isolation": "5. Tenant isolation",
    "load": "6. Receiver under a burst of deliveries",
    "events": "7. Webhook events under a seeded mix of faults: accepted, applied, retried, dead-lettered, lost",
}
HEADLINE = (
    "faults_injected",
    "runs_killed",
    "inputs_tried",
    "records_lost",
    "lost",
    "duplicates",
    "events_accepted",
    "events_applied",
    "events_retried",
    "events_dead_lettered",
    "events_lost",
)


def _flat(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def main(folder: str = ".local/reliability", out: str = "RELIABILITY.md") -> int:
    root = Path(folder)
    found = {p.stem: json.loads(p.read_text()) for p in sorted(root.glob("*.json"))}
    cpu = sys.platform
    lines = [
        "# Reliability and security",
        "",
        f"Figures recorded by the reliability tests (quick variants run in `make test`, long ones with `make reliability`), "
        f"report written {datetime.now(UTC):%Y-%m-%d}, {platform.machine()} {cpu}, Python "
        f"{platform.python_version()}. Every figure comes from a test that passed; the test names and what they "
        "assert are in `sync_pipelines_tests/reliability/`. Records lost and duplicates are asserted to be 0.",
        "",
        "| item | headline figures |",
        "|---|---|",
    ]
    for stem, title in ITEMS.items():
        data = found.get(stem)
        if data is None:
            lines.append(f"| {title} | **not run** |")
            continue
        flat = _flat(data)
        head = {k: v for k, v in flat.items() if k.split(".")[-1] in HEADLINE or k in HEADLINE}
        shown = head or dict(list(flat.items())[:6])
        lines.append(f"| {title} | " + ", ".join(f"{k}: {v}" for k, v in shown.items()) + " |")
    for stem, data in found.items():
        lines += ["", f"## {ITEMS.get(stem, stem)}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in _flat(data).items()]
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
