"""`--track`: glue between a sweep and the data plane.

Checks the services, predicts the sweep's candidates with the champion cost model (loaded
once, before any run), and chains two stages: every finished run goes to the validation
stage (validate/stage.py, the sweep's sink: ``sinks`` is that stage), and every verdict it
gives to the tracking worker, a process of its own (worker.py: a busy Python thread in this
process would take the GIL from the measuring), which logs the runs to MLflow + S3 while the
sweep goes on measuring.

``wait_validated()`` returns once every run handed over has its validation.json (the index
and report need the verdicts; the logging goes on meanwhile); ``drain()`` waits for the
verdicts and the worker (with progress on stderr) and raises the first unexpected error;
``finish()`` drains and reports runs kept for `slicert sync`; ``close()`` also ends the
sweep's parent run. A service outage never loses a measurement: the run stays on disk,
unmarked, and `slicert sync` uploads it later.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.manifest import Candidate, Experiment
from slicert_ops.validate.stage import ValidationStage, Verdict

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """The tracking worker failed (not a service outage); the runs stay on disk."""


@dataclass
class Tracking:
    tracker: Any
    experiment_name: str
    manifest: dict
    exp_dir: Path
    cost_model: dict[str, Any] | None
    batch_size: int = 16
    max_wait_s: float = 20.0
    parent_run_id: str | None = None
    deferred: list[Path] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    logged: int = 0
    invalid: int = 0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self.validation = ValidationStage([self._on_verdict], batch_size=self.batch_size,
                                          max_wait_s=self.max_wait_s)
        self._done: set[str] = set()  # logged or deferred
        self._sent_dirs: list[str] = []
        self._opened = self._drained = self._closed = False
        self._exited = False
        self._failed = False
        self._open_error: str | None = None
        self._close_warning: str | None = None
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "slicert_ops.tracking.worker"], env=self._worker_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name="slicert-tracking-reader",
                                        daemon=True)
        self._reader.start()
        self._send(op="open", experiment_name=self.experiment_name, manifest=self.manifest,
                   exp_dir=str(self.exp_dir))

    def _worker_env(self) -> dict[str, str]:
        """The worker talks to the same services as this tracker."""
        env = dict(os.environ)
        env["MLFLOW_TRACKING_URI"] = self.tracker.tracking_uri
        settings = self.tracker.health.s3()
        if settings is not None:
            env.update(SLICERT_S3_ENDPOINT=settings.endpoint,
                       SLICERT_S3_ACCESS_KEY=settings.access_key,
                       SLICERT_S3_SECRET_KEY=settings.secret_key,
                       SLICERT_S3_BUCKET=settings.bucket)
        policy = self.tracker.policy
        env.update(SLICERT_RETRY_ATTEMPTS=str(policy.attempts),
                   SLICERT_RETRY_BASE_DELAY_S=str(policy.base_delay_s),
                   SLICERT_RETRY_MAX_DELAY_S=str(policy.max_delay_s))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    @property
    def sinks(self) -> list[Any]:
        """The sweep's sinks: the validation stage (its verdicts come here)."""
        return [self.validation]

    # ------------------------------------------------------------------ talking to the worker
    def _send(self, **msg: Any) -> bool:
        if self._exited:
            return False
        with self._send_lock:  # from this thread and the validation stage's reader
            try:
                self._proc.stdin.write(json.dumps(msg, default=str) + "\n")
                self._proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self._on_event(ev)
                self._cond.notify_all()
        code = self._proc.wait()
        with self._cond:
            if not self._closed and not (self._drained and code == 0):
                self.errors.append(TrackingError(
                    f"the tracking worker exited unexpectedly (exit status {code})"))
            for d in self._sent_dirs:
                if d not in self._done:
                    self._done.add(d)
                    self.deferred.append(Path(d))
            self._exited = True
            self._cond.notify_all()

    def _on_event(self, ev: dict) -> None:
        kind = ev.get("ev")
        if kind == "opened":
            self.parent_run_id, self._opened = ev.get("parent_run_id"), True
        elif kind == "open_failed":
            self._open_error, self._opened = ev.get("message"), True
        elif kind == "logged":
            self._done.add(ev["dir"])
            self.logged += 1
            self.invalid += 0 if ev.get("valid") else 1
        elif kind == "deferred":
            if ev["dir"] not in self._done:
                self._done.add(ev["dir"])
                self.deferred.append(Path(ev["dir"]))
        elif kind == "error":
            self.errors.append(_unpickle(ev))
        elif kind == "drained":
            self._drained = True
        elif kind == "closed":
            self._closed, self._close_warning = True, ev.get("warning")

    def _wait(self, until, progress: bool = False) -> None:
        t0 = last = time.monotonic()
        with self._cond:
            while not until() and not self._exited:
                self._cond.wait(timeout=1.0)
                if progress and time.monotonic() - last > 10:
                    last = time.monotonic()
                    print(f"slicert: tracking: {len(self._sent_dirs) - len(self._done)} run(s) "
                          f"left, {self.logged} logged", file=sys.stderr, flush=True)
        if progress and time.monotonic() - t0 > 0.5:
            print(f"slicert: tracking: {self.logged} run(s) logged ({self.invalid} invalid), "
                  f"{time.monotonic() - t0:.1f} s after the sweep", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ the sweep's side
    def on_run(self, outcome: Any, run_dir: Path) -> None:
        """A finished run: validated, then logged (what ``sinks`` does)."""
        self.validation(outcome, run_dir)

    def _on_verdict(self, run_dir: Path, verdict: Verdict, reused: bool) -> None:
        if reused and (run_dir / ".tracked").is_file():
            return
        with self._cond:
            self._sent_dirs.append(str(run_dir))
        if not self._send(op="run", dir=str(run_dir), verdict=verdict.to_dict()):
            with self._cond:
                self._done.add(str(run_dir))
                self.deferred.append(run_dir)

    def wait_validated(self) -> None:
        """Wait until every run handed over is validated (validation.json written)."""
        self.validation.wait()

    def drain(self, *, progress: bool = True) -> None:
        """Wait until every run handed over is validated and logged (or kept for `slicert
        sync`). Raises the first unexpected error of the worker (service outages are not
        errors: those runs are kept for `slicert sync`)."""
        self.validation.wait()
        with self._cond:
            left = len(self._sent_dirs) - len(self._done)
            self._drained = False
        if left and progress:
            print(f"slicert: tracking: logging the last {left} run(s)...",
                  file=sys.stderr, flush=True)
        self._send(op="drain")
        self._wait(lambda: self._drained, progress=progress)
        self._raise_error()

    def _raise_error(self) -> None:
        with self._cond:
            if not self.errors:
                return
            err, self.errors = self.errors[0], []
            self._failed = True
        raise err

    def finish(self) -> None:
        """Drain and stop the worker (the sweep run stays open for a later `close`), then
        say which runs are kept on disk for `slicert sync`."""
        try:
            self.drain()
        finally:
            self.validation.close(wait=False)
            self._send(op="exit")
            self._join()
            self._report_deferred(self.exp_dir)

    def close(self, exp_dir: Path, exit_code: int) -> None:
        """Drain, end the parent run (uploading the report), stop the worker."""
        report = Path(exp_dir) / "report"
        try:
            self.drain()
        finally:
            self.validation.close(wait=False)
            self._send(op="close", status="ok" if exit_code == 0 else "failed",
                       report_dir=str(report) if report.is_dir() else None)
            self._wait(lambda: self._closed)
            self._join()
            if self._close_warning:
                print(f"slicert: warning: {self._close_warning}", file=sys.stderr)
            elif self.parent_run_id is None and self._open_error:
                print(f"slicert: warning: the MLflow sweep run could not be opened: "
                      f"{self._open_error}", file=sys.stderr)
            self._report_deferred(Path(exp_dir))
        self._raise_error()

    def _join(self) -> None:
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._reader.join(timeout=5)

    def _report_deferred(self, exp_dir: Path) -> None:
        if self.deferred:
            why = "(tracking failed: see the error)" if self._failed or self.errors else \
                "(a service was down)"
            print(f"slicert: {len(self.deferred)} run(s) kept on disk but not uploaded {why}; "
                  f"upload them with `slicert sync {exp_dir.parent}`", file=sys.stderr)


def _unpickle(ev: dict) -> BaseException:
    if ev.get("pickled"):
        try:
            exc = pickle.loads(base64.b64decode(ev["pickled"]))
            if isinstance(exc, BaseException):
                return exc
        except Exception:  # noqa: BLE001
            pass
    return TrackingError(f"tracking worker: {ev.get('message')}\n{ev.get('traceback', '')}")


def open_tracking(exp: Experiment, out_root: Path, cands: list[Candidate]) -> Tracking:
    """Check the services, predict the candidates with the champion, and start the tracking
    worker process (it opens the sweep's parent run while the sweep starts measuring)."""
    from slicert_ops.tracking import preflight
    from slicert_ops.tracking.mlflow_log import Tracker

    preflight()
    tracker = Tracker()
    exp_dir = Path(out_root) / exp.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    cost_model = champion_predictions(cands, tracker.tracking_uri)
    return Tracking(tracker=tracker, experiment_name=exp.name, manifest=exp.to_dict(),
                    exp_dir=exp_dir, cost_model=cost_model)


def _no_champion(tracking_uri: str) -> bool:
    """True when the registry answers that there is no champion (one REST call, no mlflow
    import); False when there may be one (then the loader decides)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return False
    import requests

    from slicert_ops.costmodel.registry import ALIAS, MODEL_NAME

    try:
        resp = requests.get(f"{tracking_uri}/api/2.0/mlflow/registered-models/alias",
                            params={"name": MODEL_NAME, "alias": ALIAS}, timeout=5)
    except requests.RequestException:
        return False
    if resp.status_code == 404 or (resp.status_code == 400 and "RESOURCE_DOES_NOT_EXIST"
                                   in resp.text):
        log.warning("no cost model: registered model %s has no %r alias yet (train one with "
                    "`slicert train`)", MODEL_NAME, ALIAS)
        return True
    return False


def champion_predictions(cands: list[Candidate], tracking_uri: str | None = None
                         ) -> dict[str, Any] | None:
    """Predictions of the promoted model for these candidates (None without a champion)."""
    if not cands:
        return None
    if tracking_uri and _no_champion(tracking_uri):
        return None
    from slicert_ops.costmodel.loader import load_champion
    from slicert_ops.search.space import feature_row

    champion = load_champion()
    if champion is None:
        return None
    # the same features as the search's (a network task: its layer features); a whole
    # network is not a training row of the model, so it gets no prediction
    feats = {c.id: feature_row(c) for c in cands if c.operator.get("type") != "network"}
    if not feats:
        return None
    return {"name": champion.name, "version": champion.version,
            "predictions": champion.predict_candidates(feats)}
