"""Answers, not only counts: one sentence each for what a sweep's tables only imply.

Pure functions over the result index (``report.index``: one row per run). Shown by `slicert
run` and the Airflow aggregate log (``outcome.sweep_outcome`` -> ``answers``) and in the
report (summary.md / summary.html):

- :func:`deadline_answer`: no candidate meets the RT deadline -- the cause (the longest
  non-preemptible granule, one micro-tile, against the deadline, in cycles and µs) and the
  fix (``micro_tile`` values whose estimated granule would fit);
- :func:`bound_answers`: no candidate meets a bound of the search objective (same cause and
  fix when the bound is on the preemption latency);
- :func:`no_effect_answers`: a swept parameter that barely changes kernel cycles (spread
  across its values with the rest of the schedule fixed, < ``NO_EFFECT``), and why.

A granule's cycles are estimated from the measurements: cycles per MAC (kernel cycles /
MACs) x MACs per micro-tile (``f_macs_per_micro_tile``; for another ``micro_tile`` value m
it scales as m^2 for conv2d, m pixels per side, and m for dense); without those features,
kernel cycles / yield checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

NO_EFFECT = 0.02     # a parameter moving kernel cycles by less than this has no effect
DEFAULT_MHZ = 50.0


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce") if col in df else \
        pd.Series(math.nan, index=df.index, dtype=float)


def _valid(index: pd.DataFrame) -> pd.DataFrame:
    runs = index[index["valid"].astype(bool)] if "valid" in index else index
    if "operator.type" in runs:  # a network experiment: its task candidates
        runs = runs[runs["operator.type"] != "network"]
    return runs


def _mhz(runs: pd.DataFrame) -> float:
    v = _num(runs, "runner.cpu_mhz").dropna()
    return float(v.iloc[0]) if len(v) else DEFAULT_MHZ


def _c(cycles: float, mhz: float) -> str:
    """``12,345 cycles = 246.9 µs``."""
    us = cycles / mhz
    return f"{cycles:,.0f} cycles = {us:,.0f} µs" if us >= 100 else \
        f"{cycles:,.0f} cycles = {us:,.1f} µs"


def _n(k: int, word: str) -> str:
    return f"{k:,} {word}" + ("" if k == 1 else "s")


def candidates(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate: schedule, mean kernel cycles, deadline misses (sum), worst
    preemption latency (max), releases (sum) and the granule estimate in cycles."""
    params = [c for c in runs.columns if c.startswith("schedule.")]
    df = runs.assign(**{c: _num(runs, c) for c in (
        "kernel_cycles", "deadline_misses", "rt_releases", "max_preemption_latency_cycles",
        "yield_checks", "f_macs", "f_macs_per_micro_tile")})
    g = df.groupby("candidate_id", sort=True)
    out = g[params].first().join(g.agg(
        kernel_cycles=("kernel_cycles", "mean"), deadline_misses=("deadline_misses", "sum"),
        rt_releases=("rt_releases", "sum"), runs=("kernel_cycles", "size"),
        preempt=("max_preemption_latency_cycles", "max"), checks=("yield_checks", "mean"),
        macs=("f_macs", "first"), macs_micro=("f_macs_per_micro_tile", "first")))
    by_mac = out["kernel_cycles"] / out["macs"] * out["macs_micro"]
    out["granule"] = by_mac.where(by_mac.notna(), out["kernel_cycles"] / out["checks"])
    out["cycles_per_mac"] = out["kernel_cycles"] / out["macs"]
    conv = g["f_op_conv2d"].first() if "f_op_conv2d" in df else pd.Series(0, index=out.index)
    out["granule_power"] = pd.to_numeric(conv, errors="coerce").fillna(0).map(
        lambda v: 2 if v == 1 else 1)
    return out.reset_index()


