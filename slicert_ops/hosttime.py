"""Host seconds per stage of one command, for ``slicert run --timings FILE``
(bench/bench_pipeline.py prints where a sweep's time goes from it).

Process-wide and cheap: :func:`add` sums seconds under a stage name, :func:`stage` times a
block. The per-run split (codegen, gcc, QEMU, parsing, run-folder writes) is in each run's
``manifest.json`` (``host_timings_s``); this file adds what no run sees: the set-up before
the sweep, the wait for the validation verdicts, the index and report, the summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: When this module was imported (``slicert``'s first import: the set-up starts here).
STARTED = time.time()
_SECONDS: dict[str, float] = {}


def add(name: str, seconds: float) -> None:
    _SECONDS[name] = _SECONDS.get(name, 0.0) + seconds


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as stage ``name`` (added up over repeated blocks)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - t)


def seconds() -> dict[str, float]:
    return dict(_SECONDS)


def write(path: Path) -> None:
    """``{"started_at", "written_at": epoch seconds, "stages_s": {stage: seconds}}``."""
    Path(path).write_text(json.dumps({"started_at": STARTED, "written_at": time.time(),
                                      "stages_s": {k: round(v, 4) for k, v in
                                                   sorted(_SECONDS.items())}},
                                     indent=1) + "\n")
