"""Turn a run folder (trace events + metrics + manifest + features) into pandas frames that the
GX suites check. Derived columns make order / pairing / consistency rules plain column checks.

events frame (one row per event, suite ``trace_events``):
  seq, type, cycles, insns, payload, phase ("pre"|"kernel"|"post"), in_cal (0/1),
  pendsv_depth, irq_depth (running enter-minus-exit counts), tile_end_misplaced (0/1),
  cycles_step, insns_step (stamp minus the previous non-null stamp of the same run; 0 for the
  first; null where the stamp is null)

Every check of the suites is row-wise (order rules are the step columns, counts live in the
summary row), so the frames of many runs can be validated in one GX call (gx_runner).

summary frame (one row, suite ``trace_metrics``):
  every trace metric, plus schema, exit_code, status, micro_tiles, n_events, n_kernel_start,
  n_kernel_end, kernel_order_ok, tile_end_in_kernel, tile_end_minus_micro_tiles,
  yield_checks_minus_micro_tiles, pendsv_open, irq_open, rt_unfinished, ids_match,
  cycles_txt_mismatches, wall_minus_stamps, ram_bytes, missing_metrics (names of absent
  or null contract metrics, "" when complete), negative_metrics, stats_order_violations
  (e.g. "irq_latency_p99_cycles>irq_latency_max_cycles")
"""

from __future__ import annotations

from collections import Counter
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from slicert_ops.sim.trace import METRIC_NAMES  # the contract's metrics, defined once

# (smaller, larger) metric pairs that must be ordered
ORDERED_PAIRS = [
    ("irq_latency_min_cycles", "irq_latency_mean_cycles"),
    ("irq_latency_mean_cycles", "irq_latency_p99_cycles"),
    ("irq_latency_p99_cycles", "irq_latency_max_cycles"),
    ("pendsv_overhead_mean_cycles", "pendsv_overhead_max_cycles"),
    ("mean_preemption_latency_cycles", "max_preemption_latency_cycles"),
    ("rt_jobs", "rt_releases"),
    ("yield_overhead_cycles", "wall_cycles"),
    ("kernel_instructions", "instructions"),
]


