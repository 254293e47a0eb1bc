"""Kernel efficiency per layer type on the MLPerf Tiny example networks (issue #16).

For each network manifest of experiments/networks/ (default: DS-CNN, MobileNetV1 0.25x,
ResNet-8, the autoencoder), two `slicert run`s into --out:

1. the manifest as it is (its schedule spaces are read from it, never assumed): task
   candidates, the default network and the network of the best schedule per task;
2. the previous generator: the same network with ``form: [direct]`` for every MAC layer type
   (a one-schedule space: the direct form with the defaults it had before the blocked
   forms), one network run.

From their ``layers.parquet`` and ``index.parquet``, per (network, layer kind) the MACs per
cycle (sum of MACs / sum of kernel cycles over the layers of that kind) of the default,
best and previous-generator networks against the targets and CMSIS-NN's portable C on the
same modelled M3; then the whole-network kernel cycles of each network.

Usage: .venv/bin/python bench/bench_kernels.py [--networks kws_ds_cnn,ic_resnet8]
       [--out DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slicert_ops.network.report import LAYERS_FILE  # noqa: E402
from slicert_ops.network.roofline import (  # noqa: E402
    CMSIS_NN_MACS_PER_CYCLE,
    M3_PEAK_MACS_PER_CYCLE,
    MAC_TYPES,
)
from slicert_ops.report.fmt import text_table  # noqa: E402

NETWORKS = ("kws_ds_cnn", "vww_mobilenet_v1", "ic_resnet8", "ad_fc_autoencoder")
MANIFESTS = ROOT / "experiments" / "networks"
#: The kernels' targets in MACs per cycle (issue #16), per layer kind.
TARGETS = {"conv": 0.18, "depthwise 3x3": 0.10, "pointwise 1x1": 0.23, "dense": 0.17}
KINDS = ("default", "best", "previous")


def slicert_run(manifest: Path, out: Path, jobs: int, label: str) -> Path:
    """`slicert run` into out (its progress on stderr); the experiment folder."""
    exp = yaml.safe_load(manifest.read_text())["experiment"]["name"]
    cmd = [sys.executable, "-m", "slicert_ops.cli", "run", str(manifest), "--out", str(out),
           "--jobs", str(jobs)]
    print(f"  {label}: slicert run {manifest.name} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    (out / f"{exp}.summary.txt").write_text(res.stdout)
    exp_dir = out / exp
    if res.returncode != 0 and not (exp_dir / LAYERS_FILE).is_file():
        raise SystemExit(f"bench: slicert run {manifest} failed ({res.returncode}):\n"
                         f"{res.stdout[-2000:]}")
    if res.returncode != 0:
        print(f"  {label}: some runs failed (see {out / exp}.summary.txt); using the "
              "correct ones", file=sys.stderr)
    print(f"  {label}: done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return exp_dir


def direct_manifest(manifest: Path, mac_types: set[str], out: Path) -> Path:
    """The manifest with every MAC layer type at ``form: [direct]`` (the other parameters
    left to their defaults) and its first slice value: one network, no task candidates."""
    doc = yaml.safe_load(manifest.read_text())
    exp = doc["experiment"]
    model = exp["model"]
    if isinstance(model, dict) and "onnx" in model:  # relative to the original manifest
        model["onnx"] = str((manifest.parent / model["onnx"]).resolve())
    slices = (exp.get("parameters") or {}).get("slice") or [64]
    exp["parameters"] = {t: {"form": ["direct"]} for t in sorted(mac_types)}
    exp["parameters"]["slice"] = slices[:1]
    exp["name"] = f"{exp['name']}_direct"
    exp.pop("search", None)
    path = out / f"{manifest.stem}_direct.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def network_runs(exp_dir: Path) -> dict[str, str]:
    """candidate id -> 'default' | 'best per task' of the network runs of an experiment."""
    out = {}
    for p in sorted(exp_dir.glob("run_*/manifest.json")):
        man = json.loads(p.read_text())
        if (man.get("operator") or {}).get("type") == "network" and man.get("status") == "ok":
            out[man["candidate_id"]] = (man.get("network") or {}).get("schedules", "")
    return out


def first_repeat(layers: pd.DataFrame, cid: str) -> pd.DataFrame:
    own = layers[layers["candidate_id"] == cid]
    return own[own["repeat"] == own["repeat"].min()]


def networks_of(tuned_dir: Path, direct_dir: Path) -> dict[str, tuple[Path, str]]:
    """default / best / previous -> (experiment folder, candidate id); best is the network of
    the best schedule per task (the default one when that is it)."""
    nets = network_runs(tuned_dir)
    default = next(c for c, s in nets.items() if s == "default")
    best = next((c for c, s in nets.items() if s == "best per task"), default)
    previous = next(iter(network_runs(direct_dir)))
    return {"default": (tuned_dir, default), "best": (tuned_dir, best),
            "previous": (direct_dir, previous)}


def measure(name: str, out: Path, jobs: int, step: str) -> dict[str, Any]:
    """Both runs of one network: per-kind MACs per cycle and whole-network kernel cycles."""
    manifest = MANIFESTS / f"{name}.yaml"
    if not manifest.is_file():
        raise SystemExit(f"bench: no manifest {manifest} (see `python -m "
                         "slicert_ops.network.examples`)")
    tuned_dir = slicert_run(manifest, out, jobs, f"{step} {name}")
    layers = pd.read_parquet(tuned_dir / LAYERS_FILE)
    mac_types = set(layers["type"]) & set(MAC_TYPES)
    direct = direct_manifest(manifest, mac_types, out)
    direct_dir = slicert_run(direct, out, jobs, f"{step} {name} (previous generator)")
    rows: dict[str, pd.DataFrame] = {}
    cycles: dict[str, float] = {}
    for what, (exp_dir, cid) in networks_of(tuned_dir, direct_dir).items():
        own = first_repeat(pd.read_parquet(exp_dir / LAYERS_FILE), cid)
        rows[what] = own[own["type"].isin(MAC_TYPES)]
        index = pd.read_parquet(exp_dir / "index.parquet")
        cycles[what] = float(index[index["candidate_id"] == cid]["kernel_cycles"].mean())
    macs = int(rows["default"]["macs"].sum())
    return {"name": name, "layers": rows, "kernel_cycles": cycles, "macs": macs}


def kind_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Per (network, layer kind), and over all networks: MACs per cycle of each network."""
    out = []
    groups = [(r["name"], r["layers"]) for r in results]
    if len(results) > 1:
        groups.append(("all", {w: pd.concat([r["layers"][w] for r in results])
                               for w in KINDS}))
    for net, layers in groups:
        for kind in sorted(set(layers["best"]["kind"])):
            row: dict[str, Any] = {"network": net, "layer type": kind}
            row["layers"] = int((layers["best"]["kind"] == kind).sum())
            for w in KINDS:
                sel = layers[w][layers[w]["kind"] == kind]
                row[f"{w} MACs/cycle"] = sel["macs"].sum() / max(1, sel["kernel_cycles"].sum())
            target = TARGETS.get(kind)
            row["target"] = target
            row["meets target"] = None if target is None else bool(row["best MACs/cycle"]
                                                                   >= target)
            row["CMSIS-NN"] = CMSIS_NN_MACS_PER_CYCLE.get(kind)
            row["best share of 0.5"] = row["best MACs/cycle"] / M3_PEAK_MACS_PER_CYCLE
            out.append(row)
    return pd.DataFrame(out)