def _fits(cand: pd.DataFrame, limit: float, mhz: float, tile_sizes: list[int],
          relax: str = "raise rt_deadline_us") -> str:
    """The fix: ``micro_tile`` values whose estimated granule is under ``limit`` cycles
    (the fastest candidate's cycles per MAC), or what would be needed when none is."""
    best = cand.sort_values("granule").iloc[0]
    m0 = best.get("schedule.micro_tile")
    if pd.isna(m0) or pd.isna(best["cycles_per_mac"]) or pd.isna(best["macs_micro"]):
        return f"a smaller micro_tile (a shorter granule), or {relax}"
    m0 = int(m0)
    per_m = {m: best["granule"] * (m / m0) ** int(best["granule_power"])
             for m in range(1, m0) if all(t % m == 0 for t in tile_sizes)}
    ok = {m: g for m, g in per_m.items() if g <= limit}
    if ok:
        vals = ", ".join(f"{m} (~{_c(g, mhz)} per granule)" for m, g in sorted(ok.items()))
        return (f"micro_tile {vals} would fit (estimated from {best['cycles_per_mac']:.2f} "
                f"cycles per MAC x {best['macs_micro'] / m0 ** int(best['granule_power']):,.0f}"
                f" MACs per {'output pixel' if best['granule_power'] == 2 else 'output'} of "
                "a micro-tile)")
    smallest = min(per_m.items(), default=(m0, best["granule"]))
    return (f"even micro_tile = {smallest[0]} takes ~{_c(smallest[1], mhz)} per granule: "
            f"{relax} to at least {math.ceil(smallest[1] / mhz):,} µs, or "
            "split the operator's work further")


def _granule_cause(cand: pd.DataFrame, limit: float, mhz: float, what: str) -> str:
    best = cand.sort_values("granule").iloc[0]
    return (f"one micro-tile, the granule the kernel cannot be preempted in, takes "
            f"~{_c(best['granule'], mhz)} even in the fastest candidate ({best['candidate_id']}"
            f"), {best['granule'] / limit:.1f}x {what}; its worst preemption latency measured "
            f"is {_c(best['preempt'], mhz)}")


def _tile_sizes(runs: pd.DataFrame) -> list[int]:
    return sorted({int(v) for v in _num(runs, "schedule.tile_size").dropna()})


def deadline_answer(index: pd.DataFrame) -> str | None:
    """A sentence when every candidate misses RT deadlines (None when one meets them, or
    there was no IRQ load)."""
    runs = _valid(index)
    if runs.empty or "deadline_misses" not in runs:
        return None
    cand = candidates(runs)
    if cand.empty or (cand["rt_releases"].fillna(0) <= 0).all() \
            or (cand["deadline_misses"].fillna(0) <= 0).any():
        return None
    mhz = _mhz(runs)
    dl_us = _num(runs, "runner.rt_deadline_us").dropna()
    if dl_us.empty:
        dl_us = _num(runs, "runner.irq_period_us").dropna()
    head = (f"No candidate meets the RT deadline: {int(cand['deadline_misses'].sum()):,} "
            f"deadline misses in {int(cand['rt_releases'].sum()):,} releases over "
            f"{_n(int(cand['runs'].sum()), 'run')}, every candidate misses")
    if dl_us.empty:
        return head + "."
    limit = float(dl_us.max()) * mhz
    text = f"{head} the {float(dl_us.max()):g} µs deadline ({limit:,.0f} cycles at {mhz:g} MHz)"
    if cand["granule"].min() > limit:
        return (f"{text}. Cause: {_granule_cause(cand, limit, mhz, 'the deadline')}. "
                f"Fix: {_fits(cand, limit, mhz, _tile_sizes(runs))}.")
    if cand["preempt"].min() > limit:
        return (f"{text}. Cause: even the best worst-case preemption latency, "
                f"{_c(cand['preempt'].min(), mhz)}, exceeds it. Fix: a shorter granule "
                "(micro_tile) or a longer rt_deadline_us.")
    work = _num(runs, "runner.rt_work_iters").dropna()
    job = f" (rt_work_iters = {int(work.iloc[0]):,})" if len(work) else ""
    return (f"{text}. Cause: the worst preemption latency, {_c(cand['preempt'].min(), mhz)} "
            f"in the best candidate, plus the RT job's own work{job} exceeds it; one "
            f"micro-tile takes ~{_c(cand['granule'].min(), mhz)}. Fix: a smaller micro_tile "
            "(a shorter granule), less RT work or a longer rt_deadline_us.")