def parse_cycles_txt(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            out[parts[0]] = float(parts[1])
        except ValueError:
            continue
    return out


def events_frame(trace: dict) -> pd.DataFrame:
    """The events frame (module docstring): column passes for the usual trace (every event
    a dict with a str ``type`` and int stamps and payload), else row by row."""
    raw = trace.get("events") or []
    frame = _events_frame_columns(raw) if isinstance(raw, list) else None
    return frame if frame is not None else _events_frame_rows(raw)


_INT64 = (-(2**63), 2**63 - 1)


def _only(values: list, kind: type) -> bool:
    return set(map(type, values)) <= {kind}


def _field(events: list[dict], key: str, default: Any = None) -> list:
    return list(map(dict.get, events, repeat(key), repeat(default)))


def _ints(values: list) -> np.ndarray | None:
    """``values`` as int64 if every one is an int (not a bool) that fits, else None."""
    if not _only(values, int):
        return None
    if values and (min(values) < _INT64[0] or max(values) > _INT64[1]):
        return None
    return np.array(values, dtype=np.int64)


def _events_frame_columns(raw: list) -> pd.DataFrame | None:
    """:func:`_events_frame_rows` of well-formed events, computed column-wise (None when an
    event is not well-formed)."""
    if not _only(raw, dict):
        return None
    types = _field(raw, "type", "")
    if not _only(types, str):
        return None
    cols = [_ints(_field(raw, k, d)) for k, d in
            (("cycles", None), ("insns", None), ("payload", 0))]
    if any(c is None for c in cols):
        return None
    cycles_a, insns_a, payload_a = cols
    n = len(types)
    codes, names = pd.factorize(pd.Series(types, dtype=object))
    code_of = {name: k for k, name in enumerate(names)}

    def of(name: str) -> np.ndarray:
        return codes == code_of.get(name, -2)

    def first(name: str, after: int = -1) -> int | None:
        hits = np.flatnonzero(of(name)[after + 1:])
        return int(hits[0]) + after + 1 if hits.shape[0] else None

    # phase: "pre", then "kernel" from the first kernel_start through the first kernel_end
    # after it, then "post"
    phase_code = np.zeros(n, dtype=np.int64)
    ks = first("kernel_start")
    if ks is not None:
        ke = first("kernel_end", ks)
        phase_code[ks:] = 1
        if ke is not None:
            phase_code[ke + 1:] = 2
    phase = np.array(["pre", "kernel", "post"], dtype=object)[phase_code].tolist()
    # in_cal: 1 on a cal_start and after it, through the next cal_end
    is_start, is_end = of("cal_start"), of("cal_end")
    marks = np.maximum.accumulate(np.where(is_start | is_end, np.arange(n), -1)) \
        if n else np.zeros(0, dtype=np.int64)
    after = (marks >= 0) & is_start[np.maximum(marks, 0)] if n else np.zeros(0, dtype=bool)
    in_cal = (is_start | np.concatenate(([False], after[:-1]))).astype(np.int64) if n \
        else np.zeros(0, dtype=np.int64)
    pend = np.cumsum(of("pendsv_enter").astype(np.int64) - of("pendsv_exit"))
    irq = np.cumsum(of("irq_enter").astype(np.int64) - of("irq_exit"))
    misplaced = (of("tile_end") & (phase_code != 1) & (in_cal == 0)).astype(np.int64)
    cycles, insns = pd.Series(cycles_a), pd.Series(insns_a)
    return pd.DataFrame({
        "seq": pd.Series(range(n), dtype="int64"),
        "type": pd.Series(types, dtype=str if types else object),
        "cycles": cycles, "insns": insns, "payload": pd.Series(payload_a),
        "phase": pd.Series(phase, dtype=str if phase else object),
        "in_cal": pd.Series(in_cal, dtype="int64"),
        "pendsv_depth": pd.Series(pend, dtype="int64"),
        "irq_depth": pd.Series(irq, dtype="int64"),
        "tile_end_misplaced": pd.Series(misplaced, dtype="int64"),
        "cycles_step": _steps(cycles), "insns_step": _steps(insns),
    })


def _events_frame_rows(raw: list) -> pd.DataFrame:
    """The events frame, one event at a time (any event: non-dicts, nulls, missing keys)."""
    events = [ev if isinstance(ev, dict) else {} for ev in raw]
    types = [str(ev.get("type", "")) for ev in events]
    phase, in_cal, pend, irq, misplaced = [], [], [], [], []
    state, cal, p_depth, i_depth = "pre", 0, 0, 0
    for t in types:
        if t == "kernel_start" and state == "pre":
            state = "kernel"
            phase.append("kernel")  # the marker itself opens the window
        elif t == "kernel_end" and state == "kernel":
            phase.append("kernel")
            state = "post"
        else:
            phase.append(state)
        if t == "cal_start":
            cal = 1
        in_cal.append(cal)
        if t == "cal_end":
            cal = 0
        p_depth += (t == "pendsv_enter") - (t == "pendsv_exit")
        i_depth += (t == "irq_enter") - (t == "irq_exit")
        pend.append(p_depth)
        irq.append(i_depth)
        misplaced.append(int(t == "tile_end" and phase[-1] != "kernel" and not in_cal[-1]))

    def numeric(key: str, default=None) -> pd.Series:
        return pd.to_numeric(pd.Series([ev.get(key, default) for ev in events], dtype=object),
                             errors="coerce")

    cycles, insns = numeric("cycles"), numeric("insns")
    return pd.DataFrame({
        "seq": pd.Series(range(len(events)), dtype="int64"),
        "type": pd.Series(types, dtype=str if types else object),
        "cycles": cycles, "insns": insns, "payload": numeric("payload", 0),
        "phase": pd.Series(phase, dtype=str if phase else object),
        "in_cal": pd.Series(in_cal, dtype="int64"),
        "pendsv_depth": pd.Series(pend, dtype="int64"),
        "irq_depth": pd.Series(irq, dtype="int64"),
        "tile_end_misplaced": pd.Series(misplaced, dtype="int64"),
        "cycles_step": _steps(cycles), "insns_step": _steps(insns),
    })


def _steps(stamps: pd.Series) -> pd.Series:
    """Each stamp minus the previous non-null stamp (0 for the first, null stays null): the
    monotonicity rule as a row-wise column (what GX's expect_column_values_to_be_increasing
    checks: it skips nulls and gives the first value a bye)."""
    values = stamps.to_numpy(dtype="float64", na_value=np.nan)
    out = np.full(len(values), np.nan)
    present = np.flatnonzero(~np.isnan(values))
    if len(present):
        out[present] = np.diff(values[present], prepend=values[present[0]])
    return pd.Series(out, index=stamps.index)


def board_memory(board: str) -> tuple[int, int]:
    """(flash bytes, RAM bytes) of a board (firmware/boards.py)."""
    from slicert_ops.firmware.boards import BOARDS

    b = BOARDS.get(board) or BOARDS["lm3s6965evb"]
    return b.flash_bytes, b.ram_bytes


def summary_frame(trace: dict, events: pd.DataFrame, manifest: dict, features: dict,
                  cycles_txt: dict[str, float] | None) -> pd.DataFrame:
    metrics = dict(trace.get("metrics") or {})
    row: dict = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    types = events["type"].tolist()
    count = Counter(types)

    def n(name: str) -> int:
        return int(count.get(name, 0))

    row["schema"] = str(trace.get("schema", ""))
    row["exit_code"] = trace.get("exit_code")
    row["status"] = str(manifest.get("status", ""))
    micro = features.get("micro_tiles")
    row["micro_tiles"] = micro
    row["n_events"] = int(len(events))
    row["n_kernel_start"] = n("kernel_start")
    row["n_kernel_end"] = n("kernel_end")
    starts = [i for i, t in enumerate(types) if t == "kernel_start"]
    ends = [i for i, t in enumerate(types) if t == "kernel_end"]
    row["kernel_order_ok"] = int(bool(starts) and bool(ends) and starts[0] < ends[0])
    in_kernel_tiles = sum(1 for t, ph in zip(types, events["phase"].tolist(), strict=True)
                          if t == "tile_end" and ph == "kernel")
    row["tile_end_in_kernel"] = in_kernel_tiles
    row["tile_end_minus_micro_tiles"] = (in_kernel_tiles - micro) if micro is not None else None
    yc = metrics.get("yield_checks")
    row["yield_checks_minus_micro_tiles"] = (
        (yc - micro) if (yc is not None and micro is not None) else None)
    row["pendsv_open"] = n("pendsv_enter") - n("pendsv_exit")
    row["irq_open"] = n("irq_enter") - n("irq_exit")
    row["rt_unfinished"] = n("rt_start") - n("rt_end")
    row["ids_match"] = int(
        str(trace.get("candidate_id")) == str(manifest.get("candidate_id"))
        and trace.get("repeat") == manifest.get("repeat"))
    if cycles_txt is None:
        row["cycles_txt_mismatches"] = None
    else:
        bad = 0
        for key, value in cycles_txt.items():
            if key in metrics and isinstance(metrics[key], (int, float)):
                if abs(float(metrics[key]) - value) > 1e-3 * max(1.0, abs(value)):
                    bad += 1
        row["cycles_txt_mismatches"] = bad
    if starts and ends and "wall_cycles" in metrics:
        stamps = events["cycles"]
        row["wall_minus_stamps"] = metrics["wall_cycles"] - (stamps.iat[ends[0]]
                                                             - stamps.iat[starts[0]])
    else:
        row["wall_minus_stamps"] = None
    if "data_bytes" in metrics and "bss_bytes" in metrics:
        row["ram_bytes"] = metrics["data_bytes"] + metrics["bss_bytes"]
    # memory of the run's board (runner.board): 1.0 = all of it
    flash, ram = board_memory(str(trace.get("board") or "lm3s6965evb"))
    row["flash_share"] = metrics["text_bytes"] / flash if "text_bytes" in metrics else None
    row["ram_share"] = row["ram_bytes"] / ram if "ram_bytes" in row else None

    def num(name: str):
        v = metrics.get(name)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    # Compound checks as named lists: the GX report shows the offending names.
    row["missing_metrics"] = ",".join(m for m in METRIC_NAMES if num(m) is None
                                      and not isinstance(metrics.get(m), bool))
    row["negative_metrics"] = ",".join(m for m in METRIC_NAMES
                                       if num(m) is not None and num(m) < 0)
    order = []
    for lo, hi in ORDERED_PAIRS:
        a, b = num(lo), num(hi)
        if a is not None and b is not None and a > b:
            order.append(f"{lo}>{hi}")
    row["stats_order_violations"] = ",".join(order)
    return pd.DataFrame([row])
