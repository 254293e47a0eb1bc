"""What a network experiment shows: per-layer table and plots, network candidates, summary.

- ``layers.parquet`` beside ``index.parquet``: one row per (network run, layer) with the
  layer's cycles, granule, worst preemption latency, schedule, ``kind`` (conv, pointwise
  1x1, depthwise 3x3, dense, ...) and ``roofline_share`` (MAC layers: MACs per cycle over
  the core's limit: Cortex-M3 0.5, Cortex-M4 2, ``network/roofline.py``);
- report figures: per-layer bar chart (kernel cycles and worst preemption latency of the
  best network run), per-layer roofline (MACs per cycle against the limit and CMSIS-NN,
  beside the granule) and end-to-end latency against worst preemption latency over the
  network candidates;
- the end-of-run summary of ``slicert run`` and the plan lines of ``slicert check``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slicert_ops.report.fmt import text_table
from slicert_ops.report.plots import cached_png

from .roofline import PEAK_TEXT, core_of, layer_kind, plot_roofline, roofline_share, summary_lines

if TYPE_CHECKING:
    import pandas as pd

    from slicert_ops.manifest import Candidate, Experiment

LAYER_COLUMNS = ("run", "candidate_id", "repeat", "op", "layer", "type", "kernel_cycles",
                 "wall_cycles", "macs", "macs_per_cycle", "yield_checks",
                 "max_granule_cycles", "max_preemption_latency_cycles", "deadline_misses")


def _network_runs(exp_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for man_path in sorted(Path(exp_dir).glob("run_*/manifest.json")):
        try:
            man = json.loads(man_path.read_text())
        except (OSError, ValueError):
            continue
        if (man.get("operator") or {}).get("type") == "network":
            out.append((man_path.parent, man))
    return out


def layer_rows(exp_dir: Path) -> list[dict[str, Any]]:
    """One row per layer of every finished, correct network run."""
    rows = []
    for run_dir, man in _network_runs(exp_dir):
        if man.get("status") != "ok":
            continue
        try:
            trace = json.loads((run_dir / "qemu_trace.json").read_text())
        except (OSError, ValueError):
            continue
        kernels = _kernels(man)
        for layer in trace.get("layers") or []:
            row = {"run": run_dir.name, "candidate_id": man["candidate_id"],
                   "repeat": man.get("repeat", 0)}
            row.update({k: layer.get(k) for k in LAYER_COLUMNS if k in layer})
            row["kind"] = layer_kind(str(layer.get("type")), kernels.get(layer.get("op")))
            row["roofline_share"] = roofline_share(
                str(layer.get("type")), layer.get("macs"), layer.get("kernel_cycles"),
                core_of((man.get("runner") or {}).get("board")))
            for k, v in (layer.get("schedule") or {}).items():
                row[f"schedule.{k}"] = v
            rows.append(row)
    return rows


def _kernels(man: dict[str, Any]) -> dict[int, Any]:
    """Kernel size per op index of a run's network (the trace does not carry it); empty
    when the network cannot be rebuilt (the kind is then the op type)."""
    from .candidates import load_context

    try:
        ctx = load_context(man.get("network") or {},
                           str((man.get("runner") or {}).get("board") or "lm3s6965evb"))
    except Exception:  # noqa: BLE001 - a report never fails on a layer's kind
        return {}
    return {op.index: op.layer.kernel for op in ctx.net.ops}


LAYERS_FILE = "layers.parquet"


def write_layers_parquet(exp_dir: Path) -> pd.DataFrame:
    """``layers.parquet`` from the network runs' traces (read once per aggregation: the
    report and the end-of-run summary use what this returns or wrote)."""
    import pandas as pd

    layers = pd.DataFrame(layer_rows(exp_dir))
    if not layers.empty:
        path = Path(exp_dir) / LAYERS_FILE
        tmp = path.with_suffix(".parquet.tmp")
        layers.to_parquet(tmp, index=False)
        tmp.replace(path)
    return layers


def best_layers(table: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """The layers of the first repeat of the table's best network, in execution order."""
    own = layers[layers["candidate_id"] == table.iloc[0]["candidate_id"]]
    return own[own["repeat"] == own["repeat"].min()].sort_values("op")


