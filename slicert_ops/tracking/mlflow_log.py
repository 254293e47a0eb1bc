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

Artifacts: the MLflow server proxies artifacts (``--artifacts-destination s3://B/P``; a run's
artifact_uri is ``mlflow-artifacts:/<exp>/<run>/artifacts``, stored at
``s3://B/P/<exp>/<run>/artifacts``). When that mapping is verified -- the sweep's
``sweep/manifest.json``, uploaded through the server, is found at the mapped key with our own
S3 settings -- run folders are written straight to that location with the S3 client, files in
parallel (the MLflow UI and API list and serve them as before); otherwise, or with
``SLICERT_ARTIFACT_UPLOAD=proxy``, they go through the server. ``SLICERT_ARTIFACTS_DESTINATION``
names the server's destination when it is not ``s3://<bucket>/mlflow``.

Many folders at once: ``log_runs`` locks them, finds existing children with one search per
candidate, and logs the runs concurrently: three requests per run (create with its tags;
upload; one log_batch with params, metrics and the ``complete`` tag; end).

The tracking server is spoken to through its REST API (mlflow_rest.py: the ``mlflow`` package
is not imported, which saves seconds of CPU per sweep).

Errors: ``ServiceUnavailable`` (a ServiceError) names the service (MLflow or the object
store) and the fix, after bounded retries with back-off (see retry.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mimetypes
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from slicert_ops.errors import InputError, ServiceError
from slicert_ops.tracking.links import ML_EXPERIMENT_TAGS
from slicert_ops.tracking.retry import (
    MLFLOW_LABEL,
    RetryPolicy,
    ServiceUnavailable,
    call_with_retries,
    down_error,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

TRACKED_FILE = ".tracked"
SWEEP_FILE = "sweep.json"
SKIP_UPLOAD = {TRACKED_FILE}
TAG = "slicert."
KIND_SWEEP, KIND_RUN = "sweep", "measurement"
_PARAM_MAX = 6000
ARTIFACT_MODE_ENV = "SLICERT_ARTIFACT_UPLOAD"         # "proxy": always through MLflow
ARTIFACT_DEST_ENV = "SLICERT_ARTIFACTS_DESTINATION"   # the server's --artifacts-destination
PROBE_ARTIFACT = "sweep/manifest.json"                # uploaded through MLflow by open_sweep
_STATUS = {"ok": "FINISHED", "finished": "FINISHED", "success": "FINISHED",
           "failed": "FAILED", "error": "FAILED", "killed": "KILLED", "interrupted": "KILLED"}


def _configure_client_env() -> None:
    """MLflow's own HTTP retries would wait minutes on a dead server: keep them short and let
    our bounded back-off decide (a user's explicit setting wins)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sweep_key(experiment_name: str, manifest: dict) -> str:
    return hashlib.sha256(canonical_json({"experiment": experiment_name,
                                          "manifest": manifest}).encode()).hexdigest()[:16]


def _safe_key(key: str) -> str:
    out = "".join(c if (c.isalnum() or c in "_-. /") else "_" for c in key)
    return out[:250] or "_"


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"}; lists become JSON text."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[_safe_key(key)] = _param_value(v)
    elif prefix:
        out[_safe_key(prefix)] = _param_value(d)
    return out


def _param_value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("file is missing", file=str(path),
                         fix="is this a run folder written by the pipeline?") from None
    except ValueError as exc:
        raise InputError(f"not valid JSON ({exc})", file=str(path)) from None
    if not isinstance(data, dict):
        raise InputError("not a JSON object", file=str(path))
    return data


@contextlib.contextmanager
def _dir_lock(path: Path) -> Iterator[None]:
    """flock on the directory itself: two processes never log the same folder at once."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_tracked(run_dir: Path) -> str | None:
    try:
        text = (Path(run_dir) / TRACKED_FILE).read_text().strip()
    except OSError:
        return None
    return text.split()[0] if text else None


class Tracker:
    """Logs sweeps and runs to an MLflow tracking server (``MLFLOW_TRACKING_URI``)."""

    def __init__(self, tracking_uri: str | None = None, *, s3_settings=None,
                 policy: RetryPolicy | None = None, upload_threads: int = 8,
                 log_threads: int = 3) -> None:
        _configure_client_env()
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
        self._s3_settings = s3_settings
        self._s3_checked = s3_settings is not None
        self.upload_threads = max(1, upload_threads)
        self.log_threads = max(1, log_threads)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._exp_ids: dict[str, str] = {}
        self._run_exp: dict[str, str] = {}
        self._run_uri: dict[str, str] = {}
        self._direct: bool | None = None  # straight to S3 (verified) / through MLflow / unknown
        self._store = None
        self._defer_until = 0.0
        self.last: dict = {}
        self.last_batch: list[dict] = []

    def _pool(self, name: str, size: int) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                pool = self._pools[name] = ThreadPoolExecutor(
                    size, thread_name_prefix=f"slicert-{name}")
            return pool

    # ---------------------------------------------------------------- error handling
    def _s3(self):
        if not self._s3_checked:
            self._s3_checked = True
            from slicert_ops.tracking.s3 import settings_from_env

            try:
                self._s3_settings = settings_from_env(required=False)
            except ServiceError:
                self._s3_settings = None
        return self._s3_settings

    def _s3_down(self) -> ServiceError | None:
        """Probe the object store directly (when its settings are known): its error, or None."""
        settings = self._s3()
        if settings is None:
            return None
        from slicert_ops.tracking.s3 import S3Store

        return S3Store(settings, policy=RetryPolicy(attempts=1), timeout=3).probe()

    def _mlflow_health(self) -> bool:
        import requests

        try:
            return requests.get(f"{self.tracking_uri}/health", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def _blame(self, detail: str) -> ServiceError:
        """MLflow failed a request: is MLflow down, or the object store behind it?"""
        if self.tracking_uri.startswith("http") and self._mlflow_health():
            s3 = self._s3_down()
            if s3 is not None:
                return s3
            return ServiceUnavailable(
                "mlflow", self.tracking_uri,
                f"{MLFLOW_LABEL} at {self.tracking_uri} failed a request ({detail}): see "
                "`slicert services status` and the MLflow server log", transient=True)
        return down_error("mlflow", self.tracking_uri, detail)

    def _classify(self, exc: BaseException) -> ServiceError | None:
        import sys

        import requests

        from slicert_ops.tracking.mlflow_rest import RestError

        mlflow_exc = getattr(sys.modules.get("mlflow.exceptions"), "MlflowException", RestError)
        chain, e = [], exc
        while e is not None and len(chain) < 8:
            chain.append(e)
            e = e.__cause__ or e.__context__
        for e in chain:
            if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                              ConnectionError, TimeoutError)):
                return self._blame(type(e).__name__)
        if isinstance(exc, (RestError, mlflow_exc)):
            msg = str(exc)
            if "failed with exception" in msg or "failed with timeout" in msg:
                return self._blame("connection failed")
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                return None
            status = exc.get_http_status_code()
            if status >= 500 or exc.error_code in ("TEMPORARILY_UNAVAILABLE",
                                                   "REQUEST_LIMIT_EXCEEDED"):
                return self._blame(msg.splitlines()[0][:200])
            return ServiceUnavailable(
                "mlflow", self.tracking_uri,
                f"{MLFLOW_LABEL} at {self.tracking_uri} refused the request: {msg[:500]}",
                transient=False)
        return None

    def _ml(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retries(fn, what=what, policy=self.policy, classify=self._classify)

    # ---------------------------------------------------------------- checks
    def check(self) -> None:
        """Raise ServiceError naming the service unless MLflow (and the object store, when its
        settings are known) answer. Use before a tracked sweep (`slicert run --track`)."""
        if self.tracking_uri.startswith(("http://", "https://")):
            import requests

            try:
                resp = requests.get(f"{self.tracking_uri}/health", timeout=5)
                ok = resp.status_code == 200
                detail = f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                ok, detail = False, type(exc).__name__
            if not ok:
                raise down_error("mlflow", self.tracking_uri, detail)
        s3 = self._s3_down()
        if s3 is not None:
            raise s3

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

    def _search(self, exp_id: str, flt: str, max_results: int = 10) -> list:
        return list(self._ml("search runs", lambda: self.client.search_runs(
            [exp_id], filter_string=flt, max_results=max_results,
            order_by=["attributes.start_time ASC"])))

    def _search_all(self, exp_id: str, flt: str, order_by: list[str] | None = None) -> list:
        runs, token = [], None
        while True:
            page = self._ml("search runs", lambda t=token: self.client.search_runs(
                [exp_id], filter_string=flt, max_results=1000, page_token=t,
                order_by=order_by))
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def _run_experiment(self, run_id: str) -> str:
        if run_id not in self._run_exp or run_id not in self._run_uri:
            run = self._ml("get run", lambda: self.client.get_run(run_id))
            self._run_exp[run_id] = run.info.experiment_id
            self._run_uri[run_id] = run.info.artifact_uri
        return self._run_exp[run_id]

    def _log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            m, metrics = metrics[:900], metrics[900:]
            p, params = params[:100], params[100:]
            t, tags = tags[:100], tags[100:]
            self._ml("log batch", lambda m=m, p=p, t=t: self.client.log_batch(
                run_id, metrics=m, params=p, tags=t))

    # ---------------------------------------------------------------- artifacts
    def _artifact_root(self, artifact_uri: str) -> tuple[str, str] | None:
        """(bucket, key prefix) in S3 where the server keeps this artifact_uri, or None."""
        from urllib.parse import urlparse

        uri = urlparse(artifact_uri or "")
        if uri.scheme == "s3":
            return uri.netloc, uri.path.strip("/")
        if uri.scheme != "mlflow-artifacts":
            return None
        settings = self._s3()
        dest = os.environ.get(ARTIFACT_DEST_ENV)
        if not dest and settings is not None:
            from slicert_ops.services.config import ARTIFACT_PREFIX

            dest = f"s3://{settings.bucket}/{ARTIFACT_PREFIX}"
        d = urlparse(dest or "")
        if d.scheme != "s3" or not d.netloc:
            return None
        return d.netloc, "/".join(p for p in (d.path.strip("/"), uri.path.strip("/")) if p)

    def _verify_direct(self, parent_run_id: str) -> None:
        """Decide once whether run folders can be written straight to S3: the parent's
        PROBE_ARTIFACT (uploaded through the MLflow server) must be where we expect it."""
        if self._direct is not None:
            return
        if os.environ.get(ARTIFACT_MODE_ENV, "").strip().lower() == "proxy":
            self._direct = False
            return
        settings = self._s3()
        self._run_experiment(parent_run_id)
        root = self._artifact_root(self._run_uri.get(parent_run_id, ""))
        if settings is None or root is None or root[0] != settings.bucket:
            self._direct = False
            return
        from slicert_ops.tracking.s3 import S3Store, object_exists

        store = S3Store(settings, policy=self.policy,
                        connections=self.upload_threads + self.log_threads + 2)
        key = f"{root[1]}/{PROBE_ARTIFACT}"
        if not store._call("S3 stat artifact",
                           lambda: object_exists(store.client, root[0], key)):
            log.info("artifacts go through the MLflow server (%s not found in S3)", key)
            self._direct = False
            return
        self._store = store
        self._direct = True  # each run's key prefix comes from its own artifact_uri

    def _direct_root(self, run_id: str, artifact_uri: str | None) -> tuple[str, str] | None:
        if self._direct is not True or self._store is None:
            return None
        if artifact_uri is None:
            self._run_experiment(run_id)
            artifact_uri = self._run_uri.get(run_id)
        root = self._artifact_root(artifact_uri or "")
        if root is None or root[0] != self._store.bucket:
            return None
        return root

    def _upload(self, run_id: str, files: list[tuple[Path, str | None]],
                artifact_uri: str | None = None) -> None:
        if not files:
            return
        root = self._direct_root(run_id, artifact_uri)
        if root is not None:
            store, (bucket, prefix) = self._store, root

            def one(item: tuple[Path, str | None]) -> None:
                path, art_dir = item
                rel = f"{art_dir}/{path.name}" if art_dir else path.name
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                store._call(f"S3 upload {rel}", lambda: store.client.fput_object(
                    bucket, f"{prefix}/{rel}", str(path), content_type=ctype))
            threads = self.upload_threads
        else:
            if artifact_uri is None:
                self._run_experiment(run_id)
                artifact_uri = self._run_uri.get(run_id)

            def one(item: tuple[Path, str | None]) -> None:
                path, art_dir = item
                self._ml(f"upload {path.name}", lambda: self.client.log_artifact(
                    run_id, str(path), art_dir, artifact_uri=artifact_uri))
            threads = min(4, self.upload_threads)

        one(files[0])  # a dead service shows here once, not once per file
        rest = files[1:]
        if len(rest) <= 1 or threads == 1:
            for item in rest:
                one(item)
            return
        pool = self._pool("upload", threads)
        futures = [pool.submit(one, item) for item in rest]
        errors = [f.exception() for f in futures]
        for err in errors:
            if err is not None:
                raise err

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
        _write_text_atomic(sweep_file, json.dumps(record, indent=1, default=str))

        exp_id = self.experiment_id(experiment_name)
        flt = f"tags.`{TAG}sweep_key` = '{key}' and tags.`{TAG}kind` = '{KIND_SWEEP}'"
        with _dir_lock(out_dir):
            found = self._search(exp_id, flt, 1)
            if found:
                run = found[0]
                run_id = run.info.run_id
                if reopen and run.info.status != "RUNNING":
                    self._ml("reopen sweep", lambda: self.client.update_run(
                        run_id, status="RUNNING"))
            else:
                tags = {f"{TAG}kind": KIND_SWEEP, f"{TAG}sweep_key": key,
                        f"{TAG}experiment": experiment_name, f"{TAG}out_dir": str(out_dir),
                        "mlflow.source.name": "slicert"}
                run = self._ml("create sweep run", lambda: self.client.create_run(
                    exp_id, tags=tags, run_name=f"sweep {experiment_name} {key[:8]}"))
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
            self._verify_direct(run_id)
        record["parent_run_id"] = run_id
        record["experiment_id"] = exp_id
        _write_text_atomic(sweep_file, json.dumps(record, indent=1, default=str))
        return run_id

    def close_sweep(self, parent_run_id: str, status: str = "ok",
                    report_dir: Path | str | None = None) -> None:
        """Upload report_dir (under ``report/``), log sweep counts and end the parent run
        with FINISHED / FAILED / KILLED ("ok", "failed", "killed" are accepted too)."""
        from slicert_ops.tracking.mlflow_rest import Metric

        mstatus = _STATUS.get(str(status).lower(), str(status).upper())
        if mstatus not in ("FINISHED", "FAILED", "KILLED"):
            raise InputError(f"unknown sweep status {status!r}", field="status",
                             fix="use ok, failed or killed")
        if report_dir is not None and Path(report_dir).is_dir():
            root = Path(report_dir)
            files = [(p, "report/" + p.parent.relative_to(root).as_posix()
                      if p.parent != root else "report")
                     for p in sorted(root.rglob("*")) if p.is_file()]
            self._upload(parent_run_id, files)
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
    def log_run(self, parent_run_id: str, run_dir: Path | str, validation=None) -> str:
        """Log one run folder as a child of the sweep; idempotent by candidate id + repeat.

        ``validation``: the ValidationResult of this folder, or None to use the folder's
        validation.json (or validate now). Returns the MLflow run id; marks the folder with
        ``.tracked`` once everything is uploaded. Raises ServiceUnavailable (a ServiceError)
        naming MLflow or the object store when they stay down after the retries.
        """
        result = self.log_runs(parent_run_id, [run_dir], [validation])[0]
        self.last = self.last_batch[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def log_runs(self, parent_run_id: str, run_dirs: Sequence[Path | str],
                 validations: Sequence[Any] | None = None) -> list[str | BaseException]:
        """``log_run`` for many folders at once: the folders are locked together, existing
        children are found with one search per candidate, and the runs are logged
        concurrently (``log_threads``). Returns, per folder, the MLflow run id or the exception
        that stopped it (ServiceUnavailable when a service is down); ``last_batch`` holds the
        details per folder. Folders without a ValidationResult use their validation.json, or
        are validated now (together, one GX call per suite)."""
        t0 = time.perf_counter()
        dirs = [Path(d) for d in run_dirs]
        vals = list(validations) if validations is not None else [None] * len(dirs)
        out: list[str | BaseException | None] = [None] * len(dirs)
        info: list[dict] = [{} for _ in dirs]
        manifests: dict[int, dict] = {}
        first: dict[Path, int] = {}  # a folder listed twice is logged once (and locked once)
        for i, d in enumerate(dirs):
            if first.setdefault(d.resolve(), i) != i:
                continue
            done = read_tracked(d)
            if done:
                out[i], info[i] = done, {"run_id": done, "created": False,
                                         "already_tracked": True}
                continue
            try:
                manifests[i] = self._read_run_manifest(d)
            except Exception as exc:  # noqa: BLE001 - reported per folder
                out[i], info[i] = exc, {"error": str(exc)}
        todo = sorted(manifests, key=lambda i: str(dirs[i]))
        try:
            self._resolve_validations(dirs, vals, todo)
            if todo:
                exp_id = self._run_experiment(parent_run_id)
                self._verify_direct(parent_run_id)
                with contextlib.ExitStack() as stack:
                    for i in todo:
                        stack.enter_context(_dir_lock(dirs[i]))
                    pending = []
                    for i in todo:
                        done = read_tracked(dirs[i])
                        if done:
                            out[i], info[i] = done, {"run_id": done, "created": False,
                                                     "already_tracked": True}
                        else:
                            pending.append(i)
                    found = self._find_children(
                        exp_id, {str(manifests[i]["candidate_id"]) for i in pending})

                    def one(i: int) -> tuple[str, dict]:
                        return self._log_locked(parent_run_id, exp_id, dirs[i], manifests[i],
                                                vals[i], found)

                    if len(pending) <= 1 or self.log_threads == 1:
                        results = []
                        for i in pending:
                            try:
                                results.append(one(i))
                            except Exception as exc:  # noqa: BLE001 - reported per folder
                                results.append(exc)
                    else:
                        pool = self._pool("log", self.log_threads)
                        futures = [pool.submit(one, i) for i in pending]
                        results = [f.exception() or f.result() for f in futures]
                    for i, res in zip(pending, results, strict=True):
                        if isinstance(res, BaseException):
                            out[i], info[i] = res, {"error": str(res)}
                        else:
                            out[i], info[i] = res
        except Exception as exc:  # noqa: BLE001 - a service down before any run was logged
            for i in todo:
                if out[i] is None:
                    out[i], info[i] = exc, {"error": str(exc)}
        for i, d in enumerate(dirs):
            j = first[d.resolve()]
            if j != i:
                out[i], info[i] = out[j], dict(info[j])
        if len(dirs) == 1 and "seconds" in info[0]:
            info[0]["seconds"] = round(time.perf_counter() - t0, 3)
        self.last_batch = info
        if info:
            self.last = info[-1]
        return out  # type: ignore[return-value]

    def _read_run_manifest(self, run_dir: Path) -> dict:
        manifest = _read_json(run_dir / "manifest.json")
        for field_name in ("candidate_id", "repeat"):
            if field_name not in manifest:
                raise InputError("field is missing", file=str(run_dir / "manifest.json"),
                                 field=field_name)
        return manifest

    @staticmethod
    def _resolve_validations(dirs: list[Path], vals: list[Any], todo: list[int]) -> None:
        missing = [i for i in todo if vals[i] is None]
        if not missing:
            return
        from slicert_ops.validate.gx_runner import REPORT_JSON, ValidationResult, validate_runs

        fresh = []
        for i in missing:
            vpath = dirs[i] / REPORT_JSON
            if vpath.exists():
                vals[i] = ValidationResult.from_json(vpath)
            else:
                fresh.append(i)
        if fresh:
            for i, res in zip(fresh, validate_runs([dirs[i] for i in fresh]), strict=True):
                vals[i] = res

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
                    validation, found: dict[tuple[str, str], list]) -> tuple[str, dict]:
        """One folder (locked by the caller): create or resume its child run, upload the
        folder, log params, metrics, tags and the complete mark, end the run, write
        .tracked."""
        from slicert_ops.tracking.mlflow_rest import Metric, Param, RunTag

        t0 = time.perf_counter()
        cid, rep = str(manifest["candidate_id"]), str(manifest["repeat"])
        run_ok = manifest.get("status", "ok") == "ok"
        valid = bool(run_ok and validation.success)
        runs = found.get((cid, rep), [])
        if len(runs) > 1:
            log.warning("%d MLflow runs for candidate %s repeat %s; using the oldest",
                        len(runs), cid, rep)
        run = runs[0] if runs else None
        created = run is None
        if run is not None and run.data.tags.get(f"{TAG}complete") == "true":
            _write_text_atomic(run_dir / TRACKED_FILE, run.info.run_id + "\n")
            return run.info.run_id, {"run_id": run.info.run_id, "created": False, "valid":
                                     run.data.tags.get(f"{TAG}valid") == "true",
                                     "resumed": False}
        tags = self._run_tags(manifest, run_dir, parent_run_id, validation, valid)
        if run is None:
            run = self._ml("create run", lambda: self.client.create_run(
                exp_id, tags=tags, run_name=str(manifest.get("run", run_dir.name))))
        run_id = run.info.run_id
        have_params = dict(run.data.params)
        have_metrics = set(run.data.metrics)
        params = [Param(k, v) for k, v in self._run_params(manifest).items()
                  if k not in have_params]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in self._run_metrics(run_dir, manifest)
                   .items() if k not in have_metrics]
        run_tags = [RunTag(k, v) for k, v in tags.items()] if not created else []
        files = [(p, p.parent.relative_to(run_dir).as_posix() if p.parent != run_dir
                  else None)
                 for p in sorted(run_dir.rglob("*"))
                 if p.is_file() and p.name not in SKIP_UPLOAD and ".part" not in p.name]
        for rp in (getattr(validation, "report_html", None),
                   getattr(validation, "report_json", None)):
            if rp and Path(rp).exists() and run_dir.resolve() not in Path(rp).resolve().parents:
                files.append((Path(rp), "validation"))
        self._upload(run_id, files, run.info.artifact_uri)
        # Params, metrics and the completion tag in one request when they fit in one (after
        # the upload: "complete" must never precede the artifacts or the params).
        complete = RunTag(f"{TAG}complete", "true")
        if len(metrics) <= 900 and len(params) <= 100 and len(run_tags) < 100:
            self._log_batch(run_id, metrics=metrics, params=params, tags=[*run_tags, complete])
        else:
            self._log_batch(run_id, metrics=metrics, params=params, tags=run_tags)
            self._log_batch(run_id, tags=[complete])
        self._ml("end run", lambda: self.client.set_terminated(
            run_id, "FINISHED" if valid else "FAILED"))
        _write_text_atomic(run_dir / TRACKED_FILE, run_id + "\n")
        return run_id, {"run_id": run_id, "created": created, "resumed": not created,
                        "valid": valid, "files": len(files),
                        "seconds": round(time.perf_counter() - t0, 3)}

    def log_run_or_defer(self, parent_run_id: str | None, run_dir: Path | str,
                         validation=None, *, defer_s: float = 30.0) -> str | None:
        """Like log_run, but when a service is down: warn, keep the folder for `slicert sync`
        and return None. After one failure, further calls within ``defer_s`` return None at
        once, so a sweep does not wait out the back-off for every run."""
        if parent_run_id is None or time.monotonic() < self._defer_until:
            return None
        try:
            return self.log_run(parent_run_id, run_dir, validation)
        except ServiceUnavailable as exc:
            self._defer_until = time.monotonic() + defer_s
            log.warning("not tracked yet (%s); kept in %s for `slicert sync`", exc, run_dir)
            return None

    # ---------------------------------------------------------------- run content
    @staticmethod
    def _run_params(manifest: dict) -> dict[str, str]:
        params: dict[str, str] = {}
        for k in ("candidate_id", "candidate_index", "repeat", "seed", "experiment", "run"):
            if k in manifest:
                params[k] = _param_value(manifest[k])
        for section in ("schedule", "operator", "runner", "versions", "logging"):
            if isinstance(manifest.get(section), dict):
                params.update(flatten(manifest[section], section))
        cm = manifest.get("cost_model")
        if isinstance(cm, dict):
            for k in ("name", "version"):
                if k in cm:
                    params[f"cost_model.{k}"] = _param_value(cm[k])
        return params

    @staticmethod
    def _run_metrics(run_dir: Path, manifest: dict) -> dict[str, float]:
        out: dict[str, float] = {}
        trace_path = run_dir / "qemu_trace.json"
        if trace_path.exists():
            with contextlib.suppress(OSError, ValueError):
                metrics = json.loads(trace_path.read_text()).get("metrics") or {}
                for k, v in metrics.items():
                    if isinstance(v, bool):
                        v = int(v)
                    if isinstance(v, (int, float)):
                        out[_safe_key(k)] = float(v)
        for k, v in (manifest.get("host_timings_s") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[_safe_key(f"host_{k}_s")] = float(v)
        cm = manifest.get("cost_model")
        if isinstance(cm, dict) and isinstance(cm.get("predicted_kernel_cycles"), (int, float)):
            out["predicted_kernel_cycles"] = float(cm["predicted_kernel_cycles"])
        return out

    @staticmethod
    def _run_tags(manifest: dict, run_dir: Path, parent_run_id: str, validation,
                  valid: bool) -> dict[str, str]:
        versions = manifest.get("versions") or {}
        failed = list(getattr(validation, "failed_expectations", []) or [])
        tags = {
            "mlflow.parentRunId": parent_run_id,
            "mlflow.source.name": "slicert",
            f"{TAG}kind": KIND_RUN,
            f"{TAG}candidate_id": str(manifest["candidate_id"]),
            f"{TAG}repeat": str(manifest["repeat"]),
            f"{TAG}run": str(manifest.get("run", run_dir.name)),
            f"{TAG}experiment": str(manifest.get("experiment", run_dir.parent.name)),
            f"{TAG}status": str(manifest.get("status", "ok")),
            f"{TAG}valid": "true" if valid else "false",
            f"{TAG}validation": "passed" if validation.success else "failed",
        }
        if failed:
            tags[f"{TAG}failed_expectations"] = _param_value(", ".join(failed))[:5000]
        if manifest.get("error"):
            tags[f"{TAG}error"] = str(manifest["error"])[:5000]
        for k in ("cycle_model", "runtime", "plugin"):
            if k in versions:
                tags[f"{TAG}{k}"] = str(versions[k])
        cm = manifest.get("cost_model")
        if isinstance(cm, dict):
            for k in ("name", "version"):
                if k in cm:
                    tags[f"{TAG}cost_model.{k}"] = str(cm[k])
        return tags
