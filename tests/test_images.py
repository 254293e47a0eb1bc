"""Images and docker-compose: secrets generation and compose validation (no daemon needed);
with a Docker engine (marker `docker`): the locally built worker image runs `slicert` as an
unprivileged user with no network, and carries its version records."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _gen_env(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "images" / "gen-env.sh"), *args, str(path)],
                          capture_output=True, text=True, timeout=60)


def test_gen_env_writes_private_secrets_once(tmp_path):
    env_file = tmp_path / ".env"
    r = _gen_env(env_file)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                  if line and not line.startswith("#"))
    for key in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "S3_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD",
                "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY"):
        assert len(values[key]) >= 20, key
    pw = json.loads((tmp_path / ".slicert" / "compose-passwords.json").read_text())
    assert pw == {"admin": values["AIRFLOW_ADMIN_PASSWORD"]}
    again = _gen_env(env_file)
    assert again.returncode != 0 and "exists" in again.stderr
    other = tmp_path / "other.env"
    assert _gen_env(other).returncode == 0
    assert other.read_text() != env_file.read_text()  # fresh secrets every time


def test_env_file_is_git_ignored():
    r = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert r.returncode == 0


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory) -> dict:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose (1.29, apt) is not installed: run `make setup`")
    tmp = tmp_path_factory.mktemp("compose")
    assert _gen_env(tmp / ".env").returncode == 0
    r = subprocess.run(["docker-compose", "--env-file", str(tmp / ".env"), "-f",
                        str(ROOT / "docker-compose.yaml"), "config"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_compose_validates_and_has_the_farm(compose_config):
    services = compose_config["services"]
    for name in ("postgres", "redis", "s3", "mlflow", "airflow-init", "airflow-apiserver",
                 "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker"):
        assert name in services, name
    env = services["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, which the image does not ship
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")


def test_compose_publishes_only_on_loopback_and_worker_scales(compose_config):
    for name, svc in compose_config["services"].items():
        for port in svc.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    worker = compose_config["services"]["airflow-worker"]
    assert "container_name" not in worker and not worker.get("ports")


def test_compose_ports_differ_from_slicert_up(compose_config):
    """Started beside `slicert up` (8080 / 5000), the farm must not clash half-way."""
    from slicert_ops.orchestrate.airflow_cfg import DEFAULT_PORT
    from slicert_ops.services import ServicesConfig

    published = {}
    for name, svc in compose_config["services"].items():
        for port in svc.get("ports", []):
            published[name] = int(port["published"] if isinstance(port, dict)
                                  else str(port).split(":")[1])
    assert published == {"airflow-apiserver": 18080, "mlflow": 15000}
    embedded = {DEFAULT_PORT, ServicesConfig.from_env({}).mlflow_port}
    assert embedded == {8080, 5000} and not embedded & set(published.values())
    env = compose_config["services"]["airflow-worker"]["environment"]
    assert env["SLICERT_MLFLOW_UI_URL"] == "http://127.0.0.1:15000"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080"


def test_compose_detects_lost_workers_and_checks_health(compose_config):
    services = compose_config["services"]
    env = services["airflow-scheduler"]["environment"]
    timeout = int(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"])
    interval = float(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL"])
    assert timeout + interval <= 60  # the default (300 s) left retries waiting 5 minutes
    assert int(env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"]) <= 5  # well within it
    checks = {"airflow-scheduler": "SchedulerJob", "airflow-dag-processor": "DagProcessorJob",
              "airflow-triggerer": "TriggererJob", "airflow-worker": "inspect ping",
              "airflow-apiserver": "/api/v2/monitor/health"}
    for name, needle in checks.items():
        test = " ".join(services[name]["healthcheck"]["test"])
        assert needle in test, (name, test)


def test_compose_minio_is_opt_in(compose_config):
    minio = compose_config["services"].get("minio")
    if minio is not None:  # docker-compose lists profiled services in `config`
        assert minio["image"].startswith("minio/minio")
        assert minio.get("profiles") == ["minio"]


# ------------------------------------------------------------------------------ with an engine
def _engine_env() -> dict | None:
    if shutil.which("docker") is None:
        return None
    env = dict(os.environ)
    if not env.get("DOCKER_HOST"):
        r = subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), "status"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            env["DOCKER_HOST"] = r.stdout.strip().partition("=")[2]
    r = subprocess.run(["docker", "image", "inspect", "slicert-worker:latest"], env=env,
                       capture_output=True, text=True)
    return env if r.returncode == 0 else None


@pytest.fixture(scope="module")
def engine():
    env = _engine_env()
    if env is None:
        pytest.fail("no Docker engine with slicert-worker:latest (scripts/dockerd.sh start; "
                    "images/build.sh worker)")
    return env


@pytest.mark.docker
def test_worker_runs_slicert_unprivileged_offline(engine):
    r = subprocess.run(["docker", "run", "--rm", "--network", "none", "slicert-worker:latest",
                        "sh", "-c", "id -u; slicert --help"], env=engine, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    uid, _, helptext = r.stdout.partition("\n")
    assert uid.strip() == "1000"
    assert "stage" in helptext and "submit" in helptext


@pytest.mark.docker
def test_worker_has_toolchain_plugin_and_version_records(engine):
    r = subprocess.run(["docker", "run", "--rm", "--network", "none", "slicert-worker:latest",
                        "sh", "-c", "arm-none-eabi-gcc --version >/dev/null && "
                        "qemu-system-arm --version >/dev/null && test -f \"$SLICERT_PLUGIN\" && "
                        "cat /etc/slicert/versions.json"],
                       env=engine, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    versions = json.loads(r.stdout)
    assert versions["packages"]["apache-tvm"] and versions["tools"]["qemu-system-arm"]
    labels = json.loads(subprocess.run(
        ["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", "slicert-worker:latest"],
        env=engine, capture_output=True, text=True).stdout)
    assert labels["org.slicert.image"] == "slicert-worker"
    assert labels["org.slicert.requirements-lock-sha256"]
    assert labels["org.slicert.rootfs-sha256"]
