"""Toolchain, runtime and cycle-model versions: part of every candidate id and every run."""

from __future__ import annotations

import hashlib
import re
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

from slicert_ops import __version__
from slicert_ops.paths import QEMU_BIN, QEMU_DIR, ZEPHYR_DIR


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _tree_hash(paths: list[Path], suffixes: tuple[str, ...]) -> str:
    """Content hash of source files (sorted by relative path): changes with the sources."""
    digest = hashlib.sha256()
    for base in paths:
        files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in suffixes) \
            if base.is_dir() else ([base] if base.is_file() else [])
        for f in files:
            digest.update(str(f.relative_to(base.parent)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def _pkg(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


@cache
def cycle_model_version(core: str = "cm3") -> str:
    """The plugin's cycle model for ``core``: CYCLE_MODEL_VERSION (cm3) or
    CYCLE_MODEL_VERSION_CM4 (cm4) in qemu/slicert_cycles.c."""
    name = "CYCLE_MODEL_VERSION" + ("" if core == "cm3" else "_" + core.upper())
    src = QEMU_DIR / "slicert_cycles.c"
    if src.is_file():
        m = re.search(name + r'\s+"([^"]+)"', src.read_text())
        if m:
            return m.group(1)
    return "unknown"


#: Runtime folders hashed for every board (the Cortex-M3 boards' runtime version); a
#: board whose port lives elsewhere adds its port folder (mps2-an386: baremetal-an386).
RUNTIME_DIRS = (ZEPHYR_DIR / "include", ZEPHYR_DIR / "core",
                ZEPHYR_DIR / "ports" / "baremetal-cm3", ZEPHYR_DIR / "ports" / "baremetal-an385",
                ZEPHYR_DIR / "ports" / "common", ZEPHYR_DIR / "apps" / "microbench")
BOARD_RUNTIME_DIRS = {"mps2-an386": (ZEPHYR_DIR / "ports" / "baremetal-an386",)}


@cache
def toolchain_versions(board: str | None = None) -> dict[str, str]:
    """Everything that can change a measurement, on ``board`` (``runner.board``; None:
    the default board). Cached per process. On the Cortex-M3 boards the figures of
    every board are the same (runtime hash and cycle model cm3-v2); on mps2-an386 the
    runtime hash covers its port too and the cycle model is cm4-v1."""
    from slicert_ops.sim.events import BOARD_CORE

    extra = BOARD_RUNTIME_DIRS.get(board or "", ())
    return {
        "slicert": __version__,
        "tvm": _pkg("apache-tvm"),
        "tvm_ffi": _pkg("apache-tvm-ffi"),
        "gcc": _first_line(["arm-none-eabi-gcc", "--version"]),
        "qemu": _first_line([str(QEMU_BIN), "--version"]) + " +slicert-" + _tree_hash(
            [QEMU_DIR / "patches"], (".patch",)),
        "runtime": "slicert-rt-" + _tree_hash(
            [*RUNTIME_DIRS, *extra], (".c", ".h", ".S", ".s", ".ld")),
        "plugin": "slicert-cycles-" + _tree_hash(
            [QEMU_DIR / "slicert_cycles.c", QEMU_DIR / "thumb_decode.h"], (".c", ".h")),
        "cycle_model": cycle_model_version(BOARD_CORE.get(board or "", "cm3")),
    }
