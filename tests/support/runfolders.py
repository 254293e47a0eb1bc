"""Synthetic but schema-valid run folders (contracts.md): manifest.json, tvm_config.json,
zephyr_build.log, qemu_trace.json, cycles.txt. The trace is self-consistent (monotone
stamps, one kernel_start/kernel_end, tile_end count == micro_tiles, paired enter/exit, metrics
derived from the events), so it passes the GX suites unless ``corrupt`` breaks it.

    make_run_folder(tmp_path / "results" / "exp", candidate_index=0, repeat=0)
    make_run_folder(..., corrupt="non_monotone" | "missing_kernel_end" | "incorrect"
                         | "tile_count" | "unpaired_irq")
    make_run_folder(..., status="failed")       # a failed run: no trace, no cycles.txt
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

VERSIONS = {"tvm": "0.27.0.post1", "gcc": "14.2.1", "qemu": "9.2.0", "runtime": "slicert-rt-0.1",
            "cycle_model": "cm3-v1", "plugin": "0.1.0", "slicert": "0.1.0"}
OPERATOR = {"name": "conv2d", "layout": "NHWC", "dtype": "int8", "N": 1, "H": 16, "W": 16,
            "C": 8, "K": 8, "R": 5, "S": 5}
RUNNER = {"irq_load": True, "irq_period_us": 200, "irq_jitter_us": 20, "rt_work_iters": 50,
          "rt_deadline_us": 100, "board": "lm3s6965evb"}


def candidate_id(experiment: str, candidate_index: int, schedule: dict) -> str:
    blob = json.dumps({"experiment": experiment, "i": candidate_index, "schedule": schedule,
                       "operator": OPERATOR, "runner": RUNNER, "versions": VERSIONS},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _events(micro_tiles: int, irq: bool, cal_checks: int = 4) -> list[dict]:
    ev: list[dict] = []
    c = i = 0

    def add(t: str, dc: int, di: int | None = None, payload: int = 0) -> None:
        nonlocal c, i
        c += dc
        i += di if di is not None else max(1, dc * 3 // 4)
        ev.append({"type": t, "cycles": c, "insns": i, "payload": payload})

    add("boot", 120)
    add("cal_start", 40, payload=cal_checks)
    for _ in range(cal_checks):
        add("tile_end", 12)
    add("cal_end", 12)
    add("kernel_start", 300)
    for k in range(micro_tiles):
        add("tile_end", 480 + 7 * (k % 3))
        if irq and k in (2, micro_tiles - 3):
            add("irq_enter", 4, payload=3)          # latency 3 ticks
            add("rt_release", 10, payload=k)
            add("irq_exit", 8)
            add("yield", 6, payload=2)
            add("pendsv_enter", 14)
            add("pendsv_exit", 30, payload=1)
            add("rt_start", 6, payload=k)
            add("rt_end", 220, payload=k)
            add("pendsv_enter", 10)
            add("pendsv_exit", 30, payload=0)
    add("kernel_end", 25)
    add("output_ready", 90)
    return ev


def _metrics(events: list[dict], micro_tiles: int, irq: bool) -> dict:
    start = next(e for e in events if e["type"] == "kernel_start")
    end = next(e for e in events if e["type"] == "kernel_end")
    wall = end["cycles"] - start["cycles"]
    insns = end["insns"] - start["insns"]
    n_irq = sum(e["type"] == "irq_enter" for e in events)
    n_pendsv = sum(e["type"] == "pendsv_enter" for e in events)
    stolen = (22 + 44 + 226 + 40) * (n_irq if irq else 0)
    return {
        "kernel_cycles": wall - stolen, "wall_cycles": wall, "instructions": insns,
        "kernel_instructions": insns - stolen * 3 // 4, "yield_checks": micro_tiles,
        "yield_check_cycles": 12, "yield_overhead_cycles": 12 * micro_tiles,
        "slices": 1 + n_irq, "pendsv_count": n_pendsv,
        "pendsv_overhead_mean_cycles": 37.0 if n_pendsv else 0.0,
        "pendsv_overhead_max_cycles": 44 if n_pendsv else 0,
        "irq_count": n_irq, "irq_latency_min_cycles": 60 if n_irq else 0,
        "irq_latency_mean_cycles": 60.0 if n_irq else 0.0,
        "irq_latency_p99_cycles": 60 if n_irq else 0, "irq_latency_max_cycles": 60 if n_irq else 0,
        "rt_releases": n_irq, "rt_jobs": n_irq,
        "max_preemption_latency_cycles": 70 if n_irq else 0,
        "mean_preemption_latency_cycles": 66.5 if n_irq else 0.0,
        "deadline_misses": 0, "text_bytes": 14236, "data_bytes": 120, "bss_bytes": 9344,
        "correct": 1,
    }


def make_run_folder(exp_dir: Path | str, candidate_index: int = 0, repeat: int = 0, *,
                    repeats: int = 1, experiment: str | None = None, micro_tiles: int = 12,
                    irq: bool = True, status: str = "ok", corrupt: str | None = None,
                    with_raw: bool = False, schedule: dict | None = None) -> Path:
    exp_dir = Path(exp_dir)
    experiment = experiment or exp_dir.name
    schedule = schedule or {"tile_size": [4, 4, 8], "micro_tile": [2, 2, 8],
                            "unroll": 2, "slice": 50 + candidate_index}
    cid = candidate_id(experiment, candidate_index, schedule)
    run_index = candidate_index * repeats + repeat + 1
    run = f"run_{run_index:04d}"
    d = exp_dir / run
    d.mkdir(parents=True, exist_ok=True)
    manifest = {
        "schema": "slicert-run/1", "experiment": experiment, "run": run,
        "run_index": run_index, "candidate_id": cid, "candidate_index": candidate_index,
        "repeat": repeat, "seed": repeat, "operator": OPERATOR, "schedule": schedule,
        "runner": RUNNER, "logging": {"compress_raw": False, "trace": "full"},
        "versions": VERSIONS, "status": status,
        "error": None if status == "ok" else "build: arm-none-eabi-gcc exited 1 (synthetic)",
        "host_timings_s": {"codegen": 0.41, "build": 1.92, "run": 0.37, "parse": 0.02},
        "cost_model": {"name": "slicert-xgb", "version": "3", "predicted_kernel_cycles": 6100.0},
    }
    features = {"micro_tiles": micro_tiles, "macro_tiles": max(1, micro_tiles // 4),
                "unroll": schedule.get("unroll", 1), "loop_depth": 7, "flops": 102400,
                "bytes_in": 2048, "bytes_out": 2048}
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (d / "tvm_config.json").write_text(json.dumps({
        "schedule_trace": ["split(i, 4)", "split(j, 4)", "unroll(k, 2)"],
        "lowering": {"unpacked_api": True, "target": "c -mcpu=cortex-m3"},
        "features": features}, indent=1))
    (d / "zephyr_build.log").write_text(
        "arm-none-eabi-gcc -O2 -mcpu=cortex-m3 -mthumb ... kernel.c\n"
        "   text    data     bss     dec     hex filename\n"
        "  14236     120    9344   23700    5c94 firmware.elf\n")
    if with_raw:
        (d / "raw").mkdir(exist_ok=True)
        (d / "raw" / "plugin.txt").write_text("# slicert-plugin 0.1.0 cycle-model cm3-v1\n")
    if status != "ok":
        return d

    events = _events(micro_tiles, irq)
    metrics = _metrics(events, micro_tiles, irq)
    if corrupt == "non_monotone":
        k = len(events) // 2
        events[k]["cycles"] = events[k - 1]["cycles"] - 500
    elif corrupt == "missing_kernel_end":
        events = [e for e in events if e["type"] != "kernel_end"]
    elif corrupt == "incorrect":
        metrics["correct"] = 0
    elif corrupt == "tile_count":
        idx = max(i for i, e in enumerate(events) if e["type"] == "tile_end")
        del events[idx]
    elif corrupt == "unpaired_irq":
        idx = next(i for i, e in enumerate(events) if e["type"] == "irq_exit")
        del events[idx]
    elif corrupt is not None:
        raise ValueError(f"unknown corruption {corrupt!r}")
    last = events[-1]
    trace = {"schema": "slicert-trace/1", "cycle_model": "cm3-v1", "board": "lm3s6965evb",
             "candidate_id": cid, "repeat": repeat, "seed": repeat, "exit_code": 0,
             "totals": {"cycles": last["cycles"] + 50, "instructions": last["insns"] + 40},
             "events": events, "metrics": metrics}
    (d / "qemu_trace.json").write_text(json.dumps(trace, indent=1))
    (d / "cycles.txt").write_text("".join(
        f"{k} {metrics[k]}\n" for k in ("kernel_cycles", "wall_cycles", "instructions",
                                         "yield_checks", "yield_overhead_cycles", "slices",
                                         "irq_latency_max_cycles", "deadline_misses",
                                         "correct")))
    return d


def make_sweep(exp_dir: Path | str, candidates: int = 2, repeats: int = 2, **kw) -> list[Path]:
    return [make_run_folder(exp_dir, c, r, repeats=repeats, **kw)
            for c in range(candidates) for r in range(repeats)]


def sweep_manifest(experiment: str, candidates: int = 2, repeats: int = 2) -> dict:
    return {"experiment": experiment, "operator": OPERATOR, "runner": RUNNER,
            "space": {"tile_size": [[4, 4, 8]], "slice": list(range(50, 50 + candidates))},
            "repeats": repeats}
