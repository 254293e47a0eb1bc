"""Per-layer roofline: each MAC layer's MACs per cycle against the core's physical limit.

The limit is the core's (:data:`PEAK_MACS_PER_CYCLE`: the Cortex-M3 boards 0.5, the
Cortex-M4 mps2-an386 2); ``roofline_share`` = MACs per cycle / that limit (only conv2d,
depthwise and dense layers: pools, adds and clamps do no MACs). The reference per layer kind
is CMSIS-NN's portable C measured on the modelled Cortex-M3 (issue #16); on the M4 there is
none (CMSIS-NN uses the DSP extension there, not measured on the model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slicert_ops.report.plots import cached_png

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

#: The Cortex-M3 ceiling: an int8 MAC needs at least one MLA, and MLA takes 2 cycles (ARM DDI
#: 0337I TRM Table 3-1; rule 2 of qemu/cycle_model.md), so at most 0.5 MACs per cycle even
#: before the loads of weights and inputs.
M3_PEAK_MACS_PER_CYCLE = 0.5
#: The Cortex-M4 ceiling: SMLAD does two 16-bit MACs in 1 cycle (ARM DDI 0439B TRM Table 3-1;
#: rule M5 of qemu/cycle_model.md's cm4-v1), so at most 2 MACs per cycle; a scalar MLA (1
#: cycle, rule M1) reaches half of it.
M4_PEAK_MACS_PER_CYCLE = 2.0
#: Per core (``sim.events.core(board)``): the limit and how the summary explains it.
PEAK_MACS_PER_CYCLE = {"cm3": M3_PEAK_MACS_PER_CYCLE, "cm4": M4_PEAK_MACS_PER_CYCLE}
PEAK_TEXT = {"cm3": ("Cortex-M3", "MLA is 2 cycles"),
             "cm4": ("Cortex-M4", "SMLAD is 2 MACs in 1 cycle")}
MAC_TYPES = ("conv2d", "depthwise_conv2d", "dense")
#: CMSIS-NN's portable C (no DSP extension: the M3 has none) measured on the modelled M3,
#: MACs per cycle per layer kind (issue #16).
CMSIS_NN_MACS_PER_CYCLE = {"conv": 0.152, "depthwise 3x3": 0.085, "pointwise 1x1": 0.191,
                           "dense": 0.142}


def layer_kind(op_type: str, kernel: tuple[int, int] | list[int] | None) -> str:
    """The kind the references are given for: conv, pointwise 1x1, depthwise KHxKW, dense;
    other ops keep their type."""
    kh, kw = tuple(kernel) if kernel else (0, 0)
    if op_type == "conv2d":
        return "pointwise 1x1" if (kh, kw) == (1, 1) else "conv"
    if op_type == "depthwise_conv2d":
        return f"depthwise {kh}x{kw}"
    return op_type


def core_of(board: Any) -> str:
    """The core of ``runner.board`` (cm3 unless the board is the M4's)."""
    from slicert_ops.sim.events import BOARD_CORE

    return BOARD_CORE.get(str(board or ""), "cm3")


def roofline_share(op_type: str, macs: Any, kernel_cycles: Any, core: str = "cm3"
                   ) -> float | None:
    """MACs per cycle over the core's limit, for MAC layers (None for the others)."""
    if op_type not in MAC_TYPES or not macs or not kernel_cycles:
        return None
    return float(macs) / float(kernel_cycles) / PEAK_MACS_PER_CYCLE[core]


def cmsis_nn_reference(kind: Any, core: str = "cm3") -> float | None:
    """CMSIS-NN's MACs per cycle for the kind, measured on the modelled M3 (None on the M4)."""
    return CMSIS_NN_MACS_PER_CYCLE.get(str(kind)) if core == "cm3" else None


def summary_lines(own: pd.DataFrame, core: str = "cm3") -> list[str]:
    """`slicert run`'s roofline lines: per MAC layer of the best network, MACs per cycle,
    share of the core's limit and the CMSIS-NN reference of its kind (M3 only)."""
    from slicert_ops.report.fmt import number

    macs = own[own["type"].isin(MAC_TYPES)] if "type" in own else own.iloc[0:0]
    if macs.empty or "macs_per_cycle" not in macs:
        return []
    peak = PEAK_MACS_PER_CYCLE[core]
    name, why = PEAK_TEXT[core]
    lines = [f"roofline (MACs/cycle of the best network's layers against the {name} limit "
             f"of {number(peak)}: {why}):"]
    width = max(len(str(n)) for n in macs["layer"])
    for r in macs.to_dict("records"):
        kind = r.get("kind") or r["type"]
        share = r.get("roofline_share")
        ref = cmsis_nn_reference(kind, core)
        lines.append(f"  {r['layer']:<{width}}  {kind:<14} {number(r['macs_per_cycle']):>6} "
                     f"MACs/cycle, {_percent(share)} of {number(peak)}"
                     + (f" (CMSIS-NN {kind}: {number(ref)})" if ref is not None else ""))
    return lines


def _percent(share: Any) -> str:
    from slicert_ops.report.fmt import number

    if share is None or share != share:  # NaN: not a MAC layer
        return "   n/a"
    return f"{number(100 * float(share)):>5} %"


@cached_png
def plot_roofline(rows: pd.DataFrame, path: Path, title: str, core: str = "cm3") -> Path:
    """Per layer, side by side: MACs per cycle (bars) with the core's limit (0.5 on the M3)
    and the CMSIS-NN reference of its kind, and the granule (longest granule, worst
    preemption latency)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    from slicert_ops.report.plots import CYCLES, save_png

    rows = rows.sort_values("op")
    kinds = [r.get("kind") or r["type"] for r in rows.to_dict("records")]
    labels = [f"{name} ({kind})" for name, kind in zip(rows["layer"], kinds, strict=True)]
    y = list(range(len(rows)))
    mac = rows["type"].isin(MAC_TYPES).to_numpy()
    mpc = rows["macs_per_cycle"].astype(float).where(mac, 0.0)
    fig = Figure(figsize=(11, max(3.0, 0.32 * len(rows) + 1.6)))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    ax1.barh(y, mpc, color=["tab:green" if m else "lightgrey" for m in mac])
    peak = PEAK_MACS_PER_CYCLE[core]
    name, why = PEAK_TEXT[core]
    ax1.axvline(peak, color="k", ls="--", lw=1.2, label=f"{name} limit {peak} ({why})")
    refs = [(i, cmsis_nn_reference(k, core)) for i, k in enumerate(kinds)]
    refs = [(i, v) for i, v in refs if v is not None]
    if refs:
        ax1.plot([v for _, v in refs], [i for i, _ in refs], "D", color="tab:orange", ms=6,
                 label="CMSIS-NN (portable C) for the kind")
    for i, (v, m) in enumerate(zip(mpc, mac, strict=True)):
        ax1.annotate(f"{v / peak:.0%}" if m else "no MACs", (v, i),
                     fontsize=7, xytext=(3, -3), textcoords="offset points",
                     color="k" if m else "grey")
    ax1.set_xlim(0, peak * 1.15)
    ax1.set_xlabel("MACs per kernel cycle (share of the limit annotated)")
    ax1.set_title("MACs per cycle per layer (roofline)")
    ax1.legend(fontsize=7, loc="lower right")
    ax2.barh(y, rows["max_preemption_latency_cycles"].astype(float), color="tab:red",
             alpha=0.6, label="worst preemption latency")
    if "max_granule_cycles" in rows:
        ax2.plot(rows["max_granule_cycles"].astype(float), y, "k|", ms=10,
                 label="longest granule")
    ax2.set_xlabel(f"cycles ({CYCLES.replace('Cortex-M3', name)})")
    ax2.xaxis.set_major_formatter(EngFormatter())
    ax2.set_title("granule per layer")
    ax2.legend(fontsize=7, loc="lower right")
    ax1.set_yticks(y, labels, fontsize=8)
    ax1.invert_yaxis()
    for ax in (ax1, ax2):
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, y=1.03)
    return save_png(fig, path)
