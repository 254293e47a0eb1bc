"""Where the local services live and which ports they use (everything overridable by env).

State dir: ``$SLICERT_HOME/services`` or ``<repo>/.slicert/services`` (git-ignored; the repo
is ``$SLICERT_ROOT`` or the package's parent dir, see slicert_ops.paths).

Environment variables (all optional):
  SLICERT_HOME            root of local state (services go in ``$SLICERT_HOME/services``)
  SLICERT_S3_PORT         S3 port of the embedded object store (default 8333). SeaweedFS
                          also needs its internal ports: the 9 ports after it (PORT+1..PORT+9).
  SLICERT_MLFLOW_PORT     MLflow tracking server port (default 5000)
  SLICERT_S3_BUCKET       bucket for MLflow artifacts and results (default "slicert")
  SLICERT_MLFLOW_WORKERS  uvicorn workers of the MLflow server (default 2: this is a 2-core box)
  SLICERT_MLFLOW_BACKEND_URI  backend store (default sqlite in the state dir)
  SLICERT_SERVICES_TIMEOUT    seconds to wait for health at start (default 90)
  SLICERT_WEED_BIN        path of the ``weed`` binary (default: next to this Python, then PATH)
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slicert_ops.errors import InputError
from slicert_ops.paths import state_root

HOST = "127.0.0.1"
DEFAULT_S3_PORT = 8333
DEFAULT_MLFLOW_PORT = 5000
DEFAULT_BUCKET = "slicert"
ARTIFACT_PREFIX = "mlflow"  # artifacts go to s3://<bucket>/mlflow/<experiment id>/<run id>/...

# Telemetry off for every process we start and for the clients in this process tree.
TELEMETRY_OFF_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}

# SeaweedFS `weed mini` internal ports, as offsets from the S3 port.
WEED_PORT_OFFSETS = {
    "s3.port": 0,
    "master.port": 1,
    "volume.port": 2,
    "filer.port": 3,
    "admin.port": 4,
    "s3.port.grpc": 5,
    "master.port.grpc": 6,
    "volume.port.grpc": 7,
    "filer.port.grpc": 8,
    "admin.port.grpc": 9,
}


def _int_env(env: dict, name: str, default: int, lo: int = 1, hi: int = 65535) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not an integer", field=name,
                         fix=f"set {name} to a number between {lo} and {hi}") from None
    if not lo <= value <= hi:
        raise InputError(f"{name}={value} is out of range", field=name,
                         fix=f"set {name} to a number between {lo} and {hi}")
    return value


def find_weed(env: dict | None = None) -> str | None:
    env = os.environ if env is None else env
    explicit = env.get("SLICERT_WEED_BIN")
    if explicit:
        return explicit
    local = Path(sys.executable).parent / "weed"
    if local.exists():
        return str(local)
    return shutil.which("weed")


@dataclass(frozen=True)
class ServicesConfig:
    state_dir: Path
    s3_port: int = DEFAULT_S3_PORT
    mlflow_port: int = DEFAULT_MLFLOW_PORT
    bucket: str = DEFAULT_BUCKET
    mlflow_workers: int = 2
    backend_store_uri: str | None = None
    start_timeout_s: float = 90.0
    host: str = HOST
    extra: dict = field(default_factory=dict)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: dict | None = None) -> ServicesConfig:
        env = dict(os.environ if env is None else env)
        s3_port = _int_env(env, "SLICERT_S3_PORT", DEFAULT_S3_PORT, 1024, 65535 - 9)
        bucket = env.get("SLICERT_S3_BUCKET") or DEFAULT_BUCKET
        return cls(
            state_dir=state_root(env) / "services",
            s3_port=s3_port,
            mlflow_port=_int_env(env, "SLICERT_MLFLOW_PORT", DEFAULT_MLFLOW_PORT, 1024),
            bucket=bucket,
            mlflow_workers=_int_env(env, "SLICERT_MLFLOW_WORKERS", 2, 1, 16),
            backend_store_uri=env.get("SLICERT_MLFLOW_BACKEND_URI") or None,
            start_timeout_s=float(_int_env(env, "SLICERT_SERVICES_TIMEOUT", 90, 5, 3600)),
        )

    # --- paths --------------------------------------------------------------------------
    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "credentials.json"

    @property
    def s3_dir(self) -> Path:
        return self.state_dir / "s3"

    @property
    def s3_data_dir(self) -> Path:
        return self.s3_dir / "data"

    @property
    def s3_identity_file(self) -> Path:
        return self.s3_dir / "s3_identities.json"

    @property
    def mlflow_dir(self) -> Path:
        return self.state_dir / "mlflow"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    # --- addresses ----------------------------------------------------------------------
    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/{ARTIFACT_PREFIX}"

    @property
    def backend_uri(self) -> str:
        return self.backend_store_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    def weed_ports(self) -> dict[str, int]:
        return {flag: self.s3_port + off for flag, off in WEED_PORT_OFFSETS.items()}