def network_table(exp_runs: pd.DataFrame, default_ids: set[str],
                  objective: Any = None) -> pd.DataFrame:
    """One row per network candidate (valid runs): end-to-end and kernel cycles (mean),
    worst preemption latency (max), deadline misses (sum), MACs per cycle; best first under
    the experiment's objective (feasible first), then by end-to-end cycles."""
    import pandas as pd

    runs = exp_runs[exp_runs.get("operator.type", pd.Series(dtype=str)) == "network"]
    if "valid" in runs:
        runs = runs[runs["valid"].astype(bool)]
    if runs.empty:
        return pd.DataFrame()
    agg = {"runs": ("run", "count"), "slice": ("schedule.slice", "first"),
           "network_cycles": ("network_cycles", "mean"),
           "kernel_cycles": ("kernel_cycles", "mean"),
           "macs_per_cycle": ("macs_per_cycle", "mean"),
           "max_preemption_latency_cycles": ("max_preemption_latency_cycles", "max"),
           "deadline_misses": ("deadline_misses", "sum"), "rt_jobs": ("rt_jobs", "sum"),
           "arena_bytes": ("arena_bytes", "first")}
    agg = {k: v for k, v in agg.items() if v[0] in runs}
    table = runs.groupby("candidate_id", sort=False).agg(**agg).reset_index()
    table.insert(1, "schedules", ["default" if c in default_ids else "best per task"
                                  for c in table["candidate_id"]])
    if objective is not None:
        evals = [objective.evaluate(row) for row in table.to_dict("records")]
        table.insert(2, "meets objective", [e.feasible for e in evals])
        table["_rank"] = [e.value if e.value is not None else float("inf") for e in evals]
        table = table.sort_values(["meets objective", "_rank", "network_cycles",
                                   "candidate_id"], ascending=[False, True, True, True])
        return table.drop(columns="_rank").reset_index(drop=True)
    return table.sort_values(["network_cycles", "candidate_id"]).reset_index(drop=True)


def experiment_objective(exp_dir: Path) -> Any:
    """The search objective of the experiment (experiment.json), None when it is the plain
    kernel-cycles default (then the table ranks by end-to-end cycles)."""
    from slicert_ops.search.objective import parse_objective

    try:
        exp = json.loads((Path(exp_dir) / "experiment.json").read_text())["experiment"]
    except (OSError, ValueError, KeyError):
        return None
    text = (exp.get("search") or {}).get("objective")
    if not text or text == "kernel_cycles":
        return None
    return parse_objective(text, float((exp.get("runner") or {}).get("cpu_mhz") or 50))


