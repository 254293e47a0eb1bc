"""Where the project's non-Python parts and the local state live: the one source of paths.

  SLICERT_ROOT    the repo (runtime sources, plugin, DAGs, expectations); default: the parent
                  directory of the slicert_ops package (the worker image sets /opt/slicert/src)
  SLICERT_HOME    local state root (default <repo>/.slicert; services and the Airflow stack)
  SLICERT_PLUGIN  the TCG plugin (default <repo>/build/qemu/libslicert_cycles.so)
  SLICERT_QEMU    the patched qemu-system-arm (default <repo>/build/qemu/qemu-system-arm)

``repo_root(env)`` / ``state_root(env)`` read the environment when called; the constants
below are those values for this process's environment at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def repo_root(env: Mapping[str, str] | None = None) -> Path:
    """$SLICERT_ROOT (resolved) when set, else the directory that holds slicert_ops/."""
    env = os.environ if env is None else env
    raw = env.get("SLICERT_ROOT")
    return Path(raw).expanduser().resolve() if raw else PACKAGE_PARENT


def state_root(env: Mapping[str, str] | None = None) -> Path:
    """$SLICERT_HOME (resolved) when set, else <repo>/.slicert."""
    env = os.environ if env is None else env
    home = env.get("SLICERT_HOME")
    return (Path(home).expanduser() if home else repo_root(env) / ".slicert").resolve()


ROOT = repo_root()
ZEPHYR_DIR = ROOT / "zephyr"
QEMU_DIR = ROOT / "qemu"
EXPECTATIONS_DIR = ROOT / "expectations"
EXPERIMENTS_DIR = ROOT / "experiments"
BUILD_QEMU_DIR = ROOT / "build" / "qemu"
#: The TCG cycle plugin ($SLICERT_PLUGIN overrides).
PLUGIN_SO = Path(os.environ.get("SLICERT_PLUGIN") or BUILD_QEMU_DIR / "libslicert_cycles.so")
#: The patched qemu-system-arm (qemu/build_qemu.sh links it here; $SLICERT_QEMU overrides).
QEMU_BIN = Path(os.environ.get("SLICERT_QEMU") or BUILD_QEMU_DIR / "qemu-system-arm")
