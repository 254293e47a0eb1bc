"""bench/bench_kernels.py's previous-generator manifest: the example network with every MAC
layer in the direct form (its defaults otherwise), one network run and no task candidates."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    """The bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_kernels",
                                                  ROOT / "bench" / "bench_kernels.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_direct_manifest_is_one_network_of_direct_kernels(tmp_path: Path) -> None:
    from slicert_ops.manifest import load_manifest
    from slicert_ops.network.candidates import load_context, network_spec
    from slicert_ops.network.tasks import resolve

    bench = _bench()
    src = ROOT / "experiments" / "networks" / "kws_ds_cnn.yaml"
    path = bench.direct_manifest(src, {"conv2d", "depthwise_conv2d", "dense"}, tmp_path)
    res = subprocess.run([sys.executable, "-m", "slicert_ops.cli", "check", str(path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "0 task candidates, 1 network candidates" in res.stdout + res.stderr
    exp = load_manifest(path)
    ctx = load_context(network_spec(exp), exp.runner["board"])
    forms = {t.type: resolve(t, ctx.base(t)).form for t in ctx.tasks}
    assert forms == {"conv2d": 0, "depthwise_conv2d": 0, "dense": 0, "avg_pool": None}
