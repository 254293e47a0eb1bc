"""Pipeline cost on the spec's manifest, as ratios measured in one run.

Prints
  1. the per-candidate host time split (codegen / build / run / parse) of `slicert run`;
  2. `slicert run` wall time against the bare tool invocations it makes for the same
     candidates: TVM code generation + the arm-none-eabi-gcc compile/link command from the
     build log + one QEMU run per repeat (target <= 1.3x), and where the pipeline's time
     goes, stage by stage (`stage_breakdown`: the runs' host_timings_s and the command's
     `--timings` file), against the bare tools;
  3. QEMU with the cycle plugin driving the clock (virtual time = modelled cycles) against
     plain `-icount` QEMU on the same ELFs (target <= 1.15). Under the plugin the timers
     run at the modelled rate, so with an IRQ load the guest does more work than under
     `-icount` (1 instruction = 1 ns: ~30x fewer interrupts); the bench therefore also
     times the same kernels with the IRQ load and slicing off (identical guest work).

Usage: .venv/bin/python bench/bench_pipeline.py [--manifest M] [--repeat R] [--candidates N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slicert_ops.codegen import generate_kernel, make_inputs  # noqa: E402
from slicert_ops.codegen.spec import ScheduleParams  # noqa: E402
from slicert_ops.firmware import build_firmware  # noqa: E402
from slicert_ops.manifest import expand, load_manifest  # noqa: E402
from slicert_ops.manifest.expand import operator_spec_from_dict  # noqa: E402
from slicert_ops.paths import PLUGIN_SO  # noqa: E402
from slicert_ops.pipeline import runtime_options  # noqa: E402
from slicert_ops.sim.qemu import build_command  # noqa: E402


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=300)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"bench: {cmd[0]} failed ({res.returncode}): {res.stderr[-500:]!r}")
    return dt


def link_commands(build_dir: Path) -> list[list[str]]:
    """The gcc invocation(s) that compile the kernel and link the ELF (runtime objects are
    compiled once per option set and cached, by the pipeline and here alike)."""
    cmds = []
    for line in (build_dir / "zephyr_build.log").read_text().splitlines():
        if line.startswith("$ arm-none-eabi-gcc") and "firmware.elf" in line:
            cmds.append(shlex.split(line[2:]))
    if not cmds:
        raise SystemExit("bench: no link command found in the build log")
    return cmds


def bare_tools(cands: list, repeat: int, work: Path) -> dict[str, float]:
    """Time each tool the pipeline drives, called directly, for the same candidates."""
    out = {"tvm": 0.0, "gcc": 0.0, "qemu_plugin": 0.0, "qemu_plain": 0.0,
           "quiet_plugin": 0.0, "quiet_plain": 0.0}
    for cand in cands:
        op = operator_spec_from_dict(cand.operator)
        sched = ScheduleParams(**cand.schedule)
        t = time.perf_counter()
        kernel = generate_kernel(op, sched)
        out["tvm"] += time.perf_counter() - t
        bdir = work / cand.id
        build = build_firmware(kernel, make_inputs(op, seed=0), runtime_options(cand), bdir)
        for cmd in link_commands(bdir):
            out["gcc"] += timed(cmd, cwd=bdir)
        for r in range(repeat):
            plugin_cmd = build_command(build.elf, seed=r, plugin=PLUGIN_SO,
                                       plugin_out=bdir / f"plugin_{r}.txt")
            plain_cmd = build_command(build.elf, seed=r, plugin=None)
            # alternate the two so machine noise hits both alike
            out["qemu_plugin"] += timed(plugin_cmd)
            out["qemu_plain"] += timed(plain_cmd)
        # the same kernel, no IRQ load, no slicing: the same guest work in both modes
        quiet = dataclasses.replace(runtime_options(cand), irq_load=False, slice_us=0)
        qdir = work / f"{cand.id}-quiet"
        qbuild = build_firmware(kernel, make_inputs(op, seed=0), quiet, qdir)
        for r in range(repeat):
            out["quiet_plugin"] += timed(build_command(qbuild.elf, seed=r, plugin=PLUGIN_SO,
                                                       plugin_out=qdir / f"plugin_{r}.txt"))
            out["quiet_plain"] += timed(build_command(qbuild.elf, seed=r, plugin=None))
    return out


@dataclasses.dataclass
class PipelineRun:
    wall: float                 # seconds, launch to exit
    out: Path
    launched_at: float          # epoch seconds
    exited_at: float
    timings: dict[str, Any]     # the --timings file


def run_pipeline(cmd: list[str], timings: Path) -> PipelineRun:
    """Run a `slicert run` command line (``--timings`` appended) and time it."""
    out = Path(cmd[cmd.index("--out") + 1])
    launched = time.time()
    t = time.perf_counter()
    res = subprocess.run([*cmd, "--timings", str(timings)], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"bench: slicert run failed:\n{res.stderr[-2000:]}")
    return PipelineRun(wall, out, launched, launched + wall, json.loads(timings.read_text()))


def pipeline(manifest: Path, repeat: int, out: Path) -> PipelineRun:
    cmd = [sys.executable, "-m", "slicert_ops.cli", "run", str(manifest), "--out", str(out),
           "--jobs", "1", "--no-progress", "--set", f"experiment.repeat={repeat}"]
    return run_pipeline(cmd, out.parent / "timings.json")


# host_timings_s keys of a run (pipeline.py, network/stage.py) -> breakdown row; "run" is
# the whole measurement (QEMU + parse + reference): only its remainder is shown
RUN_STAGES = {"codegen": "codegen", "build": "gcc", "qemu": "qemu", "parse": "parse",
              "reference": "reference", "write": "write", "prepare": "prepare"}
PER_CANDIDATE = {"codegen", "build", "prepare"}  # measured once, copied into each repeat
ROWS = [  # (key, label, bare tools key)
    ("startup", "start-up (interpreter, slicert_ops import)", None),
    ("setup", "set-up (CLI, manifest, expansion, preflight)", None),
    ("prepare", "network preparation (per candidate)", None),
    ("codegen", "codegen (TVM)", "tvm"),
    ("gcc", "gcc (firmware build: compile + link)", "gcc"),
    ("qemu", "QEMU + plugin (process wall time)", "qemu"),
    ("parse", "parsing plugin file + metrics + trace", None),
    ("reference", "numpy reference of the output (networks)", None),
    ("measure_other", "rest of the measurement", None),
    ("write", "run-folder writes (trace JSON, cycles.txt, logs, raw)", None),
    ("validation", "validation (waiting for the verdicts)", None),
    ("sweep_other", "sweep bookkeeping (stage imports, temp dirs, reuse)", None),
    ("index_report", "index + report", None),
    ("summary", "summary + exit", None),
]


def stage_breakdown(run: PipelineRun, exp_dir: Path, bare: dict[str, float]) -> list[str]:
    """Where `slicert run`'s wall time goes, against the bare tools' (seconds, and the share
    of the pipeline's wall time)."""
    per_run: dict[str, float] = {}
    measure = 0.0
    seen: set[str] = set()
    for man_path in sorted(exp_dir.glob("run_*/manifest.json")):
        man = json.loads(man_path.read_text())
        t = man.get("host_timings_s") or {}
        first = man["candidate_id"] not in seen  # a candidate's build is in every repeat's
        seen.add(man["candidate_id"])
        for k, v in t.items():
            if k in RUN_STAGES and (first or k not in PER_CANDIDATE):
                per_run[RUN_STAGES[k]] = per_run.get(RUN_STAGES[k], 0.0) + v
        measure += t.get("run", 0.0)
    st = run.timings.get("stages_s", {})
    got = dict(per_run)
    got["measure_other"] = max(0.0, measure - sum(per_run.get(k, 0.0) for k in
                                                  ("qemu", "parse", "reference")))
    got["startup"] = run.timings["started_at"] - run.launched_at
    got["setup"] = st.get("setup", 0.0)
    got["validation"] = st.get("validation", 0.0)
    in_runs = sum(per_run.get(k, 0.0) for k in ("prepare", "codegen", "gcc", "write")) \
        + measure
    got["sweep_other"] = st.get("sweep", 0.0) - in_runs - got["validation"]
    got["index_report"] = st.get("index_report", 0.0)
    got["summary"] = st.get("summary", 0.0) + run.exited_at - run.timings["written_at"]
    bare_total = sum(bare.values())
    lines = [f"{'stage':<56} {'slicert run s':>13} {'share':>6} {'bare tools s':>12}"]
    for key, label, bkey in ROWS:
        if key not in got and bkey is None:
            continue
        b = f"{bare[bkey]:>12.2f}" if bkey in bare else f"{'':>12}"
        v = got.get(key, 0.0)
        lines.append(f"  {label:<54} {v:>13.2f} {v / run.wall:>6.1%} {b}")
    rest = run.wall - sum(got.values())
    lines.append(f"  {'unaccounted':<54} {rest:>13.2f} {rest / run.wall:>6.1%}")
    lines.append(f"  {'total':<54} {run.wall:>13.2f} {1:>6.1%} {bare_total:>12.2f}")
    return lines


def split_table(exp_dir: Path) -> list[str]:
    per_cand: dict[str, dict[str, list[float]]] = {}
    for man_path in sorted(exp_dir.glob("run_*/manifest.json")):
        man = json.loads(man_path.read_text())
        t = man["host_timings_s"]
        row = per_cand.setdefault(man["candidate_id"], {
            "codegen": [], "build": [], "run": [], "parse": [], "sched": man["schedule"]})
        if man["repeat"] == 0:
            row["codegen"].append(t.get("codegen", 0.0))
            row["build"].append(t.get("build", 0.0))
        row["run"].append(t.get("qemu", t.get("run", 0.0)))
        row["parse"].append(t.get("parse", 0.0))
    lines = [f"{'candidate':<16} {'tile':>4} {'micro':>5} {'unroll':>6} {'slice':>5} "
             f"{'codegen s':>9} {'build s':>8} {'run s/rep':>9} {'parse s/rep':>11}"]
    for cid, row in per_cand.items():
        s = row["sched"]
        lines.append(f"{cid:<16} {s['tile_size']:>4} {s['micro_tile']:>5} {s['unroll']:>6} "
                     f"{s['slice']:>5} {sum(row['codegen']):>9.3f} {sum(row['build']):>8.3f} "
                     f"{statistics.mean(row['run']):>9.3f} {statistics.mean(row['parse']):>11.4f}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=ROOT / "experiments" / "conv2d_5x5.yaml")
    ap.add_argument("--repeat", type=int, default=None,
                    help="repeats per candidate (default: the manifest's)")
    args = ap.parse_args()
    exp = load_manifest(args.manifest)
    repeat = args.repeat or exp.repeat
    cands = expand(exp).candidates
    print(f"bench: {args.manifest.name}: {len(cands)} candidates x {repeat} repeats",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="slicert-bench-") as tmp:
        work = Path(tmp)
        run = pipeline(args.manifest, repeat, work / "results")
        wall = run.wall
        bare = bare_tools(cands, repeat, work / "bare")
        print("\nper-candidate host time split (slicert run --jobs 1):")
        print("\n".join(split_table(run.out / exp.name)))
        print("\nwhere slicert run's time goes (stage by stage) against the bare tools:")
        print("\n".join(stage_breakdown(run, run.out / exp.name,
                                         {"tvm": bare["tvm"], "gcc": bare["gcc"],
                                          "qemu": bare["qemu_plugin"]})))
    bare_total = bare["tvm"] + bare["gcc"] + bare["qemu_plugin"]
    print("\nbare tools for the same candidates: "
          f"TVM codegen {bare['tvm']:.2f} s, gcc {bare['gcc']:.2f} s, "
          f"QEMU+plugin {bare['qemu_plugin']:.2f} s = {bare_total:.2f} s")
    print(f"slicert run (whole pipeline, one process, incl. start-up, checks, trace files, "
          f"index and report): {wall:.2f} s")
    print(f"ratio pipeline / bare tools       = {wall / bare_total:.3f}  (target <= 1.30)")
    print("ratio QEMU+plugin+time / plain -icount = "
          f"{bare['qemu_plugin'] / bare['qemu_plain']:.3f}"
          "  (target <= 1.15; the guest takes the IRQ load at its true rate)")
    print("ratio QEMU+plugin+time / plain -icount, same guest work (no IRQ load, no "
          f"slicing) = {bare['quiet_plugin'] / bare['quiet_plain']:.3f}  (target <= 1.15)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