def bound_answers(index: pd.DataFrame, objective: Any) -> list[str]:
    """A sentence per objective bound that no candidate meets (``objective``: a
    ``search.objective.Objective``, or None)."""
    if objective is None or not getattr(objective, "bounds", None):
        return []
    from slicert_ops.search.objective import aggregate_repeats

    runs = _valid(index)
    if runs.empty:
        return []
    mhz = _mhz(runs)
    per = {cid: aggregate_repeats(g.to_dict("records"))
           for cid, g in runs.groupby("candidate_id", sort=True)}
    out = []
    for b in objective.bounds:
        got = [m.get(b.metric) for m in per.values()]
        got = [float(v) for v in got if v is not None and not math.isnan(float(v))]
        if not got or min(got) <= b.limit:
            continue
        best = min(got)
        shown = _c(best, mhz) if b.metric.endswith("_cycles") else f"{best:,.0f}"
        text = (f"No candidate meets the objective's bound {b.text} ({b.metric} <= "
                f"{b.limit:,.0f}): the best of {len(per)} candidates has {shown}")
        if b.metric == "max_preemption_latency_cycles":
            cand = candidates(runs)
            if cand["granule"].min() > b.limit:
                text += (f". Cause: {_granule_cause(cand, b.limit, mhz, 'the bound')}. "
                         f"Fix: {_fits(cand, b.limit, mhz, _tile_sizes(runs), 'relax the bound')}")
        out.append(text + ".")
    return out


def parameter_spread(cand: pd.DataFrame, param: str, metric: str = "kernel_cycles"
                     ) -> float | None:
    """Largest relative spread (max - min) / mean of ``metric`` across the values of
    ``param`` with every other schedule parameter fixed; None when never compared."""
    others = [c for c in cand.columns if c.startswith("schedule.") and c != param
              and cand[c].notna().any()]
    # one grouped pass (a Python loop over the groups took 30 ms per parameter on a network)
    rows = cand[cand[param].notna()]
    means = rows.groupby([*others, param], dropna=False)[metric].mean().dropna()
    if means.empty:
        return None
    per = means.groupby(level=list(range(len(others))), dropna=False) if others \
        else means.groupby(lambda _: 0)
    stats = per.agg(["max", "min", "mean", "count"])
    stats = stats[(stats["count"] >= 2) & (stats["mean"] > 0)]
    if stats.empty:
        return None
    return float(((stats["max"] - stats["min"]) / stats["mean"]).max())


def no_effect_answers(index: pd.DataFrame, threshold: float = NO_EFFECT) -> list[str]:
    """A sentence per swept parameter whose values change kernel cycles by < threshold."""
    runs = _valid(index)
    if runs.empty or "kernel_cycles" not in runs:
        return []
    cand = candidates(runs)
    mhz = _mhz(runs)
    out = []
    for p in [c for c in cand.columns if c.startswith("schedule.")]:
        if cand[p].nunique() < 2:
            continue
        spread = parameter_spread(cand, p)
        if spread is None or spread >= threshold:
            continue
        name = p.split(".", 1)[1]
        shown = max(0.1, math.ceil(spread * 1000) / 10)
        text = (f"{name} has no measurable effect on kernel cycles (< {shown:g} % across "
                f"{', '.join(f'{v:g}' for v in sorted(cand[p].dropna().unique()))} with the "
                "rest of the schedule fixed)")
        if name == "slice":
            slice_cyc = float(cand[p].max()) * mhz
            g = float(cand["granule"].min())
            if g > slice_cyc:
                text += (f" because one micro-tile (~{_c(g, mhz)}) outlasts every slice: the "
                         "kernel can yield only at micro-tile boundaries and does so at every "
                         "one, whatever the slice")
            else:
                text += (" because kernel cycles exclude the PendSV switches a slice causes "
                         "(see slices, pendsv_count and wall_cycles)")
        out.append(text + ".")
    return out


def experiment_objective(exp_dir: Path) -> Any:
    """The search objective of experiment.json in exp_dir, or None."""
    from slicert_ops.search.objective import ObjectiveError, parse_objective

    try:
        exp = json.loads((Path(exp_dir) / "experiment.json").read_text())["experiment"]
        text = (exp.get("search") or {}).get("objective")
        return parse_objective(text, float((exp.get("runner") or {}).get("cpu_mhz")
                                           or DEFAULT_MHZ)) if text else None
    except (OSError, ValueError, KeyError, TypeError, ObjectiveError):
        return None


def answers(index: pd.DataFrame, objective: Any = None) -> list[str]:
    """Every answer for one experiment's index rows (deadline, bounds, parameters)."""
    if index is None or index.empty:
        return []
    out = [a for a in [deadline_answer(index)] if a]
    out += bound_answers(index, objective)
    out += no_effect_answers(index)
    return out
