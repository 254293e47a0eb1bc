"""Where orchestration finds things, and how the stage runners are configured (all by env).

Paths (absolute after resolution):
  SLICERT_ROOT             the repo (slicert_ops.paths.repo_root; the worker image sets
                           /opt/slicert/src)
  SLICERT_HOME             local state root (slicert_ops.paths.state_root: default
                           <repo>/.slicert; shared with services)
  SLICERT_EXPERIMENTS_DIR  manifests, one DAG each (default <repo>/experiments)
  SLICERT_RESULTS_DIR      results root: <results>/<experiment>/run_NNNN (default <repo>/results)
  SLICERT_ARTIFACTS_DIR    cost models (default <repo>/artifacts)

Stage runner (see plugins/slicert_stage.py):
  SLICERT_RUNNER           local | docker | kubernetes (default local); the Airflow Variable
                           ``slicert_runner`` overrides it at run time
  SLICERT_BIN              the slicert executable for the local runner (default: the one next to
                           this Python, else PATH, else `python -m slicert_ops.cli`)
  SLICERT_WORKER_IMAGE     image of the docker/kubernetes runners (default slicert-worker:latest)
  SLICERT_DOCKER_URL       Docker engine (default $DOCKER_HOST, else unix:///var/run/docker.sock)
  SLICERT_DOCKER_MEMORY    memory limit per stage container (default 4g; swap off)
  SLICERT_DOCKER_CPUS      CPU limit per stage container (default 1.0, a hard quota)
  SLICERT_DOCKER_PIDS      process limit per stage container (default 1024)
  SLICERT_DOCKER_NETWORK   network of the stages that reach S3/MLflow (default host); every
                           other stage runs with network "none"
  SLICERT_DOCKER_USER      uid:gid in the container (default: the caller's uid:gid when that is
                           not root, else the image's unprivileged user `slicert`, uid 1000)
  SLICERT_K8S_NAMESPACE    Kubernetes namespace of the stage pods (default slicert)
  SLICERT_K8S_RESULTS_PVC  PersistentVolumeClaim mounted at the results path (required there)
  SLICERT_K8S_SERVICE_ACCOUNT, SLICERT_K8S_MEMORY (4Gi), SLICERT_K8S_CPU (1)
  SLICERT_MLFLOW_UI_URL    MLflow address for the browser (default $MLFLOW_TRACKING_URI)
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from slicert_ops.errors import InputError
from slicert_ops.paths import repo_root
from slicert_ops.paths import state_root as state_root  # re-exported: settings.state_root

RUNNERS = ("local", "docker", "kubernetes")
RUNNER_VARIABLE = "slicert_runner"
DEFAULT_IMAGE = "slicert-worker:latest"
IMAGE_UID = "1000"  # user `slicert` in images/worker/Dockerfile

# Variables a stage needs to reach the services (S3 + MLflow); secrets are passed privately.
SERVICE_ENV = ("MLFLOW_TRACKING_URI", "SLICERT_S3_ENDPOINT", "SLICERT_S3_BUCKET",
               "SLICERT_S3_ACCESS_KEY", "SLICERT_S3_SECRET_KEY", "MLFLOW_S3_ENDPOINT_URL",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
               "SLICERT_RETRY_ATTEMPTS", "SLICERT_RETRY_BASE_DELAY_S",
               "SLICERT_RETRY_MAX_DELAY_S", "SLICERT_COST_MODEL", "SLICERT_MODEL_NAME")
SECRET_ENV = ("SLICERT_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
ALWAYS_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
              "PYTHONUNBUFFERED": "1"}


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def experiments_dir(env: Mapping[str, str] | None = None) -> Path:
    env = _env(env)
    raw = env.get("SLICERT_EXPERIMENTS_DIR")
    return Path(raw).resolve() if raw else repo_root(env) / "experiments"


def results_dir(env: Mapping[str, str] | None = None) -> Path:
    env = _env(env)
    raw = env.get("SLICERT_RESULTS_DIR")
    return Path(raw).resolve() if raw else repo_root(env) / "results"


def artifacts_dir(env: Mapping[str, str] | None = None) -> Path:
    env = _env(env)
    raw = env.get("SLICERT_ARTIFACTS_DIR")
    return Path(raw).resolve() if raw else repo_root(env) / "artifacts"


def slicert_command(env: Mapping[str, str] | None = None) -> list[str]:
    """argv prefix that runs the `slicert` CLI in this environment (never a shell string)."""
    env = _env(env)
    explicit = env.get("SLICERT_BIN")
    if explicit:
        return [explicit]
    beside = Path(sys.executable).parent / "slicert"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("slicert")
    if found:
        return [found]
    return [sys.executable, "-m", "slicert_ops.cli"]


def resolve_runner(explicit: str | None = None, variable: str | None = None,
                   env: Mapping[str, str] | None = None) -> str:
    """Operator argument > Airflow Variable `slicert_runner` > $SLICERT_RUNNER > local."""
    env = _env(env)
    for source, value in (("the operator's runner argument", explicit),
                          (f"the Airflow Variable {RUNNER_VARIABLE}", variable),
                          ("SLICERT_RUNNER", env.get("SLICERT_RUNNER"))):
        if value:
            value = value.strip().lower()
            if value not in RUNNERS:
                raise InputError(f"runner {value!r} is not one of {', '.join(RUNNERS)}",
                                 field=source, fix="use local, docker or kubernetes")
            return value
    return "local"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a number", field=name) from None
    if value <= 0:
        raise InputError(f"{name}={raw!r} must be > 0", field=name)
    return value


@dataclass(frozen=True)
class DockerSettings:
    """How the docker runner starts a stage container."""

    image: str = DEFAULT_IMAGE
    docker_url: str = "unix:///var/run/docker.sock"
    mem_limit: str = "4g"
    cpus: float = 1.0
    pids_limit: int = 1024
    service_network: str = "host"
    user: str | None = None
    binds: tuple[tuple[str, str, bool], ...] = field(default_factory=tuple)  # (host, ctr, ro)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DockerSettings:
        env = _env(env)
        url = env.get("SLICERT_DOCKER_URL") or env.get("DOCKER_HOST") \
            or "unix:///var/run/docker.sock"
        user = env.get("SLICERT_DOCKER_USER") or None
        if user is None and hasattr(os, "getuid") and os.getuid() != 0:
            user = f"{os.getuid()}:{os.getgid()}"
        if user is not None and user.split(":")[0] in ("0", "root"):
            raise InputError("stage containers never run as root", field="SLICERT_DOCKER_USER",
                             fix=f"unset it (image user uid {IMAGE_UID}) or give a uid:gid")
        results, artifacts, experiments = (results_dir(env), artifacts_dir(env),
                                           experiments_dir(env))
        binds = ((str(results), str(results), False), (str(artifacts), str(artifacts), False),
                 (str(experiments), str(experiments), True))
        return cls(
            image=env.get("SLICERT_WORKER_IMAGE") or DEFAULT_IMAGE,
            docker_url=url,
            mem_limit=env.get("SLICERT_DOCKER_MEMORY") or "4g",
            cpus=_float(env, "SLICERT_DOCKER_CPUS", 1.0),
            pids_limit=int(_float(env, "SLICERT_DOCKER_PIDS", 1024)),
            service_network=env.get("SLICERT_DOCKER_NETWORK") or "host",
            user=user,
            binds=binds,
        )


@dataclass(frozen=True)
class KubernetesSettings:
    image: str = DEFAULT_IMAGE
    namespace: str = "slicert"
    results_pvc: str | None = None
    service_account: str | None = None
    memory: str = "4Gi"
    cpu: str = "1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KubernetesSettings:
        env = _env(env)
        return cls(
            image=env.get("SLICERT_WORKER_IMAGE") or DEFAULT_IMAGE,
            namespace=env.get("SLICERT_K8S_NAMESPACE") or "slicert",
            results_pvc=env.get("SLICERT_K8S_RESULTS_PVC") or None,
            service_account=env.get("SLICERT_K8S_SERVICE_ACCOUNT") or None,
            memory=env.get("SLICERT_K8S_MEMORY") or "4Gi",
            cpu=env.get("SLICERT_K8S_CPU") or "1",
        )


def service_env(env: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(public, secret) variables a networked stage needs, taken from this process's env."""
    env = _env(env)
    public = dict(ALWAYS_ENV)
    secret: dict[str, str] = {}
    for name in SERVICE_ENV:
        value = env.get(name)
        if value:
            (secret if name in SECRET_ENV else public)[name] = value
    return public, secret


def mlflow_ui_url(env: Mapping[str, str] | None = None) -> str | None:
    from slicert_ops.tracking.links import ui_url

    return ui_url(_env(env))
