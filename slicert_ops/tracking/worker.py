"""The tracking worker of a tracked sweep: ``python -m slicert_ops.tracking.worker``.

Started by ``sweep_sink.Tracking`` in its own process, so that the parent keeps measuring at
full speed: Great Expectations and the HTTP clients are CPU-heavy Python, and a busy Python
thread in the parent holds the GIL the measuring thread needs (the spec's sweep, 3 repeats:
7.7 s alone, 24-43 s with one busy Python thread beside it, 8-13 s with one busy process).
The worker runs at
a lower CPU priority (``SLICERT_TRACKING_NICE``, default 5); ``SLICERT_TRACKING_DEBUG=1``
prints its timeline on stderr.

Protocol: JSON lines. Parent -> worker (stdin):
  {"op": "open", "experiment_name", "manifest", "exp_dir", "batch_size", "max_wait_s"}
                                     first line
  {"op": "run", "dir", "reused"}     a finished run folder
  {"op": "flush"}                    validate what is queued now
  {"op": "drain"}                    finish everything queued, then answer "drained"
  {"op": "close", "status", "report_dir"}   drain, end the MLflow sweep run, exit
  {"op": "exit"}                     drain and exit, leaving the sweep run open
Worker -> parent (stdout; anything else printed goes to stderr):
  {"ev": "opened", "parent_run_id"} | {"ev": "open_failed", "message"}
  {"ev": "validated", "n"}           n more runs have their validation.json
  {"ev": "logged", "dir", "run_id", "valid"}
  {"ev": "deferred", "dir", "reason"}   kept on disk for `slicert sync`
  {"ev": "error", "message", "pickled"} an unexpected error (pickled exception, base64)
  {"ev": "drained"} | {"ev": "closed", "warning"}

Inside the worker, two threads: validate (GX import once the first run is queued; batches of
``batch_size`` runs, or what is queued after ``max_wait_s`` or when draining; one GX call
per suite) and log (opens the sweep's parent run, then ``Tracker.log_runs``: concurrent
runs, artifacts straight to S3).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("slicert_ops.tracking")

DEFER_S = 30.0  # after a service failure, runs are kept for `slicert sync` without retrying
NICE = 5


_T0 = time.monotonic()
_DEBUG = bool(os.environ.get("SLICERT_TRACKING_DEBUG"))


def _debug(what: str) -> None:
    if _DEBUG:
        print(f"slicert: tracking worker +{time.monotonic() - _T0:.2f}s: {what}",
              file=sys.stderr, flush=True)


def _error_event(exc: BaseException) -> dict:
    try:
        pickled = base64.b64encode(pickle.dumps(exc)).decode()
        pickle.loads(base64.b64decode(pickled))
    except Exception:  # noqa: BLE001 - not every exception survives pickling
        pickled = None
    return {"message": f"{type(exc).__name__}: {exc}", "pickled": pickled,
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}


class Worker:
    def __init__(self, tracker: Any, emit: Callable[..., None], *, experiment_name: str,
                 manifest: dict, exp_dir: str, batch_size: int = 16,
                 max_wait_s: float = 20.0) -> None:
        self.tracker, self.emit = tracker, emit
        self.experiment_name, self.manifest = experiment_name, manifest
        self.exp_dir = Path(exp_dir)
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.parent_run_id: str | None = None
        self._cond = threading.Condition()
        self._queue: list[tuple[Path, bool]] = []          # finished, not validated
        self._validated: list[tuple[Path, Any]] = []        # validated, not logged
        self._validating = self._logging = False
        self._draining = self._stopped = False
        self._first_queued = 0.0
        self._opened = threading.Event()
        self._defer_until = 0.0
        self._threads = [threading.Thread(target=self._guard, args=(loop,), name=name,
                                          daemon=True)
                         for loop, name in ((self._validate_loop, "slicert-validate"),
                                            (self._log_loop, "slicert-log"))]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ commands
    def add(self, run_dir: Path, reused: bool) -> None:
        with self._cond:
            if not self._queue:
                self._first_queued = time.monotonic()
            self._queue.append((run_dir, reused))
            self._cond.notify_all()

    def flush(self) -> None:
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def drain(self) -> None:
        self._opened.wait()
        with self._cond:
            self._draining = True
            self._cond.notify_all()
            while self._busy() and all(t.is_alive() for t in self._threads):
                self._cond.wait(timeout=1.0)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def close_sweep(self, status: str, report_dir: str | None) -> str | None:
        """End the parent run; returns a warning (the measurements are safe on disk)."""
        if self.parent_run_id is None:
            return None
        try:
            report = Path(report_dir) if report_dir else None
            self.tracker.close_sweep(self.parent_run_id, status,
                                     report_dir=report if report and report.is_dir() else None)
        except Exception as exc:  # noqa: BLE001
            return f"could not close the MLflow sweep run: {exc}"
        return None

    def _busy(self) -> bool:
        return bool(self._queue or self._validated or self._validating or self._logging)

    # ------------------------------------------------------------------ threads
    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # noqa: BLE001 - a bug: the runs left are kept on disk
            self.emit("error", **_error_event(exc))
            with self._cond:
                if self._queue:
                    self.emit("validated", n=len(self._queue))  # (as far as it goes)
                for d, _ in self._queue + self._validated:
                    self.emit("deferred", dir=str(d), reason="error")
                self._queue.clear()
                self._validated.clear()
                self._validating = self._logging = False
                self._cond.notify_all()
            self._opened.set()

    def _ready(self) -> bool:
        if not self._queue:
            return False
        return (self._draining or len(self._queue) >= self.batch_size
                or time.monotonic() - self._first_queued >= self.max_wait_s)

    def _wait_timeout(self) -> float | None:
        if not self._queue:
            return None
        return max(0.05, self.max_wait_s - (time.monotonic() - self._first_queued))

    def _validate_loop(self) -> None:
        warm = False
        while True:
            batch: list[tuple[Path, bool]] = []
            with self._cond:
                while not self._ready():
                    if self._stopped:
                        return
                    if self._queue and not warm:
                        break  # the first run is queued: import GX while the batch fills
                    self._cond.wait(timeout=self._wait_timeout())
                else:
                    batch = self._queue[:256]
                    del self._queue[:256]
                    if self._queue:
                        self._first_queued = time.monotonic()
                    self._validating = True
            warm = True
            if not batch:
                _debug("GX import")
                self._warm_up()
                _debug("GX ready")
                continue
            _debug(f"validating {len(batch)} run(s)")
            try:
                vals = self._validate(batch)
            except Exception as exc:  # noqa: BLE001 - reported; the runs stay on disk
                self.emit("error", **_error_event(exc))
                self.emit("validated", n=len(batch))  # (as far as it goes)
                for d, _ in batch:
                    self.emit("deferred", dir=str(d), reason="error")
                with self._cond:
                    self._validating = False
                    self._cond.notify_all()
                continue
            self.emit("validated", n=len(batch))
            _debug(f"validated {len(batch)} run(s)")
            with self._cond:
                self._validated += list(zip([d for d, _ in batch], vals, strict=True))
                self._validating = False
                self._cond.notify_all()

    @staticmethod
    def _warm_up() -> None:
        try:
            from slicert_ops.validate.gx_runner import gx_context

            gx_context()
        except Exception as exc:  # noqa: BLE001 - shows again when the batch is validated
            log.debug("GX warm-up failed: %s", exc)

    @staticmethod
    def _validate(batch: list[tuple[Path, bool]]) -> list[Any]:
        from slicert_ops.validate.gx_runner import REPORT_JSON, ValidationResult, validate_runs

        vals: list[Any] = [None] * len(batch)
        fresh = []
        for i, (d, reused) in enumerate(batch):
            if reused and (d / REPORT_JSON).is_file():
                vals[i] = ValidationResult.from_json(d / REPORT_JSON)
            else:
                fresh.append(i)
        for i, res in zip(fresh, validate_runs([batch[i][0] for i in fresh]), strict=True):
            vals[i] = res
        return vals

    def _log_loop(self) -> None:
        try:
            self.parent_run_id = self.tracker.open_sweep(self.experiment_name, self.manifest,
                                                         self.exp_dir)
            self.emit("opened", parent_run_id=self.parent_run_id)
            _debug("sweep run opened")
        except Exception as exc:  # noqa: BLE001 - the runs are kept for `slicert sync`
            from slicert_ops.errors import ServiceError

            if not isinstance(exc, ServiceError):
                self.emit("error", **_error_event(exc))
            self.emit("open_failed", message=str(exc))
        finally:
            self._opened.set()
        while True:
            with self._cond:
                while not self._validated:
                    if self._stopped:
                        return
                    self._cond.wait()
                items = self._validated[:256]
                del self._validated[:256]
                self._logging = True
            try:
                self._log(items)
            except Exception as exc:  # noqa: BLE001 - reported; the runs stay on disk
                self.emit("error", **_error_event(exc))
                for d, _ in items:
                    if not (d / ".tracked").is_file():
                        self.emit("deferred", dir=str(d), reason="error")
            finally:
                with self._cond:
                    self._logging = False
                    self._cond.notify_all()

    def _log(self, items: list[tuple[Path, Any]]) -> None:
        from slicert_ops.tracking.retry import ServiceUnavailable

        if self.parent_run_id is None or time.monotonic() < self._defer_until:
            for d, _ in items:
                self.emit("deferred", dir=str(d), reason="service")
            return
        dirs = [d for d, _ in items]
        _debug(f"logging {len(dirs)} run(s)")
        results = self.tracker.log_runs(self.parent_run_id, dirs, [v for _, v in items])
        _debug(f"logged {len(dirs)} run(s)")
        for (d, val), res in zip(items, results, strict=True):
            if isinstance(res, ServiceUnavailable):
                self._defer_until = time.monotonic() + DEFER_S
                log.warning("not tracked yet (%s); kept in %s for `slicert sync`", res, d)
                self.emit("deferred", dir=str(d), reason="service")
            elif isinstance(res, BaseException):
                self.emit("error", **_error_event(res))
                self.emit("deferred", dir=str(d), reason="error")
            else:
                self.emit("logged", dir=str(d), run_id=res, valid=bool(val.success))


def main() -> int:
    # The protocol owns the original stdout; anything else printed goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    lock = threading.Lock()

    def emit(ev: str, **kw: Any) -> None:
        line = json.dumps({"ev": ev, **kw}, default=str)
        with lock:
            proto.write(line + "\n")
            proto.flush()

    # Ctrl-C reaches the whole process group: stop quietly (what is not logged yet stays on
    # disk, unmarked, for `slicert sync`).
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    try:
        os.nice(max(0, int(os.environ.get("SLICERT_TRACKING_NICE", NICE))))
    except (OSError, ValueError):
        pass
    first = sys.stdin.readline()
    if not first:
        return 0
    cfg = json.loads(first)
    _debug("started")
    from slicert_ops.tracking.mlflow_log import Tracker

    worker = Worker(Tracker(), emit, experiment_name=cfg["experiment_name"],
                    manifest=cfg["manifest"], exp_dir=cfg["exp_dir"],
                    batch_size=int(cfg.get("batch_size", 16)),
                    max_wait_s=float(cfg.get("max_wait_s", 20.0)))
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "run":
            worker.add(Path(msg["dir"]), bool(msg.get("reused")))
            _debug(f"run {msg['dir']}")
        elif op == "flush":
            worker.flush()
        elif op == "drain":
            _debug("drain")
            worker.drain()
            _debug("drained")
            emit("drained")
        elif op == "close":
            worker.drain()
            _debug("closing the sweep run")
            warning = worker.close_sweep(msg.get("status", "ok"), msg.get("report_dir"))
            _debug("closed")
            worker.stop()
            emit("closed", warning=warning)
            _exit_now()
        elif op == "exit":
            break
    worker.drain()  # the parent is gone or done: finish what it handed over
    worker.stop()
    emit("drained")
    _exit_now()
    return 0


def _exit_now() -> None:
    """Everything is written and reported: skip the interpreter's teardown (a second of
    freeing GX, pandas and friends the parent would wait for)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
