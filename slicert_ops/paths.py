"""Where the project's non-Python parts live (runtime sources, plugin, expectations)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("SLICERT_ROOT", Path(__file__).resolve().parents[1]))
ZEPHYR_DIR = ROOT / "zephyr"
QEMU_DIR = ROOT / "qemu"
EXPECTATIONS_DIR = ROOT / "expectations"
EXPERIMENTS_DIR = ROOT / "experiments"
PLUGIN_SO = Path(os.environ.get("SLICERT_PLUGIN", ROOT / "build" / "qemu" / "libslicert_cycles.so"))
#: The patched qemu-system-arm (qemu/build_qemu.sh links it here; $SLICERT_QEMU overrides).
QEMU_BIN = Path(os.environ.get("SLICERT_QEMU", ROOT / "build" / "qemu" / "qemu-system-arm"))
