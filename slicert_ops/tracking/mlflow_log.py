"""MLflow logging of sweeps and runs (artifacts in S3).

Layout in MLflow:
  experiment  = the manifest's experiment name (one per manifest)
  parent run  = one per sweep, found again by tag ``slicert.sweep_key`` (hash of the manifest)
  child run   = one per (candidate, repeat), found again by tags ``slicert.candidate_id`` +
                ``slicert.repeat``; params (schedule, operator, runner, versions, ids),
                metrics (every trace metric), tags, the whole run folder as artifacts.

Idempotent: a child is searched by tag before it is created; a child that was created but
not finished (service died mid-upload) is resumed, not duplicated; a run folder is marked
with ``.tracked`` (the MLflow run id) only once everything is uploaded. A run that failed or
failed validation is logged with status FAILED and tag ``slicert.valid=false``: it is never
a valid measurement (filter on ``tags.slicert.valid = 'true'``).

The verdicts come from the validation stage (validate/stage.py): ``log_runs`` takes them, or
reads a folder's validation.json; it never validates (nor imports Great Expectations).

Many folders at once: ``log_runs`` locks them, finds existing children with one search per
candidate, and logs the runs concurrently: three requests per run (create with its tags;
upload; one log_batch with params, metrics and the ``complete`` tag; end).

The pieces: mapping.py (params, metrics, tags), artifacts.py (straight to S3 or through the
server), health.py (which service is down), folders.py (read, lock, mark). The tracking
server is spoken to through its REST API (mlflow_rest.py: the ``mlflow`` package is not
imported, which saves seconds of CPU per sweep).

Errors: ``ServiceUnavailable`` (a ServiceError) names the service (MLflow or the object
store) and the fix, after bounded retries with back-off (see retry.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from slicert_ops.errors import InputError
from slicert_ops.rundir import write_text_atomic
from slicert_ops.tracking.artifacts import PROBE_ARTIFACT, ArtifactRouter, report_files, run_files
from slicert_ops.tracking.folders import (  # noqa: F401 - re-exported
    SWEEP_FILE,
    TRACKED_FILE,
    dir_lock,
    read_run_manifest,
    read_tracked,
)
from slicert_ops.tracking.health import ServiceHealth
from slicert_ops.tracking.http_settings import configure_mlflow_http
from slicert_ops.tracking.links import ML_EXPERIMENT_TAGS
from slicert_ops.tracking.mapping import (  # noqa: F401 - sweep_key, flatten re-exported
    KIND_RUN,
    KIND_SWEEP,
    STATUS,
    TAG,
    flatten,
    is_valid,
    run_metrics,
    run_params,
    run_tags,
    sweep_key,
    sweep_tags,
)
from slicert_ops.tracking.retry import RetryPolicy, ServiceUnavailable, call_with_retries
from slicert_ops.validate.stage import Verdict, read_verdict

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class LogResult:
    """What logging one run folder did: its MLflow run id, or the error that stopped it
    (ServiceUnavailable when a service is down)."""

    run_dir: Path
    run_id: str | None = None
    error: BaseException | None = None
    valid: bool | None = None
    created: bool = False
    resumed: bool = False
    already_tracked: bool = False
    files: int = 0
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.run_id is not None


class Tracker:
    """Logs sweeps and runs to an MLflow tracking server (``MLFLOW_TRACKING_URI``)."""

    def __init__(self, tracking_uri: str | None = None, *, s3_settings=None,
                 policy: RetryPolicy | None = None, upload_threads: int = 8,
                 log_threads: int = 3) -> None:
        configure_mlflow_http()  # short MLflow HTTP retries/timeouts; our back-off decides
        if tracking_uri is None:
            tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            from slicert_ops.services.config import ServicesConfig

            tracking_uri = ServicesConfig.from_env().mlflow_uri
        self.tracking_uri = tracking_uri.rstrip("/")
        from slicert_ops.tracking.mlflow_rest import MlflowRest

        # the REST API with requests: importing mlflow would cost seconds of CPU per sweep
        self.client = MlflowRest(self.tracking_uri)
        self._lock = threading.Lock()
        self.policy = policy or RetryPolicy.from_env()
        self.health = ServiceHealth(self.tracking_uri, s3_settings)
        self.log_threads = max(1, log_threads)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._exp_ids: dict[str, str] = {}
        self._run_exp: dict[str, str] = {}
        self._run_uri: dict[str, str] = {}
        self.artifacts = ArtifactRouter(
            self.client, self.health, self.policy, self._ml, self._artifact_uri, self._pool,
            upload_threads=upload_threads, connections=upload_threads + self.log_threads + 2)
        self._defer_until = 0.0

    @property
    def _direct(self) -> bool | None:
        """Run folders go straight to S3 (True), through MLflow (False), not decided (None)."""
        return self.artifacts.direct

    def _pool(self, name: str, size: int) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                pool = self._pools[name] = ThreadPoolExecutor(
                    size, thread_name_prefix=f"slicert-{name}")
            return pool

    def _ml(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retries(fn, what=what, policy=self.policy,
                                 classify=self.health.classify)

    def check(self) -> None:
        """Raise ServiceError naming the service unless MLflow (and the object store, when its
        settings are known) answer. Use before a tracked sweep (`slicert run --track`)."""
        self.health.check()

    # ---------------------------------------------------------------- experiments
    def experiment_id(self, name: str) -> str:
        if name in self._exp_ids:
            return self._exp_ids[name]
        from slicert_ops.tracking.mlflow_rest import RestError

        exp = self._ml("get experiment", lambda: self.client.get_experiment_by_name(name))
        if exp is None:
            try:
                exp_id = self._ml("create experiment", lambda: self.client.create_experiment(
                    name, tags={"slicert.managed": "true", **ML_EXPERIMENT_TAGS}))
            except RestError as exc:  # created concurrently by another worker
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp_id = self._ml("get experiment",
                                  lambda: self.client.get_experiment_by_name(name)).experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                self._ml("restore experiment", lambda: self.client.restore_experiment(exp_id))
            for key, value in ML_EXPERIMENT_TAGS.items():  # experiments made before the tag
                if getattr(exp, "tags", {}).get(key) is None:
                    self._ml("tag experiment", lambda k=key, v=value:
                             self.client.set_experiment_tag(exp_id, k, v))
        self._exp_ids[name] = exp_id
        return exp_id

    def _search_all(self, exp_id: str, flt: str, order_by: list[str] | None = None,
                    limit: int | None = None) -> list:
        runs, token = [], None
        while True:
            page = self._ml("search runs", lambda t=token: self.client.search_runs(
                [exp_id], filter_string=flt, max_results=limit or 1000, page_token=t,
                order_by=order_by))
            runs += list(page)
            token = page.token
            if not token or limit:
                return runs

    def _run_experiment(self, run_id: str) -> str:
        if run_id not in self._run_exp or run_id not in self._run_uri:
            run = self._ml("get run", lambda: self.client.get_run(run_id))
            self._run_exp[run_id] = run.info.experiment_id
            self._run_uri[run_id] = run.info.artifact_uri
        return self._run_exp[run_id]

    def _artifact_uri(self, run_id: str) -> str | None:
        self._run_experiment(run_id)
        return self._run_uri.get(run_id)

    def _log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            m, metrics = metrics[:900], metrics[900:]
            p, params = params[:100], params[100:]
            t, tags = tags[:100], tags[100:]
            self._ml("log batch", lambda m=m, p=p, t=t: self.client.log_batch(
                run_id, metrics=m, params=p, tags=t))

    # ---------------------------------------------------------------- sweeps
    def open_sweep(self, experiment_name: str, manifest: dict, out_dir: Path | str, *,
                   reopen: bool = True) -> str:
        """Find or create the parent run of this sweep (key: hash of experiment name +
        manifest). Writes ``out_dir/sweep.json`` first, so `slicert sync` can open the same
        sweep later if MLflow is down now. Returns the parent run id."""
        from slicert_ops.tracking.mlflow_rest import Param

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        key = sweep_key(experiment_name, manifest)
        sweep_file = out_dir / SWEEP_FILE
        record = {"schema": "slicert-sweep/1", "experiment_name": experiment_name,
                  "sweep_key": key, "manifest": manifest, "parent_run_id": None,
                  "tracking_uri": self.tracking_uri}
        if sweep_file.exists():
            with contextlib.suppress(OSError, ValueError):
                old = json.loads(sweep_file.read_text())
                if old.get("sweep_key") == key and old.get("tracking_uri") == self.tracking_uri:
                    record["parent_run_id"] = old.get("parent_run_id")
        write_text_atomic(sweep_file, json.dumps(record, indent=1, default=str))

        exp_id = self.experiment_id(experiment_name)
        flt = f"tags.`{TAG}sweep_key` = '{key}' and tags.`{TAG}kind` = '{KIND_SWEEP}'"
        with dir_lock(out_dir):
            found = self._search_all(exp_id, flt, ["attributes.start_time ASC"], limit=1)
            if found:
                run = found[0]
                run_id = run.info.run_id
                if reopen and run.info.status != "RUNNING":
                    self._ml("reopen sweep", lambda: self.client.update_run(
                        run_id, status="RUNNING"))
            else:
                run = self._ml("create sweep run", lambda: self.client.create_run(
                    exp_id, tags=sweep_tags(experiment_name, key, out_dir),
                    run_name=f"sweep {experiment_name} {key[:8]}"))
                run_id = run.info.run_id
                self._log_batch(run_id, params=[Param(k, v) for k, v in
                                                flatten(manifest, "manifest").items()])
            self._run_exp[run_id] = exp_id
            self._run_uri[run_id] = run.info.artifact_uri
            if run.data.tags.get(f"{TAG}manifest_logged") != "true":
                self._ml("upload sweep manifest", lambda: self.client.log_dict(
                    run_id, {"experiment": experiment_name, "sweep_key": key,
                             "manifest": manifest}, PROBE_ARTIFACT,
                    artifact_uri=run.info.artifact_uri))
                self._ml("tag sweep", lambda: self.client.set_tag(
                    run_id, f"{TAG}manifest_logged", "true"))
            self.artifacts.verify_direct(run_id)
        record["parent_run_id"] = run_id
        record["experiment_id"] = exp_id
        write_text_atomic(sweep_file, json.dumps(record, indent=1, default=str))
        return run_id

    def close_sweep(self, parent_run_id: str, status: str = "ok",
                    report_dir: Path | str | None = None) -> None:
        """Upload report_dir (under ``report/``), log sweep counts and end the parent run
        with FINISHED / FAILED / KILLED ("ok", "failed", "killed" are accepted too)."""
        from slicert_ops.tracking.mlflow_rest import Metric

        mstatus = STATUS.get(str(status).lower(), str(status).upper())
        if mstatus not in ("FINISHED", "FAILED", "KILLED"):
            raise InputError(f"unknown sweep status {status!r}", field="status",
                             fix="use ok, failed or killed")
        if report_dir is not None and Path(report_dir).is_dir():
            self.artifacts.upload(parent_run_id, report_files(Path(report_dir)))
        exp_id = self._run_experiment(parent_run_id)
        children = self._search_all(exp_id, f"tags.mlflow.parentRunId = '{parent_run_id}'")
        valid = sum(1 for r in children if r.data.tags.get(f"{TAG}valid") == "true")
        now = int(time.time() * 1000)
        self._log_batch(parent_run_id, metrics=[
            Metric("runs_logged", len(children), now, 0),
            Metric("runs_valid", valid, now, 0),
            Metric("runs_invalid", len(children) - valid, now, 0)])
        self._ml("end sweep", lambda: self.client.set_terminated(parent_run_id, mstatus))

    # ---------------------------------------------------------------- runs
    def log_run(self, parent_run_id: str, run_dir: Path | str, verdict: Any = None) -> str:
        """Log one run folder as a child of the sweep; idempotent by candidate id + repeat.

        ``verdict``: the folder's Verdict (or a gx_runner.ValidationResult), or None to read
        its validation.json. Returns the MLflow run id; marks the folder with ``.tracked``
        once everything is uploaded. Raises ServiceUnavailable (a ServiceError) naming MLflow
        or the object store when they stay down after the retries.
        """
        run = Verdict.of(run_dir, verdict) if verdict is not None else run_dir
        result = self.log_runs(parent_run_id, [run])[0]
        if result.error is not None:
            raise result.error
        return str(result.run_id)

    def log_runs(self, parent_run_id: str, runs: Sequence[Verdict | Path | str]
                 ) -> list[LogResult]:
        """``log_run`` for many folders at once, given as their Verdicts (or as folders whose
        validation.json holds it): the folders are locked together, existing children are
        found with one search per candidate, and the runs are logged concurrently
        (``log_threads``). Returns one LogResult per entry, in order."""
        t0 = time.perf_counter()
        verdicts = [r if isinstance(r, Verdict) else None for r in runs]
        dirs = [v.run_dir if v is not None else Path(r) for v, r in zip(verdicts, runs,
                                                                           strict=True)]
        out = [LogResult(d) for d in dirs]
        manifests: dict[int, dict] = {}
        first: dict[Path, int] = {}  # a folder listed twice is logged once (and locked once)
        for i, d in enumerate(dirs):
            if first.setdefault(d.resolve(), i) != i:
                continue
            done = read_tracked(d)
            if done:
                out[i] = LogResult(d, done, already_tracked=True)
                continue
            try:
                manifests[i] = read_run_manifest(d)
                verdicts[i] = verdicts[i] or read_verdict(d)
                if verdicts[i] is None:
                    raise InputError("the run folder has no verdict (validation.json)",
                                     file=str(d), fix="validate it first (`slicert sync` "
                                     "does; so does every sweep)")
            except Exception as exc:  # noqa: BLE001 - reported per folder
                manifests.pop(i, None)
                out[i].error = exc
        todo = sorted(manifests, key=lambda i: str(dirs[i]))
        try:
            if todo:
                self._log_locked_batch(parent_run_id, dirs, manifests, verdicts, todo, out)
        except Exception as exc:  # noqa: BLE001 - a service down before any run was logged
            for i in todo:
                if out[i].run_id is None and out[i].error is None:
                    out[i].error = exc
        for i, d in enumerate(dirs):
            j = first[d.resolve()]
            if j != i:
                out[i] = LogResult(**{**vars(out[j]), "run_dir": d})
        if len(dirs) == 1 and out[0].seconds is not None:
            out[0].seconds = round(time.perf_counter() - t0, 3)
        return out

    def _log_locked_batch(self, parent_run_id: str, dirs: list[Path],
                          manifests: dict[int, dict], verdicts: list[Verdict | None],
                          todo: list[int], out: list[LogResult]) -> None:
        exp_id = self._run_experiment(parent_run_id)
        self.artifacts.verify_direct(parent_run_id)
        with contextlib.ExitStack() as stack:
            for i in todo:
                stack.enter_context(dir_lock(dirs[i]))
            pending = []
            for i in todo:
                done = read_tracked(dirs[i])
                if done:
                    out[i] = LogResult(dirs[i], done, already_tracked=True)
                else:
                    pending.append(i)
            found = self._find_children(exp_id, {str(manifests[i]["candidate_id"])
                                                 for i in pending})

            def one(i: int) -> LogResult:
                try:
                    return self._log_locked(parent_run_id, exp_id, dirs[i], manifests[i],
                                            verdicts[i], found)
                except Exception as exc:  # noqa: BLE001 - reported per folder
                    return LogResult(dirs[i], error=exc)

            if len(pending) <= 1 or self.log_threads == 1:
                results = [one(i) for i in pending]
            else:
                pool = self._pool("log", self.log_threads)
                results = [f.result() for f in [pool.submit(one, i) for i in pending]]
            for i, res in zip(pending, results, strict=True):
                out[i] = res

    def _find_children(self, exp_id: str, candidate_ids: set[str]) -> dict[tuple[str, str], list]:
        """Existing child runs by (candidate id, repeat), oldest first: one search per
        candidate (MLflow's filter has no IN for tags)."""
        found: dict[tuple[str, str], list] = {}
        for cid in sorted(candidate_ids):
            flt = f"tags.`{TAG}candidate_id` = '{cid}' and tags.`{TAG}kind` = '{KIND_RUN}'"
            for run in self._search_all(exp_id, flt, order_by=["attributes.start_time ASC"]):
                rep = run.data.tags.get(f"{TAG}repeat")
                found.setdefault((cid, str(rep)), []).append(run)
        return found

    def _log_locked(self, parent_run_id: str, exp_id: str, run_dir: Path, manifest: dict,
                    verdict: Any, found: dict[tuple[str, str], list]) -> LogResult:
        """One folder (locked by the caller): create or resume its child run, upload the
        folder, log params, metrics, tags and the complete mark, end the run, write
        .tracked."""
        from slicert_ops.tracking.mlflow_rest import Metric, Param, RunTag

        t0 = time.perf_counter()
        cid, rep = str(manifest["candidate_id"]), str(manifest["repeat"])
        valid = is_valid(manifest, verdict)
        runs = found.get((cid, rep), [])
        if len(runs) > 1:
            log.warning("%d MLflow runs for candidate %s repeat %s; using the oldest",
                        len(runs), cid, rep)
        run = runs[0] if runs else None
        created = run is None
        if run is not None and run.data.tags.get(f"{TAG}complete") == "true":
            write_text_atomic(run_dir / TRACKED_FILE, run.info.run_id + "\n")
            return LogResult(run_dir, run.info.run_id,
                             valid=run.data.tags.get(f"{TAG}valid") == "true")
        tags = run_tags(manifest, run_dir, parent_run_id, verdict)
        if run is None:
            run = self._ml("create run", lambda: self.client.create_run(
                exp_id, tags=tags, run_name=str(manifest.get("run", run_dir.name))))
        run_id = run.info.run_id
        have_params = dict(run.data.params)
        have_metrics = set(run.data.metrics)
        params = [Param(k, v) for k, v in run_params(manifest).items() if k not in have_params]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in run_metrics(run_dir, manifest).items()
                   if k not in have_metrics]
        new_tags = [RunTag(k, v) for k, v in tags.items()] if not created else []
        files = run_files(run_dir, verdict)
        self.artifacts.upload(run_id, files, run.info.artifact_uri)
        # Params, metrics and the completion tag in one request when they fit in one (after
        # the upload: "complete" must never precede the artifacts or the params).
        complete = RunTag(f"{TAG}complete", "true")
        if len(metrics) <= 900 and len(params) <= 100 and len(new_tags) < 100:
            self._log_batch(run_id, metrics=metrics, params=params, tags=[*new_tags, complete])
        else:
            self._log_batch(run_id, metrics=metrics, params=params, tags=new_tags)
            self._log_batch(run_id, tags=[complete])
        self._ml("end run", lambda: self.client.set_terminated(
            run_id, "FINISHED" if valid else "FAILED"))
        write_text_atomic(run_dir / TRACKED_FILE, run_id + "\n")
        return LogResult(run_dir, run_id, valid=valid, created=created, resumed=not created,
                         files=len(files), seconds=round(time.perf_counter() - t0, 3))

    def log_run_or_defer(self, parent_run_id: str | None, run_dir: Path | str,
                         verdict: Any = None, *, defer_s: float = 30.0) -> str | None:
        """Like log_run, but when a service is down: warn, keep the folder for `slicert sync`
        and return None. After one failure, further calls within ``defer_s`` return None at
        once, so a sweep does not wait out the back-off for every run."""
        if parent_run_id is None or time.monotonic() < self._defer_until:
            return None
        try:
            return self.log_run(parent_run_id, run_dir, verdict)
        except ServiceUnavailable as exc:
            self._defer_until = time.monotonic() + defer_s
            log.warning("not tracked yet (%s); kept in %s for `slicert sync`", exc, run_dir)
            return None
