"""The validation process of a sweep: ``python -m slicert_ops.validate.worker [BATCH [WAIT]]``.

Started by ``stage.ValidationStage``. Imports GX at once (while the sweep measures), then
validates the run folders it is handed in batches -- ``BATCH`` runs, or what is queued
``WAIT`` seconds after the first of a batch, or at once after a flush -- with one GX call
per suite (gx_runner.validate_runs writes validation.json / .html into each folder). Runs at
a lower CPU priority (``SLICERT_VALIDATION_NICE``, default 5).

Protocol, JSON lines. Parent -> worker (stdin): {"op": "run", "dir"} | {"op": "flush"}
(validate what is queued now, and every later run at once) | {"op": "exit"} (stop now).
Worker -> parent (stdout): {"ev": "verdict", "dir", "verdict": Verdict.to_dict()} |
{"ev": "error", "message", "dirs"} (the runs of a batch that raised get no verdict here: the
parent validates them itself).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from slicert_ops.procs import protocol_emitter

NICE = 5


class _Queue:
    def __init__(self, batch_size: int, max_wait_s: float) -> None:
        self.batch_size, self.max_wait_s = batch_size, max_wait_s
        self.cond = threading.Condition()
        self.items: list[Path] = []
        self.first = 0.0
        self.flushing = False

    def put(self, d: Path) -> None:
        with self.cond:
            if not self.items:
                self.first = time.monotonic()
            self.items.append(d)
            self.cond.notify_all()

    def flush(self) -> None:
        with self.cond:
            self.flushing = True
            self.cond.notify_all()

    def take(self) -> list[Path]:
        with self.cond:
            while True:
                waited = time.monotonic() - self.first
                if self.items and (self.flushing or len(self.items) >= self.batch_size
                                   or waited >= self.max_wait_s):
                    batch, self.items = self.items[:256], self.items[256:]
                    self.first = time.monotonic()
                    return batch
                self.cond.wait(timeout=max(0.05, self.max_wait_s - waited)
                               if self.items else None)


def main() -> int:
    emit = protocol_emitter()

    try:
        os.nice(max(0, int(os.environ.get("SLICERT_VALIDATION_NICE", NICE))))
    except (OSError, ValueError):
        pass
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    max_wait_s = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    queue = _Queue(max(1, batch_size), max_wait_s)

    def validate_loop() -> None:
        from slicert_ops.validate.gx_runner import gx_context
        from slicert_ops.validate.stage import Verdict, validate_runs

        try:
            gx_context()  # ~5 s: while the first runs are measured
        except Exception as exc:  # noqa: BLE001 - shows again with the first batch
            emit("error", message=f"GX failed to load: {exc}")
        while True:
            batch = queue.take()
            try:
                verdicts = validate_runs(batch, reuse=False)
            except Exception as exc:  # noqa: BLE001 - the parent validates these itself
                emit("error", dirs=[str(d) for d in batch],
                     message=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}")
                continue
            for d, v in zip(batch, verdicts, strict=True):
                emit("verdict", dir=str(d), verdict=Verdict.to_dict(v))

    threading.Thread(target=validate_loop, name="slicert-validate", daemon=True).start()
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "run":
            queue.put(Path(msg["dir"]))
        elif op == "flush":
            queue.flush()
        elif op == "exit":
            break
    # exit (or the parent is gone): what is left is validated by the parent, or later
    sys.stderr.flush()
    os._exit(0)  # skip the teardown of GX, pandas and friends


if __name__ == "__main__":
    sys.exit(main())
