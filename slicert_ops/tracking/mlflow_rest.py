"""The calls the tracker makes, on the MLflow tracking server's REST API (``/api/2.0/mlflow``).

Importing the ``mlflow`` package costs seconds of CPU, in every tracked sweep, for what are a
dozen JSON requests; this client speaks the same documented REST API with ``requests`` and
mirrors the few ``MlflowClient`` methods the tracker uses (same names, same attributes on the
returned runs). Artifacts go through the server's proxy (``mlflow-artifacts:`` URIs, PUT
``/api/2.0/mlflow-artifacts/artifacts/...``); runs whose artifact URI is anything else are
handed to the real ``MlflowClient`` (imported only then).

Authentication as MLflow's own client: ``MLFLOW_TRACKING_TOKEN`` (bearer) or
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (basic);
``MLFLOW_TRACKING_INSECURE_TLS`` / ``MLFLOW_TRACKING_SERVER_CERT_PATH`` for TLS;
``MLFLOW_HTTP_REQUEST_TIMEOUT`` (seconds). Errors are ``RestError`` (HTTP status, MLflow
error code, message), shaped like ``MlflowException`` for the tracker's error classification.
"""

from __future__ import annotations

import json
import math
import mimetypes
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlparse


class RestError(Exception):
    """The server answered with an error (``error_code`` as MLflow's, e.g.
    RESOURCE_DOES_NOT_EXIST, RESOURCE_ALREADY_EXISTS, INVALID_PARAMETER_VALUE)."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        self.status, self.error_code = status, error_code
        super().__init__(f"{error_code}: {message}" if error_code else message)

    def get_http_status_code(self) -> int:
        return self.status


class Metric(NamedTuple):
    key: str
    value: float
    timestamp: int
    step: int = 0


class Param(NamedTuple):
    key: str
    value: str


class RunTag(NamedTuple):
    key: str
    value: str


@dataclass
class Experiment:
    experiment_id: str
    name: str
    lifecycle_stage: str = "active"
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RunInfo:
    run_id: str
    experiment_id: str
    status: str
    artifact_uri: str
    run_name: str = ""
    lifecycle_stage: str = "active"


@dataclass
class RunData:
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    info: RunInfo
    data: RunData

    @classmethod
    def from_json(cls, d: dict) -> Run:
        info, data = d.get("info") or {}, d.get("data") or {}
        return cls(
            RunInfo(run_id=info.get("run_id") or info.get("run_uuid", ""),
                    experiment_id=str(info.get("experiment_id", "")),
                    status=info.get("status", ""), artifact_uri=info.get("artifact_uri", ""),
                    run_name=info.get("run_name", ""),
                    lifecycle_stage=info.get("lifecycle_stage", "active")),
            RunData(tags={t["key"]: t.get("value", "") for t in data.get("tags") or []},
                    params={p["key"]: p.get("value", "") for p in data.get("params") or []},
                    metrics={m["key"]: m.get("value") for m in data.get("metrics") or []}))


class Page(list):
    """A page of search results; ``token`` is the next page's token (None at the end)."""

    token: str | None = None


