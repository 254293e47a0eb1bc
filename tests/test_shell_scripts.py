"""The repo's shell scripts: shellcheck-clean, and images/gen-env.sh writes a parseable .env
without running anything (a backtick in its unquoted heredoc once ran `slicert up`)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

import psutil
import pytest
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[1]
GEN_ENV = ROOT / "images" / "gen-env.sh"
# what docker-compose.yaml reads; COMPOSE_PROFILES is empty unless --s3 minio
KEYS = ("COMPOSE_PROJECT_NAME", "SLICERT_IMAGE_TAG", "AIRFLOW_PORT", "MLFLOW_PORT",
        "WORKER_CONCURRENCY", "WORKER_CPUS", "TASK_HEARTBEAT_TIMEOUT", "SLICERT_RUNNER",
        "POSTGRES_PASSWORD", "REDIS_PASSWORD", "S3_ENDPOINT_URL", "S3_BUCKET",
        "S3_ACCESS_KEY", "S3_SECRET_KEY", "AIRFLOW_ADMIN_USER", "AIRFLOW_ADMIN_PASSWORD",
        "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY")
# commands a stray substitution could start: each stub leaves a mark if it runs
STUBS = ("slicert", "airflow", "docker", "docker-compose", "mlflow", "weed", "minio")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_finds_nothing_in_any_tracked_shell_script() -> None:
    listed = subprocess.run([str(ROOT / "scripts" / "lint-shell.sh"), "--list"],
                            capture_output=True, text=True, check=True).stdout.split()
    for expected in (".ci/run", "images/gen-env.sh", "scripts/setup.sh", "qemu/build.sh",
                     "images/scripts/slicert-airflow-entrypoint"):
        assert expected in listed
    r = subprocess.run([str(ROOT / "scripts" / "lint-shell.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _stub_path(tmp: Path) -> tuple[Path, Path]:
    bin_dir, marks = tmp / "bin", tmp / "marks"
    bin_dir.mkdir()
    marks.mkdir()
    for name in STUBS:
        p = bin_dir / name
        p.write_text(f'#!/bin/sh\necho "$0 $*" > "{marks}/{name}"\n')
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return bin_dir, marks


@pytest.mark.parametrize("s3", ["seaweedfs", "minio"])
def test_gen_env_writes_a_clean_env_file_and_starts_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, s3: str) -> None:
    bin_dir, marks = _stub_path(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = scratch / ".env"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "SLICERT_HOME": str(scratch / "home")}
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    r = subprocess.run(["sh", str(GEN_ENV), "--s3", s3, str(out)], cwd=scratch, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert {p.pid for p in me.children(recursive=True)} <= before
    assert sorted(p.name for p in marks.iterdir()) == []
    # only the two files it announces, nothing of a stack's state (no home/airflow, no logs)
    assert sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*")) == [
        ".env", ".slicert", ".slicert/compose-passwords.json"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    with caplog.at_level(logging.WARNING, logger="dotenv.main"):
        values = dotenv_values(out)
    assert [rec.getMessage() for rec in caplog.records] == []
    for key in KEYS:
        assert values.get(key), key
    assert values["COMPOSE_PROFILES"] == ("minio" if s3 == "minio" else "")
    assert values["S3_ENDPOINT_URL"] == ("http://minio:9000" if s3 == "minio" else
                                         "http://s3:8333")
    assert len(set(values[k] for k in ("POSTGRES_PASSWORD", "REDIS_PASSWORD",
                                       "S3_SECRET_KEY", "AIRFLOW_JWT_SECRET"))) == 4
    assert (scratch / ".slicert" / "compose-passwords.json").read_text().strip() == (
        f'{{"admin": "{values["AIRFLOW_ADMIN_PASSWORD"]}"}}')
