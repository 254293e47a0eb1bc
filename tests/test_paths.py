"""slicert_ops.paths is the one source of the repo root (SLICERT_ROOT) and the state root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import slicert_ops
from slicert_ops import paths
from slicert_ops.firmware import build
from slicert_ops.orchestrate import settings
from slicert_ops.services.config import ServicesConfig

PACKAGE_PARENT = Path(slicert_ops.__file__).resolve().parents[1]


def test_repo_root_honours_slicert_root(tmp_path):
    assert paths.repo_root({}) == PACKAGE_PARENT
    assert paths.repo_root({"SLICERT_ROOT": ""}) == PACKAGE_PARENT
    assert paths.repo_root({"SLICERT_ROOT": str(tmp_path)}) == tmp_path.resolve()
    assert paths.state_root({"SLICERT_ROOT": str(tmp_path)}) == tmp_path.resolve() / ".slicert"
    home = tmp_path / "home"
    assert paths.state_root({"SLICERT_ROOT": str(tmp_path), "SLICERT_HOME": str(home)}) == home


def test_every_user_shares_the_one_definition(tmp_path):
    assert settings.repo_root is paths.repo_root and settings.state_root is paths.state_root
    assert build.ZEPHYR_DIR == paths.ZEPHYR_DIR
    env = {"SLICERT_ROOT": str(tmp_path)}
    assert settings.experiments_dir(env) == tmp_path.resolve() / "experiments"
    cfg = ServicesConfig.from_env(env)
    assert cfg.state_dir == tmp_path.resolve() / ".slicert" / "services"


def test_constants_follow_slicert_root_at_import(tmp_path):
    code = ("import json; from slicert_ops import paths; from slicert_ops.firmware import build; "
            "print(json.dumps([str(paths.ROOT), str(paths.ZEPHYR_DIR), str(build.ZEPHYR_DIR), "
            "str(paths.PLUGIN_SO), str(paths.QEMU_BIN)]))")
    env = {k: v for k, v in os.environ.items() if k not in ("SLICERT_PLUGIN", "SLICERT_QEMU")}
    env.update(SLICERT_ROOT=str(tmp_path), PYTHONPATH=str(PACKAGE_PARENT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    root, zephyr, build_zephyr, plugin, qemu = json.loads(out)
    base = tmp_path.resolve()
    assert root == str(base) and zephyr == build_zephyr == str(base / "zephyr")
    assert plugin == str(base / "build" / "qemu" / "libslicert_cycles.so")
    assert qemu == str(base / "build" / "qemu" / "qemu-system-arm")