def cycles_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    out = []
    for r in results:
        c = r["kernel_cycles"]
        out.append({"network": r["name"], "MACs": r["macs"],
                    "default kernel cycles": c["default"], "best kernel cycles": c["best"],
                    "previous generator kernel cycles": c["previous"],
                    "best vs previous (x faster)": c["previous"] / c["best"],
                    "best MACs/cycle": r["macs"] / c["best"]})
    return pd.DataFrame(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default=",".join(NETWORKS),
                    help="comma-separated manifest names of experiments/networks/ "
                         f"(default: {','.join(NETWORKS)})")
    ap.add_argument("--out", type=Path, default=None,
                    help="keep the results folders (and bench_kernels.txt) here; re-running "
                         "reuses the runs already there (default: a temporary folder)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    names = [n.strip().removesuffix(".yaml") for n in args.networks.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="slicert-bench-kernels-") as tmp:
        out = (args.out or Path(tmp)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        results = [measure(n, out, args.jobs, f"[{i}/{len(names)}]")
                   for i, n in enumerate(names, 1)]
        text = "\n".join([
            f"MACs per cycle per layer type (sum of MACs / sum of kernel cycles of its layers; "
            f"Cortex-M3 limit {M3_PEAK_MACS_PER_CYCLE}; previous = form direct with the "
            "defaults it had; best = best schedule per task):",
            text_table(kind_table(results)), "",
            "whole-network kernel cycles (modelled Cortex-M3 cycles, mean over repeats):",
            text_table(cycles_table(results)), "",
            f"({time.perf_counter() - t:.0f} s; results in "
            f"{out if args.out else 'a temporary folder (--out keeps them)'})"])
        print(text)
        if args.out:
            (out / "bench_kernels.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
