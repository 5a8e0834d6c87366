"""Cases recorded from a real Moodle (``sync_pipelines_tests/fixtures/moodle45/``): the ids of
objects a recording made appear in its parameters as ``"{{name}}"``, resolved when a case is
replayed (by the contract tests, against the simulator) or recorded again."""

import re
from collections.abc import Mapping
from typing import Any

REF = re.compile(r"\{\{(\w+)\}\}")


def resolve(value: Any, refs: Mapping[str, Any]) -> Any:
    """``value`` with every ``"{{name}}"`` replaced by ``refs[name]`` (the id itself when the string
    is only the reference, else inside the text), recursively."""
    if isinstance(value, dict):
        return {k: resolve(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    if isinstance(value, str):
        whole = REF.fullmatch(value)
        if whole:
            return refs[whole.group(1)]
        return REF.sub(lambda m: str(refs[m.group(1)]), value)
    return value