@cached_png
def plot_layers(rows: pd.DataFrame, path: Path, title: str) -> Path:
    """Per layer: kernel cycles (bars) and worst preemption latency (bars), one run."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    from slicert_ops.report.plots import CYCLES, save_png

    rows = rows.sort_values("op")
    labels = [f"{r.layer} ({r.type})" for r in rows.itertuples()]
    y = list(range(len(rows)))
    fig = Figure(figsize=(11, max(3.0, 0.32 * len(rows) + 1.4)))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    ax1.barh(y, rows["kernel_cycles"].astype(float), color="tab:blue")
    ax1.set_title("kernel cycles per layer")
    ax2.barh(y, rows["max_preemption_latency_cycles"].astype(float), color="tab:red",
             label="worst preemption latency")
    if "max_granule_cycles" in rows:
        ax2.plot(rows["max_granule_cycles"].astype(float), y, "k|", ms=10,
                 label="longest granule")
    ax2.set_title("worst preemption latency per layer")
    ax2.legend(fontsize=8, loc="lower right")
    ax1.set_yticks(y, labels, fontsize=8)
    ax1.invert_yaxis()
    for ax in (ax1, ax2):
        ax.set_xlabel(f"cycles ({CYCLES})")
        ax.xaxis.set_major_formatter(EngFormatter())
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, y=1.03)
    return save_png(fig, path)


@cached_png
def plot_e2e_vs_preemption(table: pd.DataFrame, path: Path, title: str) -> Path:
    """End-to-end latency (network cycles) against worst preemption latency, per network
    candidate (default schedules vs best per task, per slice budget)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    from slicert_ops.report.plots import CYCLES, save_png

    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    for kind, marker in (("default", "o"), ("best per task", "*")):
        sub = table[table["schedules"] == kind]
        if sub.empty:
            continue
        ax.scatter(sub["max_preemption_latency_cycles"].astype(float),
                   sub["network_cycles"].astype(float), s=90 if marker == "*" else 40,
                   marker=marker, label=f"{kind} schedules")
        for r in sub.itertuples():
            ax.annotate(f"slice {getattr(r, 'slice', '?')}",
                        (float(r.max_preemption_latency_cycles), float(r.network_cycles)),
                        fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"worst preemption latency (cycles, {CYCLES})")
    ax.set_ylabel("end-to-end network cycles (under the IRQ load)")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(EngFormatter())
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save_png(fig, path)


def network_report(exp_runs: pd.DataFrame, exp_dir: Path, out_dir: Path, experiment: str,
                   layers: pd.DataFrame | None = None,
                   ) -> tuple[list[tuple[str, Path]], list[tuple[str, pd.DataFrame]]]:
    """Figures and tables of the network candidates (empty when there are none);
    ``layers``: the per-layer rows when the caller has them (else read from the traces)."""
    import pandas as pd

    table = network_table(exp_runs, default_network_ids(exp_dir), experiment_objective(exp_dir))
    if table.empty:
        return [], []
    figures: list[tuple[str, Path]] = []
    sections: list[tuple[str, pd.DataFrame]] = [("Network candidates (end to end)", table)]
    best = table.iloc[0]
    if layers is None:
        layers = pd.DataFrame(layer_rows(exp_dir))
    if not layers.empty:
        own = best_layers(table, layers)
        figures.append(("Per-layer cycles and worst preemption latency (best network)",
                        plot_layers(own, out_dir / "layers.png",
                                    f"{experiment}: per layer, best network "
                                    f"({best['candidate_id']}, {own['run'].iloc[0]})")))
        core = experiment_core(exp_dir)
        figures.append((f"Per-layer MACs per cycle against the {PEAK_TEXT[core][0]} limit "
                        "(roofline), beside the granule (best network)",
                        plot_roofline(own, out_dir / "layers_roofline.png",
                                      f"{experiment}: roofline and granule per layer, best "
                                      f"network ({best['candidate_id']})", core)))
        sections.append((f"Layers of the best network ({own['run'].iloc[0]})",
                         layer_table(own, core)))
    figures.append(("End-to-end latency vs worst preemption latency (network candidates)",
                    plot_e2e_vs_preemption(table, out_dir / "network_e2e_vs_preemption.png",
                                           f"{experiment}: end to end vs preemption")))
    return figures, sections


def default_network_ids(exp_dir: Path) -> set[str]:
    """Ids of the default-schedule networks (``Candidate.network["schedules"]``)."""
    return {man["candidate_id"] for _, man in _network_runs(exp_dir)
            if (man.get("network") or {}).get("schedules") == "default"}


