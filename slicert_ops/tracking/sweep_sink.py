"""`--track`: glue between a sweep and the data plane.

Checks the services, predicts the sweep's candidates with the champion cost model (loaded
once, before any run), and hands every finished run to two background threads in the parent
process, so measuring goes on while earlier runs are validated and logged:

  validate thread: imports Great Expectations once the first run is queued, then takes the
      queued runs (a batch once ``batch_size`` are waiting, or after ``max_wait_s``, or
      everything when the sweep drains) and validates them with one GX call per suite;
  log thread: opens the MLflow parent run, then logs validated runs as they come
      (tracker.log_runs: concurrent runs, artifacts straight to S3).

``wait_validated()`` returns once every queued run has its validation.json (the index and
report need the verdicts; the logging goes on meanwhile); ``drain()`` waits for the queue
(with progress on stderr) and raises the first unexpected error; ``finish()`` drains and
reports runs kept for `slicert sync`; ``close()`` also ends the parent run. A service outage
never loses a measurement: the run stays on disk, unmarked, and `slicert sync` uploads it
later.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicert_ops.manifest import Candidate, Experiment

log = logging.getLogger(__name__)

DEFER_S = 30.0  # after a service failure, runs are kept for `slicert sync` without retrying
# CPU priority of the tracking threads (and the threads they start): the measuring (gcc,
# QEMU, the parent's own work) comes first; tracking fills the gaps. SLICERT_TRACKING_NICE.
NICE = 10


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
        self._queue: list[tuple[Path, bool]] = []          # finished, not validated
        self._validated: list[tuple[Path, Any]] = []        # validated, not logged
        self._validating = self._logging = False
        self._draining = self._stopped = False
        self._first_queued = 0.0
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._defer_until = 0.0
        self._failed = False
        self._threads = [
            threading.Thread(target=self._guard, args=(self._validate_loop,),
                             name="slicert-validate", daemon=True),
            threading.Thread(target=self._guard, args=(self._log_loop,),
                             name="slicert-log", daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def sinks(self) -> list[Any]:
        return [self.on_run]

    # ------------------------------------------------------------------ parent side
    def on_run(self, outcome: Any, run_dir: Path) -> None:
        if not (run_dir / "manifest.json").is_file():
            return
        if outcome.reused and (run_dir / ".tracked").is_file():
            return
        with self._cond:
            if not self._queue:
                self._first_queued = time.monotonic()
            self._queue.append((run_dir, bool(outcome.reused)))
            self._cond.notify_all()

    def _alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def wait_validated(self) -> None:
        """Wait until every queued run is validated (validation.json written)."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()
            while (self._queue or self._validating) and self._alive():
                self._cond.wait(timeout=1.0)

    def drain(self, *, progress: bool = True) -> None:
        """Wait until every queued run is validated and logged (or deferred). Raises the first
        unexpected error of the workers (service outages are not errors: those runs are kept
        for `slicert sync`)."""
        t0 = time.monotonic()
        while not self._opened.wait(timeout=1.0) and self._alive():
            pass
        with self._cond:
            self._draining = True
            self._cond.notify_all()
            left = len(self._queue) + len(self._validated)
            if left and progress:
                print(f"slicert: tracking: validating and logging the last {left} run(s)...",
                      file=sys.stderr, flush=True)
            last_note = t0
            while self._busy() and self._alive():
                self._cond.wait(timeout=1.0)
                if progress and time.monotonic() - last_note > 10:
                    last_note = time.monotonic()
                    print(f"slicert: tracking: {len(self._queue) + len(self._validated)} "
                          f"run(s) left, {self.logged} logged", file=sys.stderr, flush=True)
        if progress and time.monotonic() - t0 > 0.5:
            print(f"slicert: tracking: {self.logged} run(s) logged ({self.invalid} invalid), "
                  f"{time.monotonic() - t0:.1f} s after the sweep", file=sys.stderr, flush=True)
        if self.errors:
            err = self.errors[0]
            self.errors = []
            self._failed = True
            raise err

    def _busy(self) -> bool:
        return bool(self._queue or self._validated or self._validating or self._logging)

    def finish(self) -> None:
        """Drain, then say which runs are kept on disk for `slicert sync`."""
        try:
            self.drain()
        finally:
            self._report_deferred(self.exp_dir)

    def close(self, exp_dir: Path, exit_code: int) -> None:
        """Drain, end the parent run (uploading the report), stop the workers."""
        try:
            self.drain()
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()
            self._close_sweep(exp_dir, exit_code)
            self._report_deferred(exp_dir)

    def _close_sweep(self, exp_dir: Path, exit_code: int) -> None:
        report = exp_dir / "report"
        status = "ok" if exit_code == 0 else "failed"
        if self.parent_run_id is not None:
            try:
                self.tracker.close_sweep(self.parent_run_id, status,
                                         report_dir=report if report.is_dir() else None)
            except Exception as exc:  # noqa: BLE001 - the measurements are safe on disk
                print(f"slicert: warning: could not close the MLflow sweep run: {exc}",
                      file=sys.stderr)
        elif self._open_error is not None:
            print(f"slicert: warning: the MLflow sweep run could not be opened: "
                  f"{self._open_error}", file=sys.stderr)

    def _report_deferred(self, exp_dir: Path) -> None:
        if self.deferred:
            why = "(tracking failed: see the error)" if self._failed else \
                "(a service was down)"
            print(f"slicert: {len(self.deferred)} run(s) kept on disk but not uploaded {why}; "
                  f"upload them with `slicert sync {exp_dir.parent}`", file=sys.stderr)

    # ------------------------------------------------------------------ workers
    def _guard(self, loop) -> None:
        """Run a worker loop; a bug ends it with the error surfaced by drain() and the runs
        left kept for `slicert sync`."""
        _lower_priority()
        try:
            loop()
        except BaseException as exc:  # noqa: BLE001
            with self._cond:
                self.errors.append(exc)
                self.deferred += [d for d, _ in self._queue] + [d for d, _ in self._validated]
                self._queue.clear()
                self._validated.clear()
                self._validating = self._logging = False
                self._cond.notify_all()
            self._opened.set()

    def _validate_loop(self) -> None:
        """Batches of finished runs -> GX (one call per suite) -> the log queue."""
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
            if not batch:
                warm = True
                self._warm_up()
                continue
            warm = True
            try:
                vals = self._validate(batch)
            except Exception as exc:  # noqa: BLE001 - surfaced by drain()
                with self._cond:
                    self.errors.append(exc)
                    self.deferred += [d for d, _ in batch]
                    self._validating = False
                    self._cond.notify_all()
                continue
            with self._cond:
                self._validated += list(zip([d for d, _ in batch], vals, strict=True))
                self._validating = False
                self._cond.notify_all()

    def _ready(self) -> bool:
        if not self._queue:
            return False
        return (self._draining or len(self._queue) >= self.batch_size
                or time.monotonic() - self._first_queued >= self.max_wait_s)

    def _wait_timeout(self) -> float | None:
        if not self._queue:
            return None
        return max(0.05, self.max_wait_s - (time.monotonic() - self._first_queued))

    def _warm_up(self) -> None:
        """Import Great Expectations and build its context (seconds), off the measuring
        thread; an error shows again when the batch is validated."""
        try:
            from slicert_ops.validate.gx_runner import gx_context

            gx_context()
        except Exception as exc:  # noqa: BLE001
            log.debug("GX warm-up failed: %s", exc)

    def _validate(self, batch: list[tuple[Path, bool]]) -> list[Any]:
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
        """Open the parent run, then log validated runs as they come (tracker.log_runs)."""
        try:
            self.parent_run_id = self.tracker.open_sweep(self.experiment_name, self.manifest,
                                                         self.exp_dir)
        except Exception as exc:  # noqa: BLE001 - reported at close
            self._open_error = exc
            from slicert_ops.errors import ServiceError

            if not isinstance(exc, ServiceError):
                self.errors.append(exc)
            log.warning("tracking: could not open the sweep run (%s); runs are kept for "
                        "`slicert sync`", exc)
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
            except Exception as exc:  # noqa: BLE001 - surfaced by drain()
                with self._cond:
                    self.errors.append(exc)
                    self.deferred += [d for d, _ in items if not (d / ".tracked").is_file()]
            finally:
                with self._cond:
                    self._logging = False
                    self._cond.notify_all()

    def _log(self, items: list[tuple[Path, Any]]) -> None:
        from slicert_ops.tracking.retry import ServiceUnavailable

        dirs = [d for d, _ in items]
        if self.parent_run_id is None or time.monotonic() < self._defer_until:
            self.deferred += dirs
            return
        results = self.tracker.log_runs(self.parent_run_id, dirs, [v for _, v in items])
        for (d, val), res in zip(items, results, strict=True):
            if isinstance(res, ServiceUnavailable):
                self._defer_until = time.monotonic() + DEFER_S
                self.deferred.append(d)
                log.warning("not tracked yet (%s); kept in %s for `slicert sync`", res, d)
            elif isinstance(res, BaseException):
                self.deferred.append(d)
                self.errors.append(res)
            else:
                self.logged += 1
                if not val.success:
                    self.invalid += 1


