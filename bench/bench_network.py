"""Sweep cost of one network, per candidate, against the bare tools, measured in one run.

Runs `slicert run` on a network manifest (default: the DS-CNN keyword-spotting example; its
task candidates, default network and tuned network), then drives the same tools directly
for the same candidates: TVM code generation of every kernel, the arm-none-eabi-gcc
compile/link commands from each build log, and one QEMU + cycle-plugin run per repeat.

Prints the per-candidate cost of both and their ratio (the single-operator target, <= 1.3,
is the reference), plus the split by kind (task candidate / whole network).

Usage: .venv/bin/python bench/bench_network.py [--manifest M] [--repeat R] [--set K=V]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slicert_ops.manifest import Candidate  # noqa: E402
from slicert_ops.paths import PLUGIN_SO  # noqa: E402
from slicert_ops.pipeline import board_of, build  # noqa: E402
from slicert_ops.sim.qemu import build_command  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_pipeline import run_pipeline, stage_breakdown  # noqa: E402


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"bench: {cmd[0]} failed ({res.returncode}): {res.stderr[-500:]!r}")
    return time.perf_counter() - t


def gcc_commands(build_log: Path) -> list[list[str]]:
    """The kernel compile and firmware link (runtime objects are cached alike)."""
    return [shlex.split(line[2:]) for line in build_log.read_text().splitlines()
            if line.startswith("$ arm-none-eabi-gcc") and "firmware.elf" in line]


def candidates_of(exp_dir: Path) -> list[Candidate]:
    seen: dict[str, Candidate] = {}
    for path in sorted(exp_dir.glob("run_*/manifest.json")):
        m = json.loads(path.read_text())
        seen.setdefault(m["candidate_id"], Candidate(
            index=m["candidate_index"], id=m["candidate_id"], operator=m["operator"],
            schedule=m["schedule"], runner=m["runner"], versions=m["versions"],
            network=m.get("network")))
    return list(seen.values())


def bare_tools(cand: Candidate, repeat: int, work: Path) -> dict[str, float]:
    timings: dict[str, float] = {}
    built = build(cand, work, timings)  # TVM time measured inside, gcc re-timed below
    out = {"tvm": timings.get("codegen", 0.0), "gcc": 0.0, "qemu": 0.0}
    bdir = work / "build"
    for cmd in gcc_commands(bdir / "zephyr_build.log"):
        out["gcc"] += timed(cmd, cwd=bdir)
    elf = built.firmware.nb.elf  # type: ignore[attr-defined]
    for r in range(repeat):
        out["qemu"] += timed(build_command(elf, seed=r, plugin=PLUGIN_SO,
                                           plugin_out=work / f"plugin_{r}.txt",
                                           board=board_of(cand)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path,
                    default=ROOT / "experiments" / "networks" / "kws_ds_cnn.yaml")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="manifest override passed to slicert run (e.g. a smaller space)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="slicert-bench-net-") as tmp:
        work = Path(tmp)
        cmd = [sys.executable, "-m", "slicert_ops.cli", "run", str(args.manifest), "--out",
               str(work / "res"), "--jobs", "1", "--no-progress", "--set",
               f"experiment.repeat={args.repeat}", *(x for kv in args.set for x in ("--set", kv))]
        run = run_pipeline(cmd, work / "timings.json")
        wall = run.wall
        exp_dir = next(p for p in (work / "res").iterdir() if p.is_dir())
        cands = candidates_of(exp_dir)
        totals = {"network_task": {"tvm": 0.0, "gcc": 0.0, "qemu": 0.0, "n": 0},
                  "network": {"tvm": 0.0, "gcc": 0.0, "qemu": 0.0, "n": 0}}
        for c in cands:
            got = bare_tools(c, args.repeat, work / "bare" / c.id)
            row = totals[c.operator["type"]]
            row["n"] += 1
            for k, v in got.items():
                row[k] += v
        breakdown = stage_breakdown(run, exp_dir, {
            "tvm": sum(r["tvm"] for r in totals.values()),
            "gcc": sum(r["gcc"] for r in totals.values()),
            "qemu": sum(r["qemu"] for r in totals.values())})
    n = len(cands)
    bare = sum(r["tvm"] + r["gcc"] + r["qemu"] for r in totals.values())
    print(f"network manifest: {args.manifest}  ({n} candidates x {args.repeat} repeats: "
          f"{totals['network_task']['n']} task candidates, {totals['network']['n']} networks)")
    for kind, r in totals.items():
        if r["n"]:
            print(f"  bare tools per {kind:<12} candidate: TVM {r['tvm'] / r['n']:.3f} s, "
                  f"gcc {r['gcc'] / r['n']:.3f} s, QEMU+plugin {r['qemu'] / r['n']:.3f} s")
    print(f"slicert run wall          = {wall:.2f} s  ({wall / n:.3f} s per candidate)")
    print(f"bare tools (sum)          = {bare:.2f} s  ({bare / n:.3f} s per candidate)")
    print(f"ratio sweep / bare tools  = {wall / bare:.3f}  (single-operator target <= 1.30)")
    print("\nwhere slicert run's time goes (stage by stage) against the bare tools:")
    print("\n".join(breakdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