def network_summary(exp_dir: Path, outcomes: list[Any], notes: list[str],
                    index: pd.DataFrame | None = None, layers: pd.DataFrame | None = None
                    ) -> str:
    """The end-of-run text of a network experiment: networks, then the best one's layers
    (``index``, ``layers``: what the aggregation built, when it ran; else read afresh)."""
    import pandas as pd

    from slicert_ops.report.index import build_index

    ok = sum(1 for o in outcomes if o.status == "ok")
    lines = [f"{Path(exp_dir).name}: {len(outcomes)} runs, {ok} ok, {len(outcomes) - ok} "
             f"failed; results in {exp_dir}"]
    lines += [f"  note: {n}" for n in notes]
    if index is None:
        try:
            index = build_index(Path(exp_dir).parent, experiment=Path(exp_dir).name)
        except Exception:  # noqa: BLE001 - the summary never fails a run
            index = pd.DataFrame()
    table = network_table(index, default_network_ids(exp_dir), experiment_objective(exp_dir)) \
        if len(index) else pd.DataFrame()
    if table.empty:
        lines.append("no correct network run")
        return "\n".join(lines)
    lines += ["", "networks (end to end, under the manifest's IRQ load):", text_table(table)]
    if layers is None:
        layers = pd.DataFrame(layer_rows(exp_dir))
    if not layers.empty:
        best = table.iloc[0]["candidate_id"]
        own = best_layers(table, layers)
        core = experiment_core(exp_dir)
        lines += ["", f"layers of the best network ({best}):",
                  text_table(layer_table(own, core).drop(columns=["op"], errors="ignore"))]
        lines += ["", *summary_lines(own, core)]
    return "\n".join(lines)


#: The per-layer table's columns: the MACs per cycle and the granule side by side.
LAYER_TABLE = ("op", "layer", "type", "kind", "kernel_cycles", "macs_per_cycle",
               "roofline_share", "cmsis_nn_macs_per_cycle", "max_granule_cycles",
               "max_preemption_latency_cycles", "yield_checks")


def experiment_core(exp_dir: Path) -> str:
    """The core of an experiment's network runs (``runner.board``; cm3 if none ran)."""
    for _, man in _network_runs(exp_dir):
        return core_of((man.get("runner") or {}).get("board"))
    return "cm3"


def layer_table(own: pd.DataFrame, core: str = "cm3") -> pd.DataFrame:
    """The best network's layers as the report and the summary show them."""
    from .roofline import cmsis_nn_reference

    own = own.copy()
    if "kind" in own:
        own["cmsis_nn_macs_per_cycle"] = [cmsis_nn_reference(k, core) for k in own["kind"]]
    return own[[c for c in LAYER_TABLE if c in own]].reset_index(drop=True)


def describe_plan(exp: Experiment, cands: list[Candidate]) -> list[str]:
    """`slicert check` lines: the network, its tasks and what will be measured."""
    from .candidates import NETWORK_TASK, load_context, network_spec

    ctx = load_context(network_spec(exp), exp.runner["board"])
    net = ctx.net
    n_task = sum(1 for c in cands if c.operator["type"] == NETWORK_TASK)
    lines = [f"network {net.name}: {len(net.ops)} ops, {net.macs:,} MACs, "
             f"{net.params:,} parameters, board {exp.runner['board']}",
             f"{len(ctx.tasks)} tuning tasks; {n_task} task candidates, "
             f"{len(cands) - n_task} network candidates (default schedules; the best "
             "schedule per task adds one per slice after the tasks ran)"]
    from .memory import BOARDS, FLASH_RESERVE, KERNEL_CODE_ESTIMATE, RAM_RESERVE, plan_memory

    plan = plan_memory(net)
    mem = BOARDS[exp.runner["board"]]
    ram = plan.ram_bytes + RAM_RESERVE
    flash = plan.flash_data_bytes + FLASH_RESERVE + len(ctx.tasks) * KERNEL_CODE_ESTIMATE
    lines.append(f"memory: arena {plan.arena_bytes:,} B (every intermediate in its own buffer: "
                 f"{plan.naive_bytes:,} B), RAM {ram:,} of {mem['ram']:,} B, flash about "
                 f"{flash:,} of {mem['flash']:,} B (weights {plan.weight_bytes:,} B)")
    for t in ctx.tasks:
        lines.append(f"  task {ctx.first_layer(t):<16} {t.type:<17} x{t.weight} "
                     f"{len(ctx.spaces[t.key])} schedule(s): {', '.join(t.layer_names)}")
    return lines