def _lower_priority() -> None:
    """Renice the calling thread (Linux: a thread is a task; threads it starts inherit it)."""
    try:
        nice = int(os.environ.get("SLICERT_TRACKING_NICE", NICE))
        if nice > 0:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, ValueError, AttributeError):
        pass


def open_tracking(exp: Experiment, out_root: Path, cands: list[Candidate]) -> Tracking:
    """Check the services, predict the candidates with the champion, and start the tracking
    worker (it opens the sweep's parent run while the sweep starts measuring)."""
    # The worker imports mlflow and GX while this thread imports TVM: import the heavy
    # modules they share here first (the report imports pandas in any case).
    import numpy  # noqa: F401
    import pandas  # noqa: F401

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
    from slicert_ops.codegen import features
    from slicert_ops.codegen.spec import ScheduleParams
    from slicert_ops.costmodel.features import candidate_features
    from slicert_ops.costmodel.loader import load_champion
    from slicert_ops.manifest.expand import operator_spec_from_dict

    champion = load_champion()
    if champion is None:
        return None
    feats = {}
    for c in cands:
        op = operator_spec_from_dict(c.operator)
        sched = ScheduleParams(**c.schedule)
        manifest_like = {"operator": c.operator, "schedule": c.schedule, "runner": c.runner,
                         "versions": c.versions}
        feats[c.id] = candidate_features(manifest_like, {"features": features(op, sched)})
    return {"name": champion.name, "version": champion.version,
            "predictions": champion.predict_candidates(feats)}
