"""The tracking worker of a tracked sweep: ``python -m slicert_ops.tracking.worker``.

Started by ``sweep_sink.Tracking`` in its own process, so that the parent keeps measuring at
full speed: the HTTP clients are CPU-heavy Python, and a busy Python thread in the parent
holds the GIL the measuring thread needs (the spec's sweep, 3 repeats: 7.7 s alone, 24-43 s
with one busy Python thread beside it, 8-13 s with one busy process). The worker runs at a
lower CPU priority (``SLICERT_TRACKING_NICE``, default 5); ``SLICERT_TRACKING_DEBUG=1``
prints its timeline on stderr.

Protocol: JSON lines. Parent -> worker (stdin):
  {"op": "open", "experiment_name", "manifest", "exp_dir"}   first line
  {"op": "run", "dir", "verdict"}    a validated run folder (verdict: Verdict.to_dict())
  {"op": "drain"}                    finish everything queued, then answer "drained"
  {"op": "close", "status", "report_dir"}   drain, end the MLflow sweep run, exit
  {"op": "exit"}                     drain and exit, leaving the sweep run open
Worker -> parent (stdout; anything else printed goes to stderr):
  {"ev": "opened", "parent_run_id"} | {"ev": "open_failed", "message"}
  {"ev": "logged", "dir", "run_id", "valid"}
  {"ev": "deferred", "dir", "reason"}   kept on disk for `slicert sync`
  {"ev": "error", "message", "pickled"} an unexpected error (pickled exception, base64)
  {"ev": "drained"} | {"ev": "closed", "warning"}

The runs come validated (the validation stage, validate/stage.py, runs in a process of its
own): one thread opens the sweep's parent run, then logs what is queued with
``Tracker.log_runs`` (concurrent runs, artifacts straight to S3).
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

from slicert_ops.procs import protocol_emitter

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
                 manifest: dict, exp_dir: str) -> None:
        self.tracker, self.emit = tracker, emit
        self.experiment_name, self.manifest = experiment_name, manifest
        self.exp_dir = Path(exp_dir)
        self.parent_run_id: str | None = None
        self._cond = threading.Condition()
        self._queue: list[Any] = []          # Verdicts of runs not logged yet
        self._logging = self._stopped = False
        self._opened = threading.Event()
        self._defer_until = 0.0
        self._thread = threading.Thread(target=self._guard, name="slicert-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ commands
    def add(self, verdict: Any) -> None:
        with self._cond:
            self._queue.append(verdict)
            self._cond.notify_all()

    def drain(self) -> None:
        self._opened.wait()
        with self._cond:
            while self._busy() and self._thread.is_alive():
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
        return bool(self._queue or self._logging)

    # ------------------------------------------------------------------ the log thread
    def _guard(self) -> None:
        try:
            self._log_loop()
        except BaseException as exc:  # noqa: BLE001 - a bug: the runs left are kept on disk
            self.emit("error", **_error_event(exc))
            with self._cond:
                for v in self._queue:
                    self.emit("deferred", dir=str(v.run_dir), reason="error")
                self._queue.clear()
                self._logging = False
                self._cond.notify_all()
            self._opened.set()

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
                while not self._queue:
                    if self._stopped:
                        return
                    self._cond.wait()
                items = self._queue[:256]
                del self._queue[:256]
                self._logging = True
            try:
                self._log(items)
            except Exception as exc:  # noqa: BLE001 - reported; the runs stay on disk
                self.emit("error", **_error_event(exc))
                for v in items:
                    if not (v.run_dir / ".tracked").is_file():
                        self.emit("deferred", dir=str(v.run_dir), reason="error")
            finally:
                with self._cond:
                    self._logging = False
                    self._cond.notify_all()

    def _log(self, verdicts: list[Any]) -> None:
        from slicert_ops.tracking.retry import ServiceUnavailable

        if self.parent_run_id is None or time.monotonic() < self._defer_until:
            for v in verdicts:
                self.emit("deferred", dir=str(v.run_dir), reason="service")
            return
        _debug(f"logging {len(verdicts)} run(s)")
        results = self.tracker.log_runs(self.parent_run_id, verdicts)
        _debug(f"logged {len(verdicts)} run(s)")
        for v, res in zip(verdicts, results, strict=True):
            d = v.run_dir
            if isinstance(res.error, ServiceUnavailable):
                self._defer_until = time.monotonic() + DEFER_S
                log.warning("not tracked yet (%s); kept in %s for `slicert sync`", res.error, d)
                self.emit("deferred", dir=str(d), reason="service")
            elif res.error is not None:
                self.emit("error", **_error_event(res.error))
                self.emit("deferred", dir=str(d), reason="error")
            else:
                valid = res.valid if res.valid is not None else bool(v.success)
                self.emit("logged", dir=str(d), run_id=res.run_id, valid=valid)


def main() -> int:
    emit = protocol_emitter()

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
    from slicert_ops.validate.stage import Verdict

    worker = Worker(Tracker(), emit, experiment_name=cfg["experiment_name"],
                    manifest=cfg["manifest"], exp_dir=cfg["exp_dir"])
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "run":
            worker.add(Verdict.from_dict({**msg["verdict"], "run_dir": msg["dir"]}))
            _debug(f"run {msg['dir']}")
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
    """Everything is written and reported: skip the interpreter's teardown (the parent
    would wait for it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