def _number(v: float) -> float | str:
    """JSON has no NaN / infinity: the protobuf JSON spellings MLflow accepts."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


class MlflowRest:
    def __init__(self, tracking_uri: str, *, timeout: float | None = None) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.api = f"{self.tracking_uri}/api/2.0/mlflow"
        self.timeout = timeout or float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or 30)
        self._local = threading.local()
        self._fallback = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ transport
    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            token = os.environ.get("MLFLOW_TRACKING_TOKEN")
            user = os.environ.get("MLFLOW_TRACKING_USERNAME")
            if token:
                s.headers["Authorization"] = f"Bearer {token}"
            elif user:
                s.auth = (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
            if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
                s.verify = False
            elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
                s.verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
            self._local.session = s
        return s

    def _request(self, method: str, url: str, **kw: Any) -> Any:
        resp = self._session().request(method, url, timeout=(min(5.0, self.timeout),
                                                              self.timeout), **kw)
        if resp.status_code != 200:
            code, msg = "", resp.text[:1000]
            try:
                body = resp.json()
                code, msg = body.get("error_code", ""), body.get("message", msg)
            except ValueError:
                pass
            raise RestError(resp.status_code, code or f"HTTP_{resp.status_code}", msg)
        return resp.json() if resp.content else {}

    def _get(self, path: str, **params: Any) -> dict:
        return self._request("GET", f"{self.api}/{path}", params=params)

    def _post(self, path: str, body: dict) -> dict:
        return self._request("POST", f"{self.api}/{path}", data=json.dumps(body),
                             headers={"Content-Type": "application/json"})

    # ------------------------------------------------------------------ experiments
    def get_experiment_by_name(self, name: str) -> Experiment | None:
        try:
            exp = self._get("experiments/get-by-name", experiment_name=name)["experiment"]
        except RestError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return Experiment(str(exp["experiment_id"]), exp.get("name", name),
                          exp.get("lifecycle_stage", "active"),
                          {t["key"]: t.get("value", "") for t in exp.get("tags") or []})

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        body = {"name": name, "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        return str(self._post("experiments/create", body)["experiment_id"])

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self._post("experiments/set-experiment-tag",
                   {"experiment_id": experiment_id, "key": key, "value": value})

    def restore_experiment(self, experiment_id: str) -> None:
        self._post("experiments/restore", {"experiment_id": experiment_id})

    # ------------------------------------------------------------------ runs
    def search_runs(self, experiment_ids: list[str], filter_string: str = "",
                    max_results: int = 1000, order_by: list[str] | None = None,
                    page_token: str | None = None) -> Page:
        body: dict[str, Any] = {"experiment_ids": experiment_ids, "filter": filter_string,
                                "max_results": max_results, "run_view_type": "ACTIVE_ONLY"}
        if order_by:
            body["order_by"] = order_by
        if page_token:
            body["page_token"] = page_token
        out = self._post("runs/search", body)
        page = Page(Run.from_json(r) for r in out.get("runs") or [])
        page.token = out.get("next_page_token") or None
        return page

    def create_run(self, experiment_id: str, tags: dict[str, str] | None = None,
                   run_name: str | None = None, start_time: int | None = None) -> Run:
        tags = tags or {}
        body = {"experiment_id": experiment_id,
                "user_id": tags.get("mlflow.user", "unknown"),
                "start_time": start_time or int(time.time() * 1000),
                "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        if run_name:
            body["run_name"] = run_name
        return Run.from_json(self._post("runs/create", body)["run"])

    def get_run(self, run_id: str) -> Run:
        return Run.from_json(self._get("runs/get", run_id=run_id)["run"])

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        self._post("runs/log-batch", {
            "run_id": run_id,
            "metrics": [{"key": m.key, "value": _number(m.value), "timestamp": m.timestamp,
                         "step": m.step} for m in metrics],
            "params": [{"key": p.key, "value": p.value} for p in params],
            "tags": [{"key": t.key, "value": t.value} for t in tags]})

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._post("runs/set-tag", {"run_id": run_id, "run_uuid": run_id, "key": key,
                                    "value": value})

    def update_run(self, run_id: str, status: str | None = None,
                   end_time: int | None = None) -> None:
        body: dict[str, Any] = {"run_id": run_id, "run_uuid": run_id}
        if status:
            body["status"] = status
        if end_time is not None:
            body["end_time"] = end_time
        self._post("runs/update", body)

    def set_terminated(self, run_id: str, status: str = "FINISHED") -> None:
        self.update_run(run_id, status=status, end_time=int(time.time() * 1000))

    # ------------------------------------------------------------------ artifacts
    def _proxy_url(self, artifact_uri: str) -> str | None:
        """The server URL of a ``mlflow-artifacts:`` artifact root (None for other URIs)."""
        uri = urlparse(artifact_uri or "")
        if uri.scheme != "mlflow-artifacts":
            return None
        base = self.tracking_uri
        if uri.netloc:
            base = f"{urlparse(self.tracking_uri).scheme or 'http'}://{uri.netloc}"
        return f"{base}/api/2.0/mlflow-artifacts/artifacts/{quote(uri.path.strip('/'))}"

    def upload_bytes(self, artifact_uri: str, artifact_file: str, data: bytes,
                     content_type: str | None = None) -> None:
        url = self._proxy_url(artifact_uri)
        if url is None:
            raise ValueError(f"not a proxied artifact URI: {artifact_uri}")
        ctype = content_type or mimetypes.guess_type(artifact_file)[0] or \
            "application/octet-stream"
        self._request("PUT", f"{url}/{quote(artifact_file.strip('/'))}", data=data,
                      headers={"Content-Type": ctype})

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None, *,
                     artifact_uri: str | None = None) -> None:
        """Like MlflowClient.log_artifact; ``artifact_uri`` (the run's) saves a lookup."""
        if artifact_uri is None:
            artifact_uri = self.get_run(run_id).info.artifact_uri
        name = Path(local_path).name
        rel = f"{artifact_path.strip('/')}/{name}" if artifact_path else name
        if self._proxy_url(artifact_uri) is None:
            self._mlflow_client().log_artifact(run_id, local_path, artifact_path)
            return
        self.upload_bytes(artifact_uri, rel, Path(local_path).read_bytes())

    def log_dict(self, run_id: str, obj: Any, artifact_file: str, *,
                 artifact_uri: str | None = None) -> None:
        if artifact_uri is None:
            artifact_uri = self.get_run(run_id).info.artifact_uri
        if self._proxy_url(artifact_uri) is None:
            self._mlflow_client().log_dict(run_id, obj, artifact_file)
            return
        self.upload_bytes(artifact_uri, artifact_file,
                          json.dumps(obj, indent=2, default=str).encode(), "application/json")

    def _mlflow_client(self):
        """The real client, for artifact stores the server does not proxy."""
        with self._lock:
            if self._fallback is None:
                from mlflow import MlflowClient

                self._fallback = MlflowClient(tracking_uri=self.tracking_uri)
            return self._fallback
